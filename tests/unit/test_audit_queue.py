"""The request-path audit queue (``gateway.audit.queue``): a flush returns only once every
record queued before it is stored, even while the background writer's batch is in flight (the
audit API flushes, then reads: it must see what was recorded before it was asked); a batch
whose write failed is retried under its id, so it is stored exactly once."""

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

    async def slow(records: Sequence[AuditRecord], *, batch: str | None = None) -> bool:
        started.set()
        await release.wait()  # the background writer's batch, mid-commit
        return await real(records, batch=batch)

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


async def test_a_batch_whose_commit_answer_was_lost_is_stored_once_when_retried(
    store: StoreTables, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = AuditQueue(store)
    real = store.insert_audit_records

    async def committed_then_dropped(
        records: Sequence[AuditRecord], *, batch: str | None = None
    ) -> bool:
        await real(records, batch=batch)  # the COMMIT went through ...
        raise ConnectionResetError("connection lost")  # ... its answer did not come back

    queue.record(record("first"))
    monkeypatch.setattr(store, "insert_audit_records", committed_then_dropped)
    with pytest.raises(ConnectionResetError):
        await queue.flush()
    monkeypatch.setattr(store, "insert_audit_records", real)
    assert queue.pending == 1  # kept: the queue cannot know it was stored
    queue.record(record("second"))
    await queue.flush()

    assert [r.action for r in await store.audit_records()] == ["first", "second"]
    assert queue.pending == 0 and queue.dropped == 0


async def test_a_batch_that_failed_before_its_commit_is_stored_on_the_retry(
    store: StoreTables, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = AuditQueue(store, max_pending=2)
    real = store.insert_audit_records

    async def refused(records: Sequence[AuditRecord], *, batch: str | None = None) -> bool:
        raise ConnectionResetError("connection lost")

    queue.record(record("first"))
    monkeypatch.setattr(store, "insert_audit_records", refused)
    with pytest.raises(ConnectionResetError):
        await queue.flush()
    queue.record(record("second"))
    queue.record(record("third"))  # past the bound, with the kept batch: dropped, counted
    with pytest.raises(ConnectionResetError):
        await queue.flush()  # still failing: nothing lost, nothing doubled
    monkeypatch.setattr(store, "insert_audit_records", real)
    await queue.flush()

    assert [r.action for r in await store.audit_records()] == ["first", "second"]
    assert queue.dropped == 1


async def test_the_store_writes_a_batch_id_once(store: StoreTables) -> None:
    assert await store.insert_audit_records([record("once")], batch="b1")
    assert not await store.insert_audit_records([record("once")], batch="b1")
    assert await store.insert_audit_records([record("again")], batch="b2")
    assert [r.action for r in await store.audit_records()] == ["once", "again"]


async def test_a_flush_cancelled_mid_write_keeps_its_batch_for_the_next(
    store: StoreTables, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = AuditQueue(store)
    started = asyncio.Event()
    real = store.insert_audit_records

    async def stuck(records: Sequence[AuditRecord], *, batch: str | None = None) -> bool:
        started.set()
        await asyncio.Event().wait()  # a write that never ends: cancelled here
        return False

    queue.record(record("first"))
    monkeypatch.setattr(store, "insert_audit_records", stuck)
    flushing = asyncio.create_task(queue.flush())  # e.g. an audit API request, then gone
    await started.wait()
    flushing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flushing
    monkeypatch.setattr(store, "insert_audit_records", real)
    await queue.flush()

    assert [r.action for r in await store.audit_records()] == ["first"]
