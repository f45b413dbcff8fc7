"""A gateway process with forward-auth on, for the tests of the shipped proxy templates
(nginx, Envoy, Traefik in front of it and of its catalog)."""

from __future__ import annotations

import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from urllib.parse import urlsplit

from .nginx import FORWARD_AUTH_TEMPLATE, running_nginx
from .processes import free_port, init_store, start_serve

__all__ = ("SECRET", "SECRET_HEADER_NAME", "UPSTREAM_TOKEN", "Stack", "call", "until")

SECRET = secrets.token_urlsafe(32)
UPSTREAM_TOKEN = "the-gateways-own-catalog-token"
SECRET_HEADER_NAME = "X-Pangolin-Forward-Auth"
TIMEOUT = 30.0


def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Stack:
    """A gateway process with forward-auth on, and nginx in front of it and of its catalog."""

    def __init__(self, root: Path, catalog: str, *, cache_seconds: int = 0) -> None:
        self.root, self.port = root, free_port()
        self.config = root / "gateway.toml"
        self.config.write_text(
            f'[server]\nport = {self.port}\ntrusted_proxies = ["127.0.0.1"]\n'
            f'[store]\npath = "{root / "pangolin.db"}"\n'
            f'[forward_auth]\nsecret = "{SECRET}"\ncache_seconds = {cache_seconds}\n{catalog}',
            encoding="utf-8",
        )
        self.root_id, self.root_key = init_store(self.config)
        self.log = root / "gateway.log"
        self.proc: subprocess.Popen[bytes] = start_serve(self.config, self.log)
        until(self._answers, "the gateway to answer")

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"the gateway exited:\n{self.log.read_text()}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2)  # noqa: S310
        except OSError:
            return False
        return True

    def nginx(self, upstream: str, *, decision_cache: bool = False) -> AbstractContextManager[str]:
        return running_nginx(
            self.root / "nginx", FORWARD_AUTH_TEMPLATE,
            {"PANGOLIN_GATEWAY": f"127.0.0.1:{self.port}",
             "PANGOLIN_CATALOG": urlsplit(upstream).netloc,
             "PANGOLIN_FORWARD_AUTH_SECRET": SECRET},
            decision_cache=decision_cache,
        )  # fmt: skip

    def decisions(self) -> list[str]:
        """The access log's forward-auth lines."""
        return [line for line in self.log.read_text().splitlines() if "/forward-auth/" in line]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=60) == 0, self.log.read_text()


def call(url: str, method: str = "GET", headers: dict[str, str] | None = None,
         data: bytes | None = None) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    request = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 (loopback)
            return answer.status, dict(answer.headers.items()), answer.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, dict(err.headers.items()), err.read()
