"""Schema migrations for both engines, from one list, applied in order.

Each entry is written once, in SQLite's dialect; ``Migration.postgres`` is the same script
with the few type names PostgreSQL spells differently (``BLOB``, ``REAL``, ``AUTOINCREMENT``,
``WITHOUT ROWID``), so the two schemas cannot drift apart. SQLite records how far a store is
in ``PRAGMA user_version``, PostgreSQL in ``schema_version``. Each entry runs in one
transaction together with its version bump, so a crash mid-migration leaves the store at the
previous version. Never edit a released entry: append a new one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = ("MIGRATIONS", "Migration")

# SQLite's spelling -> PostgreSQL's. Times are epoch seconds as 64-bit floats in both.
_POSTGRES_TYPES: Final = (
    (re.compile(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b"), "BIGSERIAL PRIMARY KEY"),
    (re.compile(r"\bBLOB\b"), "BYTEA"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    (re.compile(r"\)\s*WITHOUT ROWID"), ")"),
)


@dataclass(frozen=True, slots=True)
class Migration:
    sqlite: str

    @property
    def postgres(self) -> str:
        script = self.sqlite
        for pattern, replacement in _POSTGRES_TYPES:
            script = pattern.sub(replacement, script)
        return script


_SCRIPTS: Final[tuple[str, ...]] = (
    # 1: tenants, service users, human users, signing keys, audit log, change counter.
    """
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    -- Bumped in the same transaction as every identity change; other processes poll it to
    -- drop their caches, which is what bounds how long a rotated key stays usable elsewhere.
    INSERT INTO meta (key, value) VALUES ('identity_version', '0');

    CREATE TABLE tenants (
        id         TEXT PRIMARY KEY,
        name       TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL
    );

    CREATE TABLE service_users (
        id             TEXT PRIMARY KEY,
        tenant_id      TEXT NOT NULL REFERENCES tenants (id),
        name           TEXT NOT NULL,
        description    TEXT NOT NULL DEFAULT '',
        role           TEXT NOT NULL CHECK (role IN ('Root', 'TenantAdmin', 'TenantUser')),
        key_id         TEXT NOT NULL UNIQUE,
        key_digest     BLOB NOT NULL,
        created_at     REAL NOT NULL,
        created_by     TEXT,
        expires_at     REAL,
        active         INTEGER NOT NULL DEFAULT 1,
        last_used_at   REAL,
        key_rotated_at REAL,
        key_generation INTEGER NOT NULL DEFAULT 1,
        UNIQUE (tenant_id, name)
    );

    CREATE INDEX service_users_tenant ON service_users (tenant_id, name);

    CREATE TABLE users (
        id                  TEXT PRIMARY KEY,
        tenant_id           TEXT NOT NULL REFERENCES tenants (id),
        username            TEXT NOT NULL UNIQUE,
        role                TEXT NOT NULL CHECK (role IN ('Root', 'TenantAdmin', 'TenantUser')),
        password_hash       TEXT NOT NULL,
        created_at          REAL NOT NULL,
        created_by          TEXT,
        active              INTEGER NOT NULL DEFAULT 1,
        last_login_at       REAL,
        failed_logins       INTEGER NOT NULL DEFAULT 0,
        password_changed_at REAL NOT NULL,
        session_generation  INTEGER NOT NULL DEFAULT 1
    );

    CREATE TABLE signing_keys (
        kid        TEXT PRIMARY KEY,
        private_jwk TEXT NOT NULL,
        created_at REAL NOT NULL
    );

    CREATE TABLE audit_log (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        at          REAL NOT NULL,
        actor       TEXT NOT NULL,
        action      TEXT NOT NULL,
        target_type TEXT,
        target_id   TEXT,
        tenant_id   TEXT,
        outcome     TEXT NOT NULL CHECK (outcome IN ('success', 'failure')),
        client_addr TEXT,
        user_agent  TEXT,
        detail      TEXT
    );
    CREATE INDEX audit_log_at ON audit_log (at);
    CREATE INDEX audit_log_actor ON audit_log (actor);
    CREATE INDEX audit_log_target ON audit_log (target_id);
    CREATE INDEX audit_log_tenant ON audit_log (tenant_id);
    """,
    # 2: human sessions live in the store, so logout, a password change, a deactivation or a
    # deletion ends them at once in every process (no cache to wait for). The key is the
    # SHA-256 digest of the opaque token: whoever reads the file cannot log in with it.
    # Session generations (the JWT sessions' revocation counter) have no use left.
    """
    CREATE TABLE sessions (
        digest       BLOB PRIMARY KEY,
        user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        created_at   REAL NOT NULL,
        last_seen_at REAL NOT NULL,
        expires_at   REAL NOT NULL,
        client_addr  TEXT,
        user_agent   TEXT
    ) WITHOUT ROWID;
    CREATE INDEX sessions_user ON sessions (user_id);
    CREATE INDEX sessions_expires ON sessions (expires_at);

    ALTER TABLE users DROP COLUMN session_generation;
    """,
    # 3: requests per UTC day per service user, counted in memory and added in batches (so
    # several processes merge by addition, without losing a count).
    """
    CREATE TABLE usage_daily (
        service_user_id TEXT NOT NULL REFERENCES service_users (id) ON DELETE CASCADE,
        day             TEXT NOT NULL,
        requests        INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (service_user_id, day)
    ) WITHOUT ROWID;
    CREATE INDEX usage_daily_day ON usage_daily (day);
    """,
    # 4: least privilege. Named roles of a tenant, the service users holding them, and grants
    # of one action on one resource to a service user or a role. A grant's resource is its
    # catalog (or "*", every catalog of the tenant) and its path: the levels joined by U+001F,
    # which no name may contain (identifiers), '' for the catalog itself. Deleting a service
    # user or a role deletes its grants and memberships with it (the foreign keys cascade).
    """
    CREATE TABLE access_roles (
        id          TEXT PRIMARY KEY,
        tenant_id   TEXT NOT NULL REFERENCES tenants (id),
        name        TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        created_at  REAL NOT NULL,
        created_by  TEXT,
        UNIQUE (tenant_id, name)
    );

    CREATE TABLE role_members (
        role_id         TEXT NOT NULL REFERENCES access_roles (id) ON DELETE CASCADE,
        service_user_id TEXT NOT NULL REFERENCES service_users (id) ON DELETE CASCADE,
        added_at        REAL NOT NULL,
        PRIMARY KEY (role_id, service_user_id)
    ) WITHOUT ROWID;
    CREATE INDEX role_members_user ON role_members (service_user_id);

    CREATE TABLE grants (
        id              TEXT PRIMARY KEY,
        tenant_id       TEXT NOT NULL REFERENCES tenants (id),
        service_user_id TEXT REFERENCES service_users (id) ON DELETE CASCADE,
        role_id         TEXT REFERENCES access_roles (id) ON DELETE CASCADE,
        catalog         TEXT NOT NULL,
        resource        TEXT NOT NULL,
        action          TEXT NOT NULL
                        CHECK (action IN ('read', 'write', 'create', 'drop', 'manage')),
        created_at      REAL NOT NULL,
        created_by      TEXT,
        CHECK ((service_user_id IS NULL) <> (role_id IS NULL))
    );
    -- One row per (subject, resource, action): granting twice is a conflict, not a copy.
    CREATE UNIQUE INDEX grants_unique ON grants
        (coalesce(service_user_id, ''), coalesce(role_id, ''), catalog, resource, action);
    CREATE INDEX grants_service_user ON grants (service_user_id);
    CREATE INDEX grants_role ON grants (role_id);
    """,
    # 5: failed logins counted in the store, so replicas share the throttle: an attacker
    # spreading guesses over replicas gains nothing. The key is the SHA-256 of what is counted
    # (a username, an address, or both): no usernames or addresses in clear.
    """
    CREATE TABLE login_failures (
        key      BLOB PRIMARY KEY,
        failures INTEGER NOT NULL,
        last_at  REAL NOT NULL
    );
    CREATE INDEX login_failures_last ON login_failures (last_at);
    """,
    # 6: the same counts now also hold failed authentications with API keys and tokens (the
    # backoff of ``auth.backoff``), merged from every process in batches: named for both.
    """
    ALTER TABLE login_failures RENAME TO failure_counts;
    DROP INDEX login_failures_last;
    CREATE INDEX failure_counts_last ON failure_counts (last_at);
    """,
    # 7: rotation with an overlap: the key a rotation replaced keeps working until
    # previous_key_until (its tokens too), then dies. A lookup by key id finds either key.
    """
    ALTER TABLE service_users ADD COLUMN previous_key_id TEXT;
    ALTER TABLE service_users ADD COLUMN previous_key_digest BLOB;
    ALTER TABLE service_users ADD COLUMN previous_key_until REAL;
    CREATE UNIQUE INDEX service_users_previous_key ON service_users (previous_key_id);
    """,
    # 8: a service user's IP allowlist: a JSON list of CIDRs its key and tokens work from
    # (NULL: from anywhere).
    """
    ALTER TABLE service_users ADD COLUMN allowed_networks TEXT;
    """,
    # 9: a service user's own request rate limit (requests per second, 0: none) and burst;
    # NULL: the configured default (limits.requests_per_second, limits.burst).
    """
    ALTER TABLE service_users ADD COLUMN rate_limit REAL;
    ALTER TABLE service_users ADD COLUMN rate_burst INTEGER;
    """,
    # 10: rate limits shared by replicas: what each gateway instance (a host's workers
    # together) has let through per limited key, as seconds of its bucket (the requests'
    # intervals added up), so every instance can charge its own table with the others'.
    # Kept for a minute past an instance's last request of the key; no user ids or addresses
    # in clear (the key is a 64-bit digest).
    """
    CREATE TABLE request_counts (
        key      BLOB NOT NULL,
        instance TEXT NOT NULL,
        cost     REAL NOT NULL,
        last_at  REAL NOT NULL,
        PRIMARY KEY (key, instance)
    );
    CREATE INDEX request_counts_last ON request_counts (last_at);
    """,
    # 11: the request path's audit batches already stored, by the id the queue gave each: a
    # batch whose COMMIT's answer was lost (the connection dropped) is retried under its id,
    # and stored at most once. Kept a day past the batch's newest record.
    """
    CREATE TABLE audit_batches (
        id TEXT PRIMARY KEY,
        at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX audit_batches_at ON audit_batches (at);
    """,
)

MIGRATIONS: Final[tuple[Migration, ...]] = tuple(Migration(script) for script in _SCRIPTS)
