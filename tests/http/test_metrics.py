"""``/metrics``: counts and histograms move by exactly what the requests did, the queue gauges
are read at scrape time, and nothing secret or client-chosen ever becomes a label. With
``--workers N`` the workers' counts are summed (``merge``, ``share``)."""

from __future__ import annotations

import copy
import socket
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gateway.identity.service_users import CreatedKey
from gateway.observability.metrics import BUCKETS, GatewayMetrics, Snapshot, merge
from gateway.settings import CatalogSettings, StoreSettings
from gateway.state import AUDIT, AUTHENTICATOR, METRICS_REGISTRY

from ..conftest import Gateway, MakeGateway
from ..helpers import key_header

API = "/v1/default/v1"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(gateway: Gateway) -> Samples:
    resp = await gateway.client.get("/metrics")  # no credential needed
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def get(gateway: Gateway, path: str, headers: dict[str, str] | None = None) -> int:
    async with gateway.client.get(path, headers=headers) as resp:
        await resp.read()
        return resp.status


@pytest.fixture
async def user(gateway: Gateway) -> CreatedKey:
    return await gateway.user()


async def test_requests_are_counted_by_catalog_route_and_status(
    gateway: Gateway, user: CreatedKey
) -> None:
    before = await scrape(gateway)

    assert await get(gateway, "/v1/config", key_header(user)) == 200
    assert await get(gateway, f"{API}/namespaces", key_header(user)) == 200
    assert await get(gateway, f"{API}/namespaces/ns/tables/t", key_header(user)) == 200
    assert await get(gateway, f"{API}/namespaces/ns/tables/t", key_header(user)) == 200
    assert await get(gateway, f"{API}/namespaces/ns/views/v", key_header(user)) == 200
    assert await get(gateway, f"{API}/namespaces") == 401
    assert await get(gateway, "/api/v1/catalogs", key_header(user)) == 200
    assert await get(gateway, "/healthz") == 200
    after = await scrape(gateway)

    counted = "pangolin_requests_total"
    assert delta(before, after, counted, catalog="default", route="config", status="200") == 1
    assert delta(before, after, counted, catalog="default", route="namespace", status="200") == 1
    assert delta(before, after, counted, catalog="default", route="table", status="200") == 2
    assert delta(before, after, counted, catalog="default", route="view", status="200") == 1
    assert delta(before, after, counted, catalog="default", route="namespace", status="401") == 1
    assert delta(before, after, counted, catalog="-", route="management", status="200") == 1
    # /healthz and the first scrape itself
    assert delta(before, after, counted, catalog="-", route="other", status="200") == 2
    histogram = "pangolin_request_duration_seconds_count"
    assert delta(before, after, histogram, route="table") == 2
    assert delta(before, after, histogram, route="namespace") == 2
    assert delta(before, after, "pangolin_upstream_duration_seconds_count", catalog="default") == 5
    inf = value(after, "pangolin_request_duration_seconds_bucket", route="table", le="+Inf")
    assert inf == value(after, histogram, route="table") == 2


async def test_unknown_catalog_names_never_become_labels(
    gateway: Gateway, user: CreatedKey
) -> None:
    assert await get(gateway, "/v1/tenant-secret-name/v1/namespaces", key_header(user)) == 404
    after = await scrape(gateway)

    labels = {value for _, pairs in after for _, value in pairs}
    assert "tenant-secret-name" not in labels
    assert value(after, "pangolin_requests_total", catalog="-", route="namespace", status="404")


async def test_auth_failures_are_counted_by_reason(gateway: Gateway, user: CreatedKey) -> None:
    before = await scrape(gateway)
    wrong = user.api_key.plaintext()[:-4] + "AAAA"

    assert await get(gateway, f"{API}/namespaces") == 401
    assert await get(gateway, f"{API}/namespaces", {"X-API-Key": wrong}) == 401
    assert await get(gateway, f"{API}/namespaces", {"X-API-Key": wrong}) == 401
    assert await get(gateway, f"{API}/namespaces", {"Authorization": "Bearer not.a.jwt"}) == 401
    assert await get(gateway, "/api/v1/me", {"X-API-Key": "pgl_garbage"}) == 401
    assert await get(gateway, f"{API}/namespaces", key_header(user)) == 200
    after = await scrape(gateway)

    failures = "pangolin_auth_failures_total"
    assert delta(before, after, failures, reason="missing") == 1
    assert delta(before, after, failures, reason="wrong_secret") == 2
    assert delta(before, after, failures, reason="bad_token") == 1
    assert delta(before, after, failures, reason="malformed") == 1
    assert sum(v for (name, _), v in after.items() if name == failures) == 5


