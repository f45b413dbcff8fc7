"""The soak test (`make soak`, 30 minutes; `make soak-quick`, 3 minutes, the same report).

A real process tree, `python -m gateway serve --workers 2` after `init`, in front of the fast
upstream (bench/upstream_fast.py), is first driven flat out for a few seconds with wrk (GET
loadTable with X-API-Key) to measure its maximum throughput, then held at half of it by an
open-loop generator (requests due at fixed intervals, whatever the answers do) with a mix:

- GET loadTable with X-API-Key, and with bearer tokens, of a steady service user;
- the same with the key and a token of a second service user whose key is rotated every
  minute (POST /api/v1/service-users/{id}/rotate with the Root key, no overlap): after each
  rotation its old key and old token are probed on fresh connections (so both workers are
  asked), and every old key of the run is re-checked every few seconds;
- token requests at /v1/oauth/tokens (client_credentials), whose tokens feed the bearer load;
- a few hostile requests, each on a connection of its own: a dot segment (%2e%2e), wrong and
  malformed keys, a bad token, a wrong client secret, no credential, an oversized header and
  TRACE.

Report (stdout, and the "## Soak" section of bench/results.md, replaced): errors by kind
(anything but the expected answer; the intended refusals are counted apart), old credentials
accepted more than the propagation bound after their rotation, RSS and open-fd growth of the
gateway's processes (supervisor and workers, from /proc) between minute 5 and the end (minute 1
and the end in the quick run), and p99 latency per 5-minute window (1 minute in the quick
run). Exit status 1 when a target is missed (after the report is written).

    python bench/soak.py [--quick] [--minutes M] [--rate R] [--out bench/results.md]

Needs wrk (`make soak` installs it). Everything shares the machine's cores, unpinned: the two
workers, the upstream, wrk and this generator.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import dataclasses
import datetime
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final, NamedTuple, cast

import httptools

BENCH: Final = Path(__file__).resolve().parent
ROOT: Final = BENCH.parent
PY: Final = sys.executable
HOST: Final = "127.0.0.1"
TABLE_PATH: Final = "/v1/warehouse/namespaces/bench/tables/events"  # the default catalog's
CONFIG_PATH: Final = "/v1/config?warehouse=warehouse"
TOKEN_PATH: Final = "/v1/oauth/tokens"
WORKERS: Final = 2
# What the README states for a change made through another worker: store.change_poll_seconds
# (0.5 s) plus one request. An old credential answered 200 later than this is a violation.
BOUND: Final = 1.0
ROTATE_EVERY: Final = 60.0
FIRST_ROTATION: Final = 30.0  # so that the 3-minute run sees three rotations
PROBE_BURST: Final = 3.0  # seconds of probing an old credential right after its rotation
PROBE_GAP: Final = 0.05
RECHECK_EVERY: Final = 10.0  # every old key and token of the run, asked again
SAMPLE_EVERY: Final = 2.0  # /proc samples of the gateway's processes (fds move: medians)
CONNECTIONS: Final = 64  # persistent keep-alive connections of the generator
REQUEST_TIMEOUT: Final = 10.0
MAX_WARMUP: Final = 2  # seconds of wrk before the measured run
MAX_SECONDS: Final = 8
GROWTH_TARGET: Final = 0.10
OVERSIZED: Final = 20_000  # bytes of one header: over the gateway's max_header_bytes (16384)
RESULTS: Final = BENCH / "results.md"

# The mix, per 1000 requests. Hostile kinds run on fresh connections (some close them).
MIX: Final = {
    "key": 508,  # loadTable, X-API-Key, the steady service user
    "bearer": 310,  # loadTable, a recent token of the steady service user
    "rot_key": 100,  # loadTable, the rotated service user's current key
    "rot_bearer": 50,  # loadTable, a token of its current key
    "config": 20,  # GET /v1/config, X-API-Key
    "token": 4,  # POST /v1/oauth/tokens (the steady service user)
    "dot_segment": 1,  # GET /v1/namespaces/%2e%2e/x, a valid key
    "wrong_key": 1,  # a well-formed key nobody holds
    "garbage_key": 1,  # X-API-Key that is no key at all
    "bad_token": 1,  # Authorization: Bearer not-a-token
    "bad_secret": 1,  # token request with a wrong client secret
    "no_credential": 1,
    "oversized_header": 1,
    "trace": 1,  # TRACE loadTable, a valid key
}
# The answer each hostile kind must get: anything else is an error.
HOSTILE: Final = {
    "dot_segment": 400,
    "wrong_key": 401,
    "garbage_key": 401,
    "bad_token": 401,
    "bad_secret": 401,
    "no_credential": 401,
    "oversized_header": 431,
    "trace": 405,
}
ROTATED: Final = ("rot_key", "rot_bearer")
# Latency groups of the per-window table.
GROUPS: Final = {
    "key": "X-API-Key",
    "rot_key": "X-API-Key",
    "config": "X-API-Key",
    "bearer": "bearer",
    "rot_bearer": "bearer",
    "token": "token",
}


@dataclasses.dataclass(frozen=True)
class Plan:
    """How long, and where the report's marks are."""

    label: str
    seconds: float
    window: float  # latency windows
    baseline_at: float  # resource growth is measured from here to the end
    median_over: float  # resource figures are medians of the samples this long before a mark

    @classmethod
    def of(cls, quick: bool, minutes: float | None) -> Plan:
        if minutes is None:
            minutes = 3.0 if quick else 30.0
        short = minutes < 10
        return cls(
            label=f"{minutes:g}-minute" + (" quick" if quick else ""),
            seconds=minutes * 60,
            window=60.0 if short else 300.0,
            baseline_at=60.0 if short else 300.0,
            median_over=30.0 if short else 60.0,
        )


