"""Persistent state: the ``Store`` Protocol, its embedded SQLite implementation and the
PostgreSQL one for replicas (``make_store`` picks by the settings)."""

from __future__ import annotations

from ..settings import StoreSettings
from .base import (
    AuditQuery,
    AuditRecord,
    ClientInfo,
    InUse,
    LastRoot,
    MissingReference,
    Store,
    StoreError,
    StoreUnavailable,
    UniqueViolation,
    uninterrupted,
)
from .postgres import PostgresStore
from .sqlite import DEFAULT_TENANT, SqliteStore

__all__ = (
    "DEFAULT_TENANT",
    "AuditQuery",
    "AuditRecord",
    "ClientInfo",
    "InUse",
    "LastRoot",
    "MissingReference",
    "PostgresStore",
    "SqliteStore",
    "make_store",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "UniqueViolation",
    "uninterrupted",
)


def make_store(settings: StoreSettings) -> SqliteStore | PostgresStore:
    """The store the settings name (not opened): PostgreSQL with ``url``, else SQLite."""
    if settings.url:
        return PostgresStore(settings.url, password=settings.password, pool_size=settings.pool_size)
    return SqliteStore(settings.path)
