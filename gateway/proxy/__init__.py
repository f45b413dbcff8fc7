"""Forwarding to catalog upstreams: header hygiene, upstream auth, streaming, rewrites."""

from __future__ import annotations

from .forwarder import Forwarder, ForwardRequest
from .headers import HeaderPolicy
from .upstream_auth import UpstreamAuth, make_upstream_auth
from .upstream_client import UpstreamClient

__all__ = (
    "ForwardRequest",
    "Forwarder",
    "HeaderPolicy",
    "UpstreamAuth",
    "UpstreamClient",
    "make_upstream_auth",
)
