"""pangolin-admin (``admin_cli``) against the real gateway on a real port, in front of a real
SeaweedFS: no mocked HTTP. Each test has its own XDG_CONFIG_HOME, so saved sessions stay in its
tmp_path. The live gateway is shared by the whole session, hence unique names everywhere."""

from __future__ import annotations

import contextlib
import datetime
import json
import re
import secrets
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from pyiceberg.catalog import load_catalog

from admin_cli.main import main
from gateway.identity.models import Role, parse_key

from ..live import LiveGateway, SeaweedUpstream

pytestmark = pytest.mark.seaweedfs

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "tr0ubadour & a much longer one"
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
COPY_NOW = "Copy this key now: it will not be shown again.\n"
SERVICE_USER_FIELDS = {
    "id", "name", "description", "tenant", "role", "key_id", "active", "created_at",
    "created_by", "expires_at", "last_used_at", "key_rotated_at", "key_generation",
    "previous_key_id", "previous_key_expires_at", "allowed_networks", "rate_limit", "rate_burst",
}  # fmt: skip
USER_FIELDS = {
    "id", "username", "tenant", "role", "active", "created_at", "created_by", "last_login_at",
    "failed_logins", "password_changed_at",
}  # fmt: skip
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


# -- running the CLI -----------------------------------------------------------------------------


@dataclass
class Cli:
    """``pangolin-admin --url <gateway>`` with its own config directory (saved sessions)."""

    url: str
    root_key: str
    config_home: Path

    def run(
        self, *args: str, api_key: str | None = None, url: str | None = None,
        input: str | None = None,
    ) -> Result:  # fmt: skip
        options = ["--url", url or self.url, *(["--api-key", api_key] if api_key else [])]
        env = {
            "XDG_CONFIG_HOME": str(self.config_home),
            "PANGOLIN_URL": None,  # nothing from the environment running the tests
            "PANGOLIN_API_KEY": None,
        }
        return CliRunner().invoke(main, [*options, *args], input=input, env=env)

    def root(self, *args: str, input: str | None = None) -> Result:
        return self.run(*args, api_key=self.root_key, input=input)

    def root_json(self, *args: str) -> Any:
        return ok_json(self.root(*args, "--json"))

    @property
    def sessions_file(self) -> Path:
        return self.config_home / "pangolin" / "sessions.json"

    def saved_sessions(self) -> dict[str, str]:
        sessions: dict[str, str] = json.loads(self.sessions_file.read_text())
        return sessions

    def login(self, username: str, password: str = PASSWORD) -> None:
        """``login --username`` with the password typed at the prompt (stdin)."""
        ok(self.run("login", "--username", username, input=f"{password}\n"))


def describe(result: Result) -> str:
    return (
        f"exit {result.exit_code}\nstdout: {result.stdout!r}\nstderr: {result.stderr!r}\n"
        f"exception: {result.exception!r}"
    )


def ok(result: Result) -> Result:
    assert result.exit_code == 0, describe(result)
    return result


def ok_json(result: Result) -> Any:
    return json.loads(ok(result).stdout)


def refused(result: Result, status: int | None = None) -> str:
    """Exit 1 with exactly one line on stderr, starting "error:"; nothing on stdout; and no
    exception escaped the CLI (which would have been a traceback)."""
    assert result.exit_code == 1, describe(result)
    assert isinstance(result.exception, SystemExit), describe(result)
    assert result.stdout == "", describe(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), describe(result)
    if status is not None:
        assert lines[0].endswith(f"(HTTP {status})"), describe(result)
    return lines[0]


def block(text: str) -> dict[str, str]:
    """The default ``key  value`` block output of get/create/rotate, as a dict."""
    rows = (line.partition(" ") for line in text.splitlines())
    return {key: value.strip() for key, _, value in rows}


def new_service_user(cli: Cli, *options: str) -> dict[str, Any]:
    answer: dict[str, Any] = cli.root_json("create-service-user", "--name", unique("cli"), *options)
    return answer