# -- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def clean_env() -> dict[str, str]:
    """This environment without PANGOLIN_* overrides: only the config file decides."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PANGOLIN_")}


def start(cmd: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    """A child leading its own session, so that stopping it stops whatever it started."""
    with log.open("ab") as out:
        return subprocess.Popen(
            list(cmd),
            cwd=ROOT,
            env=clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int | None:
    """SIGTERM to the process itself (the supervisor stops its workers, as for an operator),
    its session killed only if it does not exit in time. Its exit status (None: killed)."""
    if proc.poll() is not None:
        return proc.returncode
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
        return None


def write_config(home: Path, upstream_port: int) -> Path:
    config = home / "gateway.toml"
    config.write_text(
        f'[store]\npath = "{home / "pangolin.db"}"\n\n'
        # The whole load comes from one address and deliberately fails authentication (wrong
        # keys, old keys, bad tokens) tens of times a second: with the defaults (10 per key,
        # 50 per address) the failed-authentication backoff would answer those with 429, and
        # soon hold the address. That backoff has tests of its own; here it is out of the way.
        "[limits]\nfailed_auth_per_key = 1000000\nfailed_auth_per_address = 1000000\n\n"
        f'[catalogs.default]\nupstream = "http://{HOST}:{upstream_port}"\n'
        'warehouse = "warehouse"\n',
        encoding="utf-8",
    )
    return config


def init(config: Path) -> tuple[str, str]:
    """`init --json`: the Root service user's (id, key)."""
    out = subprocess.run(
        [PY, "-m", "gateway", "init", "--config", str(config), "--json"],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    printed = json.loads(out.stdout)
    return str(printed["id"]), str(printed["api_key"])


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, from /proc (the workers and anything they run)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
    found, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


class Usage(NamedTuple):
    rss_kb: int
    fds: int
    cpu_ticks: int


def usage(pid: int) -> Usage | None:
    """RSS, open file descriptors and CPU ticks (user + system) of one process."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    if match is None:  # a zombie
        return None
    return Usage(int(match.group(1)), fds, int(fields[11]) + int(fields[12]))


# -- a lean HTTP/1.1 client ------------------------------------------------------------------------
#
# aiohttp's client costs a few hundred µs of CPU per request: at thousands of requests per second
# it would take a core from the gateway it measures. This one sends prebuilt bytes and lets
# httptools (llhttp, what the gateway's own upstream client uses) find where answers end.


class Answer(NamedTuple):
    status: int
    body: bytes
    keep_alive: bool


class Connection(asyncio.Protocol):
    """One keep-alive connection, one request at a time (no pipelining)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Answer] | None = None
        self.chunks: list[bytes] = []
        self.status = 0  # of the answer being read, once its head is complete
        self.sent_at = 0.0  # of the request in flight (for the timeout sweep)
        self.closed = False
        self.timed_out = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def request(self, data: bytes) -> asyncio.Future[Answer]:
        assert self.transport is not None and self.waiter is None
        self.waiter = asyncio.get_running_loop().create_future()
        self.chunks, self.status = [], 0
        self.sent_at = time.monotonic()
        self.transport.write(data)
        return self.waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """The timeout sweep's way out: connection_lost then fails the waiter."""
        self.timed_out = True
        if self.transport is not None:
            self.transport.abort()

    # httptools callbacks
    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self._resolve(Answer(self.status, b"".join(self.chunks), self.parser.should_keep_alive()))

    # asyncio callbacks
    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as err:
            self._fail(ConnectionError(f"unparsable answer: {err}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.status and not self.timed_out:
            # An answer that declared no length ends at EOF (aiohttp's never do, but be fair).
            self._resolve(Answer(self.status, b"".join(self.chunks), False))
        elif self.timed_out:
            self._fail(TimeoutError(f"no answer within {REQUEST_TIMEOUT:g} s"))
        else:
            self._fail(exc or ConnectionResetError("closed by the gateway"))

    def _resolve(self, answer: Answer) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(answer)

    def _fail(self, exc: BaseException) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


async def connect(port: int) -> Connection:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(Connection, HOST, port)
    return conn


def build(method: str, target: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    head = f"{method} {target} HTTP/1.1\r\nHost: {HOST}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    if body or method == "POST":
        head += f"Content-Length: {len(body)}\r\n"
    return (head + "\r\n").encode("latin-1") + body


async def once(port: int, data: bytes, *, before: bytes | None = None) -> tuple[Answer, Answer]:
    """A fresh connection: optionally ``before`` first (e.g. /healthz), then ``data``. Fresh
    connections are spread over the workers by the kernel (SO_REUSEPORT)."""
    conn = await asyncio.wait_for(connect(port), REQUEST_TIMEOUT)
    try:
        first = Answer(0, b"", True)
        if before is not None:
            first = await asyncio.wait_for(conn.request(before), REQUEST_TIMEOUT)
        answer = await asyncio.wait_for(conn.request(data), REQUEST_TIMEOUT)
        return first, answer
    finally:
        conn.close()


def form(client_id: str, secret: str) -> bytes:
    return urllib.parse.urlencode(
        {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": secret,
            "scope": "catalog",
        }
    ).encode()


def token_request(client_id: str, secret: str) -> bytes:
    return build(
        "POST",
        TOKEN_PATH,
        {"Content-Type": "application/x-www-form-urlencoded"},
        form(client_id, secret),
    )


def json_request(method: str, path: str, root_key: str, payload: object) -> bytes:
    headers = {"X-API-Key": root_key, "Content-Type": "application/json"}
    return build(method, path, headers, json.dumps(payload).encode())


async def expect(port: int, data: bytes, status: int, what: str) -> dict[str, object]:
    answer = (await once(port, data))[1]
    if answer.status != status:
        raise RuntimeError(f"{what}: {answer.status} {answer.body[:300]!r}")
    return cast(dict[str, object], json.loads(answer.body))


async def create_user(port: int, root_key: str, name: str) -> tuple[str, str]:
    body = {"name": name, "role": "TenantUser"}
    made = await expect(
        port, json_request("POST", "/api/v1/service-users", root_key, body), 201, name
    )
    user = cast(dict[str, object], made["service_user"])
    return str(user["id"]), str(made["api_key"])


async def get_token(port: int, client_id: str, secret: str) -> str:
    got = await expect(port, token_request(client_id, secret), 200, "token request")
    return str(got["access_token"])


# -- credentials -------------------------------------------------------------------------------


@dataclasses.dataclass
class Rotated:
    """The rotated service user: its current key (of key generation ``gen``) and token (of
    ``token_gen``: behind ``gen`` from a rotation's answer until the new key has bought one)."""

    id: str
    key: str
    token: str
    gen: int = 1
    token_gen: int = 1
    started: dict[int, float] = dataclasses.field(default_factory=dict)  # gen -> rotate sent
    done: dict[int, float] = dataclasses.field(default_factory=dict)  # gen -> rotate answered
    token_at: dict[int, float] = dataclasses.field(default_factory=dict)  # gen -> new token
    old: list[tuple[int, str, str, float]] = dataclasses.field(default_factory=list)


class Requests:
    """The bytes of each kind of request, from the credentials of the moment."""

    def __init__(self, steady: tuple[str, str], token: str, rotated: Rotated) -> None:
        self.steady_id, self.steady_key = steady
        self.tokens: deque[str] = deque([token], maxlen=4)  # the latest, from the token load
        self.rotated = rotated
        self._next = 0
        self._fixed = {
            "key": build("GET", TABLE_PATH, {"X-API-Key": self.steady_key}),
            "config": build("GET", CONFIG_PATH, {"X-API-Key": self.steady_key}),
            "token": token_request(self.steady_id, self.steady_key),
            "dot_segment": build("GET", "/v1/namespaces/%2e%2e/x", {"X-API-Key": self.steady_key}),
            "garbage_key": build("GET", TABLE_PATH, {"X-API-Key": "hunter2"}),
            "bad_token": build("GET", TABLE_PATH, {"Authorization": "Bearer not.a.token"}),
            "bad_secret": token_request(self.steady_id, wrong_key()),
            "no_credential": build("GET", TABLE_PATH, {}),
            "oversized_header": build(
                "GET", TABLE_PATH, {"X-API-Key": self.steady_key, "X-Filler": "a" * OVERSIZED}
            ),
            "trace": build("TRACE", TABLE_PATH, {"X-API-Key": self.steady_key}),
        }

    def make(self, kind: str) -> tuple[bytes, int]:
        """The request and the rotated user's key generation it carries (0: none)."""
        fixed = self._fixed.get(kind)
        if fixed is not None:
            return fixed, 0
        if kind == "bearer":
            self._next += 1
            token = self.tokens[self._next % len(self.tokens)]
            return build("GET", TABLE_PATH, {"Authorization": f"Bearer {token}"}), 0
        if kind == "wrong_key":  # a new one each time: a key id never seen, a store read
            return build("GET", TABLE_PATH, {"X-API-Key": wrong_key()}), 0
        rotated = self.rotated
        if kind == "rot_key":
            return build("GET", TABLE_PATH, {"X-API-Key": rotated.key}), rotated.gen
        if kind == "rot_bearer":
            headers = {"Authorization": f"Bearer {rotated.token}"}
            return build("GET", TABLE_PATH, headers), rotated.token_gen
        raise ValueError(kind)


def wrong_key() -> str:
    """A well-formed API key (pgl_<16 hex>_<43 chars>) that nobody holds."""
    alphabet = string.ascii_letters + string.digits + "-_"
    return f"pgl_{secrets.token_hex(8)}_" + "".join(secrets.choice(alphabet) for _ in range(43))


# -- what was seen -----------------------------------------------------------------------------


class Outcome(NamedTuple):
    verdict: str  # "ok", "intended", "propagation", "error" or "violation"
    label: str  # the status or exception, as reported


def classify(
    kind: str, status: int, gen: int, sent: float, answered: float, rot: Rotated
) -> Outcome:
    """What an answer means for the report (see the module docstring)."""
    label = str(status)
    if kind in HOSTILE:
        return Outcome("intended" if status == HOSTILE[kind] else "error", label)
    if status == 200:
        done = rot.done.get(gen) if gen else None
        if done is not None and sent > done + BOUND:
            return Outcome("violation", "200 for a rotated credential")
        return Outcome("ok", label)
    if status == 401 and gen:
        started = rot.started.get(gen)
        if started is not None and answered >= started:
            # Sent with the credential being rotated: refused once the rotation took effect.
            return Outcome("intended", "401 (old credential, rotation in progress)")
        # A new key or token asked of a worker that has not yet seen the rotation (a token
        # of a newer key generation than the one it has cached): fine within the bound.
        renewed = rot.token_at.get(gen) if kind == "rot_bearer" else rot.done.get(gen - 1)
        if renewed is not None and sent <= renewed + BOUND:
            return Outcome("propagation", "401 (new credential, within the bound)")
    return Outcome("error", label)


class Stats:
    """Counts, latencies per window and group, and the generator's own lag."""

    def __init__(self, t0: float, window: float) -> None:
        self.t0, self.window = t0, window
        self.verdicts: Counter[tuple[str, str, str]] = Counter()  # (verdict, kind, label)
        self.latency: dict[tuple[int, str], array.array[float]] = {}
        self.lag: dict[int, array.array[float]] = {}
        self.sent = 0
        self.backlog = 0  # the deepest queue of requests due but not yet sent

    def count(self, verdict: str, kind: str, label: str) -> None:
        self.verdicts[(verdict, kind, label)] += 1

    def timing(self, kind: str, due: float, sent: float, answered: float) -> None:
        window = int((due - self.t0) // self.window)
        ms = (answered - due) * 1e3  # from when it was due: queueing counts (no omission)
        for group in (GROUPS.get(kind, "hostile"), "all"):
            self.latency.setdefault((window, group), array.array("d")).append(ms)
        self.lag.setdefault(window, array.array("d")).append((sent - due) * 1e3)

    def total(self, verdict: str) -> int:
        return sum(n for (v, _, _), n in self.verdicts.items() if v == verdict)


@dataclasses.dataclass
class Probes:
    """Old credentials asked again after their rotation, on fresh connections."""

    refused: int = 0
    accepted_in_bound: int = 0
    violations: int = 0
    errors: Counter[str] = dataclasses.field(default_factory=Counter)
    workers: Counter[int] = dataclasses.field(default_factory=Counter)  # pid -> probes
    latest_accept_ms: float = 0.0  # after the rotate answer, the latest 200 for an old one
    rechecks: int = 0
    rotate_ms: list[float] = dataclasses.field(default_factory=list)


# -- the load ----------------------------------------------------------------------------------


def mix_cycle(seed: int = 14) -> list[str]:
    """MIX as a shuffled cycle of 1000 kinds (seeded): kinds interleave, shares are exact."""
    cycle = [kind for kind, share in MIX.items() for _ in range(share)]
    random.Random(seed).shuffle(cycle)
    return cycle


class Load:
    """The open-loop generator: ``rate`` requests per second due at even intervals, sent on
    CONNECTIONS keep-alive connections (hostile ones on their own), answers classified."""

    def __init__(
        self, port: int, rate: float, requests: Requests, stats: Stats, rot: Rotated
    ) -> None:
        self.port, self.rate = port, rate
        self.requests, self.stats, self.rot = requests, stats, rot
        self.queue: asyncio.Queue[tuple[str, float]] = asyncio.Queue()
        self.conns: set[Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.cycle = mix_cycle()

    async def run(self, until: float) -> None:
        workers = [asyncio.create_task(self.worker()) for _ in range(CONNECTIONS)]
        try:
            await self.schedule(until)
            await self.drain()
        finally:
            for task in workers:
                task.cancel()
            for conn in list(self.conns):
                conn.close()

    async def schedule(self, until: float) -> None:
        t0, sent, last_sweep = self.stats.t0, 0, 0.0
        total = int((until - t0) * self.rate)  # request i is due at t0 + i / rate
        while (now := time.monotonic()) < until:
            # Every request due by now (i / rate <= now - t0): i from 0 to floor(...).
            due = min(int((now - t0) * self.rate) + 1, total)
            while sent < due:
                kind = self.cycle[sent % len(self.cycle)]
                self.dispatch(kind, t0 + sent / self.rate)
                sent += 1
            self.stats.backlog = max(self.stats.backlog, self.queue.qsize())
            if now - last_sweep >= 1.0:
                self.sweep(now)
                last_sweep = now
            await asyncio.sleep(0.001)  # the tick: requests leave at most about this late
        self.stats.sent = sent

    async def drain(self) -> None:
        """Wait (a bounded while) for what was sent to be answered."""
        deadline = time.monotonic() + REQUEST_TIMEOUT + 2
        while (self.queue.qsize() or self.busy() or self.tasks) and time.monotonic() < deadline:
            self.sweep(time.monotonic())
            await asyncio.sleep(0.05)

    def busy(self) -> bool:
        return any(conn.waiter is not None for conn in self.conns)

    def sweep(self, now: float) -> None:
        """Abort requests unanswered for REQUEST_TIMEOUT (their waiter then fails)."""
        for conn in list(self.conns):
            if conn.waiter is not None and now - conn.sent_at > REQUEST_TIMEOUT:
                conn.abort()

    def dispatch(self, kind: str, due: float) -> None:
        if kind in HOSTILE:
            task = asyncio.create_task(self.hostile(kind, due))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        else:
            self.queue.put_nowait((kind, due))

    async def worker(self) -> None:
        conn: Connection | None = None
        while True:
            kind, due = await self.queue.get()
            try:
                if conn is None or conn.closed:
                    conn = await asyncio.wait_for(connect(self.port), REQUEST_TIMEOUT)
                    self.conns.add(conn)
                data, gen = self.requests.make(kind)
                sent = time.monotonic()
                answer = await conn.request(data)
            except (OSError, TimeoutError, ConnectionError) as err:
                self.stats.count("error", kind, type(err).__name__)
                if conn is not None:
                    self.conns.discard(conn)
                    conn.close()
                conn = None
                continue
            self.settle(kind, gen, due, sent, answer)
            if not answer.keep_alive:
                self.conns.discard(conn)
                conn.close()
                conn = None

    async def hostile(self, kind: str, due: float) -> None:
        data, _ = self.requests.make(kind)
        sent = time.monotonic()
        try:
            answer = (await once(self.port, data))[1]
        except (OSError, TimeoutError, ConnectionError) as err:
            self.stats.count("error", kind, type(err).__name__)
            return
        self.settle(kind, 0, due, sent, answer)

    def settle(self, kind: str, gen: int, due: float, sent: float, answer: Answer) -> None:
        answered = time.monotonic()
        outcome = classify(kind, answer.status, gen, sent, answered, self.rot)
        self.stats.count(outcome.verdict, kind, outcome.label)
        if kind not in HOSTILE:
            self.stats.timing(kind, due, sent, answered)
        if kind == "token" and answer.status == 200:
            self.requests.tokens.append(str(json.loads(answer.body)["access_token"]))


class Rotator:
    """A rotation every ROTATE_EVERY seconds, the old key and token probed right after it,
    and every old credential of the run re-checked every RECHECK_EVERY seconds."""

    def __init__(self, port: int, root_key: str, rot: Rotated, probes: Probes) -> None:
        self.port, self.root_key, self.rot, self.probes = port, root_key, rot, probes
        self.healthz = build("GET", "/healthz", {})

    async def run(self, t0: float, until: float) -> None:
        recheck = asyncio.create_task(self.recheck_loop(until))
        try:
            at = t0 + FIRST_ROTATION
            while at + PROBE_BURST < until:
                await asyncio.sleep(max(0.0, at - time.monotonic()))
                await self.rotate()
                at += ROTATE_EVERY
        finally:
            recheck.cancel()

    async def rotate(self) -> None:
        rot, gen = self.rot, self.rot.gen
        old_key, old_token = rot.key, rot.token
        path = f"/api/v1/service-users/{rot.id}/rotate"
        rot.started[gen] = time.monotonic()
        made = await expect(self.port, json_request("POST", path, self.root_key, {}), 200, path)
        done = rot.done[gen] = time.monotonic()
        self.probes.rotate_ms.append((done - rot.started[gen]) * 1e3)
        # The rot_key load switches now; rot_bearer keeps the old token (refused: intended)
        # until the new key has bought a new one.
        rot.key, rot.gen = str(made["api_key"]), gen + 1
        rot.old.append((gen, old_key, old_token, done))
        burst = asyncio.create_task(self.burst(old_key, old_token, done))
        rot.token = await get_token(self.port, rot.id, rot.key)
        rot.token_gen = gen + 1
        rot.token_at[gen + 1] = time.monotonic()
        await burst

    async def burst(self, key: str, token: str, done: float) -> None:
        while time.monotonic() < done + PROBE_BURST:
            await asyncio.gather(self.probe(key, done), self.probe(token, done))
            await asyncio.sleep(PROBE_GAP)

    async def recheck_loop(self, until: float) -> None:
        while time.monotonic() + RECHECK_EVERY < until:
            await asyncio.sleep(RECHECK_EVERY)
            settled = [o for o in self.rot.old if time.monotonic() > o[3] + PROBE_BURST]
            for _, key, token, done in settled:
                await asyncio.gather(self.probe(key, done), self.probe(token, done))
                self.probes.rechecks += 2

    async def probe(self, credential: str, done: float) -> None:
        """One old credential on a fresh connection, after /healthz (which worker it is)."""
        header = (
            {"X-API-Key": credential}
            if credential.startswith("pgl_")
            else {"Authorization": f"Bearer {credential}"}
        )
        sent = time.monotonic()
        try:
            health, answer = await once(
                self.port, build("GET", TABLE_PATH, header), before=self.healthz
            )
        except (OSError, TimeoutError, ConnectionError) as err:
            self.probes.errors[type(err).__name__] += 1
            return
        self.probes.workers[int(json.loads(health.body)["pid"])] += 1
        if answer.status == 401:
            self.probes.refused += 1
        elif answer.status == 200 and sent <= done + BOUND:
            self.probes.accepted_in_bound += 1
            self.probes.latest_accept_ms = max(self.probes.latest_accept_ms, (sent - done) * 1e3)
        elif answer.status == 200:
            self.probes.violations += 1
        else:
            self.probes.errors[str(answer.status)] += 1


class Sampler:
    """/proc figures of the gateway's processes every SAMPLE_EVERY seconds."""

    def __init__(self, supervisor: int, also: Sequence[int] = ()) -> None:
        self.supervisor, self.also = supervisor, tuple(also)
        self.generator: dict[float, int] = {}  # when -> this script's CPU ticks
        self.samples: list[tuple[float, dict[int, Usage]]] = []
        self.commands: dict[int, str] = {}  # pid -> its command line, when first seen
        # (when, busy ticks, all ticks, our ticks): the machine's, and those of everything
        # this run started (the gateway, the upstream, this script): whether a slow window
        # was the gateway's doing or a machine out of cores, and whose.
        self.machine: list[tuple[float, int, int, int]] = []

    def sample(self) -> None:
        tree = descendants(self.supervisor)
        got = {pid: u for pid in tree if (u := usage(pid)) is not None}
        for pid in got.keys() - self.commands.keys():
            self.commands[pid] = command(pid)
        now = time.monotonic()
        self.samples.append((now, got))
        others = [u for pid in self.also if (u := usage(pid)) is not None]
        mine = usage(os.getpid())
        self.generator[now] = mine.cpu_ticks if mine is not None else 0
        ours = sum(u.cpu_ticks for u in got.values()) + sum(u.cpu_ticks for u in others)
        ours += self.generator[now]
        self.machine.append((now, *machine_ticks(), ours))

    def busy(self, start: float, stop: float) -> tuple[float, float, float]:
        """Between the samples nearest ``start`` and ``stop``: the share of all cores busy,
        the share busy with what this run did not start, and this script's CPU in cores."""
        first = min(self.machine, key=lambda m: abs(m[0] - start))
        last = min(self.machine, key=lambda m: abs(m[0] - stop))
        total = last[2] - first[2]
        if not total:
            return 0.0, 0.0, 0.0
        busy, ours = last[1] - first[1], last[3] - first[3]
        mine0, mine1 = (self.generator.get(m[0], 0) for m in (first, last))
        span = (last[0] - first[0]) * os.sysconf("SC_CLK_TCK")
        return busy / total, max(0, busy - ours) / total, (mine1 - mine0) / span

    async def run(self, until: float) -> None:
        while time.monotonic() < until:
            self.sample()
            await asyncio.sleep(SAMPLE_EVERY)
        self.sample()

    def fd_range(self, pid: int, after: float) -> tuple[int, int]:
        """The fewest and most open fds of ``pid`` in the samples from ``after`` on."""
        seen = [s[pid].fds for t, s in self.samples if t >= after and pid in s]
        return (min(seen), max(seen)) if seen else (0, 0)

    def around(self, mark: float, over: float) -> dict[int, Usage]:
        """Per process, the median of each figure over the samples of [mark - over, mark]."""
        taken = [s for t, s in self.samples if mark - over - 0.5 <= t <= mark + 0.5]
        pids = {pid for s in taken for pid in s}
        out = {}
        for pid in pids:
            seen = [s[pid] for s in taken if pid in s]
            out[pid] = Usage(
                int(statistics.median(u.rss_kb for u in seen)),
                int(statistics.median(u.fds for u in seen)),
                max(u.cpu_ticks for u in seen),
            )
        return out


def machine_ticks() -> tuple[int, int]:
    """Busy and all CPU ticks of the machine so far (/proc/stat; idle and iowait are idle)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4], sum(fields)


def command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()


# -- maximum throughput ------------------------------------------------------------------------


def measure_max(port: int, key: str) -> tuple[float, str]:
    """wrk flat out (c32, after a warm-up) on GET loadTable with X-API-Key: req/s and its
    summary line."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk not found: run `make soak-quick` (it installs it) or apt-get it")
    url = f"http://{HOST}:{port}{TABLE_PATH}"
    base = [wrk, "-t1", "-c32", "--latency", "-H", f"X-API-Key: {key}"]
    subprocess.run([*base, f"-d{MAX_WARMUP}s", url], capture_output=True, check=True)
    out = subprocess.run(
        [*base, f"-d{MAX_SECONDS}s", url], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"wrk said: {out}")
    if "Non-2xx" in out or re.search(r"Socket errors", out):
        print(f"note: the maximum run had errors:\n{out}", flush=True)
    p99 = re.search(r"^\s+99%\s+(\S+)$", out, re.M)
    return float(match.group(1)), f"p99 {p99.group(1) if p99 else '?'}"


# -- preflight ---------------------------------------------------------------------------------


async def preflight(port: int, requests: Requests) -> None:
    """Each kind once, before the soak: a wrong expectation should cost seconds, not 30 min."""
    wrong = []
    for kind in MIX:
        data, _ = requests.make(kind)
        answer = (await once(port, data))[1]
        if answer.status != HOSTILE.get(kind, 200):
            wrong.append(f"{kind}: {answer.status} {answer.body[:200]!r}")
    if wrong:
        raise SystemExit("preflight: unexpected answers:\n  " + "\n  ".join(wrong))


async def wait_workers(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> set[int]:
    """The workers' pids, once each has answered /healthz on a fresh connection."""
    pids: set[int] = set()
    deadline = time.monotonic() + timeout
    healthz = build("GET", "/healthz", {})
    while len(pids) < WORKERS and time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited with {proc.returncode}")
        try:
            answer = (await once(port, healthz))[1]
        except OSError:
            await asyncio.sleep(0.05)  # not listening yet
            continue
        if answer.status == 200:
            pids.add(int(json.loads(answer.body)["pid"]))
    if len(pids) < WORKERS:
        raise RuntimeError(f"workers answering after {timeout} s: {pids}")
    return pids


# -- the report --------------------------------------------------------------------------------


@dataclasses.dataclass
class Soak:
    """Everything the report needs."""

    plan: Plan
    max_rps: float
    max_note: str
    rate: float
    stats: Stats
    probes: Probes
    rot: Rotated
    sampler: Sampler
    t0: float
    end: float
    supervisor: int
    workers: set[int]
    exit_status: int | None = None
    log: Counter[tuple[str, str]] = dataclasses.field(default_factory=Counter)
    access_lines: int = 0


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of unsorted values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered))) - 1))]


