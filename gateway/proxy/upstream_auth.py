"""How the gateway authenticates itself to a catalog: ``none``, static ``bearer``, or OAuth2
``client_credentials`` against the catalog's own token endpoint.

The OAuth2 token is cached and renewed before it expires (a tenth of its lifetime early, at
most a minute), with a single fetch in flight however many requests are waiting. An upstream
401 renews it at most once per ``RENEW_AFTER_401_SECONDS`` (and only if the refused token is
still the current one), and a failed fetch backs off (1 s, doubling up to a minute) before the
next: an upstream that refuses everything must not turn client traffic into a flood against
its identity provider. Upstream secrets never appear in an error message or a log line.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Final, Protocol
from urllib.parse import urlencode

import aiohttp

from ..errors import GatewayError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from ..settings import CatalogSettings, UpstreamAuthSettings

__all__ = ("OAuth2ClientCredentials", "StaticBearer", "UpstreamAuth", "make_upstream_auth")

_LOGGER = logging.getLogger(__name__)
# Assumed when the upstream's token answer gives no usable lifetime.
_DEFAULT_LIFETIME = 3600.0


class UpstreamAuth(Protocol):
    # Whether a fresh credential can be fetched after an upstream 401 (worth one retry).
    renewable: bool

    async def authorization(self) -> str | None:
        """The ``Authorization`` value to send upstream, if any."""

    def valid_for(self) -> float:
        """Seconds the value ``authorization()`` last gave stays valid upstream (inf: no
        expiry): how long a proxy may reuse a forward-auth decision carrying it."""

    def invalidate(self, refused: str | None) -> bool:
        """The upstream answered 401 to ``refused`` (an ``authorization()`` value): True if a
        new credential will be fetched for the next request (worth a retry)."""


class NoUpstreamAuth:
    renewable = False

    async def authorization(self) -> str | None:
        return None

    def valid_for(self) -> float:
        return math.inf

    def invalidate(self, refused: str | None) -> bool:
        return False


class StaticBearer:
    renewable = False

    def __init__(self, token: str) -> None:
        self._value = f"Bearer {token}"

    async def authorization(self) -> str | None:
        return self._value

    def valid_for(self) -> float:
        return math.inf

    def invalidate(self, refused: str | None) -> bool:
        return False


# At most one renewal after an upstream 401 in this many seconds.
RENEW_AFTER_401_SECONDS: Final = 30.0
_BACKOFF_FIRST: Final = 1.0
_BACKOFF_MAX: Final = 60.0


class OAuth2ClientCredentials:
    renewable = True

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        token_url: str,
        client_id: str,
        client_secret: str,
        scope: str,
        timeout: aiohttp.ClientTimeout | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._token_url = token_url
        self._form = {"grant_type": "client_credentials", "client_id": client_id,
                      "client_secret": client_secret}  # fmt: skip
        if scope:
            self._form["scope"] = scope
        self._timeout = timeout or aiohttp.ClientTimeout(total=30)
        self._clock = clock
        self._value: str | None = None
        self._renew_at = 0.0
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        # The token fetched because the upstream refused its predecessor, and when: if the
        # upstream refuses that one too, soon after, renewing again would not help.
        self._renewing = False
        self._renewal: str | None = None
        self._renewed_at = -math.inf
        self._failed: GatewayError | None = None  # the last fetch's failure, while backing off
        self._retry_at = 0.0
        self._backoff = _BACKOFF_FIRST

    async def authorization(self) -> str | None:
        if self._value is not None and self._clock() < self._renew_at:
            return self._value
        async with self._lock:  # one fetch in flight; the others reuse its result
            if self._value is None or self._clock() >= self._renew_at:
                await self._fetch_with_backoff()
        return self._value

    def valid_for(self) -> float:
        return max(0.0, self._expires_at - self._clock())

    def invalidate(self, refused: str | None) -> bool:
        now = self._clock()
        if refused is None or refused != self._value:
            return False  # already renewed since that request was sent
        if refused == self._renewal and now - self._renewed_at < RENEW_AFTER_401_SECONDS:
            return False  # a token fetched for a 401 a moment ago: the upstream refuses all
        self._renewing, self._renewed_at = True, now
        self._value = None
        return True

    async def _fetch_with_backoff(self) -> None:
        if self._failed is not None and self._clock() < self._retry_at:
            raise type(self._failed)(self._failed.detail)
        try:
            await self._fetch()
        except GatewayError as exc:
            self._failed = exc
            self._retry_at = self._clock() + self._backoff
            self._backoff = min(self._backoff * 2, _BACKOFF_MAX)
            raise
        self._failed, self._backoff = None, _BACKOFF_FIRST

    async def _fetch(self) -> None:
        try:
            async with self._session.post(
                self._token_url,
                data=urlencode(self._form),
                # Explicit: the shared session skips automatic headers to forward faithfully.
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                allow_redirects=False,
                timeout=self._timeout,
            ) as resp:
                if resp.status != 200:
                    _LOGGER.error(
                        "upstream token endpoint %s answered %s", self._token_url, resp.status
                    )
                    raise UpstreamError("The gateway could not authenticate to the catalog")
                body = await resp.json(content_type=None)
        except aiohttp.ConnectionTimeoutError:
            raise UpstreamUnavailable() from None
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise UpstreamTimeout() from None
        except aiohttp.ClientConnectorError:
            raise UpstreamUnavailable() from None
        except (aiohttp.ClientError, ValueError):
            raise UpstreamError("The gateway could not authenticate to the catalog") from None
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise UpstreamError("The gateway could not authenticate to the catalog")
        lifetime = _lifetime(body.get("expires_in"))
        self._value = f"Bearer {token}"
        if self._renewing:
            self._renewing, self._renewal = False, self._value
        now = self._clock()
        self._expires_at = now + lifetime
        self._renew_at = now + lifetime - min(60.0, lifetime / 10)


def _lifetime(expires_in: object) -> float:
    """The token lifetime in seconds an upstream answered, or the default if it is unusable.

    Why not just ``float(expires_in)`` for numbers: some servers send the number as a string
    (``"expires_in": "300"``), which was read as "unknown" and the token kept for an hour past
    its expiry; ``true`` counted as one second (a fetch per request); ``NaN`` and ``Infinity``
    (which Python's JSON parser accepts) made the renewal comparison never true, so the token
    was used for ever; a negative value meant a fetch per request; and an integer too large
    for a float raised OverflowError, a 500 on every request.
    """
    if isinstance(expires_in, bool):
        return _DEFAULT_LIFETIME
    if isinstance(expires_in, str):
        try:
            value = float(expires_in.strip())
        except ValueError:
            return _DEFAULT_LIFETIME
    elif isinstance(expires_in, int | float):
        try:
            value = float(expires_in)
        except OverflowError:
            return _DEFAULT_LIFETIME
    else:
        return _DEFAULT_LIFETIME
    return value if math.isfinite(value) and value > 0 else _DEFAULT_LIFETIME


def make_upstream_auth(
    catalog: CatalogSettings,
    session: aiohttp.ClientSession,
    auth: UpstreamAuthSettings,
) -> UpstreamAuth:
    """The credential ``auth`` describes: the catalog's ``upstream_auth`` or its
    ``upstream_auth_read`` (its URL and timeouts are the catalog's)."""
    if auth.type == "bearer":
        return StaticBearer(auth.token)
    if auth.type == "oauth2":
        return OAuth2ClientCredentials(
            session,
            token_url=auth.token_url or catalog.upstream.rstrip("/") + "/v1/oauth/tokens",
            client_id=auth.client_id,
            client_secret=auth.client_secret,
            scope=auth.scope,
            # The same bounds as the catalog's own requests: a token fetch is one of them.
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=catalog.connect_timeout_seconds,
                sock_read=catalog.timeout_seconds,
            ),
        )
    return NoUpstreamAuth()
