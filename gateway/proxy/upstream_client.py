"""A lean HTTP/1.1 client for the hot path: one keep-alive pool per catalog upstream.

(The largest module, on purpose: a connection's protocol state, its pool and its timeout
sweep are one state machine, and its invariants read best side by side.)

Why not ``aiohttp.ClientSession`` (which the gateway still uses off the hot path, for
upstream token requests, and keeps as the control and fallback behind the same seam:
``transport``, ``aiohttp_transport``): measured on the benchmark's fixed loadTable answer,
the aiohttp client machinery (request and response objects, URL handling, timers, tracing
hooks, cookie and redirect logic) costs more CPU per request than the whole rest of the
gateway. A proxy needs none of it: it sends a request line and headers it has already
vetted, and reads back status, headers and a body. Parsing is done by ``httptools`` (the
llhttp parser behind uvicorn), so no HTTP parsing is ours; what is ours is the connection
handling, kept small here:

- Keep-alive: idle connections are reused last-in first-out and dropped after
  ``idle_timeout``. A connection is reused only after a complete response that allows it,
  with its request body fully sent; anything else (an error, a cancelled request, bytes
  arriving while idle) closes it. A ``GET``/``HEAD`` that finds its reused connection already
  closed by the upstream (the usual keep-alive race) is sent once more on a new connection;
  requests with side effects never are.
- Framing: a response ends where llhttp says (Content-Length, chunked, or no body for
  1xx/204/304), at the end of the headers for ``HEAD``, or at EOF when it declared neither
  length nor chunking. Interim 1xx responses are skipped. Request bodies go with a
  Content-Length when known and chunked otherwise; any Content-Length among the given
  headers is replaced by ours, so a body and its framing cannot disagree.
- Request splitting: a header name or value, method or target carrying CR or LF is refused
  before anything is sent (the inbound parser already rejects them; this also covers values
  the gateway adds, such as an upstream token).
- Limits and timeouts: response headers above ``MAX_HEADER_BYTES`` are an error (llhttp has
  no limit of its own); connecting is bounded by ``connect_timeout``, and the upstream's
  silence while we wait for it by ``read_timeout`` (not counted while we hold off reading
  because the client downstream is slow: reading pauses above ``_HIGH_WATER`` buffered
  bytes).

Errors (the seam's, defined in ``transport``): ``UpstreamConnectError`` (could not connect),
``UpstreamReadTimeout`` (silent too long), ``UpstreamProtocolError`` (closed early, unparsable,
oversized).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import typing
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Final

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

# The errors belong to the seam (the aiohttp transport raises the same ones); re-exported here
# for the callers and tests that name them with this client.
from .transport import (
    MAX_HEADER_BYTES,
    ResponseTooLarge,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamReadTimeout,
    base_url_parts,
    read_limited,
)

__all__ = (
    "MAX_HEADER_BYTES",
    "ResponseTooLarge",
    "UpstreamClient",
    "UpstreamConnectError",
    "UpstreamProtocolError",
    "UpstreamReadTimeout",
    "UpstreamResponse",
)

# Buffered response bytes before reading pauses; it resumes once the reader took them.
_HIGH_WATER: Final = 256 * 1024
_RETRYABLE: Final = frozenset({"GET", "HEAD"})
_BODYLESS: Final = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "TRACE"})


class _Connection(asyncio.Protocol):
    """One upstream connection and the state of the response being read on it."""

    def __init__(self, client: UpstreamClient) -> None:
        self._client = client
        self._loop = client.loop
        self.transport: asyncio.Transport | None = None
        self.reused = False
        self.idle_since = 0.0
        # Per response (reset by start):
        self._parser: httptools.HttpResponseParser | None = None
        self._head = False
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0  # raw bytes before the headers ended (llhttp sets no bound)
        self._field_bytes = 0
        self._until_eof = False
        self._keep_alive = False
        self.headers_done = False
        self.done = False  # the whole response has arrived
        self.error: BaseException | None = None
        self.received_any = False
        self.request_sent = False
        self._body: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._last_read = 0.0
        self._drain: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = typing.cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None or self.done or self.error is not None:
            # Bytes nobody asked for: the framing can no longer be trusted.
            self._fail(UpstreamProtocolError("unexpected data from the upstream"))
            return
        self.received_any = True
        self._last_read = self._loop.time()
        if not self.headers_done:
            self._header_bytes += len(data)
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocolError(f"unparsable response: {type(exc).__name__}"))
            return
        if not self.headers_done and self.error is None and self._header_bytes > MAX_HEADER_BYTES:
            self._fail(UpstreamProtocolError("response headers too large"))

    def eof_received(self) -> bool | None:
        return False  # close the transport; connection_lost settles the response

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self._parser is not None and not self.done and self.error is None:
            if self.headers_done and self._until_eof:
                self._complete()  # a body delimited by the end of the connection
            else:
                self._fail(UpstreamProtocolError("upstream closed the connection early"))
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def pause_writing(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- httptools callbacks (only the ones defined here are called) ---------------------------

    def on_message_begin(self) -> None:
        if self.done:
            # A second message after ours, unasked for: keep our complete response, but the
            # connection is not to be trusted again.
            if self.transport is not None:
                self.transport.abort()
                self.transport = None
            return
        self.status = 0
        self.reason = b""
        self.headers = []

    def on_status(self, data: bytes) -> None:
        if not self.done:
            self.reason += data

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.done:
            self.headers.append((name, value))
            self._field_bytes += len(name) + len(value)

    def on_headers_complete(self) -> None:
        if self.done:
            return
        assert self._parser is not None
        if self._field_bytes > MAX_HEADER_BYTES:
            self._fail(UpstreamProtocolError("response headers too large"))
            return
        status = self._parser.get_status_code()
        if status < 200:
            return  # interim (100 Continue, 103 Early Hints): the real answer follows
        self.status = status
        self.headers_done = True
        # Asked now: llhttp resets what it knows of the message once the message ends.
        self._keep_alive = self._parser.should_keep_alive()
        self._until_eof = (
            not self._head
            and status not in (204, 304)
            and not any(
                name.lower() in (b"content-length", b"transfer-encoding")
                for name, _ in self.headers
            )
        )
        if self._head:
            # No body follows a HEAD answer, whatever Content-Length says; this parser is
            # dropped with the response, so it never reads on into the next one.
            self._complete()
        else:
            self._wake()

    def on_body(self, data: bytes) -> None:
        if self.done:
            return
        self._body.append(data)
        self._buffered += len(data)
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.headers_done and not self.done:
            self._complete()

    # -- one exchange --------------------------------------------------------------------------

    def start(self, head: bool) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._head = head
        self.status = 0
        self.reason = b""
        self.headers = []
        self._header_bytes = 0  # raw bytes before the headers ended (llhttp sets no bound)
        self._field_bytes = 0
        self._until_eof = False
        self._keep_alive = False
        self.headers_done = self.done = self.received_any = self.request_sent = False
        self.error = None
        self._body.clear()
        self._buffered = 0
        self._last_read = self._loop.time()
        self._client.watch(self)

    def check_timeout(self, now: float) -> None:
        """Called by the client's sweep while this connection waits on the upstream."""
        if self._paused:
            self._last_read = now  # our own hold-up (a slow client), not the upstream's silence
        elif now - self._last_read >= self._client.read_timeout:
            self._fail(UpstreamReadTimeout())

    def wrote(self) -> None:
        """Uploading a request body counts as activity: the answer is not due yet."""
        self._last_read = self._loop.time()

    def _complete(self) -> None:
        self.done = True
        self._client.unwatch(self)
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if self.error is None and not self.done:
            self.error = error
        self._client.unwatch(self)
        if self.transport is not None:
            self.transport.abort()
            self.transport = None
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self) -> None:
        """Until something changes: headers, body, completion or an error."""
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def drain(self) -> None:
        if self._drain is not None and not self._drain.done():
            await self._drain

    def take_body(self) -> bytes | None:
        """Buffered body bytes (None if there are none yet)."""
        if not self._body:
            return None
        data = self._body.popleft() if len(self._body) == 1 else b"".join(self._body)
        self._body.clear()
        self._buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self._last_read = self._loop.time()
            self.transport.resume_reading()
        return data

    @property
    def reusable(self) -> bool:
        return (
            self.done
            and self.request_sent
            and self.error is None
            and self.transport is not None
            and not self.transport.is_closing()
            and not self._until_eof
            and self._keep_alive
        )

    def close(self) -> None:
        self._client.unwatch(self)
        if self.transport is not None:
            self.transport.close()
            self.transport = None


