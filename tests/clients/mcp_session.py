"""Drives molecule's MCP endpoint with the official Python `mcp` client, unmodified.

Reads a plan as JSON on stdin:
  {"url": "<endpoint>", "token": "...", "transport": "streamable" | "sse",
   "mode": "auto" | "legacy", "list": true, "ping": false,
   "calls": [{"tool": "list_peers", "args": {}}, ...]}
and prints one JSON report on stdout:
  {"protocol_version", "server_name", "tools": [{"name", "input_schema"}],
   "ping": true, "results": [{"is_error", "text"} | {"error": {"code", "message"}}]}
`mode` is the client's own connect policy: "auto" probes `server/discover` (the
2026-07-28 revision), "legacy" runs the `initialize` handshake.
"""

import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError


def transport(plan):
    headers = {"Authorization": f"Bearer {plan['token']}"}
    if plan.get("transport", "streamable") == "sse":
        return sse_client(plan["url"], headers=headers)
    return streamable_http_client(plan["url"], http_client=httpx2.AsyncClient(headers=headers, timeout=60))


async def main():
    plan = json.load(sys.stdin)
    report = {"results": []}
    async with Client(transport(plan), mode=plan.get("mode", "auto"), cache=None) as client:
        report["protocol_version"] = client.protocol_version
        info = client.server_info
        report["server_name"] = info.name if info else None
        if plan.get("ping"):
            await client.send_ping()
            report["ping"] = True
        if plan.get("list", True):
            listed = await client.list_tools()
            report["tools"] = [{"name": t.name, "input_schema": t.input_schema} for t in listed.tools]
        for call in plan.get("calls", []):
            try:
                result = await client.call_tool(call["tool"], call.get("args", {}))
                text = "".join(c.text for c in result.content if getattr(c, "type", "") == "text")
                report["results"].append({"is_error": bool(result.is_error), "text": text})
            except MCPError as e:
                report["results"].append({"error": {"code": e.code, "message": e.message}})
    print(json.dumps(report))


asyncio.run(main())
