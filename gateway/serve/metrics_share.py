"""One ``/metrics`` for the whole instance under ``serve --workers N``: snapshot files.

Every worker keeps counting in its own memory, exactly as a single process does (plain
``int`` increments on its event loop: no lock, no syscall, no write per request). What is
shared is a snapshot of those counts:

- The supervisor creates a private directory (``tempfile.mkdtemp``: mode 0700, under
  ``$TMPDIR``) for the instance, hands it to the workers and removes it when it exits.
- Each worker writes its raw counts (``GatewayMetrics.snapshot()``, as JSON) to
  ``worker-<index>.json`` there every ``SNAPSHOT_SECONDS``, on a timer of its event loop, and
  once more after it stopped (requests in flight answered, queues flushed). A write goes to a
  temporary file that ``os.replace`` then renames over the old one, so a reader sees a whole
  snapshot, the previous one or the next one, never a torn one.
- The worker that answers a scrape first writes its own snapshot, then reads the others' and
  reports the sum (``metrics.merge``, always in worker order) and ``pangolin_workers``, the
  number of workers summed.

Staleness: the answer holds the answering worker's counts as of the scrape and every other
worker's as of its latest snapshot, so it may miss up to about ``SNAPSHOT_SECONDS`` (1 s) of
their activity, which the next scrape includes. It never goes back: each file only grows, the
answering worker writes its own counts before it answers, so whichever worker answers the
next scrape reads at least those, and the terms are added in worker order whoever answers, so
even a float ``_sum`` cannot lose a rounding step. A counter therefore only decreases if a
worker restarts: the files are named by worker index, so a replacement overwrites its
predecessor's file (no double count) and the sum drops by what that one had counted, which
Prometheus' ``rate()`` handles as a counter reset. Today the supervisor never replaces a
worker (it stops the whole gateway instead), and the file of a worker that died stays in the
sum until then.

Why files rather than the alternatives: prometheus_client's multiprocess mode (0.26, in
``constraints.txt``) needs its own ``Counter``/``Histogram`` objects whose every update takes
a lock and writes an mmap'ed file, and it has no place for the scrape-time queue gauges;
shared memory would need fixed cells for every label value, while status codes and auth
failure reasons appear only when they occur. Snapshots leave the hot path untouched and cost
each worker one small write a second plus, per scrape, N reads and one write. A single
process (no ``--workers``) uses none of this.

If the supervisor itself is killed (SIGKILL), the workers stop within a second and the
directory stays behind in ``$TMPDIR``: a few kilobytes, removed with the temporary files.
"""

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
            for name in ("auth_failures", "tokens_issued", "tokens_refused", "queues")
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