class UpstreamResponse:
    """An upstream answer: status and headers now, the body as it arrives."""

    __slots__ = ("_conn", "_headers", "_released", "raw_headers", "reason", "status")

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self._released = False
        self.status = conn.status
        self.reason = conn.reason.decode("latin-1")
        # As sent, in order (repeats kept); decoded as aiohttp decodes them.
        self.raw_headers = [
            (n.decode("latin-1"), v.decode("utf-8", "surrogateescape")) for n, v in conn.headers
        ]
        self._headers: CIMultiDictProxy[str] | None = None

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        """The headers for lookups (built on first use: forwarding needs only the list)."""
        if self._headers is None:
            self._headers = CIMultiDictProxy(CIMultiDict(self.raw_headers))
        return self._headers

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        return int(value) if value is not None and value.isdigit() else None

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            data = conn.take_body()
            if data is not None:
                yield data
                continue
            if conn.error is not None:
                raise conn.error
            if conn.done:
                return
            await conn.wait()

    async def read(self, limit: int) -> bytes:
        """The whole body; ``ResponseTooLarge`` if it is longer than ``limit``."""
        conn = self._conn
        if conn.done and conn.error is None:  # the usual case: it all came with the headers
            body = conn.take_body() or b""
            if len(body) > limit:
                raise ResponseTooLarge()
            return body
        return await read_limited(self.content_length, self.iter_chunks(), limit)

    def release(self) -> None:
        """Hand the connection back (reused only after a complete response), or close it."""
        if not self._released:
            self._released = True
            self._conn.take_body()
            self._conn._client._put(self._conn)


