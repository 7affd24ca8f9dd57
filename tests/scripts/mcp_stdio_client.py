"""The official MCP Python SDK (`mcp`) launching an MCP server as a command over stdio, as
desktop hosts do, for app/tests/mcp_stdio.rs.

Usage: mcp_stdio_client.py COMMAND ARGS_JSON ENV_JSON STEPS_JSON
STEPS_JSON is a list of [tool, arguments]. Prints one JSON list: the tool names, then each
step's result (or protocol error).
"""
import asyncio
import json
import sys

from mcp import Client, MCPError, StdioServerParameters


async def main(command: str, args: list, env: dict, steps: list) -> list:
    params = StdioServerParameters(command=command, args=args, env=env)
    out = []
    async with Client(params) as client:
        tools = await client.list_tools()
        out.append({"tools": sorted(t.name for t in tools.tools)})
        for tool, arguments in steps:
            try:
                result = await client.call_tool(tool, arguments)
            except MCPError as e:
                out.append({"protocol_error": e.code, "message": str(e)})
                continue
            out.append({"is_error": bool(result.is_error), "structured": result.structured_content})
    return out


if __name__ == "__main__":
    command, args, env, steps = sys.argv[1], *map(json.loads, sys.argv[2:5])
    print(json.dumps(asyncio.run(main(command, args, env, steps))))
