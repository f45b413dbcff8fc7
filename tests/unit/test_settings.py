"""Loading settings: TOML, PANGOLIN_* overrides, every problem at once, path resolution."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from gateway.settings import (
    CatalogSettings,
    ForwardAuthSettings,
    KeySettings,
    LimitSettings,
    RoleHeaderSettings,
    Settings,
    SettingsError,
    StoreSettings,
    UpstreamAuthSettings,
    load_settings,
    settings_from_dict,
    validate,
    warnings,
)

REPO = Path(__file__).resolve().parents[2]

VALID = """
default_catalog = "default"

[server]
port = 8181
trusted_proxies = ["10.0.0.1"]

[store]
path = "data/pangolin.db"
change_poll_seconds = 2

[catalogs.default]
upstream = "http://127.0.0.1:8181"
warehouse = "warehouse"

[catalogs.default.upstream_auth]
type = "oauth2"
client_id = "gateway"
"""

# One problem of each kind; a single load must report every one of them.
BROKEN = """
default_catalog = "missing"
colour = "blue"

[server]
port = "eighty"

[catalogs.default]
upstream = "ftp://catalog.example"

[catalogs.Bad_Name]
upstream = "http://127.0.0.1:8181"

[catalogs.namespaces]
upstream = "http://127.0.0.1:8181"

[catalogs.secure]
upstream = "http://127.0.0.1:8181"

