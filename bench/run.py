"""The gateway benchmark (`make bench`): the gateway against the bare upstream, nginx, a
minimal aiohttp proxy and itself forwarding with aiohttp's client (the control for its lean
one), on loopback, in one run; results to stdout and bench/results.md. One more gateway row
prices least privilege (issue 12): a service user holding 50 grants, on a catalog with
``default_access = "none"`` (so its grants decide every request), against the X-API-Key row.
Issue 13 adds the PostgreSQL store: the X-API-Key row again, from a gateway whose store.url
names a PostgreSQL database (the cached path: the same config otherwise), the cold lookup
(the first request of each of ``--cold-keys`` service users, on SQLite and on PostgreSQL) and
the revocation lag across two replicas on one database (``ROTATIONS`` rotations).

    python bench/run.py [--rounds 3] [--duration 5] [--connections 32] [--users 1000000]
                        [--cold-keys 500] [--no-seaweed] [--no-profile] [--no-postgres]
                        [--quick] [--out bench/results.md]

Needs wrk and nginx (Debian: ``apt-get install -y wrk nginx``; run as root it installs them
itself). Every proxy (nginx with 1 worker, the minimal proxy, the gateway) is pinned to core 1
with ``taskset -c 1``; the load generator (wrk -t1) and the upstream share core 0. Nothing is
asserted: targets from issue 5 are printed as ratios.

Unless ``--no-postgres``, also Debian's PostgreSQL server (``make postgres``; run as root the
script installs it): one server for the whole run, started with the tests' own PostgresServer
(tests/postgres.py, imported: a temporary directory, a free loopback port, as the postgres
user when root, durability off), every process of it pinned to core 0 with the upstream (a
deployment's database runs on another host; here it is on the load generator's side, not the
proxies').

Rounds: single runs on a shared 2-core machine vary a lot, so every comparison runs
``--rounds`` rounds, interleaved: all the proxies of one upstream stay up (idle but one), and
each round measures every configuration once, in an order shuffled per round (seeded, so the
same on every run), so a slow drift of the machine hits all of them alike and no configuration
always follows the same one. Tables show per-configuration medians over the rounds (req/s,
p50, p99 and the c1 latencies, each its own median) with the min-max req/s and the proxies'
CPU time per request; target ratios are medians of per-round ratios. The same holds for the
token endpoint (measured at the end of each round), for 2 workers vs 1 and for the small vs
large store.

``--quick``: only the fast-upstream comparison of the nine configurations and the two short
PostgreSQL measurements (cold lookups, revocation lag: under half a minute together; no token
endpoint, profile, workers, store scale or SeaweedFS), with 2 s wrk runs unless
``--duration`` is given: about 5 minutes at 5 rounds, for a developer checking a change. The
full run (the default, ``make bench``) took about 45 minutes at 5 rounds on our 2-core VMs.

Target ratios: after the rounds, ``--pairs`` A/B pairs of back-to-back 1 s runs (first side
alternating) for X-API-Key vs no-auth, bearer vs no-auth, X-API-Key vs the minimal proxy, 50
grants vs X-API-Key, the PostgreSQL store vs SQLite, nginx with forward-auth (with and
without the decision cache) vs nginx alone and the identity assertion on vs off; each target
is the median of its pair ratios, with their interquartile range. Runs a few seconds apart
see the shared machine in nearly the same state, which separate rounds do not. An A/A
control (no-auth vs itself) shows how far a pair median strays when both sides are the same:
the noise floor of the rest. The two authentication targets are also estimated
co-scheduled: a second process of the no-auth gateway (same config, same store) shares the
proxy core, and each run loads both at once, one with each side's requests (3 s); each
ratio, by req/s and by each process's CPU time per request, is the geometric mean of two
runs, the processes swapped between them (a fifth as many as A/B pairs, with their own A/A
control). Both sides then share the same seconds of
the same core, so the machine's drift cancels out of each ratio (its A/A stayed within
about 2 % in our trials, where the pairs' strayed up to 8 %).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from http.client import HTTPConnection
from pathlib import Path
from typing import TYPE_CHECKING, Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

import authscale  # noqa: E402

if TYPE_CHECKING:
    from tests.postgres import PostgresServer

PY = sys.executable
GATEWAY_BIN = str(Path(PY).parent / "pangolin-gateway")
PROXY_CORE = "1"  # every proxy under test
LOAD_CORE = "0"  # wrk and the upstream
APT_LINE = "apt-get install -y wrk nginx"
TABLE_PATH = "/v1/warehouse/namespaces/bench/tables/events"
TABLE = ("bench", "events")  # the resource TABLE_PATH names (its namespace, then the table)
CONFINED = "confined"  # the catalog with default_access "none": only grants count
GRANTS = 50  # held by the confined row's service user, one of them on TABLE
GRANTS_ROW = f"gateway, X-API-Key, {GRANTS} grants, default_access none"
PG_ROW = "gateway, X-API-Key, PostgreSQL store"
FA_ROW = "nginx + forward-auth (gateway decides)"
FA_CACHED_ROW = "nginx + forward-auth, decision cache"
ASSERTED_ROW = "gateway, X-API-Key, identity assertion"
# A route forward-auth decides (loadNamespace; the fast upstream answers every GET alike).
NAMESPACE_PATH = "/v1/warehouse/namespaces/bench"
FORWARD_AUTH_SECRET = "bench-forward-auth-secret-of-forty-chars!"
ROTATIONS = 20  # of one service user's key, through one replica (issue 13)
# What the README states for a change made through another replica: store.change_poll_seconds
# (0.5 s, the guarantee; NOTIFY is the fast path) plus one request.
REVOCATION_BOUND = 1.0
COLD_WARMUP = 50  # cold lookups per store before the measured ones (code paths, page caches)
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# -- processes ---------------------------------------------------------------------------------


class Procs:
    """Every child we start, stopped (process group) on the way out, whatever happens."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.sessions: set[int] = set()  # of other children (SeaweedFS), for own_ticks

    def own_sessions(self) -> set[int]:
        """Session ids of everything we started (each child leads its own session)."""
        return self.sessions | {proc.pid for proc in self.procs}

    def start(
        self, name: str, cmd: Sequence[str], *, core: str | None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        full = ["taskset", "-c", core, *cmd] if core is not None else list(cmd)
        log = open(self.logdir / f"{name}.log", "ab")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(
            full, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(
    url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with _OPENER.open(request, timeout=10) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read()


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> float:
    """Seconds from now until ``url`` answers 200 (polling every 2 ms)."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            if http(url)[0] == 200:
                return time.perf_counter() - started
        time.sleep(0.002)
    raise RuntimeError(f"{url} not ready after {timeout} s")


def _cpu_times() -> tuple[int, int]:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def own_ticks(sessions: set[int]) -> int:
    """CPU ticks (user + system, all threads) used so far by the processes of ``sessions``."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[3]) in sessions:  # field 6 (session); utime and stime are 14 and 15
            ticks += int(fields[11]) + int(fields[12])
    return ticks


@dataclasses.dataclass
class Quiet:
    """Share of all cores busy while none of our load ran, and the part of it that our own
    idle children (proxies waiting for their turn, the upstream) used."""

    share: float
    own: float
    waited: bool = False  # the machine was busy first


def busy_share(seconds: float = 1.0, sessions: frozenset[int] = frozenset()) -> Quiet:
    busy0, total0 = _cpu_times()
    own0 = own_ticks(set(sessions))
    time.sleep(seconds)
    busy1, total1 = _cpu_times()
    own1 = own_ticks(set(sessions))
    total = max(1, total1 - total0)
    return Quiet((busy1 - busy0) / total, max(0, own1 - own0) / total)


def wait_for_quiet(
    sessions: frozenset[int] = frozenset(), limit: float = 0.10, patience: float = 120.0
) -> Quiet:
    """Wait (up to ``patience`` s) until the machine is idle; the numbers mean nothing while
    something else competes for the two cores. Our idle children count too (whatever they do
    competes with the one under load), but they are idle: the wait shows their part."""
    started = time.monotonic()
    quiet = busy_share(sessions=sessions)
    while quiet.share > limit and time.monotonic() - started < patience:
        if time.monotonic() - started < 1.5:
            print(
                f"  machine busy ({quiet.share:.0%} of CPU used, {quiet.own:.0%} by our idle "
                "children); waiting ...",
                flush=True,
            )
        quiet = dataclasses.replace(busy_share(2.0, sessions), waited=True)
    return quiet


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- wrk ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    bad: int  # non-2xx/3xx answers plus socket errors


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        return float("nan")
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(
    url: str,
    *,
    connections: int,
    duration: float,
    headers: Sequence[str] = (),
    script: Path | None = None,
) -> Run:
    cmd = wrk_command(url, connections=connections, duration=duration, headers=headers)
    if script is not None:
        cmd[-1:-1] = ["-s", str(script)]
    return wrk_result(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def wrk_command(
    url: str, *, connections: int, duration: float, headers: Sequence[str] = ()
) -> list[str]:
    cmd = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", f"-d{duration}s"]
    cmd += ["--latency", "--timeout", "5s"]
    for header in headers:
        cmd += ["-H", header]
    return [*cmd, url]


def wrk_result(out: str) -> Run:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    bad = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if errors:
        bad += sum(int(g) for g in errors.groups())
    return Run(rps, _ms(lat.get("50", "")), _ms(lat.get("99", "")), bad)


def median_run(runs: Sequence[Run]) -> Run:
    """Each figure's own median over the rounds; ``bad`` is the total."""
    return Run(
        statistics.median(r.rps for r in runs),
        statistics.median(r.p50_ms for r in runs),
        statistics.median(r.p99_ms for r in runs),
        sum(r.bad for r in runs),
    )


def paired(a: Row, b: Row) -> float:
    """Median over the rounds of a's req/s ÷ b's in the same round: the two ran back to back,
    so a drift of the machine between rounds cancels out of each ratio."""
    return statistics.median(x.rps / y.rps for x, y in zip(a.c32s, b.c32s, strict=True))


def cpu_ratio(base: Row, row: Row) -> float:
    """How many of ``row``'s requests one core serves per request of ``base`` (CPU time)."""
    assert base.cpu is not None and row.cpu is not None
    return base.cpu / row.cpu


def spread(runs: Sequence[Run]) -> str:
    """min-max req/s over the rounds."""
    rates = [r.rps for r in runs]
    return f"{min(rates):,.0f}–{max(rates):,.0f}"


@dataclasses.dataclass
class Row:
    """One configuration: a c32 and a c1 run per round; ``c32`` and ``c1`` are the medians."""

    name: str
    c32s: list[Run] = dataclasses.field(default_factory=list)
    c1s: list[Run] = dataclasses.field(default_factory=list)
    # CPU time (user + system, every process and thread of the proxy) per request served, in
    # microseconds, of each round's c32 run: what a request costs the proxy, whatever else
    # the machine does at the time (throughput on a shared core also counts the neighbours).
    cpu_us: list[float] = dataclasses.field(default_factory=list)

    @property
    def cpu(self) -> float | None:
        return statistics.median(self.cpu_us) if self.cpu_us else None

    @property
    def c32(self) -> Run:
        return median_run(self.c32s)

    @property
    def c1(self) -> Run:
        return median_run(self.c1s)

    @property
    def bad(self) -> int:
        return sum(r.bad for r in self.c32s + self.c1s)


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.procs = Procs(tmp)
        self.background: list[Quiet] = []  # CPU use just before each measurement
        self.postgres: PostgresServer | None = None  # the run's server, unless --no-postgres

    def quiet(self) -> None:
        sessions = self.procs.own_sessions()
        if self.postgres is not None:
            sessions |= postgres_sessions(self.postgres)
        self.background.append(wait_for_quiet(frozenset(sessions)))

    def measure(
        self, row: Row, url: str, headers: Sequence[str] = (), session: int | None = None
    ) -> None:
        """One round of ``row``: wait for quiet, 1 s warm-up, c32 then c1 runs. ``session``:
        the proxy's session id (its pid), for its CPU time per request."""
        self.quiet()
        status, _ = http(url, headers=dict(h.split(": ", 1) for h in headers))
        if status != 200:
            raise RuntimeError(f"{row.name}: {url} answered {status}")
        wrk(url, connections=self.args.connections, duration=1, headers=headers)  # warm-up
        ticks = own_ticks({session}) if session is not None else 0
        c32 = wrk(
            url, connections=self.args.connections, duration=self.args.duration, headers=headers
        )
        if session is not None and c32.rps > 0:
            used = (own_ticks({session}) - ticks) / os.sysconf("SC_CLK_TCK")
            row.cpu_us.append(used / (c32.rps * self.args.duration) * 1e6)
        c1 = wrk(url, connections=1, duration=self.args.duration, headers=headers)
        row.c32s.append(c32)
        row.c1s.append(c1)
        print(
            f"  {len(row.c32s)}/{self.args.rounds} {row.name:<34} {c32.rps:>9.0f} req/s  "
            f"p50 {c32.p50_ms:.2f} ms  p99 {c32.p99_ms:.2f} ms | c1 p50 {c1.p50_ms:.3f} ms "
            f"p99 {c1.p99_ms:.3f} ms" + (f"  ({c32.bad + c1.bad} bad)" if c32.bad + c1.bad else ""),
            flush=True,
        )

    # -- components ----------------------------------------------------------------------------

    def start_fast_upstream(self) -> str:
        port = free_port()
        proc = self.procs.start(
            "upstream", [PY, str(BENCH / "upstream_fast.py"), str(port)], core=LOAD_CORE
        )
        url = f"http://127.0.0.1:{port}"
        wait_ready(url + "/v1/config", proc)
        return url

    def start_nginx(
        self, upstream: str, label: str, gateway: str = "", *, decision_cache: bool = False
    ) -> tuple[str, subprocess.Popen[bytes]]:
        """nginx, 1 worker: ``proxy_pass`` to ``upstream``; with ``gateway``, the shipped
        forward-auth template instead (deploy/nginx), deciding with that gateway, with its
        decision cache if asked."""
        port = free_port()
        prefix = self.tmp / f"nginx-{label}"
        prefix.mkdir()
        up = upstream.removeprefix("http://")
        site = f"""  upstream catalog {{ server {up}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://catalog;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}"""
        if gateway:
            from tests import nginx as shipped

            values = {
                "PANGOLIN_LISTEN": f"127.0.0.1:{port}", "PANGOLIN_CATALOG": up,
                "PANGOLIN_GATEWAY": gateway.removeprefix("http://"),
                "PANGOLIN_FORWARD_AUTH_SECRET": FORWARD_AUTH_SECRET,
                "PANGOLIN_DECISION_CACHE": "pangolin_decisions" if decision_cache else "off",
                "PANGOLIN_DECISION_CACHE_DIR": str(prefix / "decisions"),
            }  # fmt: skip
            site = shipped.render(shipped.FORWARD_AUTH_TEMPLATE, values)
            if decision_cache:
                site = shipped.render(shipped.DECISION_CACHE_TEMPLATE, values) + "\n" + site
        temps = "\n".join(
            f"  {kind}_temp_path {prefix}/{kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        conf = prefix / "nginx.conf"
        conf.write_text(f"""daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
{"user root;" if os.geteuid() == 0 else ""}
events {{ worker_connections 4096; }}
http {{
  access_log off;
{temps}
{site}
}}
""")
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        proc = self.procs.start(
            f"nginx-{label}",
            [nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
            core=PROXY_CORE,
        )
        url = f"http://127.0.0.1:{port}"
        wait_ready(url + "/v1/config" if gateway else url + TABLE_PATH, proc)
        return url, proc

    def start_minimal(self, upstream: str, label: str) -> tuple[str, subprocess.Popen[bytes]]:
        port = free_port()
        proc = self.procs.start(
            f"minimal-{label}",
            [PY, str(BENCH / "minimal_proxy.py"), str(port), upstream],
            core=PROXY_CORE,
        )
        url = f"http://127.0.0.1:{port}"
        wait_ready(url + TABLE_PATH, proc)
        return url, proc

    def gateway_config(
        self,
        label: str,
        catalogs: dict[str, str],
        extra: dict[str, str] | None = None,
        *,
        store_url: str = "",
    ) -> Path:
        """A store directory and config: ``catalogs`` maps name -> upstream, ``extra`` name ->
        more TOML for that catalog (its own keys, then any sub-tables); with ``store_url``
        the store is that PostgreSQL database instead of the directory's SQLite file (which
        then is never made: store.url wins)."""
        home = self.tmp / f"gw-{label}"
        home.mkdir()
        lines = [
            f'[store]\npath = "{home / "pangolin.db"}"\n'
            + (f'url = "{store_url}"\n' if store_url else "")
        ]
        for name, upstream in catalogs.items():
            lines.append(f'[catalogs.{name}]\nupstream = "{upstream}"\nwarehouse = "warehouse"\n')
            if extra and name in extra:
                lines[-1] += extra[name]
        config = home / "gateway.toml"
        config.write_text("\n".join(lines))
        out = subprocess.run(
            [GATEWAY_BIN, "init", "--config", str(config), "--json"],
            env=gateway_env(),
            capture_output=True,
            text=True,
            check=True,
        )
        (home / "root.json").write_text(out.stdout)
        return config

    def start_gateway(
        self,
        config: Path,
        label: str,
        extra: Sequence[str] = (),
        core: str | None = PROXY_CORE,
        *,
        noauth: bool = False,
        settings: dict[str, str] | None = None,
    ) -> tuple[str, subprocess.Popen[bytes], float]:
        """``pangolin-gateway serve``; with ``noauth``, the same app from bench/noauth_gateway.py,
        which also lets requests without a credential through (the "no client auth" row).
        ``settings``: ``PANGOLIN_*`` overrides of the config (the rest of the environment's
        are dropped), e.g. another forwarding client over the same config and store."""
        port = free_port()
        cmd = (
            [PY, str(BENCH / "noauth_gateway.py"), "--config", str(config), "--port", str(port)]
            if noauth
            else [GATEWAY_BIN, "serve", "--config", str(config), "--port", str(port), *extra]
        )
        if not noauth and "--workers" not in extra:
            cmd += ["--workers", "1"]  # the figures are per process unless a row says otherwise
        env = {**gateway_env(), **(settings or {})}
        proc = self.procs.start(f"gateway-{label}", cmd, core=core, env=env)
        url = f"http://127.0.0.1:{port}"
        startup = wait_ready(url + "/healthz", proc)
        return url, proc, startup


def gateway_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANGOLIN_")}
    return env


def root_key(config: Path) -> str:
    return str(json.loads((config.parent / "root.json").read_text())["api_key"])


def create_client(gw: str, config: Path) -> tuple[str, str]:
    """A TenantUser service user made through the management API: (id, key)."""
    status, body = http(
        gw + "/api/v1/service-users",
        data=json.dumps({"name": "bench-client", "role": "TenantUser"}).encode(),
        headers={"X-API-Key": root_key(config), "Content-Type": "application/json"},
    )
    if status != 201:
        raise RuntimeError(f"creating a service user: {status} {body[:200]!r}")
    answer = json.loads(body)
    return answer["service_user"]["id"], answer["api_key"]


def create_confined_client(store: Path, catalog: str, grants: int) -> tuple[str, str]:
    """A TenantUser service user holding ``grants`` read grants on ``catalog``, made directly
    in the store (before the gateway opens it: no management API for grants is relied on):
    read on ``TABLE`` (what the bench requests ask for) and on ``grants - 1`` other
    namespaces and tables, half of them beside ``TABLE`` in its namespace. (id, key)."""
    import asyncio

    from gateway.identity.grant_admin import GrantAdmin
    from gateway.identity.service_users import ServiceUserAdmin
    from gateway.store import SqliteStore

    others = grants - 1
    resources: list[tuple[str, ...]] = [(f"ns-{i:02d}",) for i in range(others - others // 2)]
    resources += [(TABLE[0], f"{TABLE[1]}-{i:02d}") for i in range(others // 2)]
    resources.append(TABLE)

    async def make() -> tuple[str, str]:
        async with SqliteStore(store) as db:
            made = await ServiceUserAdmin(db).create(name="bench-confined", actor="bench")
            access = GrantAdmin(db)
            for resource in resources:
                await access.grant(
                    made.user, catalog=catalog, resource=resource, action="read", actor="bench"
                )
            held = await access.effective(made.user.id)
            if len(held) != grants:
                raise RuntimeError(f"bench-confined holds {len(held)} grants, not {grants}")
            return made.user.id, made.api_key.plaintext()

    return asyncio.run(make())


def add_service_users(store: Path | str, n: int, prefix: str) -> list[str]:
    """``n`` TenantUser service users made in a store (a SQLite file, or a PostgreSQL URL)
    through the gateway's own ServiceUserAdmin, before a gateway opens it: the same rows on
    both engines. Their keys, in order."""
    import asyncio

    from gateway.identity.service_users import ServiceUserAdmin
    from gateway.settings import StoreSettings
    from gateway.store import make_store

    if isinstance(store, str):
        settings = StoreSettings(url=store)
    else:
        settings = StoreSettings(path=str(store))

    async def make() -> list[str]:
        async with make_store(settings) as db:
            admin = ServiceUserAdmin(db)
            keys = []
            for i in range(n):
                made = await admin.create(name=f"{prefix}-{i:05d}", actor="bench")
                keys.append(made.api_key.plaintext())
            return keys

    return asyncio.run(make())


# -- PostgreSQL --------------------------------------------------------------------------------


def _postmaster(server: PostgresServer) -> int:
    return int((server.data_dir / "postmaster.pid").read_text().split()[0])


def postgres_processes(server: PostgresServer) -> dict[int, int]:
    """pid -> session id of the server's processes: the postmaster and its children (each of
    which, backends included, leads a session of its own)."""
    postmaster = _postmaster(server)
    found = {postmaster: postmaster}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[1]) == postmaster:  # field 4, the parent; field 6 is the session
            found[int(stat.parent.name)] = int(fields[3])
    return found


def postgres_sessions(server: PostgresServer) -> set[int]:
    """The server's sessions, for own_ticks (what it uses while idle is our own use)."""
    return set(postgres_processes(server).values())


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """The run's PostgreSQL server: tests/postgres.py's PostgresServer (imported, not copied),
    every process of it pinned to the load generator's core (backends forked later inherit
    the postmaster's affinity). Each measurement gets a database of its own."""
    from tests.postgres import PostgresServer

    print("starting PostgreSQL (tests/postgres.py) ...", flush=True)
    with PostgresServer.start() as server:
        for pid in postgres_processes(server):
            subprocess.run(["taskset", "-a", "-cp", LOAD_CORE, str(pid)], capture_output=True)
        yield server


def postgres_version(server: PostgresServer) -> str:
    out = subprocess.run(
        [str(server.bin_dir / "postgres"), "--version"], capture_output=True, text=True
    ).stdout
    return out.strip() or "PostgreSQL"


def new_database(server: PostgresServer, name: str) -> str:
    """A fresh empty database on the run's server; its URL."""
    return server.url(server.sync(server.create_database(name)))


def get_token(gw: str, catalog: str, client_id: str, key: str) -> str:
    form = f"grant_type=client_credentials&client_id={client_id}&client_secret={key}&scope=catalog"
    status, body = http(
        gw + f"/v1/{catalog}/v1/oauth/tokens",
        data=form.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    if status != 200:
        raise RuntimeError(f"token endpoint: {status} {body[:200]!r}")
    return str(json.loads(body)["access_token"])


def lua_keys(path: Path, keys: Sequence[str]) -> Path:
    """A wrk script presenting ``keys`` in turn as X-API-Key."""
    items = ",".join(f'"{k}"' for k in keys)
    path.write_text(f"""local keys = {{{items}}}
local n, i = #keys, 0
request = function()
  i = i % n + 1
  return wrk.format("GET", nil, {{["X-API-Key"] = keys[i]}}, nil)
end
""")
    return path


def lua_token_post(path: Path, client_id: str, key: str) -> Path:
    form = f"grant_type=client_credentials&client_id={client_id}&client_secret={key}&scope=catalog"
    path.write_text(f"""wrk.method = "POST"
wrk.body = "{form}"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
""")
    return path


# -- suites ------------------------------------------------------------------------------------


def proxy_suite(
    bench: Bench,
    label: str,
    upstream: str,
    bulk_users: int,
    *,
    tokens: bool = False,
    pairs: int = 0,
    grants: bool = False,
    postgres: PostgresServer | None = None,
) -> dict[str, Any]:
    """The seven configurations against one upstream (the last, the gateway forwarding with
    aiohttp's client, is the control for the lean one), and with ``grants`` an eighth: a
    service user with ``GRANTS`` grants on the ``CONFINED`` catalog, default_access "none";
    with ``postgres`` one more, ``PG_ROW``: the X-API-Key row from a second gateway of the
    same config (and as many service users) but with store.url naming a database there;
    ``--rounds`` interleaved rounds (every proxy stays up, idle but for its turn); with
    ``tokens`` the token endpoint too, after the bearer row in each round. Returns the rows,
    the token runs and the gateway details."""
    nginx, nginx_proc = bench.start_nginx(upstream, label)
    minimal, minimal_proc = bench.start_minimal(upstream, label)
    catalogs = {"default": upstream, "open": upstream, "asserted": upstream}
    if grants:
        catalogs[CONFINED] = upstream
    # Only grants count there. The read-only upstream credential is the setup for callers
    # that may only read: their requests go upstream with it, and their table answers come
    # back as they are, as the X-API-Key row's do (without it, the gateway would take the
    # storage configuration out of every loadTable answer: another answer, another cost).
    extra = {
        CONFINED: f'default_access = "none"\n\n[catalogs.{CONFINED}.upstream_auth_read]\n'
        'type = "bearer"\ntoken = "bench-read-only"\n',
        "asserted": "identity_assertion = true\n",
    }
    config = bench.gateway_config(label, catalogs, extra)
    # (A table after the catalogs': TOML allows it anywhere at the top level.)
    config.write_text(
        config.read_text()
        + f'\n[forward_auth]\nsecret = "{FORWARD_AUTH_SECRET}"\ncache_seconds = 5\n'
    )
    pg_config: Path | None = None
    if postgres is not None:
        pg_url = new_database(postgres, f"bench_{label}")
        pg_config = bench.gateway_config(f"{label}-pg", catalogs, extra, store_url=pg_url)
        # As many service users as the SQLite store will hold (root and the client aside).
        add_service_users(pg_url, bulk_users + (1 if grants else 0), "bench")
    if bulk_users:
        authscale.populate(config.parent / "pangolin.db", bulk_users)
    confined: tuple[str, str] | None = None
    if grants:
        # Made in the store before the gateway starts, so it starts as it would in production.
        confined = create_confined_client(config.parent / "pangolin.db", CONFINED, GRANTS)
    gw, proc, startup = bench.start_gateway(config, label, noauth=True)
    # The control: the same config and store (so the same key), forwarding with aiohttp's
    # client instead of the lean one (catalogs.<name>.client, see gateway/proxy/transport.py).
    aio, aio_proc, _ = bench.start_gateway(
        config,
        f"{label}-aiohttp",
        noauth=True,  # the same app as the rows above: only the forwarding client differs
        settings={f"PANGOLIN_CATALOGS__{name.upper()}__CLIENT": "aiohttp" for name in catalogs},
    )
    twin, twin_proc, twin_pid = "", None, 0
    if pairs:
        # The co-scheduled estimator's second process (co_scheduled_ratios): the very app of
        # the rows above, over the same config and store.
        twin, twin_proc, _ = bench.start_gateway(config, f"{label}-twin", noauth=True)
        twin_pid = twin_proc.pid
    pg_gw, pg_proc = "", None
    if pg_config is not None:
        # The same app as the X-API-Key row's (noauth_gateway.py): only the store differs.
        pg_gw, pg_proc, _ = bench.start_gateway(pg_config, f"{label}-pg", noauth=True)
    client_id, key = create_client(gw, config)
    token = get_token(gw, "default", client_id, key)
    fa_nginx, fa_nginx_proc = bench.start_nginx(upstream, f"{label}-fa", gateway=gw)
    cached_nginx, cached_nginx_proc = bench.start_nginx(
        upstream, f"{label}-fa-cached", gateway=gw, decision_cache=True
    )
    configurations: list[tuple[str, str, list[str], int | None]] = [
        ("upstream direct", upstream + TABLE_PATH, [], None),
        ("nginx proxy_pass (1 worker)", nginx + TABLE_PATH, [], nginx_proc.pid),
        ("minimal aiohttp proxy", minimal + TABLE_PATH, [], minimal_proc.pid),
        ("gateway, no client auth (bench)", gw + "/v1/open" + TABLE_PATH, [], proc.pid),
        (
            "gateway, X-API-Key",
            gw + "/v1/default" + TABLE_PATH,
            [f"X-API-Key: {key}"],
            proc.pid,
        ),
        (
            "gateway, bearer token",
            gw + "/v1/default" + TABLE_PATH,
            [f"Authorization: Bearer {token}"],
            proc.pid,
        ),
        (
            "gateway, aiohttp client",
            aio + "/v1/default" + TABLE_PATH,
            [f"X-API-Key: {key}"],
            aio_proc.pid,
        ),
    ]
    same: bool | None = None
    if confined is not None:
        granted = (gw + f"/v1/{CONFINED}" + TABLE_PATH, [f"X-API-Key: {confined[1]}"])
        same = same_answer((gw + "/v1/default" + TABLE_PATH, [f"X-API-Key: {key}"]), granted)
        configurations.append((GRANTS_ROW, *granted, proc.pid))
    if pg_proc is not None and pg_config is not None:
        _, pg_key = create_client(pg_gw, pg_config)
        configurations.append(
            (PG_ROW, pg_gw + "/v1/default" + TABLE_PATH, [f"X-API-Key: {pg_key}"], pg_proc.pid)
        )
    # The gateway's CPU per request of this row is its CPU per forward-auth decision.
    configurations.append((FA_ROW, fa_nginx + NAMESPACE_PATH, [f"X-API-Key: {key}"], proc.pid))
    configurations.append((FA_CACHED_ROW, cached_nginx + NAMESPACE_PATH, [f"X-API-Key: {key}"],
                           cached_nginx_proc.pid))  # fmt: skip
    configurations.append(
        (ASSERTED_ROW, gw + "/v1/asserted" + TABLE_PATH, [f"X-API-Key: {key}"], proc.pid)
    )
    rows = [Row(name) for name, _, _, _ in configurations]
    token_runs: list[Run] = []
    for round_index in range(bench.args.rounds):
        # A new order each round (seeded: the same on every run of the script), so that no
        # configuration always follows the same one: position effects become noise, not bias.
        order = list(zip(rows, configurations, strict=True))
        random.Random(round_index).shuffle(order)
        for row, (_, url, headers, session) in order:
            bench.measure(row, url, headers, session)
        if tokens:
            token_runs.append(token_rate(bench, gw, client_id, key, len(token_runs) + 1))
    ab: dict[str, list[float]] = {}
    co: dict[str, CoScheduled] = {}
    if pairs:
        by_name = {name: (url, headers) for name, url, headers, _ in configurations}
        noauth = by_name["gateway, no client auth (bench)"]
        keyed = by_name["gateway, X-API-Key"]
        pairings = [
            ("noauth/noauth", noauth, noauth),
            ("key/noauth", keyed, noauth),
            ("bearer/noauth", by_name["gateway, bearer token"], noauth),
            ("key/minimal", keyed, by_name["minimal aiohttp proxy"]),
        ]
        if GRANTS_ROW in by_name:
            pairings.append(("grants/key", by_name[GRANTS_ROW], keyed))
        if PG_ROW in by_name:
            pairings.append(("pg/key", by_name[PG_ROW], keyed))
        plain_nginx = by_name["nginx proxy_pass (1 worker)"]
        pairings.append(("fa/nginx", by_name[FA_ROW], plain_nginx))
        pairings.append(("fa-cached/nginx", by_name[FA_CACHED_ROW], plain_nginx))
        pairings.append(("assert/key", by_name[ASSERTED_ROW], keyed))
        for label_, a, b in pairings:
            ab[label_] = ab_ratios(bench, a, b, pairs)
            print(f"  A/B {label_}: median {statistics.median(ab[label_]):.2f}", flush=True)
        # The authentication targets again, co-scheduled on two processes (a fifth as many
        # swapped pairs as A/B pairs: each is two 3 s runs, and their ratios spread far less).
        for label_, x, y in pairings[:3]:  # noauth/noauth, key/noauth, bearer/noauth
            x_path, y_path = (x[0].removeprefix(gw), x[1]), (y[0].removeprefix(gw), y[1])
            co[label_] = found = co_scheduled_ratios(
                bench, x_path, y_path, ((gw, proc.pid), (twin, twin_pid)), max(3, pairs // 5)
            )
            print(
                f"  co-scheduled {label_}: median {statistics.median(found.rps):.3f}, "
                f"by CPU time per request {statistics.median(found.cpu):.3f}",
                flush=True,
            )
    bench.procs.stop(nginx_proc)
    bench.procs.stop(fa_nginx_proc)
    bench.procs.stop(cached_nginx_proc)
    bench.procs.stop(minimal_proc)
    bench.procs.stop(aio_proc)
    if twin_proc is not None:
        bench.procs.stop(twin_proc)
    if pg_proc is not None:
        bench.procs.stop(pg_proc)
    return {
        "rows": rows,
        "ab": ab,
        "co": co,
        "tokens": token_runs,
        "gateway": gw,
        "proc": proc,
        "startup": startup,
        "config": config,
        "client": (client_id, key),
        "confined": confined,
        "same_answer": same,
    }


def same_answer(a: tuple[str, Sequence[str]], b: tuple[str, Sequence[str]]) -> bool:
    """Whether a and b answer 200 with the same bytes (the rows then differ only in what
    the gateway does, not in what it sends back). Raises unless both answer 200: a 403 for
    the grants row means its grants are not set up right."""
    answers = []
    for url, headers in (a, b):
        status, body = http(url, headers=dict(h.split(": ", 1) for h in headers))
        if status != 200:
            raise RuntimeError(f"{url} answered {status}: {body[:200]!r}")
        answers.append(body)
    if answers[0] != answers[1]:
        print(
            f"  note: the {GRANTS_ROW!r} answer ({len(answers[1])} bytes) differs from the "
            f"X-API-Key one ({len(answers[0])} bytes)",
            flush=True,
        )
    return answers[0] == answers[1]


def ab_ratios(
    bench: Bench, a: tuple[str, Sequence[str]], b: tuple[str, Sequence[str]], pairs: int
) -> list[float]:
    """``pairs`` back-to-back 1 s runs of a and b (c32; which goes first alternates): the
    req/s ratio a÷b of each pair. Short alternations see the machine in the same state, so
    their median is far steadier than a ratio of separate medians on a noisy shared host."""
    bench.quiet()
    ratios = []
    for i in range(pairs):
        first, second = (a, b) if i % 2 == 0 else (b, a)
        one = wrk(first[0], connections=bench.args.connections, duration=1, headers=first[1])
        two = wrk(second[0], connections=bench.args.connections, duration=1, headers=second[1])
        ra, rb = (one, two) if i % 2 == 0 else (two, one)
        ratios.append(ra.rps / rb.rps)
    return ratios


@dataclasses.dataclass
class CoScheduled:
    """What co_scheduled_ratios found: per swapped pair, a÷b by req/s and by CPU time per
    request (b's µs per request ÷ a's)."""

    rps: list[float]
    cpu: list[float]


def co_scheduled_ratios(
    bench: Bench,
    a: tuple[str, Sequence[str]],
    b: tuple[str, Sequence[str]],
    gateways: tuple[tuple[str, int], tuple[str, int]],
    swaps: int,
) -> CoScheduled:
    """``swaps`` pairs of co-scheduled runs: a's load on one of two identical gateway
    processes and b's on the other, at the same time (two wrk -c32, 3 s), then the same
    with the processes swapped; the ratio a÷b of each pair (the geometric mean of its two
    runs' ratios), by req/s and by CPU time per request. ``a`` and ``b`` are (path,
    headers); ``gateways`` (URL, session id) of each process.

    Both processes share the proxy core, so the kernel's fair scheduler gives each half of
    it over the very same seconds: whatever the shared machine does meanwhile (a neighbour,
    a frequency change) slows both sides alike and cancels out of the ratio, which two runs
    one after the other, however close, cannot promise. What is left is what a request of a
    costs against one of b, as throughput on one core, and as each process's own CPU time
    (from its ticks: the two agree while both stay busy, and the CPU ratio still holds if
    the scheduler favours one). The swap cancels what differs between the two processes
    (one has served every row of the rounds, the other is new: their A/A ratio, unswapped,
    was up to 5 % from 1)."""
    bench.quiet()
    rps, cpu = [], []
    tick = os.sysconf("SC_CLK_TCK")
    for i in range(2 * swaps + 2):  # the first two warm both processes up and are dropped
        sides = gateways if i % 2 == 0 else gateways[::-1]
        before = [own_ticks({session}) for _, session in sides]
        procs = [
            subprocess.Popen(
                wrk_command(
                    gw + path, connections=bench.args.connections, duration=3, headers=headers
                ),
                stdout=subprocess.PIPE,
                text=True,
            )
            for (gw, _), (path, headers) in zip(sides, (a, b), strict=True)
        ]
        ra, rb = (wrk_result(proc.communicate()[0]) for proc in procs)
        used = [
            (own_ticks({session}) - ticks) / tick
            for (_, session), ticks in zip(sides, before, strict=True)
        ]
        if ra.bad or rb.bad:
            raise RuntimeError(f"co-scheduled {a[0]} vs {b[0]}: {ra.bad + rb.bad} bad answers")
        rps.append(ra.rps / rb.rps)
        # CPU per request ratio b÷a: (used_b / requests_b) / (used_a / requests_a).
        cpu.append((used[1] / rb.rps) / (used[0] / ra.rps))
    return CoScheduled(
        rps=[math.sqrt(x * y) for x, y in zip(rps[2::2], rps[3::2], strict=True)],
        cpu=[math.sqrt(x * y) for x, y in zip(cpu[2::2], cpu[3::2], strict=True)],
    )


def quartiles(values: Sequence[float]) -> str:
    if len(values) < 2:
        return ""
    q = statistics.quantiles(values, n=4)
    return f"{q[0]:.2f}–{q[2]:.2f}"


def token_rate(bench: Bench, gw: str, client_id: str, key: str, round_no: int) -> Run:
    """One round of the token endpoint: wrk -c32 POSTing client_credentials (1 s warm-up)."""
    script = lua_token_post(bench.tmp / "token.lua", client_id, key)
    url = gw + "/v1/default/v1/oauth/tokens"
    bench.quiet()
    wrk(url, connections=bench.args.connections, duration=1, script=script)
    run = wrk(url, connections=bench.args.connections, duration=bench.args.duration, script=script)
    print(
        f"  {round_no}/{bench.args.rounds} {'token endpoint':<34} {run.rps:>9.0f} tokens/s  "
        f"p50 {run.p50_ms:.2f} ms  p99 {run.p99_ms:.2f} ms"
        + (f"  ({run.bad} bad)" if run.bad else ""),
        flush=True,
    )
    return run


def profile(bench: Bench, gw: str, pid: int, key: str) -> list[str]:
    """py-spy (raw collapsed stacks) of the gateway under the X-API-Key load."""
    pyspy = shutil.which("py-spy") or os.environ.get("PYSPY") or ""
    if not pyspy or not Path(pyspy).exists():
        return ["(py-spy not found: `pip install py-spy` or set PYSPY=/path/to/py-spy)"]
    out = bench.tmp / "profile.txt"
    spy = subprocess.Popen(
        [
            pyspy,
            "record",
            "-p",
            str(pid),
            "-d",
            str(bench.args.duration + 1),
            "-r",
            "250",
            "-f",
            "raw",
            "-o",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    wrk(
        gw + "/v1/default" + TABLE_PATH,
        connections=bench.args.connections,
        duration=bench.args.duration,
        headers=[f"X-API-Key: {key}"],
    )
    spy.wait(60)
    return summarize_profile(out)


# The main thread's fixed chain from the console script down to the event loop.
_ROOT_FRAMES = re.compile(
    r"\((click/|pangolin-gateway\)|gateway/cli\.py|gateway/serve/runner\.py|gateway/serve/workers\.py)"
    r"|^(run_app|run_forever|run_until_complete|_run_once|Handle\._run|run|main) "
)


def summarize_profile(path: Path, top: int = 18) -> list[str]:
    if not path.exists():
        return ["(py-spy produced no profile)"]
    total = 0
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [re.sub(r":\d+\)$", ")", f.strip()) for f in stack.split(";") if f.strip()]
        frames = [
            re.sub(r"\(/.*?/site-packages/", "(", f).replace(str(ROOT) + "/", "") for f in frames
        ]
        total += n
        frames = [f for f in frames if not _ROOT_FRAMES.search(f)] or ["(event loop: idle/poll)"]
        for frame in set(frames):
            inclusive[frame] += n
        if frames:
            own[frames[-1]] += n
    if not total:
        return ["(empty profile)"]
    lines = [
        f"{total} samples at 250 Hz, all threads (aiosqlite's worker thread included). "
        "Inclusive (share of samples with the function on the stack):"
    ]
    lines += [
        f"  {100 * n / total:5.1f}%  {f}"
        for f, n in inclusive.most_common(top)
        if 100 * n / total < 99.5
    ]
    lines.append("Self (leaf frame):")
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    return lines


def scale_suite(bench: Bench, users: int, upstream: str) -> list[dict[str, Any]]:
    """Start-up, RSS and authentication latency with a small and a large store: both
    gateways up at once, measured in ``--rounds`` interleaved rounds (small, large, ...)."""
    results: list[dict[str, Any]] = []
    for n in (100, users):
        label = f"users{n}"
        config = bench.gateway_config(label, {"default": upstream})
        store = config.parent / "pangolin.db"
        print(f"  populating {n:,} service users ...", flush=True)
        seconds = authscale.populate(store, n)
        inproc = json.loads(
            subprocess.run(
                [
                    "taskset",
                    "-c",
                    PROXY_CORE,
                    PY,
                    str(BENCH / "authscale.py"),
                    "measure",
                    str(store),
                    str(n),
                    "3000",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        results.append(
            {"users": n, "populate_s": seconds, "store": store, "config": config, "inproc": inproc}
        )
    for s in results:
        gw, proc, startup = bench.start_gateway(s["config"], f"users{s['users']}")
        s.update(
            url=gw + "/v1/default" + TABLE_PATH,
            proc=proc,
            startup_s=startup,
            rss_idle_mb=rss_mb(proc.pid),
            single=Row(f"gateway X-API-Key, {s['users']:,} users"),
            many=[],
            distinct=min(s["users"], 20_000),
        )
    for r in range(bench.args.rounds):
        for s in results:
            n, distinct = s["users"], s["distinct"]
            key = authscale.key_for(n // 2).plaintext()
            bench.measure(s["single"], s["url"], [f"X-API-Key: {key}"])
            # Each round cycles through keys of its own (disjoint from the other rounds' when
            # the store is large enough), so a round meets keys the gateway has not cached.
            step = n // distinct
            script = lua_keys(
                bench.tmp / f"keys{n}-{r}.lua",
                [authscale.key_for((i * step + r % step) % n).plaintext() for i in range(distinct)],
            )
            bench.quiet()
            many = wrk(
                s["url"],
                connections=bench.args.connections,
                duration=bench.args.duration,
                script=script,
            )
            s["many"].append(many)
            print(
                f"  {r + 1}/{bench.args.rounds} {f'{distinct:,}-key cycle, {n:,} users':<34} "
                f"{many.rps:>9.0f} req/s  p50 {many.p50_ms:.2f} ms  p99 {many.p99_ms:.2f} ms"
                + (f"  ({many.bad} bad)" if many.bad else ""),
                flush=True,
            )
    for s in results:
        proc = s.pop("proc")
        s["rss_after_mb"] = rss_mb(proc.pid)
        bench.procs.stop(proc)
        s["store_mb"] = (
            sum(p.stat().st_size for p in s["store"].parent.glob("pangolin.db*")) / 2**20
        )
        many = s["many"] = median_run(s["many"])
        inproc = s["inproc"]
        print(
            f"  {s['users']:,} users: populate {s['populate_s']:.1f} s, store "
            f"{s['store_mb']:.0f} MB, start-up {s['startup_s']:.2f} s, RSS "
            f"{s['rss_idle_mb']:.0f} -> {s['rss_after_mb']:.0f} MB, cold auth p50/p99 "
            f"{inproc['cold']['p50_us']:.0f}/{inproc['cold']['p99_us']:.0f} us, "
            f"{s['distinct']:,} keys c{bench.args.connections}: median {many.rps:.0f} req/s "
            f"p99 {many.p99_ms:.2f} ms ({many.bad} bad)",
            flush=True,
        )
    return results


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def nearest_rank(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank, as authscale's percentiles)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed_get(conn: HTTPConnection, path: str, key: str) -> tuple[int, float]:
    """One GET with ``key`` on a keep-alive connection: (status, seconds to the whole answer)."""
    began = time.perf_counter()
    conn.request("GET", path, headers={"X-API-Key": key})
    response = conn.getresponse()
    response.read()
    return response.status, time.perf_counter() - began


def cold_lookups(bench: Bench, upstream: str, postgres: PostgresServer) -> dict[str, Any]:
    """The first request of each of ``--cold-keys`` service users, on SQLite and on
    PostgreSQL: every key is used once, so the gateway's caches miss and it reads the store
    (then the same key once more: the cached path, for the difference). Two fresh ``serve``
    gateways (the same config but the store), each store holding ``COLD_WARMUP`` + N service
    users made before it started; one keep-alive connection to each, the client pinned to
    core 0 (the gateways to core 1); the two alternate key by key (which goes first
    alternating), after ``COLD_WARMUP`` keys each that are not counted."""
    n = bench.args.cold_keys
    catalogs = {"default": upstream}
    sqlite_config = bench.gateway_config("cold-sqlite", catalogs)
    pg_url = new_database(postgres, "bench_cold")
    pg_config = bench.gateway_config("cold-pg", catalogs, store_url=pg_url)
    print(f"  making {COLD_WARMUP + n} service users in each store ...", flush=True)
    stores: dict[str, tuple[Path, Path | str]] = {
        "SQLite": (sqlite_config, sqlite_config.parent / "pangolin.db"),
        "PostgreSQL": (pg_config, pg_url),
    }
    keys = {
        name: add_service_users(where, COLD_WARMUP + n, "cold")
        for name, (_, where) in stores.items()
    }
    started = {
        name: bench.start_gateway(config, f"cold-{name.lower()}")
        for name, (config, _) in stores.items()
    }
    conns = {
        name: HTTPConnection("127.0.0.1", _port(url), timeout=10)
        for name, (url, _, _) in started.items()
    }
    samples: dict[str, dict[str, list[float]]] = {
        name: {"cold": [], "cached": []} for name in stores
    }
    path = "/v1/default" + TABLE_PATH
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    try:
        for i in range(COLD_WARMUP + n):
            if i == COLD_WARMUP:
                bench.quiet()
            names = list(stores) if i % 2 == 0 else list(reversed(stores))
            for name in names:
                key = keys[name][i]
                cold = timed_get(conns[name], path, key)
                cached = timed_get(conns[name], path, key)
                if cold[0] != 200 or cached[0] != 200:
                    raise RuntimeError(
                        f"cold lookup on {name}: answered {cold[0]}, then {cached[0]}"
                    )
                if i >= COLD_WARMUP:
                    samples[name]["cold"].append(cold[1])
                    samples[name]["cached"].append(cached[1])
    finally:
        os.sched_setaffinity(0, affinity)
        for conn in conns.values():
            conn.close()
        for _, proc, _ in started.values():
            bench.procs.stop(proc)
    results: dict[str, Any] = {"keys": n}
    for name, got in samples.items():
        figures = {
            f"{kind}_{q}_ms": nearest_rank(values, quantile) * 1e3
            for kind, values in got.items()
            for q, quantile in (("p50", 0.50), ("p99", 0.99))
        }
        results[name] = figures
        print(
            f"  {name}: cold p50 {figures['cold_p50_ms']:.3f} ms"
            f" p99 {figures['cold_p99_ms']:.3f} ms"
            f" | cached p50 {figures['cached_p50_ms']:.3f} ms"
            f" p99 {figures['cached_p99_ms']:.3f} ms ({n} keys)",
            flush=True,
        )
    return results


def revocation_lag(bench: Bench, upstream: str, postgres: PostgresServer) -> dict[str, Any]:
    """Two ``serve`` replicas, A and B (unpinned), on one fresh database; ``ROTATIONS``
    rotations of one service user's key through A's management API. Before each, both accept
    (and so cache) the current key; after it, B is asked with the old key on a fresh
    connection each time, as fast as it answers, until it refuses it (401). The lag is
    measured from just before the rotate request (as tests/process/test_replicas_postgres.py
    does: an upper bound on the lag after the commit) and from A's answer to it."""
    url = new_database(postgres, "bench_replicas")
    config = bench.gateway_config("replicas", {"default": upstream}, store_url=url)
    a, a_proc, _ = bench.start_gateway(config, "replica-a", core=None)
    b, b_proc, _ = bench.start_gateway(config, "replica-b", core=None)
    user_id, key = create_client(a, config)
    root = root_key(config)
    path = "/v1/default" + TABLE_PATH
    from_request: list[float] = []
    from_answer: list[float] = []
    try:
        bench.quiet()
        for _ in range(ROTATIONS):
            for name, gw in (("A", a), ("B", b)):
                status = http(gw + path, headers={"X-API-Key": key})[0]
                if status != 200:
                    raise RuntimeError(f"replica {name} answered {status} to the current key")
            began = time.perf_counter()
            status, body = http(
                a + f"/api/v1/service-users/{user_id}/rotate", data=b"", headers={"X-API-Key": root}
            )
            answered = time.perf_counter()
            if status != 200:
                raise RuntimeError(f"rotate through A: {status} {body[:200]!r}")
            old, key = key, json.loads(body)["api_key"]
            while True:
                status = http(b + path, headers={"X-API-Key": old})[0]
                refused = time.perf_counter()
                if status == 401:
                    break
                if status != 200:
                    raise RuntimeError(f"replica B answered {status} to the old key")
                if refused - began > 10 * REVOCATION_BOUND:
                    raise RuntimeError(
                        f"replica B still accepts the old key after {refused - began:.1f} s"
                    )
            from_request.append(refused - began)
            from_answer.append(refused - answered)
            # Asked after B's lag was taken, so that it does not add to it.
            if http(a + path, headers={"X-API-Key": old})[0] != 401:
                raise RuntimeError("replica A accepts the old key after its own rotation")
    finally:
        bench.procs.stop(a_proc)
        bench.procs.stop(b_proc)
    result = {
        "p50_ms": statistics.median(from_request) * 1e3,
        "max_ms": max(from_request) * 1e3,
        "after_answer_p50_ms": statistics.median(from_answer) * 1e3,
        "after_answer_max_ms": max(from_answer) * 1e3,
    }
    print(
        f"  {ROTATIONS} rotations through A, old key refused by B: p50 {result['p50_ms']:.1f} ms, "
        f"max {result['max_ms']:.1f} ms (after A's answer: p50 "
        f"{result['after_answer_p50_ms']:.1f} ms, max {result['after_answer_max_ms']:.1f} ms)",
        flush=True,
    )
    return result


@contextlib.contextmanager
def seaweed_upstream(tmp: Path, sessions: set[int]) -> Iterator[str]:
    """A local SeaweedFS with the bench table; its session joins ``sessions`` meanwhile."""
    from gateway.demo.seaweedfs import SeaweedFS, free_ports

    server = SeaweedFS(
        tmp / "seaweed",
        ports=free_ports(),
        access_key=None,
        secret_key=None,
        table_bucket="warehouse",
    )
    with server:
        assert server.pid is not None
        sessions.add(server.pid)  # weed leads its own session
        # SeaweedFS (all its threads) shares the load generator's core, like the fast upstream.
        subprocess.run(
            ["taskset", "-a", "-cp", LOAD_CORE, str(server.pid)], capture_output=True, check=True
        )
        base = server.iceberg_url
        status, body = http(
            base + "/v1/warehouse/namespaces",
            data=json.dumps({"namespace": ["bench"]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        if status not in (200, 409):
            raise RuntimeError(f"SeaweedFS create namespace: {status} {body[:300]!r}")
        schema = {
            "type": "struct",
            "schema-id": 0,
            "fields": [
                {"id": 1, "name": "id", "required": True, "type": "long"},
                {"id": 2, "name": "ts", "required": False, "type": "timestamptz"},
                {"id": 3, "name": "kind", "required": False, "type": "string"},
            ],
        }
        status, body = http(
            base + "/v1/warehouse/namespaces/bench/tables",
            data=json.dumps({"name": "events", "schema": schema}).encode(),
            headers={"Content-Type": "application/json"},
        )
        if status not in (200, 409):
            raise RuntimeError(f"SeaweedFS create table: {status} {body[:300]!r}")
        try:
            yield base
        finally:
            sessions.discard(server.pid)


# -- report ------------------------------------------------------------------------------------


def machine() -> list[str]:
    import importlib.metadata

    import aiohttp
    from minimal_proxy import new_loop

    from gateway.serve.serving import new_event_loop

    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    loops = []
    for factory in (new_event_loop, new_loop):
        loop = factory()
        loops.append(type(loop).__module__.split(".")[0])
        loop.close()
    try:
        uvloop = f"uvloop {importlib.metadata.version('uvloop')} installed"
    except importlib.metadata.PackageNotFoundError:
        uvloop = "no uvloop"
    loop_line = (
        f"event loop: {loops[0]} in the gateway (serve.serving.new_event_loop), {loops[1]} in the "
        "minimal proxy (same rule: uvloop when importable), fast upstream likewise"
    )
    head = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True
    ).stdout.strip()
    wrk_v = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
    nginx_v = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    return [
        f"- {platform.node() or 'host'}: nproc {os.cpu_count()}, CPU {cpu}, {platform.platform()}",
        f"- Python {platform.python_version()}, aiohttp {aiohttp.__version__}, {uvloop}; "
        + loop_line,
        f"- {(wrk_v.splitlines() or ['wrk'])[0].split(' [')[0]}, {nginx_v}",
        f"- gateway under test: the working tree at {head or 'unknown'}"
        + (" (with uncommitted changes)" if head.endswith("-dirty") else ""),
    ]


def table(rows: list[Row], base: Row, minimal: Row, nginx: Row, c: int) -> list[str]:
    """Medians over the rounds; every ratio is one of medians."""
    out = [
        f"| configuration | req/s (c{c}) | min–max req/s | CPU µs/req | p50 ms | p99 ms "
        "| c1 p50 ms | c1 p99 ms | × direct | × minimal | × nginx |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        c32, c1 = r.c32, r.c1
        cpu = f"{r.cpu:.0f}" if r.cpu is not None else "–"
        out.append(
            f"| {r.name} | {c32.rps:,.0f} | {spread(r.c32s)} | {cpu} | {c32.p50_ms:.2f} "
            f"| {c32.p99_ms:.2f} | {c1.p50_ms:.3f} | {c1.p99_ms:.3f} "
            f"| {c32.rps / base.c32.rps:.2f} | {c32.rps / minimal.c32.rps:.2f} "
            f"| {c32.rps / nginx.c32.rps:.2f} |" + (f" ⚠ {r.bad} non-2xx/errors" if r.bad else "")
        )
    return out


def rounds_table(rows: list[Row], c: int) -> list[str]:
    """req/s (c32) of every round, and the spread (max - min) relative to the median."""
    n = max(len(r.c32s) for r in rows)
    out = [
        f"| req/s (c{c}) per round | " + " | ".join(f"{i + 1}" for i in range(n)) + " | spread |",
        "|---|" + "---:|" * (n + 1),
    ]
    for r in rows:
        rates = [run.rps for run in r.c32s]
        out.append(
            f"| {r.name} | "
            + " | ".join(f"{rate:,.0f}" for rate in rates)
            + f" | {(max(rates) - min(rates)) / r.c32.rps:.0%} |"
        )
    return out


def co_rows(co: dict[str, CoScheduled]) -> list[str]:
    """The co-scheduled estimates of the authentication targets (co_scheduled_ratios), by
    req/s and by CPU time per request, with their own A/A control; none if they did not run."""
    if not co:
        return []

    def shown(name: str, by: str) -> tuple[float, str]:
        values = getattr(co[name], by)
        return statistics.median(values), quartiles(values)

    return [
        target("X-API-Key ÷ no-auth, co-scheduled (req/s)", *shown("key/noauth", "rps"), 0.95),
        target("bearer ÷ no-auth, co-scheduled (req/s)", *shown("bearer/noauth", "rps"), 0.95),
        "| A/A control, co-scheduled: no-auth ÷ no-auth | {:.3f} ({}) | (report) | |".format(
            *shown("noauth/noauth", "rps")
        ),
        target(
            "X-API-Key ÷ no-auth, co-scheduled, by CPU time per request (no-auth's µs ÷ "
            "X-API-Key's)",
            *shown("key/noauth", "cpu"),
            0.95,
        ),  # fmt: skip
        target(
            "bearer ÷ no-auth, co-scheduled, by CPU time per request",
            *shown("bearer/noauth", "cpu"),
            0.95,
        ),  # fmt: skip
        "| A/A control, co-scheduled, by CPU time per request | {:.3f} ({}) | (report) | |".format(
            *shown("noauth/noauth", "cpu")
        ),
    ]


def target(
    label: str,
    value: float,
    note: str | float,
    goal: float | None = None,
    *,
    higher: bool = True,
    fmt: str = ".2f",
) -> str:
    """A target row; ``note`` (a spread shown after the value) may be left out."""
    if goal is None:
        note, goal = "", float(note)
    met = value >= goal if higher else value <= goal
    sign = "≥" if higher else "≤"
    shown = f"{value:{fmt}}" + (f" ({note})" if note else "")
    return f"| {label} | {shown} | {sign} {goal:{fmt}} | {'met' if met else 'MISSED'} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds", type=int, default=5, help="interleaved rounds; tables show medians"
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=None,
        help="A/B pairs of 1 s runs behind each target ratio (31; 15 with --quick; 0: ratios "
        "of round medians)",
    )
    parser.add_argument(
        "--duration", type=int, default=None, help="seconds per wrk run (5; 2 with --quick)"
    )
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--users", type=int, default=1_000_000, help="large store size")
    parser.add_argument(
        "--cold-keys",
        type=int,
        default=500,
        help="distinct service users whose first request is the cold lookup, per store",
    )
    parser.add_argument("--no-seaweed", action="store_true")
    parser.add_argument(
        "--no-postgres", action="store_true", help="no PostgreSQL store row, cold lookups or lag"
    )
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="only the fast-upstream comparison of the nine configurations (~4 min)",
    )
    parser.add_argument("--out", type=Path, default=BENCH / "results.md")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.cold_keys < 1:
        parser.error("--cold-keys must be at least 1")
    if args.duration is None:
        args.duration = 2 if args.quick else 5
    if args.pairs is None:
        # 15 pairs left a median about ±4 % from the truth on a shared VM (the A/A control's
        # quartiles spanned 0.90–1.06): too wide for a 0.95 line. 31 shrink that by about √2;
        # a quick run keeps 15, so a developer's check stays a few minutes.
        args.pairs = 15 if args.quick else 31
    ensure_tools(postgres=not args.no_postgres)
    if (os.cpu_count() or 1) < 2:
        print("warning: fewer than 2 cores; the proxy and wrk will share one", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix="pangolin-bench-"))
    bench = Bench(args, tmp)
    with contextlib.ExitStack() as stack:
        if not args.no_postgres:
            bench.postgres = stack.enter_context(postgres_server())
        try:
            report = run_all(bench)
        finally:
            bench.procs.stop_all()  # before the server stops: no gateway outlives its store
    text = "\n".join(report) + "\n"
    # The soak's section (bench/soak.py writes it, at its own pace) survives a new run.
    if args.out.exists():
        old = args.out.read_text()
        if "\n## Soak\n" in old:
            text += "\n## Soak\n" + old.split("\n## Soak\n", 1)[1]
    args.out.write_text(text)
    print("\n".join(report))
    print(f"\nwritten to {args.out}; logs in {tmp}")


def ensure_tools(*, postgres: bool) -> None:
    if postgres:
        ensure_postgres()
    missing = [
        tool
        for tool in ("wrk", "nginx", "taskset")
        if shutil.which(tool) is None and not (tool == "nginx" and Path("/usr/sbin/nginx").exists())
    ]
    if not missing:
        return
    if os.geteuid() == 0 and shutil.which("apt-get") and "taskset" not in missing:
        print(f"installing {', '.join(missing)}: {APT_LINE}", flush=True)
        subprocess.run(["apt-get", "install", "-y", "wrk", "nginx"], check=False)
        if all(shutil.which(t) or Path(f"/usr/sbin/{t}").exists() for t in missing):
            return
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "wrk", "nginx"], check=True)
        return
    raise SystemExit(
        f"missing {', '.join(missing)}; install with: sudo {APT_LINE} (taskset is in util-linux)"
    )


def ensure_postgres() -> None:
    """Debian's PostgreSQL server, as `make postgres` installs it (when root, here too)."""
    from tests.postgres import find_bin_dir

    try:
        find_bin_dir()
        return
    except RuntimeError:
        pass
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing postgresql: apt-get install -y postgresql", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "postgresql"],
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            check=True,
        )
        find_bin_dir()
        return
    raise SystemExit(
        "no PostgreSQL server in /usr/lib/postgresql/*/bin: run `sudo make postgres` "
        "(apt-get install -y postgresql), or pass --no-postgres"
    )


def run_all(bench: Bench) -> list[str]:
    args = bench.args
    c, rounds = args.connections, args.rounds
    print(
        f"fast upstream (fixed loadTable JSON, {authscale_body()} bytes); proxies on core "
        f"{PROXY_CORE}, wrk + upstream on core {LOAD_CORE}; {rounds} interleaved rounds",
        flush=True,
    )
    upstream = bench.start_fast_upstream()
    # 97 bulk + root + client + the confined client = 100 service users
    fast = proxy_suite(
        bench,
        "fast",
        upstream,
        bulk_users=97,
        tokens=not args.quick,
        pairs=args.pairs,
        grants=True,
        postgres=bench.postgres,
    )
    gw, gw_proc = fast["gateway"], fast["proc"]
    client_id, key = fast["client"]
    gw_rss = rss_mb(gw_proc.pid)
    tokens: Run | None = median_run(fast["tokens"]) if fast["tokens"] else None
    prof: list[str] = []
    if not args.quick and not args.no_profile:
        prof = profile(bench, gw, gw_proc.pid, key)
    bench.procs.stop(gw_proc)
    cold: dict[str, Any] | None = None
    revocation: dict[str, Any] | None = None
    if bench.postgres is not None:
        print(f"cold lookups: {args.cold_keys} distinct keys, SQLite vs PostgreSQL", flush=True)
        cold = cold_lookups(bench, upstream, bench.postgres)
        print(f"revocation lag: 2 replicas on PostgreSQL, {ROTATIONS} rotations", flush=True)
        revocation = revocation_lag(bench, upstream, bench.postgres)
    workers: str | None = None
    scale: list[dict[str, Any]] = []
    seaweed: dict[str, Any] | None = None
    if not args.quick:
        print("2 workers vs 1", flush=True)
        workers = two_workers(bench, fast["config"], key)
        print(f"scale: 100 vs {args.users:,} service users", flush=True)
        scale = scale_suite(bench, args.users, upstream)
    if not args.quick and not args.no_seaweed:
        print("SeaweedFS upstream (real loadTable)", flush=True)
        try:
            with seaweed_upstream(bench.tmp, bench.procs.sessions) as sw:
                seaweed = proxy_suite(bench, "seaweed", sw, bulk_users=0)
                bench.procs.stop(seaweed["proc"])
        except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
            print(f"  SeaweedFS variant skipped: {exc}", flush=True)
            seaweed = {"error": str(exc)}

    rows = fast["rows"]
    direct, nginx, minimal, noauth, keyed, bearer, keyed_aiohttp, granted = rows[:8]
    pg_row: Row | None = next((r for r in rows if r.name == PG_ROW), None)
    fa_row = next(r for r in rows if r.name == FA_ROW)
    fa_cached = next(r for r in rows if r.name == FA_CACHED_ROW)
    asserted = next(r for r in rows if r.name == ASSERTED_ROW)

    def ab(name: str, a: Row, b: Row) -> tuple[float, str]:
        """A target ratio: the A/B pairs' median and quartiles, or the rounds' if none ran."""
        ratios = fast["ab"].get(name)
        if ratios:
            return statistics.median(ratios), quartiles(ratios)
        return paired(a, b), ""

    load = Path("/proc/loadavg").read_text().split()[:3]
    worst = max((q.share for q in bench.background), default=0.0)
    worst_own = max((q.own for q in bench.background), default=0.0)
    waited = sum(q.waited for q in bench.background)
    report = [
        "# Pangolin Gateway benchmark" + (" (--quick: fast upstream only)" if args.quick else ""),
        "",
        *machine(),
        "",
        f"wrk -t1 -c{c} -d{args.duration}s (and -c1 for latency) pinned to core "
        f"{LOAD_CORE} with the upstream; each proxy pinned to core {PROXY_CORE} "
        "(`taskset -c 1`). The load generator therefore has one core shared with the "
        "upstream: 'upstream direct' is limited by that core, not by the upstream alone. "
        "GET loadTable on every request; 1 s warm-up before each measurement. "
        f"**Figures are medians of {rounds} interleaved rounds**: all the proxies of one "
        "upstream stay up (idle but the one under load) and each round measures every "
        "configuration once, in an order shuffled per round, so a drift of the machine hits "
        "them alike; each figure is its own median, the × columns are ratios of medians and "
        "the targets medians of per-round ratios, "
        "and min–max gives the spread of req/s over the rounds (differences within it are "
        f"noise). Background CPU before each measurement: at most {worst:.0%} of all cores "
        f"(of which our own idle proxies and upstream at most {worst_own:.0%}; the script "
        f"waits for < 10 %); load average at the end {' '.join(load)}."
        + (" ⚠ the machine was busy: numbers are unreliable." if worst > 0.10 else "")
        + (
            f" It had to wait before {waited} of {len(bench.background)} measurements: "
            "something else used the machine meanwhile and may have disturbed some rounds "
            "(see the spread)."
            if waited
            else ""
        ),
        "",
        f"## Fast upstream (fixed {authscale_body()}-byte loadTable JSON)",
        "",
        *table(rows, direct, minimal, nginx, c),
        "",
        *rounds_table(rows, c),
        "",
    ]
    if tokens is not None:
        report.append(
            f"Token endpoint (wrk -c{c} POSTing client_credentials with a Lua script, in each "
            f"round after the bearer row; medians of {rounds}): {tokens.rps:,.0f} tokens/s "
            f"(min–max {spread(fast['tokens'])}), p50 {tokens.p50_ms:.2f} ms, "
            f"p99 {tokens.p99_ms:.2f} ms"
            + (f", {tokens.bad} non-2xx/errors" if tokens.bad else "")
            + "."
        )
    report.append(
        f"Gateway (100 service users) start-up to first /healthz 200: {fast['startup']:.2f} s "
        f"(process spawn, imports, store open); RSS after these runs {gw_rss:.0f} MB."
    )
    report += ["", grants_note(granted, fast["same_answer"])]
    if bench.postgres is not None:
        report += ["", *postgres_section(bench.postgres, pg_row, keyed, cold, revocation, c)]
    if scale:
        report += [
            "",
            "## Service users at scale",
            "",
            "| users | bulk insert s | store MB | start-up s | RSS idle MB | RSS after load MB "
            "| auth cold p50/p99 µs (store lookup) | auth cached p50/p99 µs "
            f"| e2e 1 key c1 p50/p99 ms | e2e {scale[-1]['distinct']:,}-key cycle c{c} "
            "req/s, p99 ms |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in scale:
            # (not ``cold``: that name holds the cold-lookups figures the targets read below)
            lookup, warm = s["inproc"]["cold"], s["inproc"]["warm"]
            report.append(
                f"| {s['users']:,} | {s['populate_s']:.1f} | {s['store_mb']:.0f} "
                f"| {s['startup_s']:.2f} "
                f"| {s['rss_idle_mb']:.0f} | {s['rss_after_mb']:.0f} "
                f"| {lookup['p50_us']:.0f} / {lookup['p99_us']:.0f} | {warm['p50_us']:.1f} / "
                f"{warm['p99_us']:.1f} | {s['single'].c1.p50_ms:.3f} / "
                f"{s['single'].c1.p99_ms:.3f} "
                f"| {s['many'].rps:,.0f}, {s['many'].p99_ms:.2f} ({s['distinct']:,} keys) |"
            )
        report += [
            "",
            "Cold = the Authenticator's caches dropped before each call, so every call reads "
            "the service user from SQLite (the part that grows with the store); cached = the "
            "same key again (the steady state: keys are cached by key id). In-process, pinned "
            f"to core 1. The e2e columns are medians of {rounds} rounds alternating the two "
            "gateways (both up); each round's key cycle uses keys of its own (disjoint from the "
            "other rounds' when the store is large enough), so it meets uncached keys as a "
            "single run would; RSS after load is after all rounds.",
        ]
    if seaweed is not None and "rows" in seaweed:
        srows = seaweed["rows"]
        report += [
            "",
            "## SeaweedFS upstream (real loadTable of a 3-column table)",
            "",
            *table(srows, srows[0], srows[2], srows[1], c),
            "",
            *rounds_table(srows, c),
        ]
    elif seaweed is not None:
        report += ["", f"SeaweedFS variant not run: {seaweed['error']}"]

    report += [
        "",
        "## Targets (issues 5, 12 and 13)"
        + (" — only those the quick run measures" if args.quick else ""),
        "",
        (
            f"Throughput ratios: the median of {args.pairs} A/B pairs of back-to-back 1 s runs "
            "(which side goes first alternates; the interquartile range of the pair ratios in "
            "brackets), measured after the rounds"
            if fast["ab"]
            else "Throughput ratios are medians of per-round ratios (both sides measured back to "
            "back in each round)"
        )
        + "; CPU ratios compare the median CPU time per request of the proxies' own processes "
        "over the rounds.",
        "",
        "| target | measured | goal | |",
        "|---|---:|---:|---|",
        target("X-API-Key req/s ÷ no-auth gateway", *ab("key/noauth", keyed, noauth), 0.95),
        target("bearer req/s ÷ no-auth gateway", *ab("bearer/noauth", bearer, noauth), 0.95),
        "| A/A control: no-auth ÷ itself (how far a pair median strays here) "
        "| {:.2f} ({}) | (report; 1.00 on a quiet machine) | |".format(
            *ab("noauth/noauth", noauth, noauth)
        ),
        *co_rows(fast["co"]),
        target(
            "gateway (X-API-Key) ÷ minimal aiohttp proxy", *ab("key/minimal", keyed, minimal), 0.9
        ),
        target("gateway (X-API-Key) ÷ minimal, stretch", *ab("key/minimal", keyed, minimal), 1.5),
        target(
            "same, by CPU time per request (minimal's µs ÷ gateway's)",
            cpu_ratio(minimal, keyed),
            0.9,
        ),
        target("X-API-Key ÷ no-auth, by CPU time per request", cpu_ratio(noauth, keyed), 0.95),
        target("bearer ÷ no-auth, by CPU time per request", cpu_ratio(noauth, bearer), 0.95),
        target(
            "nginx + forward-auth, decision cache (5 s) ÷ nginx proxy_pass (issue 15)",
            *ab("fa-cached/nginx", fa_cached, nginx),
            0.5,
        ),
        f"| nginx + forward-auth, no decision cache ÷ nginx proxy_pass "
        f"| {ab('fa/nginx', fa_row, nginx)[0]:.2f} | (report) | |",
        f"| gateway CPU per forward-auth decision (µs) | {fa_row.cpu or 0:.0f} "
        f"| (report; per forwarded request: {keyed.cpu or 0:.0f}) | |",
        target("identity assertion on ÷ off (X-API-Key)", *ab("assert/key", asserted, keyed), 0.95),
        target(
            f"{GRANTS} grants, default_access none ÷ X-API-Key (issue 12)",
            *ab("grants/key", granted, keyed),
            0.95,
        ),
        target(
            f"{GRANTS} grants ÷ X-API-Key, by CPU time per request (X-API-Key's µs ÷ grants')",
            cpu_ratio(keyed, granted),
            0.95,
        ),
        *(
            [
                target(
                    "X-API-Key, PostgreSQL ÷ SQLite store, cached path (issue 13)",
                    *ab("pg/key", pg_row, keyed),
                    0.97,
                ),
                target(
                    "same, by CPU time per request (SQLite's µs ÷ PostgreSQL's)",
                    cpu_ratio(keyed, pg_row),
                    0.97,
                ),
            ]
            if pg_row is not None
            else []
        ),
        *(
            [
                f"| cold lookup p50 / p99, {name} store (ms; {cold['keys']} keys) "
                f"| {cold[name]['cold_p50_ms']:.3f} / {cold[name]['cold_p99_ms']:.3f} "
                "| (report) | |"
                for name in ("SQLite", "PostgreSQL")
            ]
            if cold is not None
            else []
        ),
        *(
            [
                target(
                    f"revocation lag across 2 replicas, max over {ROTATIONS} rotations (ms)",
                    revocation["max_ms"],
                    f"p50 {revocation['p50_ms']:.0f}",
                    REVOCATION_BOUND * 1e3,
                    higher=False,
                    fmt=".0f",
                )
            ]
            if revocation is not None
            else []
        ),
        f"| gateway (X-API-Key) ÷ nginx | {paired(keyed, nginx):.3f} | (report) | |",
        f"| gateway (X-API-Key), lean client ÷ aiohttp client | {paired(keyed, keyed_aiohttp):.3f} "
        f"(by CPU time per request: {cpu_ratio(keyed_aiohttp, keyed):.2f}) | (report) | |",
        *([workers] if workers is not None else []),
        target(
            "added p50 at c1, X-API-Key vs direct (ms)",
            keyed.c1.p50_ms - direct.c1.p50_ms,
            0.5,
            higher=False,
            fmt=".3f",
        ),
        target(
            "added p50 at c1, bearer vs direct (ms)",
            bearer.c1.p50_ms - direct.c1.p50_ms,
            0.5,
            higher=False,
            fmt=".3f",
        ),
    ]
    if tokens is not None:
        report.append(target("token endpoint tokens/s (1 worker)", tokens.rps, 2000, fmt=",.0f"))
    if scale:
        small, large = scale[0], scale[-1]
        report += [
            target(
                f"auth p99 cold, {large['users']:,} ÷ 100 users",
                large["inproc"]["cold"]["p99_us"] / small["inproc"]["cold"]["p99_us"],
                1.2,
                higher=False,
            ),
            target(
                f"e2e c1 p99 with key, {large['users']:,} ÷ 100 users",
                large["single"].c1.p99_ms / small["single"].c1.p99_ms,
                1.2,
                higher=False,
            ),
            target(
                f"start-up at {large['users']:,} users (s)", large["startup_s"], 2.0, higher=False
            ),
            target(
                f"RSS at {large['users']:,} users after load (MB)",
                large["rss_after_mb"],
                250,
                higher=False,
                fmt=".0f",
            ),
        ]
    if prof:
        report += [
            "",
            f"## Profile: gateway under X-API-Key load (py-spy, c{c})",
            "",
            "```",
            *prof,
            "```",
        ]
    return report


def postgres_section(
    server: PostgresServer,
    row: Row | None,
    keyed: Row,
    cold: dict[str, Any] | None,
    revocation: dict[str, Any] | None,
    c: int,
) -> list[str]:
    """What the PostgreSQL figures are, and the cold lookups and revocation lag themselves."""
    out = [
        "## PostgreSQL store (issue 13)",
        "",
        f"One {postgres_version(server)} server for the run, started by tests/postgres.py "
        "(Debian's package, a temporary directory, loopback TCP, durability off: fsync, "
        "synchronous_commit and full_page_writes off, as in the tests), every process of it "
        f"pinned to core {LOAD_CORE} with wrk and the upstream; each measurement below has a "
        "database of its own.",
    ]
    if row is not None:
        ratio = row.c32.rps / keyed.c32.rps
        out += [
            "",
            f"'{PG_ROW}' (in the tables above): a second gateway process (the same "
            "noauth_gateway.py app, config and number of service users as the X-API-Key "
            "row's, but store.url naming a database on that server) with its own TenantUser "
            f"key, pinned to core {PROXY_CORE} like every proxy, measured in the same rounds: "
            "the cached path, where no request reads the store (the key is cached by key id; "
            "only the identity-version poll, every 0.5 s, touches the database). Medians "
            f"{row.c32.rps:,.0f} vs {keyed.c32.rps:,.0f} req/s at c{c} (× {ratio:.2f}); "
            f"CPU {row.cpu or float('nan'):.0f} vs {keyed.cpu or float('nan'):.0f} µs per "
            "request (the gateway's process only)."
            + (f" ⚠ {row.bad} non-2xx answers or errors." if row.bad else ""),
        ]
    if cold is not None:
        out += [
            "",
            "| store | cold p50 ms | cold p99 ms | cached p50 ms | cached p99 ms "
            "| cold − cached p50 ms |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name in ("SQLite", "PostgreSQL"):
            f = cold[name]
            out.append(
                f"| {name} | {f['cold_p50_ms']:.3f} | {f['cold_p99_ms']:.3f} "
                f"| {f['cached_p50_ms']:.3f} | {f['cached_p99_ms']:.3f} "
                f"| {f['cold_p50_ms'] - f['cached_p50_ms']:.3f} |"
            )
        out += [
            "",
            f"Cold lookup: the first request (GET loadTable, end to end, c1) of each of "
            f"{cold['keys']} distinct service users, made in the store before the gateway "
            "started, so each misses the authenticator's caches and reads the store; cached: "
            "the same key again right after. Two fresh `serve` gateways (one per store, the "
            f"same config otherwise) on core {PROXY_CORE}, one keep-alive connection to each "
            f"from a Python client on core {LOAD_CORE}, alternating key by key, after "
            f"{COLD_WARMUP} keys each not counted. Percentiles by nearest rank.",
        ]
    if revocation is not None:
        out += [
            "",
            f"Revocation lag across replicas: two `serve` processes (unpinned) on one database, "
            f"{ROTATIONS} rotations of a service user's key through replica A's management API; "
            "before each, both accept the current key (so it is cached); after it, replica B is "
            "asked with the old key on a fresh connection, request after request, until it "
            f"answers 401. From just before the rotate request: p50 {revocation['p50_ms']:.1f} ms, "
            f"max {revocation['max_ms']:.1f} ms; from A's answer: p50 "
            f"{revocation['after_answer_p50_ms']:.1f} ms, max "
            f"{revocation['after_answer_max_ms']:.1f} ms (NOTIFY; the identity-version poll, "
            f"every 0.5 s, is the guarantee: bound {REVOCATION_BOUND * 1e3:.0f} ms). Durability "
            "off makes the rotation's commit cheaper than on a production database.",
        ]
    return out


def grants_note(row: Row, same: bool) -> str:
    """What the grants row is, and whether its answers were what the X-API-Key row's were."""
    bad = (
        f"⚠ {row.bad} non-2xx answers or errors in its wrk runs: the grants are not set up right"
        if row.bad
        else "every answer of its wrk runs was a 2xx (a refusal would be a 403)"
    )
    return (
        f"'{GRANTS_ROW}': a TenantUser service user holding {GRANTS} read grants ("
        f"{TABLE[0]}.{TABLE[1]}, the table requested, and {GRANTS - 1} other namespaces and "
        f"tables), made in the store before the gateway started, on catalog '{CONFINED}' "
        "(same upstream; default_access none, and a read-only upstream credential, "
        "upstream_auth_read, a static bearer token), served by the same gateway process as the "
        "X-API-Key row: the grant index decides each loadTable, which as a read-only caller's "
        "goes upstream with the read-only credential, its answer passed on as it came. "
        + (
            "Its answer was byte-for-byte the X-API-Key row's"
            if same
            else "⚠ its answer differed from the X-API-Key row's (filtered differently)"
        )
        + f"; {bad}."
    )


def authscale_body() -> int:
    from upstream_fast import BODY_BYTES

    return BODY_BYTES


def two_workers(bench: Bench, config: Path, key: str) -> str:
    """2 workers vs 1 on both cores, if ``serve`` has ``--workers`` (it may not yet)."""
    help_text = subprocess.run(
        [GATEWAY_BIN, "serve", "--help"], capture_output=True, text=True, env=gateway_env()
    ).stdout
    if "--workers" not in help_text:
        return (
            "| 2 workers ÷ 1 worker | n/a | ≥ 1.80 | not measured: `serve` has no --workers yet |"
        )
    # Both up at once (the idle one is idle), measured in interleaved rounds: 1, 2, 1, 2, ...
    started = [
        bench.start_gateway(config, f"workers{n}", ["--workers", str(n)], core=None) for n in (1, 2)
    ]
    headers = [f"X-API-Key: {key}"]
    runs: list[list[Run]] = [[], []]
    for r in range(bench.args.rounds):
        for (gw, _, _), n, got in zip(started, (1, 2), runs, strict=True):
            url = gw + "/v1/default" + TABLE_PATH
            bench.quiet()
            wrk(url, connections=bench.args.connections, duration=1, headers=headers)
            # wrk stays on core 0, so with 2 workers it competes with one of them.
            run = wrk(
                url,
                connections=bench.args.connections,
                duration=bench.args.duration,
                headers=headers,
            )
            got.append(run)
            print(
                f"  {r + 1}/{bench.args.rounds} {f'gateway X-API-Key, {n} worker(s)':<34} "
                f"{run.rps:>9.0f} req/s (unpinned)",
                flush=True,
            )
    for _, proc, _ in started:
        bench.procs.stop(proc)
    one, two = (statistics.median(r.rps for r in got) for got in runs)
    return (
        f"| 2 workers ÷ 1 worker (unpinned; wrk + upstream share core 0 with a worker) "
        f"| {two / one:.2f} | ≥ 1.80 "
        f"| {'met' if two >= 1.8 * one else 'MISSED'} "
        "(unpinned: the 2 workers, wrk and the upstream share both cores; medians "
        f"{one:,.0f} and {two:,.0f} req/s, min–max {spread(runs[0])} and "
        f"{spread(runs[1])}) |"
    )


if __name__ == "__main__":
    main()
