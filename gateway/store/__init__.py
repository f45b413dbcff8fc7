"""Persistent state: the ``Store`` Protocol and its embedded SQLite implementation."""

from __future__ import annotations

from .base import (
    AuditQuery,
    AuditRecord,
    ClientInfo,
    InUse,
    LastRoot,
    MissingReference,
    Store,
    StoreError,
    UniqueViolation,
)
from .sqlite import DEFAULT_TENANT, SqliteStore

__all__ = (
    "DEFAULT_TENANT",
    "AuditQuery",
    "AuditRecord",
    "ClientInfo",
    "InUse",
    "LastRoot",
    "MissingReference",
    "SqliteStore",
    "Store",
    "StoreError",
    "UniqueViolation",
)
