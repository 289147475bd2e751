"""Bounded reading of HTTP bodies, shared by every face that takes bytes from the network."""

from __future__ import annotations

import aiohttp


async def read_limited(stream: aiohttp.StreamReader, limit: int) -> bytes | None:
    """Read a stream to its end; None once it passes ``limit`` bytes, so nothing larger is ever buffered."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