class UpstreamClient:
    """One upstream origin (``base_url``'s scheme, host and port; its path prefixes every
    request target) with a keep-alive pool. Create and use it inside one event loop."""

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float,
        read_timeout: float,
        idle_timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = base_url_parts(base_url)
        self.loop = asyncio.get_running_loop()
        self._host: str = parts.hostname or ""  # never empty: base_url_parts checked it
        self._tls = parts.scheme == "https"
        self._port = parts.port or (443 if self._tls else 80)
        default_port = parts.port is None or parts.port == (443 if self._tls else 80)
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._host_header = host if default_port else f"{host}:{self._port}"
        self.base_path = parts.path.rstrip("/")
        self._ssl = (ssl_context or ssl.create_default_context()) if self._tls else None
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.idle_timeout = idle_timeout
        self._idle: collections.deque[_Connection] = collections.deque()
        self._closed = False
        # Connections waiting on the upstream, swept for read timeouts a few times per timeout
        # (at most every second) instead of a timer armed and cancelled per request.
        self._busy: set[_Connection] = set()
        self._sweep_every = min(1.0, read_timeout / 4)
        self._sweeping: asyncio.TimerHandle | None = None

    async def request(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]],
        body: bytes | AsyncIterable[bytes] | None = None,
        *,
        content_length: int | None = None,
    ) -> UpstreamResponse:
        """Send ``method`` for ``target`` (raw path and query, appended to the base path) and
        wait for the response headers. A streamed ``body`` goes chunked unless
        ``content_length`` is given (and then must be exactly that long)."""
        head = self._head(method, target, headers, body, content_length)
        retry = method in _RETRYABLE and body is None
        while True:
            conn = await self._get()
            try:
                return await self._exchange(conn, method, head, body, content_length)
            except UpstreamProtocolError:
                conn.close()
                if retry and conn.reused and not conn.received_any:
                    retry = False
                    continue  # the upstream closed an idle connection as we reused it
                raise
            except BaseException:
                conn.close()  # cancelled or timed out mid-exchange: the state is unknown
                raise

    def _head(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]],
        body: bytes | AsyncIterable[bytes] | None,
        content_length: int | None,
    ) -> bytes:
        lines = [f"{method} {self.base_path}{target} HTTP/1.1\r\nHost: {self._host_header}\r\n"]
        count = 3  # request line, Host, and the blank line that ends the head
        for name, value in headers:
            if name.lower() in ("content-length", "host"):
                continue  # ours below: the framing must match the body actually sent
            lines.append(f"{name}: {value}\r\n")
            count += 1
        if isinstance(body, bytes):
            lines.append(f"Content-Length: {len(body)}\r\n")
            count += 1
        elif body is not None:
            lines.append(
                "Transfer-Encoding: chunked\r\n"
                if content_length is None
                else f"Content-Length: {content_length}\r\n"
            )
            count += 1
        elif method not in _BODYLESS:
            lines.append("Content-Length: 0\r\n")
            count += 1
        lines.append("\r\n")
        text = "".join(lines)
        # Every line ends in exactly one CRLF: one extra CR or LF anywhere (a value smuggling
        # a header or a second request) changes these counts.
        if text.count("\n") != count or text.count("\r") != count:
            raise ValueError("CR or LF in an upstream request line or header")
        return text.encode("utf-8", "surrogateescape")

    async def _exchange(
        self,
        conn: _Connection,
        method: str,
        head: bytes,
        body: bytes | AsyncIterable[bytes] | None,
        content_length: int | None,
    ) -> UpstreamResponse:
        transport = conn.transport
        if transport is None:
            raise UpstreamProtocolError("upstream closed the connection early")
        conn.start(head=method == "HEAD")
        if body is None or isinstance(body, bytes):
            transport.write(head + body if body else head)  # one write, usually one segment
            conn.request_sent = True
        else:
            transport.write(head)
            await self._stream(conn, body, content_length)
        while not conn.headers_done:
            if conn.error is not None:
                raise conn.error
            await conn.wait()
        return UpstreamResponse(conn)

    async def _stream(
        self, conn: _Connection, body: AsyncIterable[bytes], content_length: int | None
    ) -> None:
        sent = 0
        async for chunk in body:
            transport = conn.transport
            if transport is None or conn.error is not None:
                break  # the upstream closed, or answered already: the response tells which
            if not chunk:
                continue
            sent += len(chunk)
            if content_length is not None and sent > content_length:
                # Never a byte past the length we declared: the surplus would reach the
                # upstream as the start of another request on this connection.
                raise UpstreamProtocolError("request body longer than its Content-Length")
            if content_length is None:
                transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            else:
                transport.write(chunk)
            conn.wrote()
            await conn.drain()
        else:
            if content_length is not None and sent != content_length:
                raise UpstreamProtocolError("request body shorter than its Content-Length")
            if content_length is None and conn.transport is not None:
                conn.transport.write(b"0\r\n\r\n")
            conn.request_sent = True

    async def _get(self) -> _Connection:
        now = self.loop.time()
        while self._idle:
            conn = self._idle.pop()
            if conn.transport is not None and now - conn.idle_since < self.idle_timeout:
                conn.reused = True
                return conn
            conn.close()
        if self._closed:
            raise UpstreamConnectError("the upstream client is closed")
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await self.loop.create_connection(
                    lambda: _Connection(self),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._tls else None,
                )
        except (OSError, TimeoutError) as exc:
            raise UpstreamConnectError(type(exc).__name__) from exc
        return conn

    def _put(self, conn: _Connection) -> None:
        if conn.reusable and not self._closed:
            conn.idle_since = self.loop.time()
            conn._parser = None  # bytes arriving while idle are an error (data_received)
            self._idle.append(conn)
        else:
            conn.close()

    def watch(self, conn: _Connection) -> None:
        self._busy.add(conn)
        if self._sweeping is None:
            self._sweeping = self.loop.call_later(self._sweep_every, self._sweep)

    def unwatch(self, conn: _Connection) -> None:
        self._busy.discard(conn)

    def _sweep(self) -> None:
        self._sweeping = None
        now = self.loop.time()
        for conn in list(self._busy):
            conn.check_timeout(now)
        if self._busy:
            self._sweeping = self.loop.call_later(self._sweep_every, self._sweep)

    def close(self) -> None:
        """Close idle connections; connections still in use close when released."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()

    async def wait_closed(self) -> None:
        """Nothing to wait for: ``close`` closed the idle connections at once (their sockets
        finish closing in the loop), and those in use close when released."""