def growth(before: float, after: float) -> float:
    return (after - before) / before if before else 0.0


def verdict(ok: bool) -> str:
    return "met" if ok else "**MISSED**"


def commit() -> str:
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"{head or 'unknown'}" + (" (with uncommitted changes)" if dirty else "")


class Resources(NamedTuple):
    rows: list[str]
    rss_growth: float  # the largest of the total's and each process's
    fd_growth: float


def resources(soak: Soak) -> Resources:
    plan, t0 = soak.plan, soak.t0
    base = soak.sampler.around(t0 + plan.baseline_at, plan.median_over)
    last = soak.sampler.around(soak.end, plan.median_over)
    rows, rss_g, fd_g = [], 0.0, 0.0
    span = soak.end - (t0 + plan.baseline_at)
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in sorted(set(base) & set(last), key=lambda p: (p != soak.supervisor, p)):
        b, e = base[pid], last[pid]
        rg, fg = growth(b.rss_kb, e.rss_kb), growth(b.fds, e.fds)
        rss_g, fd_g = max(rss_g, rg), max(fd_g, fg)
        cpu = (e.cpu_ticks - b.cpu_ticks) / ticks / span * 100 if span > 0 else 0.0
        low, high = soak.sampler.fd_range(pid, t0 + plan.baseline_at - plan.median_over)
        rows.append(
            f"| {role(soak, pid)} {pid} | {b.rss_kb / 1024:.1f} | {e.rss_kb / 1024:.1f} "
            f"| {rg:+.1%} | {b.fds} | {e.fds} | {fg:+.1%} | {low}–{high} | {cpu:.0f} % |"
        )
    tb = sum(base[p].rss_kb for p in set(base) & set(last))
    te = sum(last[p].rss_kb for p in set(base) & set(last))
    fb = sum(base[p].fds for p in set(base) & set(last))
    fe = sum(last[p].fds for p in set(base) & set(last))
    rss_g, fd_g = max(rss_g, growth(tb, te)), max(fd_g, growth(fb, fe))
    rows.append(
        f"| **all** | {tb / 1024:.1f} | {te / 1024:.1f} | {growth(tb, te):+.1%} | {fb} | {fe} "
        f"| {growth(fb, fe):+.1%} | | |"
    )
    missing = set(base) ^ set(last)
    if missing:
        rows.append(f"| processes seen at one mark only: {sorted(missing)} | | | | | | | | |")
    return Resources(rows, rss_g, fd_g)


