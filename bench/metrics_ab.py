"""What the gateway's hot-path metric updates cost, its own counters against prometheus_client's.

    .venv/bin/python bench/metrics_ab.py [--quick] [--rounds 21] [--reps 100]
        [--cpu-per-request-us 131] [--out bench/metrics_ab.md | --no-write]

The question: may the gateway count with prometheus_client's own ``Counter``/``Histogram``
objects in its multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, what ``--workers N`` would
need) instead of its own plain-int counters (``gateway/observability/metrics.py``)? The rule:
only if that costs at most 2 % of the gateway's CPU per request.

What one forwarded catalog request updates (read from the hot path):

- ``gateway/proxy/forwarder.py``: ``self._stats.observe(seconds)`` once the upstream's
  headers arrived: histogram ``pangolin_upstream_duration_seconds{catalog}``, through the
  ``UpstreamStats`` pre-bound to the catalog's forwarder (``GatewayMetrics.upstream``).
- ``gateway/middleware.py``: ``metrics.request_done(catalog, route, status, seconds)`` once the
  answer is known: counter ``pangolin_requests{catalog, route, status}`` and histogram
  ``pangolin_request_duration_seconds{route}``.
- ``gateway/observability/access_log.py`` touches no metric (it writes a log line only). The
  other counters (``auth_failed``, ``token_issued``/``token_refused``, upstream errors) are
  not touched by a forwarded request that succeeds, and the queue gauges are read at scrape
  time, never per request.

So per request: one counter increment with three labels and two histogram observations, with
``BUCKETS`` (13 bounds and +Inf). Each variant replays the same fixed mix of 4096 such requests
(three catalogs, the route classes, statuses 200/204/404/409/500, latencies around a
millisecond), cycled:

- ``loop``: the replay loop alone, calling nothing (the harness, subtracted by reading the
  "extra vs A" column, which is a difference within a round).
- ``A``: the gateway's own ``GatewayMetrics`` and ``UpstreamStats`` (imported from
  ``gateway.observability.metrics``), the exact calls of the hot path.
- ``B``: prometheus_client in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set to a fresh
  temporary directory before the worker imports prometheus_client: the mode is chosen at
  import). Same names, labels and buckets. Labels as real code would have to resolve them:
  ``REQUESTS.labels(catalog, route, status).inc()`` and ``LATENCY.labels(route).observe()`` per
  request (the status, and the route class, are only known per request); the upstream
  histogram's child pre-resolved per catalog, as the forwarder is bound to one catalog.
- ``B-cached``: multiprocess mode as B, but every child resolved once and kept in a dict keyed
  by its label values (the cheapest multiprocess code could be; a lower bound for B).
- ``C``: prometheus_client in its default single-process mode, the same code as B (reference:
  what the library costs without the mmap files).

Method: one long-lived worker subprocess per variant (its own interpreter, so each chooses
its own prometheus_client mode), warmed up once (every label child created, every mmap entry
allocated). Then ``--rounds`` interleaved rounds: each round asks every worker in turn, in an
order rotated per round, to replay N requests (default 21 rounds of 100 replays of the mix,
409,600 requests per variant per round, about 3 minutes; ``--quick``: 9 rounds of 60, under a
minute), timed with ``time.process_time_ns`` (the
worker's CPU time, user + system, so other load on the shared machine slows the wall clock but
not the figure much). Only one worker runs at a time. The figures: per variant the median ns
per request over the rounds with its interquartile range; "extra vs A" is the median over the
rounds of (variant − A) *within the same round*, with its IQR, and "× A" the median per-round
ratio. At the end every worker reports what it counted (for B read back from the mmap files
through ``MultiProcessCollector``), checked against the requests replayed.

How to read it: "% of CPU/req" is the extra µs over A divided by the gateway's CPU time per
request. That figure comes from ``bench/run.py`` (the gateway process's CPU time per request
under wrk, X-API-Key row), which has no way to run that row alone quickly; so it is the
parameter ``--cpu-per-request-us`` with the default 131 µs, the latest ``bench/run.py --quick``
on this machine (the last full ``make bench`` in bench/results.md says 169 µs; the smaller
figure makes the percentage larger, so the default is the strict one). The verdict compares B
(the realistic multiprocess code) with the 2 % rule; B-cached shows how much caching the
children would save, C how much of B's cost is the library and how much its mmap files.

What multiprocess mode cannot do that the gateway's metrics do (prometheus_client 0.26,
``values.py``, ``multiprocess.py``, ``metrics.py`` and its multiprocess documentation):

- Custom collectors do not work across processes: a scrape reads only the mmap files
  (``MultiProcessCollector``). The gateway's ``GatewayMetrics.collect()`` is such a collector,
  and it reads the queue gauges at scrape time (``pangolin_last_used_pending``,
  ``pangolin_audit_pending``, ``pangolin_audit_dropped``). ``Gauge.set_function`` is not
  supported in multiprocess mode either, so these would have to become gauges set on every
  change of the queues (a write to the mmap file per queued/written record, i.e. more hot-path
  cost than measured here) with a gauge mode (``livesum``/``liveall``/``max``/...).
- The ``process_*`` metrics (``ProcessCollector``, also a custom collector) are not exported.
- Live gauge modes need ``mark_process_dead(pid)`` when a worker exits, and the directory must
  be wiped before each start; nothing cleans up after a crash by itself. Counters and
  histograms of dead workers stay in the files (which is what a restart-safe sum wants, but
  the files only grow: one per process id and metric type).
- Registries cannot be used as normal (every metric instantiated in the process is exported;
  registering them in the scrape registry exports duplicates); ``remove``/``clear`` of label
  children, exemplars, ``Info`` and ``Enum`` are not supported; gauges cannot use a ``pid``
  label.
- The mode is process-global and chosen at import from an environment variable, so the
  single-process gateway would have to choose it at start-up before anything imports
  prometheus_client.

What the gateway's own scheme costs instead is off the hot path: with ``--workers N`` each
worker writes one JSON snapshot per second (``gateway/serve/metrics_share.py``), whatever
the request rate.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VARIANTS = ("loop", "A", "B", "B-cached", "C")
MULTIPROCESS = frozenset({"B", "B-cached"})
DESCRIPTIONS = {
    "loop": "replay loop only (harness)",
    "A": "gateway's GatewayMetrics/UpstreamStats",
    "B": "prometheus_client multiprocess, .labels() per request",
    "B-cached": "prometheus_client multiprocess, children cached",
    "C": "prometheus_client single-process, .labels() per request",
}
CATALOGS = ("warehouse", "analytics", "staging")
MIX_SIZE = 4096
RULE_PERCENT = 2.0


# -- the request mix -------------------------------------------------------------------------


def request_mix(seed: int = 5) -> list[tuple[str, str, int, float, float]]:
    """``MIX_SIZE`` forwarded requests: (catalog, route class, status, gateway seconds,
    upstream seconds), the same in every worker."""
    rng = random.Random(seed)
    routes = ("table", "namespace", "config", "view", "other")
    statuses = (200, 204, 404, 409, 500)
    mix = []
    for _ in range(MIX_SIZE):
        catalog = rng.choices(CATALOGS, weights=(6, 3, 1))[0]
        route = rng.choices(routes, weights=(60, 20, 10, 5, 5))[0]
        status = rng.choices(statuses, weights=(90, 4, 4, 1, 1))[0]
        upstream = rng.lognormvariate(-7.0, 0.8)  # median ~0.9 ms, a tail into 10 ms
        mix.append((catalog, route, status, upstream + rng.uniform(1e-4, 4e-4), upstream))
    return mix


# -- workers (one per variant, in its own interpreter) ----------------------------------------


def _recorder_loop() -> tuple[Any, Any]:
    def replay(mix: list[tuple[str, str, int, float, float]], reps: int) -> None:
        for _ in range(reps):
            for _catalog, _route, _status, _seconds, _upstream in mix:
                pass

    return replay, lambda: {"requests": None, "latency_count": None, "upstream_count": None}


def _recorder_gateway() -> tuple[Any, Any]:
    sys.path.insert(0, str(ROOT))
    from prometheus_client import CollectorRegistry

    from gateway.observability.metrics import GatewayMetrics

    metrics = GatewayMetrics(CollectorRegistry(), CATALOGS)
    # What app.py hands each catalog's forwarder: its pre-bound UpstreamStats.
    stats = {name: metrics.upstream(name) for name in CATALOGS}

    def replay(mix: list[tuple[str, str, int, float, float]], reps: int) -> None:
        request_done = metrics.request_done
        for _ in range(reps):
            for catalog, route, status, seconds, upstream in mix:
                stats[catalog].observe(upstream)  # forwarder.forward
                request_done(catalog, route, status, seconds)  # gateway_middleware

    def counted() -> dict[str, float | None]:
        snap = metrics.snapshot()
        requests = sum(
            count
            for routes in snap["requests"].values()
            for statuses in routes.values()
            for count in statuses.values()
        )
        latency = sum(sum(h["buckets"]) for h in snap["latency"].values())
        upstream = sum(sum(u["latency"]["buckets"]) for u in snap["upstreams"].values())
        return {"requests": requests, "latency_count": latency, "upstream_count": upstream}

    return replay, counted


def _recorder_client(cached: bool) -> tuple[Any, Any]:
    sys.path.insert(0, str(ROOT))
    multiproc = "PROMETHEUS_MULTIPROC_DIR" in os.environ
    from prometheus_client import CollectorRegistry, Counter, Histogram, values

    from gateway.observability.metrics import BUCKETS, UPSTREAM_ERROR_KINDS

    assert values.ValueClass.__name__ == ("MmapedValue" if multiproc else "MutexValue")
    # Multiprocess mode: metrics are not registered (the scrape registry holds only the
    # MultiProcessCollector); single-process: a private registry, as the gateway's own.
    registry = None if multiproc else CollectorRegistry()
    requests = Counter(
        "pangolin_requests", "Requests answered, by catalog, route class and status.",
        ("catalog", "route", "status"), registry=registry,
    )  # fmt: skip
    latency = Histogram(
        "pangolin_request_duration_seconds",
        "Time from the request reaching the gateway to its answer, by route class.",
        ("route",), buckets=BUCKETS, registry=registry,
    )  # fmt: skip
    upstream_latency = Histogram(
        "pangolin_upstream_duration_seconds",
        "Time until the catalog upstream's response headers arrived, by catalog.",
        ("catalog",), buckets=BUCKETS, registry=registry,
    )  # fmt: skip
    errors = Counter(
        "pangolin_upstream_errors", "Upstream requests that failed, by catalog and kind.",
        ("catalog", "kind"), registry=registry,
    )  # fmt: skip
    for name in CATALOGS:  # seeded at zero, as the gateway's (not touched per request)
        for kind in UPSTREAM_ERROR_KINDS:
            errors.labels(name, kind)
    # The forwarder is bound to one catalog: its upstream child is resolved once.
    upstream = {name: upstream_latency.labels(name) for name in CATALOGS}

    if cached:
        children: dict[tuple[str, str, int], Any] = {}
        by_route: dict[str, Any] = {}

        def replay(mix: list[tuple[str, str, int, float, float]], reps: int) -> None:
            for _ in range(reps):
                for catalog, route, status, seconds, up in mix:
                    upstream[catalog].observe(up)
                    key = (catalog, route, status)
                    child = children.get(key)
                    if child is None:
                        child = children[key] = requests.labels(catalog, route, status)
                    child.inc()
                    histogram = by_route.get(route)
                    if histogram is None:
                        histogram = by_route[route] = latency.labels(route)
                    histogram.observe(seconds)

    else:

        def replay(mix: list[tuple[str, str, int, float, float]], reps: int) -> None:
            for _ in range(reps):
                for catalog, route, status, seconds, up in mix:
                    upstream[catalog].observe(up)
                    requests.labels(catalog, route, status).inc()
                    latency.labels(route).observe(seconds)

    def counted() -> dict[str, float | None]:
        if multiproc:
            from prometheus_client import multiprocess

            scrape = CollectorRegistry()
            multiprocess.MultiProcessCollector(scrape)  # reads the mmap files back
            families = list(scrape.collect())
        else:
            assert registry is not None
            families = list(registry.collect())
        totals = {"requests": 0.0, "latency_count": 0.0, "upstream_count": 0.0}
        for family in families:
            for sample in family.samples:
                if sample.name == "pangolin_requests_total":
                    totals["requests"] += sample.value
                elif sample.name == "pangolin_request_duration_seconds_count":
                    totals["latency_count"] += sample.value
                elif sample.name == "pangolin_upstream_duration_seconds_count":
                    totals["upstream_count"] += sample.value
        return dict(totals)

    return replay, counted


def worker(variant: str) -> None:
    """Answer ``run REPS`` (CPU ns of replaying the mix REPS times), ``count`` and ``quit``
    on stdin/stdout, one line each."""
    import gc

    if variant == "loop":
        replay, counted = _recorder_loop()
    elif variant == "A":
        replay, counted = _recorder_gateway()
    else:
        replay, counted = _recorder_client(cached=variant == "B-cached")
    mix = request_mix()
    replay(mix, 4)  # warm-up: every child, every mmap entry, the code paths
    done = 4
    print("ready", flush=True)
    clock = time.process_time_ns
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "run":
            reps = int(argument)
            gc.collect()
            start = clock()
            replay(mix, reps)
            used = clock() - start
            done += reps
            print(used, flush=True)
        elif command == "count":
            print(json.dumps({"replayed": done * MIX_SIZE, **counted()}), flush=True)
        else:
            return


class Worker:
    def __init__(self, variant: str, multiproc_dir: Path | None) -> None:
        env = dict(os.environ)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env.pop("prometheus_multiproc_dir", None)
        if multiproc_dir is not None:
            multiproc_dir.mkdir()
            env["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc_dir)
        self.variant = variant
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", variant],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip

    def ask(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if line:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"worker {self.variant} exited ({self.proc.wait()})")
        return answer.strip()

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(10)


# -- statistics and report --------------------------------------------------------------------


def median_iqr(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q2, q1, q3


def report(
    per_round: dict[str, list[float]], args: argparse.Namespace, reps: int, seconds: float
) -> tuple[list[str], str]:
    budget_ns = args.cpu_per_request_us * 1000.0
    base = per_round["A"]
    lines = [
        "| variant | what | ns/req median | ns/req IQR | × A (median of rounds) "
        "| extra vs A µs/req (IQR) | % of CPU/req | vs 2 % rule |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    verdict = ""
    for variant in VARIANTS:
        values = per_round[variant]
        med, q1, q3 = median_iqr(values)
        ratio = statistics.median(v / a for v, a in zip(values, base, strict=True))
        extra, e1, e3 = median_iqr([v - a for v, a in zip(values, base, strict=True)])
        percent = extra / budget_ns * 100.0
        if variant in ("loop", "A"):
            judged = "–" if variant == "loop" else "baseline"
            extra_cell = "–" if variant == "A" else f"{extra / 1000:+.2f}"
            percent_cell = "–"
        else:
            ok = percent <= RULE_PERCENT
            judged = f"{'within' if ok else 'over'} (upper quartile {e3 / budget_ns * 100:.1f} %)"
            extra_cell = f"{extra / 1000:+.2f} ({e1 / 1000:+.2f}…{e3 / 1000:+.2f})"
            percent_cell = f"{percent:+.1f} %"
            if variant == "B":
                verdict = (
                    f"B (prometheus_client multiprocess mode, labels resolved per request) "
                    f"costs {extra / 1000:+.2f} µs per request over the gateway's own counters "
                    f"= {percent:+.1f} % of {args.cpu_per_request_us:g} µs CPU per request: "
                    + (
                        "within the 2 % rule (switching is allowed by the cost rule)."
                        if ok
                        else "over the 2 % rule, so the gateway keeps its own counting."
                    )
                    + f" (B would be 2 % of a gateway spending {extra / 1000 / 0.02:.0f} µs "
                    "of CPU per request.)"
                )
        lines.append(
            f"| {variant} | {DESCRIPTIONS[variant]} | {med:,.0f} | {q1:,.0f}–{q3:,.0f} "
            f"| {ratio:.2f} | {extra_cell} | {percent_cell} | {judged} |"
        )
    head = [
        "# Hot-path metric updates: the gateway's own counters vs prometheus_client",
        "",
        f"- {datetime.date.today().isoformat()}, nproc {os.cpu_count()}, "
        f"{platform.platform()}, Python {platform.python_version()}, "
        f"prometheus_client {_client_version()}",
        f"- `bench/metrics_ab.py{' --quick' if args.quick else ''}`: {args.rounds} interleaved "
        f"rounds (order rotated per round), {reps * MIX_SIZE:,} requests per variant per round, "
        f"CPU time of each worker by `time.process_time_ns`; {seconds:.0f} s in all. The "
        "machine was shared with other work (test runs): figures are medians over the rounds, "
        "differences and ratios are taken within a round.",
        "- Per request (a forwarded catalog request): `pangolin_upstream_duration_seconds"
        "{catalog}` observe, `pangolin_requests{catalog,route,status}` inc, "
        "`pangolin_request_duration_seconds{route}` observe (13 buckets + +Inf).",
        f"- % of CPU/req: extra µs over A ÷ {args.cpu_per_request_us:g} µs, the gateway's CPU "
        "time per request (X-API-Key, bench/run.py --quick on this machine; a parameter, "
        "`--cpu-per-request-us`, not measured by this script).",
        "",
    ]
    return [*head, *lines, "", f"**Verdict:** {verdict}", ""], verdict


def _client_version() -> str:
    from importlib.metadata import version

    return version("prometheus_client")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about a minute: 9 rounds of 60 reps")
    parser.add_argument("--rounds", type=int, default=None, help="21 (9 with --quick)")
    parser.add_argument(
        "--reps",
        type=int,
        default=None,
        help=f"mix replays per run, of {MIX_SIZE} requests (100; 60 with --quick)",
    )
    parser.add_argument("--cpu-per-request-us", type=float, default=131.0)
    parser.add_argument("--out", type=Path, default=BENCH / "metrics_ab.md")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    args.rounds = args.rounds or (9 if args.quick else 21)
    reps = args.reps or (60 if args.quick else 100)
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="metrics-ab-"))
    workers: dict[str, Worker] = {}
    try:
        for variant in VARIANTS:
            # A fresh directory per multiprocess worker: nothing left from an earlier run.
            mdir = tmp / variant if variant in MULTIPROCESS else None
            workers[variant] = Worker(variant, mdir)
        for w in workers.values():
            if w.ask("") != "ready":
                raise RuntimeError(f"worker {w.variant} did not start")
        per_round: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for r in range(args.rounds):
            order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]
            cells = []
            for variant in order:
                used = int(workers[variant].ask(f"run {reps}"))
                per_round[variant].append(used / (reps * MIX_SIZE))
                cells.append(f"{variant} {per_round[variant][-1]:,.0f}")
            print(f"round {r + 1}/{args.rounds} (ns/req): " + ", ".join(cells), flush=True)
        for variant, w in workers.items():
            counts = json.loads(w.ask("count"))
            if variant != "loop":
                for key in ("requests", "latency_count", "upstream_count"):
                    if counts[key] != counts["replayed"]:
                        raise RuntimeError(f"{variant} counted {counts[key]} {key}: {counts}")
        print("counts checked: every variant counted every request it replayed")
    finally:
        for w in workers.values():
            w.close()
        shutil.rmtree(tmp, ignore_errors=True)
    lines, verdict = report(per_round, args, reps, time.monotonic() - started)
    print("\n".join(lines))
    if not args.no_write:
        args.out.write_text("\n".join(lines), encoding="utf-8")
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
