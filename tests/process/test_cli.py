"""The pangolin-gateway command line: check-config, init, migrate and serve, on a SQLite store
and (the tests taking ``postgres_url``) on PostgreSQL through ``PANGOLIN_STORE__URL``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from gateway.cli import main
from gateway.connection import GatewayRunner
from gateway.identity.models import Role, parse_key, verify_key
from gateway.store import PostgresStore, SqliteStore
from gateway.store.migrations import MIGRATIONS

CONFIG = """
[store]
path = "var/pangolin.db"

[catalogs.default]
upstream = "http://127.0.0.1:8181"
"""

BROKEN = """
colour = "blue"

[server]
port = "eighty"

[catalogs.namespaces]
upstream = "ftp://catalog.example"
"""


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PANGOLIN_* variable of the machine running the tests may reach the CLI."""
    for name in list(os.environ):
        if name.startswith("PANGOLIN_"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def never_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    async def setup(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the CLI started serving")

    monkeypatch.setattr(GatewayRunner, "setup", setup)


def write_config(tmp_path: Path, text: str = CONFIG) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def run(*args: str | Path, env: Mapping[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def store_path(tmp_path: Path) -> Path:
    return tmp_path / "var" / "pangolin.db"


async def store_state(path: Path) -> tuple[Any, ...]:
    async with SqliteStore(path) as store:
        tenant = await store.tenant_by_name("default")
        assert tenant is not None
        root = await store.service_user_by_name(tenant.id, "root")
        return (
            await store.identity_version(),
            await store.signing_keys(),
            await store.audit_records(),
            root,
        )


async def create_empty_store(path: Path) -> None:
    async with SqliteStore(path):
        pass


def make_newer_store(path: Path) -> None:
    asyncio.run(create_empty_store(path))
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")


def make_older_store(path: Path, version: int) -> None:
    """A store as a gateway of schema ``version`` left it: in WAL mode, its first ``version``
    migrations applied, the version recorded, the default tenant made."""
    path.parent.mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        for migration in MIGRATIONS[:version]:
            conn.executescript(migration.sqlite)
        conn.execute(f"PRAGMA user_version = {version}")
        conn.execute(
            "INSERT INTO tenants VALUES ('00000000-0000-4000-8000-000000000001', 'default', 1.0)"
        )


def user_version(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def files_of(directory: Path) -> dict[str, bytes]:
    return {file.name: file.read_bytes() for file in sorted(directory.iterdir())}


def with_password(url: str, password: str) -> str:
    """``url`` with a password for its user (the test server trusts loopback, so any works)."""
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{password}@{host}"


async def postgres_state(url: str) -> tuple[Any, ...]:
    async with PostgresStore(url) as store:
        tenant = await store.tenant_by_name("default")
        assert tenant is not None
        return (
            await store.schema_version(),
            await store.identity_version(),
            await store.signing_keys(),
            await store.service_user_by_name(tenant.id, "root"),
        )


# -- check-config -----------------------------------------------------------------------------


def test_check_config_accepts_a_valid_file(tmp_path: Path) -> None:
    result = run("check-config", "--config", write_config(tmp_path))
    assert result.exit_code == 0, result.output
    assert "OK (1 catalog(s): default)" in result.stdout
    assert result.stderr == ""


def test_check_config_lists_every_problem_on_stderr_and_exits_1(tmp_path: Path) -> None:
    result = run("check-config", "--config", write_config(tmp_path, BROKEN))

    assert result.exit_code == 1
    assert result.stdout == ""
    for problem in (
        "colour: unknown setting",
        "server.port: expected an integer",
        "catalogs.namespaces: 'namespaces' is reserved",
        "catalogs.namespaces.upstream: must be an http:// or https:// URL",
        "default_catalog: 'default' is not one of the catalogs",
    ):
        assert f"  - {problem}" in result.stderr, result.stderr


def test_check_config_applies_environment_overrides(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["check-config", "--config", str(write_config(tmp_path))],
        env={"PANGOLIN_SERVER__PORT": "not-a-port"},
    )
    assert result.exit_code == 1
    assert "server.port: expected an integer, got 'not-a-port'" in result.stderr


@pytest.mark.parametrize("command", ["check-config", "init", "migrate", "serve"])
def test_missing_config_option_is_a_usage_error(command: str) -> None:
    result = run(command)
    assert result.exit_code == 2
    assert "--config" in result.stderr


# -- init -------------------------------------------------------------------------------------


def test_init_json_prints_the_root_id_and_a_working_key(tmp_path: Path) -> None:
    result = run("init", "--config", write_config(tmp_path), "--json")

    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert set(printed) == {"id", "api_key", "created"} and printed["created"] is True
    key = parse_key(printed["api_key"])
    assert key is not None
    _version, signing_keys, _audit, root = asyncio.run(store_state(store_path(tmp_path)))
    assert root is not None and root.id == printed["id"] and root.role is Role.ROOT
    assert verify_key(key, root.key_digest)
    assert len(signing_keys) == 1


def test_init_prints_id_and_key_and_says_to_copy_it_now(tmp_path: Path) -> None:
    result = run("init", "--config", write_config(tmp_path))

    assert result.exit_code == 0, result.output
    _version, _keys, _audit, root = asyncio.run(store_state(store_path(tmp_path)))
    assert root is not None
    assert f"Root service user id: {root.id}" in result.stdout
    (key_line,) = [line for line in result.stdout.splitlines() if "Root API key:" in line]
    key = parse_key(key_line.split()[-1])
    assert key is not None and verify_key(key, root.key_digest)
    assert "Copy the key now: it is shown only this once." in result.stderr


@pytest.mark.parametrize("as_json", [False, True], ids=["human", "json"])
def test_second_init_changes_nothing_says_so_and_exits_0(tmp_path: Path, as_json: bool) -> None:
    config = write_config(tmp_path)
    assert run("init", "--config", config).exit_code == 0
    before = asyncio.run(store_state(store_path(tmp_path)))

    result = run("init", "--config", config, *(["--json"] if as_json else []))

    assert result.exit_code == 0, result.output
    assert "already initialized; nothing was changed" in result.stderr
    if as_json:
        assert json.loads(result.stdout) == {"id": None, "api_key": None, "created": False}
    else:
        assert result.stdout == ""
    assert asyncio.run(store_state(store_path(tmp_path))) == before


def test_init_on_a_store_with_a_newer_schema_fails_with_one_line(tmp_path: Path) -> None:
    make_newer_store(store_path(tmp_path))

    result = run("init", "--config", write_config(tmp_path))

    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "newer than this gateway understands" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# -- serve ------------------------------------------------------------------------------------


def test_serve_without_a_store_exits_1_telling_to_run_init_and_creates_nothing(
    tmp_path: Path,
) -> None:
    result = run("serve", "--config", write_config(tmp_path))

    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    (line,) = result.stderr.strip().splitlines()
    assert "run `pangolin-gateway init --config FILE` first" in line
    assert not store_path(tmp_path).parent.exists()


def test_serve_on_a_store_without_signing_key_exits_1_telling_to_run_init(
    tmp_path: Path,
) -> None:
    asyncio.run(create_empty_store(store_path(tmp_path)))

    result = run("serve", "--config", write_config(tmp_path))

    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert "is not initialized; run `pangolin-gateway init --config FILE` first" in line


def test_serve_on_a_store_with_a_newer_schema_fails_with_one_line(tmp_path: Path) -> None:
    make_newer_store(store_path(tmp_path))

    result = run("serve", "--config", write_config(tmp_path))

    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    (line,) = result.stderr.strip().splitlines()
    assert "newer than this gateway understands" in line


def test_check_config_warns_when_published_urls_come_from_the_host_header(
    tmp_path: Path,
) -> None:
    exposed = '[server]\nhost = "0.0.0.0"\n' + CONFIG
    result = run("check-config", "--config", write_config(tmp_path, exposed))
    assert result.exit_code == 0, result.output
    assert "warning: server.public_url is empty" in result.stderr
    fixed = '[server]\nhost = "0.0.0.0"\npublic_url = "https://gw.example"\n' + CONFIG
    result = run("check-config", "--config", write_config(tmp_path, fixed))
    assert result.exit_code == 0 and result.stderr == ""


# -- migrate ----------------------------------------------------------------------------------


def test_migrate_brings_an_older_store_to_this_version_saying_from_which_to_which(
    tmp_path: Path,
) -> None:
    make_older_store(store_path(tmp_path), 1)
    config = write_config(tmp_path)

    result = run("migrate", "--config", config)

    assert result.exit_code == 0, result.output
    assert result.stdout == f"Migrated the store from schema version 1 to {len(MIGRATIONS)}.\n"
    assert user_version(store_path(tmp_path)) == len(MIGRATIONS)
    before = files_of(store_path(tmp_path).parent)

    again = run("migrate", "--config", config)

    assert again.exit_code == 0, again.output
    assert "nothing to do" in again.stdout
    assert f"schema version {len(MIGRATIONS)}" in again.stdout
    assert files_of(store_path(tmp_path).parent) == before


def test_migrate_on_a_store_with_a_newer_schema_fails_with_one_line_and_changes_nothing(
    tmp_path: Path,
) -> None:
    make_newer_store(store_path(tmp_path))
    before = files_of(store_path(tmp_path).parent)

    result = run("migrate", "--config", write_config(tmp_path))

    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert "cannot migrate" in line and "newer than this gateway understands" in line
    assert files_of(store_path(tmp_path).parent) == before


def test_serve_on_a_store_of_an_older_schema_exits_1_naming_migrate_and_changes_nothing(
    tmp_path: Path,
) -> None:
    make_older_store(store_path(tmp_path), len(MIGRATIONS) - 1)
    before = files_of(store_path(tmp_path).parent)

    result = run("serve", "--config", write_config(tmp_path))

    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    (line,) = result.stderr.strip().splitlines()
    assert f"schema version {len(MIGRATIONS) - 1}, older" in line
    assert "run `pangolin-gateway migrate --config FILE` first" in line
    assert files_of(store_path(tmp_path).parent) == before
    assert user_version(store_path(tmp_path)) == len(MIGRATIONS) - 1


# -- on PostgreSQL (PANGOLIN_STORE__URL) -----------------------------------------------------

PASSWORD = "pw-Only-in-the-environment"


def test_migrate_and_init_on_a_postgresql_url_work_and_never_print_it(
    tmp_path: Path, postgres_url: str
) -> None:
    url = with_password(postgres_url, PASSWORD)
    env = {"PANGOLIN_STORE__URL": url}
    config = write_config(tmp_path)

    migrated = run("migrate", "--config", config, env=env)
    again = run("migrate", "--config", config, env=env)
    initialized = run("init", "--config", config, "--json", env=env)
    second_init = run("init", "--config", config, env=env)

    for result in (migrated, again, initialized, second_init):
        assert result.exit_code == 0, result.output
        assert PASSWORD not in result.output and postgres_url not in result.output
    assert migrated.stdout == f"Migrated the store from schema version 0 to {len(MIGRATIONS)}.\n"
    assert "nothing to do" in again.stdout
    printed = json.loads(initialized.stdout)
    assert printed["created"] is True
    assert "already initialized; nothing was changed" in second_init.stderr
    schema, _version, signing_keys, root = asyncio.run(postgres_state(postgres_url))
    assert schema == len(MIGRATIONS)
    assert len(signing_keys) == 1
    key = parse_key(printed["api_key"])
    assert root is not None and root.id == printed["id"] and root.role is Role.ROOT
    assert key is not None and verify_key(key, root.key_digest)
    assert not store_path(tmp_path).parent.exists()  # store.path is not used


def test_serve_on_a_postgresql_store_refuses_it_until_initialized_then_starts(
    tmp_path: Path, postgres_url: str
) -> None:
    env = {"PANGOLIN_STORE__URL": with_password(postgres_url, PASSWORD)}
    config = write_config(tmp_path)
    assert run("migrate", "--config", config, env=env).exit_code == 0

    refused = run("serve", "--config", config, env=env)

    assert refused.exit_code == 1
    (line,) = refused.stderr.strip().splitlines()
    assert "PostgreSQL store is not initialized" in line
    assert "run `pangolin-gateway init --config FILE` first" in line
    assert PASSWORD not in refused.output
    assert run("init", "--config", config, env=env).exit_code == 0

    served = run("serve", "--config", config, "--workers", "1", env=env)

    # Past every store check, it started serving (which never_serve turns into this error).
    assert isinstance(served.exception, AssertionError), served.output
    assert str(served.exception) == "the CLI started serving"
