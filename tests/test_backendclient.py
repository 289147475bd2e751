"""The provider's backend client against real sockets: framing, keep-alive, limits, deadlines and bad backends."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest

from gateway.proxy.backendclient import BackendError, BackendPool, ResponseTooLarge, encode_request

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """(head, body) of one request, by its Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


class RawBackend:
    """A TCP server whose every connection runs ``handler``; counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


def answering(*responses: bytes) -> Handler:
    """Answer each request, on whichever connection, with the next response; connections stay open."""
    queue = list(responses)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while queue:
            await read_request(reader)
            writer.write(queue.pop(0))
            await writer.drain()
        await reader.read()

    return handler


async def test_keep_alive_reuses_one_connection_and_sends_the_body() -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, body = await read_request(reader)
            seen.append((head, body))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Name: J\xc3\xb5ks \xff\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    backend = RawBackend(echo)
    pool = BackendPool()
    async with backend as url:
        for i in range(3):
            resp = await pool.request("POST", url + "/echo?x=1", [("Content-Type", "text/plain")], b"hello %d" % i,
                                      timeout=5, limit=1024)
            assert (resp.status, resp.body) == (200, b"hello %d" % i)
            assert ("content-type", "text/plain") in resp.headers
            assert ("x-name", "J\u00f5ks \ufffd") in resp.headers  # UTF-8; a stray byte becomes U+FFFD
    await pool.close()
    assert backend.connections == 1
    assert seen[0][0].startswith(b"POST /echo?x=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"Content-Length: 7" in seen[0][0]


async def test_chunked_and_read_until_close_bodies() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    pool = BackendPool()
    async with RawBackend(answering(chunked)) as url:
        assert (await pool.request("GET", url, [], b"", timeout=5, limit=100)).body == b"hello world"

    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()

    async with RawBackend(until_close) as url:
        assert (await pool.request("GET", url, [], b"", timeout=5, limit=100)).body == b"all of it"
    await pool.close()


async def test_head_and_interim_answers() -> None:
    pool = BackendPool()
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
    async with RawBackend(answering(head)) as url:
        resp = await pool.request("HEAD", url, [], b"", timeout=5, limit=100)
        assert (resp.status, resp.body) == (200, b"")
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
    async with RawBackend(answering(interim)) as url:
        resp = await pool.request("POST", url, [], b"x", timeout=5, limit=100)
        assert (resp.status, resp.body) == (201, b"ok")
    await pool.close()


async def test_response_over_the_limit_is_refused_and_the_connection_dropped() -> None:
    backend = RawBackend(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000,
                                   b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    pool = BackendPool()
    async with backend as url:
        with pytest.raises(ResponseTooLarge):
            await pool.request("GET", url, [], b"", timeout=5, limit=1000)
        assert (await pool.request("GET", url, [], b"", timeout=5, limit=1000)).status == 200
    await pool.close()
    assert backend.connections == 2


async def test_a_hanging_backend_times_out_and_is_not_reused() -> None:
    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhal")  # and never the rest
        await reader.read()

    backend = RawBackend(hang)
    pool = BackendPool()
    async with backend as url:
        with pytest.raises(TimeoutError):
            await pool.request("GET", url, [], b"", timeout=0.3, limit=100)
        with pytest.raises(TimeoutError):
            await pool.request("GET", url, [], b"", timeout=0.3, limit=100)
    await pool.close()
    assert backend.connections == 2


async def test_reset_malformed_and_refused_backends_fail_cleanly() -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhal")
        await writer.drain()
        writer.transport.abort()

    pool = BackendPool()
    async with RawBackend(reset) as url:
        with pytest.raises(BackendError) as info:
            await pool.request("GET", url, [], b"", timeout=5, limit=100)
        assert info.value.kind == "ServerDisconnected"
    async with RawBackend(answering(b"NOT HTTP AT ALL\r\n\r\n")) as url:
        with pytest.raises(BackendError) as info:
            await pool.request("GET", url, [], b"", timeout=5, limit=100)
        assert info.value.kind == "ProtocolError"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    with pytest.raises(BackendError) as info:
        await pool.request("GET", f"http://127.0.0.1:{closed_port}/", [], b"", timeout=5, limit=100)
    assert info.value.kind == "ConnectionFailed"
    await pool.close()


def test_request_encoding_refuses_header_injection_and_owns_framing_headers() -> None:
    data = encode_request("POST", "/a?b=c", "backend:8080", [("X-Road-Client", "DEMO/GOV/1/s"),
                                                             ("Content-Length", "999"), ("Host", "evil")], b"abc")
    assert data == (b"POST /a?b=c HTTP/1.1\r\nHost: backend:8080\r\nX-Road-Client: DEMO/GOV/1/s\r\n"
                    b"Content-Length: 3\r\n\r\nabc")
    assert b"Content-Length" not in encode_request("GET", "/", "h", [], b"")
    assert b"X-Name: J\xc3\xb5ks\r\n" in encode_request("GET", "/", "h", [("X-Name", "J\u00f5ks")], b"")
    for name, value in (("X-A", "v\r\nX-Injected: 1"), ("X-A", "v\nw"), ("X A", "v"), ("", "v"), ("X-A", "v\0")):
        with pytest.raises(BackendError):
            encode_request("GET", "/", "h", [(name, value)], b"")
    with pytest.raises(BackendError):
        encode_request("GET /x HTTP/1.1\r\n", "/", "h", [], b"")


async def test_a_reused_connection_closed_by_the_backend_is_retried_only_for_idempotent_methods() -> None:
    async def one_answer_per_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await read_request(reader)  # the next request on this connection: closed unanswered, as at a keep-alive
        writer.transport.abort()    # timeout racing with the request

    backend = RawBackend(one_answer_per_connection)
    pool = BackendPool()
    async with backend as url:
        assert (await pool.request("GET", url, [], b"", timeout=5, limit=100)).body == b"ok"
        assert (await pool.request("GET", url, [], b"", timeout=5, limit=100)).body == b"ok"  # retried afresh
        assert backend.connections == 2
        with pytest.raises(BackendError) as info:  # a POST may have been acted on: never sent twice
            await pool.request("POST", url, [], b"x", timeout=5, limit=100)
        assert info.value.kind == "ServerDisconnected"
        assert backend.connections == 2
    await pool.close()
