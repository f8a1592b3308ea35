"""Drives an A2A task that waits on an approval with the official Python
client (a2a-sdk), unmodified: a blocking send returns once the task needs
input (its agent asked for an approval naming it), the status message says
why, and after the decision GetTask reads the task working again.

Usage: a2a_input_required.py BASE_URL WORKSPACE_ID TOKEN VERSION
VERSION is "1.0" or "0.3": the card's interface of that version is used.
Prints `{"task_id": …}` once the send returned, then waits for one line on
stdin (the test decided the approval), then prints one JSON object with
what the client saw.
"""

import asyncio
import json
import sys
import uuid

import httpx
from a2a.client import ClientConfig, ClientFactory
from a2a.client.card_resolver import A2ACardResolver
from a2a.types import GetTaskRequest, Message, Part, Role, SendMessageRequest, TaskState


async def main():
    base, workspace, token, version = sys.argv[1:5]
    out = {}
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=60) as http:
        resolver = A2ACardResolver(http, f"{base}/workspaces/{workspace}")
        card = await resolver.get_agent_card()
        keep = [i for i in card.supported_interfaces if i.protocol_version == version]
        del card.supported_interfaces[:]
        card.supported_interfaces.extend(keep)
        client = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card)

        # Blocking (the default): answered once the task needs input.
        msg = Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text="rotate the keys")])
        task = None
        async for event in client.send_message(SendMessageRequest(message=msg)):
            task = event.task
        out["task_id"] = task.id
        out["sent_state"] = TaskState.Name(task.status.state)
        out["sent_status_text"] = [p.text for p in task.status.message.parts]
        print(json.dumps({"task_id": task.id}), flush=True)
        sys.stdin.readline()  # the approval is decided
        got = await client.get_task(GetTaskRequest(id=task.id))
        out["after_state"] = TaskState.Name(got.status.state)
    print(json.dumps(out), flush=True)


asyncio.run(main())
