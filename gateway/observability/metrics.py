"""Prometheus metrics, served at ``/metrics`` from a registry of the app's own.

(One module over 300 lines: the counters, their snapshot and the merge across workers are one
data shape, and splitting them would spread its three readers over as many files.)

Hot path: every count is a plain ``int`` (and every histogram a list of them) that only the
event loop's thread touches, updates and scrapes alike, so nothing takes a lock. Label
"children" are resolved ahead of time: one cell per catalog and route class, one
``UpstreamStats`` per catalog handed to its forwarder. ``collect()`` turns them into metric
families at scrape time and reads the queue gauges (pending ``last_used`` writes, pending and
dropped audit records) there too, so requests never update them.

Label values come only from the configuration (catalog names) and fixed sets in the code
(route classes, status codes, reasons, grant types, error codes): never a path, an id, a key
or a token. A catalog path naming an unknown catalog counts under catalog ``-``.

With ``--workers N`` every worker still counts in its own memory, exactly as above; what
changes is the scrape. ``share()`` gives the metrics the other workers' counts (``Peers``,
implemented by ``metrics_share`` with one snapshot file per worker, refreshed every second),
and ``collect()`` then answers with the sum over the workers (``merge``) plus the gauge
``pangolin_workers``, so any worker answers for the whole instance. A single process never
calls ``share()``: nothing is written or read, and its output is unchanged. The ``process_*``
metrics (prometheus_client's ``ProcessCollector``) stay those of the worker that answered.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import Final, Protocol, TypedDict

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ..routing import ROUTE_CLASSES

__all__ = (
    "BUCKETS",
    "NO_CATALOG",
    "ROUTES",
    "GatewayMetrics",
    "HistogramCounts",
    "Peers",
    "Snapshot",
    "UpstreamCounts",
    "UpstreamStats",
    "merge",
)

NO_CATALOG: Final = "-"
ROUTES: Final = (*ROUTE_CLASSES, "management", "forward_auth")
# Seconds. The gateway's own cost is well under a millisecond, so the low end is fine-grained.
BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
UPSTREAM_ERROR_KINDS: Final = ("unavailable", "timeout", "broken")
# Seeded at zero so that rate() sees the first failure; others (AuthOutcome.reason is free
# text in ``authn``) still count when they occur.
AUTH_FAILURE_REASONS: Final = (
    "missing", "malformed", "unknown_key", "wrong_secret", "bad_token",
    "deleted", "rotated", "inactive", "expired", "password", "ambiguous",
    "unknown_session", "idle", "address_not_allowed", "key_too_old",
)  # fmt: skip
GRANT_TYPES: Final = ("client_credentials", "token_exchange")
# Why a request was answered 429: a failure past the address's or the (address, key id)'s
# budget, a credential from a held address that would have needed a store read, a service
# user over its request rate limit, or an address over its limit of requests without one.
THROTTLE_SCOPES: Final = ("address", "key", "held", "rate", "anonymous")
TOKEN_ERRORS: Final = (
    "invalid_request", "invalid_client", "invalid_grant", "unsupported_grant_type",
    "temporarily_unavailable",
)  # fmt: skip

_LE: Final = (*(repr(b) for b in BUCKETS), "+Inf")  # "0.0005", "1.0": as prometheus_client
# -- raw counts, as a worker shares them ------------------------------------------------------


class HistogramCounts(TypedDict):
    buckets: list[int]  # one count per bucket of BUCKETS, then +Inf: not cumulative
    sum: float


class UpstreamCounts(TypedDict):
    latency: HistogramCounts
    errors: dict[str, int]  # kind -> count


class Snapshot(TypedDict):
    """Everything ``collect()`` reports, as plain JSON-ready data (label value -> count)."""

    requests: dict[str, dict[str, dict[str, int]]]  # catalog -> route -> status -> count
    latency: dict[str, HistogramCounts]  # route ->
    upstreams: dict[str, UpstreamCounts]  # catalog ->
    auth_failures: dict[str, int]  # reason ->
    tokens_issued: dict[str, int]  # grant type ->
    tokens_refused: dict[str, int]  # error code ->
    throttled: dict[str, int]  # scope ->
    # last_used_pending, store_reachable, audit_pending, audit_dropped: read once watched.
    queues: dict[str, int]


class Peers(Protocol):
    def exchange(self, own: Snapshot) -> list[Snapshot]:
        """Publish this worker's counts ``own``; every worker's latest, ``own`` included, in
        the workers' order. A fixed order whoever answers: float sums are then added in the
        same order, so with every term non-decreasing the total never decreases."""
        ...


_NO_HISTOGRAM: Final = HistogramCounts(buckets=[0] * len(_LE), sum=0.0)  # never changed


def merge(snapshots: Iterable[Snapshot]) -> Snapshot:
    """The sum of ``snapshots``, label by label (a label present in any of them is present in
    the sum, in the order first seen); the inputs are left untouched."""
    total = Snapshot(
        requests={}, latency={}, upstreams={}, auth_failures={}, tokens_issued={},
        tokens_refused={}, throttled={}, queues={},
    )  # fmt: skip
    for snapshot in snapshots:
        for catalog, routes in snapshot["requests"].items():
            into_routes = total["requests"].setdefault(catalog, {})
            for route, statuses in routes.items():
                _add_counts(into_routes.setdefault(route, {}), statuses)
        for route, histogram in snapshot["latency"].items():
            total["latency"][route] = _plus(total["latency"].get(route, _NO_HISTOGRAM), histogram)
        for catalog, upstream in snapshot["upstreams"].items():
            into = total["upstreams"].setdefault(
                catalog, UpstreamCounts(latency=_NO_HISTOGRAM, errors={})
            )
            into["latency"] = _plus(into["latency"], upstream["latency"])
            _add_counts(into["errors"], upstream["errors"])
        _add_counts(total["auth_failures"], snapshot["auth_failures"])
        _add_counts(total["tokens_issued"], snapshot["tokens_issued"])
        _add_counts(total["tokens_refused"], snapshot["tokens_refused"])
        _add_counts(total["throttled"], snapshot["throttled"])
        _add_counts(total["queues"], snapshot["queues"])
    return total


def _add_counts(into: dict[str, int], counts: dict[str, int]) -> None:
    for label, count in counts.items():
        into[label] = into.get(label, 0) + count


def _plus(one: HistogramCounts, other: HistogramCounts) -> HistogramCounts:
    """A new histogram (neither input changes)."""
    buckets = [a + b for a, b in zip(one["buckets"], other["buckets"], strict=True)]
    return HistogramCounts(buckets=buckets, sum=one["sum"] + other["sum"])


def _cumulative(buckets: list[int]) -> list[tuple[str, float]]:
    running = 0
    cumulative = []
    for le, count in zip(_LE, buckets, strict=True):
        running += count
        cumulative.append((le, float(running)))
    return cumulative


# -- live counts ---------------------------------------------------------------------------------


class _Histogram:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        # bisect_left finds the first bound >= seconds: Prometheus' "le" semantics.
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds

    def raw(self) -> HistogramCounts:
        return HistogramCounts(buckets=self.counts, sum=self.total)  # the live list: no copy


class UpstreamStats:
    """One catalog's upstream: response-header latency and transport errors by kind."""

    __slots__ = ("errors", "latency")

    def __init__(self) -> None:
        self.latency = _Histogram()
        self.errors = dict.fromkeys(UPSTREAM_ERROR_KINDS, 0)

    def observe(self, seconds: float) -> None:
        self.latency.observe(seconds)

    def failed(self, kind: str) -> None:
        self.errors[kind] += 1


