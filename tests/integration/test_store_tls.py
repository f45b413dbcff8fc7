"""The PostgreSQL store over TLS, with its password from a secret (issue 13).

A server of this module's own offers a certificate from a CA made here (``trustme``) and lets
the application role in only over TLS and with a password (``hostssl ... scram-sha-256``;
plain TCP is rejected). The store connects as the URL asks (``sslmode``, ``sslrootcert`` are
asyncpg's, as libpq's) with ``store.password`` given apart from the URL, as
``PANGOLIN_STORE__PASSWORD_FILE`` gives it; every refusal is a one-line ``StoreError`` that
never carries the password.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from click.testing import CliRunner

from gateway.cli import main as gateway_cli
from gateway.identity.models import Role
from gateway.identity.service_users import ServiceUserAdmin
from gateway.settings import load_settings
from gateway.store import PostgresStore, StoreError, make_store

from ..postgres import SUPERUSER, PostgresServer

pytestmark = pytest.mark.postgres

APP_USER = "pangolin_app"
PASSWORD = "db-Secret-7f3a9c"  # distinctive, so a leak into any message is found


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_server(ca: trustme.CA) -> Iterator[PostgresServer]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    chain = b"".join(blob.bytes() for blob in cert.cert_chain_pems)
    hba = (
        f"hostssl all {APP_USER} 127.0.0.1/32 scram-sha-256",
        f"host all {APP_USER} 127.0.0.1/32 reject",  # no TLS, no way in
        f"host all {SUPERUSER} 127.0.0.1/32 trust",  # the fixtures' own administration
    )
    with PostgresServer.start(tls=(chain, cert.private_key_pem.bytes()), hba=hba) as server:
        server.sync(_administer(server, f"CREATE ROLE {APP_USER} LOGIN PASSWORD '{PASSWORD}'"))
        yield server


async def _administer(server: PostgresServer, sql: str) -> None:
    """``sql`` as the superuser, on a connection of its own."""
    connection = await server.connect()
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture
def database(tls_server: PostgresServer) -> Iterator[str]:
    """A fresh database the application role owns; yields its name."""
    name = tls_server.sync(tls_server.create_database())
    tls_server.sync(_administer(tls_server, f'ALTER DATABASE "{name}" OWNER TO {APP_USER}'))
    try:
        yield name
    finally:
        tls_server.sync(tls_server.drop_database(name))


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "db-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def app_url(server: PostgresServer, database: str, query: str) -> str:
    return f"postgresql://{APP_USER}@127.0.0.1:{server.port}/{database}?{query}"


async def tls_backends(server: PostgresServer) -> list[bool]:
    """Whether each backend of the application role is on TLS."""
    connection = await server.connect()
    try:
        rows = await connection.fetch(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"
            " WHERE a.usename = $1",
            APP_USER,
        )
    finally:
        await connection.close()
    return [row["ssl"] for row in rows]


async def test_store_verifies_the_server_certificate_and_keeps_working_over_tls(
    tls_server: PostgresServer, database: str, ca_file: Path
) -> None:
    url = app_url(tls_server, database, f"sslmode=verify-full&sslrootcert={ca_file}")
    async with PostgresStore(url, password=PASSWORD) as store:
        created = await ServiceUserAdmin(store).create(
            name="etl", role=Role.TENANT_USER, actor="test"
        )
        assert (await store.service_user(created.user.id)) is not None
        store.add_change_listener(lambda: None)  # as a serving gateway's caches do
        await store.listening.wait()  # the listening connection too, not only the pool

        backends = await tls_backends(tls_server)

    assert len(backends) >= 2 and all(backends)


async def test_settings_give_the_store_its_password_from_a_secret_file(
    tls_server: PostgresServer, database: str, ca_file: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "db_password"
    secret.write_text(PASSWORD + "\n")
    environ = {
        "PANGOLIN_CATALOGS__DEFAULT__UPSTREAM": "http://127.0.0.1:9",
        "PANGOLIN_STORE__URL": app_url(
            tls_server, database, f"sslmode=verify-full&sslrootcert={ca_file}"
        ),
        "PANGOLIN_STORE__PASSWORD_FILE": str(secret),
    }
    settings = load_settings(None, environ)

    assert settings.store.password == PASSWORD
    assert PASSWORD not in repr(settings.store) and PASSWORD not in repr(settings)
    async with make_store(settings.store) as store:
        assert isinstance(store, PostgresStore)
        assert await store.schema_version() > 0


@pytest.mark.parametrize(
    ("query", "password", "said"),
    [
        pytest.param("sslmode=disable", PASSWORD, "rejects connection", id="no-tls-rejected"),
        pytest.param("sslmode=require", "wrong-password", "password", id="wrong-password"),
        pytest.param("sslmode=require", "", "password", id="no-password"),
    ],
)
async def test_store_refusals_say_why_in_one_line_without_the_password(
    tls_server: PostgresServer, database: str, query: str, password: str, said: str
) -> None:
    store = PostgresStore(app_url(tls_server, database, query), password=password)

    with pytest.raises(StoreError) as refused:
        await store.open()

    message = str(refused.value)
    assert message.startswith("cannot connect to PostgreSQL")
    assert said in message
    assert "\n" not in message
    assert PASSWORD not in message and "wrong-password" not in message


async def test_store_refuses_a_server_whose_certificate_another_ca_signed(
    tls_server: PostgresServer, database: str, tmp_path: Path
) -> None:
    stranger = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(stranger))
    url = app_url(tls_server, database, f"sslmode=verify-full&sslrootcert={stranger}")

    with pytest.raises(StoreError, match="certificate verify failed") as refused:
        await PostgresStore(url, password=PASSWORD).open()

    assert PASSWORD not in str(refused.value)


async def test_store_says_which_root_certificate_it_cannot_find(
    tls_server: PostgresServer, database: str, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere.pem"
    url = app_url(tls_server, database, f"sslmode=verify-full&sslrootcert={missing}")

    with pytest.raises(StoreError) as refused:
        await PostgresStore(url, password=PASSWORD).open()

    assert "nowhere.pem" in str(refused.value) or "No such file" in str(refused.value)


def test_check_config_refuses_a_database_password_without_a_database(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('[catalogs.default]\nupstream = "http://127.0.0.1:9"\n')

    result = CliRunner().invoke(
        gateway_cli,
        ["check-config", "--config", str(config)],
        env={"PANGOLIN_STORE__PASSWORD": PASSWORD},
    )

    assert result.exit_code != 0
    assert "store.password" in result.output
    assert PASSWORD not in result.output
