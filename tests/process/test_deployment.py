"""The docker-compose deployment, checked as far as a machine without a Docker engine can:
the compose file's services, ports, volumes, secrets and health checks, the image recipe, and
that the gateway configuration it runs with passes check-config."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from gateway.cli import main as gateway_cli
from gateway.settings import Settings, load_settings
from gateway.signing_keys import new_signing_key

REPO = Path(__file__).resolve().parents[2]
_VARIABLE = re.compile(r"\$\{(\w+)(?::?[-?][^}]*)?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return document


def _docker_settings() -> Settings:
    """The image's configuration, with the one secret it cannot run without."""
    secret = {"PANGOLIN_CATALOGS__DEFAULT__UPSTREAM_AUTH__CLIENT_SECRET": "x"}
    return load_settings(REPO / "config" / "gateway.docker.toml", secret)


def _environment(service: dict[str, Any], values: dict[str, str]) -> dict[str, str]:
    """The service's environment with ${VAR} references filled in as compose would."""
    env = service["environment"]
    return {
        key: _VARIABLE.sub(lambda m: values[m.group(1)], str(value)) for key, value in env.items()
    }


def test_compose_runs_the_gateway_beside_seaweedfs(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"gateway", "seaweedfs"}
    assert services["gateway"]["build"] == "."
    assert (REPO / "Dockerfile").is_file()
    assert services["gateway"]["depends_on"] == {"seaweedfs": {"condition": "service_healthy"}}
    assert services["gateway"]["ports"] == ["8080:8080"]


def test_compose_seaweedfs_has_telemetry_off_and_a_table_bucket(compose: dict[str, Any]) -> None:
    command = compose["services"]["seaweedfs"]["command"]
    assert command[0] == "mini"
    assert "-master.telemetry=false" in command
    assert "-tableBucket=warehouse" in command


def test_compose_keeps_the_store_on_a_named_volume(compose: dict[str, Any]) -> None:
    gateway = compose["services"]["gateway"]
    store_mounts = [v for v in gateway["volumes"] if v.endswith(":/var/lib/pangolin")]
    assert store_mounts == ["pangolin-data:/var/lib/pangolin"]
    assert "pangolin-data" in compose["volumes"]
    assert _docker_settings().store.path.startswith("/var/lib/pangolin/")


def test_compose_health_checks_use_readyz_and_the_catalog(compose: dict[str, Any]) -> None:
    gateway_check = " ".join(compose["services"]["gateway"]["healthcheck"]["test"])
    assert "/readyz" in gateway_check
    seaweed_check = " ".join(compose["services"]["seaweedfs"]["healthcheck"]["test"])
    assert "/v1/config" in seaweed_check
    assert "HEALTHCHECK" in (REPO / "Dockerfile").read_text()


def test_compose_takes_secrets_from_environment_and_files_not_the_image(
    compose: dict[str, Any],
) -> None:
    gateway = compose["services"]["gateway"]
    env = gateway["environment"]
    assert env["PANGOLIN_TOKENS__SIGNING_KEY_FILE"] == "/run/secrets/signing_key"
    assert gateway["secrets"] == ["signing_key"]
    assert compose["secrets"]["signing_key"]["file"].startswith("./secrets/")
    # Upstream credentials are references to .env, never literal values in the file.
    for name in ("CLIENT_ID", "CLIENT_SECRET"):
        assert _VARIABLE.fullmatch(env[f"PANGOLIN_CATALOGS__DEFAULT__UPSTREAM_AUTH__{name}"])
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "secrets" not in dockerfile.lower()
    ignored = (REPO / ".gitignore").read_text().split()
    assert "secrets/" in ignored and ".env" in ignored


def test_gateway_config_in_compose_passes_check_config(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    example = dict(
        line.split("=", 1)
        for line in (REPO / "deploy" / "env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    env = _environment(compose["services"]["gateway"], example)
    secret = tmp_path / "signing_key"
    secret.write_text(json.dumps(new_signing_key().as_dict(private=True)))
    env["PANGOLIN_TOKENS__SIGNING_KEY_FILE"] = str(secret)
    config_mount = next(v for v in compose["services"]["gateway"]["volumes"] if v.endswith(":ro"))
    config = REPO / config_mount.split(":")[0]
    assert env["PANGOLIN_CONFIG"] == config_mount.split(":")[1]

    result = CliRunner().invoke(gateway_cli, ["check-config", "--config", str(config)], env=env)

    assert result.exit_code == 0, result.output
    settings = load_settings(config, env)
    assert settings.catalogs["default"].upstream == "http://seaweedfs:8181"
    assert (
        settings.catalogs["default"].upstream_auth.client_secret == example["SEAWEEDFS_SECRET_KEY"]
    )
    assert settings.tokens.signing_key == secret.read_text().strip()


def test_image_serves_on_all_interfaces_inside_the_container() -> None:
    settings = _docker_settings()
    assert (settings.server.host, settings.server.port) == ("0.0.0.0", 8080)
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "EXPOSE 8080" in dockerfile
    assert "USER pangolin" in dockerfile  # not root
