"""Drives molecule's A2A streaming with the official Python client
(a2a-sdk), unmodified: a streaming send to a poll workspace answered by a
real `molecule connect --exec` agent, read to its end; then a streaming
send to a workspace nobody answers, left after its first event, and
resubscribed to while the task is canceled.

Usage: a2a_stream.py BASE_URL WORKSPACE_ID TOKEN VERSION IDLE_WORKSPACE_ID
VERSION is "1.0" or "0.3": the card's interface of that version is used.
Prints one JSON object with the events the client saw.
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
    Message,
    Part,
    Role,
    SendMessageRequest,
    SubscribeToTaskRequest,
    TaskState,
)


async def client_for(http, base, workspace, version):
    resolver = A2ACardResolver(http, f"{base}/workspaces/{workspace}")
    card = await resolver.get_agent_card()
    keep = [i for i in card.supported_interfaces if i.protocol_version == version]
    del card.supported_interfaces[:]
    card.supported_interfaces.extend(keep)
    factory = ClientFactory(ClientConfig(httpx_client=http, streaming=True))
    return factory.create(card)


def request(text):
    return SendMessageRequest(
        message=Message(
            message_id=str(uuid.uuid4()),
            role=Role.ROLE_USER,
            parts=[Part(text=text)],
        )
    )


def describe(event):
    if event.HasField("task"):
        return ["task", TaskState.Name(event.task.status.state)]
    if event.HasField("status_update"):
        return ["status", TaskState.Name(event.status_update.status.state)]
    if event.HasField("artifact_update"):
        return ["artifact", event.artifact_update.artifact.parts[0].text]
    return ["message", str(event)]


def task_id(event):
    if event.HasField("task"):
        return event.task.id
    if event.HasField("status_update"):
        return event.status_update.task_id
    return event.artifact_update.task_id


async def main():
    base, workspace, token, version, idle = sys.argv[1:6]
    out = {}
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=60) as http:
        client = await client_for(http, base, workspace, version)
        streamed = []
        async for event in client.send_message(request("say hello")):
            streamed.append(describe(event))
            out["task_id"] = task_id(event)
        out["streamed"] = streamed

        # Left after the first event, then resubscribed; the task moves
        # (canceled) while the new stream is open.
        idle_client = await client_for(http, base, idle, version)
        first_stream = idle_client.send_message(request("never answered"))
        first = await first_stream.__anext__()
        await first_stream.aclose()
        out["first"] = describe(first)
        tid = task_id(first)
        out["idle_task_id"] = tid
        resubscribed = []
        cancel = None
        async for event in idle_client.subscribe(SubscribeToTaskRequest(id=tid)):
            resubscribed.append(describe(event))
            if cancel is None:
                cancel = asyncio.create_task(
                    idle_client.cancel_task(CancelTaskRequest(id=tid))
                )
        await cancel
        out["resubscribed"] = resubscribed
    print(json.dumps(out))


asyncio.run(main())
