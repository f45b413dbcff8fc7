"""The real PostgreSQL the store's tests run against (tests/postgres.py): it answers, carries
LISTEN/NOTIFY, listens on loopback only, and gives each test a fresh empty database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import asyncpg
import pytest

from ..postgres import PostgresServer

pytestmark = pytest.mark.postgres

USER_TABLES = """
    SELECT count(*) FROM information_schema.tables
    WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
"""
# What a query on a connection whose backend was terminated raises: "connection is closed", or
# the server's 57P01 or the lost connection, if asyncpg reads of the end only then.
GONE = (asyncpg.InterfaceError, asyncpg.ConnectionDoesNotExistError, asyncpg.AdminShutdownError)


@asynccontextmanager
async def connected(url: str) -> AsyncIterator[asyncpg.Connection]:
    connection: asyncpg.Connection = await asyncpg.connect(url)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
def other_postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A second ``postgres_url`` in the same test."""
    with postgres_server.database() as url:
        yield url


async def test_answers(postgres_server: PostgresServer, postgres_url: str) -> None:
    async with connected(postgres_url) as db:
        assert await db.fetchval("SELECT 1") == 1
        assert db.get_server_version().major >= 15
        assert postgres_url.endswith("/" + await db.fetchval("SELECT current_database()"))
        # Loopback only, durability off (tests/postgres.py SETTINGS).
        assert await db.fetchval("SHOW listen_addresses") == "127.0.0.1"
        assert await db.fetchval("SHOW fsync") == "off"
    assert postgres_server.dsn == f"postgresql://pangolin@127.0.0.1:{postgres_server.port}/postgres"
    assert "database system is ready to accept connections" in postgres_server.log_tail(1000)


async def test_listen_notify_round_trip(postgres_url: str) -> None:
    received: asyncio.Future[tuple[str, object]] = asyncio.get_running_loop().create_future()

    def on_notify(_conn: object, _pid: int, channel: str, payload: object) -> None:
        if not received.done():
            received.set_result((channel, payload))

    async with connected(postgres_url) as listener, connected(postgres_url) as sender:
        await listener.add_listener("identity_changed", on_notify)
        await sender.execute("SELECT pg_notify('identity_changed', 'su_1')")
        assert await asyncio.wait_for(received, timeout=10) == ("identity_changed", "su_1")


@pytest.mark.parametrize("run", [1, 2])
async def test_each_test_gets_a_fresh_empty_database(postgres_url: str, run: int) -> None:
    """Twice, in either order: the second would find the first's table if databases were
    shared between tests."""
    async with connected(postgres_url) as db:
        assert await db.fetchval(USER_TABLES) == 0
        await db.execute("CREATE TABLE leftover (n int)")


async def test_two_urls_are_different_empty_databases(
    postgres_url: str, other_postgres_url: str
) -> None:
    assert postgres_url != other_postgres_url
    async with connected(postgres_url) as one, connected(other_postgres_url) as other:
        assert await one.fetchval(USER_TABLES) == 0
        assert await other.fetchval(USER_TABLES) == 0
        await one.execute("CREATE TABLE only_here (n int)")
        assert await one.fetchval(USER_TABLES) == 1
        assert await other.fetchval(USER_TABLES) == 0


async def test_database_is_dropped_afterwards(postgres_server: PostgresServer) -> None:
    """Even with a connection still open to it."""
    exists = "SELECT count(*) FROM pg_database WHERE datname = $1"
    async with connected(postgres_server.dsn) as admin:
        with postgres_server.database() as url:
            name = url.rsplit("/", 1)[1]
            assert await admin.fetchval(exists, name) == 1
            still_open = await asyncpg.connect(url)
        try:
            assert await admin.fetchval(exists, name) == 0
        finally:
            still_open.terminate()


async def test_kill_connections_spares_the_caller(postgres_server: PostgresServer) -> None:
    name = await postgres_server.create_database()
    url = postgres_server.url(name)
    try:
        async with connected(url) as caller, connected(url) as victim:
            assert await victim.fetchval("SELECT 1") == 1
            assert await postgres_server.kill_connections(name, connection=caller) == 1
            assert await caller.fetchval("SELECT 1") == 1
            with pytest.raises(GONE):
                await victim.fetchval("SELECT 1")
            assert victim.is_closed()
            # Without a connection of the caller's, every backend of the database goes.
            assert await postgres_server.kill_connections(name) == 1
            with pytest.raises(GONE):
                await caller.fetchval("SELECT 1")
    finally:
        await postgres_server.drop_database(name)
