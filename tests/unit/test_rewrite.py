"""Unit tests of ``gateway.proxy.rewrite``: what is removed from catalog JSON, and what is not."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.errors import UpstreamError
from gateway.proxy.rewrite import rewrite_config, strip_table_credentials

INT64_MAX = 9223372036854775807
SNAPSHOT_ID = 2663087109101640605
# Keys that would send a client around the gateway or hand it the upstream's credentials.
CONFIG_AUTH_KEYS = {
    "uri": "http://upstream:8181/",
    "oauth2-server-uri": "http://upstream:8181/v1/oauth/tokens",
    "token": "upstream-minted-token",
    "credential": "upstream-id:upstream-secret",
    "scope": "catalog",
    "header.X-Foo": "bar",
    "header.Authorization": "Bearer upstream",
    "rest.auth.type": "sigv4",
    "rest.sigv4-enabled": "true",
    "rest.signing-name": "s3tables",
}
CONFIG_KEPT = {
    "prefix": "warehouse",
    "clients": "4",
    "io-impl": "org.apache.iceberg.aws.s3.S3FileIO",
}


def encode(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def rewritten(result: bytes | None) -> Any:
    assert result is not None, "expected a rewrite"
    return json.loads(result)


@pytest.mark.parametrize("section", ["defaults", "overrides"])
def test_rewrite_config_removes_redirecting_and_auth_keys_and_keeps_the_rest(section: str) -> None:
    other = "overrides" if section == "defaults" else "defaults"
    body = encode({section: {**CONFIG_AUTH_KEYS, **CONFIG_KEPT}, other: {"a": "b"}})

    doc = rewritten(rewrite_config(body))

    assert doc == {section: CONFIG_KEPT, other: {"a": "b"}}


def test_rewrite_config_keeps_endpoints_and_unknown_top_level_keys() -> None:
    endpoints = ["GET /v1/{prefix}/namespaces", "HEAD /v1/{prefix}/namespaces/{namespace}"]
    body = encode({"overrides": {"uri": "http://x"}, "endpoints": endpoints, "idempotency": 1})

    assert rewritten(rewrite_config(body)) == {
        "overrides": {},
        "endpoints": endpoints,
        "idempotency": 1,
    }


def test_rewrite_config_returns_none_when_nothing_is_removed() -> None:
    body = b'{ "defaults" : {"prefix": "wh"},\n  "overrides": {} }'

    assert rewrite_config(body) is None


def test_rewrite_config_keeps_int64_values_exact() -> None:
    body = encode({"overrides": {"uri": "http://x"}, "big": INT64_MAX, "id": SNAPSHOT_ID})

    result = rewrite_config(body)

    assert result is not None
    assert str(INT64_MAX).encode() in result and str(SNAPSHOT_ID).encode() in result
    assert json.loads(result)["big"] == INT64_MAX


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"",
        b"\xff\xfe",
        b"[1, 2]",
        b'"overrides"',
        b'{"overrides": ["uri"]}',
        b'{"overrides": null}',
        b'{"defaults": "uri"}',
    ],
)
def test_rewrite_config_leaves_non_object_or_odd_shapes_alone(body: bytes) -> None:
    assert rewrite_config(body) is None


def test_rewrite_config_only_touches_top_level_sections() -> None:
    body = encode({"nested": {"overrides": {"uri": "http://x"}}})

    assert rewrite_config(body) is None


def load_table_result(config: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata-location": "s3://bucket/ns/t/metadata/00001.metadata.json",
        "metadata": {
            "format-version": 2,
            "current-snapshot-id": SNAPSHOT_ID,
            "snapshots": [{"snapshot-id": SNAPSHOT_ID, "sequence-number": INT64_MAX}],
            "properties": {"token": "a table property, not a credential"},
        },
        "config": config,
    }


STORAGE_CONFIG = {
    "s3.endpoint": "http://127.0.0.1:8333",
    "s3.access-key-id": "AKIA",
    "s3.secret-access-key": "secret",
    "s3.session-token": "session",
    "client.region": "us-east-1",
}


def test_strip_table_credentials_removes_session_tokens_and_keeps_storage_keys() -> None:
    session_keys = {
        "token": "upstream-minted",
        "credential": "id:secret",
        "urn:ietf:params:oauth:token-type:access_token": "t",
        "urn:ietf:params:oauth:token-type:id_token": "t",
        "header.X-Tenant": "x",
    }
    body = encode(load_table_result({**session_keys, **STORAGE_CONFIG}))

    doc = rewritten(strip_table_credentials(body))

    assert doc == load_table_result(STORAGE_CONFIG)


def test_strip_table_credentials_keeps_int64_snapshot_ids_exact() -> None:
    body = encode(load_table_result({"token": "t"}))

    result = strip_table_credentials(body)

    assert result is not None
    assert str(SNAPSHOT_ID).encode() in result and str(INT64_MAX).encode() in result
    metadata = json.loads(result)["metadata"]
    assert metadata["current-snapshot-id"] == SNAPSHOT_ID
    assert metadata["snapshots"][0]["sequence-number"] == INT64_MAX


def test_strip_table_credentials_returns_none_without_a_token() -> None:
    assert strip_table_credentials(encode(load_table_result(STORAGE_CONFIG))) is None


def test_strip_table_credentials_ignores_tokens_outside_the_config_map() -> None:
    # "token" as a table property or in metadata is data, not a credential.
    body = encode({"metadata": {"properties": {"token": "x"}}, "config": {"s3.endpoint": "e"}})

    assert strip_table_credentials(body) is None


@pytest.mark.parametrize(
    "body",
    [
        b'{"metadata-location": "s3://b/m.json", "metadata": {}}',
        b'not json but mentions "config"',
        b'["config", {"token": "t"}]',
        b'{"config": ["token"]}',
        b'{"config": null}',
    ],
)
def test_strip_table_credentials_leaves_bodies_without_a_config_map_alone(body: bytes) -> None:
    assert strip_table_credentials(body) is None


def test_strip_table_credentials_sees_a_config_key_spelled_with_unicode_escapes() -> None:
    # JSON parsers decode "\u0063onfig" to "config", so a byte search alone must not skip it.
    body = b'{"metadata": {}, "\\u0063onfig": {"tok\\u0065n": "upstream-minted", "s3.a": "b"}}'

    assert rewritten(strip_table_credentials(body)) == {"metadata": {}, "config": {"s3.a": "b"}}


def test_repeated_config_key_cannot_smuggle_a_token_to_first_key_wins_parsers() -> None:
    body = b'{"metadata-location":"s3://w/m.json","config":{"token":"up"},"config":{}}'
    rewritten = strip_table_credentials(body)
    assert rewritten is not None
    assert b"up" not in rewritten
    assert json.loads(rewritten) == {"metadata-location": "s3://w/m.json", "config": {}}


def test_repeated_override_key_in_config_is_collapsed_to_the_inspected_copy() -> None:
    body = b'{"defaults":{},"overrides":{"uri":"http://around"},"overrides":{"prefix":"w"}}'
    rewritten = rewrite_config(body)
    assert rewritten is not None
    assert json.loads(rewritten) == {"defaults": {}, "overrides": {"prefix": "w"}}
    assert b"around" not in rewritten


def test_a_table_answer_with_a_byte_order_mark_is_still_filtered() -> None:
    body = b'\xef\xbb\xbf{"metadata-location":"s3://w/m.json","config":{"token":"up"}}'
    rewritten = strip_table_credentials(body)
    assert rewritten is not None
    assert b"up" not in rewritten


def test_an_unreadable_answer_that_may_hold_a_credential_is_refused() -> None:
    # Not JSON to Python (a trailing comma), but a lenient parser might read the token.
    with pytest.raises(UpstreamError):
        strip_table_credentials(b'{"config":{"token":"up",},}')


# Every key that sends a client around the gateway or hands it an upstream credential, in the
# cases a case-insensitive client would read as the same key.
EVERY_DROPPED_KEY = {
    **CONFIG_AUTH_KEYS,
    "Token": "t1",
    "TOKEN": "t2",
    "Credential": "id:secret",
    "URI": "http://upstream:8181/",
    "OAuth2-Server-URI": "http://upstream:8181/v1/oauth/tokens",
    "Header.X-Api-Key": "upstream-key",
    "REST.AUTH.TYPE": "oauth2",
    "s3.signer.uri": "http://upstream:8181/",
    "urn:ietf:params:oauth:token-type:id_token": "upstream-id-token",
}


@pytest.mark.parametrize("section", ["defaults", "overrides"])
def test_config_keys_are_matched_case_insensitively(section: str) -> None:
    body = encode({section: {**EVERY_DROPPED_KEY, **CONFIG_KEPT}})

    assert rewritten(rewrite_config(body)) == {section: CONFIG_KEPT}


def test_table_config_loses_every_redirecting_and_credential_key_in_any_case() -> None:
    storage = {"s3.endpoint": "http://127.0.0.1:8333", "s3.access-key-id": "AK"}
    body = encode(
        {"metadata-location": "s3://b/m.json", "config": {**EVERY_DROPPED_KEY, **storage}}
    )

    assert rewritten(strip_table_credentials(body)) == {
        "metadata-location": "s3://b/m.json",
        "config": storage,
    }


@pytest.mark.parametrize("key", sorted(EVERY_DROPPED_KEY))
def test_a_single_dropped_key_in_a_table_config_is_never_passed_by_the_fast_path(key: str) -> None:
    body = encode({"config": {key: "secret-value", "s3.region": "r"}})

    assert b"secret-value" not in (strip_table_credentials(body) or body)


def test_an_error_answer_on_config_gets_no_prefix_override() -> None:
    body = encode({"error": {"message": "no", "type": "NotFoundException", "code": 404}})

    assert rewrite_config(body, prefix="wh") is None
