"""Counts every process on the store shares, so limits hold across workers and replicas:
failures (the login throttle's and the authentication backoff's, ``failure_counts``) and
what each instance let through under a rate limit (``request_counts``). Keys are digests:
the store holds no username, address or key id of a count in clear. Neither is audited:
they are bookkeeping, merged in batches, never a change of identity."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .core import StoreCore

__all__ = ("CountTables",)


class CountTables(StoreCore):
    # -- failures ------------------------------------------------------------------------------

    async def failure_counts(self, keys: Sequence[bytes], since: float) -> dict[bytes, int]:
        """Failures counted under each key whose last one is not older than ``since``."""
        found: dict[bytes, int] = {}
        for key in keys:
            row = await self._fetchone(
                "SELECT failures FROM failure_counts WHERE key = ? AND last_at >= ?", (key, since)
            )
            found[bytes(key)] = int(row[0]) if row else 0
        return found

    async def add_failures(
        self, counts: Mapping[bytes, int], at: float, since: float
    ) -> dict[bytes, int]:
        """Add ``counts`` (key -> failures, each at least one) to the stored ones, a key whose
        last failure is older than ``since`` starting again from zero; rows older than that
        are pruned on the way. Returns each key's total now, every process's failures
        included."""
        async with self.transaction() as tx:
            await tx.executemany(
                "INSERT INTO failure_counts (key, failures, last_at) VALUES (?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET failures = CASE"
                " WHEN failure_counts.last_at < ? THEN excluded.failures"
                " ELSE failure_counts.failures + excluded.failures END,"
                " last_at = excluded.last_at",
                [(key, count, at, since) for key, count in counts.items()],
            )
            await tx.execute("DELETE FROM failure_counts WHERE last_at < ?", (since,))
            totals: dict[bytes, int] = {}
            for key in counts:
                row = await tx.fetchone("SELECT failures FROM failure_counts WHERE key = ?", (key,))
                totals[key] = int(row[0])
        return totals

    async def clear_failures(self, keys: Sequence[bytes]) -> None:
        async with self.transaction() as tx:
            await tx.executemany("DELETE FROM failure_counts WHERE key = ?", [(k,) for k in keys])

    # -- requests under a rate limit -----------------------------------------------------------

    async def add_request_costs(
        self, costs: Mapping[bytes, float], instance: str, at: float, since: float
    ) -> None:
        """Add ``costs`` (key -> seconds of bucket let through) to ``instance``'s running
        totals; rows no instance has added to since ``since`` are pruned on the way."""
        async with self.transaction() as tx:
            await tx.executemany(
                "INSERT INTO request_counts (key, instance, cost, last_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (key, instance) DO UPDATE SET"
                " cost = request_counts.cost + excluded.cost, last_at = excluded.last_at",
                [(key, instance, cost, at) for key, cost in costs.items()],
            )
            await tx.execute("DELETE FROM request_counts WHERE last_at < ?", (since,))

    async def request_costs_elsewhere(self, instance: str) -> dict[bytes, float]:
        """Per key, the running totals of every instance but ``instance``, added up."""
        rows = await self._fetchall(
            "SELECT key, sum(cost) FROM request_counts WHERE instance <> ? GROUP BY key",
            (instance,),
        )
        return {bytes(key): float(cost) for key, cost in rows}
