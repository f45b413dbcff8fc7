"""Fixtures shared by the split test files: ``user`` (forwarding), ``login_delays``
(management), ``other_worker`` (a second process on the same store)."""

from __future__ import annotations

import asyncio
import dataclasses
import types
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

import gateway.identity.users as users_module
from gateway.app import create_app
from gateway.identity.service_users import CreatedKey
from gateway.state import AUTHENTICATOR, CONFIGURED
from gateway.store import PostgresStore, SqliteStore

from ..conftest import Gateway, GatewayTestServer

Worker = TestClient[web.Request, web.Application]


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


@pytest.fixture
async def other_worker(
    aiohttp_client: Any,
) -> AsyncIterator[Callable[[Gateway], Awaitable[Worker]]]:
    """A second app on the same store, with its own store connections and caches, and
    its identity-change poll an hour away: what it refuses, it learnt from the store (the
    test calls ``check_for_changes`` instead of waiting); settled on the current version."""
    stores: list[SqliteStore | PostgresStore] = []
    clients: list[Worker] = []

    async def start(gateway: Gateway) -> Worker:
        settings = gateway.app[CONFIGURED].settings
        settings = dataclasses.replace(
            settings, store=dataclasses.replace(settings.store, change_poll_seconds=3600)
        )
        store = gateway.another_store()
        await store.open()
        stores.append(store)
        client: Worker = await aiohttp_client(
            GatewayTestServer(create_app(settings, store=store, clock=gateway.clock))
        )
        clients.append(client)
        await client.app[AUTHENTICATOR].check_for_changes()
        return client

    yield start
    for client in clients:
        await client.close()
    for store in stores:
        await store.close()