[catalogs.secure.upstream_auth]
type = "oauth2"
client_id = "gateway"
"""

BROKEN_PROBLEMS = (
    "colour: unknown setting",
    "server.port: expected an integer, got 'eighty'",
    "catalogs.default.upstream: must be an http:// or https:// URL",
    "catalogs.Bad_Name: catalog names must be lowercase",
    "catalogs.namespaces: 'namespaces' is reserved",
    "catalogs.secure.upstream_auth: client_id and client_secret are required for 'oauth2'",
    "default_catalog: 'missing' is not one of the catalogs",
)
SECRET_ENV = "PANGOLIN_CATALOGS__DEFAULT__UPSTREAM_AUTH__CLIENT_SECRET"


def write(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(SettingsError) as raised:
        load_settings(path, environ or {})
    return raised.value.problems


def assert_reported(problems: list[str], expected: tuple[str, ...]) -> None:
    for wanted in expected:
        assert any(p.startswith(wanted) for p in problems), (wanted, problems)
    assert len(problems) == len(expected), problems


def test_load_settings_reads_the_toml_file(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, VALID), {SECRET_ENV: "s3cret"})

    assert settings.server.port == 8181
    assert settings.server.trusted_proxies == ("10.0.0.1",)
    assert settings.store.change_poll_seconds == 2.0
    catalog = settings.catalogs["default"]
    assert (catalog.upstream, catalog.warehouse) == ("http://127.0.0.1:8181", "warehouse")
    assert (catalog.upstream_auth.type, catalog.upstream_auth.client_id) == ("oauth2", "gateway")


def test_environment_overrides_apply_with_type_coercion(tmp_path: Path) -> None:
    environ = {
        "PANGOLIN_SERVER__PORT": "9090",
        "PANGOLIN_STORE__CHANGE_POLL_SECONDS": "0.25",
        SECRET_ENV: "s3cret",
        "PANGOLIN_CONFIG": "ignored: names the file, not a setting",
        "HOME": "/nowhere",
    }
    settings = load_settings(write(tmp_path, VALID), environ)

    assert settings.server.port == 9090
    assert settings.store.change_poll_seconds == 0.25
    assert settings.catalogs["default"].upstream_auth.client_secret == "s3cret"


def test_environment_override_with_the_wrong_type_is_a_problem(tmp_path: Path) -> None:
    problems = problems_of(
        write(tmp_path, VALID), {"PANGOLIN_SERVER__PORT": "ninety", SECRET_ENV: "s"}
    )
    assert problems == ["server.port: expected an integer, got 'ninety'"]


def test_unknown_environment_setting_is_a_problem(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, VALID), {"PANGOLIN_SERVR__PORT": "1", SECRET_ENV: "s"})
    assert problems == ["servr: unknown setting"]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    assert_reported(problems_of(write(tmp_path, BROKEN)), BROKEN_PROBLEMS)


def test_a_malformed_setting_is_not_reported_again_as_invalid(tmp_path: Path) -> None:
    # upstream = 5 is a type problem; its stand-in default ("") must not add "required" too.
    text = '[catalogs.default]\nupstream = 5\n\n[catalogs.other]\nupstream = "http://x"\n'
    problems = problems_of(write(tmp_path, text))
    assert problems == ["catalogs.default.upstream: expected a string, got a number"]


@pytest.mark.parametrize(
    ("value", "kind"),
    [("4815162342481516234248151623424815", "a number"), ("true", "true or false"),
     ('["sekrit-part-one", "sekrit-part-two"]', "a list"),
     ("1979-05-27T07:32:00Z", "a date or time"), ('{ value = "sekrit-in-a-table" }', "a table")],
)  # fmt: skip
def test_a_secret_given_as_the_wrong_type_is_named_by_its_kind_never_echoed(
    tmp_path: Path, value: str, kind: str
) -> None:
    # A secret written without its quotes (digits only, say) must not reach the error the
    # operator pastes into a ticket or that `serve` logs.
    text = f'[forward_auth]\nsecret = {value}\n[catalogs.default]\nupstream = "http://x"\n'
    with pytest.raises(SettingsError) as raised:
        load_settings(write(tmp_path, text), {})
    assert raised.value.problems == [f"forward_auth.secret: expected a string, got {kind}"]
    for secret in ("4815162342", "sekrit"):
        assert secret not in str(raised.value)


def test_relative_store_path_resolves_against_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(tmp_path / "etc" / "pangolin", VALID)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    settings = load_settings(Path("..") / "etc" / "pangolin" / "gateway.toml", {SECRET_ENV: "s"})

    assert Path(settings.store.path) == config.resolve().parent / "data" / "pangolin.db"


def test_absolute_store_path_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "abs" / "p.db"
    text = VALID.replace('"data/pangolin.db"', f'"{target}"')
    assert load_settings(write(tmp_path, text), {SECRET_ENV: "s"}).store.path == str(target)


def test_upstream_auth_repr_hides_its_secrets() -> None:
    auth = UpstreamAuthSettings(
        type="oauth2", token="static-token-1", client_id="gw", client_secret="client-secret-1"
    )
    settings = Settings(catalogs={"default": CatalogSettings(upstream_auth=auth)})
    for text in (repr(auth), str(auth), f"{auth}", repr(settings)):
        assert "static-token-1" not in text
        assert "client-secret-1" not in text
    assert "client_id='gw'" in repr(auth)


def test_missing_file_is_a_problem(tmp_path: Path) -> None:
    assert problems_of(tmp_path / "absent.toml") == [f"{tmp_path / 'absent.toml'}: file not found"]


def test_invalid_toml_is_a_problem(tmp_path: Path) -> None:
    (problem,) = problems_of(write(tmp_path, "[server\nport = 1\n"))
    assert "not valid TOML" in problem


@pytest.mark.parametrize("name", ["gateway.toml", "gateway.example.toml"])
def test_shipped_config_is_valid(name: str) -> None:
    settings = load_settings(REPO / "config" / name, {})
    assert settings.default_catalog in settings.catalogs
    assert Path(settings.store.path).is_absolute()


@pytest.mark.parametrize("tenant", ["Acme", "", "acme corp", "-acme"])
def test_catalog_tenant_must_be_a_name_a_tenant_can_have(tmp_path: Path, tenant: str) -> None:
    environ = {"PANGOLIN_CATALOGS__DEFAULT__TENANT": tenant, SECRET_ENV: "s"}
    assert_reported(problems_of(write(tmp_path, VALID), environ), ("catalogs.default.tenant",))


def test_an_idle_timeout_shorter_than_two_activity_steps_is_refused() -> None:
    # Last use is written at most once a minute: a 60 s idle limit would end busy sessions.
    problems: list[str] = []
    settings = settings_from_dict({"tokens": {"session_idle_seconds": 60}}, problems)
    assert any("session_idle_seconds" in p for p in validate(settings))


# -- upstream_auth_read and default_access ----------------------------------------------------

READ_CREDENTIAL = "\n[catalogs.default.upstream_auth_read]\n"


def catalog(**fields: Any) -> CatalogSettings:
    return CatalogSettings(upstream="http://127.0.0.1:8181", **fields)


@pytest.mark.parametrize(
    "section",
    ['type = "none"\n', 'token = "read-token"\n', ""],
    ids=["type-none", "no-type", "empty"],
)
def test_a_read_credential_section_without_a_credential_type_is_refused(
    tmp_path: Path, section: str
) -> None:
    # It would send every read-only caller's request upstream with no credential at all.
    problems = problems_of(write(tmp_path, VALID + READ_CREDENTIAL + section), {SECRET_ENV: "s"})

    assert_reported(problems, ("catalogs.default.upstream_auth_read.type",))
    assert "must be bearer or oauth2" in problems[0]


def test_a_read_credential_of_type_none_is_refused_however_the_settings_are_built() -> None:
    read = UpstreamAuthSettings(type="none")
    settings = Settings(catalogs={"default": catalog(upstream_auth_read=read)})

    assert validate(settings) == [
        "catalogs.default.upstream_auth_read.type: must be bearer or oauth2 "
        "(leave the section out for no read-only credential)"
    ]
    # Left out, or a real credential: valid.
    assert validate(Settings(catalogs={"default": catalog()})) == []
    bearer = UpstreamAuthSettings(type="bearer", token="read-token")
    assert validate(Settings(catalogs={"default": catalog(upstream_auth_read=bearer)})) == []


@pytest.mark.parametrize("access", ["none", "read"])
def test_a_confined_catalog_without_a_pinned_warehouse_is_warned_about(access: str) -> None:
    settings = Settings(
        catalogs={
            "lake": catalog(default_access=access),
            "fenced": catalog(default_access=access, warehouse="wh"),
            "prefixed": catalog(default_access=access, prefix="p"),
            "open": catalog(),
        },
        default_catalog="lake",
    )

    (warning,) = warnings(settings)

    assert warning.startswith(f"catalogs.lake: default_access is '{access}' but no warehouse")
    assert "every warehouse" in warning and "set warehouse (or prefix)" in warning
    assert validate(settings) == []  # a warning, not a problem


def test_the_warning_for_an_unpinned_catalog_comes_from_a_toml_file_too(tmp_path: Path) -> None:
    text = VALID.replace('warehouse = "warehouse"\n', 'default_access = "none"\n')
    settings = load_settings(write(tmp_path, text), {SECRET_ENV: "s"})

    assert [w.split(":")[0] for w in warnings(settings)] == ["catalogs.default"]
    pinned = VALID.replace(
        'warehouse = "warehouse"\n', 'warehouse = "w"\ndefault_access = "none"\n'
    )
    assert warnings(load_settings(write(tmp_path / "pinned", pinned), {SECRET_ENV: "s"})) == []


@pytest.mark.parametrize("grace", [float("nan"), float("inf"), 3601.0, 0.5])
def test_an_outage_grace_that_is_not_finite_or_not_above_two_polls_is_refused(
    grace: float,
) -> None:
    settings = Settings(
        store=StoreSettings(outage_grace_seconds=grace),
        catalogs={"default": CatalogSettings(upstream="http://127.0.0.1:1")},
    )
    assert any(p.startswith("store.outage_grace_seconds") for p in validate(settings))


def test_there_is_no_setting_that_turns_authentication_off(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[catalogs.default]\nupstream = "http://127.0.0.1:8181"\nrequire_auth = false\n'
    )
    with pytest.raises(SettingsError) as refused:
        load_settings(config, {"PANGOLIN_BENCH": "1"})
    assert sorted(refused.value.problems) == [
        "bench: unknown setting",  # PANGOLIN_BENCH is no switch either, just an unknown name
        "catalogs.default.require_auth: unknown setting",
    ]


def test_limits_out_of_range_are_refused_by_check_config() -> None:
    base = Settings(catalogs={})
    for limits, problem in (
        (LimitSettings(failed_auth_per_key=0), "limits.failed_auth_per_key"),
        (LimitSettings(failed_auth_per_address=-1), "limits.failed_auth_per_address"),
        (LimitSettings(failed_auth_window_seconds=float("nan")), "limits.failed_auth_window"),
        (LimitSettings(failed_auth_window_seconds=0.5), "limits.failed_auth_window"),
        (LimitSettings(requests_per_second=-1), "limits.requests_per_second"),
        (LimitSettings(requests_per_second=float("nan")), "limits.requests_per_second"),
        (LimitSettings(burst=-1), "limits.burst"),
        (LimitSettings(anonymous_per_second=float("inf")), "limits.anonymous_per_second"),
        (LimitSettings(anonymous_burst=-1), "limits.anonymous_burst"),
    ):
        problems = validate(dataclasses.replace(base, limits=limits))
        assert any(p.startswith(problem) for p in problems), problems


def test_key_age_settings_out_of_range_are_refused_by_check_config() -> None:
    base = Settings(catalogs={})
    for keys, problem in (
        (KeySettings(max_age_days=-1), "keys.max_age_days"),
        (KeySettings(max_age_action="delete"), "keys.max_age_action"),
        (KeySettings(notice_days=400), "keys.notice_days"),
    ):
        problems = validate(dataclasses.replace(base, keys=keys))
        assert any(p.startswith(problem) for p in problems), problems
    valid = validate(dataclasses.replace(base, keys=KeySettings(90, "refuse", 14)))
    assert not [p for p in valid if p.startswith("keys.")]


def test_a_short_forward_auth_secret_and_a_long_decision_cache_are_refused() -> None:
    base = Settings(catalogs={})
    for forward_auth, problem in (
        (ForwardAuthSettings(secret="short"), "forward_auth.secret"),
        (ForwardAuthSettings(secret="s" * 32, cache_seconds=301), "forward_auth.cache_seconds"),
        (ForwardAuthSettings(cache_seconds=-1), "forward_auth.cache_seconds"),
    ):
        problems = validate(dataclasses.replace(base, forward_auth=forward_auth))
        assert any(p.startswith(problem) for p in problems), problems
    # The shipped proxy templates set the default role header names only.
    renamed = dataclasses.replace(
        base, forward_auth=ForwardAuthSettings(secret="s" * 32),
        role_headers=RoleHeaderSettings(role="X-Catalog-Role"),
    )  # fmt: skip
    assert any(p.startswith("role_headers: forward-auth") for p in validate(renamed))
    secret = ForwardAuthSettings(secret="s" * 32, cache_seconds=5)
    assert "s" * 32 not in repr(secret)
    valid = validate(dataclasses.replace(base, forward_auth=secret))
    assert not [p for p in valid if p.startswith("forward_auth.")]


def test_tls_files_come_in_pairs_and_resolve_against_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "conf" / "gateway.toml"
    config.parent.mkdir()
    config.write_text(
        '[server]\ntls_cert_file = "tls/cert.pem"\ntls_key_file = "/etc/key.pem"\n'
        '[catalogs.default]\nupstream = "http://127.0.0.1:9"\n'
    )
    server = load_settings(config, {}).server
    assert server.tls_cert_file == str(tmp_path / "conf" / "tls" / "cert.pem")
    assert server.tls_key_file == "/etc/key.pem"

    alone = dataclasses.replace(Settings(catalogs={}).server, tls_cert_file="cert.pem")
    problems = validate(dataclasses.replace(Settings(catalogs={}), server=alone))
    assert "server.tls_cert_file, server.tls_key_file: give both, or neither" in problems
    drain = dataclasses.replace(Settings(catalogs={}).server, drain_seconds=float("nan"))
    problems = validate(dataclasses.replace(Settings(catalogs={}), server=drain))
    assert any(p.startswith("server.drain_seconds") for p in problems)
