"""A reload (SIGHUP, ``serve.reload``) in one process, behind the real app: catalogs added,
changed and removed and new role headers take effect on the next request; a request in flight
on a replaced catalog finishes on the old upstream, whose connections close afterwards; an
unchanged catalog keeps its forwarder; a client's copy of a replaced role header is still
dropped; a refused configuration changes nothing; other settings wait for a restart."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web

from gateway.proxy import Forwarder, HeaderPolicy, UpstreamClient
from gateway.serve import reload
from gateway.settings import CatalogSettings, RoleHeaderSettings, Settings, load_settings
from gateway.state import CONFIGURED

from ..conftest import Gateway, MakeGateway
from ..fakes import Recorded, RecordingUpstream
from ..helpers import key_header
from .test_metrics import scrape


async def until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


async def second_upstream(aiohttp_server: object) -> tuple[RecordingUpstream, str]:
    upstream = RecordingUpstream()
    server = await aiohttp_server(upstream.app())  # type: ignore[operator]
    return upstream, str(server.make_url("")).rstrip("/")


def with_catalogs(gateway: Gateway, **catalogs: CatalogSettings) -> Settings:
    return dataclasses.replace(gateway.app[CONFIGURED].settings, catalogs=catalogs)


async def test_a_catalog_added_by_a_reload_is_served_and_counted(
    gateway: Gateway, aiohttp_server: object
) -> None:
    other, url = await second_upstream(aiohttp_server)
    headers = key_header(gateway.root)
    assert (await gateway.client.get("/v1/extra/v1/namespaces", headers=headers)).status == 404

    settings = gateway.app[CONFIGURED].settings
    reload.apply(gateway.app, with_catalogs(gateway, **settings.catalogs,
                                            extra=CatalogSettings(upstream=url)))  # fmt: skip
    resp = await gateway.client.get("/v1/extra/v1/namespaces", headers=headers)
    assert resp.status == 200, await resp.text()
    assert other.last.raw_path == "/v1/namespaces"
    samples = await scrape(gateway)
    labels = frozenset({("catalog", "extra"), ("route", "namespace"), ("status", "200")})
    assert samples[("pangolin_requests_total", labels)] == 1


async def test_a_removed_catalog_is_not_found_and_the_default_can_move(
    make_gateway: MakeGateway, aiohttp_server: object
) -> None:
    other, url = await second_upstream(aiohttp_server)
    gateway = await make_gateway(
        catalogs={"default": CatalogSettings(), "other": CatalogSettings(upstream=url)}
    )
    headers = key_header(gateway.root)
    settings = dataclasses.replace(
        with_catalogs(gateway, other=CatalogSettings(upstream=url)), default_catalog="other"
    )
    reload.apply(gateway.app, settings)

    resp = await gateway.client.get("/v1/default/v1/namespaces", headers=headers)
    assert resp.status == 404
    assert (await resp.json())["error"]["message"] == "No such catalog: default"
    # Without a catalog in the path: the new default one.
    assert (await gateway.client.get("/v1/namespaces", headers=headers)).status == 200
    assert other.last.raw_path == "/v1/namespaces"
    assert gateway.upstream.catalog_requests() == []


async def test_an_unchanged_catalog_keeps_its_forwarder_and_a_changed_one_gets_a_new_one(
    make_gateway: MakeGateway, aiohttp_server: object
) -> None:
    _, url = await second_upstream(aiohttp_server)
    gateway = await make_gateway(
        catalogs={"default": CatalogSettings(), "other": CatalogSettings(upstream=url)}
    )
    configured = gateway.app[CONFIGURED]
    before = dict(configured.forwarders)
    other = dataclasses.replace(configured.settings.catalogs["other"], timeout_seconds=5)
    reload.apply(
        gateway.app, with_catalogs(gateway, default=configured.settings.catalogs["default"],
                                   other=other),
    )  # fmt: skip

    assert configured.forwarders["default"] is before["default"]
    assert configured.forwarders["other"] is not before["other"]
    replaced = before["other"].transport
    assert isinstance(replaced, UpstreamClient)
    await until(lambda: replaced._closed, "the replaced forwarder to close its connections")


@pytest.mark.parametrize("client", ["lean", "aiohttp"])
async def test_a_request_in_flight_on_a_replaced_catalog_finishes_on_the_old_upstream(
    make_gateway: MakeGateway, aiohttp_server: object, client: str
) -> None:
    release = asyncio.Event()

    async def streaming(request: web.Request, recorded: Recorded) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"namespaces": [')
        await release.wait()
        await response.write(b'["a"]]}')
        await response.write_eof()
        return response

    old = RecordingUpstream(responder=streaming)
    gateway = await make_gateway(upstream=old, catalogs={"default": CatalogSettings(client=client)})
    headers = key_header(gateway.root)
    in_flight = asyncio.create_task(gateway.client.get("/v1/namespaces", headers=headers))
    await until(lambda: len(old.catalog_requests()) == 1, "the request to reach the upstream")

    new, url = await second_upstream(aiohttp_server)
    configured = gateway.app[CONFIGURED]
    replaced = configured.forwarders["default"]
    catalog = CatalogSettings(upstream=url, client=client)
    reload.apply(gateway.app, with_catalogs(gateway, default=catalog))
    # New requests go to the new upstream while the old answer is still streaming, and the
    # old forwarder waits for it before it closes its connections.
    assert (await gateway.client.get("/v1/namespaces", headers=headers)).status == 200
    assert len(new.catalog_requests()) == 1
    assert replaced in configured._retiring.values()
    release.set()
    resp = await in_flight
    assert resp.status == 200
    assert await resp.json() == {"namespaces": [["a"]]}
    await until(lambda: replaced not in configured._retiring.values(), "the old one to close")


async def test_new_role_headers_reach_the_upstream_and_a_clients_copy_of_the_old_ones_never(
    gateway: Gateway,
) -> None:
    names = RoleHeaderSettings(role="X-Catalog-Role", tenant="X-Catalog-Tenant")
    settings = dataclasses.replace(gateway.app[CONFIGURED].settings, role_headers=names)
    reload.apply(gateway.app, settings)

    spoofed = {"X-Pangolin-Role": "root", "X-Catalog-Role": "root", "X_Pangolin_Tenant": "x"}
    resp = await gateway.client.get(
        "/v1/namespaces", headers={**key_header(gateway.root), **spoofed}
    )
    assert resp.status == 200
    sent = gateway.upstream.last.headers
    assert sent.getall("X-Catalog-Role") == ["Root"]  # the gateway's, not the client's
    assert sent.getall("X-Catalog-Tenant") == ["default"]
    # The names replaced: an upstream not yet told of the new ones must never get them.
    assert "X-Pangolin-Role" not in sent and "X_Pangolin_Tenant" not in sent


async def test_a_custom_old_role_header_stays_dropped_after_it_is_renamed(
    make_gateway: MakeGateway,
) -> None:
    gateway = await make_gateway(role_headers=RoleHeaderSettings(role="X-Role"))
    settings = dataclasses.replace(
        gateway.app[CONFIGURED].settings, role_headers=RoleHeaderSettings(role="X-Catalog-Role")
    )
    reload.apply(gateway.app, settings)
    resp = await gateway.client.get(
        "/v1/namespaces", headers={**key_header(gateway.root), "X-Role": "root"}
    )
    assert resp.status == 200
    assert "X-Role" not in gateway.upstream.last.headers


async def test_settings_that_need_a_restart_are_named_and_left_as_they_are(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    configured = gateway.app[CONFIGURED]
    before = configured.settings
    new = dataclasses.replace(
        before,
        server=dataclasses.replace(before.server, port=before.server.port + 1),
        limits=dataclasses.replace(before.limits, requests_per_second=5.0),
    )
    with caplog.at_level(logging.INFO, logger="gateway.serve.reload"):
        reload.apply(gateway.app, new)
    assert configured.settings == before
    assert "no change to the catalogs or role headers" in caplog.text
    assert "take effect only on a restart: server.port, limits.requests_per_second" in caplog.text


async def test_a_configuration_with_a_problem_is_refused_whole(
    gateway: Gateway, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[catalogs.default]\nupstream = "http://127.0.0.1:9"\n'
        '[catalogs.extra]\nupstream = "ftp://nowhere"\n',
        encoding="utf-8",
    )
    with caplog.at_level(logging.ERROR, logger="gateway.serve.reload"):
        assert reload.reread(lambda: load_settings(config, {})) is None
    assert "configuration refused (1 problem(s)); the one in force stays" in caplog.text
    assert "catalogs.extra.upstream" in caplog.text
    assert list(gateway.app[CONFIGURED].settings.catalogs) == ["default"]


async def test_a_request_whose_body_is_arriving_during_a_reload_still_goes_through(
    make_gateway: MakeGateway, aiohttp_server: object
) -> None:
    gateway = await make_gateway()
    arrived = asyncio.Event()
    rest = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b'{"namespace": ["sa'
        arrived.set()
        await rest.wait()
        yield b'les"]}'

    posting = asyncio.create_task(gateway.client.post(
        "/v1/namespaces", data=body(), headers=key_header(gateway.root)))  # fmt: skip
    await arrived.wait()
    old = gateway.app[CONFIGURED].forwarders["default"]
    await until(lambda: old.in_flight._count == 1, "the gateway to be reading the body")
    _, url = await second_upstream(aiohttp_server)
    reload.apply(gateway.app, with_catalogs(gateway, default=CatalogSettings(upstream=url)))
    rest.set()
    resp = await posting
    assert resp.status == 200, await resp.text()
    assert json.loads(gateway.upstream.last.body) == {"namespace": ["sales"]}  # the old one


async def test_a_reload_that_fails_halfway_changes_nothing(
    make_gateway: MakeGateway, aiohttp_server: object, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await make_gateway()
    configured = gateway.app[CONFIGURED]
    before, forwarders = configured.settings, dict(configured.forwarders)
    _, url = await second_upstream(aiohttp_server)
    build = configured._build
    assert build is not None
    built: list[Forwarder] = []

    def failing(name: str, catalog: CatalogSettings, headers: HeaderPolicy) -> Forwarder:
        if name == "b":
            raise RuntimeError("cannot build")
        built.append(forwarder := build(name, catalog, headers))
        return forwarder

    configured._build = failing
    new = with_catalogs(gateway, a=CatalogSettings(upstream=url), b=CatalogSettings(upstream=url))
    with caplog.at_level(logging.ERROR, logger="gateway.serve.reload"):
        reload.apply(gateway.app, dataclasses.replace(
            new, default_catalog="a", role_headers=RoleHeaderSettings(role="X-R")))  # fmt: skip
    assert "configuration not applied; the one in force stays" in caplog.text
    assert configured.settings is before
    assert configured.forwarders == forwarders
    assert len(built) == 1
    await until(lambda: not configured._retiring, "what was built to be closed")
    headers = key_header(gateway.root)
    assert (await gateway.client.get("/v1/namespaces", headers=headers)).status == 200
    assert "X-Pangolin-Role" in gateway.upstream.last.headers  # the old names, still


async def test_an_error_reading_the_configuration_is_logged_and_changes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def unreadable() -> Settings:
        raise FileNotFoundError("the working directory is gone")

    with caplog.at_level(logging.ERROR, logger="gateway.serve.reload"):
        assert reload.reread(unreadable) is None
    assert "the configuration could not be read; the one in force stays" in caplog.text
