"""Calls from the provider's gateway to its backend services: HTTP/1.1 over keep-alive pools, bounded and timed.

aiohttp's client spent ~300 µs of CPU per backend call here, a fifth of the provider's work per exchange; this
client does the same job in a fraction of that. It does only what a gateway needs: one request with a body that
is already in memory, a response body read whole up to a limit, one deadline for the whole call, and idle
connections kept for reuse. The response is parsed by httptools (llhttp, the parser of Node.js), so framing
(Content-Length, chunked, read-until-close) is never hand-written.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache

import httptools
from yarl import URL


class BackendError(Exception):
    """The backend could not be called or did not answer properly; ``kind`` names what went wrong."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


_DISCONNECTED = "ServerDisconnected"


def _disconnected() -> BackendError:
    return BackendError(_DISCONNECTED, "backend closed the connection")


class _StaleConnection(Exception):
    """The connection closed before any byte of the answer arrived."""


# RFC 9110 §9.2.2: a repeat of these has the same effect as one request.
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})


class ResponseTooLarge(BackendError):
    def __init__(self, limit: int) -> None:
        super().__init__("ResponseTooLarge", f"response is larger than the limit of {limit} bytes")


@dataclass(slots=True)
class BackendResponse:
    status: int
    headers: list[tuple[str, str]]  # names lower-cased, in order
    body: bytes


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token: a method or a header name


def _check_header(name: str, value: str) -> None:
    # A header may come from the caller (REST headers are relayed): CR, LF or NUL would split the request.
    if not _TOKEN.fullmatch(name) or "\r" in value or "\n" in value or "\0" in value:
        raise BackendError("InvalidHeader", f"header {name!r} cannot be sent to the backend")


