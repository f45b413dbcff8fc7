"""Small helpers shared by the test layers: credential headers."""

from __future__ import annotations

from gateway.identity.service_users import CreatedKey

__all__ = ("bearer", "key_header")


def bearer(value: str) -> dict[str, str]:
    """``Authorization: Bearer <value>`` (a gateway token, or an API key sent as a bearer)."""
    return {"Authorization": f"Bearer {value}"}


def key_header(created: CreatedKey) -> dict[str, str]:
    """``X-API-Key`` with the service user's key."""
    return {"X-API-Key": created.api_key.plaintext()}
