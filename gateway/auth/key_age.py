"""The key-age policy (``[keys]``): how old a service user's key may get, and telling its
clients in time when their credential stops working.

A key's *deadline* is the earlier of its service user's expiry and, with
``keys.max_age_days``, the day the key passes the maximum age (counted from when it was made
or last rotated); for a replaced key still in its overlap, the overlap's end. From
``keys.notice_days`` before the deadline:

- every answer to a request made with that credential carries ``X-Pangolin-Key-Expires`` (the
  deadline, ISO 8601 UTC) and ``X-Pangolin-Key-Notice`` (what happens then, in words), so a
  pipeline's logs say it before a page does;
- the access log reminds once a day per key (logger ``pangolin.access``, WARNING);

and with ``max_age_action = "refuse"``, a key past the maximum age is refused like an expired
one, with every token it bought (reason ``key_too_old``). ``pangolin_keys_past_max_age`` and
``pangolin_keys_near_max_age`` count the service users concerned (read from the store every
minute, not per request).

The check on each answer is two float comparisons on the principal the request already
carries: no store access, no date arithmetic until a notice is due.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable
from typing import Final

from aiohttp import web

from ..identity.models import Principal
from ..observability.access_log import ACCESS_LOGGER
from ..settings import KeySettings
from ..state import AUTH
from ..store import Store, StoreError, uninterrupted

__all__ = ("EXPIRES_HEADER", "NOTICE_HEADER", "KeyAgePolicy")

EXPIRES_HEADER: Final = "X-Pangolin-Key-Expires"
NOTICE_HEADER: Final = "X-Pangolin-Key-Notice"
_DAY: Final = 86400.0
_LOGGER = logging.getLogger(__name__)
_REMINDERS = logging.getLogger(ACCESS_LOGGER)  # the reminders go with the requests

Clock = Callable[[], float]


def _iso(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KeyAgePolicy:
    def __init__(self, settings: KeySettings, clock: Clock) -> None:
        self.max_age = settings.max_age_days * _DAY or None
        self.refuses = settings.max_age_action == "refuse" and self.max_age is not None
        self._notice = settings.notice_days * _DAY
        self._clock = clock
        self._reminded: dict[str, int] = {}  # principal id -> the day it was last reminded
        # Active service users past and near the maximum age, as last counted (run).
        self.counts: tuple[int, int] | None = None

    async def run(self, store: Store, every: float = 60.0) -> None:
        """Count the service users past and near the maximum age every ``every`` seconds
        (for /metrics), until cancelled; nothing to count without a maximum."""
        if self.max_age is None:
            return
        while True:
            try:
                await uninterrupted(self.count(store))
            except StoreError:
                pass  # an outage is the authenticator's to say; counted again next time
            except Exception as exc:  # a gauge is no reason to stop the app at shutdown
                _LOGGER.warning("key ages not counted (%s)", type(exc).__name__)
            await asyncio.sleep(every)

    async def count(self, store: Store) -> None:
        assert self.max_age is not None
        past = self._clock() - self.max_age
        self.counts = await store.count_old_keys(past, past + self._notice)

    def too_old(self, principal: Principal) -> bool:
        """Whether ``principal``'s key is past the maximum age and the policy refuses it."""
        issued = principal.key_issued_at
        return (
            self.refuses
            and issued is not None
            and self.max_age is not None
            and self._clock() >= issued + self.max_age
        )

    def deadline(self, principal: Principal) -> tuple[float, str] | None:
        """When ``principal``'s credential stops working or should be rotated by, and what
        happens then; None if never."""
        found: tuple[float, str] | None = None
        if principal.expires_at is not None:
            found = (principal.expires_at, "the key stops working")
        issued = principal.key_issued_at
        if self.max_age is not None and issued is not None:
            aged = issued + self.max_age
            if found is None or aged < found[0]:
                days = round(self.max_age / _DAY)
                then = "is refused" if self.refuses else "should be rotated"
                found = (aged, f"the key passes the maximum age of {days} days and {then}")
        return found

    async def on_response_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """aiohttp's ``on_response_prepare``: the notice headers, on every answer (catalog,
        token, management) to a credential whose deadline is near."""
        outcome = request.get(AUTH)
        principal = outcome.principal if outcome is not None else None
        if principal is None or principal.key_issued_at is None:
            return
        if principal.expires_at is None and self.max_age is None:
            return  # the common case: nothing can be due
        due = self.deadline(principal)
        if due is None:
            return
        now = self._clock()
        at, what = due
        if now < at - self._notice:
            return
        response.headers[EXPIRES_HEADER] = _iso(at)
        notice = f"{'since' if now >= at else 'at'} {_iso(at)} {what}"
        response.headers[NOTICE_HEADER] = notice
        self._remind(principal, now, notice)

    def _remind(self, principal: Principal, now: float, notice: str) -> None:
        today = int(now // _DAY)
        if self._reminded.get(principal.id) == today:
            return
        if len(self._reminded) > 100_000:
            self._reminded.clear()
        self._reminded[principal.id] = today
        _REMINDERS.warning(
            "key notice: service user %s (%s): %s", principal.id, principal.name, notice
        )