def role(soak: Soak, pid: int) -> str:
    if pid == soak.supervisor:
        return "supervisor"
    if pid in soak.workers:
        return "worker"
    # multiprocessing's spawn context starts a resource tracker beside the workers.
    cmdline = soak.sampler.commands.get(pid, "")
    return "resource tracker" if "resource_tracker" in cmdline else "other"


def latency_rows(soak: Soak) -> list[str]:
    stats, plan = soak.stats, soak.plan
    windows = sorted({w for w, _ in stats.latency})
    rows = []
    for w in windows:
        start, stop_ = w * plan.window / 60, min((w + 1) * plan.window, plan.seconds) / 60
        everything = stats.latency.get((w, "all"), array.array("d"))
        cells = [f"{start:g}–{stop_:g}", f"{len(everything):,}"]
        cells.append(f"{len(everything) / ((stop_ - start) * 60):,.0f}")
        cells += [f"{pct(everything, 0.50):.2f}", f"{pct(everything, 0.99):.2f}"]
        for group in ("X-API-Key", "bearer", "token"):
            got = stats.latency.get((w, group))
            cells.append(f"{pct(got, 0.99):.2f}" if got else "–")
        cells.append(f"{pct(stats.lag[w], 0.99):.2f}" if w in stats.lag else "–")
        busy, foreign, mine = soak.sampler.busy(soak.t0 + start * 60, soak.t0 + stop_ * 60)
        cells += [f"{busy:.0%}", f"{foreign:.0%}", f"{mine:.2f}"]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def counted(stats: Stats, which: str) -> list[str]:
    rows = [
        f"| {kind} | {label} | {n:,} |"
        for (v, kind, label), n in sorted(stats.verdicts.items())
        if v == which
    ]
    return rows or ["| – | none | 0 |"]


