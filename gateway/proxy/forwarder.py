"""Forwarding one request to a catalog's upstream, streaming both ways.

Method, query and body go upstream exactly as received, the path in the one normalised form
``routing`` judged (still percent-encoded: namespaces carry ``%1F`` and prefixes may carry
``%2F``). Bodies stream in both directions, with two exceptions. Request bodies that name what
they create or rename (``identifiers.NAMED_IN_BODY``: small JSON) are read whole by the handler
(``read_body``) to judge those names, and go upstream as the same bytes with their length. The
answers of routes whose answers the grammar says are filtered (``/v1/config``, table and view
routes, unknown routes) are read whole, whatever their status, because they may need
rewriting (see ``rewrite``). They are asked for uncompressed, and a compressed one is refused
(502) rather than passed on uninspected.

Errors: the upstream cannot be reached (refused, connect timeout, DNS) -> 503; it accepted the
request but did not answer in time -> 504; the connection broke otherwise -> 502. Upstream
4xx/5xx answers pass through unchanged. Each such failure, and the time until each answer's
headers arrived, is counted in the catalog's ``UpstreamStats`` (``metrics``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Final

import aiohttp
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from ..audit.clients import ClientAddresses
from ..auth.assertions import ASSERTION_HEADER, LEAST_LEFT
from ..errors import (
    BadRequest,
    ClientClosedRequest,
    GatewayError,
    PayloadTooLarge,
    ProxyRequired,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from ..identity.models import Principal
from ..observability.metrics import UpstreamStats
from ..routing import ROUTES, CatalogPath, Route
from ..settings import CatalogSettings
from .headers import HeaderPolicy, Headers
from .rewrite import rewrite_config, strip_storage_credentials, strip_table_credentials
from .scope import WarehouseScope
from .transport import (
    ResponseTooLarge,
    TransportResponse,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamReadTimeout,
    UpstreamTransport,
)
from .upstream_auth import UpstreamAuth

__all__ = ("Forwarder", "ForwardRequest")

# Bodies judged before they are forwarded (creates, renames, registers) are parsed on the event
# loop: a megabyte of JSON names a table with thousands of columns, while tens of megabytes of
# nested objects would hold a worker for seconds and take gigabytes. Streamed bodies are bound
# by server.max_body_bytes instead.
MAX_JUDGED_BODY: Final = 1024 * 1024

_LOGGER = logging.getLogger(__name__)
_CHUNK: Final = 64 * 1024
# Responses that are read whole for rewriting are capped; a catalog answer above this is
# refused rather than passed on uninspected.
MAX_REWRITE_BYTES: Final = 128 * 1024 * 1024
_Rewrite = Callable[[bytes], bytes | None]
_LENGTH: Final = ("Content-Length",)  # a body read whole is sent with its own length
_CONFIG: Final = ROUTES["config"]


@dataclass(slots=True)  # not frozen: a frozen dataclass is slower to build, once per request
class ForwardRequest:
    """A catalog request after routing: ``path`` is what the grammar read after ``/v1/``."""

    request: web.Request
    method: str  # the request's, or for a forward-auth decision the one the proxy reports
    path: CatalogPath
    query: str
    principal: Principal
    request_id: str
    # The client's body when the handler had to read it whole first (``Forwarder.read_body``):
    # forwarded as these bytes, with their length. None: the body (if any) streams.
    body: bytes | None = None
    # For a caller confined by grants (auth.authz): a filter of the answer (list answers keep
    # what the caller may see), whether the caller may only read what it asks for (then the
    # catalog's read-only upstream credential is used, if it has one), and whether the answer
    # must not hand it write access to storage (then, without a read-only credential, vended
    # storage credentials are removed and the delegation header is not forwarded).
    answer_filter: _Rewrite | None = None
    read_only: bool = False
    no_storage_writes: bool = False


class Forwarder:
    def __init__(
        self,
        client: UpstreamTransport,
        catalog: CatalogSettings,
        auth: UpstreamAuth,
        headers: HeaderPolicy,
        *,
        max_body_bytes: int,
        clients: ClientAddresses,
        stats: UpstreamStats | None = None,
        read_auth: UpstreamAuth | None = None,
        assertion: Callable[[Principal], str] | None = None,
    ) -> None:
        self._client = client
        self._scope = WarehouseScope(catalog)
        self._auth = auth
        self._read_auth = read_auth  # the catalog's upstream_auth_read, if it has one
        # The catalog's signed identity assertion of a principal (auth.assertions), if on.
        self._assertion = assertion
        self._headers = headers
        self._max_body = max_body_bytes
        self._clients = clients
        self._stats = stats if stats is not None else UpstreamStats()
        # Per client path: the upstream path and the filter its answers need. A pure function
        # of the path, cached (bounded) since clients repeat the same few paths; a path outside
        # the catalog's warehouse raises NotFound, which is not cached.
        self._route = functools.lru_cache(maxsize=4096)(self._route_for)
        # Requests using this forwarder, from their admission (bodies being read included) to
        # the end of their answer (streams included): a forwarder a reload replaced closes its
        # transport only once they are done (``retire``). ``with forwarder.in_flight:``.
        self.in_flight = _InFlight()

    @property
    def transport(self) -> UpstreamTransport:
        """The catalog's upstream client (``/readyz`` probes through it)."""
        return self._client

    async def retire(self) -> None:
        """Close the transport once the requests in flight are done (a reload replaced this
        forwarder: new requests go to its successor)."""
        await self.in_flight.none()
        await self.close()

    async def close(self) -> None:
        self._client.close()
        await self._client.wait_closed()

    def _route_for(self, path: CatalogPath) -> tuple[str, _Rewrite | None]:
        return self._scope.upstream_tail(path), _rewrite_for(path.route, self._scope.prefix)

    async def forward(self, fwd: ForwardRequest) -> web.StreamResponse:
        """Forward ``fwd`` (inside ``with self.in_flight:``, entered when it was admitted)."""
        request = fwd.request
        length = request.content_length
        if length is not None and length > self._max_body:
            raise PayloadTooLarge()
        tail, rewrite = self._route(fwd.path)
        query = self._scope.config_query(fwd.query) if fwd.path.route is _CONFIG else fwd.query
        target = f"/v1/{tail}?{query}" if query else f"/v1/{tail}"
        body: bytes | AsyncIterable[bytes] | None = fwd.body
        if body is None and request.body_exists:
            if length is not None and length <= _CHUNK:
                body = await _read_small(request)  # small (most commits): one write upstream
            else:
                body = _client_chunks(request.content, self._max_body)
        auth = self._auth
        # Without a read-only credential, the catalog is asked for no storage credentials and
        # whatever storage access its answer still carries is removed.
        holds_back = False
        if fwd.read_only and self._read_auth is not None:
            auth = self._read_auth  # the upstream vends read-only storage access itself
        elif fwd.no_storage_writes:
            holds_back = True
            rewrite = _chain(rewrite, strip_storage_credentials)
        if fwd.answer_filter is not None:
            rewrite = _chain(rewrite, fwd.answer_filter)
        if request.method == "HEAD":
            rewrite = None  # no body to filter
        retry_on_401 = auth.renewable and not request.body_exists
        while True:
            authorization = await auth.authorization()
            headers = self._headers.upstream_request(
                request.headers,
                fwd.principal,
                client_addr=request.remote or "",
                proto=request.scheme,
                host=request.host,
                request_id=fwd.request_id,
                authorization=authorization,
                trusted_forwarded_for=self._clients.is_trusted(request.remote or ""),
                # A body we must inspect has to arrive readable: a gzip answer (clients send
                # Accept-Encoding: gzip) would otherwise pass on with its tokens unfiltered.
                identity_encoding=rewrite is not None,
                drop_delegation=holds_back,
            )
            if self._assertion is not None:
                headers.append((ASSERTION_HEADER, self._assertion(fwd.principal)))
            start = time.perf_counter()
            try:
                upstream = await self._client.request(
                    request.method, target, headers, body, content_length=length
                )
            except GatewayError:
                raise  # the gateway's own refusal, from reading the client's body
            except Exception as exc:
                raise _map_error(exc, self._stats) from None
            self._stats.observe(time.perf_counter() - start)
            # The upstream's token may have been revoked or its signing key rotated: renewed
            # (at most once in a while, see upstream_auth). A bodiless request is replayed once
            # with the new one; one with a (streamed, so unreplayable) body gets the 401, and
            # the next request uses the new token.
            if upstream.status == 401 and auth.invalidate(authorization) and retry_on_401:
                upstream.release()
                retry_on_401 = False
                continue
            break
        try:
            return await self._respond(fwd, upstream, rewrite)
        finally:
            upstream.release()

    async def decision(self, fwd: ForwardRequest, target: str) -> tuple[Headers, float]:
        """Forward-auth: the headers a proxy must add to send ``fwd`` upstream itself, as
        ``target`` (the raw path and query it received), and for how many seconds they stay
        valid (inf unless they carry an identity assertion or an upstream token that
        expires): a proxy must not reuse them longer. Raises ``ProxyRequired`` unless the
        proxy's request would be this forwarder's: the same target upstream (no mounted
        catalog, nothing the warehouse fence adds) and an answer the gateway would pass on
        unread (no credentials to strip, no list to filter)."""
        tail, rewrite = self._route(fwd.path)  # NotFound outside the warehouse
        if fwd.method != "HEAD" and (
            rewrite is not None or fwd.answer_filter is not None or fwd.no_storage_writes
        ):
            raise ProxyRequired("the gateway filters this answer")
        query = f"?{fwd.query}" if fwd.query else ""
        if fwd.path.mount is not None or f"/v1/{tail}{query}" != target:
            raise ProxyRequired("the gateway sends it upstream under another path")
        auth = self._auth
        if fwd.read_only and self._read_auth is not None:
            auth = self._read_auth
        headers = self._headers.identity(fwd.principal)
        valid = math.inf
        if self._assertion is not None:
            headers.append((ASSERTION_HEADER, self._assertion(fwd.principal)))
            valid = LEAST_LEFT
        authorization = await auth.authorization()
        if authorization is not None:
            headers.append(("Authorization", authorization))
            valid = min(valid, auth.valid_for())
        return headers, valid

    async def read_body(self, request: web.Request) -> bytes:
        """The client's whole body, within ``MAX_JUDGED_BODY`` (413 past it, as soon as the
        length says so or the bytes pass it), for a handler that must judge it before it is
        forwarded (then pass it as ``body``). Only for small bodies (creates, renames):
        everything else streams."""
        limit = min(MAX_JUDGED_BODY, self._max_body)
        length = request.content_length
        if length is not None and length > limit:
            raise PayloadTooLarge()
        # Not request.read(): that is bound by client_max_size (server.max_form_bytes).
        return b"".join([chunk async for chunk in _client_chunks(request.content, limit)])

    async def _respond(
        self, fwd: ForwardRequest, upstream: TransportResponse, rewrite: _Rewrite | None
    ) -> web.StreamResponse:
        request = fwd.request
        # Set here, not by the request-id middleware: a streamed response is already sent
        # when the middleware sees it. The upstream's own id (if any) is not ours to pass on.
        extra = {"X-Request-Id": fwd.request_id}
        # Regardless of the declared Content-Type (clients parse these bodies as JSON anyway,
        # so a mislabelled answer must not skip the filter; rewrite() leaves non-JSON untouched)
        # and of the status: a 206 or an error body may carry a credential just as well.
        if rewrite is not None and upstream.status not in (204, 304):
            headers = HeaderPolicy.downstream_response(upstream.raw_headers, drop=_LENGTH)
            if headers.get("Content-Encoding", "identity").lower() != "identity":
                raise UpstreamError("The catalog's response could not be inspected")
            try:
                body = await upstream.read(MAX_REWRITE_BYTES)
            except ResponseTooLarge:
                raise UpstreamError("The catalog's response is too large to inspect") from None
            except (UpstreamProtocolError, UpstreamReadTimeout) as exc:
                raise _map_error(exc, self._stats) from None
            new_body = rewrite(body)
            headers.update(extra)
            if new_body is not None:
                headers.pop("ETag", None)  # the representation changed
            return web.Response(
                status=upstream.status, reason=upstream.reason, headers=headers,
                body=new_body if new_body is not None else body,
            )  # fmt: skip
        response = web.StreamResponse(
            status=upstream.status,
            reason=upstream.reason,
            headers=HeaderPolicy.downstream_response(upstream.raw_headers),
        )
        response.headers.update(extra)
        await response.prepare(request)
        try:
            async for chunk in upstream.iter_chunks():
                await response.write(chunk)
        except ConnectionResetError:
            # The client went away mid-stream; nothing left to do but let go of upstream.
            _LOGGER.info("client disconnected during response (request %s)", fwd.request_id)
            return response
        except (UpstreamProtocolError, UpstreamReadTimeout):
            # The status line is already sent, so no error response is possible: cut the
            # connection so the client sees a truncated answer, not a complete-looking one.
            _LOGGER.warning("upstream broke off its response (request %s)", fwd.request_id)
            self._stats.failed("broken")
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write_eof()
        return response


