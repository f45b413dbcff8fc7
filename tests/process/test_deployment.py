"""The docker-compose deployment, checked as far as a machine without a Docker engine can:
the compose file's services, ports, volumes, secrets and health checks, the image recipe, and
that the gateway configuration it runs with passes check-config."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from click.testing import CliRunner

from gateway.cli import main as gateway_cli
from gateway.settings import Settings, StoreSettings, load_settings
from gateway.signing_keys import new_signing_key

REPO = Path(__file__).resolve().parents[2]
_VARIABLE = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return document


def _docker_settings() -> Settings:
    """The image's configuration, with the one secret it cannot run without."""
    secret = {"PANGOLIN_CATALOGS__DEFAULT__UPSTREAM_AUTH__CLIENT_SECRET": "x"}
    return load_settings(REPO / "config" / "gateway.docker.toml", secret)


def _environment(service: dict[str, Any], values: dict[str, str]) -> dict[str, str]:
    """The service's environment with ${VAR} references filled in as compose would: from
    ``values``, else the ``:-`` default; a ``:?`` variable must be in ``values``."""

    def filled(match: re.Match[str]) -> str:
        name, operator, default = match.groups()
        return values[name] if name in values or operator != "-" else default

    return {key: _VARIABLE.sub(filled, str(value)) for key, value in service["environment"].items()}


REPLICAS = ("gateway-1", "gateway-2")


def _default_services(compose: dict[str, Any]) -> set[str]:
    """What a plain ``docker compose up`` starts: the services in no profile."""
    return {name for name, service in compose["services"].items() if not service.get("profiles")}


def test_compose_runs_the_gateway_beside_seaweedfs(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert _default_services(compose) == {"gateway", "seaweedfs"}
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


def _example_values() -> dict[str, str]:
    return dict(
        line.split("=", 1)
        for line in (REPO / "deploy" / "env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )


def _checked_settings(service: dict[str, Any], tmp_path: Path) -> tuple[Settings, dict[str, str]]:
    """The service's settings as its container would load them, after check-config passed on
    them: ``.env`` from the example, secret files (``/run/secrets/x``) made in ``tmp_path``."""
    example = _example_values()
    env = _environment(service, example)
    tmp_path.mkdir(parents=True, exist_ok=True)
    secrets = {
        "signing_key": json.dumps(new_signing_key().as_dict(private=True)),
        "postgres_password": "example-db-password",
    }
    for name, value in list(env.items()):
        if name.endswith("_FILE") and value.startswith("/run/secrets/"):
            secret = tmp_path / value.removeprefix("/run/secrets/")
            secret.write_text(secrets[secret.name])
            env[name] = str(secret)
    config_mount = next(v for v in service["volumes"] if v.endswith(":ro"))
    config = REPO / config_mount.split(":")[0]
    assert env["PANGOLIN_CONFIG"] == config_mount.split(":")[1]

    result = CliRunner().invoke(gateway_cli, ["check-config", "--config", str(config)], env=env)

    assert result.exit_code == 0, result.output
    return load_settings(config, env), example


def test_gateway_config_in_compose_passes_check_config(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    settings, example = _checked_settings(compose["services"]["gateway"], tmp_path)

    assert settings.catalogs["default"].upstream == "http://seaweedfs:8181"
    assert (
        settings.catalogs["default"].upstream_auth.client_secret == example["SEAWEEDFS_SECRET_KEY"]
    )
    assert settings.tokens.signing_key == (tmp_path / "signing_key").read_text().strip()
    assert not settings.store.url  # the single gateway keeps its SQLite store


def test_compose_replicas_profile_runs_two_gateways_on_one_postgresql(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    profiled = {name for name in services if services[name].get("profiles") == ["replicas"]}
    assert profiled == {"postgres", "gateway-init", *REPLICAS}
    database = services["postgres"]
    assert database["image"].startswith("postgres:")
    assert database["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert "/readyz" not in str(database["healthcheck"])
    assert "pg_isready" in database["healthcheck"]["test"]
    assert any(v.endswith(":/var/lib/postgresql/data") for v in database["volumes"])
    # init prepares the database once, after it is up; the replicas serve only after that.
    init = services["gateway-init"]
    assert init["command"] == ["pangolin-gateway", "init"]
    assert init["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in REPLICAS:
        replica = services[name]
        assert replica["command"] == ["pangolin-gateway", "serve"]
        assert replica["depends_on"]["gateway-init"] == {
            "condition": "service_completed_successfully"
        }
        assert replica["depends_on"]["seaweedfs"] == {"condition": "service_healthy"}
        assert "/readyz" in " ".join(replica["healthcheck"]["test"])
        assert replica["build"] == "." and replica["image"] == services["gateway"]["image"]
    ports = [services[name]["ports"] for name in REPLICAS]
    assert ports == [["8081:8080"], ["8082:8080"]]  # beside the single gateway's 8080
    # Workers are set, not auto: on a many-core host, auto's connections (replicas x cores x
    # (pool_size + 1)) would pass PostgreSQL's default max_connections of 100.
    workers = {services[name]["environment"]["PANGOLIN_WORKERS"] for name in REPLICAS}
    assert workers == {"${PANGOLIN_WORKERS:-2}"}
    assert len(REPLICAS) * 2 * (StoreSettings().pool_size + 1) <= 100


def test_compose_replicas_share_the_database_and_the_signing_key_through_secrets(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    services = compose["services"]
    database = services["postgres"]["environment"]
    assert compose["secrets"]["postgres_password"]["file"].startswith("./secrets/")
    seen = []
    for name in ("gateway-init", *REPLICAS):
        service = services[name]
        assert set(service["secrets"]) == {"signing_key", "postgres_password"}
        # The password is a secret file, never in the URL or the compose file.
        assert "postgres_password" in service["environment"]["PANGOLIN_STORE__PASSWORD_FILE"]
        settings, _ = _checked_settings(service, tmp_path / name)
        url = urlsplit(settings.store.url)
        assert url.password is None
        assert (url.hostname, url.port) == ("postgres", 5432)
        assert url.username == database["POSTGRES_USER"]
        assert url.path == "/" + database["POSTGRES_DB"]
        assert settings.store.password == "example-db-password"
        seen.append((settings.store.url, settings.catalogs, settings.server.public_url))
    # One database, one catalog, one public URL: the replicas are interchangeable.
    assert len(set(map(repr, seen))) == 1


def test_image_serves_on_all_interfaces_inside_the_container() -> None:
    settings = _docker_settings()
    assert (settings.server.host, settings.server.port) == ("0.0.0.0", 8080)
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "EXPOSE 8080" in dockerfile
    assert "USER pangolin" in dockerfile  # not root
