"""SIGHUP reloads the catalogs and role headers of a real ``pangolin-gateway serve`` process
(issue 14), alone and with ``--workers 2`` (the supervisor checks the file once and reloads one
worker after another): the next requests go where the new file says, with the new role
headers, while an answer streaming since before the reload arrives whole on the same
connection; a file that fails ``check-config`` is refused, its problem logged, and the
configuration in force stays."""

from __future__ import annotations

import http.client
import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ..processes import HttpUpstream, free_port, init_store, start_serve

TIMEOUT = 30.0


def until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def upstreams() -> Iterator[tuple[HttpUpstream, HttpUpstream]]:
    a, b = HttpUpstream("a"), HttpUpstream("b")
    try:
        yield a, b
    finally:
        a.close()
        b.close()


class Served:
    def __init__(self, root: Path, upstream: str, workers: int) -> None:
        self.port = free_port()
        self.config = root / "gateway.toml"
        self.store = root / "pangolin.db"
        self.write(f'[catalogs.default]\nupstream = "{upstream}"\n')
        _, self.key = init_store(self.config)
        self.log = root / "gateway.log"
        self.proc = start_serve(self.config, self.log, workers)
        until(self._answers, "the gateway to answer")
        if workers > 1:
            until(lambda: self.log.read_text().count(" serving on ") == workers, "every worker")

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"the gateway exited:\n{self.log.read_text()}")
        conn = self.connection()
        try:
            conn.request("GET", "/healthz")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def write(self, rest: str) -> None:
        self.config.write_text(
            f'[server]\nport = {self.port}\n[store]\npath = "{self.store}"\n{rest}',
            encoding="utf-8",
        )

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def served_by(self, path: str = "/v1/namespaces") -> str:
        """Which upstream answers ``path`` on a fresh connection (any worker may take it)."""
        conn = self.connection()
        try:
            conn.request("GET", path, headers={"X-API-Key": self.key})
            answer = conn.getresponse()
            body = answer.read()
            assert answer.status == 200, body
            return str(json.loads(body)["served_by"])
        finally:
            conn.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_reloads_catalogs_and_role_headers_without_cutting_an_answer_in_flight(
    tmp_path: Path, upstreams: tuple[HttpUpstream, HttpUpstream], workers: int
) -> None:
    a, b = upstreams
    served = Served(tmp_path, a.url, workers)
    streaming = served.connection()
    try:
        assert served.served_by() == "a"
        streaming.request("GET", "/v1/namespaces/slow", headers={"X-API-Key": served.key})
        answer = streaming.getresponse()
        assert answer.status == 200
        first = answer.readline()

        served.write(
            '[role_headers]\nrole = "X-Catalog-Role"\n'
            f'[catalogs.default]\nupstream = "{b.url}"\n'
            f'[catalogs.extra]\nupstream = "{a.url}"\n'
        )
        served.proc.send_signal(signal.SIGHUP)
        # Fresh connections are spread over the workers: every one must have reloaded.
        until(lambda: all(served.served_by() == "b" for _ in range(12)),
              "every worker to send the default catalog to the new upstream")  # fmt: skip
        assert served.served_by("/v1/extra/v1/namespaces") == "a"
        assert b.headers[-1]["X-Catalog-Role"] == "Root"
        assert "X-Pangolin-Role" not in b.headers[-1]

        # The answer that was streaming during the reload arrives whole.
        lines = (first + answer.read()).decode().splitlines()
        assert lines == [f'{{"n": {n}}}' for n in range(20)]

        # A broken file is refused, the problem named, and the configuration in force stays.
        served.write(f'[catalogs.default]\nupstream = "{b.url}"\nwarehouse = 5\n')
        served.proc.send_signal(signal.SIGHUP)
        until(lambda: "configuration refused" in served.log.read_text(), "the refusal")
        assert "catalogs.default.warehouse" in served.log.read_text()
        assert all(served.served_by("/v1/extra/v1/namespaces") == "a" for _ in range(6))
        assert served.proc.poll() is None
    finally:
        streaming.close()
        assert served.stop() == 0, served.log.read_text()
    log = served.log.read_text()
    assert log.count("configuration reloaded: added catalog(s) extra") == workers, log
    assert served.key not in log