async def test_token_requests_are_counted(gateway: Gateway, user: CreatedKey) -> None:
    before = await scrape(gateway)

    token = await gateway.token(user)
    refresh = await gateway.client.post(
        "/v1/oauth/tokens",
        data={"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
              "subject_token": token,
              "subject_token_type": "urn:ietf:params:oauth:token-type:access_token"},
    )  # fmt: skip
    assert refresh.status == 200
    refused = await gateway.client.post(
        "/v1/oauth/tokens",
        data={"grant_type": "client_credentials", "client_id": user.user.id,
              "client_secret": user.api_key.plaintext()[:-4] + "AAAA"},
    )  # fmt: skip
    assert refused.status == 401
    unsupported = await gateway.client.post("/v1/oauth/tokens", data={"grant_type": "password"})
    assert unsupported.status == 400
    after = await scrape(gateway)

    issued = "pangolin_tokens_issued_total"
    assert delta(before, after, issued, grant_type="client_credentials") == 1
    assert delta(before, after, issued, grant_type="token_exchange") == 1
    refusals = "pangolin_token_requests_refused_total"
    assert delta(before, after, refusals, error="invalid_client") == 1
    assert delta(before, after, refusals, error="unsupported_grant_type") == 1
    assert delta(before, after, "pangolin_requests_total", catalog="-", route="token", status="200")