class _InFlight:
    """A count of the requests inside ``with`` blocks, and a wait for it to reach zero."""

    __slots__ = ("_count", "_idle")

    def __init__(self) -> None:
        self._count = 0
        self._idle: asyncio.Event | None = None

    def __enter__(self) -> None:
        self._count += 1

    def __exit__(self, *_: object) -> None:
        self._count -= 1
        if not self._count and self._idle is not None:
            self._idle.set()

    async def none(self) -> None:
        while self._count:
            self._idle = asyncio.Event()
            await self._idle.wait()


class _ClientErrors(contextlib.AbstractContextManager[None]):
    """Failures reading the client's body are the client's: a broken body is 400, a client
    that went away 499; neither is an upstream error (502)."""

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, ConnectionError):
            raise ClientClosedRequest() from None
        if isinstance(exc, RequestPayloadError):
            raise BadRequest("Malformed request body") from None


async def _read_small(request: web.Request) -> bytes:
    with _ClientErrors():
        return await request.read()


async def _client_chunks(content: aiohttp.StreamReader, limit: int) -> AsyncIterator[bytes]:
    """The client's body as it arrives (aiohttp frames it by the client's Content-Length or
    chunking), refused with 413 once past ``limit``."""
    seen = 0
    with _ClientErrors():
        async for chunk in content.iter_chunked(_CHUNK):
            seen += len(chunk)
            if seen > limit:
                raise PayloadTooLarge()
            yield chunk


