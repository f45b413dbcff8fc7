"""The management API against its own OpenAPI document: the document validates, and
schemathesis drives a live gateway with examples generated from it (valid and invalid ones).

Every answer must be no 5xx, have a status, content type and body the document declares, and
invalid input must be refused; a refused request must leave the store as it was (identity
tables and the successes in the audit log, read straight from the SQLite file).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import hypothesis
import pytest
import requests
import schemathesis
from openapi_spec_validator import validate
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.identity.models import Role
from gateway.management import ALL_OPERATIONS
from gateway.management.openapi import build
from gateway.settings import CatalogSettings

from ..live import LiveGateway

# Bounded so that the whole run stays in seconds: each operation gets this many examples of
# each mode (valid, invalid), derandomized so a failure reproduces.
EXAMPLES: Final = 12
IDENTITY_TABLES: Final = (
    "service_users",
    "users",
    "tenants",
    "access_roles",
    "role_members",
    "grants",
)
# Bookkeeping that a refused login or a key's use may move: not a change of an identity.
VOLATILE: Final = ("last_used_at", "last_login_at", "failed_logins")
CHECKS: Final = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


def test_the_openapi_document_is_valid_openapi_3_1() -> None:
    document = build(ALL_OPERATIONS)
    validate(document)  # raises OpenAPIValidationError with the offending part
    assert document["openapi"] == "3.1.0"


class LiveApi:
    def __init__(self, gateway: LiveGateway, db: Path, root_key: str) -> None:
        self.gateway = gateway
        self.db = db
        self.headers = {"X-API-Key": root_key}
        self.session = requests.Session()

    def stored(self) -> tuple[Any, ...]:
        """The identity tables (without last-use and login bookkeeping) and successes."""
        with contextlib.closing(sqlite3.connect(self.db, timeout=10)) as db:
            rows: list[Any] = []
            for table in IDENTITY_TABLES:
                columns = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
                kept = ", ".join(c for c in columns if c not in VOLATILE)
                rows.append(db.execute(f"SELECT {kept} FROM {table} ORDER BY 1").fetchall())
            rows.append(
                db.execute("SELECT COUNT(*) FROM audit_log WHERE outcome = 'success'").fetchone()
            )
        return tuple(rows)


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    tmp_path = tmp_path_factory.mktemp("schemathesis")
    # The management API never calls the upstream: an address nothing listens on will do.
    catalogs = {"default": CatalogSettings(upstream="http://127.0.0.1:9/catalog")}
    with LiveGateway.start(tmp_path, catalogs=catalogs) as gateway:
        root = gateway.user("schemathesis-root", Role.ROOT)
        api = LiveApi(gateway, Path(gateway.settings.store.path), root.api_key.plaintext())
        yield api
        api.session.close()


def test_the_gateway_serves_the_document_the_tests_generate_from(live_api: LiveApi) -> None:
    served = live_api.session.get(f"{live_api.gateway.url}/api/v1/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.json() == build(ALL_OPERATIONS)


# Loaded when the module is (schemathesis' fixture-based loader does not work with pytest 9);
# the test above proves it is exactly what the live gateway serves.
schema = schemathesis.openapi.from_dict(build(ALL_OPERATIONS))
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    max_examples=EXAMPLES,
    deterministic=True,
    database="none",
)


@schema.parametrize()
@hypothesis.settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_every_operation_keeps_its_document_and_refusals_change_nothing(
    case: Case[Any], live_api: LiveApi
) -> None:
    before = live_api.stored()
    response = case.call(base_url=live_api.gateway.url, session=live_api.session,
                         headers=live_api.headers)  # fmt: skip
    case.validate_response(response, checks=CHECKS, headers=live_api.headers)
    if response.status_code >= 400:
        assert live_api.stored() == before, (case.method, case.path, response.status_code)
