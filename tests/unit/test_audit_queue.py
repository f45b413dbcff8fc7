"""The request-path audit queue (``gateway.audit.queue``): a flush returns only once every
record queued before it is stored, even while the background writer's batch is in flight (the
audit API flushes, then reads: it must see what was recorded before it was asked)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from gateway.audit.queue import AuditQueue
from gateway.store import AuditRecord
from gateway.store.tables import StoreTables


def record(action: str) -> AuditRecord:
    return AuditRecord.success(
        at=1.0, actor="test", action=action, target_type="x", target_id=None, tenant_id=None,
        client=None,
    )  # fmt: skip


async def test_a_flush_waits_for_the_write_already_under_way(
    store: StoreTables, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = AuditQueue(store)
    release = asyncio.Event()
    started = asyncio.Event()
    real = store.insert_audit_records

    async def slow(records: Sequence[AuditRecord]) -> None:
        started.set()
        await release.wait()  # the background writer's batch, mid-commit
        await real(records)

    queue.record(record("first"))
    monkeypatch.setattr(store, "insert_audit_records", slow)
    background = asyncio.create_task(queue.flush())
    await started.wait()
    monkeypatch.setattr(store, "insert_audit_records", real)
    queue.record(record("second"))

    reader = asyncio.create_task(queue.flush())  # what GET /api/v1/audit does first
    await asyncio.sleep(0)  # let it run as far as it can
    assert not reader.done()  # it must not return while "first" is uncommitted
    release.set()
    await asyncio.gather(background, reader)

    assert [r.action for r in await store.audit_records()] == ["first", "second"]
