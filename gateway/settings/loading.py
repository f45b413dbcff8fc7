"""Loading settings: TOML, then ``PANGOLIN_*`` overrides, then values checked against types.

Every problem is collected (``SettingsError.problems``), not only the first; the semantic
checks are ``validation``'s.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from .models import Settings
from .validation import validate

__all__ = ("ENV_PREFIX", "SettingsError", "load_settings", "settings_from_dict")

ENV_PREFIX: Final = "PANGOLIN_"


class SettingsError(Exception):
    """The configuration has problems; ``problems`` lists all of them."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))
        self.problems = problems


def load_settings(path: Path | str | None, environ: Mapping[str, str]) -> Settings:
    """Read ``path`` (optional), apply ``PANGOLIN_*`` overrides, validate; raise SettingsError."""
    problems: list[str] = []
    data: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        path = Path(path)
        base = path.resolve().parent
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SettingsError([f"{path}: file not found"]) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError([f"{path}: cannot read: {exc}"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError([f"{path}: not valid TOML: {exc}"]) from None
    _apply_env(data, environ, problems)
    settings = settings_from_dict(data, problems)
    # Semantic checks run even when there are unknown keys or wrong types, so one run lists
    # every problem. A setting already reported as malformed (its default stands in for it)
    # is not reported a second time.
    malformed = [problem.partition(": ")[0] for problem in problems]
    problems.extend(
        problem
        for problem in validate(settings)
        if not any(_within(problem.partition(": ")[0], where) for where in malformed)
    )
    if problems:
        raise SettingsError(problems)
    store_path = Path(settings.store.path)
    if not store_path.is_absolute():
        store = dataclasses.replace(settings.store, path=str(base / store_path))
        settings = dataclasses.replace(settings, store=store)
    server = settings.server
    cert, key = (
        str(base / value) if value and not Path(value).is_absolute() else value
        for value in (server.tls_cert_file, server.tls_key_file)
    )
    if (cert, key) != (server.tls_cert_file, server.tls_key_file):
        server = dataclasses.replace(server, tls_cert_file=cert, tls_key_file=key)
        settings = dataclasses.replace(settings, server=server)
    return settings


def _within(path: str, where: str) -> bool:
    """Whether settings ``path`` is ``where`` or lies inside it."""
    return path == where or path.startswith(where + ".")


def _apply_env(data: dict[str, Any], environ: Mapping[str, str], problems: list[str]) -> None:
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == "PANGOLIN_CONFIG":
            continue
        # Read by the admin CLI, by click (serve --workers) and by the bench switch: not settings.
        if name in ("PANGOLIN_URL", "PANGOLIN_API_KEY", "PANGOLIN_WORKERS"):
            continue
        if name.endswith("_FILE"):
            # Docker/Kubernetes secrets convention: PANGOLIN_X_FILE=/run/secrets/x sets X to
            # the file's content, so secrets need not sit in the environment or the TOML.
            try:
                value = Path(value).read_text(encoding="utf-8").strip()
            except OSError as exc:
                problems.append(f"{name}: cannot read {value}: {exc.strerror or exc}")
                continue
            except UnicodeDecodeError:
                problems.append(f"{name}: {value} is not UTF-8 text")
                continue
            name = name[: -len("_FILE")]
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[path[-1]] = value


def settings_from_dict(data: Mapping[str, Any], problems: list[str]) -> Settings:
    """Build Settings from plain data, appending type and unknown-key problems."""
    return _build(Settings, data, "", problems)


_T = typing.TypeVar("_T")


def _build(cls: type[_T], data: Any, where: str, problems: list[str]) -> _T:
    if not isinstance(data, Mapping):
        problems.append(f"{where or 'top level'}: expected a table")
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, raw in data.items():
        name = f"{where}.{key}" if where else str(key)
        if key not in fields:
            problems.append(f"{name}: unknown setting")
            continue
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            values[key] = _build(typing.cast(type[Any], hint), raw, name, problems)
        elif typing.get_origin(hint) is Mapping:
            if not isinstance(raw, Mapping):
                problems.append(f"{name}: expected a table")
                continue
            item_cls = typing.get_args(hint)[1]
            values[key] = {
                str(k): _build(item_cls, v, f"{name}.{k}", problems) for k, v in raw.items()
            }
        else:
            ok, value = _coerce(hint, raw)
            if ok:
                values[key] = value
            else:
                problems.append(f"{name}: expected {_describe(hint)}, got {_given(hint, raw)}")
    return cls(**values)


def _coerce(hint: Any, raw: Any) -> tuple[bool, Any]:
    """Convert a TOML value (or an environment string) to ``hint``."""
    if hint is bool:
        if isinstance(raw, bool):
            return True, raw
        if isinstance(raw, str) and raw.lower() in ("true", "1", "yes", "false", "0", "no"):
            return True, raw.lower() in ("true", "1", "yes")
        return False, None
    if hint is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return True, raw
        if isinstance(raw, str) and re.fullmatch(r"-?\d+", raw.strip()):
            return True, int(raw)
        return False, None
    if hint is float:
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return True, float(raw)
        if isinstance(raw, str):
            try:
                return True, float(raw)
            except ValueError:
                return False, None
        return False, None
    if hint is str:
        return (True, raw) if isinstance(raw, str) else (False, None)
    if typing.get_origin(hint) is tuple:
        if isinstance(raw, str):  # environment: comma-separated
            raw = [part.strip() for part in raw.split(",") if part.strip()]
        if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
            return True, tuple(raw)
        return False, None
    raise TypeError(f"unsupported settings type {hint!r}")  # a programming error


def _given(hint: Any, raw: Any) -> str:
    """What a problem says was given instead. A string setting may hold a secret (a password,
    a token, the forward-auth secret, a URL with credentials) written without its quotes, as
    a number, say: only its kind is named, never the value. Any other setting's value is
    quoted, which shows the operator which of theirs it was."""
    if hint is not str:
        return repr(raw)
    kinds: dict[type, str] = {bool: "true or false", int: "a number", float: "a number",
                              list: "a list", dict: "a table"}  # fmt: skip
    return next((kind for t, kind in kinds.items() if isinstance(raw, t)), "a date or time")


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is tuple:
        return "a list of strings"
    names: dict[object, str] = {bool: "true or false", int: "an integer", float: "a number"}
    return names.get(hint, "a string")
