"""First-time set-up of a store: schema, token-signing key, and a ``Root`` service user."""

from __future__ import annotations

from dataclasses import dataclass

from ..signing_keys import create_signing_key
from ..store import DEFAULT_TENANT, Store
from .models import Role
from .service_users import CreatedKey, ServiceUserAdmin

__all__ = ("InitResult", "initialize")

ROOT_NAME = "root"


@dataclass(frozen=True, slots=True)
class InitResult:
    """``root`` (with its one-time key) is set only when this call initialized the store."""

    created: bool
    root: CreatedKey | None


async def initialize(
    store: Store, admin: ServiceUserAdmin, *, actor: str = "system:init"
) -> InitResult:
    """Idempotent: on a store that already has a signing key, change nothing. Replicas
    initializing one database at once take turns (``setup_lock``): one makes the Root user
    and the key, the others find them made."""
    async with store.setup_lock():
        return await _initialize(store, admin, actor)


async def _initialize(store: Store, admin: ServiceUserAdmin, actor: str) -> InitResult:
    if await store.signing_keys():
        return InitResult(created=False, root=None)
    # The Root user is created before the signing key: if we die in between, the next run
    # still sees "no signing key" and finishes (rotating the Root key, whose first display
    # may have been lost), instead of leaving a store with no way in.
    tenant = await store.tenant_by_name(DEFAULT_TENANT)
    assert tenant is not None  # the store guarantees the default tenant
    existing = await store.service_user_by_name(tenant.id, ROOT_NAME)
    if existing is not None:
        root = await admin.rotate(existing.id, actor=actor)
    else:
        root = await admin.create(
            name=ROOT_NAME,
            role=Role.ROOT,
            description="Created by pangolin-gateway init",
            actor=actor,
        )
    await create_signing_key(store)
    return InitResult(created=True, root=root)