def report(soak: Soak) -> tuple[list[str], bool]:
    """The markdown section, and whether every target was met."""
    res = resources(soak)
    targets, ok = target_lines(soak, res)
    lines = [
        "## Soak",
        "",
        *setup_lines(soak),
        "",
        *targets,
        *count_lines(soak),
        *propagation_lines(soak),
        "",
        *latency_lines(soak),
        "",
        *resource_lines(soak, res),
        "",
        log_line(soak),
    ]
    return lines, ok


def setup_lines(soak: Soak) -> list[str]:
    plan, stats = soak.plan, soak.stats
    answered = sum(stats.verdicts.values())
    which = (
        f"**{plan.label} run** (`make soak-quick`; `make soak` runs 30 minutes with the same "
        "report)"
        if "quick" in plan.label
        else f"**{plan.label} run** (`make soak`)"
    )
    return [
        f"{which}, {datetime.date.today().isoformat()}, commit {commit()}: "
        f"`python -m gateway serve --workers {WORKERS}` (supervisor {soak.supervisor}, workers "
        f"{', '.join(map(str, sorted(soak.workers)))}) after `init`, in front of "
        "bench/upstream_fast.py, all unpinned on the same machine "
        f"(nproc {os.cpu_count()}) with the load generator. Maximum first: wrk -t1 -c32 "
        f"-d{MAX_SECONDS}s (after {MAX_WARMUP} s of warm-up) on GET loadTable with X-API-Key: "
        f"**{soak.max_rps:,.0f} req/s** ({soak.max_note}). Then {plan.seconds / 60:g} minutes "
        f"at half of it, **{soak.rate:,.0f} req/s** due at even intervals (open loop: "
        "latency counts from when a request was due, so queueing shows), from bench/soak.py "
        f"(asyncio with uvloop, httptools, {CONNECTIONS} keep-alive connections, hostile "
        f"requests on connections of their own): {stats.sent:,} sent, {answered:,} answered "
        f"({answered / plan.seconds:,.0f}/s), deepest queue {stats.backlog}.",
        "",
        "Mix per 1000: " + ", ".join(f"{k} {v}" for k, v in MIX.items()) + ". "
        f"A key rotation every {ROTATE_EVERY:g} s from {FIRST_ROTATION:g} s "
        f"({len(soak.rot.done)} rotations; no overlap), of a service user whose current key "
        "and token carry rot_key / rot_bearer. The config's `[limits]` sets "
        "failed_auth_per_key and failed_auth_per_address to 1000000: the load comes from one "
        "address and fails authentication on purpose many times a second, which the backoff "
        "would otherwise answer with 429.",
    ]


