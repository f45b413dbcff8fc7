"""Helpers shared by the test_forwarding_* files: calls, fake answers, assertions.

From the module these were split out of (test_forwarding.py):

Forwarding through the real app to the recording fake upstream: what the upstream receives,
what the client gets back, upstream auth, rewrites, errors and refused input.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import CIMultiDictProxy
from yarl import URL

from ..conftest import Gateway
from ..fakes import Recorded, RecordingUpstream

API = "/v1/default/v1"  # the seed's uri ".../v1/default/" plus the "v1/" clients append
INT64_MAX = 9223372036854775807
SNAPSHOT_ID = 2663087109101640605
MIB = 1024 * 1024


# -- helpers -------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def raw_url(gateway: Gateway, path: str) -> URL:
    """The gateway URL for ``path`` exactly as written (no normalization or re-quoting)."""
    return URL(str(gateway.client.make_url("/")).rstrip("/") + path, encoded=True)


async def call(
    gateway: Gateway,
    method: str,
    path: str,
    *,
    headers: Any = None,
    data: Any = None,
) -> Reply:
    async with gateway.client.session.request(
        method, raw_url(gateway, path), headers=headers, data=data, allow_redirects=False
    ) as resp:
        return Reply(resp.status, resp.headers, await resp.read())


def answer(
    upstream: RecordingUpstream,
    body: bytes = b"",
    *,
    status: int = 200,
    content_type: str | None = "application/json",
    headers: dict[str, str] | None = None,
) -> None:
    """Make the fake upstream answer every request with this response."""

    async def responder(request: web.Request, recorded: Recorded) -> web.StreamResponse:
        response = web.Response(status=status, body=body, headers=headers)
        if content_type is not None:
            response.content_type = content_type
        return response

    upstream.responder = responder


def answer_json(upstream: RecordingUpstream, doc: Any, **kwargs: Any) -> None:
    answer(upstream, json.dumps(doc).encode(), **kwargs)


def assert_iceberg_error(reply: Reply, status: int) -> None:
    assert reply.status == status, reply.body
    assert reply.headers["Content-Type"].startswith("application/json")
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "code"}
    assert error["code"] == status
    assert isinstance(error["message"], str) and isinstance(error["type"], str)


async def chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """A request body without Content-Length (sent chunked)."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


# -- /v1/config and table responses --------------------------------------------------------


UPSTREAM_CONFIG = {
    "defaults": {
        "uri": "http://upstream:8181/",
        "oauth2-server-uri": "http://upstream:8181/v1/oauth/tokens",
        "token": "upstream-token",
        "credential": "id:secret",
        "header.X-Foo": "bar",
        "clients": "4",
    },
    "overrides": {"prefix": "warehouse", "uri": "http://upstream:8181/", "token": "t"},
    "endpoints": ["GET /v1/{prefix}/namespaces"],
}


def load_table_result(config: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata-location": "s3://bucket/ns/t/metadata/00001.metadata.json",
        "metadata": {
            "current-snapshot-id": SNAPSHOT_ID,
            "snapshots": [{"snapshot-id": SNAPSHOT_ID, "sequence-number": INT64_MAX}],
        },
        "config": config,
    }


def endless_upstream(gateway: Gateway) -> asyncio.Event:
    """Make the upstream stream one endless body; the event is set once the gateway has let
    go of that upstream connection."""
    done = asyncio.Event()

    async def endless(request: web.Request, recorded: Recorded) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        try:
            while True:  # until the gateway lets go of this connection
                await response.write(b"x" * 256 * 1024)
        except ConnectionError:
            return response
        finally:
            done.set()

    gateway.upstream.responder = endless
    return done
