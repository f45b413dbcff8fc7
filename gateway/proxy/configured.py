"""The settings in force and one forwarder per catalog of them, replaced together by a reload.

Handlers read ``app[CONFIGURED].settings`` and ``.forwarders`` per request and never keep
them across an ``await``: a reload (SIGHUP, see ``serve.reload``) swaps both in one step of
the event loop, so a request sees the old configuration or the new one, never a mixture.
What a reload changes is the catalogs, the default catalog and the role headers; every other
setting is fixed at start (listener, store, tokens, limits ...), and one that differs in the
new configuration is reported as taking effect on the next restart, never half applied.

A forwarder is rebuilt only when its catalog's settings or the role headers changed: the
others keep their upstream connections and upstream tokens. A replaced forwarder serves the
requests it already has to the end (streamed answers included), then closes its connections.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from ..settings import CatalogSettings, Settings
from .forwarder import Forwarder
from .headers import HeaderPolicy

__all__ = ("Configured", "ForwarderFactory", "Reloaded")

RELOADABLE: Final = ("catalogs", "default_catalog", "role_headers")

ForwarderFactory = Callable[[str, CatalogSettings, HeaderPolicy], Forwarder]


@dataclass(frozen=True, slots=True)
class Reloaded:
    """What a reload changed, and which other settings differ (applied on restart)."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    default_catalog: bool = False
    role_headers: bool = False
    on_restart: tuple[str, ...] = ()

    @property
    def anything(self) -> bool:
        return bool(
            self.added or self.removed or self.changed or self.default_catalog
            or self.role_headers
        )  # fmt: skip


class Configured:
    __slots__ = ("_build", "_formerly", "_headers", "_retiring", "forwarders", "settings")

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.forwarders: Mapping[str, Forwarder] = {}
        self._build: ForwarderFactory | None = None
        self._headers = HeaderPolicy(settings.role_headers)
        # Role header names replaced by a reload in this process's life: still dropped from
        # what clients send (HeaderPolicy's ``formerly``).
        self._formerly: frozenset[str] = frozenset()
        # Forwarders a reload replaced, by the task that closes each once its requests are done.
        self._retiring: dict[asyncio.Task[None], Forwarder] = {}

    def start(self, build: ForwarderFactory) -> None:
        """Build the forwarders (at the app's start-up, once its upstream clients exist)."""
        self._build = build
        self.forwarders = {
            name: build(name, catalog, self._headers)
            for name, catalog in self.settings.catalogs.items()
        }

    def reload(self, new: Settings) -> Reloaded:
        """Put ``new``'s catalogs, default catalog and role headers in force (``new`` has
        passed the same checks as at start: ``settings.load_settings``)."""
        assert self._build is not None, "start() first"
        old = self.settings
        settings = dataclasses.replace(
            old, catalogs=new.catalogs, default_catalog=new.default_catalog,
            role_headers=new.role_headers,
        )  # fmt: skip
        role_headers = settings.role_headers != old.role_headers
        formerly, headers = self._formerly, self._headers
        if role_headers:
            formerly |= set(old.role_headers.names()) - set(settings.role_headers.names())
            headers = HeaderPolicy(settings.role_headers, formerly=formerly)
        kept = {n for n, c in settings.catalogs.items() if old.catalogs.get(n) == c}
        forwarders: dict[str, Forwarder] = {}
        built: list[Forwarder] = []
        try:
            for name, catalog in settings.catalogs.items():
                if name in kept and not role_headers:
                    forwarders[name] = self.forwarders[name]
                else:
                    built.append(forwarder := self._build(name, catalog, headers))
                    forwarders[name] = forwarder
        except BaseException:
            # Nothing changes: what was built for the new configuration goes again.
            for forwarder in built:
                self._retire(forwarder)
            raise
        replaced = [f for name, f in self.forwarders.items() if forwarders.get(name) is not f]
        # One step: no request sees the new settings with the old forwarders.
        self.settings, self.forwarders = settings, forwarders
        self._formerly, self._headers = formerly, headers
        for forwarder in replaced:
            self._retire(forwarder)
        return Reloaded(
            added=tuple(n for n in settings.catalogs if n not in old.catalogs),
            removed=tuple(n for n in old.catalogs if n not in settings.catalogs),
            changed=tuple(n for n in settings.catalogs if n in old.catalogs and n not in kept),
            default_catalog=settings.default_catalog != old.default_catalog,
            role_headers=role_headers,
            on_restart=_differences(old, new),
        )

    def _retire(self, forwarder: Forwarder) -> None:
        """Close ``forwarder``'s transport once its requests are done."""
        task = asyncio.get_running_loop().create_task(forwarder.retire())
        self._retiring[task] = forwarder
        task.add_done_callback(self._retiring.pop)

    async def close(self) -> None:
        """Close every forwarder's transport (the app's cleanup: no request is in flight)."""
        retiring = dict(self._retiring)
        for task in retiring:
            task.cancel()
        await asyncio.gather(*retiring, return_exceptions=True)
        for forwarder in (*retiring.values(), *self.forwarders.values()):
            await forwarder.close()


def _differences(old: Settings, new: Settings) -> tuple[str, ...]:
    """The settings (``section.name``) other than the reloadable ones that differ: names
    only, since a value may be a secret."""
    found: list[str] = []
    for field in dataclasses.fields(old):
        if field.name in RELOADABLE:
            continue
        before, after = getattr(old, field.name), getattr(new, field.name)
        if before == after:
            continue
        if dataclasses.is_dataclass(before):
            found.extend(
                f"{field.name}.{sub.name}"
                for sub in dataclasses.fields(before)
                if getattr(before, sub.name) != getattr(after, sub.name)
            )
        else:
            found.append(field.name)
    return tuple(found)