def target_lines(soak: Soak, res: Resources) -> tuple[list[str], bool]:
    stats, probes, plan = soak.stats, soak.probes, soak.plan
    errors = stats.total("error") + sum(probes.errors.values())
    late = stats.total("violation") + probes.violations
    rss_ok, fd_ok = res.rss_growth < GROWTH_TARGET, res.fd_growth < GROWTH_TARGET
    lines = [
        "| target | measured | goal | |",
        "|---|---:|---:|---|",
        f"| errors (unexpected statuses, exceptions) | {errors} | 0 | {verdict(errors == 0)} |",
        f"| old key or token accepted > {BOUND:g} s after its rotation | {late} | 0 "
        f"| {verdict(late == 0)} |",
        f"| RSS growth, minute {plan.baseline_at / 60:g} → {plan.seconds / 60:g} (largest of "
        f"the total and each process) | {res.rss_growth:+.1%} | < 10 % | {verdict(rss_ok)} |",
        f"| open fds growth, same | {res.fd_growth:+.1%} | < 10 % | {verdict(fd_ok)} |",
    ]
    return lines, errors == 0 and late == 0 and rss_ok and fd_ok


def count_lines(soak: Soak) -> list[str]:
    stats, probes = soak.stats, soak.probes
    return [
        "",
        "Errors by kind:",
        "",
        "| kind | status / exception | count |",
        "|---|---|---:|",
        *counted(stats, "error"),
        *[f"| old-credential probe | {label} | {n} |" for label, n in probes.errors.items()],
        "",
        "Intended refusals (not errors):",
        "",
        "| kind | status | count |",
        "|---|---|---:|",
        *counted(stats, "intended"),
        f"| old key / token probes after rotation | 401 | {probes.refused:,} |",
    ]


