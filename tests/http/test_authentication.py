"""Authentication on catalog routes, through the real app in front of the recording upstream."""

from __future__ import annotations

import asyncio
import gc
import json
import tracemalloc
import types
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.auth import authenticator as authn
from gateway.errors import UNAUTHENTICATED_MESSAGE
from gateway.identity import models as identity
from gateway.identity.models import ApiKey, generate_key
from gateway.identity.service_users import CreatedKey, ServiceUserAdmin
from gateway.settings import StoreSettings
from gateway.state import AUTHENTICATOR, TOKENS
from gateway.store.core import StoreCore
from gateway.store.tables import StoreTables

from ..conftest import ENGINES, Gateway, MakeGateway
from ..helpers import bearer, key_header

# Keys and tokens checked, cached and revoked on both stores (issue 13).
pytestmark = pytest.mark.parametrize("store_engine", ENGINES, indirect=True)

CATALOG = "/v1/namespaces"
REFUSED_BODY = {
    "error": {"message": UNAUTHENTICATED_MESSAGE, "type": "NotAuthorizedException", "code": 401}
}


async def status(gw: Gateway, headers: dict[str, str]) -> int:
    async with gw.client.get(CATALOG, headers=headers) as resp:
        await resp.read()
        return resp.status


async def assert_refused(gw: Gateway, headers: dict[str, str]) -> None:
    forwarded = len(gw.upstream.catalog_requests())
    async with gw.client.get(CATALOG, headers=headers) as resp:
        body = await resp.text()
        assert resp.status == 401, body
        assert json.loads(body) == REFUSED_BODY
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert len(gw.upstream.catalog_requests()) == forwarded


async def credential(gw: Gateway, created: CreatedKey, kind: str) -> dict[str, str]:
    if kind == "key":
        return key_header(created)
    return bearer(await gw.token(created))


