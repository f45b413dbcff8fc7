"""Fixtures shared by the split test files: ``user`` (forwarding), ``login_delays`` (management)."""

from __future__ import annotations

import asyncio
import types

import pytest

import gateway.identity.users as users_module
from gateway.identity.service_users import CreatedKey

from ..conftest import Gateway


@pytest.fixture
async def user(gateway: Gateway) -> CreatedKey:
    return await gateway.user("etl")


@pytest.fixture
def login_delays(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Spy on the login throttle's sleep: record each delay, but do not wait."""
    delays: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float) -> None:
        delays.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(users_module, "asyncio", types.SimpleNamespace(sleep=sleep))
    return delays
