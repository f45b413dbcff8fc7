"""Forwarding to catalog upstreams: header hygiene, upstream auth, streaming, rewrites."""

from __future__ import annotations

from .aiohttp_transport import AiohttpTransport
from .forwarder import Forwarder, ForwardRequest
from .headers import HeaderPolicy
from .transport import UpstreamTransport
from .upstream_auth import UpstreamAuth, make_upstream_auth
from .upstream_client import UpstreamClient

__all__ = (
    "AiohttpTransport",
    "ForwardRequest",
    "Forwarder",
    "HeaderPolicy",
    "UpstreamAuth",
    "UpstreamClient",
    "UpstreamTransport",
    "make_upstream_auth",
)
