"""The bench-only ``require_auth = false`` catalog setting: refused outside bench mode
(PANGOLIN_BENCH=1), and when allowed it opens only its own catalog to callers without a
credential."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli import main
from gateway.settings import CatalogSettings, SettingsError, load_settings

from .conftest import MakeGateway

CONFIG = """
[store]
path = "var/pangolin.db"

[catalogs.default]
upstream = "http://127.0.0.1:8181"

[catalogs.open]
upstream = "http://127.0.0.1:8181"
require_auth = false
"""
PROBLEM = "catalogs.open.require_auth: false is for benchmarks only"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PANGOLIN_"):
            monkeypatch.delenv(name)


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def test_require_auth_false_is_refused_outside_bench_mode(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with pytest.raises(SettingsError) as raised:
        load_settings(config, {})
    assert any(problem.startswith(PROBLEM) for problem in raised.value.problems)
    # Any other value of the variable is not bench mode either.
    with pytest.raises(SettingsError):
        load_settings(config, {"PANGOLIN_BENCH": "true"})

    result = CliRunner().invoke(main, ["check-config", "--config", str(config)])
    assert result.exit_code == 1
    assert f"  - {PROBLEM}" in result.stderr, result.stderr


def test_require_auth_false_is_accepted_in_bench_mode(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    settings = load_settings(config, {"PANGOLIN_BENCH": "1"})  # not an unknown setting either
    assert settings.catalogs["open"].require_auth is False
    assert settings.catalogs["default"].require_auth is True

    result = CliRunner().invoke(
        main, ["check-config", "--config", str(config)], env={"PANGOLIN_BENCH": "1"}
    )
    assert result.exit_code == 0, result.output
    assert "OK (2 catalog(s): default, open)" in result.stdout


async def test_anonymous_caller_reaches_only_the_open_catalog(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(
        catalogs={
            "default": CatalogSettings(),
            "open": CatalogSettings(require_auth=False, tenant="bench"),
        }
    )
    path = "/v1/open/v1/namespaces/ns/tables/t"
    resp = await gateway.client.get(path)
    assert resp.status == 200, await resp.text()
    forwarded = gateway.upstream.last
    assert forwarded.raw_path == "/v1/namespaces/ns/tables/t"
    # A fixed benchmark principal, not any identity from the store.
    assert forwarded.headers["X-Pangolin-Principal-Type"] == "bench"
    assert forwarded.headers["X-Pangolin-Principal-Id"] == "bench-anonymous"
    assert forwarded.headers["X-Pangolin-Tenant"] == "bench"

    # A credential that fails is still refused on the open catalog.
    resp = await gateway.client.get(path, headers={"X-API-Key": "pgl_not-a-key"})
    assert resp.status == 401
    # Every other catalog still requires authentication.
    seen = len(gateway.upstream.requests)
    for other in ("/v1/default/v1/namespaces", "/v1/namespaces", "/v1/missing/v1/namespaces"):
        resp = await gateway.client.get(other)
        assert resp.status == 401, other
    assert len(gateway.upstream.requests) == seen
    # And the catalog list shows an anonymous caller nothing.
    resp = await gateway.client.get("/api/v1/catalogs")
    assert resp.status == 401
