"""API keys: format, parsing, digests, constant-time verification and redaction."""

from __future__ import annotations

import base64
import hmac
import re

import pytest

from gateway.identity.models import (
    ApiKey,
    Role,
    ServiceUser,
    digest_key,
    generate_key,
    parse_key,
    verify_key,
)
from gateway.identity.service_users import CreatedKey

KEY_SHAPE = re.compile(r"pgl_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")
KEY_ID = "0123456789abcdef"
SECRET = "A" * 21 + "_" + "b" * 20 + "-"  # 43 URL-safe characters


def service_user(key: ApiKey) -> ServiceUser:
    return ServiceUser(
        id="7d0f6c2e-0000-4000-8000-000000000001", tenant_id="t1", tenant_name="default",
        name="etl", description="", role=Role.TENANT_USER, key_id=key.key_id,
        key_digest=digest_key(key), created_at=0.0, created_by="test", expires_at=None,
        active=True, last_used_at=None, key_rotated_at=None, key_generation=1,
    )  # fmt: skip


class CompareSpy:
    """Counts calls to ``hmac.compare_digest`` and still does the real comparison."""

    def __init__(self) -> None:
        self.calls = 0
        self._real = hmac.compare_digest

    def __call__(self, a: bytes, b: bytes) -> bool:
        self.calls += 1
        return self._real(a, b)


def test_generated_key_is_pgl_16_hex_key_id_and_43_urlsafe_characters() -> None:
    assert KEY_SHAPE.fullmatch(generate_key().plaintext())


def test_generated_secret_carries_at_least_256_bits() -> None:
    raw = base64.urlsafe_b64decode(generate_key().secret + "=")
    assert len(raw) * 8 >= 256


def test_generated_keys_do_not_repeat() -> None:
    keys = [generate_key() for _ in range(200)]
    assert len({k.key_id for k in keys}) == len({k.secret for k in keys}) == 200


def test_parse_key_round_trips_a_generated_key() -> None:
    key = generate_key()
    assert parse_key(key.plaintext()) == key


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param(f"pgk_{KEY_ID}_{SECRET}", id="wrong-prefix"),
        pytest.param(f"PGL_{KEY_ID}_{SECRET}", id="uppercase-prefix"),
        pytest.param(f"{KEY_ID}_{SECRET}", id="no-prefix"),
        pytest.param(f"pgl_{KEY_ID[:-1]}_{SECRET}", id="key-id-too-short"),
        pytest.param(f"pgl_{KEY_ID}0_{SECRET}", id="key-id-too-long"),
        pytest.param(f"pgl_{KEY_ID.upper()}_{SECRET}", id="key-id-uppercase-hex"),
        pytest.param(f"pgl_{KEY_ID[:-1]}g_{SECRET}", id="key-id-not-hex"),
        pytest.param(f"pgl_{KEY_ID}_{SECRET[:-1]}", id="secret-too-short"),
        pytest.param(f"pgl_{KEY_ID}_{SECRET}A", id="secret-too-long"),
        pytest.param(f"pgl_{KEY_ID}_{SECRET[:-1]}+", id="secret-plus"),
        pytest.param(f"pgl_{KEY_ID}_{SECRET[:-1]}/", id="secret-slash"),
        pytest.param(f"pgl_{KEY_ID}_{SECRET[:-1]}=", id="secret-padding"),
        pytest.param(f"pgl_{KEY_ID}_{SECRET}_extra", id="extra-part"),
        pytest.param(f"pgl_{KEY_ID}_{KEY_ID}_{SECRET}", id="extra-key-id"),
        pytest.param(f"pgl_{KEY_ID}{SECRET}", id="missing-separator"),
        pytest.param(f" pgl_{KEY_ID}_{SECRET}", id="leading-space"),
        pytest.param(f"pgl_{KEY_ID}_{SECRET}\n", id="trailing-newline"),
        pytest.param(f"pgl_{KEY_ID}_{SECRET[:20]} {SECRET[21:]}", id="inner-space"),
        pytest.param(f"pgl_{KEY_ID[:-1]}\u0663_{SECRET}", id="non-ascii-digit-in-key-id"),
        pytest.param(f"pgl_{KEY_ID}_{SECRET[:-1]}\u00e9", id="non-ascii-letter-in-secret"),
        pytest.param(f"pgl_{KEY_ID}_{SECRET[:-1]}\uff21", id="fullwidth-letter-in-secret"),
    ],
)
def test_parse_key_rejects_anything_but_the_exact_format(value: str) -> None:
    assert parse_key(value) is None


def test_digest_binds_the_key_id() -> None:
    key = ApiKey(KEY_ID, SECRET)
    moved = ApiKey("fedcba9876543210", SECRET)
    assert digest_key(moved) != digest_key(key)
    assert verify_key(key, digest_key(key))
    assert not verify_key(moved, digest_key(key))


def test_verify_key_is_false_for_an_unknown_key_id() -> None:
    assert verify_key(generate_key(), None) is False


def test_verify_key_is_false_for_a_wrong_secret() -> None:
    key = generate_key()
    assert not verify_key(ApiKey(key.key_id, generate_key().secret), digest_key(key))


def test_verify_key_compares_in_constant_time_for_unknown_and_wrong_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spy = CompareSpy()
    monkeypatch.setattr("gateway.identity.models.hmac.compare_digest", spy)
    key = generate_key()

    assert not verify_key(key, None)
    assert spy.calls == 1
    assert not verify_key(ApiKey(key.key_id, generate_key().secret), digest_key(key))
    assert spy.calls == 2
    assert verify_key(key, digest_key(key))
    assert spy.calls == 3


def test_api_key_repr_and_str_never_contain_the_secret() -> None:
    key = generate_key()
    for text in (repr(key), str(key), f"{key}", repr([key]), repr({"k": key})):
        assert key.secret not in text
        assert key.key_id in text


def test_created_key_repr_redacts_the_key() -> None:
    key = generate_key()
    created = CreatedKey(service_user(key), key)
    for text in (repr(created), str(created), repr([created])):
        assert key.secret not in text
        assert key.plaintext() not in text
        assert "redacted" in text
