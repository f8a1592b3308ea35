"""Drives molecule's A2A push notification configs with the official
Python client (a2a-sdk), unmodified: send a task to a workspace nobody
answers, set a webhook config with Bearer authentication on it, read it
back (get, list), cancel the task and receive the authenticated
notification of that move on a local receiver, then delete the config.

Usage: a2a_push.py BASE_URL WORKSPACE_ID TOKEN VERSION
VERSION is "1.0" or "0.3": the card's interface of that version is used.
Prints one JSON object with what the client and the receiver saw.
"""

import asyncio
import json
import queue
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
from a2a.client import ClientConfig, ClientFactory
from a2a.client.card_resolver import A2ACardResolver
from a2a.types import (
    AuthenticationInfo,
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetTaskPushNotificationConfigRequest,
    ListTaskPushNotificationConfigsRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    TaskPushNotificationConfig,
    TaskState,
)

received = queue.Queue()


class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        received.put(
            {
                "authorization": self.headers.get("Authorization"),
                "token": self.headers.get("X-A2A-Notification-Token"),
                "body": json.loads(body),
            }
        )
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


async def main():
    base, workspace, token, version = sys.argv[1:5]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook_url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    out = {"hook_url": hook_url}
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=60) as http:
        resolver = A2ACardResolver(http, f"{base}/workspaces/{workspace}")
        card = await resolver.get_agent_card()
        out["push_capability"] = card.capabilities.push_notifications
        keep = [i for i in card.supported_interfaces if i.protocol_version == version]
        del card.supported_interfaces[:]
        card.supported_interfaces.extend(keep)
        client = ClientFactory(
            ClientConfig(httpx_client=http, streaming=False)
        ).create(card)

        req = SendMessageRequest(
            message=Message(
                message_id=str(uuid.uuid4()),
                role=Role.ROLE_USER,
                parts=[Part(text="nobody answers this")],
            )
        )
        req.configuration.return_immediately = True
        task = None
        async for event in client.send_message(req):
            task = event.task
        out["task_id"] = task.id

        created = await client.create_task_push_notification_config(
            TaskPushNotificationConfig(
                task_id=task.id,
                id="hook-1",
                url=hook_url,
                token="tok-1",
                authentication=AuthenticationInfo(scheme="Bearer", credentials="s3cret"),
            )
        )
        out["created"] = [created.id, created.url, created.token, created.authentication.scheme]
        got = await client.get_task_push_notification_config(
            GetTaskPushNotificationConfigRequest(task_id=task.id, id="hook-1")
        )
        out["got"] = [got.id, got.url]
        listed = await client.list_task_push_notification_configs(
            ListTaskPushNotificationConfigsRequest(task_id=task.id)
        )
        out["listed"] = [c.id for c in listed.configs]

        canceled = await client.cancel_task(CancelTaskRequest(id=task.id))
        out["canceled_state"] = TaskState.Name(canceled.status.state)
        hit = await asyncio.to_thread(received.get, True, 20)
        body = hit["body"]
        sent = body.get("task", body)
        out["notification"] = {
            "authorization": hit["authorization"],
            "token": hit["token"],
            "task_id": sent["id"],
            "state": sent["status"]["state"],
        }

        await client.delete_task_push_notification_config(
            DeleteTaskPushNotificationConfigRequest(task_id=task.id, id="hook-1")
        )
        listed = await client.list_task_push_notification_configs(
            ListTaskPushNotificationConfigsRequest(task_id=task.id)
        )
        out["after_delete"] = [c.id for c in listed.configs]
    server.shutdown()
    print(json.dumps(out))


asyncio.run(main())