def latency_lines(soak: Soak) -> list[str]:
    return [
        f"Latency (ms, from when due) per {soak.plan.window / 60:g}-minute window; lag: how "
        "late the generator sent (its own share of the figures); machine busy: the share of "
        f"all {os.cpu_count()} cores in use, of which 'not ours' by processes this run did not "
        "start (another job on the machine); generator cores: this script's own CPU:",
        "",
        "| minutes | answered | /s | p50 all | p99 all | p99 X-API-Key | p99 bearer "
        "| p99 token | p99 lag | machine busy | not ours | generator cores |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *latency_rows(soak),
    ]


def resource_lines(soak: Soak, res: Resources) -> list[str]:
    plan = soak.plan
    mark = f"{plan.baseline_at / 60:g}"
    return [
        f"Gateway processes (from /proc; medians of the samples every {SAMPLE_EVERY:g} s over "
        f"the {plan.median_over:g} s before minute {mark} and before the end; fds range: "
        "fewest and most in any sample from then on; CPU: share of one core in between):",
        "",
        f"| process | RSS MB min {mark} | RSS MB end | RSS growth | fds min {mark} | fds end "
        "| fds growth | fds range | CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *res.rows,
    ]


def propagation_lines(soak: Soak) -> list[str]:
    stats, probes, rot = soak.stats, soak.probes, soak.rot
    in_bound = ", ".join(
        f"{kind} {n}" for (v, kind, _), n in sorted(stats.verdicts.items()) if v == "propagation"
    )
    rotate = probes.rotate_ms
    workers = ", ".join(f"{pid}: {n}" for pid, n in sorted(probes.workers.items()))
    return [
        "",
        f"Rotations: {len(rot.done)}, each answered in {min(rotate, default=0):.0f}–"
        f"{max(rotate, default=0):.0f} ms. Old key and old token probed on fresh connections "
        f"every {PROBE_GAP * 1e3:.0f} ms for {PROBE_BURST:g} s after each rotation's answer, "
        f"then every old credential of the run every {RECHECK_EVERY:g} s ({probes.rechecks} "
        f"re-checks); probes per worker: {workers or 'none'}. Accepted within the "
        f"{BOUND:g} s bound: {probes.accepted_in_bound} (the latest sent "
        f"{probes.latest_accept_ms:.0f} ms after the rotation's answer); beyond it: "
        f"{probes.violations}. New credentials refused within the bound by a worker that had "
        f"not yet seen the rotation (not errors): {in_bound or 'none'}.",
    ]


