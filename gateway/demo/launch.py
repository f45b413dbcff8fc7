"""``make run``: the gateway in front of a real local SeaweedFS catalog, a first service user,
and a human administrator for the admin UI.

SeaweedFS is started with credentials, so the gateway must authenticate upstream (OAuth2
client_credentials) exactly as it would in front of a production catalog, and with credential
vending, so a client needs nothing but its gateway credential: table data is read and written
with the short-lived, table-scoped S3 credentials the catalog hands out in loadTable. Its
data, ports and credentials live under ``--data-dir`` and are reused by the next run. Ctrl-C,
SIGTERM or closing the terminal (SIGHUP) stops the gateway and then SeaweedFS.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import secrets
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from ..audit.queue import AuditQueue
from ..identity.bootstrap import initialize
from ..identity.models import Role
from ..identity.service_users import CreatedKey, ServiceUserAdmin
from ..identity.users import UserAdmin
from ..serve.runner import serve_settings
from ..settings import Settings, UpstreamAuthSettings
from ..store import DEFAULT_TENANT, make_store
from ..ui.snippets import snippets
from .seaweedfs import SeaweedFS, SeaweedPorts, free_ports, ports_free

__all__ = ("DEMO_ADMIN", "DEMO_USER", "pyiceberg_snippet", "run_demo")

DEMO_USER = "demo-pipeline"
DEMO_ADMIN = "admin"
WAREHOUSE = "warehouse"


def _demo_state(data_dir: Path) -> dict[str, Any]:
    """Credentials and ports of the local SeaweedFS, created on the first run and kept."""
    path = data_dir / "seaweedfs.json"
    if path.exists():
        state: dict[str, Any] = json.loads(path.read_text())
        return state
    ports = SeaweedPorts.default()
    if not ports_free(ports):
        ports = free_ports()  # something else holds the stock ports
    state = {
        "access_key": "PGLDEMO" + secrets.token_hex(6).upper(),
        "secret_key": secrets.token_urlsafe(30),
        "ports": dataclasses.asdict(ports),
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=2))
    path.chmod(0o600)
    return state


@dataclass(frozen=True)
class Provisioned:
    root: CreatedKey | None  # only on the first run, which created it
    demo: CreatedKey
    admin_password: str


async def _provision(settings: Settings) -> Provisioned:
    """Initialize the store if needed; create the demo service user, or rotate its key to show
    it; create the UI's human administrator, or give it a new password to show."""
    async with make_store(settings.store) as store:
        admin = ServiceUserAdmin(store)
        humans = UserAdmin(store, AuditQueue(store))
        password = secrets.token_urlsafe(18)
        human = await store.user_by_username(DEMO_ADMIN)
        if human is None:
            await humans.create(username=DEMO_ADMIN, password=password, role=Role.ROOT,
                                tenant=DEFAULT_TENANT, actor="system:demo")  # fmt: skip
        else:
            # Passwords are stored as argon2 hashes: showing one means setting a new one.
            await humans.change_password(human.id, password, actor="system:demo")
        init = await initialize(store, admin, actor="system:demo")
        tenant = await store.tenant_by_name(DEFAULT_TENANT)
        assert tenant is not None
        existing = await store.service_user_by_name(tenant.id, DEMO_USER)
        if existing is None:
            demo = await admin.create(
                name=DEMO_USER, role=Role.TENANT_USER, actor="system:demo",
                description="Created by make run",
            )  # fmt: skip
        else:
            # Keys are never stored in plaintext, so the only way to show one again is a new one.
            demo = await admin.rotate(existing.id, actor="system:demo")
        return Provisioned(init.root, demo, password)


def pyiceberg_snippet(base_url: str, user_id: str, api_key: str) -> str:
    return snippets(base_url, "default", user_id, api_key).pyiceberg


def run_demo(settings: Settings, data_dir: Path) -> None:
    data_dir = data_dir.resolve()
    state = _demo_state(data_dir)
    ports = SeaweedPorts(**state["ports"])
    seaweed = SeaweedFS(
        data_dir / "seaweedfs", ports=ports, access_key=state["access_key"],
        secret_key=state["secret_key"], table_bucket=WAREHOUSE, log_dir=data_dir / "logs",
        vend_credentials=True,
    )  # fmt: skip
    # SIGTERM must unwind through the finally below, or SeaweedFS (in its own session, so
    # that Ctrl-C reaches only us) would be orphaned. Closing the terminal (SIGHUP) ends
    # `make run` the same way: as SIGTERM, which the server turns into a graceful stop once it
    # runs (serve_settings), and which unwinds through the finally before that.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGHUP, lambda *_: os.kill(os.getpid(), signal.SIGTERM))
    click.echo(f"Starting SeaweedFS (Iceberg REST on {seaweed.iceberg_url}) ...", err=True)
    seaweed.start()
    try:
        name = settings.default_catalog
        catalog = dataclasses.replace(
            settings.catalogs[name],
            upstream=seaweed.iceberg_url,
            warehouse=WAREHOUSE,
            upstream_auth=UpstreamAuthSettings(
                type="oauth2", client_id=state["access_key"], client_secret=state["secret_key"]
            ),
        )
        settings = dataclasses.replace(settings, catalogs={**settings.catalogs, name: catalog})
        provisioned = asyncio.run(_provision(settings))
        host = settings.server.host
        base_url = (
            f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{settings.server.port}"
        )
        _print_welcome(base_url, provisioned, ui=settings.ui.enabled)
        serve_settings(settings, reload_on_hangup=False)  # SIGHUP: the terminal went away
    finally:
        # Already stopping: a repeated Ctrl-C or SIGTERM (the server's own handlers are gone
        # by now) must not kill us before SeaweedFS is stopped, or it would be orphaned.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        # Stop first, report after: once the terminal is gone (SIGHUP), writing may fail.
        seaweed.stop()
        with contextlib.suppress(OSError):
            click.echo("Stopped SeaweedFS.", err=True)


def _print_welcome(base_url: str, provisioned: Provisioned, *, ui: bool) -> None:
    root, demo = provisioned.root, provisioned.demo
    key = demo.api_key.plaintext()
    out = click.echo
    out("")
    out("Pangolin Gateway is running in front of a local SeaweedFS Iceberg catalog.")
    out(f"  gateway:  {base_url}   (Ctrl-C stops everything)")
    if ui:
        out(f"  admin UI: {base_url}/ui/")
        out(f"    user {DEMO_ADMIN!r} (Root), password: {provisioned.admin_password}")
        out("    (shown once; each `make run` sets a new one)")
    if root is not None:
        out(f"  Root service user {root.user.id}")
        out(f"    key (shown once): {root.api_key.plaintext()}")
    else:
        out("  Root service user: created by the first run, which showed its key")
    out(f"  Service user {DEMO_USER!r} (TenantUser)")
    out(f"    id:  {demo.user.id}")
    out(f"    key: {key}   (shown once; each `make run` issues a new one)")
    out("")
    out("Try it:")
    out(f'  curl -H "X-API-Key: {key}" {base_url}/api/v1/catalogs')
    out("")
    out("PyIceberg (table data: the catalog vends short-lived S3 credentials per table).")
    out("Paste it into `make shell` (a Python with PyIceberg and DuckDB installed), or into")
    out("any Python after `pip install 'pyiceberg[pyarrow]'`:")
    out(pyiceberg_snippet(base_url, demo.user.id, key))
    sys.stdout.flush()
