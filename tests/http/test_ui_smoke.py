"""The admin UI's main flow at the HTML level: log in, create a service user, see its key once."""

from __future__ import annotations

from ..conftest import Gateway
from .ui_support import human, ui_login


async def test_an_admin_logs_in_creates_a_service_user_and_sees_its_key_once(
    gateway: Gateway,
) -> None:
    await human(gateway, "alice")
    alice = await ui_login(gateway, "alice")
    listing = await alice.get("/ui/service-users")
    assert listing.status == 200, listing.text
    form = await alice.get("/ui/service-users/new")
    assert form.status == 200, form.text
    created = await alice.post(
        "/ui/service-users", {"name": "nightly", "role": "TenantUser", "expiry": "30"}
    )
    assert created.status == 200, created.text
    key = created.key()
    assert created.headers["Cache-Control"] == "no-store"
    after = await alice.get("/ui/service-users")
    assert "nightly" in after.text and key not in after.text
