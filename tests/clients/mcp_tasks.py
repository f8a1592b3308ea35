"""Drives molecule's MCP Tasks with the official Python `mcp` client, unmodified.

`mcp` 2.3.0 ships no Tasks support of its own: it dropped the 2025-11-25
core `tasks/*` methods, and the current revision (2026-07-28) defines Tasks
as the `io.modelcontextprotocol/tasks` extension (SEP-2663), which a client
adds through the package's public extension API. This script is that
client-side extension: `TasksExtension` advertises the identifier, claims
the `resultType: "task"` shape of `tools/call` and resolves it by polling
`tasks/get`; `tasks/get` and `tasks/cancel` go out through
`ClientSession.send_request` (which stamps the per-request `_meta`
capabilities and the `Mcp-Name` header).

Reads a plan as JSON on stdin:
  {"url", "token", "tasks": true, "steps": [
     {"op": "call", "tool", "args"},          # the raw answer: a task handle or a result
     {"op": "call_resolved", "tool", "args"}, # Client.call_tool: the claim polls to the end
     {"op": "get", "task"}, {"op": "cancel", "task"}, {"op": "update", "task", "responses"},
     {"op": "until", "task", "statuses": [...], "timeout_s"},  # polls tasks/get
     {"op": "touch", "path"}]}
"$task" in a step names the last task handle a call returned. Prints one
JSON report: {"protocol_version", "capabilities", "results": [...]}, one
entry per step.
"""

import asyncio
import json
import pathlib
import sys
import time
from typing import Any, Literal

import httpx2
from mcp import Client
from mcp.client.extension import ClientExtension, ResultClaim
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, Request, RequestParams, Result
from pydantic import ConfigDict, TypeAdapter

TASKS = "io.modelcontextprotocol/tasks"
TERMINAL = {"completed", "failed", "cancelled"}
ANY = TypeAdapter(dict[str, Any])


class CreateTaskResult(Result):
    """The task handle a `tools/call` answers with (`resultType: "task"`)."""

    model_config = ConfigDict(extra="allow")
    result_type: Literal["task"]
    task_id: str
    status: str
    poll_interval_ms: int | None = None


class TaskIdParams(RequestParams):
    task_id: str


class GetTaskRequest(Request[TaskIdParams, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    name_param = "taskId"


class UpdateTaskParams(TaskIdParams):
    input_responses: dict[str, Any]


class UpdateTaskRequest(Request[UpdateTaskParams, Literal["tasks/update"]]):
    method: Literal["tasks/update"] = "tasks/update"
    name_param = "taskId"


class CancelTaskRequest(Request[TaskIdParams, Literal["tasks/cancel"]]):
    method: Literal["tasks/cancel"] = "tasks/cancel"
    name_param = "taskId"


async def get_task(session, task_id):
    return await session.send_request(GetTaskRequest(params=TaskIdParams(task_id=task_id)), ANY)


async def poll(session, task_id, statuses, timeout_s):
    """tasks/get at the server's poll interval until the status is one of `statuses`."""
    seen, deadline = [], time.monotonic() + timeout_s
    while True:
        task = await get_task(session, task_id)
        if not seen or seen[-1] != task["status"]:
            seen.append(task["status"])
        if task["status"] in statuses or time.monotonic() > deadline:
            return task, seen
        await asyncio.sleep(task.get("pollIntervalMs", 1000) / 1000)


async def resolve(handle: CreateTaskResult, ctx) -> CallToolResult:
    task, _ = await poll(ctx.session, handle.task_id, TERMINAL, 60)
    if task["status"] == "completed":
        return CallToolResult.model_validate(task["result"], by_name=False)
    return CallToolResult(content=[{"type": "text", "text": json.dumps(task)}], is_error=True)


class TasksExtension(ClientExtension):
    identifier = TASKS

    def claims(self):
        return [ResultClaim(result_type="task", model=CreateTaskResult, resolve=resolve)]


def text_of(result):
    return "".join(c.text for c in result.content if getattr(c, "type", "") == "text")


async def step(client, s, last):
    session = client.session
    task_id = last.get("id") if s.get("task") == "$task" else s.get("task")
    op = s["op"]
    if op == "call":
        result = await session.call_tool(s["tool"], s.get("args", {}), allow_claimed=True)
        if isinstance(result, CreateTaskResult):
            last["id"] = result.task_id
            return {"task": result.model_dump(by_alias=True, mode="json", exclude_none=True)}
        return {"is_error": bool(result.is_error), "text": text_of(result)}
    if op == "call_resolved":
        result = await client.call_tool(s["tool"], s.get("args", {}))
        return {"is_error": bool(result.is_error), "text": text_of(result)}
    if op == "get":
        return {"task": await get_task(session, task_id)}
    if op == "cancel":
        await session.send_request(CancelTaskRequest(params=TaskIdParams(task_id=task_id)), ANY)
        return {"ok": True}
    if op == "update":
        params = UpdateTaskParams(task_id=task_id, input_responses=s.get("responses", {}))
        await session.send_request(UpdateTaskRequest(params=params), ANY)
        return {"ok": True}
    if op == "until":
        task, seen = await poll(session, task_id, set(s["statuses"]), s.get("timeout_s", 30))
        return {"task": task, "seen": seen}
    if op == "touch":
        pathlib.Path(s["path"]).touch()
        return {"ok": True}
    raise ValueError(f"unknown op {op}")


async def main():
    plan = json.load(sys.stdin)
    headers = {"Authorization": f"Bearer {plan['token']}"}
    transport = streamable_http_client(plan["url"], http_client=httpx2.AsyncClient(headers=headers, timeout=60))
    extensions = [TasksExtension()] if plan.get("tasks", True) else []
    report, last = {"results": []}, {}
    async with Client(transport, cache=None, extensions=extensions) as client:
        report["protocol_version"] = client.protocol_version
        caps = client.server_capabilities
        report["capabilities"] = caps.model_dump(by_alias=True, mode="json", exclude_none=True) if caps else None
        for s in plan["steps"]:
            try:
                report["results"].append(await step(client, s, last))
            except MCPError as e:
                report["results"].append({"error": {"code": e.code, "message": e.message}})
    print(json.dumps(report))


asyncio.run(main())