async def test_unreachable_upstream_counts_an_unavailable_error(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(catalogs={"default": CatalogSettings(upstream=closed_port_url())})

    assert await get(gateway, f"{API}/namespaces", key_header(gateway.root)) == 503
    after = await scrape(gateway)

    errors = "pangolin_upstream_errors_total"
    assert value(after, errors, catalog="default", kind="unavailable") == 1
    assert value(after, errors, catalog="default", kind="timeout") == 0
    assert value(after, "pangolin_upstream_duration_seconds_count", catalog="default") == 0
    assert value(
        after, "pangolin_requests_total", catalog="default", route="namespace", status="503"
    ) == 1  # fmt: skip


async def test_upstream_that_never_answers_counts_a_timeout(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(catalogs={"default": CatalogSettings(timeout_seconds=0.3)})
    async with gateway.upstream.stuck():
        assert await get(gateway, f"{API}/namespaces", key_header(gateway.root)) == 504
    after = await scrape(gateway)

    assert value(after, "pangolin_upstream_errors_total", catalog="default", kind="timeout") == 1


async def test_queue_gauges_are_read_at_scrape_time(
    make_gateway: MakeGateway, tmp_path: Path
) -> None:
    # Background flushes far away, so only the test's own flushes empty the queues.
    gateway = await make_gateway(
        store=StoreSettings(
            path=str(tmp_path / "gauges.db"),
            last_used_flush_seconds=3600,
            audit_flush_seconds=3600,
        )
    )
    first, second = await gateway.user("a"), await gateway.user("b")

    assert await get(gateway, f"{API}/namespaces", key_header(first)) == 200
    assert await get(gateway, f"{API}/namespaces", key_header(second)) == 200
    assert await get(gateway, f"{API}/namespaces", key_header(second)) == 200
    assert await get(gateway, f"{API}/namespaces") == 401
    samples = await scrape(gateway)
    assert value(samples, "pangolin_last_used_pending") == 2
    pending_audit = gateway.app[AUDIT].pending
    assert pending_audit >= 1
    assert value(samples, "pangolin_audit_pending") == pending_audit
    assert value(samples, "pangolin_audit_dropped_total") == 0

    await gateway.app[AUTHENTICATOR].flush_last_used()
    await gateway.app[AUDIT].flush()
    samples = await scrape(gateway)
    assert value(samples, "pangolin_last_used_pending") == 0
    assert value(samples, "pangolin_audit_pending") == 0


class _Queues:
    pending_last_used = 7
    store_reachable = True
    pending = 3
    dropped = 11


def test_dropped_audit_records_are_a_counter_read_at_scrape_time() -> None:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry, ["default"])
    assert registry.get_sample_value("pangolin_audit_dropped_total") is None  # not started

    queues = _Queues()
    metrics.watch(queues, queues)
    assert registry.get_sample_value("pangolin_audit_dropped_total") == 11
    queues.dropped = 12
    assert registry.get_sample_value("pangolin_audit_dropped_total") == 12
    assert registry.get_sample_value("pangolin_audit_pending") == 3
    assert registry.get_sample_value("pangolin_last_used_pending") == 7
    assert registry.get_sample_value("pangolin_store_reachable") == 1
    queues.store_reachable = False
    assert registry.get_sample_value("pangolin_store_reachable") == 0


async def test_metrics_never_contain_keys_tokens_ids_or_paths(
    gateway: Gateway, user: CreatedKey
) -> None:
    token = await gateway.token(user)
    path = f"{API}/namespaces/private_ns/tables/private_table?pageToken=private_query"
    assert await get(gateway, path, key_header(user)) == 200
    assert await get(gateway, path, {"Authorization": f"Bearer {token}"}) == 200
    assert await get(gateway, path, {"X-API-Key": user.api_key.plaintext() + "x"}) == 401
    assert await get(gateway, f"/api/v1/service-users/{user.user.id}", key_header(user)) in (
        403, 404,
    )  # fmt: skip

    resp = await gateway.client.get("/metrics")
    body = await resp.text()
    secrets = (
        user.api_key.plaintext(), user.api_key.key_id, token, user.user.id, gateway.root.user.id,
        "private_ns", "private_table", "private_query", "pageToken",
    )  # fmt: skip
    for secret in secrets:
        assert secret not in body


async def test_each_app_has_its_own_registry(make_gateway: MakeGateway) -> None:
    one, two = await make_gateway(), await make_gateway()
    assert one.app[METRICS_REGISTRY] is not two.app[METRICS_REGISTRY]

    assert await get(one, f"{API}/namespaces") == 401
    assert await get(one, f"{API}/namespaces") == 401
    assert await get(two, f"{API}/namespaces") == 401

    failures = "pangolin_auth_failures_total"
    assert value(await scrape(one), failures, reason="missing") == 2
    assert value(await scrape(two), failures, reason="missing") == 1


async def test_refused_password_login_counts_as_password(gateway: Gateway) -> None:
    before = await scrape(gateway)

    resp = await gateway.client.post(
        "/api/v1/login", json={"username": "nobody", "password": "not-the-password"}
    )
    assert resp.status == 401
    after = await scrape(gateway)

    assert delta(before, after, "pangolin_auth_failures_total", reason="password") == 1
    assert delta(before, after, "pangolin_auth_failures_total", reason="missing") == 0


# -- several workers ------------------------------------------------------------------------------


def _bucket(seconds: float) -> int:
    """The index of the (non-cumulative) bucket that counts ``seconds``."""
    return next((i for i, bound in enumerate(BUCKETS) if seconds <= bound), len(BUCKETS))


def _two_workers() -> tuple[GatewayMetrics, GatewayMetrics]:
    one = GatewayMetrics(CollectorRegistry(), ["default"])
    two = GatewayMetrics(CollectorRegistry(), ["default"])
    one.request_done("default", "table", 200, 0.002)
    one.request_done("default", "table", 200, 3.0)
    one.request_done("-", "other", 200, 0.0001)
    two.request_done("default", "table", 200, 0.002)
    two.request_done("default", "table", 404, 0.0001)
    one.upstream("default").observe(0.01)
    two.upstream("default").observe(0.3)
    two.upstream("default").failed("timeout")
    one.auth_failed("missing")
    two.auth_failed("missing")
    two.auth_failed("a_reason_only_two_saw")
    one.token_issued("client_credentials")
    two.token_refused("invalid_client")
    queues = _Queues()
    one.watch(queues, queues)
    two.watch(queues, queues)
    return one, two


def test_merge_sums_every_count_label_by_label_and_leaves_its_inputs_alone() -> None:
    one, two = _two_workers()
    snapshots = [one.snapshot(), two.snapshot()]
    before = copy.deepcopy(snapshots)

    total = merge(snapshots)

    assert snapshots == before
    assert total["requests"]["default"]["table"] == {"200": 3, "404": 1}
    assert total["requests"]["-"]["other"] == {"200": 1}
    assert total["requests"]["default"]["view"] == {}  # seeded labels stay
    table = total["latency"]["table"]
    expected = [0] * (len(BUCKETS) + 1)
    for seconds in (0.002, 3.0, 0.002, 0.0001):
        expected[_bucket(seconds)] += 1
    assert table["buckets"] == expected
    assert table["sum"] == pytest.approx(3.0041)
    assert total["latency"]["other"]["buckets"][_bucket(0.0001)] == 1
    upstream = total["upstreams"]["default"]
    assert sum(upstream["latency"]["buckets"]) == 2
    assert upstream["latency"]["sum"] == pytest.approx(0.31)
    assert upstream["errors"] == {"unavailable": 0, "timeout": 1, "broken": 0}
    assert total["auth_failures"]["missing"] == 2
    assert total["auth_failures"]["a_reason_only_two_saw"] == 1
    assert total["auth_failures"]["expired"] == 0
    assert total["tokens_issued"]["client_credentials"] == 1
    assert total["tokens_refused"]["invalid_client"] == 1
    assert total["queues"] == {
        "last_used_pending": 14, "store_reachable": 2, "audit_pending": 6, "audit_dropped": 22,
    }  # fmt: skip

    assert merge([snapshots[0]]) == snapshots[0]
    assert merge([]) == Snapshot(
        requests={}, latency={}, upstreams={}, auth_failures={}, tokens_issued={},
        tokens_refused={}, throttled={}, queues={},
    )  # fmt: skip


def test_merge_is_associative_so_any_worker_can_answer() -> None:
    one, two = _two_workers()
    three = GatewayMetrics(CollectorRegistry(), ["default"])  # not watched: no queue gauges
    three.request_done("default", "view", 500, 0.05)
    a, b, c = one.snapshot(), two.snapshot(), three.snapshot()

    assert merge([merge([a, b]), c]) == merge([a, merge([b, c])]) == merge([a, b, c])


class _Peers:
    """Other workers, as ``metrics_share.SnapshotFiles`` would give them."""

    def __init__(self, *others: Snapshot) -> None:
        self.others = others
        self.published: list[Snapshot] = []

    def exchange(self, own: Snapshot) -> list[Snapshot]:
        self.published.append(copy.deepcopy(own))
        return [own, *self.others]


def test_a_shared_registry_answers_with_the_sum_and_the_number_of_workers() -> None:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry, ["default"])
    _, other = _two_workers()
    peers = _Peers(other.snapshot())
    metrics.share(peers)

    metrics.request_done("default", "table", 200, 0.002)
    metrics.auth_failed("missing")

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert sample("pangolin_workers") == 2
    assert sample("pangolin_requests_total", catalog="default", route="table", status="200") == 2
    assert sample("pangolin_requests_total", catalog="default", route="table", status="404") == 1
    assert sample("pangolin_request_duration_seconds_count", route="table") == 3
    assert sample("pangolin_upstream_duration_seconds_count", catalog="default") == 1
    assert sample("pangolin_upstream_errors_total", catalog="default", kind="timeout") == 1
    assert sample("pangolin_auth_failures_total", reason="missing") == 2
    assert sample("pangolin_auth_failures_total", reason="a_reason_only_two_saw") == 1
    # Only the other worker's queues are watched yet: the gauges are there, with its values.
    assert sample("pangolin_audit_pending") == 3
    assert sample("pangolin_audit_dropped_total") == 11
    # Every scrape published this worker's own counts first.
    assert peers.published and all(
        p["requests"]["default"]["table"] == {"200": 1} for p in peers.published
    )


def test_a_single_process_reports_no_worker_count() -> None:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry, ["default"])
    metrics.request_done("default", "table", 200, 0.002)

    assert registry.get_sample_value("pangolin_workers") is None
    assert registry.get_sample_value(
        "pangolin_requests_total", {"catalog": "default", "route": "table", "status": "200"}
    ) == 1  # fmt: skip