def new_user(cli: Cli, *options: str) -> dict[str, Any]:
    username = unique("admin")
    user: dict[str, Any] = cli.root_json(
        "create-user", "--username", username, "--password", PASSWORD, *options
    )
    return user


def new_tenant(cli: Cli) -> str:
    name: str = cli.root_json("create-tenant", "--name", unique("cli"))["name"]
    return name


def new_identity(cli: Cli, kind: str) -> str:
    """A new service user, user or tenant; its id (a tenant's name, which delete-tenant takes)."""
    if kind == "service-user":
        return str(new_service_user(cli)["service_user"]["id"])
    if kind == "user":
        return str(new_user(cli)["id"])
    return new_tenant(cli)


def exists(cli: Cli, kind: str, id_: str) -> bool:
    if kind == "service-user":
        return cli.root("get-service-user", "--id", id_).exit_code == 0
    if kind == "user":
        return id_ in {u["id"] for u in cli.root_json("list-users", "--limit", "1000")["items"]}
    return id_ in {t["name"] for t in cli.root_json("list-tenants")["items"]}


# -- talking to the gateway directly -------------------------------------------------------------


def http(
    url: str, *, headers: dict[str, str] | None = None, form: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with _OPENER.open(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read())


def catalog_status(gateway: LiveGateway, headers: dict[str, str]) -> int:
    return http(f"{gateway.url}/v1/default/v1/warehouse/namespaces", headers=headers)[0]


def mint_token(gateway: LiveGateway, user_id: str, key: str) -> tuple[int, dict[str, Any]]:
    form = {"grant_type": "client_credentials", "client_id": user_id, "client_secret": key}
    return http(f"{gateway.url}/v1/default/v1/oauth/tokens", form=form)


def pyiceberg_creates_and_lists_a_namespace(
    gateway: LiveGateway, seaweed: SeaweedUpstream, user_id: str, key: str
) -> None:
    """The seed's PyIceberg snippet with the id and key the CLI printed."""
    catalog = load_catalog(
        "pangolin",
        **{
            "type": "rest",
            "uri": f"{gateway.url}/v1/default/",
            "credential": f"{user_id}:{key}",
            "oauth2-server-uri": f"{gateway.url}/v1/default/v1/oauth/tokens",
            "scope": "catalog",
            **seaweed.s3_properties(),
        },
    )
    namespace = f"cli_{secrets.token_hex(4)}"
    catalog.create_namespace(namespace)
    try:
        assert (namespace,) in catalog.list_namespaces()
    finally:
        catalog.drop_namespace(namespace)


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def root_key(live_gateway: LiveGateway) -> str:
    return live_gateway.user("root-cli", Role.ROOT).api_key.plaintext()


@pytest.fixture
def cli(live_gateway: LiveGateway, root_key: str, tmp_path: Path) -> Cli:
    return Cli(live_gateway.url, root_key, tmp_path / "config")


@pytest.fixture
def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@pytest.fixture
def not_http_url() -> Iterator[str]:
    """A port that answers, but not in HTTP (it greets like an SSH server): a mistyped port."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(30)

        def answer_once() -> None:
            with contextlib.suppress(OSError):
                conn, _ = server.accept()
                with conn:
                    request = b""
                    while b"\r\n\r\n" not in request:
                        request += conn.recv(65536) or b"\r\n\r\n"
                    conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")

        thread = threading.Thread(target=answer_once, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    thread.join(timeout=30)


# -- the seed's two commands ---------------------------------------------------------------------


def test_create_service_user_prints_uuid_and_key_once_and_the_key_works_for_pyiceberg(
    cli: Cli, live_gateway: LiveGateway, seaweed: SeaweedUpstream
) -> None:
    name = unique("etl-pipeline")
    result = ok(cli.root("create-service-user", "--name", name, "--role", "TenantUser"))
    shown = block(result.stdout)
    assert UUID.fullmatch(shown["id"])
    assert (shown["name"], shown["role"], shown["active"]) == (name, "TenantUser", "yes")
    key = shown["api_key"]
    assert key.startswith("pgl_") and result.stdout.count(key) == 1
    assert result.stderr == COPY_NOW
    pyiceberg_creates_and_lists_a_namespace(live_gateway, seaweed, shown["id"], key)


def test_rotate_service_user_key_prints_a_new_key_once_and_retires_the_old_key_and_its_token(
    cli: Cli, live_gateway: LiveGateway, seaweed: SeaweedUpstream
) -> None:
    name = unique("etl-pipeline")
    created = block(
        ok(cli.root("create-service-user", "--name", name, "--role", "TenantUser")).stdout
    )
    user_id, old_key = created["id"], created["api_key"]
    status, answer = mint_token(live_gateway, user_id, old_key)
    assert status == 200
    old_token = answer["access_token"]
    assert catalog_status(live_gateway, {"Authorization": f"Bearer {old_token}"}) == 200

    result = ok(cli.root("rotate-service-user-key", "--id", user_id))
    rotated = block(result.stdout)
    new_key = rotated["api_key"]
    assert (rotated["id"], rotated["key_generation"]) == (user_id, "2")
    assert new_key != old_key and result.stdout.count(new_key) == 1
    assert old_key not in result.stdout + result.stderr
    assert result.stderr == COPY_NOW

    assert catalog_status(live_gateway, {"X-API-Key": old_key}) == 401
    assert catalog_status(live_gateway, {"Authorization": f"Bearer {old_token}"}) == 401
    assert mint_token(live_gateway, user_id, old_key)[0] == 401
    pyiceberg_creates_and_lists_a_namespace(live_gateway, seaweed, user_id, new_key)


def test_rotate_with_grace_keeps_the_old_key_working_and_get_shows_until_when(
    cli: Cli, live_gateway: LiveGateway
) -> None:
    created = new_service_user(cli)
    user_id, old_key = created["service_user"]["id"], created["api_key"]

    rotated = cli.root_json("rotate-service-user-key", "--id", user_id, "--grace", "1h")

    new_key = rotated["api_key"]
    assert catalog_status(live_gateway, {"X-API-Key": old_key}) == 200
    assert catalog_status(live_gateway, {"X-API-Key": new_key}) == 200
    shown = block(ok(cli.root("get-service-user", "--id", user_id)).stdout)
    assert shown["previous_key_id"] == created["service_user"]["key_id"]
    ends = datetime.datetime.fromisoformat(shown["previous_key_expires_at"])
    left = (ends - datetime.datetime.now(datetime.UTC)).total_seconds()
    assert 3500 < left <= 3600
    # Rotating again without --grace ends the overlap at once.
    ok(cli.root("rotate-service-user-key", "--id", user_id))
    assert catalog_status(live_gateway, {"X-API-Key": old_key}) == 401
    assert catalog_status(live_gateway, {"X-API-Key": new_key}) == 401


def test_allow_limits_where_a_key_works_and_allow_anywhere_lifts_it(
    cli: Cli, live_gateway: LiveGateway
) -> None:
    created = new_service_user(cli, "--allow", "10.0.0.0/8", "--allow", "2001:db8::/32")
    user_id, key = created["service_user"]["id"], created["api_key"]
    assert created["service_user"]["allowed_networks"] == ["10.0.0.0/8", "2001:db8::/32"]
    assert catalog_status(live_gateway, {"X-API-Key": key}) == 401  # the tests are 127.0.0.1

    shown = block(
        ok(cli.root("update-service-user", "--id", user_id, "--allow", "127.0.0.1")).stdout
    )
    assert shown["allowed_networks"] == "127.0.0.1/32"
    assert catalog_status(live_gateway, {"X-API-Key": key}) == 200

    shown = block(ok(cli.root("update-service-user", "--id", user_id, "--allow-anywhere")).stdout)
    assert shown["allowed_networks"] == "-"
    refused_ = cli.root("update-service-user", "--id", user_id, "--allow", "nope")
    assert refused_.exit_code != 0 and "is not an IP address or CIDR" in refused_.stderr


def test_rotate_with_a_grace_that_is_no_duration_is_a_usage_error(cli: Cli) -> None:
    user_id = new_service_user(cli)["service_user"]["id"]
    result = cli.root("rotate-service-user-key", "--id", user_id, "--grace", "soon")
    assert result.exit_code == 2 and "--grace" in result.stderr


# -- --json on every command ---------------------------------------------------------------------


def test_service_user_commands_print_json_with_the_expected_fields(cli: Cli) -> None:
    tenant = new_tenant(cli)
    created = new_service_user(
        cli, "--tenant", tenant, "--description", "nightly", "--expires-in", "30d"
    )
    assert set(created) == {"service_user", "api_key"}
    user = created["service_user"]
    assert set(user) == SERVICE_USER_FIELDS
    assert (user["tenant"], user["role"], user["description"]) == (tenant, "TenantUser", "nightly")
    assert user["active"] is True and user["expires_at"] is not None
    id_ = user["id"]

    listed = cli.root_json("list-service-users", "--tenant", tenant)
    assert (listed["total"], listed["limit"], listed["offset"]) == (1, 100, 0)
    assert listed["items"] == [user]
    got = cli.root_json("get-service-user", "--id", id_)
    # get-service-user adds the use of the last 14 days (UTC), none yet, and its grants and
    # roles (test_admin_cli_grants), none either.
    assert {k: v for k, v in got.items() if k not in ("usage", "access")} == user
    assert [day["requests"] for day in got["usage"]["days"]] == [0] * 14
    assert got["access"] == {"grants": [], "roles": [], "effective": []}

    updated = cli.root_json("update-service-user", "--id", id_, "--description", "hourly")
    assert updated["description"] == "hourly"
    assert cli.root_json("deactivate-service-user", "--id", id_)["active"] is False
    assert cli.root_json("activate-service-user", "--id", id_)["active"] is True

    rotated = cli.root_json("rotate-service-user-key", "--id", id_)
    assert set(rotated) == {"service_user", "api_key"}
    assert rotated["api_key"] != created["api_key"]
    assert rotated["service_user"]["key_rotated_at"] is not None

    assert cli.root_json("delete-service-user", "--id", id_, "--yes") == {"deleted": id_}
    refused(cli.root("get-service-user", "--id", id_), 404)


def test_user_commands_print_json_with_the_expected_fields_and_no_password(cli: Cli) -> None:
    username = unique("admin")
    # The password is prompted for (twice): the prompts go to stderr, the JSON alone to stdout.
    prompted = cli.root("create-user", "--username", username, "--json", input=f"{PASSWORD}\n" * 2)
    created = ok_json(prompted)
    assert "Repeat for confirmation" in prompted.stderr and PASSWORD not in prompted.stdout
    assert set(created) == USER_FIELDS
    assert (created["role"], created["tenant"]) == ("TenantAdmin", "default")
    listed = cli.root_json("list-users", "--limit", "1000")
    assert {"items", "total", "limit", "offset"} <= set(listed)
    assert created in listed["items"]

    id_ = created["id"]
    deactivated = cli.root_json("deactivate-user", "--id", id_)
    assert (deactivated["id"], deactivated["active"]) == (id_, False)
    assert cli.root_json("activate-user", "--id", id_)["active"] is True
    changed = cli.root_json("change-password", "--id", id_, "--new-password", NEW_PASSWORD)
    assert changed["id"] == id_ and changed["password_changed_at"] >= created["password_changed_at"]
    assert cli.root_json("delete-user", "--id", id_, "--yes") == {"deleted": id_}
    assert id_ not in {u["id"] for u in cli.root_json("list-users", "--limit", "1000")["items"]}


def test_tenant_commands_print_json_with_the_expected_fields(cli: Cli) -> None:
    name = unique("cli")
    created = cli.root_json("create-tenant", "--name", name)
    assert set(created) == {"id", "name", "created_at"} and created["name"] == name
    listed = cli.root_json("list-tenants")
    assert created in listed["items"] and listed["total"] == len(listed["items"])
    assert cli.root_json("delete-tenant", "--id", name, "--yes") == {"deleted": name}
    assert created not in cli.root_json("list-tenants")["items"]


def test_whoami_and_audit_print_json_naming_the_actor_and_outcome(cli: Cli) -> None:
    me = cli.root_json("whoami")
    assert set(me) == {"id", "name", "type", "role", "tenant", "access", "grants"}
    assert (me["type"], me["role"], me["tenant"]) == ("service_user", "Root", "default")
    assert (me["access"], me["grants"]) == ({"default": "full"}, [])

    id_ = new_service_user(cli)["service_user"]["id"]
    cli.root_json("rotate-service-user-key", "--id", id_)
    page = cli.root_json("audit", "--target", id_)
    assert {"items", "total", "limit", "offset"} <= set(page)
    assert {(r["action"], r["actor"], r["outcome"]) for r in page["items"]} == {
        ("service_user.create", me["id"], "success"),
        ("service_user.rotate", me["id"], "success"),
    }

    missing = f"00000000-0000-4000-8000-{secrets.token_hex(6)}"
    refused(cli.root("rotate-service-user-key", "--id", missing), 404)
    failures = cli.root_json("audit", "--target", missing, "--outcome", "failure")["items"]
    assert [(r["action"], r["actor"]) for r in failures] == [("service_user.rotate", me["id"])]


def test_login_and_logout_print_json_and_prompts_stay_off_stdout(cli: Cli) -> None:
    username = new_user(cli)["username"]
    # No --username: both prompts are answered on stdin, and must not pollute the JSON.
    answer = ok_json(cli.run("login", "--json", input=f"{username}\n{PASSWORD}\n"))
    assert set(answer) == {"user", "expires_in"}
    assert answer["user"]["username"] == username and answer["expires_in"] > 0
    token = cli.saved_sessions()[cli.url]
    assert token not in json.dumps(answer)
    assert ok_json(cli.run("logout", "--json")) == {"logged_out": True}
    # Ended at the gateway, not only forgotten here.
    assert http(f"{cli.url}/api/v1/me", headers={"Authorization": f"Bearer {token}"})[0] == 401
    assert ok_json(cli.run("logout", "--json")) == {"logged_out": False}


def test_logout_forgets_the_session_and_says_so_when_the_gateway_cannot_be_reached(
    cli: Cli,
) -> None:
    username = new_user(cli)["username"]
    cli.login(username)
    token = cli.saved_sessions()[cli.url]
    # The same session saved for an address where nothing listens (a gateway that is down).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{probe.getsockname()[1]}"
    cli.sessions_file.write_text(json.dumps({down: token}))
    result = ok(cli.run("logout", url=down))
    assert result.stdout == ""
    assert "could not end the session" in result.stderr and "Logged out." in result.stderr
    assert token not in result.stderr
    assert cli.saved_sessions() == {}
    # It was not ended there: the real gateway still takes it.
    assert http(f"{cli.url}/api/v1/me", headers={"Authorization": f"Bearer {token}"})[0] == 200


def test_get_service_user_shows_its_requests_of_the_last_14_days(
    cli: Cli, live_gateway: LiveGateway
) -> None:
    created = new_service_user(cli)
    user, key = created["service_user"], created["api_key"]
    for _ in range(3):  # authenticated: counted, whatever the catalog answers
        assert catalog_status(live_gateway, {"X-API-Key": key}) != 401
    shown = block(ok(cli.root("get-service-user", "--id", user["id"])).stdout)
    assert shown["requests_14d"].startswith("3 in all; per day from ")
    assert shown["requests_14d"].endswith(" 0 3")  # today is the last day shown
    as_json = cli.root_json("get-service-user", "--id", user["id"])
    assert [day["requests"] for day in as_json["usage"]["days"]][-1] == 3


def test_key_appears_only_in_the_create_output_never_in_list_or_get(cli: Cli) -> None:
    tenant = new_tenant(cli)
    created = ok(cli.root("create-service-user", "--name", unique("once"), "--tenant", tenant))
    shown = block(created.stdout)
    key, id_ = shown["api_key"], shown["id"]
    parsed = parse_key(key)  # the secret may itself hold "_": never split the text by hand
    assert parsed is not None
    secret = parsed.secret
    later = [
        cli.root("list-service-users", "--tenant", tenant),
        cli.root("list-service-users", "--tenant", tenant, "--json"),
        cli.root("get-service-user", "--id", id_),
        cli.root("get-service-user", "--id", id_, "--json"),
    ]
    everything = created.stdout + created.stderr
    for result in later:
        assert id_ in ok(result).stdout
        everything += result.stdout + result.stderr
    assert everything.count(key) == 1 and everything.count(secret) == 1


# -- exit codes and error lines ------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["get-service-user"],
        ["update-service-user", "--description", "x"],
        ["rotate-service-user-key"],
        ["deactivate-service-user"],
        ["activate-service-user"],
        ["delete-service-user", "--yes"],
        ["delete-user", "--yes"],
        ["change-password", "--new-password", NEW_PASSWORD],
        ["delete-tenant", "--yes"],
    ],
    ids=lambda command: command[0],
)
def test_unknown_id_exits_1_with_one_error_line(cli: Cli, command: list[str]) -> None:
    assert "No such" in refused(cli.root(command[0], "--id", UNKNOWN_ID, *command[1:]), 404)


def test_duplicate_names_exit_1_with_one_error_line(cli: Cli) -> None:
    tenant = new_tenant(cli)
    name = new_service_user(cli, "--tenant", tenant)["service_user"]["name"]
    duplicate = cli.root("create-service-user", "--name", name, "--tenant", tenant)
    assert "already exists" in refused(duplicate, 409)
    refused(cli.root("create-tenant", "--name", tenant), 409)
    username = new_user(cli)["username"]
    refused(cli.root("create-user", "--username", username, "--password", PASSWORD), 409)


def test_tenant_with_identities_cannot_be_deleted_exit_1(cli: Cli) -> None:
    tenant = new_tenant(cli)
    new_service_user(cli, "--tenant", tenant)
    assert "Cannot delete the tenant" in refused(
        cli.root("delete-tenant", "--id", tenant, "--yes"), 409
    )
    assert tenant in {t["name"] for t in cli.root_json("list-tenants")["items"]}


def test_tenant_user_key_is_forbidden_to_manage_exit_1(cli: Cli) -> None:
    key = new_service_user(cli, "--role", "TenantUser")["api_key"]
    assert "Forbidden" in refused(cli.run("list-service-users", api_key=key), 403)
    refused(cli.run("create-service-user", "--name", unique("x"), api_key=key), 403)
    refused(cli.run("create-tenant", "--name", unique("x"), api_key=key), 403)


@pytest.mark.parametrize("api_key", ["not-a-key", f"pgl_{'0' * 16}_{'A' * 43}"])
def test_bad_api_key_exits_1_with_one_error_line(cli: Cli, api_key: str) -> None:
    assert "Not authorized" in refused(cli.run("whoami", api_key=api_key), 401)


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("create-service-user", "Missing option '--name'"),
        ("create-service-user --name n --role Admin", "Invalid value for '--role'"),
        (
            "create-service-user --name n --expires-in 1d --expires-at 2030-01-01T00:00:00Z",
            "either --expires-in or --expires-at",
        ),
        ("create-service-user --name n --expires-in 10x", "use a number with"),
        (f"update-service-user --id {UNKNOWN_ID}", "nothing to change"),
        ("get-service-user", "Missing option '--id'"),
        ("audit --outcome maybe", "Invalid value for '--outcome'"),
        ("no-such-command", "No such command"),
    ],
)
def test_usage_errors_exit_2(cli: Cli, command: str, message: str) -> None:
    result = cli.root(*command.split())
    assert result.exit_code == 2, describe(result)
    assert result.stdout == "" and message in result.stderr


def test_closed_port_url_gives_one_clear_line_and_exit_1(cli: Cli, closed_port_url: str) -> None:
    line = refused(cli.run("whoami", api_key=cli.root_key, url=closed_port_url))
    assert line.startswith(f"error: cannot reach the gateway at {closed_port_url}")


def test_url_without_scheme_gives_one_clear_line_and_exit_1(cli: Cli) -> None:
    # urllib raised ValueError while building the request, outside the client's error handling.
    line = refused(cli.run("whoami", api_key=cli.root_key, url="localhost"))
    assert "http://" in line and "localhost" in line


def test_url_of_a_port_that_does_not_speak_http_gives_one_clear_line_and_exit_1(
    cli: Cli, not_http_url: str
) -> None:
    # http.client.BadStatusLine is neither a URLError nor an OSError: it escaped as a traceback.
    line = refused(cli.run("whoami", api_key=cli.root_key, url=not_http_url))
    assert line.startswith(f"error: cannot reach the gateway at {not_http_url}")


def test_no_credentials_gives_one_clear_line_and_exit_1(cli: Cli) -> None:
    line = refused(cli.run("list-service-users"))
    assert "no credentials" in line and "--api-key" in line and "login" in line


# -- delete asks first ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["service-user", "user", "tenant"])
def test_delete_without_yes_asks_and_only_y_deletes(cli: Cli, kind: str) -> None:
    id_ = new_identity(cli, kind)
    declined = cli.root(f"delete-{kind}", "--id", id_, input="n\n")
    assert declined.exit_code == 1, describe(declined)
    assert "This cannot be undone" in declined.stderr and "Nothing deleted." in declined.stderr
    assert exists(cli, kind, id_)

    accepted = ok(cli.root(f"delete-{kind}", "--id", id_, input="y\n"))
    assert "This cannot be undone" in accepted.stderr and f"Deleted {id_}." in accepted.stderr
    assert not exists(cli, kind, id_)


def test_delete_with_yes_does_not_ask_and_notes_the_deletion_on_stderr(cli: Cli) -> None:
    id_ = new_service_user(cli)["service_user"]["id"]
    result = ok(cli.root("delete-service-user", "--id", id_, "--yes"))
    assert (result.stdout, result.stderr) == ("", f"Deleted {id_}.\n")
    refused(cli.root("get-service-user", "--id", id_), 404)


# -- login, sessions, passwords ------------------------------------------------------------------


def test_login_saves_a_user_only_session_that_later_commands_use_and_logout_removes_it(
    cli: Cli,
) -> None:
    username = new_user(cli, "--role", "TenantAdmin")["username"]
    result = ok(cli.run("login", "--username", username, input=f"{PASSWORD}\n"))
    assert result.stdout == f"Logged in to {cli.url} as {username} (TenantAdmin).\n"
    assert PASSWORD not in result.stdout + result.stderr
    assert cli.sessions_file.stat().st_mode & 0o777 == 0o600
    assert cli.sessions_file.parent.stat().st_mode & 0o777 == 0o700
    assert set(cli.saved_sessions()) == {cli.url}

    me = ok_json(cli.run("whoami", "--json"))
    assert (me["type"], me["name"], me["role"]) == ("user", username, "TenantAdmin")

    logout = ok(cli.run("logout"))
    assert (logout.stdout, logout.stderr) == ("", "Logged out.\n")
    assert cli.saved_sessions() == {}
    assert "no credentials" in refused(cli.run("whoami"))


def test_login_with_a_wrong_password_exits_1_and_saves_nothing(cli: Cli) -> None:
    username = new_user(cli)["username"]
    result = cli.run("login", "--username", username, "--password", "wrong password!!")
    assert "Invalid username or password" in refused(result, 401)
    assert not cli.sessions_file.exists()


def test_changing_your_own_password_ends_every_session_and_the_cli_says_to_log_in_again(
    cli: Cli, tmp_path: Path
) -> None:
    username = new_user(cli)["username"]
    elsewhere = Cli(cli.url, cli.root_key, tmp_path / "elsewhere")  # a second terminal
    cli.login(username)
    elsewhere.login(username)
    token = cli.saved_sessions()[cli.url]

    result = ok(
        cli.run("change-password", "--current-password", PASSWORD, "--new-password", NEW_PASSWORD)
    )
    assert result.stdout == ""
    assert "this one" in result.stderr and "pangolin-admin login" in result.stderr
    # The old session is dead at the gateway, so the CLI no longer keeps it.
    assert http(f"{cli.url}/api/v1/me", headers={"Authorization": f"Bearer {token}"})[0] == 401
    assert cli.saved_sessions() == {}
    assert "no credentials" in refused(cli.run("whoami"))

    # The other terminal's session ended too, and the CLI says why rather than just "401".
    line = refused(elsewhere.run("whoami"), 401)
    assert "session" in line and "pangolin-admin login" in line

    refused(cli.run("login", "--username", username, "--password", PASSWORD), 401)
    cli.login(username, NEW_PASSWORD)
    assert ok_json(cli.run("whoami", "--json"))["name"] == username


def test_a_session_of_a_deleted_account_is_reported_as_ended(cli: Cli) -> None:
    user = new_user(cli)
    cli.login(user["username"])
    ok(cli.root("delete-user", "--id", user["id"], "--yes"))
    line = refused(cli.run("whoami"), 401)
    assert "session has ended" in line and "pangolin-admin login" in line


def test_changing_your_own_password_needs_the_current_one(cli: Cli) -> None:
    username = new_user(cli)["username"]
    cli.login(username)
    result = cli.run(
        "change-password", "--current-password", "not my password", "--new-password", NEW_PASSWORD
    )
    assert "current_password" in refused(result, 403)
    assert ok_json(cli.run("whoami", "--json"))["name"] == username


# -- tables --------------------------------------------------------------------------------------


def test_list_service_users_default_output_is_a_table_with_a_header_row(cli: Cli) -> None:
    tenant = new_tenant(cli)
    roles = {
        new_service_user(cli, "--tenant", tenant, "--role", role)["service_user"]["name"]: role
        for role in ("TenantAdmin", "TenantUser")
    }
    result = ok(cli.root("list-service-users", "--tenant", tenant))
    header, *rows = result.stdout.splitlines()
    assert header.split() == [
        "ID", "NAME", "ROLE", "TENANT", "ACTIVE", "EXPIRES_AT", "LAST_USED_AT",
    ]  # fmt: skip
    assert [row.split()[1:] for row in rows] == [
        [name, roles[name], tenant, "yes", "-", "-"] for name in sorted(roles)
    ]
    for row in rows:
        id_, name, *_ = row.split()
        assert UUID.fullmatch(id_) and row.index(name) == header.index("NAME")
    assert result.stderr == ""

    first_page = ok(cli.root("list-service-users", "--tenant", tenant, "--limit", "1"))
    assert len(first_page.stdout.splitlines()) == 2  # header and one row
    assert first_page.stderr == "2 in all; use --offset to see more.\n"


@pytest.mark.parametrize(
    ("command", "header"),
    [
        ("list-users", ["ID", "USERNAME", "ROLE", "TENANT", "LAST_LOGIN_AT"]),
        ("list-tenants", ["ID", "NAME", "CREATED_AT"]),
        ("audit", ["AT", "ACTOR", "ACTION", "TARGET_ID", "OUTCOME", "CLIENT_ADDR"]),
    ],
)
def test_other_list_commands_default_output_is_a_table_with_a_header_row(
    cli: Cli, command: str, header: list[str]
) -> None:
    new_user(cli)  # at least one row in each
    result = ok(cli.root(command))
    first, *rows = result.stdout.splitlines()
    assert first.split() == header and rows and result.stderr == ""