class CallCounter:
    """Counts calls to a store method (a spy: the real method still runs)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, store: StoreTables) -> None:
        self.calls: dict[str, int] = {}
        for name in (
            "service_user_by_key_id", "service_user", "record_last_used", "transaction",
            "insert_service_user", "update_service_user", "delete_service_user",
        ):  # fmt: skip
            monkeypatch.setattr(store, name, self._counting(name, getattr(store, name)))

    def _counting(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def spy(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return method(*args, **kwargs)

        return spy


# -- accepted credentials ---------------------------------------------------------------------


async def test_x_api_key_is_accepted_and_forwarded_as_its_principal(gateway: Gateway) -> None:
    etl = await gateway.user()
    assert await status(gateway, key_header(etl)) == 200
    assert gateway.upstream.last.headers["X-Pangolin-Principal-Id"] == etl.user.id


async def test_bearer_api_key_is_accepted(gateway: Gateway) -> None:
    etl = await gateway.user()
    assert await status(gateway, bearer(etl.api_key.plaintext())) == 200
    assert gateway.upstream.last.headers["X-Pangolin-Principal-Id"] == etl.user.id


async def test_bearer_gateway_token_is_accepted(gateway: Gateway) -> None:
    etl = await gateway.user()
    assert await status(gateway, bearer(await gateway.token(etl))) == 200
    assert gateway.upstream.last.headers["X-Pangolin-Principal-Id"] == etl.user.id


async def test_x_api_key_wins_over_pyiceberg_bearer_none(gateway: Gateway) -> None:
    etl = await gateway.user()
    assert await status(gateway, {**key_header(etl), **bearer("None")}) == 200
    assert gateway.upstream.last.headers["X-Pangolin-Principal-Id"] == etl.user.id


# -- refused credentials: one identical 401, nothing forwarded --------------------------------

Case = Callable[[Gateway], Awaitable[dict[str, str]]]


async def no_credential(gw: Gateway) -> dict[str, str]:
    return {}


async def bearer_none(gw: Gateway) -> dict[str, str]:
    return bearer("None")


async def basic_scheme(gw: Gateway) -> dict[str, str]:
    return {"Authorization": "Basic ZXRsOnNlY3JldA=="}


async def empty_bearer(gw: Gateway) -> dict[str, str]:
    return {"Authorization": "Bearer "}


async def malformed_key(gw: Gateway) -> dict[str, str]:
    return {"X-API-Key": "pgl_not-a-key"}


async def unknown_key_id(gw: Gateway) -> dict[str, str]:
    await gw.user()
    return {"X-API-Key": generate_key().plaintext()}


async def wrong_secret(gw: Gateway) -> dict[str, str]:
    etl = await gw.user()
    return {"X-API-Key": f"pgl_{etl.api_key.key_id}_{generate_key().secret}"}


async def expired(gw: Gateway) -> dict[str, str]:
    etl = await gw.user(expires_at=gw.clock.now + 60)
    gw.clock.advance(61)
    return key_header(etl)


async def deactivated(gw: Gateway) -> dict[str, str]:
    etl = await gw.user()
    await gw.admin.deactivate(etl.user.id, actor="test")
    return key_header(etl)


async def deleted(gw: Gateway) -> dict[str, str]:
    etl = await gw.user()
    await gw.admin.delete(etl.user.id, actor="test")
    return key_header(etl)


async def rotated_away_key(gw: Gateway) -> dict[str, str]:
    etl = await gw.user()
    await gw.admin.rotate(etl.user.id, actor="test")
    return key_header(etl)


async def token_of_deleted_user(gw: Gateway) -> dict[str, str]:
    etl = await gw.user()
    token = await gw.token(etl)
    await gw.admin.delete(etl.user.id, actor="test")
    return bearer(token)


async def oversized_bearer(gw: Gateway) -> dict[str, str]:
    return bearer("a" * 9000)


async def garbage_jwt(gw: Gateway) -> dict[str, str]:
    return bearer("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl")


@pytest.mark.parametrize(
    "case",
    [
        no_credential, bearer_none, basic_scheme, empty_bearer, malformed_key, unknown_key_id,
        wrong_secret, expired, deactivated, deleted, rotated_away_key, token_of_deleted_user,
        oversized_bearer, garbage_jwt,
    ],
    ids=lambda case: case.__name__.replace("_", "-"),
)  # fmt: skip
async def test_refused_credential_gets_the_identical_401_and_is_not_forwarded(
    gateway: Gateway, case: Case
) -> None:
    await assert_refused(gateway, await case(gateway))


# -- changes take effect on the very next request ---------------------------------------------

CHANGES = ["rotate", "deactivate", "delete", "expire"]


@pytest.mark.parametrize("kind", ["key", "token"])
@pytest.mark.parametrize("change", CHANGES)
async def test_lifecycle_change_takes_effect_on_the_very_next_request(
    gateway: Gateway, change: str, kind: str
) -> None:
    etl = await gateway.user()
    headers = await credential(gateway, etl, kind)
    assert await status(gateway, headers) == 200

    await getattr(gateway.admin, change)(etl.user.id, actor="test")

    await assert_refused(gateway, headers)


async def test_rotated_key_works_at_once(gateway: Gateway) -> None:
    etl = await gateway.user()
    assert await status(gateway, key_header(etl)) == 200
    rotated = await gateway.admin.rotate(etl.user.id, actor="test")
    assert await status(gateway, key_header(rotated)) == 200
    assert await status(gateway, bearer(await gateway.token(rotated))) == 200


@pytest.mark.parametrize("kind", ["key", "token"])
async def test_a_credential_in_use_dies_the_moment_its_service_user_expires(
    gateway: Gateway, kind: str
) -> None:
    # Once used, the credential is accepted on the hot path (no store read): the expiry is
    # still checked there, on every request, against the clock.
    etl = await gateway.user(expires_at=gateway.clock.now + 60)
    headers = await credential(gateway, etl, kind)
    assert await status(gateway, headers) == 200
    gateway.clock.advance(59)
    assert await status(gateway, headers) == 200
    gateway.clock.advance(2)
    await assert_refused(gateway, headers)
    if kind == "key":  # (a token of it expires with it: refused as a bad token)
        outcome = await gateway.app[AUTHENTICATOR].authenticate(
            CIMultiDictProxy(CIMultiDict(headers))
        )
        assert (outcome.principal, outcome.reason) == (None, "expired")


async def test_a_token_in_use_is_refused_once_it_expires(gateway: Gateway) -> None:
    token = await gateway.token(await gateway.user())
    assert await status(gateway, bearer(token)) == 200
    gateway.clock.advance(3600 - 5)  # the default lifetime, less a margin
    assert await status(gateway, bearer(token)) == 200
    gateway.clock.advance(10)
    await assert_refused(gateway, bearer(token))


@pytest.mark.parametrize("kind", ["key", "token"])
async def test_reactivation_restores_access(gateway: Gateway, kind: str) -> None:
    etl = await gateway.user()
    headers = await credential(gateway, etl, kind)
    await gateway.admin.deactivate(etl.user.id, actor="test")
    await assert_refused(gateway, headers)

    await gateway.admin.reactivate(etl.user.id, actor="test")

    assert await status(gateway, headers) == 200


# -- hot path: no store reads after the first request, no store writes at all ------------------


@pytest.mark.parametrize("kind", ["key", "token"])
async def test_repeat_requests_do_no_store_reads_and_no_store_writes(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    etl = await gateway.user()
    headers = await credential(gateway, etl, kind)
    # Settle the change poller on the current identity version, so nothing it does in the
    # middle of the test clears the caches.
    await gateway.app[AUTHENTICATOR].check_for_changes()
    assert await status(gateway, headers) == 200

    counter = CallCounter(monkeypatch, gateway.store)
    for _ in range(20):
        gateway.clock.advance(1)
        assert await status(gateway, headers) == 200

    assert counter.calls == {}


async def test_last_used_is_written_only_by_a_flush_with_the_time_of_the_last_request(
    gateway: Gateway,
) -> None:
    etl = await gateway.user()
    for _ in range(3):
        gateway.clock.advance(10)
        assert await status(gateway, key_header(etl)) == 200
    assert (await gateway.admin.get(etl.user.id)).last_used_at is None

    await gateway.flush()

    assert (await gateway.admin.get(etl.user.id)).last_used_at == gateway.clock.now


async def test_flush_writes_many_requests_of_many_users_in_one_batch(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = [await gateway.user(f"etl-{i}") for i in range(5)]
    for _ in range(4):
        for created in users:
            assert await status(gateway, key_header(created)) == 200
    counter = CallCounter(monkeypatch, gateway.store)

    await gateway.flush()

    assert counter.calls == {"record_last_used": 1, "transaction": 1}
    for created in users:
        assert (await gateway.admin.get(created.user.id)).last_used_at == gateway.clock.now


async def test_flush_without_requests_writes_nothing(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = CallCounter(monkeypatch, gateway.store)
    await gateway.flush()
    assert counter.calls == {}


# -- changes made by another process ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["key", "token"])
async def test_deactivation_by_another_process_is_enforced_after_the_next_change_check(
    gateway: Gateway, kind: str
) -> None:
    etl = await gateway.user()
    headers = await credential(gateway, etl, kind)
    assert await status(gateway, headers) == 200

    async with gateway.another_store() as other:
        await ServiceUserAdmin(other, clock=gateway.clock).deactivate(etl.user.id, actor="w2")
    assert await gateway.app[AUTHENTICATOR].check_for_changes()

    await assert_refused(gateway, headers)


async def test_background_poller_enforces_another_process_deactivation(
    make_gateway: MakeGateway, tmp_path: Path
) -> None:
    gw = await make_gateway(
        store=StoreSettings(path=str(tmp_path / "polled" / "pangolin.db"), change_poll_seconds=0.05)
    )
    etl = await gw.user()
    assert await status(gw, key_header(etl)) == 200

    async with gw.another_store() as other:
        await ServiceUserAdmin(other, clock=gw.clock).deactivate(etl.user.id, actor="w2")

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    while await status(gw, key_header(etl)) == 200:
        assert loop.time() < deadline, "the poller never noticed the other process's change"
        await asyncio.sleep(0.01)
    await assert_refused(gw, key_header(etl))


# -- repeat keys: SHA-256 once, then a keyed BLAKE2b compare -----------------------------------


async def test_a_repeated_key_is_checked_against_the_store_digest_only_once(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = identity.verify_key

    def counting(key: ApiKey, digest: bytes | None) -> bool:
        calls.append(key.key_id)
        return real(key, digest)

    monkeypatch.setattr(authn, "verify_key", counting)
    etl = await gateway.user()
    for _ in range(3):
        assert await status(gateway, key_header(etl)) == 200
    assert calls == [etl.api_key.key_id]
    # Any identity change forgets what was verified: the next request checks the digest again.
    gateway.app[AUTHENTICATOR].invalidate()
    assert await status(gateway, key_header(etl)) == 200
    assert len(calls) == 2


async def test_a_wrong_secret_for_a_recently_verified_key_id_is_refused(gateway: Gateway) -> None:
    etl = await gateway.user()
    assert await status(gateway, key_header(etl)) == 200
    other = generate_key()
    forged = ApiKey(key_id=etl.api_key.key_id, secret=other.secret)
    await assert_refused(gateway, {"X-API-Key": forged.plaintext()})
    assert await status(gateway, key_header(etl)) == 200  # the real key still works


async def test_text_around_a_recently_verified_key_id_never_passes_for_the_key(
    gateway: Gateway,
) -> None:
    # The hot path finds the last verified key by the key id's place in the text; only the
    # whole key's digest accepts it, whatever else the text holds.
    etl = await gateway.user()
    key = etl.api_key.plaintext()
    assert await status(gateway, key_header(etl)) == 200
    for text in (key + "x", key[:-1], key[:20] + "_" + "ü" * 43, key.upper()):
        await assert_refused(gateway, {"X-API-Key": text})
    assert await status(gateway, {"X-API-Key": f"  {key} "}) == 200  # trimmed, as ever


async def test_text_around_a_recently_used_token_never_passes_for_the_token(
    gateway: Gateway,
) -> None:
    # The bearer hot path looks the token up by the digest of what follows "Bearer ": any
    # other text misses it and is judged by the full path.
    token = await gateway.token(await gateway.user())
    assert await status(gateway, bearer(token)) == 200
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    for text in (token + "x", token[:-1], flipped, token + " x"):
        await assert_refused(gateway, bearer(text))
    for value in (f"bearer {token}", f"Bearer   {token} ", f"BEARER {token}"):
        assert await status(gateway, {"Authorization": value}) == 200  # as ever


async def test_a_token_of_any_text_is_refused_never_an_error(gateway: Gateway) -> None:
    # The token cache's digest takes whatever text arrives: a header aiohttp decoded with
    # surrogate escapes, a JSON string with a lone surrogate, letters outside ASCII.
    authenticator = gateway.app[AUTHENTICATOR]
    for text in ("\udc80" * 10, "jeton-\u00e9.x.y", "\ud800.\udfff.x"):
        assert authenticator.verify_token(text) is None


async def test_a_cached_token_costs_the_authenticator_a_few_hundred_bytes(
    gateway: Gateway,
) -> None:
    # The soak mints a token a few dozen times a second, each then used, and the cache keeps
    # each until it expires: entries must not hold the token text (580 bytes alone).
    etl = await gateway.user()
    principal = (await gateway.app[AUTHENTICATOR].authenticate_key(etl.api_key)).principal
    assert principal is not None
    tokens = [gateway.app[TOKENS].issue(principal, "catalog").access_token for _ in range(2000)]
    authenticator = gateway.app[AUTHENTICATOR]
    gc.collect()
    tracemalloc.start()
    try:
        for token in tokens:
            # A copy made here, as a request's header is: what the caches keep of it counts
            # (the verified signature and the hot path's record).
            outcome = await authenticator.authenticate_token(token.encode().decode())
            assert outcome.principal is not None
        gc.collect()
        kept, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kept / len(tokens) < 400


async def test_a_cached_service_user_costs_full_garbage_collections_six_objects(
    gateway: Gateway,
) -> None:
    # Every full collection walks every object the caches hold, so its pause grows with the
    # service users in use: with eight objects each it was 78-327 ms at c32 on a million-user
    # store (bench, 20,000-key cycles). Users without grants share the empty grant index, and
    # a hot key is one record.
    authenticator = gateway.app[AUTHENTICATOR]
    created = [await gateway.user(f"user-{i}") for i in range(101)]
    headers = [CIMultiDictProxy(CIMultiDict(key_header(c))) for c in created]
    first = headers.pop()  # what the first request sets up once
    assert (await authenticator.authenticate(first)).principal is not None
    users, before = len(headers), len(held_by(authenticator))
    for request in headers * 2:  # the full path, then the hot one
        assert (await authenticator.authenticate(request)).principal is not None
    assert (len(held_by(authenticator)) - before) / users <= 6


def held_by(root: object) -> set[int]:
    """The objects the collector tracks that ``root`` reaches, short of code, classes,
    modules and the store (what lives as long as the process, and the store's own caches)."""
    stop = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType)
    seen: set[int] = set()
    todo = [root]
    while todo:
        item = todo.pop()
        if id(item) in seen or isinstance(item, (*stop, StoreCore)):
            continue
        seen.add(id(item))
        todo.extend(r for r in gc.get_referents(item) if gc.is_tracked(r))
    return seen


