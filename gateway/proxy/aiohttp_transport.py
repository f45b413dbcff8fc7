"""The upstream transport on ``aiohttp.ClientSession``: the control and fallback for the lean
client (see ``transport`` for why both exist; ``catalogs.<name>.client = "aiohttp"``).

One session, so one keep-alive connector, per catalog, configured to behave as the lean client
does where aiohttp's defaults differ:

- Bodies pass byte for byte (``auto_decompress=False``); no cookie jar (one user's upstream
  cookies must never reach another's request); ``skip_auto_headers`` and no ``trust_env``, so
  aiohttp adds no User-Agent, Accept, Accept-Encoding or Content-Type, no proxy and no
  ``.netrc`` credential; redirects are never followed (the client gets the 3xx).
- Framing is ours: a ``Content-Length`` or ``Transfer-Encoding`` among the given headers is
  dropped; aiohttp frames bytes with their length, a streamed body with the given length
  (checked here to be exact, as the lean client checks it) or chunked. One difference: a
  bodiless ``DELETE`` goes with ``Content-Length: 0`` (the lean client sends no length); both
  frame the same empty body.
- No replays of requests with side effects: aiohttp resends "idempotent" methods (``DELETE``
  and ``PUT`` included) once when the connection breaks, even a new one; like the lean client,
  only a bodiless ``GET``/``HEAD`` may be sent again (a per-request middleware turns the
  failure into one aiohttp does not retry).
- Timeouts and limits: ``connect_timeout`` bounds getting a connection, ``read_timeout`` the
  upstream's silence once the request is sent (aiohttp also stops that clock while reading is
  paused because the client downstream is slow); a response head above ``MAX_HEADER_BYTES`` is
  an ``UpstreamProtocolError``.
- Errors: aiohttp's are raised as the seam's (``UpstreamConnectError``, ``UpstreamReadTimeout``,
  ``UpstreamProtocolError``, ``ResponseTooLarge``); a failure of the caller's own body (the
  client's 413, 400 or 499) is raised as it was, not as aiohttp's wrapping of it.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Final

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .transport import (
    MAX_HEADER_BYTES,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamReadTimeout,
    base_url_parts,
    read_limited,
)

__all__ = ("AiohttpTransport",)

# The lean client's bound (a read pauses above 256 KiB buffered); aiohttp pauses at twice this.
_READ_BUFSIZE: Final = 128 * 1024
# aiohttp also bounds the number of header lines (default 128, where the lean client bounds
# only their bytes): enough that MAX_HEADER_BYTES, checked below, is the bound that matters.
_MAX_HEADERS: Final = 1024
_RETRYABLE: Final = frozenset({"GET", "HEAD"})
# Ours to set from the body actually sent, never the caller's (the client's) values.
_FRAMING: Final = frozenset({"content-length", "transfer-encoding", "host"})
_SKIP_AUTO_HEADERS: Final = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


class _NotRetried(aiohttp.ClientConnectionError):
    """A broken connection, in a type aiohttp's replay of idempotent methods does not catch."""


