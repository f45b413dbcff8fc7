"""Rendering for the admin UI: the page helper and what templates show about an identity
(status, relative times, key age), computed here so that every page says it the same way."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import aiohttp_jinja2
from aiohttp import web

from ..identity.models import Principal, Role, ServiceUser
from ..management.access import tenant_scope
from ..state import CLOCK, TENANTS
from .security import PAGE_HEADERS, csrf_token
from .state import UI_SESSION

__all__ = (
    "DAY",
    "EXPIRY_WARNING_DAYS",
    "KEY_MAX_AGE_DAYS",
    "Bar",
    "ServiceUserRow",
    "UsageChart",
    "ago",
    "exact",
    "form_text",
    "grantable_roles",
    "now",
    "render",
    "tenant_choices",
    "usage_chart",
)

# Pangolin's guidance is "rotate keys at least every 90 days"; an expiry this close is flagged.
KEY_MAX_AGE_DAYS: Final = 90
EXPIRY_WARNING_DAYS: Final = 14
DAY: Final = 86400.0


def render(
    request: web.Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
    caller: Principal | None = None,
) -> web.Response:
    """``template`` with the caller (for the header) and the CSRF token (for forms)."""
    token = request.get(UI_SESSION)
    page = {
        "caller": caller,
        "csrf": csrf_token(token) if token is not None else "",
        **(context or {}),
    }
    response = aiohttp_jinja2.render_template(template, request, page, status=status)
    response.headers.update(PAGE_HEADERS)
    return response


def exact(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(timestamp: float | None, now: float) -> str:
    """ "3 days ago", "in 5 hours", "never" for None."""
    if timestamp is None:
        return "never"
    seconds = timestamp - now
    future = seconds > 0
    seconds = abs(seconds)
    for unit, size in (("day", DAY), ("hour", 3600.0), ("minute", 60.0)):
        if seconds >= size:
            count = int(seconds // size)
            text = f"{count} {unit}{'s' if count != 1 else ''}"
            return f"in {text}" if future else f"{text} ago"
    return "in a moment" if future else "just now"


@dataclass(frozen=True, slots=True)
class ServiceUserRow:
    """A service user as the UI shows it."""

    user: ServiceUser
    now: float
    last_used_at: float | None

    @property
    def status(self) -> str:
        if not self.user.active:
            return "deactivated"
        if self.user.expires_at is not None and self.user.expires_at <= self.now:
            return "expired"
        return "active"

    @property
    def expires_soon(self) -> bool:
        expires = self.user.expires_at
        return expires is not None and self.now < expires <= self.now + EXPIRY_WARNING_DAYS * DAY

    @property
    def key_age_days(self) -> int:
        since = self.user.key_rotated_at or self.user.created_at
        return max(0, int((self.now - since) // DAY))

    @property
    def key_too_old(self) -> bool:
        return self.key_age_days > KEY_MAX_AGE_DAYS

    def unused_for(self, days: int) -> bool:
        """Never used, or not for ``days`` days: a candidate for pruning."""
        return self.last_used_at is None or self.last_used_at < self.now - days * DAY


def grantable_roles(caller: Principal) -> list[Role]:
    """The roles ``caller`` may give (never one above its own), highest first."""
    return [role for role in Role if role.rank <= caller.role.rank]


def now(request: web.Request) -> float:
    return request.app[CLOCK]()


def form_text(form: Any, name: str) -> str:
    """A form field's text; "" when it is missing or a file upload."""
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


async def tenant_choices(request: web.Request, caller: Principal) -> list[str]:
    """The tenants a new identity may go to: the caller's own, or any for Root."""
    if tenant_scope(caller) is not None:
        return [caller.tenant_name]
    return [tenant.name for tenant in await request.app[TENANTS].list()]


@dataclass(frozen=True, slots=True)
class Bar:
    day: str
    requests: int
    x: float
    y: float
    height: float


@dataclass(frozen=True, slots=True)
class UsageChart:
    """Requests per day as SVG bars, drawn on the server (no script, no inline style)."""

    bars: list[Bar]
    peak: int
    total: int
    width: float
    height: float
    bar_width: float


def usage_chart(days: list[tuple[str, int]], *, height: float = 120.0) -> UsageChart:
    step, bar = 28.0, 20.0
    peak = max((requests for _, requests in days), default=0)
    scale = (height - 20.0) / peak if peak else 0.0
    bars = [
        Bar(day, requests, x=index * step + 4, y=height - 16 - requests * scale,
            height=requests * scale)
        for index, (day, requests) in enumerate(days)
    ]  # fmt: skip
    return UsageChart(bars=bars, peak=peak, total=sum(r for _, r in days),
                      width=len(days) * step + 8, height=height, bar_width=bar)  # fmt: skip
