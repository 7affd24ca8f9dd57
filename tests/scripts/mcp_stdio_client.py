"""The official MCP Python SDK (`mcp`) launching an MCP server as a command over stdio, as
desktop hosts do, for app/tests/mcp_stdio.rs.

Usage: mcp_stdio_client.py COMMAND ARGS_JSON ENV_JSON STEPS_JSON
STEPS_JSON is a list of [tool, arguments]. The pseudo-tool `await_approval` polls
`approval_status` for the `approval_id` of the latest result that had one, every half second
for at most a minute, until it is no longer pending, and records the last status. Prints one
JSON list: the tool names, then each step's result (or protocol error).
"""
import asyncio
import json
import sys
import time

from mcp import Client, MCPError, StdioServerParameters


async def call(client, tool: str, arguments: dict) -> dict:
    try:
        result = await client.call_tool(tool, arguments)
    except MCPError as e:
        return {"protocol_error": e.code, "message": str(e)}
    return {"is_error": bool(result.is_error), "structured": result.structured_content}


async def await_approval(client, approval_id: str) -> dict:
    deadline = time.monotonic() + 60
    polls = 0
    while True:
        polls += 1
        status = await call(client, "approval_status", {"approval_id": approval_id})
        settled = (status.get("structured") or {}).get("status") != "pending"
        if settled or time.monotonic() > deadline:
            status["polls"] = polls
            return status
        await asyncio.sleep(0.5)


async def main(command: str, args: list, env: dict, steps: list) -> list:
    params = StdioServerParameters(command=command, args=args, env=env)
    out = []
    approval_id = None
    async with Client(params) as client:
        tools = await client.list_tools()
        out.append({"tools": sorted(t.name for t in tools.tools)})
        for tool, arguments in steps:
            if tool == "await_approval":
                out.append(await await_approval(client, approval_id))
                continue
            result = await call(client, tool, arguments)
            approval_id = (result.get("structured") or {}).get("approval_id") or approval_id
            out.append(result)
    return out


if __name__ == "__main__":
    command, args, env, steps = sys.argv[1], *map(json.loads, sys.argv[2:5])
    print(json.dumps(asyncio.run(main(command, args, env, steps))))
