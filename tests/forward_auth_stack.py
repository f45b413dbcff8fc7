"""A gateway process with forward-auth on, for the tests of the shipped proxy templates
(nginx, Envoy, Traefik in front of it and of its catalog)."""

from __future__ import annotations

import json
import re
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

from pyiceberg.catalog import load_catalog

from .live import SeaweedUpstream
from .nginx import FORWARD_AUTH_TEMPLATE, running_nginx
from .processes import free_port, init_store, start_serve
from .roundtrip import roundtrip

__all__ = (
    "SECRET", "SECRET_HEADER_NAME", "UPSTREAM_TOKEN", "Stack", "assert_a_rotated_key_dies_at_once",
    "assert_decided", "call", "create_tenant_user", "pyiceberg_through", "recording_catalog",
    "rotate", "seaweed_stack", "until",
)  # fmt: skip

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
        """The access log's forward-auth lines (each names the request decided, and ends with
        its dialect)."""
        lines = self.log.read_text().splitlines()
        return [line for line in lines if re.search(r" forward_auth=\w+$", line)]

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


def recording_catalog(upstream: str) -> str:
    """The config of a catalog in front of a recording upstream, with a static upstream
    credential (``UPSTREAM_TOKEN``): what the proxies' header tests check."""
    return (
        f'[catalogs.default]\nupstream = "{upstream}"\n'
        f'[catalogs.default.upstream_auth]\ntype = "bearer"\ntoken = "{UPSTREAM_TOKEN}"\n'
    )


def create_tenant_user(url: str, stack: Stack, name: str = "etl") -> tuple[str, str]:
    """A TenantUser made through the management API at ``url``: (id, key)."""
    status, _, body = call(
        f"{url}/api/v1/service-users", "POST",
        {"X-API-Key": stack.root_key, "Content-Type": "application/json"},
        json.dumps({"name": name, "role": "TenantUser"}).encode(),
    )  # fmt: skip
    assert status == 201, body
    created = json.loads(body)
    return created["service_user"]["id"], created["api_key"]


def rotate(url: str, stack: Stack, user_id: str) -> str:
    """Rotate ``user_id``'s key through the management API at ``url``: the new key."""
    status, _, body = call(
        f"{url}/api/v1/service-users/{user_id}/rotate", "POST",
        {"X-API-Key": stack.root_key, "Content-Type": "application/json"}, b"{}",
    )  # fmt: skip
    assert status == 200, body
    return str(json.loads(body)["api_key"])


def assert_a_rotated_key_dies_at_once(url: str, stack: Stack) -> None:
    """Without a decision cache, the very next request with the old key is refused."""
    user_id, old_key = create_tenant_user(url, stack)
    assert call(f"{url}/v1/namespaces/a", headers={"X-API-Key": old_key})[0] == 200
    new_key = rotate(url, stack, user_id)
    status, _, body = call(f"{url}/v1/namespaces/a", headers={"X-API-Key": old_key})
    assert status == 401
    assert json.loads(body)["error"]["code"] == 401
    assert call(f"{url}/v1/namespaces/a", headers={"X-API-Key": new_key})[0] == 200


def seaweed_stack(root: Path, seaweed: SeaweedUpstream) -> Stack:
    """A stack in front of the real SeaweedFS, with its credential (``seaweed.catalog()``)."""
    catalog = seaweed.catalog()
    auth = catalog.upstream_auth
    return Stack(
        root,
        f'[catalogs.default]\nupstream = "{catalog.upstream}"\n'
        f'warehouse = "{catalog.warehouse}"\n[catalogs.default.upstream_auth]\n'
        f'type = "oauth2"\nclient_id = "{auth.client_id}"\n'
        f'client_secret = "{auth.client_secret}"\n',
    )


def pyiceberg_through(url: str, stack: Stack, seaweed: SeaweedUpstream) -> None:
    """The PyIceberg round trip through the proxy at ``url``, then the namespace operations
    forward-auth decides (load, probe, drop)."""
    properties = {
        "type": "rest", "uri": f"{url}/", "credential": f"{stack.root_id}:{stack.root_key}",
        "oauth2-server-uri": f"{url}/v1/oauth/tokens", **seaweed.s3_properties(),
    }  # fmt: skip
    roundtrip(properties)
    client = load_catalog("through-the-proxy", **properties)
    namespace = f"fa_{secrets.token_hex(4)}"
    client.create_namespace(namespace, {"owner": "etl"})
    assert client.load_namespace_properties(namespace)["owner"] == "etl"
    assert client.namespace_exists(namespace)
    assert not client.table_exists(f"{namespace}.missing")
    client.drop_namespace(namespace)
    assert not client.namespace_exists(namespace)


def assert_decided(stack: Stack, dialect: str, at_least: int = 5) -> None:
    """The gateway's access log holds ``at_least`` allow decisions in ``dialect``: requests
    the gateway decided and the proxy carried."""
    allowed = [line for line in stack.decisions()
               if line.endswith(f" forward_auth={dialect}") and " status=200 " in line]  # fmt: skip
    assert len(allowed) >= at_least, stack.log.read_text()
