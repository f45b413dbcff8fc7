"""Service users at scale: bulk-insert N of them into an initialized store, and measure
authentication latency in-process (the gateway's own Authenticator on the store file).

    python bench/authscale.py populate STORE N          # prints {"seconds": ...}
    python bench/authscale.py measure STORE N SAMPLES   # prints latency percentiles (JSON)

Keys are derived from the user's index (``key_for(i)``), so the benchmark can present the
key of any inserted user without keeping a million plaintexts around. Rows go in with one
``executemany`` in one transaction, digests computed exactly as the gateway does.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import sqlite3
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.identity.models import ApiKey, digest_key  # noqa: E402


def key_for(i: int) -> ApiKey:
    key_id = hashlib.sha256(b"pangolin-bench-kid-%d" % i).hexdigest()[:16]
    secret = base64.urlsafe_b64encode(hashlib.sha256(b"pangolin-bench-secret-%d" % i).digest())
    return ApiKey(key_id=key_id, secret=secret.rstrip(b"=").decode())


def _rows(n: int, tenant_id: str, now: float) -> Iterator[tuple[object, ...]]:
    for i in range(n):
        key = key_for(i)
        yield (
            str(uuid.uuid4()), tenant_id, f"bench-{i:07d}", "", "TenantUser", key.key_id,
            digest_key(key), now, "bench", None, 1, None, None, 1,
        )  # fmt: skip


def populate(store: Path, n: int) -> float:
    started = time.perf_counter()
    conn = sqlite3.connect(store, isolation_level=None)
    try:
        (tenant_id,) = conn.execute("SELECT id FROM tenants WHERE name = 'default'").fetchone()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO service_users (id, tenant_id, name, description, role, key_id,"
            " key_digest, created_at, created_by, expires_at, active, last_used_at,"
            " key_rotated_at, key_generation) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            _rows(n, tenant_id, time.time()),
        )
        conn.execute(
            "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'identity_version'"
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
    return time.perf_counter() - started


def _percentiles(samples: list[float]) -> dict[str, float]:
    samples = sorted(samples)

    def at(q: float) -> float:
        return samples[min(len(samples) - 1, int(q * len(samples)))] * 1e6

    return {"p50_us": at(0.50), "p99_us": at(0.99), "max_us": samples[-1] * 1e6}


async def measure(store_path: Path, n: int, samples: int) -> dict[str, object]:
    from gateway.auth.authenticator import Authenticator
    from gateway.auth.tokens import TokenService
    from gateway.identity.sessions import SessionAdmin
    from gateway.settings import TokenSettings
    from gateway.store import SqliteStore

    rng = random.Random(7)
    async with SqliteStore(store_path) as store:
        tokens = await TokenService.load(store, TokenSettings(), time.time)
        sessions = SessionAdmin(store, lifetime_seconds=3600, idle_seconds=3600)
        auth = Authenticator(store, tokens, time.time, sessions)
        cold: list[float] = []
        picks = [rng.randrange(n) for _ in range(samples)]
        for i in picks[:200]:  # warm SQLite's page cache and the code paths
            auth.invalidate()
            await auth.authenticate_key(key_for(i))
        for i in picks:
            key = key_for(i)
            auth.invalidate()  # every lookup goes to the store: the part that grows with N
            t0 = time.perf_counter()
            outcome = await auth.authenticate_key(key)
            cold.append(time.perf_counter() - t0)
            assert outcome.principal is not None, outcome.reason
        warm: list[float] = []
        key = key_for(picks[0])
        await auth.authenticate_key(key)
        for _ in range(samples):
            t0 = time.perf_counter()
            await auth.authenticate_key(key)
            warm.append(time.perf_counter() - t0)
    return {"users": n, "samples": samples, "cold": _percentiles(cold), "warm": _percentiles(warm)}


def main() -> None:
    command, store = sys.argv[1], Path(sys.argv[2])
    n = int(sys.argv[3])
    if command == "populate":
        print(json.dumps({"seconds": populate(store, n)}))
    elif command == "measure":
        print(json.dumps(asyncio.run(measure(store, n, int(sys.argv[4])))))
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main()
