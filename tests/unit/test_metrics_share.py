"""The snapshot files of ``serve --workers N`` (``metrics_share``): what one worker writes
another reads back whole, a worker not started yet is simply absent, anything malformed is
ignored (never a failed scrape), and the directory is private and removed."""

from __future__ import annotations

import asyncio
import json
import logging
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gateway.observability.metrics import BUCKETS, GatewayMetrics, Snapshot
from gateway.serve.metrics_share import SnapshotFiles, create_directory, parse, remove_directory


@pytest.fixture
def directory() -> Iterator[Path]:
    created = create_directory()
    try:
        yield created
    finally:
        remove_directory(created)


def _metrics(*failures: str) -> GatewayMetrics:
    metrics = GatewayMetrics(CollectorRegistry(), ["default"])
    metrics.request_done("default", "table", 200, 0.002)
    metrics.upstream("default").observe(0.1234567)
    for reason in failures:
        metrics.auth_failed(reason)
    return metrics


def _json(snapshot: Snapshot) -> Any:
    return json.loads(json.dumps(snapshot))  # status codes as JSON has them: strings


def test_the_directory_is_private_and_removed(directory: Path) -> None:
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    SnapshotFiles(directory, 0, 2).publish(_metrics().snapshot())
    remove_directory(directory)
    assert not directory.exists()
    remove_directory(directory)  # again: nothing to do, no error


def test_what_one_worker_publishes_the_others_read_in_worker_order(directory: Path) -> None:
    first, second, third = (SnapshotFiles(directory, index, 3) for index in range(3))
    one, two = _metrics("missing"), _metrics("expired", "expired")

    first.publish(one.snapshot())
    every = second.exchange(two.snapshot())  # the third has written nothing yet

    assert every == [_json(one.snapshot()), two.snapshot()]
    assert third.read(0) == _json(one.snapshot())
    assert third.read(1) == _json(two.snapshot())  # exchange published it
    assert third.read(2) is None
    # No temporary file left behind.
    assert sorted(path.name for path in directory.iterdir()) == ["worker-0.json", "worker-1.json"]
    # Floats come back exactly.
    assert every[0]["upstreams"]["default"]["latency"]["sum"] == 0.1234567

    one.auth_failed("missing")
    first.publish(one.snapshot())  # replaced, not appended
    again = third.read(0)
    assert again == _json(one.snapshot())
    assert again is not None and again["auth_failures"]["missing"] == 2


def _valid() -> dict[str, Any]:
    return {"format": 1, "pid": 1, "counts": _json(_metrics("missing").snapshot())}


def _broken(change: str) -> dict[str, Any]:
    data = _valid()
    counts = data["counts"]
    if change == "format":
        data["format"] = 2
    elif change == "missing field":
        del counts["queues"]
    elif change == "negative count":
        counts["auth_failures"]["missing"] = -1
    elif change == "boolean count":
        counts["tokens_issued"]["client_credentials"] = True
    elif change == "float count":
        counts["requests"]["default"]["table"]["200"] = 1.5
    elif change == "string count":
        counts["queues"]["audit_pending"] = "3"
    elif change == "too few buckets":
        counts["latency"]["table"]["buckets"].pop()
    elif change == "no sum":
        del counts["upstreams"]["default"]["latency"]["sum"]
    elif change == "not nested":
        counts["requests"]["default"] = 3
    return data


@pytest.mark.parametrize(
    "change",
    [
        "format", "missing field", "negative count", "boolean count", "float count",
        "string count", "too few buckets", "no sum", "not nested",
    ],
)  # fmt: skip
def test_parse_refuses_anything_but_a_well_formed_snapshot(change: str) -> None:
    assert parse(json.dumps(_valid()))["auth_failures"]["missing"] == 1
    assert len(parse(json.dumps(_valid()))["latency"]["table"]["buckets"]) == len(BUCKETS) + 1
    with pytest.raises(ValueError):
        parse(json.dumps(_broken(change)))


def test_an_unreadable_snapshot_is_left_out_with_a_warning(
    directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = SnapshotFiles(directory, 0, 3)
    (directory / "worker-1.json").write_text('{"format": 1, "counts": {', encoding="utf-8")
    (directory / "worker-2.json").write_text(json.dumps(_broken("format")), encoding="utf-8")
    own = _metrics().snapshot()

    with caplog.at_level(logging.WARNING, logger="gateway.serve.metrics_share"):
        assert files.exchange(own) == [own]
    assert len(caplog.records) == 2


def test_a_failed_write_is_logged_once_and_never_raised(
    directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = SnapshotFiles(directory, 0, 2)
    remove_directory(directory)
    own = _metrics().snapshot()

    with caplog.at_level(logging.WARNING, logger="gateway.serve.metrics_share"):
        files.publish(own)
        assert files.exchange(own) == [own]
    assert len(caplog.records) == 1

    directory.mkdir(mode=0o700)
    files.publish(own)  # recovered
    assert files.read(0) == _json(own)


async def test_publish_every_writes_until_cancelled(directory: Path) -> None:
    metrics = _metrics()
    files = SnapshotFiles(directory, 0, 1)
    task = asyncio.create_task(files.publish_every(metrics.snapshot, 0.01))
    try:
        assert await _read_until(files, lambda s: s is not None)
        metrics.auth_failed("missing")
        assert await _read_until(files, lambda s: s is not None and s["auth_failures"]["missing"])
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def _read_until(
    files: SnapshotFiles, condition: Callable[[Snapshot | None], object], timeout: float = 5.0
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition(files.read(0)):
            return True
        await asyncio.sleep(0.005)
    return False
