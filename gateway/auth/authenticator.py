"""Authentication: a request's credential becomes a ``Principal`` or a failure reason.

Hot-path rules: no password hashing and no store write per request. Service users are cached
by key id and by id, verified token signatures are cached until the token expires, and
``last_used_at`` and the requests per day of each service user are counted in memory and
written in batches (one transaction per flush; counts are added to the stored ones, so
several processes add up).

Human sessions (``pgs_`` bearer tokens from ``/api/v1/login``) are the exception on purpose:
each one is read from the store on every request (``identity.sessions``), never cached, so
that ending one takes effect at once in every process. They serve the management API, which is
not the hot path. A flood of made-up session tokens costs one indexed read each, as a flood of
made-up key ids already does.

Freshness: a change committed through this process's store clears the caches before the
change's call returns (so the very next request sees it). Changes made by other processes
are noticed by polling the store's identity version every ``change_poll_seconds`` (and, on
PostgreSQL, at once through its notifications).

When the store cannot be reached, cached identities keep working until the last successful
poll is ``store.outage_grace_seconds`` old; after that every authenticated request is 503, so
a revocation made during an outage is never ignored for longer than the grace. Unknown
credentials (a cache miss) are 503 at once. The next successful poll ends it.

(Over 300 lines: the caches and the in-memory use counters are one object on purpose, so a
request's accept step touches its own attributes rather than calling into a second object per
concern; credential parsing lives in ``credentials``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import functools
import hashlib
import hmac
import logging
import math
import os
import time
import typing
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from aiohttp import hdrs
from multidict import CIMultiDictProxy, istr

from ..identity.grants import NO_GRANTS, GrantIndex
from ..identity.models import (
    KEY_ID_CHARS,
    KEY_PREFIX,
    ApiKey,
    Principal,
    Role,
    ServiceUser,
    Session,
    parse_key,
    verify_key,
)
from ..identity.sessions import SessionAdmin
from ..store import Store, StoreUnavailable
from .credentials import AMBIGUOUS, Credential, parse_credentials
from .tokens import MAX_TOKEN_BYTES, TokenClaims, TokenService

__all__ = (
    "ANONYMOUS",
    "HELD",
    "USAGE_DAYS_KEPT",
    "AuthOutcome",
    "Authenticator",
    "day_number",
    "utc_day",
)

_LOGGER = logging.getLogger(__name__)
_MAX_CACHE: Final = 200_000
# Verified token signatures kept, each under a keyed digest of the token (``_seen``) rather
# than its text: about 300 bytes an entry (the claims' strings are interned by
# ``TokenService.verify``) where the text alone took 580. The soak, which mints some 14
# tokens a second, each then used, grew every worker by 19 MB with the text. Past the cap,
# expired ones go, then all (a miss costs one ES256 verification, not a store read).
_MAX_TOKENS: Final = 20_000
_BEARER: Final = "Bearer "
# Header names as ``istr``: a lookup with a plain str folds its case first, on every request.
_AUTHORIZATION: Final = hdrs.AUTHORIZATION
_API_KEY: Final = istr("X-API-Key")
_DAY: Final = 86400.0  # Unix time has no leap seconds: day N of the epoch is a UTC day
USAGE_DAYS_KEPT: Final = 90  # request counts older than this many days are pruned
_PRUNE_EVERY: Final = 3600.0
_EPOCH: Final = datetime.date(1970, 1, 1)

Clock = Callable[[], float]
_T = TypeVar("_T")
# The outage grace is real elapsed time, whatever the wall clock (``Clock``) says.
_monotonic = time.monotonic


@dataclass(frozen=True, slots=True)
class AuthOutcome:
    principal: Principal | None
    # Why authentication failed (for metrics and the audit log, never for the client).
    reason: str | None = None
    # The session a human's session token named (what logout ends).
    session: Session | None = None
    # The key id (the public part) of a refused API key, so the audit log can tell its service
    # user's administrators about failures with it; never any part of the secret.
    key_id: str | None = None


ANONYMOUS: Final = AuthOutcome(None, "missing")
# A cached service user, its principal, and the outcome that accepts it.
_Made = tuple[ServiceUser, Principal, AuthOutcome]
# A credential accepted through the full path, as its next request is accepted: the service
# user's id, when it stops being accepted this way (the user's expiry; a token's own, if
# sooner) and the outcome. Made only while the caches hold that very user and principal, and
# dropped with them by every invalidation, so it says nothing the caches no longer say.
_Hot = tuple[str, float, AuthOutcome]
# A hot key's record: the keyed digest of the key, then the _Hot fields, in one tuple (every
# cached key's tuples are walked by each full garbage collection: one, not two).
_HotKey = tuple[bytes, str, float, AuthOutcome]
# Where the key id sits in a well-formed key: pgl_<key id>_<secret>.
_KEY_ID_AT: Final = slice(len(KEY_PREFIX), len(KEY_PREFIX) + KEY_ID_CHARS)
# Not looked up: the client's address is held by the failed-authentication backoff.
HELD: Final = AuthOutcome(None, "held")


def day_number(at: float) -> int:
    """The UTC day of epoch time ``at``, counted from the Unix epoch."""
    return int(at // _DAY)


def utc_day(number: int) -> str:
    """``YYYY-MM-DD`` of UTC day ``number`` since the Unix epoch."""
    return (_EPOCH + datetime.timedelta(days=number)).isoformat()


class Authenticator:
    def __init__(
        self, store: Store, tokens: TokenService, clock: Clock, sessions: SessionAdmin
    ) -> None:
        self._store = store
        self._tokens = tokens
        self._clock = clock
        self._sessions = sessions
        self._by_key_id: dict[str, ServiceUser | None] = {}
        self._by_id: dict[str, ServiceUser | None] = {}
        self._token_claims: dict[bytes, TokenClaims] = {}
        # Bumped by every invalidation. A store read that started before an invalidation must
        # not fill the cache afterwards with what may be the pre-change row.
        self._epoch = 0
        self._identity_version: int | None = None
        self._last_used: dict[str, float] = {}
        # Requests per service user, per UTC day number: {day: {user id: count}}. ``_today``
        # is the current day's inner dict and ``_day_ends`` when it stops being current, so a
        # request pays one float compare and one dict increment (no date arithmetic, no key
        # tuple); the day is worked out again only when it changes, or after a flush.
        self._requests: dict[int, dict[str, int]] = {}
        self._today: dict[str, int] = {}
        self._day_ends = -1.0
        self._next_prune = 0.0
        # Keys verified against the store's SHA-256 digest, remembered per key id (with the user
        # object they were verified for) as BLAKE2b keyed with a secret of this process only,
        # so a repeat request skips SHA-256: through OpenSSL 3 it measured far dearer under
        # load (10-35 % of a keyed request's CPU in the benchmark) than its 0.6 µs in isolation,
        # while hashlib's BLAKE2b is CPython's own small C code. The token cache is keyed the
        # same way, for the same reason (a 600-byte token's SHA-256 was about 5 % of a bearer
        # request's CPU under load). The values are useless outside this process; a key's die
        # with the cache (any identity change clears it), a token's when the token expires.
        # Keyed once: each digest copies the keyed state instead of keying BLAKE2b anew
        # (half the cost per request).
        self._seen_hash = hashlib.blake2b(key=os.urandom(32), digest_size=32)
        self._verified: dict[str, tuple[ServiceUser, bytes]] = {}
        # The hot path's own records (see _Hot): a repeat credential is accepted on one
        # lookup, one digest compare and the clock, rather than re-deriving from four caches
        # what the first request already established. Keys by key id, with the keyed digest
        # of the key; tokens by the keyed digest of the token.
        self._hot_keys: dict[str, _HotKey] = {}
        self._hot_tokens: dict[bytes, _Hot] = {}
        # Store reads in flight (see _cached).
        self._loading: dict[tuple[int, str, int], asyncio.Future[Any]] = {}
        # Past this (monotonic) time, the last successful poll of the store is older than the
        # outage grace: cached identities are no longer trusted (run_background sets it).
        self._trusted_until = math.inf
        self.store_reachable = True
        # The Principal of each cached service user, made once rather than per request; valid
        # only for that very user object (a reloaded or changed user is a new object).
        # With the outcome that accepts it, shared by its requests (AuthOutcome is frozen).
        self._principals: dict[str, _Made] = {}
        # The grant index of each cached TenantUser service user (its own grants and its
        # roles'), read from the store with the identity and dropped with it.
        self._grants: dict[str, GrantIndex | None] = {}

    # -- authentication ----------------------------------------------------------------------

    async def authenticate(
        self, headers: CIMultiDictProxy[str], *, may_read: bool = True
    ) -> AuthOutcome:
        """``may_read`` False (the client's address is held by the backoff): a credential
        that would need a store read (an API key not in the cache, a session) is not looked
        up but refused as "held"; cached keys and valid tokens work as ever."""
        if _AUTHORIZATION not in headers:
            if _API_KEY not in headers:
                return ANONYMOUS  # the common check first: most anonymous requests stop here
            repeated = self._repeated_key(headers)
        elif _API_KEY not in headers:
            repeated = self._repeated_token(headers)
        else:
            repeated = None
        if repeated is not None:
            return repeated  # accepted (and counted) or refused without a store read
        credentials = parse_credentials(headers)
        if not credentials:
            return ANONYMOUS
        outcome = await self._authenticate_one(credentials[0], may_read)
        if len(credentials) > 1 and outcome.principal is not None:
            # An X-API-Key with a bearer credential: accepted only when both authenticate, and
            # as the same principal (the upstream and the audit log must not disagree on who).
            other = await self._authenticate_one(credentials[1], may_read)
            if other.principal is None:
                return other
            if other.principal.id != outcome.principal.id:
                return AuthOutcome(None, AMBIGUOUS.kind)
        if outcome.principal is not None and outcome.principal.type == "service_user":
            self.count_request(outcome.principal.id)
        return outcome

    def _repeated_key(self, headers: CIMultiDictProxy[str]) -> AuthOutcome | None:
        """The hot path: one X-API-Key, the very key this process accepted last for its key
        id (``_hot_keys``): accepted without parsing it or building a credential, on the
        same constant-time compare of its keyed BLAKE2b as the full path
        (``authenticate_key``). None: take the full path (anything else, refusals included)."""
        values = headers.getall(_API_KEY)
        if len(values) != 1:
            return None
        value = values[0]
        # The key id sits at a fixed place in a well-formed key; a slice of anything else
        # finds nothing, or finds an entry whose digest it cannot match (the digest covers the
        # whole text, so equal digests mean the text is the key that was accepted).
        hot = self._hot_keys.get(value[_KEY_ID_AT])
        if hot is None or not value.isascii() or not hmac.compare_digest(hot[0], self._seen(value)):
            return None
        return self._accept_hot(hot[1], hot[2], hot[3])

    def _repeated_token(self, headers: CIMultiDictProxy[str]) -> AuthOutcome | None:
        """The hot path for bearers: one ``Authorization: Bearer`` with a token this process
        accepted (``_hot_tokens``), accepted without parsing the header into a credential.
        None: take the full path (``authenticate_token``), refusals and overlaps included."""
        values = headers.getall(_AUTHORIZATION)
        if len(values) != 1 or not values[0].startswith(_BEARER):
            return None
        # Keys and session tokens are never hot tokens; any other text around the token
        # gives another digest, so it misses and the full path judges it.
        hot = self._hot_tokens.get(self._seen(values[0][len(_BEARER) :]))
        return None if hot is None else self._accept_hot(*hot)

    def _accept_hot(self, user_id: str, until: float, outcome: AuthOutcome) -> AuthOutcome | None:
        """Accept (and count) a request with a hot credential (its record's fields, see
        _Hot); None once it is past its ``until`` (the full path then says why)."""
        self._check_trusted()
        now = self._clock()
        if now >= until:
            return None
        self._last_used[user_id] = now
        self._count(user_id, now)
        return outcome

    def count_request(self, user_id: str) -> None:
        """One request by a service user, counted once it is accepted (not per credential:
        a key and a token, or a token exchange's two, are one request)."""
        self._count(user_id, self._clock())

    def _count(self, user_id: str, now: float) -> None:
        if now >= self._day_ends:
            self._new_day(now)
        today = self._today
        today[user_id] = today.get(user_id, 0) + 1

    async def _authenticate_one(self, credential: Credential, may_read: bool) -> AuthOutcome:
        if credential.kind == "api_key":
            key = parse_key(credential.value)
            if key is None:
                return AuthOutcome(None, "malformed")
            return await self.authenticate_key(key, may_read=may_read)
        if credential.kind == "token":
            return await self.authenticate_token(credential.value)
        if credential.kind == "session":
            if not may_read:
                return HELD
            return await self.authenticate_session(credential.value)
        return AuthOutcome(None, credential.kind)  # malformed, ambiguous

    async def authenticate_session(self, token: str) -> AuthOutcome:
        """A human administrator's session token, checked against its store row now."""
        resolved = await self._sessions.check(token)
        if isinstance(resolved, str):
            return AuthOutcome(None, resolved)
        session, human = resolved
        return AuthOutcome(human.principal(), session=session)

    async def authenticate_key(self, key: ApiKey, *, may_read: bool = True) -> AuthOutcome:
        if not may_read and key.key_id not in self._by_key_id:
            return HELD
        user = await self._cached(self._by_key_id, key.key_id, self._store.service_user_by_key_id)
        digest = self._seen(key.plaintext())
        if user is not None:
            # The key this cached user last presented, as a keyed BLAKE2b (see __init__):
            # the same key again is accepted on a constant-time compare of that.
            seen = self._verified.get(key.key_id)
            if seen is not None and seen[0] is user and hmac.compare_digest(seen[1], digest):
                return await self._accept_key(user, key.key_id, digest)
        # Always compare, even when the key id is unknown, so both paths cost the same.
        if not verify_key(key, user.digest_for(key.key_id) if user is not None else None):
            if user is None:
                return AuthOutcome(None, "unknown_key")  # names nobody to tell: no key id
            return AuthOutcome(None, "wrong_secret", key_id=key.key_id)
        assert user is not None
        if len(self._verified) >= _MAX_CACHE:
            self._verified.clear()
        self._verified[key.key_id] = (user, digest)
        return await self._accept_key(user, key.key_id, digest)

    async def _accept_key(self, user: ServiceUser, key_id: str, digest: bytes) -> AuthOutcome:
        """Accept a verified key (``digest``: its keyed BLAKE2b) of ``user``; the current
        key becomes hot (an overlap's previous key never does: it dies on the clock)."""
        if key_id != user.key_id:
            return await self._accept_previous(user, key_id)
        outcome = await self._accept(user, key_id)
        hot = self._hot(user, outcome, math.inf)
        if hot is not None and self._by_key_id.get(key_id) is user:
            if len(self._hot_keys) >= _MAX_CACHE:
                self._hot_keys.clear()
            self._hot_keys[key_id] = (digest, *hot)
        return outcome

    async def _accept_previous(self, user: ServiceUser, key_id: str) -> AuthOutcome:
        # The key a rotation replaced: only until its overlap ends (on the clock, per
        # request: it dies on time with no store change), and as its own generation, so the
        # tokens it buys die with it.
        if not user.overlap_open(self._clock()):
            return AuthOutcome(None, "rotated", key_id=key_id)
        return await self._accept(user, key_id, previous=True)

    def _seen(self, text: str) -> bytes:
        """A key or token as this process remembers it (see __init__). Any text a client
        sends has one: a lone surrogate (JSON can escape one) is encoded as is."""
        digest = self._seen_hash.copy()
        digest.update(text.encode("utf-8", "surrogatepass"))
        return digest.digest()

    async def authenticate_token(self, token: str) -> AuthOutcome:
        if len(token) > MAX_TOKEN_BYTES:
            return AuthOutcome(None, "bad_token")
        digest = self._seen(token)  # once, for both the claims cache and the hot record
        claims = self._claims(token, digest, allow_expired=False)
        if claims is None:
            return AuthOutcome(None, "bad_token")
        outcome = await self.principal_for_claims(claims)
        user = self._by_id.get(claims.subject)
        if (
            user is not None
            and claims.key_generation == user.key_generation  # an overlap's: never hot
            and claims.tenant_id == user.tenant_id
            and (hot := self._hot(user, outcome, claims.expires_at)) is not None
        ):
            if len(self._hot_tokens) >= _MAX_TOKENS:
                self._hot_tokens.clear()  # a miss costs a digest and two lookups, no more
            self._hot_tokens[digest] = hot
        return outcome

    def verify_token(self, token: str, *, allow_expired: bool = False) -> TokenClaims | None:
        """Signature and claims, cached per token until it expires. The cache is keyed by
        the token's BLAKE2b keyed with this process's secret (``_seen``, not SHA-256: see
        __init__): a hit needs a text with the digest of a token this process verified,
        which is that very token, or a second preimage under a key nobody else holds."""
        if len(token) > MAX_TOKEN_BYTES:
            return None
        return self._claims(token, self._seen(token), allow_expired=allow_expired)

    def _claims(self, token: str, digest: bytes, *, allow_expired: bool) -> TokenClaims | None:
        """``verify_token`` of a token of at most MAX_TOKEN_BYTES, given its ``_seen``."""
        now = self._clock()
        claims = self._token_claims.get(digest)
        if claims is not None and (allow_expired or claims.expires_at > now):
            return claims
        claims = self._tokens.verify(token, allow_expired=allow_expired)
        if claims is not None and claims.expires_at > now:
            if len(self._token_claims) >= _MAX_TOKENS:
                self._prune_tokens(now)
            self._token_claims[digest] = claims
        return claims

    async def principal_for_claims(self, claims: TokenClaims) -> AuthOutcome:
        # Gateway tokens are issued to service users only; humans hold sessions instead.
        if claims.principal_type != "service_user":
            return AuthOutcome(None, "bad_token")
        user = await self._cached(self._by_id, claims.subject, self._store.service_user)
        if user is not None and claims.key_generation > user.key_generation:
            # A token we signed for a newer key than the one cached: another process rotated
            # it and this one has not polled yet. Our own signature proves the rotation, so
            # the caches are stale now: read again rather than refuse a fresh token.
            self.invalidate()
            user = await self._cached(self._by_id, claims.subject, self._store.service_user)
        if user is None:
            return AuthOutcome(None, "deleted")
        # Rotation bumps the key generation: tokens minted from an older key are dead, but
        # for those of the key an overlap keeps alive, until it ends.
        if user.tenant_id != claims.tenant_id:
            return AuthOutcome(None, "rotated")
        if user.key_generation != claims.key_generation:
            if claims.key_generation != user.key_generation - 1 or not user.overlap_open(
                self._clock()
            ):
                return AuthOutcome(None, "rotated")
            return await self._accept(user, previous=True)
        return await self._accept(user)

    async def _accept(
        self, user: ServiceUser, key_id: str | None = None, *, previous: bool = False
    ) -> AuthOutcome:
        """``key_id``: the key it authenticated with, named in a refusal (for the audit);
        ``previous``: with the key an overlap keeps alive (or a token of its generation)."""
        accepted = self._accept_now(user, key_id, previous=previous)
        if accepted is None:
            made = await self._make_principal(user)
            accepted = self._accept_now(user, key_id, previous=previous, made=made)
        assert accepted is not None  # given ``made``, it always decides
        return accepted

    def _hot(self, user: ServiceUser, outcome: AuthOutcome, until: float) -> _Hot | None:
        """The hot record of a credential ``outcome`` just accepted as ``user``'s current
        principal (a token: expiring at ``until``); None unless the caches still hold that
        very user and the outcome is its cached principal's (not a refusal, not an overlap's,
        not one made while an invalidation came in)."""
        made = self._principals.get(user.id)
        if made is None or made[0] is not user or made[2] is not outcome:
            return None
        if user.expires_at is not None:
            until = min(until, user.expires_at)
        return (user.id, until, outcome)

    def _check_trusted(self) -> None:
        if _monotonic() > self._trusted_until:
            # What is cached may have been revoked meanwhile (every way in passes here: keys,
            # tokens, the token endpoint's own checks).
            raise StoreUnavailable()

    def _accept_now(
        self, user: ServiceUser, key_id: str | None, *, previous: bool = False,
        made: _Made | None = None,
    ) -> AuthOutcome | None:  # fmt: skip
        """``_accept`` without a store read: None when the principal is still to be made
        (and ``made`` not given)."""
        self._check_trusted()
        now = self._clock()  # one reading for every check of this request
        if not user.usable_at(now):
            return AuthOutcome(None, "inactive" if not user.active else "expired", key_id=key_id)
        if made is None:
            made = self._principals.get(user.id)
            if made is None or made[0] is not user:
                return None
        self._last_used[user.id] = now
        if previous:
            # Tokens it buys carry the old generation, and die when the overlap ends (which
            # is when it stops working, as far as its callers are told).
            ends = user.previous_key_until
            if user.expires_at is not None and ends is not None:
                ends = min(ends, user.expires_at)
            old = dataclasses.replace(
                made[1], key_generation=user.key_generation - 1, expires_at=ends
            )
            return AuthOutcome(old)
        return made[2]

    async def _make_principal(self, user: ServiceUser) -> _Made:
        """The principal of ``user`` with its grants (TenantUsers only: the other roles have
        full access in their scope), cached unless an invalidation came in meanwhile."""
        epoch = self._epoch
        grants = NO_GRANTS
        if user.role is Role.TENANT_USER:
            found = await self._cached(self._grants, user.id, self._load_grants)
            grants = NO_GRANTS if found is None else found
        principal = user.principal(grants)
        made = (user, principal, AuthOutcome(principal))
        if epoch == self._epoch:
            if len(self._principals) >= _MAX_CACHE:
                self._principals.clear()
            self._principals[user.id] = made
        return made

    async def _load_grants(self, user_id: str) -> GrantIndex:
        grants = await self._store.grants_of_service_user(user_id)
        # Most service users hold no grant: they share the one empty index rather than each
        # keeping one (one object fewer per cached user for every full garbage collection to
        # walk). Its verdict memo is shared too, which is sound: only confined TenantUsers
        # reach it (catalog.confine), and their verdict depends only on the index, the catalog
        # and the request, and empty indexes are equal.
        return GrantIndex(grants) if grants else NO_GRANTS

    async def _cached(
        self,
        cache: dict[str, _T | None],
        key: str,
        load: Callable[[str], Coroutine[Any, Any, _T | None]],
    ) -> _T | None:
        try:
            return cache[key]
        except KeyError:
            pass
        # One store read per key at a time: the burst of concurrent requests that follows an
        # invalidation shares it instead of queueing one read each on the store's thread. The
        # epoch is part of the slot: a request that arrives after an invalidation never joins a
        # read started before it, which may return the row as it was before the change.
        epoch = self._epoch
        slot = (id(cache), key, epoch)
        task = self._loading.get(slot)
        if task is None:
            task = asyncio.ensure_future(load(key))
            self._loading[slot] = task
            task.add_done_callback(functools.partial(self._loaded, slot))
        user = typing.cast("_T | None", await asyncio.shield(task))
        if epoch == self._epoch:
            if len(cache) >= _MAX_CACHE:
                cache.clear()  # bounded: unknown key ids from a scanner must not grow memory
            cache[key] = user
        return user

    def _loaded(self, slot: tuple[int, str, int], task: asyncio.Future[Any]) -> None:
        if self._loading.get(slot) is task:
            del self._loading[slot]
        if not task.cancelled():
            task.exception()  # retrieved here too, in case every waiter was cancelled

    def _prune_tokens(self, now: float) -> None:
        self._token_claims = {t: c for t, c in self._token_claims.items() if c.expires_at > now}
        if len(self._token_claims) >= _MAX_TOKENS:
            self._token_claims.clear()

    # -- freshness ---------------------------------------------------------------------------

    def invalidate(self) -> None:
        """Forget cached identities (token signatures stay cached: they do not change)."""
        self._epoch += 1
        self._principals.clear()
        self._verified.clear()
        self._hot_keys.clear()
        self._hot_tokens.clear()
        self._by_key_id.clear()
        self._by_id.clear()
        self._grants.clear()

    async def check_for_changes(self) -> bool:
        """Drop caches if another process changed identities; True if it did."""
        version = await self._store.identity_version()
        changed = self._identity_version is not None and version != self._identity_version
        if changed:
            self.invalidate()
        self._identity_version = version
        return changed

    # -- last_used ---------------------------------------------------------------------------

    @property
    def pending_last_used(self) -> int:
        return len(self._last_used)

    def pending_last_used_of(self, user_id: str) -> float | None:
        """A last use recorded in memory and not yet written (so answers are not stale)."""
        return self._last_used.get(user_id)

    def pending_requests_of(self, user_id: str) -> dict[str, int]:
        """Requests counted in memory and not yet written, by UTC day ``YYYY-MM-DD``."""
        return {
            utc_day(day): counts[user_id]
            for day, counts in self._requests.items()
            if counts.get(user_id)
        }

    def _new_day(self, now: float) -> None:
        """Make the UTC day of ``now`` the one requests are counted in."""
        day = day_number(now)
        self._today = self._requests.setdefault(day, {})
        self._day_ends = (day + 1) * _DAY

    async def flush_last_used(self) -> None:
        """Write last-use times and request counts in one store transaction."""
        batch, self._last_used = self._last_used, {}
        counted, self._requests = self._requests, {}
        self._today, self._day_ends = {}, -1.0  # the next request finds its day again
        requests = {
            (id_, utc_day(day)): n for day, counts in counted.items() for id_, n in counts.items()
        }
        if not batch and not requests:
            return
        now = self._clock()
        prune = None
        if now >= self._next_prune:
            # At most once an hour per process: a cheap indexed DELETE of what nobody shows.
            prune = utc_day(day_number(now) - USAGE_DAYS_KEPT)
        try:
            await self._store.record_last_used(batch, requests=requests, prune_before=prune)
        except Exception:
            # Keep the times and counts for the next flush rather than lose them.
            for id_, at in batch.items():
                self._last_used[id_] = max(at, self._last_used.get(id_, 0.0))
            for day, counts in counted.items():
                merged = self._requests.setdefault(day, {})
                for id_, n in counts.items():
                    merged[id_] = merged.get(id_, 0) + n
            self._day_ends = -1.0  # _today must be the merged dict again
            raise
        if prune is not None:
            self._next_prune = now + _PRUNE_EVERY

    async def run_background(
        self, poll_seconds: float, flush_seconds: float, outage_grace: float = math.inf
    ) -> None:
        """Poll for changes and flush last_used until cancelled; while polls fail, trust the
        cache for ``outage_grace`` seconds after the last one that worked. The flushes run
        apart from the polls: a write waiting for the store's write lock must never delay the
        poll that keeps the cache trusted."""
        flushing = asyncio.create_task(self._flush_every(flush_seconds), name="pangolin-flush")
        try:
            while True:
                try:
                    await self._sync(outage_grace)
                except StoreUnavailable:
                    if self.store_reachable:  # once per outage, not every poll
                        _LOGGER.warning(
                            "the store cannot be reached; cached identities are trusted for "
                            "%.0f s more, then requests get 503", outage_grace,
                        )  # fmt: skip
                    self.store_reachable = False
                except Exception:
                    _LOGGER.exception("identity refresh failed; will retry")
                await asyncio.sleep(poll_seconds)
        finally:
            flushing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flushing

    async def _flush_every(self, flush_seconds: float) -> None:
        while True:
            await asyncio.sleep(flush_seconds)
            try:
                await self.flush_last_used()
            except StoreUnavailable:
                pass  # kept for the next flush; the outage is logged by the poll
            except Exception:
                _LOGGER.exception("writing last_used failed; will retry")

    async def _sync(self, outage_grace: float) -> None:
        await self.check_for_changes()
        self._trusted_until = _monotonic() + outage_grace
        if not self.store_reachable:
            _LOGGER.warning("the store answers again")
            self.store_reachable = True
