"""Fixtures the store and session unit tests share: the store open on each engine, another
store object on the same database, a store file, a fake clock.

``store`` is parametrised over both engines (ids ``sqlite`` and ``postgres``), so a test that
takes it runs once on a SQLite file and once on a fresh PostgreSQL database (the server starts
once per session, when the first such test runs; the ``postgres`` runs carry the ``postgres``
marker). ``new_store`` makes another, unopened store object on the same database: what
another worker or another replica holds. A test about SQLite itself (its file, its pragmas)
takes ``sqlite_store`` and ``path`` instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gateway.store import PostgresStore, SqliteStore
from gateway.store.tables import StoreTables

from ..fakes import FakeClock

NewStore = Callable[[], StoreTables]

ENGINES = (
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "store" / "pangolin.db"


@pytest.fixture(params=ENGINES)
def new_store(request: pytest.FixtureRequest, path: Path) -> NewStore:
    """Makes unopened store objects on one database of the engine: the SQLite file ``path``,
    or a fresh PostgreSQL database (``postgres_url``, asked for only on that engine's runs)."""
    if request.param == "sqlite":
        return lambda: SqliteStore(path)
    url: str = request.getfixturevalue("postgres_url")
    return lambda: PostgresStore(url)


@pytest.fixture
async def store(new_store: NewStore) -> AsyncIterator[StoreTables]:
    async with new_store() as opened:
        yield opened


@pytest.fixture
async def sqlite_store(path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(path) as opened:
        yield opened


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
