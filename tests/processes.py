"""Helpers for tests that run the gateway's commands as real processes."""

from __future__ import annotations

import os
import socket

__all__ = ("clean_env", "free_port")


def free_port() -> int:
    """A loopback port that was free a moment ago (bound and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env() -> dict[str, str]:
    """This environment without any PANGOLIN_* variable of the machine running the tests."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PANGOLIN_")}