def log_line(soak: Soak) -> str:
    """The gateway's own log: access lines counted, the others by level and message."""
    bad = Counter({k: n for k, n in soak.log.items() if k[0] not in ("DEBUG", "INFO")})
    calm = Counter({k: n for k, n in soak.log.items() if k not in bad})

    def top(lines: Counter[tuple[str, str]]) -> str:
        shown = "; ".join(f"{n} × {level} {msg}" for (level, msg), n in lines.most_common(6))
        return f" ({shown})" if shown else ""

    return (
        f"Gateway log: {soak.access_lines:,} access lines; WARNING or worse: "
        f"{sum(bad.values())}{top(bad)}; other lines: {sum(calm.values())}{top(calm)}. The "
        f"supervisor exited with {soak.exit_status} on SIGTERM."
    )


_LOG_LINE: Final = re.compile(r"^\S+ \S+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) (\S+): (.*)$")


def read_log(path: Path) -> tuple[int, Counter[tuple[str, str]]]:
    """Access lines, and the other lines by (level, "logger: message" with digits masked)."""
    access, others = 0, Counter[tuple[str, str]]()
    with path.open("rb") as log:
        for raw in log:
            line = raw.decode("utf-8", "replace").rstrip()
            if " pangolin.access: " in line:
                access += 1
                continue
            match = _LOG_LINE.match(line)
            level, text = (match[1], f"{match[2]}: {match[3]}") if match else ("(raw)", line)
            others[(level, re.sub(r"\d+", "#", text)[:120])] += 1
    return access, others


def write_results(path: Path, section: Sequence[str]) -> None:
    """Replace the "## Soak" section of ``path`` (up to the next "## " heading), or append."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    start = next((i for i, line in enumerate(lines) if line.strip() == "## Soak"), None)
    if start is None:
        out = [*lines, "", *section] if lines else list(section)
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        tail = lines[end:]
        out = [*lines[:start], *section, *([""] + tail if tail else [])]
    path.write_text("\n".join(out).rstrip("\n") + "\n", encoding="utf-8")


# -- the run -----------------------------------------------------------------------------------


async def soak(
    port: int, proc: subprocess.Popen[bytes], root_key: str, upstream: int, args: Args
) -> Soak:
    workers = await wait_workers(port, proc)
    steady = await create_user(port, root_key, "soak-steady")
    rotated_id, rotated_key = await create_user(port, root_key, "soak-rotated")
    rot = Rotated(rotated_id, rotated_key, await get_token(port, rotated_id, rotated_key))
    requests = Requests(steady, await get_token(port, *steady), rot)
    await preflight(port, requests)
    print("measuring the maximum (wrk) ...", flush=True)
    loop = asyncio.get_running_loop()
    max_rps, note = await loop.run_in_executor(None, measure_max, port, steady[1])
    rate = args.rate or max_rps / 2
    plan = args.plan
    print(
        f"maximum {max_rps:,.0f} req/s ({note}); soaking {plan.seconds / 60:g} min at "
        f"{rate:,.0f} req/s",
        flush=True,
    )
    t0 = time.monotonic()
    until = t0 + plan.seconds
    stats, probes = Stats(t0, plan.window), Probes()
    sampler = Sampler(proc.pid, [upstream])
    load = Load(port, rate, requests, stats, rot)
    progress = asyncio.create_task(show_progress(stats, probes, t0, until))
    await asyncio.gather(
        load.run(until),
        Rotator(port, root_key, rot, probes).run(t0, until),
        sampler.run(until),
    )
    progress.cancel()
    return Soak(
        plan, max_rps, note, rate, stats, probes, rot, sampler, t0, until, proc.pid, workers
    )


async def show_progress(stats: Stats, probes: Probes, t0: float, until: float) -> None:
    """A line every 30 s, so a long run shows it is alive (and what goes wrong early)."""
    while time.monotonic() < until:
        await asyncio.sleep(30)
        print(
            f"  {(time.monotonic() - t0) / 60:4.1f} min: {sum(stats.verdicts.values()):,} "
            f"answered, {stats.total('error')} errors, {stats.total('intended'):,} intended "
            f"refusals, {len(probes.rotate_ms)} rotations, "
            f"{stats.total('violation') + probes.violations} late acceptances",
            flush=True,
        )


@dataclasses.dataclass(frozen=True)
class Args:
    plan: Plan
    rate: float | None
    out: Path | None


def parse_args(argv: Sequence[str] | None = None) -> Args:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="3 minutes, 1-minute windows")
    parser.add_argument("--minutes", type=float, help="another length (under 10: as --quick)")
    parser.add_argument("--rate", type=float, help="req/s instead of half the measured maximum")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file ('-': none)")
    ns = parser.parse_args(argv)
    out = None if str(ns.out) == "-" else ns.out
    return Args(Plan.of(ns.quick, ns.minutes), ns.rate, out)


@contextlib.contextmanager
def processes(home: Path) -> Iterator[tuple[int, subprocess.Popen[bytes], str, Path, int]]:
    """The upstream and the gateway (port, process, Root key, log, the upstream's pid),
    stopped on the way out."""
    up_port, port = free_port(), free_port()
    upstream = start([PY, str(BENCH / "upstream_fast.py"), str(up_port)], home / "upstream.log")
    gateway: subprocess.Popen[bytes] | None = None
    try:
        config = write_config(home, up_port)
        _, root_key = init(config)
        log = home / "gateway.log"
        cmd = [PY, "-m", "gateway", "serve", "--config", str(config), "--port", str(port)]
        gateway = start([*cmd, "--workers", str(WORKERS)], log)
        yield port, gateway, root_key, log, upstream.pid
    finally:
        if gateway is not None:
            stop(gateway)
        stop(upstream, 5)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    with tempfile.TemporaryDirectory(prefix="pangolin-soak-") as tmp:
        with processes(Path(tmp)) as (port, proc, root_key, log, upstream):
            result = asyncio.run(soak(port, proc, root_key, upstream, args))
            result.exit_status = stop(proc)
        result.access_lines, result.log = read_log(log)
    lines, ok = report(result)
    print("\n" + "\n".join(lines), flush=True)
    if args.out is not None:
        write_results(args.out, lines)
        print(f"\n(written to the '## Soak' section of {args.out})", flush=True)
    if not ok:
        print("soak: a target was missed (see the table above)", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
