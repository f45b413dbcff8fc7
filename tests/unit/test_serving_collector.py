"""A serving process collects garbage on its own schedule (gateway/serve/collector.py)."""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.app import create_app
from gateway.identity.bootstrap import initialize
from gateway.identity.service_users import ServiceUserAdmin
from gateway.serve.collector import YOUNG_THRESHOLD
from gateway.serve.serving import serving
from gateway.settings import CatalogSettings
from gateway.store import SqliteStore

from ..conftest import make_settings


@pytest.fixture
def restored_thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restored_thresholds")
async def test_a_serving_process_collects_its_young_objects_after_ten_thousand(
    tmp_path: Path,
) -> None:
    # With CPython's 700, the full collections that walk every cached service user came every
    # second or two while the caches grew, each pausing every request (collector.py).
    settings = make_settings(tmp_path, {"default": CatalogSettings(upstream="http://127.0.0.1:9")})
    async with SqliteStore(settings.store.path) as store:
        await initialize(store, ServiceUserAdmin(store))
        app = create_app(settings, store=store)
        _young, middle, old = gc.get_threshold()
        async with serving(
            app, dataclasses.replace(settings.server, port=0), reload_on_hangup=False
        ):
            assert gc.get_threshold() == (YOUNG_THRESHOLD, middle, old)
