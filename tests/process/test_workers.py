"""`pangolin-gateway serve --workers N` as a real process tree: the workers share the port,
a change made through one worker is enforced by every worker within the stated bound, and
SIGTERM stops everything cleanly (last_used flushed by every worker), and /metrics answers for
every worker whichever takes the scrape.

Which worker answered is told by ``/healthz`` (its pid): requests on one keep-alive
connection all reach the worker that accepted it, and fresh connections are spread over the
workers by the kernel (SO_REUSEPORT)."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import math
import os
import re
import signal
import stat
import subprocess
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from gateway.cli import main
from gateway.serve.cores import usable_cores
from gateway.serve.metrics_share import SNAPSHOT_SECONDS, parse
from gateway.store import SqliteStore

from ..processes import free_port, init_store, start_serve

REPO = Path(__file__).resolve().parents[2]
# The bound the README states: store.change_poll_seconds (0.5 s) plus one request.
PROPAGATION_BOUND = 1.0
# A scrape may miss up to SNAPSHOT_SECONDS of the other workers' counts (README); plus slack.
METRICS_BOUND = SNAPSHOT_SECONDS + 1.0

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            state = stat.read().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _children(pid: int) -> set[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return {int(line) for line in found.stdout.split()}


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return int(stat.read().rpartition(")")[2].split()[1])


@dataclass
class Answer:
    pid: int  # the worker that answered
    statuses: list[int]


class Served:
    """The gateway's process tree, started like an operator would, on its own port."""

    def __init__(self, tmp_path: Path, workers: int, limits: str = "") -> None:
        self.port = free_port()
        self.config = tmp_path / "gateway.toml"
        self.store = tmp_path / "pangolin.db"
        self.config.write_text(
            f'[server]\nport = {self.port}\n[store]\npath = "{self.store}"\n'
            # They poll revoked keys until refused, from one address: not the backoff's test.
            "[limits]\nfailed_auth_per_key = 1000000\nfailed_auth_per_address = 1000000\n"
            f"{limits}"
            # Never reached: these tests use only the gateway's own endpoints.
            '[catalogs.default]\nupstream = "http://127.0.0.1:9"\n',
            encoding="utf-8",
        )
        self.root_id, self.root_key = init_store(self.config)
        self.workers = workers
        self.log = tmp_path / "gateway.log"
        self.proc = start_serve(self.config, self.log, workers)
        self.started: set[int] = set()  # every process of the tree seen: all must end

    # -- HTTP ---------------------------------------------------------------------------------

    def request(
        self, method: str, path: str, key: str | None = None, *, body: Any = None,
        conn: http.client.HTTPConnection | None = None, form: dict[str, str] | None = None,
    ) -> tuple[int, Any]:  # fmt: skip
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {"X-API-Key": key} if key and key.startswith("pgl_") else {}
        if key and not key.startswith("pgl_"):
            headers["Authorization"] = f"Bearer {key}"
        data: bytes | None = None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
        finally:
            if own:
                conn.close()

    def answer(self, *credentials: str) -> Answer:
        """On one fresh connection: which worker took it, then /api/v1/me per credential."""
        with contextlib.closing(
            http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        ) as conn:
            status, health = self.request("GET", "/healthz", conn=conn)
            assert status == 200
            sock = conn.sock
            statuses = [self.request("GET", "/api/v1/me", c, conn=conn)[0] for c in credentials]
            assert conn.sock is sock, "the connection was not kept alive"
            return Answer(int(health["pid"]), statuses)

    def refused(self) -> int:
        """On one fresh connection: a catalog request with no credential (401, counted as an
        auth failure "missing"); the pid of the worker that answered it."""
        with contextlib.closing(
            http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        ) as conn:
            pid = int(self.request("GET", "/healthz", conn=conn)[1]["pid"])
            assert self.request("GET", "/v1/default/v1/namespaces", conn=conn)[0] == 401
            return pid

    def scrape(self) -> tuple[int, Samples]:
        """On one fresh connection: which worker took it, and its answer to /metrics."""
        with contextlib.closing(
            http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        ) as conn:
            pid = int(self.request("GET", "/healthz", conn=conn)[1]["pid"])
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            text = resp.read().decode()
            assert resp.status == 200, text
        samples = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        return pid, samples

    def on_worker(self, pid: int, *credentials: str, timeout: float = 10.0) -> Answer:
        """Answer from worker ``pid`` (fresh connections until one lands there)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.closing(
                http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            ) as conn:
                if self.request("GET", "/healthz", conn=conn)[1]["pid"] != pid:
                    continue
                statuses = [self.request("GET", "/api/v1/me", c, conn=conn)[0] for c in credentials]
                return Answer(pid, statuses)
        pytest.fail(f"no connection reached worker {pid} in {timeout} s")

    # -- process tree -------------------------------------------------------------------------

    def wait_for_workers(self, timeout: float = 60.0) -> set[int]:
        """The pids of the workers, once each has answered."""
        deadline = time.monotonic() + timeout
        pids: set[int] = set()
        while time.monotonic() < deadline and len(pids) < self.workers:
            assert self.proc.poll() is None, self.output()
            try:
                status, health = self.request("GET", "/healthz")
            except OSError:
                time.sleep(0.05)  # not listening yet
                continue
            assert status == 200
            pids.add(int(health["pid"]))
        assert len(pids) == self.workers, f"workers answering: {pids}\n{self.output()}"
        self.started |= pids | _children(self.proc.pid)
        return pids

    def stop(self) -> int:
        self.started |= _children(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def wait_all_gone(self, timeout: float = 10.0) -> set[int]:
        deadline = time.monotonic() + timeout
        left = {pid for pid in self.started | {self.proc.pid} if _alive(pid)}
        while left and time.monotonic() < deadline:
            time.sleep(0.02)
            left = {pid for pid in left if _alive(pid)}
        return left

    def kill_leftovers(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=60)
        for pid in self.started:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    # -- management ---------------------------------------------------------------------------

    def create_user(self, name: str) -> tuple[str, str]:
        status, body = self.request(
            "POST", "/api/v1/service-users", self.root_key, body={"name": name}
        )
        assert status == 201, body
        return body["service_user"]["id"], body["api_key"]

    def token(self, user_id: str, key: str) -> str:
        status, body = self.request(
            "POST", "/v1/oauth/tokens",
            form={"grant_type": "client_credentials", "client_id": user_id, "client_secret": key},
        )  # fmt: skip
        assert status == 200, body
        token: str = body["access_token"]
        return token


@contextlib.contextmanager
def served(tmp_path: Path, workers: int, limits: str = "") -> Iterator[Served]:
    gateway = Served(tmp_path, workers, limits)
    try:
        yield gateway
    finally:
        gateway.kill_leftovers()


def test_every_worker_answers_and_is_a_child_of_the_supervisor(tmp_path: Path) -> None:
    with served(tmp_path, 2) as gateway:
        pids = gateway.wait_for_workers()
        assert all(_ppid(pid) == gateway.proc.pid for pid in pids)
        assert gateway.proc.pid not in pids
        # Every worker authenticates (its own store connections and caches).
        for pid in pids:
            assert gateway.on_worker(pid, gateway.root_key).statuses == [200]
        assert gateway.stop() == 0
        assert gateway.wait_all_gone() == set()
    assert "uvloop.Loop" in gateway.output()


def test_a_rate_limit_is_the_instances_whichever_workers_the_connections_reach(
    tmp_path: Path,
) -> None:
    # 1 request/s with bursts of 5, for every service user (Root too): one table in shared
    # memory for both workers, so they share each bucket.
    with served(tmp_path, 2, "requests_per_second = 1\nburst = 5\n") as gateway:
        pids = gateway.wait_for_workers()
        began = time.monotonic()
        answers = [gateway.answer(gateway.root_key) for _ in range(20)]
        elapsed = time.monotonic() - began
        assert {a.pid for a in answers} == set(pids)  # both workers took some
        accepted = sum(a.statuses.count(200) for a in answers)
        refused = sum(a.statuses.count(429) for a in answers)
        assert accepted + refused == 20
        # The burst, and what one per second adds meanwhile; per worker it would be twice.
        assert 5 <= accepted <= 5 + math.ceil(elapsed) + 1, (accepted, elapsed)
        assert gateway.stop() == 0


@pytest.mark.parametrize("change", ["rotate", "deactivate"])
def test_a_change_through_one_worker_is_enforced_by_every_worker_within_the_bound(
    tmp_path: Path, change: str
) -> None:
    with served(tmp_path, 2) as gateway:
        pids = gateway.wait_for_workers()
        user_id, key = gateway.create_user("etl")
        token = gateway.token(user_id, key)
        # Every worker has accepted (and so cached) the key and the token before the change.
        for pid in pids:
            assert gateway.on_worker(pid, key, token).statuses == [200, 200]

        with contextlib.closing(
            http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
        ) as conn:
            changer = gateway.request("GET", "/healthz", conn=conn)[1]["pid"]
            started = time.monotonic()
            if change == "rotate":
                status, body = gateway.request(
                    "POST", f"/api/v1/service-users/{user_id}/rotate", gateway.root_key, conn=conn
                )
                assert status == 200 and body["api_key"] != key
            else:
                status, body = gateway.request(
                    "PUT", f"/api/v1/service-users/{user_id}", gateway.root_key, conn=conn,
                    body={"active": False},
                )  # fmt: skip
                assert status == 200 and body["active"] is False
            # The worker that made the change enforces it at once.
            statuses = [gateway.request("GET", "/api/v1/me", c, conn=conn)[0] for c in (key, token)]
            assert statuses == [401, 401]

        # Fresh connections until every worker has refused both the old key and the token.
        refused_at: dict[int, float] = {changer: time.monotonic() - started}
        accepted_after_refusal: list[Answer] = []
        while set(refused_at) != pids and time.monotonic() - started < 10 * PROPAGATION_BOUND:
            answer = gateway.answer(key, token)
            if answer.statuses == [401, 401]:
                refused_at.setdefault(answer.pid, time.monotonic() - started)
            elif answer.pid in refused_at:
                accepted_after_refusal.append(answer)
            time.sleep(0.005)

        assert set(refused_at) == pids, f"still accepted by {pids - set(refused_at)}"
        assert accepted_after_refusal == []
        slowest = max(refused_at.values())
        print(f"\n{change}: enforced by every worker after {slowest:.3f} s ({refused_at})")
        assert slowest < PROPAGATION_BOUND
        assert gateway.stop() == 0
        assert gateway.wait_all_gone() == set()


async def _last_used(store: Path, ids: list[str]) -> list[float | None]:
    async with SqliteStore(store) as opened:
        users = [await opened.service_user(id_) for id_ in ids]
    return [user.last_used_at if user is not None else None for user in users]


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_stops_every_worker_gracefully_and_exits_0(tmp_path: Path, workers: int) -> None:
    with served(tmp_path, workers) as gateway:
        pids = gateway.wait_for_workers()
        # One identity used on each worker only: its last_used is in that worker's memory
        # (written every 30 s by default), so only that worker's shutdown can flush it.
        used = []
        for index, pid in enumerate(sorted(pids)):
            user_id, key = gateway.create_user(f"user{index}")
            assert gateway.on_worker(pid, key).statuses == [200]
            used.append(user_id)

        assert gateway.stop() == 0, gateway.output()
        assert gateway.wait_all_gone() == set()
        assert len(gateway.started) >= workers  # the workers (and multiprocessing's helper)

    assert None not in asyncio.run(_last_used(gateway.store, used))
    assert "Traceback" not in gateway.output()


def test_a_worker_that_dies_stops_the_gateway_with_exit_1(tmp_path: Path) -> None:
    """No silent half-capacity: the supervisor stops the rest and the process manager restarts
    the whole gateway."""
    with served(tmp_path, 2) as gateway:
        victim, survivor = sorted(gateway.wait_for_workers())
        os.kill(victim, signal.SIGKILL)
        assert gateway.proc.wait(timeout=60) == 1
        assert gateway.wait_all_gone() == set()
    output = gateway.output()
    assert f"worker pid {victim} exited unexpectedly" in output
    assert f"(pid {survivor}) stopped" in output  # stopped gracefully, not killed


def test_workers_default_to_the_cores_option_and_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []

    def serve_settings(settings: object, **kwargs: Any) -> int:
        calls.append(kwargs)
        return 0

    monkeypatch.setattr("gateway.serve.runner.serve_settings", serve_settings)
    for name in list(os.environ):
        if name.startswith("PANGOLIN_"):
            monkeypatch.delenv(name)
    config = tmp_path / "gateway.toml"
    config.write_text('[catalogs.default]\nupstream = "http://127.0.0.1:9"\n', encoding="utf-8")
    runner = CliRunner()

    assert runner.invoke(main, ["serve", "-c", str(config)]).exit_code == 0
    assert runner.invoke(main, ["serve", "-c", str(config), "--workers", "3"]).exit_code == 0
    # PANGOLIN_WORKERS is the option's, not an (unknown) setting.
    env = {"PANGOLIN_WORKERS": "4"}
    result = runner.invoke(main, ["serve", "-c", str(config)], env=env)
    assert result.exit_code == 0, result.output
    checked = runner.invoke(main, ["check-config", "-c", str(config)], env=env)
    assert checked.exit_code == 0, checked.output
    auto = runner.invoke(main, ["serve", "-c", str(config), "--workers", "auto"])
    assert auto.exit_code == 0, auto.output
    cores = usable_cores()  # the default: "auto"
    assert [call["workers"] for call in calls] == [cores, 3, 4, cores]

    refused = runner.invoke(main, ["serve", "-c", str(config), "--workers", "0"])
    assert refused.exit_code == 2 and "--workers" in refused.stderr


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _assert_no_counter_went_down(before: Samples, after: Samples) -> None:
    for (name, labels), value in before.items():
        if name.startswith("process_"):  # the answering worker's own process
            continue
        if name.endswith(("_total", "_bucket", "_count", "_sum")):
            assert after.get((name, labels), 0.0) >= value, (name, dict(labels))


def test_metrics_answer_for_every_worker_whichever_takes_the_scrape(tmp_path: Path) -> None:
    """Requests spread over both workers all show in /metrics, whichever worker answers the
    scrape, within the stated bound; no counter ever goes down from one scrape to the next,
    and none counts more than what was sent."""
    requests = 40
    missing = "pangolin_auth_failures_total"
    with served(tmp_path, 2) as gateway:
        pids = gateway.wait_for_workers()
        found = re.search(r"metrics shared in (\S+)", gateway.output())
        assert found is not None, gateway.output()
        shared = Path(found.group(1))
        assert stat.S_IMODE(shared.stat().st_mode) == 0o700

        scrapes: list[Samples] = []

        def scrape() -> tuple[int, Samples]:
            pid, samples = gateway.scrape()
            assert pid in pids
            assert _value(samples, "pangolin_workers") == 2  # both published before serving
            assert _value(samples, missing, reason="missing") <= sum(sent.values())
            if scrapes:
                _assert_no_counter_went_down(scrapes[-1], samples)
            scrapes.append(samples)
            return pid, samples

        # Fresh connections until both workers have answered a fair share, scraping between
        # (never after the last request).
        sent: Counter[int] = Counter()
        deadline = time.monotonic() + 30
        while sum(sent.values()) < requests or min(sent[pid] for pid in pids) < requests // 4:
            assert time.monotonic() < deadline, f"refused requests per worker: {sent}"
            if sum(sent.values()) % 4 == 3:
                scrape()
            sent[gateway.refused()] += 1
        total = sum(sent.values())
        last_request = time.monotonic()

        # With no scrape since, each worker's periodic snapshot catches up with what it was
        # sent (files named by index, each holding its writer's pid).
        def counted() -> dict[int, int]:
            by_pid: dict[int, int] = {}
            for path in shared.glob("worker-*.json"):
                text = path.read_text(encoding="utf-8")
                by_pid[json.loads(text)["pid"]] = parse(text)["auth_failures"]["missing"]
            return by_pid

        while counted() != sent and time.monotonic() - last_request < 10 * METRICS_BOUND:
            time.sleep(0.01)
        assert counted() == sent
        published = time.monotonic() - last_request

        # Then every scrape counts every request, whichever worker answers it.
        answered: set[int] = set()
        while answered != pids and time.monotonic() - last_request < 10 * METRICS_BOUND:
            pid, samples = scrape()
            answered.add(pid)
            assert _value(samples, missing, reason="missing") == total
            assert _value(
                samples, "pangolin_requests_total", catalog="default", route="namespace",
                status="401",
            ) == total  # fmt: skip
            assert _value(
                samples, "pangolin_request_duration_seconds_count", route="namespace"
            ) == total  # fmt: skip
        assert answered == pids
        print(f"\n{total} requests {dict(sent)}: every worker's snapshot after {published:.3f} s")
        assert published < METRICS_BOUND

        assert gateway.stop() == 0, gateway.output()
        assert gateway.wait_all_gone() == set()
    assert not shared.exists()  # the supervisor removed the snapshots
    assert "Traceback" not in gateway.output()
