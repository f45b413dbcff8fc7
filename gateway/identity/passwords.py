"""Human passwords: argon2 through the passlib API (installed from the maintained ``libpass``
distribution; the original passlib is unmaintained and breaks with current bcrypt).

Hashing costs about 0.1 s of CPU by design, so it runs in a worker thread, never on the event
loop, and only on login and password changes, never on the catalog request path.
"""

from __future__ import annotations

import asyncio
from typing import Final

from passlib.context import CryptContext

__all__ = ("MAX_PASSWORD", "MIN_PASSWORD", "hash_password", "verify_password")

MIN_PASSWORD: Final = 12
MAX_PASSWORD: Final = 1024  # argon2 hashes anything, but a megabyte password is a DoS lever

_CONTEXT: Final = CryptContext(schemes=["argon2"], deprecated="auto")
# Verified against when the username is unknown, so that answer takes as long as a wrong password.
_DUMMY_HASH: Final = _CONTEXT.hash("pangolin-dummy-password")


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_CONTEXT.hash, password)


async def verify_password(password: str, password_hash: str | None) -> bool:
    """Constant-effort check; ``None`` (unknown user) verifies a dummy hash and fails."""
    if len(password) > MAX_PASSWORD:
        return False
    target = password_hash if password_hash is not None else _DUMMY_HASH
    ok = await asyncio.to_thread(_CONTEXT.verify, password, target)
    return ok and password_hash is not None
