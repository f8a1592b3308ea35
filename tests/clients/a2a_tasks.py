"""Drives molecule's A2A endpoint with the official Python client
(a2a-sdk), unmodified: resolve a workspace's Agent Card, send it a
message (answered by a real `molecule connect --exec` agent), get and list
the task, then cancel a second task the agent has not picked up.

Usage: a2a_tasks.py BASE_URL WORKSPACE_ID TOKEN VERSION IDLE_WORKSPACE_ID
VERSION is "1.0" or "0.3": the card's interface of that version is used.
Prints one JSON object with what the client saw.
"""

import asyncio
import json
import sys
import uuid

import httpx
from a2a.client import ClientConfig, ClientFactory
from a2a.client.card_resolver import A2ACardResolver
from a2a.types import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    TaskState,
)


async def client_for(http, base, workspace, version):
    resolver = A2ACardResolver(http, f"{base}/workspaces/{workspace}")
    card = await resolver.get_agent_card()
    # Keep only the interface of the version under test, so the factory
    # picks that dialect.
    keep = [i for i in card.supported_interfaces if i.protocol_version == version]
    del card.supported_interfaces[:]
    card.supported_interfaces.extend(keep)
    factory = ClientFactory(ClientConfig(httpx_client=http, streaming=False))
    return card, factory.create(card)


def message(text):
    return Message(
        message_id=str(uuid.uuid4()),
        role=Role.ROLE_USER,
        parts=[Part(text=text)],
    )


async def main():
    base, workspace, token, version, idle = sys.argv[1:6]
    out = {}
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=60) as http:
        card, client = await client_for(http, base, workspace, version)
        out["card_name"] = card.name
        out["interfaces"] = [
            [i.protocol_binding, i.protocol_version] for i in card.supported_interfaces
        ]
        # Blocking (the default): answered once the agent is done.
        task = None
        async for event in client.send_message(
            SendMessageRequest(message=message("say hello"))
        ):
            task = event.task
        out["sent_state"] = TaskState.Name(task.status.state)
        out["task_id"] = task.id
        out["answer"] = [p.text for a in task.artifacts for p in a.parts]
        got = await client.get_task(GetTaskRequest(id=task.id))
        out["got_state"] = TaskState.Name(got.status.state)
        if version == "1.0":
            listed = await client.list_tasks(ListTasksRequest())
            out["listed"] = [t.id for t in listed.tasks]

        # A task nobody picks up: sent without waiting, then canceled.
        _, idle_client = await client_for(http, base, idle, version)
        req = SendMessageRequest(message=message("never answered"))
        req.configuration.return_immediately = True
        pending = None
        async for event in idle_client.send_message(req):
            pending = event.task
        out["pending_state"] = TaskState.Name(pending.status.state)
        canceled = await idle_client.cancel_task(CancelTaskRequest(id=pending.id))
        out["canceled_state"] = TaskState.Name(canceled.status.state)
        try:
            await idle_client.cancel_task(CancelTaskRequest(id=pending.id))
            out["second_cancel"] = "accepted"
        except Exception as e:  # the SDK's A2A error class
            out["second_cancel"] = type(e).__name__
        try:
            await idle_client.get_task(GetTaskRequest(id=str(uuid.uuid4())))
            out["unknown_task"] = "found"
        except Exception as e:
            out["unknown_task"] = type(e).__name__
    print(json.dumps(out))


asyncio.run(main())
