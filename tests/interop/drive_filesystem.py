"""Drives @modelcontextprotocol/server-filesystem behind `ledgerctl shim mcp` with the official
Python MCP client SDK (PyPI `mcp`), for tests/tests/shim_mcp.rs.

Usage: drive_filesystem.py LEDGERCTL SOCKET AGENT DATA_DIR
Prints one JSON object: the tools listed, and the result of a read and of a write.
"""

import asyncio
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "node_modules", "@modelcontextprotocol", "server-filesystem", "dist", "index.js")


def is_error(result):
    # `is_error` in SDK 2.x, `isError` in 1.x
    return bool(getattr(result, "is_error", getattr(result, "isError", False)))


def text(result):
    return "".join(getattr(c, "text", "") for c in result.content)


async def main(ledgerctl, socket, agent, data):
    params = StdioServerParameters(
        command=ledgerctl,
        args=["--socket", socket, "shim", "mcp", "--agent", agent, "--", "node", SERVER, data],
    )
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = await session.list_tools()
            read_result = await session.call_tool("read_text_file", {"path": os.path.join(data, "a.txt")})
            write_result = await session.call_tool(
                "write_file", {"path": os.path.join(data, "new.txt"), "content": "should not exist"}
            )
    print(
        json.dumps(
            {
                "tools": sorted(t.name for t in tools.tools),
                "read": {"isError": is_error(read_result), "text": text(read_result)},
                "write": {"isError": is_error(write_result), "text": text(write_result)},
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
