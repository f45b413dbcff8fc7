"""The audit trail for events that are not themselves store changes.

Lifecycle changes (create, rotate, delete ...) write their audit record inside their own
transaction (see ``store``), and so do logins and logouts, with their session. Authentication
outcomes on the request path (failed catalog requests, token requests, failed logins) must
never block or slow that path, so they go through
this bounded in-memory queue and are written in batches. If the queue is full the record is
dropped and counted: losing an audit line under a flood is better than letting a flood of bad
credentials exhaust memory or stall requests.

Each batch has an id, stored with it in the same transaction. A write that fails may still have
committed (PostgreSQL's connection can drop after the COMMIT went out, before its answer came
back), so a failed batch is kept whole under its id and retried first: the store writes it at
most once, and records queued meanwhile go in a batch of their own.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from typing import Final

from ..store import AuditRecord, Store, StoreUnavailable, uninterrupted

__all__ = ("MAX_USER_AGENT", "AuditQueue")

_LOGGER = logging.getLogger(__name__)
MAX_USER_AGENT: Final = 200


class AuditQueue:
    def __init__(self, store: Store, *, max_pending: int = 10_000) -> None:
        self._store = store
        self._pending: deque[AuditRecord] = deque()
        # The batch whose write failed, under its id: it may have been stored all the same.
        self._unsure: tuple[str, list[AuditRecord]] | None = None
        self._max_pending = max_pending
        self.dropped = 0
        # One write at a time: a flush that finds another under way waits for it, so when a
        # flush returns, every record queued before it was called is stored (the audit API
        # flushes before it reads: without this it could read before the background
        # writer's batch committed, and miss it).
        self._writing = asyncio.Lock()

    @property
    def pending(self) -> int:
        return len(self._pending) + (len(self._unsure[1]) if self._unsure else 0)

    def record(self, record: AuditRecord) -> None:
        """Queue ``record``; never blocks, never raises."""
        if self.pending >= self._max_pending:
            self.dropped += 1
            return
        self._pending.append(record)

    async def flush(self) -> None:
        async with self._writing:
            await self._write_pending()

    async def _write_pending(self) -> None:
        if self._unsure is not None:
            # Older than anything queued since: first, and as it was (its id says whether
            # the failed attempt stored it after all).
            await self._store.insert_audit_records(self._unsure[1], batch=self._unsure[0])
            self._unsure = None
        if not self._pending:
            return
        batch = (uuid.uuid4().hex, list(self._pending))
        self._pending.clear()
        try:
            await self._store.insert_audit_records(batch[1], batch=batch[0])
        except BaseException:
            # Kept under its id within the bound (the records queued meanwhile count);
            # what does not fit is lost and counted. A cancelled write too: it may or may not
            # have committed, which the id settles on the retry.
            room = max(0, self._max_pending - len(self._pending))
            self.dropped += max(0, len(batch[1]) - room)
            if room:
                self._unsure = (batch[0], batch[1][:room])
            raise

    async def run(self, flush_seconds: float) -> None:
        """Flush every ``flush_seconds`` until cancelled. A cancellation that arrives during a
        write (the app's shutdown cancels this task) waits for that write to finish: cut off,
        its batch was lost (taken off the queue, never stored, so the shutdown flush found
        nothing), and a store transaction interrupted at its BEGIN left the write connection
        inside that transaction, so every later write (the shutdown's own flushes) failed."""
        while True:
            await asyncio.sleep(flush_seconds)
            if not self.pending:
                continue
            try:
                await uninterrupted(self.flush())  # a failure is put back and counted there
            except StoreUnavailable:
                # Kept (within the bound) and written when the store answers again; the
                # outage itself is logged once by the authenticator.
                continue
            except Exception:
                _LOGGER.exception("writing audit records failed; will retry")
