"""Times in the management API: ISO 8601 text with a time zone in, ``...Z`` (UTC) out."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ("iso", "parse_time")


def parse_time(field: str, value: str) -> float:
    """ISO 8601 with a time zone (``2027-01-31T00:00:00Z``) to epoch seconds; ValueError with
    a message naming ``field`` otherwise."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{field}: must be an ISO 8601 time such as 2027-01-31T00:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        raise ValueError(f"{field}: must include a time zone (for example Z for UTC)")
    try:
        # Some times parse but fall outside the years 1 to 9999 in UTC; stored, every answer
        # showing them (iso) could not be built.
        parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{field}: must be a time between the years 1 and 9999 in UTC") from None
    return parsed.timestamp()


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")