def encode_request(method: str, target: str, host: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    """The request head and body as bytes (Host and Content-Length set here, never taken from ``headers``)."""
    if not _TOKEN.fullmatch(method):
        raise BackendError("InvalidMethod", f"method {method!r} cannot be sent to the backend")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    for name, value in headers:
        lower = name.lower()
        if lower in ("host", "content-length", "transfer-encoding", "connection"):
            continue
        _check_header(name, value)
        lines.append(f"{name}: {value}")
    if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
        lines.append(f"Content-Length: {len(body)}")
    # UTF-8, as aiohttp's client wrote them; surrogateescape gives back the exact bytes of a header that arrived
    # as undecodable bytes.
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


@dataclass(slots=True)
class _Exchange:
    """What one request waits for, filled in by the parser callbacks."""

    future: asyncio.Future[BackendResponse]
    limit: int
    head_only: bool
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    headers_done: bool = False


def _reads_until_close(exchange: _Exchange) -> bool:
    """Whether the answer's body is delimited by the end of the connection (no length, not chunked)."""
    names = {name for name, _ in exchange.headers}
    return "content-length" not in names and "transfer-encoding" not in names


class _Connection(asyncio.Protocol):
    """One keep-alive connection: at most one request at a time, answered through ``current``."""

    def __init__(self, pool: BackendPool, key: tuple[str, str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.current: _Exchange | None = None
        self.closed = False
        self.idle_handle: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.current is None:  # nothing asked: a backend talking out of turn cannot be trusted with the next
            self._abort()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BackendError("ProtocolError", "backend switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(BackendError("ProtocolError", f"backend sent a malformed response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)
        current, self.current = self.current, None
        if current is None or current.future.done():
            return
        if current.headers_done and _reads_until_close(current):
            current.future.set_result(BackendResponse(current.status, current.headers, b"".join(current.chunks)))
        else:
            current.future.set_exception(_disconnected())

    # -- httptools callbacks ---------------------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.current is None:  # the rest of an answer already given up on (HEAD, or a failure)
            return
        # Values as UTF-8 (what aiohttp did); an invalid byte becomes U+FFFD rather than a string the signed
        # manifest could not encode.
        self.current.headers.append((name.decode("latin-1").lower(), value.decode("utf-8", "replace")))

    def on_headers_complete(self) -> None:
        current = self.current
        if current is None:
            return
        current.status = self.parser.get_status_code()
        if 100 <= current.status < 200:  # an interim answer: the real one follows on the same connection
            current.headers = []
            return
        current.headers_done = True
        if current.head_only:
            # A HEAD answer has no body whatever its Content-Length says; the parser would wait for one.
            current.future.set_result(BackendResponse(current.status, current.headers, b""))
            self.current = None
            self._abort()

    def on_body(self, body: bytes) -> None:
        current = self.current
        if current is None:
            return
        current.size += len(body)
        if current.size > current.limit:
            self._fail(ResponseTooLarge(current.limit))  # not raised: httptools would wrap it as a parser error
            return
        current.chunks.append(body)

    def on_message_complete(self) -> None:
        current = self.current
        if current is None or not current.headers_done:
            return  # the end of an interim (1xx) answer
        self.current = None
        if not current.future.done():
            current.future.set_result(BackendResponse(current.status, current.headers, b"".join(current.chunks)))
        if self.parser.should_keep_alive() and not self.closed:
            self.pool._release(self)
        else:
            self._abort()

    # -- helpers ------------------------------------------------------------------------------------------------

    def _fail(self, exc: BackendError) -> None:
        current, self.current = self.current, None
        if current is not None and not current.future.done():
            current.future.set_exception(exc)
        self._abort()

    def _abort(self) -> None:
        self.closed = True
        self.pool._forget(self)
        if self.transport is not None:
            self.transport.abort()


def _expire(future: asyncio.Future[BackendResponse]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


@lru_cache(maxsize=1024)
def _split_url(url: str) -> tuple[tuple[str, str, int], str, str]:
    """((scheme, host, port), the Host header, the request target) of a backend URL."""
    parsed = URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.raw_host:
        raise BackendError("InvalidURL", "backend URL must be http or https with a host")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    name = f"[{parsed.raw_host}]" if ":" in parsed.raw_host else parsed.raw_host
    host = name if parsed.is_default_port() else f"{name}:{port}"
    return (parsed.scheme, parsed.raw_host, port), host, parsed.raw_path_qs or "/"


class BackendPool:
    """Keep-alive connections to backends, per (scheme, host, port); at most ``idle_per_host`` idle ones are kept,
    each for ``idle_seconds``. Connections in use are not capped: the peer link already bounds concurrency."""

    def __init__(self, *, idle_per_host: int = 256, idle_seconds: float = 30.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.idle_per_host = idle_per_host
        self.idle_seconds = idle_seconds
        self._ssl = ssl_context
        self._idle: dict[tuple[str, str, int], deque[_Connection]] = {}
        self._all: set[_Connection] = set()
        self._closed = False

    async def request(self, method: str, url: str, headers: list[tuple[str, str]], body: bytes, *,
                      timeout: float, limit: int) -> BackendResponse:
        """Send one request and read its response whole; raises BackendError, ResponseTooLarge or TimeoutError."""
        key, host, target = _split_url(url)
        data = encode_request(method, target, host, headers, body)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        conn = self._take_idle(key)
        if conn is not None:
            try:
                return await self._send(conn, data, method, limit, deadline)
            except _StaleConnection:
                # The backend closed this idle connection as we reused it, before answering anything. Only a
                # request that may safely run twice is sent again; anything else fails as a disconnection.
                if method not in _IDEMPOTENT:
                    raise _disconnected() from None
        conn = await asyncio.wait_for(self._connect(key), max(deadline - loop.time(), 0))
        try:
            return await self._send(conn, data, method, limit, deadline)
        except _StaleConnection:
            raise _disconnected() from None

    async def _send(self, conn: _Connection, data: bytes, method: str, limit: int,
                    deadline: float) -> BackendResponse:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[BackendResponse] = loop.create_future()
        exchange = conn.current = _Exchange(future, limit, head_only=method == "HEAD")
        assert conn.transport is not None
        conn.transport.write(data)
        # A plain timer on the future: cheaper than asyncio.timeout on every call.
        timer = loop.call_at(deadline, _expire, future)
        try:
            return await future
        except BackendError as exc:
            if exc.kind == _DISCONNECTED and exchange.status == 0 and not exchange.headers:
                raise _StaleConnection() from None
            raise
        except BaseException:
            if conn.current is not None:
                conn._abort()  # timed out or cancelled mid-answer: the connection's state is unknown
            raise
        finally:
            timer.cancel()

    def _take_idle(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.idle_handle is not None:
                conn.idle_handle.cancel()
                conn.idle_handle = None
            if not conn.closed:
                return conn
        return None

    async def _connect(self, key: tuple[str, str, int]) -> _Connection:
        scheme, host, port = key
        context = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(lambda: _Connection(self, key), host, port, ssl=context)
        except (OSError, ssl.SSLError) as exc:
            raise BackendError("ConnectionFailed", f"cannot connect to the backend: {exc.__class__.__name__}") from None
        self._all.add(conn)
        return conn

    def _release(self, conn: _Connection) -> None:
        idle = self._idle.setdefault(conn.key, deque())
        if self._closed or len(idle) >= self.idle_per_host:
            conn._abort()
            return
        idle.append(conn)
        conn.idle_handle = asyncio.get_running_loop().call_later(self.idle_seconds, conn._abort)

    def _forget(self, conn: _Connection) -> None:
        self._all.discard(conn)
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)
        if conn.idle_handle is not None:
            conn.idle_handle.cancel()
            conn.idle_handle = None

    async def close(self) -> None:
        self._closed = True
        for conn in list(self._all):
            conn._abort()
        self._idle.clear()
