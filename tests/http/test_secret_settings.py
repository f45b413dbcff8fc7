"""Secrets from files (the ``_FILE`` convention) and a configured token-signing key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from joserfc import jwt
from joserfc.jwk import KeySet

from gateway.cli import main as gateway_cli
from gateway.settings import SettingsError, TokenSettings, load_settings
from gateway.signing_keys import new_signing_key, parse_signing_key

from ..conftest import MakeGateway

CONFIG = """
[catalogs.default]
upstream = "http://127.0.0.1:8181"
[catalogs.default.upstream_auth]
type = "oauth2"
client_id = "gw"
"""


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG)
    return path


def test_file_variable_sets_the_setting_to_the_file_content(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t\n")
    env = {"PANGOLIN_CATALOGS__DEFAULT__UPSTREAM_AUTH__CLIENT_SECRET_FILE": str(secret)}

    settings = load_settings(_config(tmp_path), env)

    assert settings.catalogs["default"].upstream_auth.client_secret == "s3cr3t"


def test_unreadable_secret_file_is_a_config_problem_naming_the_variable(tmp_path: Path) -> None:
    name = "PANGOLIN_CATALOGS__DEFAULT__UPSTREAM_AUTH__CLIENT_SECRET_FILE"
    with pytest.raises(SettingsError) as raised:
        load_settings(_config(tmp_path), {name: str(tmp_path / "missing")})
    assert any(problem.startswith(name) for problem in raised.value.problems)


def test_signing_key_that_is_not_a_private_ec_jwk_is_refused(tmp_path: Path) -> None:
    public = json.dumps(new_signing_key().as_dict(private=False))
    env = {
        "PANGOLIN_CATALOGS__DEFAULT__UPSTREAM_AUTH__CLIENT_SECRET": "x",
        "PANGOLIN_TOKENS__SIGNING_KEY": public,
    }
    with pytest.raises(SettingsError) as raised:
        load_settings(_config(tmp_path), env)
    assert any(problem.startswith("tokens.signing_key") for problem in raised.value.problems)


def test_signing_key_never_shows_in_a_repr() -> None:
    key = json.dumps(new_signing_key().as_dict(private=True))
    assert json.loads(key)["d"] not in repr(TokenSettings(signing_key=key))


def test_keygen_prints_a_usable_private_key() -> None:
    result = CliRunner().invoke(gateway_cli, ["keygen"])
    assert result.exit_code == 0
    key = parse_signing_key(result.stdout.strip())
    assert key.is_private
    assert "secret" in result.stderr.lower()


async def test_configured_signing_key_signs_tokens_published_in_the_jwks(
    make_gateway: MakeGateway,
) -> None:
    key = new_signing_key()
    gateway = await make_gateway(
        tokens=TokenSettings(signing_key=json.dumps(key.as_dict(private=True)))
    )
    created = await gateway.user()
    token = await gateway.token(created)

    jwks = await (await gateway.client.get("/.well-known/jwks.json")).json()
    decoded = jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["ES256"])
    assert jwt.decode(token, key, algorithms=["ES256"]).claims["sub"] == created.user.id
    assert decoded.claims["sub"] == created.user.id
    reply = await gateway.client.get("/v1/namespaces", headers={"Authorization": f"Bearer {token}"})
    assert reply.status == 200
