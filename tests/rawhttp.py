"""Raw HTTP/1.1 over a socket, for requests a client library would normalise or refuse to send
(bare LF line endings, folded headers, odd framing, any method or path)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

__all__ = ("RawReply", "exchange", "read_reply")


@dataclass
class RawReply:
    status: int
    head: bytes  # status line and headers as received
    body: bytes

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                return value.strip().decode("latin-1")
        return None

    def json(self) -> Any:
        return json.loads(self.body)


async def read_reply(reader: asyncio.StreamReader, *, head_request: bool = False) -> RawReply:
    """One response: the head, then a body by Content-Length (or to EOF without one)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    reply = RawReply(status, head[:-4], b"")
    length = reply.header("Content-Length")
    if head_request or status in (204, 304):
        return reply
    if length is not None:
        reply.body = await reader.readexactly(int(length))
    else:
        reply.body = await reader.read()
    return reply


async def exchange(host: str, port: int, raw: bytes, *, timeout: float = 10.0) -> RawReply:
    """Send ``raw`` on a new connection and read one response."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(raw)
        await writer.drain()
        async with asyncio.timeout(timeout):
            return await read_reply(reader, head_request=raw.startswith(b"HEAD "))
    finally:
        writer.close()
