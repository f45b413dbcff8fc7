"""Fixtures the store and session unit tests share: a store file, the store open on it, a
fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.store import SqliteStore

from ..fakes import FakeClock


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "store" / "pangolin.db"


@pytest.fixture
async def store(path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(path) as opened:
        yield opened


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
