"""The audit log table: written inside lifecycle transactions (``core.StoreCore._audit``)
or in batches from the request path's queue, and read with filters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from .base import AuditQuery, AuditRecord
from .core import StoreCore

__all__ = ("AuditTable",)

_COLUMNS: Final = (
    "at, actor, action, target_type, target_id, tenant_id, outcome, client_addr, user_agent, detail"
)


# How long a stored batch's id is kept after its newest record: far past any retry.
_BATCH_IDS_KEPT: Final = 86_400.0


class AuditTable(StoreCore):
    async def insert_audit_records(
        self, records: Sequence[AuditRecord], *, batch: str | None = None
    ) -> bool:
        """Store ``records`` in one transaction; with ``batch`` (an id the caller gives them
        and keeps for its retries), at most once. False: nothing written (no records, or
        that batch is stored already)."""
        if not records:
            return False
        async with self.transaction() as tx:
            if batch is not None:
                at = max(r.at for r in records)
                new = await tx.execute(
                    "INSERT INTO audit_batches (id, at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
                    (batch, at),
                )
                if not new:
                    return False  # a retry of a batch whose commit went through
                await tx.execute("DELETE FROM audit_batches WHERE at < ?", (at - _BATCH_IDS_KEPT,))
            await self._audit(tx, *records)
        return True

    async def audit_records(self, *, target_id: str | None = None) -> list[AuditRecord]:
        """Every record (of one target), oldest first."""
        records, _ = await self.query_audit(AuditQuery(target=target_id), limit=2**62, offset=0)
        return records[::-1]

    async def query_audit(
        self, query: AuditQuery, *, limit: int, offset: int
    ) -> tuple[list[AuditRecord], int]:
        """A page of matching records, newest first, and how many match in all."""
        condition, params = self._where(
            (
                ("tenant_id = ?", query.tenant_id),
                ("actor = ?", query.actor),
                ("action = ?", query.action),
                ("target_id = ?", query.target),
                ("target_type = ?", query.target_type),
                ("outcome = ?", query.outcome),
                ("at >= ?", query.since),
            )
        )
        total = (await self._fetchone(f"SELECT count(*) FROM audit_log{condition}", params))[0]
        rows = await self._fetchall(
            f"SELECT {_COLUMNS} FROM audit_log{condition} ORDER BY id DESC LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [AuditRecord(*row) for row in rows], int(total)
