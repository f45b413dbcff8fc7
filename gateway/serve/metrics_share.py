"""One ``/metrics`` for the whole instance under ``serve --workers N``: each worker writes a
snapshot of its counts to a private directory every ``SNAPSHOT_SECONDS`` (atomically, by
``os.replace``), and the worker that answers a scrape adds the others' snapshots to its own
counts. Design, staleness bounds and why not prometheus_client's multiprocess mode:
docs/architecture.md, "Several workers"."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Final, cast

from ..observability.metrics import BUCKETS, Snapshot

__all__ = ("SNAPSHOT_SECONDS", "SnapshotFiles", "create_directory", "parse", "remove_directory")

_LOGGER = logging.getLogger(__name__)
SNAPSHOT_SECONDS: Final = 1.0
_FORMAT: Final = 1
_FIELDS: Final = Snapshot.__required_keys__


def create_directory() -> Path:
    """A new private directory (0700) for one instance's snapshots."""
    return Path(tempfile.mkdtemp(prefix="pangolin-metrics-"))


def remove_directory(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


class SnapshotFiles:
    """Worker ``index`` of ``workers``: writes its snapshots and reads the others'
    (``metrics.Peers``)."""

    def __init__(self, directory: Path, index: int, workers: int) -> None:
        self._directory = directory
        self._index = index
        self._workers = workers
        self._failing = False

    def path(self, index: int) -> Path:
        return self._directory / f"worker-{index}.json"

    def publish(self, snapshot: Snapshot) -> None:
        """Replace this worker's snapshot (on the event loop's thread: ``snapshot`` holds live
        lists). A failure is logged, not raised: metrics never stop the worker."""
        text = json.dumps(
            {"format": _FORMAT, "pid": os.getpid(), "counts": snapshot}, separators=(",", ":")
        )
        target = self.path(self._index)
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            temporary.write_text(text, encoding="utf-8")
            os.replace(temporary, target)
        except OSError as exc:
            if not self._failing:
                _LOGGER.warning("cannot write the metrics snapshot %s: %s", target, exc)
            self._failing = True
        else:
            self._failing = False

    def read(self, index: int) -> Snapshot | None:
        """Worker ``index``'s latest snapshot; None if it has written none yet (starting)."""
        path = self.path(index)
        try:
            return parse(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            _LOGGER.warning("ignoring the metrics snapshot %s: %s", path, exc)
            return None

    def exchange(self, own: Snapshot) -> list[Snapshot]:
        """``metrics.Peers``: publish ``own``; every worker's counts in index order, this
        worker's live ones in its place."""
        self.publish(own)
        found = []
        for index in range(self._workers):
            snapshot = own if index == self._index else self.read(index)
            if snapshot is not None:
                found.append(snapshot)
        return found

    async def publish_every(self, snapshot: Callable[[], Snapshot], seconds: float) -> None:
        """Publish ``snapshot()`` now and every ``seconds`` until cancelled."""
        while True:
            self.publish(snapshot())
            await asyncio.sleep(seconds)


def parse(text: str) -> Snapshot:
    """A snapshot file's counts; ``ValueError`` unless it is one of ours, well formed."""
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise ValueError("not a snapshot of this format")
    counts = data.get("counts")
    if not (
        isinstance(counts, dict)
        and set(counts) == _FIELDS
        and _is_counts(counts["requests"], depth=3)
        and isinstance(counts["latency"], dict)
        and all(_is_histogram(h) for h in counts["latency"].values())
        and isinstance(counts["upstreams"], dict)
        and all(
            isinstance(u, dict)
            and set(u) == {"latency", "errors"}
            and _is_histogram(u["latency"])
            and _is_counts(u["errors"])
            for u in counts["upstreams"].values()
        )
        and all(
            _is_counts(counts[name])
            for name in ("auth_failures", "tokens_issued", "tokens_refused", "throttled", "queues")
        )
    ):
        raise ValueError("malformed snapshot")
    return cast(Snapshot, counts)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_counts(value: object, depth: int = 1) -> bool:
    """``{str: count}``, or nested ``depth`` levels deep."""
    return isinstance(value, dict) and all(
        isinstance(label, str)
        and (_is_count(inner) if depth == 1 else _is_counts(inner, depth - 1))
        for label, inner in value.items()
    )


def _is_histogram(value: object) -> bool:
    if not isinstance(value, dict) or set(value) != {"buckets", "sum"}:
        return False
    buckets, total = value["buckets"], value["sum"]
    return (
        isinstance(buckets, list)
        and len(buckets) == len(BUCKETS) + 1
        and all(_is_count(count) for count in buckets)
        and isinstance(total, int | float)
        and not isinstance(total, bool)
    )