class _Pending(Protocol):
    @property
    def pending_last_used(self) -> int: ...

    store_reachable: bool


class _Audit(Protocol):
    @property
    def pending(self) -> int: ...
    @property
    def dropped(self) -> int: ...


class _KeyAges(Protocol):
    counts: tuple[int, int] | None  # (past the maximum age, near it); None: not counted


class GatewayMetrics:
    """The gateway's metrics, registered in ``registry`` as one collector."""

    def __init__(self, registry: CollectorRegistry, catalogs: Iterable[str]) -> None:
        names = (*catalogs, NO_CATALOG)
        # catalog -> route class -> status -> count
        self._requests: dict[str, dict[str, dict[int, int]]] = {
            name: {route: {} for route in ROUTES} for name in names
        }
        self._latency = {route: _Histogram() for route in ROUTES}
        self._upstreams = {name: UpstreamStats() for name in names if name != NO_CATALOG}
        self._auth_failures = dict.fromkeys(AUTH_FAILURE_REASONS, 0)
        self._tokens_issued = dict.fromkeys(GRANT_TYPES, 0)
        self._tokens_refused = dict.fromkeys(TOKEN_ERRORS, 0)
        self._throttled = dict.fromkeys(THROTTLE_SCOPES, 0)
        self._identities: _Pending | None = None
        self._audit: _Audit | None = None
        self._peers: Peers | None = None
        self._key_ages: _KeyAges | None = None
        registry.register(self)

    # -- recording (hot path) ----------------------------------------------------------------

    def request_done(self, catalog: str, route: str, status: int, seconds: float) -> None:
        counts = self._requests[catalog][route]
        counts[status] = counts.get(status, 0) + 1
        self._latency[route].observe(seconds)

    def add_catalog(self, name: str) -> None:
        """Count for ``name`` too (a catalog a reload added; one known already keeps its
        counts, and so does one a reload removed: counters never go back)."""
        self._requests.setdefault(name, {route: {} for route in ROUTES})
        self._upstreams.setdefault(name, UpstreamStats())

    def upstream(self, catalog: str) -> UpstreamStats:
        """The pre-bound upstream stats of ``catalog`` (for its forwarder)."""
        return self._upstreams[catalog]

    def auth_failed(self, reason: str) -> None:
        self._auth_failures[reason] = self._auth_failures.get(reason, 0) + 1

    def token_issued(self, grant_type: str) -> None:
        self._tokens_issued[grant_type] = self._tokens_issued.get(grant_type, 0) + 1

    def token_refused(self, error: str) -> None:
        self._tokens_refused[error] = self._tokens_refused.get(error, 0) + 1

    def throttled(self, scope: str) -> None:
        self._throttled[scope] = self._throttled.get(scope, 0) + 1

    def watch(self, identities: _Pending, audit: _Audit) -> None:
        """Report these queues' sizes at scrape time (from the app's start-up)."""
        self._identities, self._audit = identities, audit

    def watch_key_ages(self, ages: _KeyAges) -> None:
        """Report these counts at scrape time: read from the store, the same in every worker,
        so the answering worker's own, never summed."""
        self._key_ages = ages

    def share(self, peers: Peers) -> None:
        """Answer scrapes for every worker: own counts plus ``peers``' (``--workers N``)."""
        self._peers = peers

    # -- scraping ----------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The raw counts now. Histogram bucket lists are the live ones, not copies: serialize
        or merge the snapshot before the event loop records anything else."""
        queues: dict[str, int] = {}
        if self._identities is not None:
            queues["last_used_pending"] = self._identities.pending_last_used
            queues["store_reachable"] = int(self._identities.store_reachable)
        if self._audit is not None:
            queues["audit_pending"] = self._audit.pending
            queues["audit_dropped"] = self._audit.dropped
        return Snapshot(
            requests={
                catalog: {
                    route: {str(status): count for status, count in statuses.items()}
                    for route, statuses in routes.items()
                }
                for catalog, routes in self._requests.items()
            },
            latency={route: histogram.raw() for route, histogram in self._latency.items()},
            upstreams={
                catalog: UpstreamCounts(latency=stats.latency.raw(), errors=stats.errors)
                for catalog, stats in self._upstreams.items()
            },
            auth_failures=self._auth_failures,
            tokens_issued=self._tokens_issued,
            tokens_refused=self._tokens_refused,
            throttled=self._throttled,
            queues=queues,
        )

    def collect(self) -> Iterator[Metric]:
        counts = self._key_ages.counts if self._key_ages is not None else None
        if counts is not None:
            for name, what, value in (
                ("pangolin_keys_past_max_age", "past", counts[0]),
                ("pangolin_keys_near_max_age", "within keys.notice_days of", counts[1]),
            ):
                yield GaugeMetricFamily(
                    name, f"Active service users whose key is {what} keys.max_age_days.",
                    value=value,
                )  # fmt: skip
        own = self.snapshot()
        if self._peers is None:
            yield from _families(own)
            return
        every = self._peers.exchange(own)
        yield from _families(merge(every))
        yield GaugeMetricFamily(
            "pangolin_workers", "Worker processes whose counts this answer sums.",
            value=len(every),
        )  # fmt: skip


def _families(counts: Snapshot) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "pangolin_requests", "Requests answered, by catalog, route class and status.",
        labels=("catalog", "route", "status"),
    )  # fmt: skip
    for catalog, routes in counts["requests"].items():
        for route, statuses in routes.items():
            for status, count in statuses.items():
                requests.add_metric((catalog, route, status), count)
    yield requests
    latency = HistogramMetricFamily(
        "pangolin_request_duration_seconds",
        "Time from the request reaching the gateway to its answer, by route class.",
        labels=("route",),
    )
    for route, histogram in counts["latency"].items():
        latency.add_metric((route,), _cumulative(histogram["buckets"]), histogram["sum"])
    yield latency
    upstream = HistogramMetricFamily(
        "pangolin_upstream_duration_seconds",
        "Time until the catalog upstream's response headers arrived, by catalog.",
        labels=("catalog",),
    )
    errors = CounterMetricFamily(
        "pangolin_upstream_errors", "Upstream requests that failed, by catalog and kind.",
        labels=("catalog", "kind"),
    )  # fmt: skip
    for catalog, stats in counts["upstreams"].items():
        histogram = stats["latency"]
        upstream.add_metric((catalog,), _cumulative(histogram["buckets"]), histogram["sum"])
        for kind, count in stats["errors"].items():
            errors.add_metric((catalog, kind), count)
    yield upstream
    yield errors
    yield _counter(
        "pangolin_auth_failures", "Requests refused with 401, by reason.", "reason",
        counts["auth_failures"],
    )  # fmt: skip
    yield _counter(
        "pangolin_tokens_issued", "Tokens issued by the token endpoint, by grant type.",
        "grant_type", counts["tokens_issued"],
    )  # fmt: skip
    yield _counter(
        "pangolin_token_requests_refused",
        "Token endpoint requests refused, by OAuth2 error code.", "error",
        counts["tokens_refused"],
    )  # fmt: skip
    yield _counter(
        "pangolin_throttled_requests",
        "Requests answered 429 by the backoff or a rate limit, by scope.", "scope",
        counts["throttled"],
    )  # fmt: skip
    queues = counts["queues"]
    if "last_used_pending" in queues:
        yield GaugeMetricFamily(
            "pangolin_last_used_pending", "Service users' last_used times not yet written.",
            value=queues["last_used_pending"],
        )  # fmt: skip
    if "store_reachable" in queues:
        yield GaugeMetricFamily(
            "pangolin_store_reachable",
            "Workers whose last poll of the store worked (0 while it cannot be reached).",
            value=queues["store_reachable"],
        )  # fmt: skip
    if "audit_pending" in queues:
        yield GaugeMetricFamily(
            "pangolin_audit_pending", "Audit records queued and not yet written.",
            value=queues["audit_pending"],
        )  # fmt: skip
    if "audit_dropped" in queues:
        yield CounterMetricFamily(
            "pangolin_audit_dropped", "Audit records dropped because the queue was full.",
            value=queues["audit_dropped"],
        )  # fmt: skip


def _counter(name: str, doc: str, label: str, counts: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=(label,))
    for value, count in counts.items():
        family.add_metric((value,), count)
    return family
