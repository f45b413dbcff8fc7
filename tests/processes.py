"""Helpers for tests that run the gateway's commands as real processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

__all__ = ("REPO", "clean_env", "free_port", "init_store", "start_serve")

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A loopback port that was free a moment ago (bound and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
