"""`make run` end to end: the demo starts a real SeaweedFS and the gateway, prints a PyIceberg
snippet that works when pasted as printed and a UI administrator whose password works, stops
everything on Ctrl-C and when its terminal closes (SIGHUP), and runs again."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ..processes import free_port

pytestmark = pytest.mark.seaweedfs

REPO = Path(__file__).resolve().parents[2]
END_OF_SNIPPET = "print(catalog.list_namespaces())"


class Demo:
    """`pangolin-gateway demo` as `make run` starts it, with its own port and store."""

    def __init__(self, tmp_path: Path, port: int) -> None:
        env = {
            **os.environ,
            "PANGOLIN_SERVER__PORT": str(port),
            "PANGOLIN_STORE__PATH": str(tmp_path / "pangolin.db"),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "demo", "--config", "config/gateway.toml",
             "--data-dir", str(tmp_path / "demo")],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for_snippet(self, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.output.append(line)
            if line.strip() == END_OF_SNIPPET:
                text = "".join(self.output)
                return text[text.index("from pyiceberg.catalog import load_catalog") :]
        self.stop()
        pytest.fail("demo printed no snippet:\n" + "".join(self.output))

    def wait_until_serving(self, port: int, timeout: float = 60.0) -> None:
        """The welcome is printed just before the server listens: poll /healthz."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5):
                    return
            except OSError:
                pass  # not listening yet
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=0.05)  # paces the poll, and notices an early exit
            assert self.proc.returncode is None, "".join(self.output)
        pytest.fail("the demo did not answer /healthz:\n" + "".join(self.output))

    def stop(self, sig: signal.Signals = signal.SIGINT) -> int:
        """Ctrl-C as a terminal sends it (or ``sig``: SIGHUP when the terminal closes);
        returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=60)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return code


# Without it, exit may hang once pyarrow used S3 (apache/arrow#50188).
_FINALIZE_S3 = "import pyarrow.fs\npyarrow.fs.finalize_s3()\n"


def _run_snippet(snippet: str, extra: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", snippet + extra + _FINALIZE_S3],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _weed_running(data_dir: Path) -> bool:
    found = subprocess.run(["pgrep", "-f", str(data_dir)], capture_output=True, text=True)
    return bool(found.stdout.strip())


def _admin_login(output: str, port: int) -> int:
    """The status of a login with the UI administrator's printed password."""
    found = re.search(r"user 'admin' \(Root\), password: (\S+)", output)
    assert found is not None, output
    assert f"admin UI: http://127.0.0.1:{port}/ui/" in output
    body = json.dumps({"username": "admin", "password": found.group(1)}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/login", data=body,
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return refused.code


def test_make_run_snippet_works_as_printed_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    port = free_port()
    first = Demo(tmp_path, port)
    try:
        snippet = first.wait_for_snippet()
        assert "credential" in snippet and f"127.0.0.1:{port}/v1/default/" in snippet
        first_output = "".join(first.output)
        first.wait_until_serving(port)
        assert _admin_login(first_output, port) == 200
        assert "make shell" in first_output
        out = _run_snippet(
            snippet,
            "import pyarrow as pa\n"
            "catalog.create_namespace('demo')\n"
            "t = catalog.create_table('demo.t', schema=pa.schema([('id', pa.int64())]))\n"
            "t.append(pa.table({'id': [1, 2, 3]}))\n"
            "print(sorted(catalog.load_table('demo.t').scan().to_arrow()['id'].to_pylist()))\n",
        )
        assert out.strip().endswith("[1, 2, 3]")
    finally:
        stopped = first.stop()  # never leave a demo running, even when a check failed
    assert stopped == 0
    assert not _weed_running(tmp_path / "demo")

    # A second run reuses the store and the catalog data, and issues a fresh key and a fresh
    # admin password (the first one no longer works).
    second = Demo(tmp_path, port)
    try:
        snippet2 = second.wait_for_snippet()
        second.wait_until_serving(port)
        assert _admin_login("".join(second.output), port) == 200
        assert _admin_login(first_output, port) == 401
        assert snippet2 != snippet
        out = _run_snippet(snippet2, "print(catalog.list_tables('demo'))\n")
        assert "('demo', 't')" in out
        # The previous run's key was rotated away.
        refused = subprocess.run(
            [sys.executable, "-c", snippet], capture_output=True, text=True, timeout=120
        )
        assert refused.returncode != 0
    finally:
        # Closing the terminal stops everything too.
        assert second.stop(signal.SIGHUP) == 0
    assert not _weed_running(tmp_path / "demo")
