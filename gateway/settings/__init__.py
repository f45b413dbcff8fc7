"""Settings: frozen dataclasses loaded from TOML, overridden by ``PANGOLIN_*`` variables.

The package: ``models`` (the dataclasses and the names they allow), ``loading`` (TOML, the
environment, types; ``SettingsError``) and ``validation`` (the one pure ``validate()``).

Loading reports every problem at once (unknown keys, wrong types, invalid values) in the
style of oauth2-proxy's ``--config-test``: ``SettingsError.problems`` is the whole list.

Environment overrides address keys by path with ``__`` between levels, for example
``PANGOLIN_SERVER__PORT=9090`` or
``PANGOLIN_CATALOGS__DEFAULT__UPSTREAM_AUTH__CLIENT_SECRET=...``. Relative paths in the file
are resolved against the directory of the file, so a config works from any working directory.
"""

from __future__ import annotations

from .loading import ENV_PREFIX as ENV_PREFIX
from .loading import SettingsError, load_settings, settings_from_dict
from .models import KEY_AGE_ACTIONS as KEY_AGE_ACTIONS
from .models import NAME_RE as NAME_RE
from .models import UPSTREAM_AUTH_TYPES as UPSTREAM_AUTH_TYPES
from .models import UPSTREAM_CLIENTS as UPSTREAM_CLIENTS
from .models import (
    CatalogSettings,
    ForwardAuthSettings,
    KeySettings,
    LimitSettings,
    RoleHeaderSettings,
    ServerSettings,
    Settings,
    StoreSettings,
    TokenSettings,
    UiSettings,
    UpstreamAuthSettings,
)
from .validation import validate, warnings

__all__ = (
    "CatalogSettings",
    "ForwardAuthSettings",
    "KeySettings",
    "LimitSettings",
    "RoleHeaderSettings",
    "ServerSettings",
    "Settings",
    "SettingsError",
    "StoreSettings",
    "TokenSettings",
    "UiSettings",
    "UpstreamAuthSettings",
    "load_settings",
    "settings_from_dict",
    "validate",
    "warnings",
)
