"""The SHA-256 of a text, for what is kept or compared by digest rather than in clear (failed
logins, backoff counters)."""

from __future__ import annotations

import hashlib

__all__ = ("text_digest",)


def text_digest(text: str) -> bytes:
    """SHA-256 of ``text`` as UTF-8; a lone surrogate (JSON can escape one) is encoded as
    is rather than refused, so any text a client sends has a digest."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
