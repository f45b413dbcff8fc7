"""SIGHUP: the configuration read again, checked as ``check-config`` checks it, and put in
force without dropping a connection or a request in flight (``proxy.configured``: the
catalogs, the default catalog and the role headers; the rest is reported as waiting for a
restart). A configuration with a problem is refused whole, each problem logged, and the one in
force stays. With ``--workers N`` the supervisor reads and checks it once, then hands the same
settings to one worker after another (``workers``)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

from ..settings import Settings, SettingsError, warnings
from ..state import CONFIGURED

__all__ = ("apply", "reread")

_LOGGER = logging.getLogger(__name__)


def reread(read: Callable[[], Settings]) -> Settings | None:
    """The configuration ``read`` anew, or None when it has problems (each one logged)."""
    try:
        settings = read()
    except SettingsError as exc:
        _LOGGER.error(
            "SIGHUP: configuration refused (%d problem(s)); the one in force stays",
            len(exc.problems),
        )
        for problem in exc.problems:
            _LOGGER.error("  - %s", problem)
        return None
    except Exception:  # a reload must never end a serving process (a deleted cwd, say)
        _LOGGER.exception("SIGHUP: the configuration could not be read; the one in force stays")
        return None
    for warning in warnings(settings):
        _LOGGER.warning("%s", warning)
    return settings


def apply(app: web.Application, settings: Settings) -> None:
    """Put ``settings`` in force in this process, and log what changed. A reload must never
    end a process that serves: whatever goes wrong is logged, and what was in force stays."""
    try:
        changed = app[CONFIGURED].reload(settings)
    except Exception:
        _LOGGER.exception("SIGHUP: configuration not applied; the one in force stays")
        return
    if changed.anything:
        parts = [
            f"{what} {', '.join(names)}"
            for what, names in (
                ("added catalog(s)", changed.added),
                ("removed catalog(s)", changed.removed),
                ("changed catalog(s)", changed.changed),
            )
            if names
        ]
        if changed.default_catalog:
            parts.append(f"default catalog now {settings.default_catalog!r}")
        if changed.role_headers:
            parts.append("new role headers")
        _LOGGER.info("SIGHUP: configuration reloaded: %s", "; ".join(parts))
    else:
        _LOGGER.info("SIGHUP: configuration reloaded: no change to the catalogs or role headers")
    if changed.on_restart:
        _LOGGER.warning(
            "SIGHUP: these settings changed but take effect only on a restart: %s",
            ", ".join(changed.on_restart),
        )