async def _no_replay(
    request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    try:
        return await handler(request)
    except aiohttp.ClientConnectorError:
        raise  # never replayed by aiohttp (nothing was sent); the caller's 503
    except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as exc:
        raise _NotRetried(type(exc).__name__) from exc


_NO_REPLAY: Final = (_no_replay,)


def _upstream_error(exc: BaseException) -> BaseException:
    """The seam's error for one of aiohttp's (others are returned unchanged)."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):  # before ServerTimeoutError, its base
        return UpstreamConnectError("TimeoutError")
    if isinstance(exc, aiohttp.ClientConnectorError):
        # The cause's type only, as the lean client reports it: ConnectionRefusedError,
        # SSLCertVerificationError, gaierror ...
        return UpstreamConnectError(type(exc.os_error).__name__)
    if isinstance(exc, TimeoutError):  # aiohttp.SocketTimeoutError: the read timeout
        return UpstreamReadTimeout()
    if isinstance(exc, aiohttp.ClientError | OSError):
        return UpstreamProtocolError(type(exc).__name__)
    return exc


class _Body:
    """A streamed request body on its way through aiohttp: held to its declared length, and
    its own failure kept, since aiohttp reports it as a broken connection."""

    __slots__ = ("_length", "_source", "error")

    def __init__(self, source: AsyncIterable[bytes], length: int | None) -> None:
        self._source = source
        self._length = length
        self.error: Exception | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        sent = 0
        try:
            async for chunk in self._source:
                if not chunk:
                    continue  # an empty chunk would end a chunked body early
                sent += len(chunk)
                if self._length is not None and sent > self._length:
                    # aiohttp would cut the surplus off silently; refused as the lean client does.
                    raise UpstreamProtocolError("request body longer than its Content-Length")
                yield chunk
            if self._length is not None and sent != self._length:
                raise UpstreamProtocolError("request body shorter than its Content-Length")
        except Exception as exc:
            self.error = exc
            raise


class _Response:
    """An upstream answer (``transport.TransportResponse``) over aiohttp's."""

    __slots__ = ("_resp", "_released", "headers", "raw_headers", "reason", "status")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self._released = False
        self.status = resp.status
        self.reason = resp.reason or ""
        # As sent, in order (repeats kept), decoded as the lean client decodes them.
        self.raw_headers = [
            (n.decode("latin-1"), v.decode("utf-8", "surrogateescape")) for n, v in resp.raw_headers
        ]
        self.headers: CIMultiDictProxy[str] = resp.headers

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        return int(value) if value is not None and value.isdigit() else None

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        try:
            async for data in self._resp.content.iter_any():
                yield data
        except (aiohttp.ClientError, OSError) as exc:
            raise _upstream_error(exc) from None

    async def read(self, limit: int) -> bytes:
        """The whole body; ``ResponseTooLarge`` if it is longer than ``limit``."""
        return await read_limited(self.content_length, self.iter_chunks(), limit)

    def release(self) -> None:
        """aiohttp reuses the connection only after a complete response to a completely sent
        request: an unread or broken body, or an upload still running, closes it."""
        if not self._released:
            self._released = True
            self._resp.release()


class AiohttpTransport:
    """One upstream origin (``base_url``'s scheme, host and port; its path prefixes every
    request target) on its own ``aiohttp.ClientSession``. Create and use it inside one loop."""

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
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self.base_path = parts.path.rstrip("/")
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=0,  # as the lean pool: no cap, no queueing behind busy connections
                keepalive_timeout=idle_timeout,
                ssl=ssl_context if ssl_context is not None else True,
            ),
            timeout=aiohttp.ClientTimeout(
                total=None, connect=connect_timeout, sock_read=read_timeout
            ),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=_SKIP_AUTO_HEADERS,
            trust_env=False,
            read_bufsize=_READ_BUFSIZE,
            max_line_size=MAX_HEADER_BYTES,
            max_field_size=MAX_HEADER_BYTES,
            max_headers=_MAX_HEADERS,
        )
        self._closing: asyncio.Task[None] | None = None

    async def request(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]],
        body: bytes | AsyncIterable[bytes] | None = None,
        *,
        content_length: int | None = None,
    ) -> _Response:
        """Send ``method`` for ``target`` (raw path and query, appended to the base path) and
        wait for the response headers. A streamed ``body`` goes chunked unless
        ``content_length`` is given (and then must be exactly that long)."""
        if self._closing is not None:
            raise UpstreamConnectError("the upstream client is closed")
        out: CIMultiDict[str] = CIMultiDict()
        for name, value in headers:
            if name.lower() not in _FRAMING:
                out.add(name, value)
        _refuse_line_breaks(method, target, out)
        streamed: _Body | None = None
        data: bytes | AsyncIterator[bytes] | None = None
        if isinstance(body, bytes):
            data = body  # aiohttp sends it with its Content-Length
        elif body is not None:
            streamed = _Body(body, content_length)
            data = streamed.chunks()
            if content_length is not None:
                out["Content-Length"] = str(content_length)  # else aiohttp sends it chunked
        url = URL(f"{self._origin}{self.base_path}{target}", encoded=True)  # sent as given
        try:
            resp = await self._session.request(
                method,
                url,
                headers=out,
                data=data,
                allow_redirects=False,
                # The session's (none): aiohttp may resend a bodiless GET or HEAD once.
                middlewares=None if method in _RETRYABLE and body is None else _NO_REPLAY,
            )
        except (aiohttp.ClientError, OSError) as exc:
            if streamed is not None and streamed.error is not None:
                raise streamed.error from None  # the body's own failure, not the upstream's
            raise _upstream_error(exc) from None
        response = _Response(resp)
        if sum(len(n) + len(v) for n, v in response.raw_headers) > MAX_HEADER_BYTES:
            resp.close()
            raise UpstreamProtocolError("response headers too large")
        if streamed is not None and streamed.error is not None:
            resp.close()  # the upstream answered early, but the request itself failed
            raise streamed.error
        return response

    def close(self) -> None:
        """Take no more requests and close the session (its connections with it)."""
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._session.close())

    async def wait_closed(self) -> None:
        if self._closing is not None:
            await self._closing


def _refuse_line_breaks(method: str, target: str, headers: CIMultiDict[str]) -> None:
    """CR or LF anywhere in the head could smuggle a header or a second request (the lean
    client refuses the same before sending anything; aiohttp checks header values only)."""
    for text in (method, target, *headers.keys(), *headers.values()):
        if "\r" in text or "\n" in text:
            raise ValueError("CR or LF in an upstream request line or header")
