"""Helpers for tests that run the gateway's commands as real processes."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

__all__ = (
    "REPO", "HttpUpstream", "clean_env", "free_port", "http_answers", "init_store", "start_serve"
)  # fmt: skip

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A loopback port that was free a moment ago (bound and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_answers(url: str) -> bool:
    """Whether anything answers HTTP at ``url`` (any status: the server listens)."""
    try:
        urllib.request.urlopen(url, timeout=2)  # noqa: S310 (loopback)
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def clean_env() -> dict[str, str]:
    """This environment without any PANGOLIN_* variable of the machine running the tests."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PANGOLIN_")}


def init_store(config: Path) -> tuple[str, str]:
    """``pangolin-gateway init --config config --json`` as a process: (Root id, Root key)."""
    init = subprocess.run(
        [sys.executable, "-m", "gateway", "init", "--config", str(config), "--json"],
        cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    printed = json.loads(init.stdout)
    return printed["id"], printed["api_key"]


def start_serve(config: Path, log: Path, workers: int = 1) -> subprocess.Popen[bytes]:
    """``pangolin-gateway serve --config config --workers N`` as a process, its output (both
    streams) in ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config),
             "--workers", str(workers)],
            cwd=REPO, env=clean_env(), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


class HttpUpstream:
    """A catalog stand-in in a thread, for gateway processes: it says its name in every
    answer and records the path and headers of every request; a path ending in ``/slow``
    streams 20 lines, one every 100 ms."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's names)
                upstream.paths.append(self.path)
                upstream.headers.append(dict(self.headers.items()))
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.endswith("/slow"):
                    self._stream()
                    return
                body = json.dumps({"namespaces": [], "served_by": upstream.name}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_HEAD = do_POST = do_DELETE = do_GET  # noqa: N815

            def _stream(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for n in range(20):
                    chunk = f'{{"n": {n}}}\n'.encode()
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    self.wfile.flush()
                    time.sleep(0.1)
                self.wfile.write(b"0\r\n\r\n")

            def log_message(self, *_: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