@pytest.mark.parametrize("kind", ["key", "token"])
async def test_a_credential_accepted_on_a_read_an_invalidation_overtook_is_read_again(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    # The request in flight when another process deactivates its service user is accepted
    # on the row it read; the next one must not be accepted on what that request left
    # behind (the hot path's record of the credential), but read the user again.
    authenticator = gateway.app[AUTHENTICATOR]
    etl = await gateway.user()
    headers = CIMultiDictProxy(CIMultiDict(await credential(gateway, etl, kind)))
    await authenticator.check_for_changes()
    authenticator.invalidate()
    name = "service_user_by_key_id" if kind == "key" else "service_user"
    real = getattr(gateway.store, name)
    release = asyncio.Event()
    reads: list[str] = []

    async def stale_read(key: str) -> Any:
        row = await real(key)
        reads.append(key)
        if len(reads) == 1:
            await release.wait()  # the row as it was, still on its way when the change lands
        return row

    monkeypatch.setattr(gateway.store, name, stale_read)
    first = asyncio.create_task(authenticator.authenticate(headers))
    async with asyncio.timeout(5):
        while not reads:
            await asyncio.sleep(0)
    async with gateway.another_store() as other:
        await ServiceUserAdmin(other, clock=gateway.clock).deactivate(etl.user.id, actor="w2")
    assert await authenticator.check_for_changes()
    release.set()
    assert (await first).principal is not None

    again = await authenticator.authenticate(headers)

    assert (again.principal, again.reason) == (None, "inactive")
    assert len(reads) == 2


async def test_concurrent_requests_for_a_cold_key_share_one_store_read(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    etl = await gateway.user()
    await gateway.app[AUTHENTICATOR].check_for_changes()
    gateway.app[AUTHENTICATOR].invalidate()  # cold, as after any identity change
    counter = CallCounter(monkeypatch, gateway.store)

    statuses = await asyncio.gather(*(status(gateway, key_header(etl)) for _ in range(16)))

    assert statuses == [200] * 16
    assert counter.calls == {"service_user_by_key_id": 1}


async def test_a_read_started_before_an_invalidation_is_not_shared_after_it(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    authenticator = gateway.app[AUTHENTICATOR]
    etl = await gateway.user()
    await authenticator.check_for_changes()
    authenticator.invalidate()
    release = asyncio.Event()
    reads: list[str] = []
    real = gateway.store.service_user_by_key_id

    async def slow_read(key_id: str) -> Any:
        reads.append(key_id)
        if len(reads) == 1:
            await release.wait()  # the first read is still in flight when the change lands
        return await real(key_id)

    monkeypatch.setattr(gateway.store, "service_user_by_key_id", slow_read)
    first = asyncio.create_task(authenticator.authenticate_key(etl.api_key))
    async with asyncio.timeout(5):
        while not reads:
            await asyncio.sleep(0)
    authenticator.invalidate()
    second = asyncio.create_task(authenticator.authenticate_key(etl.api_key))
    async with asyncio.timeout(5):
        while len(reads) < 2:
            await asyncio.sleep(0)
    release.set()
    assert (await first).principal is not None
    assert (await second).principal is not None
    assert len(reads) == 2  # the second did its own read, after the invalidation


# -- one credential per request ----------------------------------------------------------------


async def ambiguous_status(gw: Gateway, pairs: list[tuple[str, str]], path: str = CATALOG) -> int:
    forwarded = len(gw.upstream.catalog_requests())
    async with gw.client.get(path, headers=CIMultiDict(pairs)) as resp:
        body = await resp.json()
        assert body["error"]["code"] == resp.status
    assert len(gw.upstream.catalog_requests()) == forwarded
    return resp.status


async def test_a_repeated_credential_header_is_400_whatever_its_copies_hold(
    gateway: Gateway,
) -> None:
    good_key = (await gateway.user("good")).api_key.plaintext()
    bad_key = generate_key().plaintext()
    for pairs in (
        [("X-API-Key", good_key), ("X-API-Key", bad_key)],
        [("X-API-Key", bad_key), ("X-API-Key", good_key)],
        [("X-API-Key", good_key), ("X-API-Key", good_key)],
        [("Authorization", f"Bearer {good_key}"), ("Authorization", f"Bearer {bad_key}")],
        [("Authorization", f"Bearer {good_key}"), ("Authorization", "Bearer None")],
    ):
        assert await ambiguous_status(gateway, pairs) == 400, pairs


async def test_an_api_key_with_a_bearer_of_another_principal_is_400(gateway: Gateway) -> None:
    good, other = await gateway.user("good"), await gateway.user("other")
    good_key = good.api_key.plaintext()
    for value in (other.api_key.plaintext(), await gateway.token(other)):
        pairs = [("X-API-Key", good_key), ("Authorization", f"Bearer {value}")]
        assert await ambiguous_status(gateway, pairs) == 400


async def test_an_api_key_with_a_failing_bearer_is_401(gateway: Gateway) -> None:
    good = await gateway.user()
    pairs = [("X-API-Key", good.api_key.plaintext()), ("Authorization", "Bearer not-a-token")]
    assert await ambiguous_status(gateway, pairs) == 401


async def test_an_api_key_with_a_bearer_of_the_same_principal_or_bearer_none_is_accepted(
    gateway: Gateway,
) -> None:
    good = await gateway.user()
    key = good.api_key.plaintext()
    for value in (key, await gateway.token(good), "None"):
        headers = {"X-API-Key": key, "Authorization": f"Bearer {value}"}
        assert await status(gateway, headers) == 200, value


async def test_two_credentials_on_the_management_api_are_400_and_change_nothing(
    gateway: Gateway,
) -> None:
    user = await gateway.user("plain")
    before = (await gateway.admin.list())[1]
    for first, second in ((gateway.root, user), (user, gateway.root)):
        pairs = [
            ("X-API-Key", first.api_key.plaintext()),
            ("X-API-Key", second.api_key.plaintext()),
        ]
        async with gateway.client.post(
            "/api/v1/service-users", json={"name": "smuggled"}, headers=CIMultiDict(pairs)
        ) as resp:
            assert resp.status == 400
    assert (await gateway.admin.list())[1] == before


# -- the authenticator seam ----------------------------------------------------------------------


async def test_create_app_authenticates_with_the_authenticator_it_is_given(
    make_gateway: MakeGateway,
) -> None:
    # How the benchmark measures "no client auth" without any switch in the product.
    seen: list[str] = []

    class Recording(authn.Authenticator):
        async def authenticate(self, headers: Any, *, may_read: bool = True) -> authn.AuthOutcome:
            seen.append(headers.get("X-API-Key", "-"))
            return await super().authenticate(headers, may_read=may_read)

    gateway = await make_gateway(authenticator=Recording)
    assert await status(gateway, {}) == 401
    assert await status(gateway, key_header(gateway.root)) == 200
    assert seen == ["-", gateway.root.api_key.plaintext()]
