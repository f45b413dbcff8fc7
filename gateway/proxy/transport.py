"""The seam between forwarding and the HTTP client that talks to a catalog upstream.

Why a seam: the hot path's own lean client (``upstream_client.UpstreamClient``) is measured
faster than ``aiohttp.ClientSession`` (the benchmark's fixed loadTable answer costs the aiohttp
client machinery more CPU than the rest of the gateway), but it is our code; aiohttp's client
(``aiohttp_transport.AiohttpTransport``) is the well-known one. Keeping both behind this small
Protocol makes aiohttp the control the lean client is measured and tested against (the same
forwarding tests run on both), and the fallback an operator can switch to
(``catalogs.<name>.client = "aiohttp"``) should the lean client ever misbehave.

What is named here is exactly what the forwarder and ``/readyz`` use, and the errors the
forwarder maps to Iceberg answers (503, 504, 502), which both implementations raise for the
same failures. Both must keep the forwarding invariants: one upstream request per call, framed
by the transport itself (a ``Content-Length`` among the given headers is replaced, never
trusted), no redirect followed, no header added that the caller did not give beyond ``Host``
and the framing, and no CR or LF smuggled into the request head (``ValueError``).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Final, Protocol
from urllib.parse import SplitResult, urlsplit

from multidict import CIMultiDictProxy

__all__ = (
    "MAX_HEADER_BYTES",
    "ResponseTooLarge",
    "TransportResponse",
    "UpstreamConnectError",
    "UpstreamProtocolError",
    "UpstreamReadTimeout",
    "UpstreamTransport",
    "base_url_parts",
    "read_limited",
)

# Largest response head (status line and headers) accepted from an upstream, by either client.
MAX_HEADER_BYTES: Final = 64 * 1024


class UpstreamConnectError(ConnectionError):
    """No connection to the upstream (refused, unreachable, DNS, connect timeout)."""


class UpstreamReadTimeout(TimeoutError):
    """The upstream said nothing for ``read_timeout`` seconds while an answer was due."""


class UpstreamProtocolError(ConnectionError):
    """The upstream closed the connection early or sent something unusable."""


class ResponseTooLarge(UpstreamProtocolError):
    """A body read whole (``TransportResponse.read``) is longer than the caller's limit."""


class TransportResponse(Protocol):
    """An upstream answer: status and headers now, the body as it arrives."""

    @property
    def status(self) -> int: ...

    @property
    def reason(self) -> str: ...

    @property
    def raw_headers(self) -> list[tuple[str, str]]:
        """As sent, in order, repeats kept (what the forwarder passes on)."""
        ...

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        """The same headers, for lookups."""
        ...

    @property
    def content_length(self) -> int | None: ...

    def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; ``UpstreamProtocolError`` or ``UpstreamReadTimeout`` if the
        upstream breaks off."""
        ...

    async def read(self, limit: int) -> bytes:
        """The whole body; ``ResponseTooLarge`` if it is longer than ``limit``."""
        ...

    def release(self) -> None:
        """Done with the answer: its connection is reused only after a complete exchange."""
        ...


class UpstreamTransport(Protocol):
    """One upstream origin with a keep-alive pool; created and used inside one event loop."""

    async def request(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]],
        body: bytes | AsyncIterable[bytes] | None = None,
        *,
        content_length: int | None = None,
    ) -> TransportResponse:
        """Send ``method`` for ``target`` (raw path and query, appended to the base URL's path,
        sent as is) and wait for the response headers. A streamed ``body`` goes chunked unless
        ``content_length`` is given (and then must be exactly that long)."""
        ...

    def close(self) -> None:
        """Take no more requests and start closing connections (in use ones when released)."""
        ...

    async def wait_closed(self) -> None:
        """After ``close``: until what the transport holds is closed (as ``asyncio.Server``)."""
        ...


async def read_limited(
    content_length: int | None, chunks: AsyncIterator[bytes], limit: int
) -> bytes:
    """A whole body of at most ``limit`` bytes, for either client's ``read``: refused before
    reading when the declared length is over, and as soon as what arrives is."""
    if content_length is not None and content_length > limit:
        raise ResponseTooLarge()
    parts: list[bytes] = []
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise ResponseTooLarge()
        parts.append(chunk)
    return b"".join(parts)


def base_url_parts(base_url: str) -> SplitResult:
    """A catalog's upstream URL, split; ValueError unless it is http(s) with a host."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {base_url!r}")
    return parts
