"""A minimal HTTP/1.1 client on asyncio streams, for holding thousands of connections cheaply.

Only what the memory and SSE measurements need: send one request, read the status and
headers, then read a Content-Length body or iterate a chunked / close-delimited body.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fngate.proxy.config import LOOPBACK


def request_bytes(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {LOOPBACK}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers = {}
    for line in header_lines:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    return status, headers


async def body_chunks(reader: asyncio.StreamReader, headers: dict[str, str]) -> AsyncIterator[bytes]:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return
            data = await reader.readexactly(size)
            await reader.readexactly(2)
            yield data
    elif "content-length" in headers:
        left = int(headers["content-length"])
        while left > 0:
            data = await reader.read(min(left, 65536))
            if not data:
                raise ConnectionError("connection closed mid-body")
            left -= len(data)
            yield data
    else:
        while data := await reader.read(65536):
            yield data


async def get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, headers: dict[str, str]) -> int:
    """One keep-alive GET on an open connection; returns the status once the body is read."""
    writer.write(request_bytes("GET", path, headers))
    status, resp_headers = await read_head(reader)
    async for _ in body_chunks(reader, resp_headers):
        pass
    return status


async def sse_events(reader: asyncio.StreamReader, headers: dict[str, str]) -> AsyncIterator[bytes]:
    """The `data:` payloads of an event stream, as they arrive."""
    buf = b""
    async for chunk in body_chunks(reader, headers):
        buf += chunk
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    yield line[5:].strip()
