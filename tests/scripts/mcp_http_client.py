"""One call of the official MCP Python SDK (`mcp`) over Streamable HTTP, for tests/tests/mcp_e2e.rs.

Usage: mcp_http_client.py URL CA_FILE BEARER (--list | TOOL ARGUMENTS_JSON)
Prints one JSON object: the tools, a tool's result, a protocol error or a connection error.
"""
import asyncio
import json
import ssl
import sys

import httpx2
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client


async def call(url: str, ca_file: str, bearer: str, tool: str, arguments: str) -> dict:
    http = httpx2.AsyncClient(
        # "-": a plain-HTTP endpoint (the sidecar's, on loopback).
        verify=ssl.create_default_context(cafile=ca_file) if ca_file != "-" else True,
        headers={"Authorization": f"Bearer {bearer}"},
        timeout=httpx2.Timeout(30.0),
    )
    async with http:
        try:
            async with Client(streamable_http_client(url, http_client=http)) as client:
                if tool == "--list":
                    tools = await client.list_tools()
                    return {"tools": [{"name": t.name, "input_schema": t.input_schema,
                                       "output_schema": t.output_schema} for t in tools.tools]}
                try:
                    result = await client.call_tool(tool, json.loads(arguments))
                except MCPError as e:
                    return {"protocol_error": e.code, "message": str(e)}
                return {"is_error": bool(result.is_error),
                        "structured": result.structured_content,
                        "text": [getattr(c, "text", None) for c in result.content]}
        except Exception as e:  # the connection or the handshake failed (a 401, say)
            return {"connect_error": type(e).__name__, "message": str(e)}


if __name__ == "__main__":
    args = sys.argv[1:] + [""] * (5 - len(sys.argv[1:]))
    print(json.dumps(asyncio.run(call(*args[:5]))))
