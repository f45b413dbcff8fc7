"""Every table of the store, in SQL both engines read: what ``SqliteStore`` and
``PostgresStore`` share, over their own connections (``core.StoreCore``)."""

from __future__ import annotations

from .audit_table import AuditTable
from .counts_table import CountTables
from .grants_table import GrantTables
from .identity_tables import IdentityTables
from .sessions_table import SessionTables

__all__ = ("StoreTables",)


class StoreTables(IdentityTables, SessionTables, AuditTable, GrantTables, CountTables):
    """Tenants, service users, usage, signing keys, human users and their sessions, the audit
    log, roles and grants, and the counts every process shares."""