def _rewrite_for(route: Route, prefix: str) -> _Rewrite | None:
    """How this route's answers must be filtered before a client sees them."""
    if route.answers == "config":
        return functools.partial(rewrite_config, prefix=prefix or None)
    if route.answers == "table":
        return strip_table_credentials
    return None


def _chain(first: _Rewrite | None, then: _Rewrite) -> _Rewrite:
    """``first`` (if any), then ``then`` on what it left; None only if neither changed it."""
    if first is None:
        return then

    def both(body: bytes) -> bytes | None:
        once = first(body)
        twice = then(body if once is None else once)
        return once if twice is None else twice

    return both


def _map_error(exc: BaseException, stats: UpstreamStats) -> GatewayError:
    if isinstance(exc, UpstreamConnectError):
        # The cause's type only (ConnectionRefusedError, SSLCertVerificationError, ...):
        # enough for an operator to tell a down upstream from a TLS trust problem.
        _LOGGER.warning("upstream unreachable: %s", exc)
        stats.failed("unavailable")
        return UpstreamUnavailable()
    if isinstance(exc, TimeoutError):  # UpstreamReadTimeout
        stats.failed("timeout")
        return UpstreamTimeout()
    _LOGGER.warning("upstream request failed: %s", type(exc).__name__)
    stats.failed("broken")
    return UpstreamError()
