"""A small synchronous HTTP client for the gateway's management API (stdlib only, so the CLI
starts fast), and where a ``login`` session token is kept."""

from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.command_errors import CommandError

__all__ = ("ApiClient", "ApiError", "SessionStore")

SESSION_ENDED = (
    "the saved login session has ended (it expired, the password was changed or the account "
    "removed): run `pangolin-admin login` again"
)


class ApiError(CommandError):
    """A refused or failed call; ``status`` is the HTTP status, or None if unreachable. Raised
    from a command, click prints it as one line (``error: ... (HTTP 404)``) and exits 1."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    def format_message(self) -> str:
        suffix = f" (HTTP {self.status})" if self.status is not None else ""
        return f"{self.message}{suffix}"


@dataclass
class ApiClient:
    url: str
    credential: tuple[str, str] | None = None  # (header name, value)
    timeout: float = 30.0
    # The credential is a session saved by `login`: a 401 then means that session has ended,
    # which the user can fix, rather than a bad key.
    session: bool = False

    def call(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        query: dict[str, Any] | None = None,
    ) -> Any:
        """The decoded JSON answer (None for 204); raises ApiError for anything else."""
        # urllib.request.Request raises a bare ValueError for a URL without a scheme (e.g.
        # `--url localhost`) before the request is sent, outside the handling below: it was a
        # traceback instead of one line.
        if urllib.parse.urlsplit(self.url).scheme not in ("http", "https"):
            raise ApiError(
                f"cannot reach the gateway at {self.url}: the URL must start with http:// or https://"
            )
        target = self.url.rstrip("/") + path
        params = {k: v for k, v in (query or {}).items() if v is not None}
        if params:
            target += "?" + urllib.parse.urlencode(params)
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.credential is not None:
            headers[self.credential[0]] = self.credential[1]
        request = urllib.request.Request(target, data=data, headers=headers, method=method)
        # No proxies from the environment: credentials go to the gateway and nowhere else.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=self.timeout) as response:
                raw = response.read()
                return json.loads(raw) if raw else None
        except urllib.error.HTTPError as err:
            with err:
                if err.code == 401 and self.session:
                    raise ApiError(SESSION_ENDED, err.code) from None
                raise ApiError(_error_message(err.read(), err.code), err.code) from None
        except (TimeoutError, urllib.error.URLError, ConnectionError, ValueError) as err:
            reason = getattr(err, "reason", err)
            raise ApiError(f"cannot reach the gateway at {self.url}: {reason}") from None
        except http.client.HTTPException as err:
            # Something answered, but not in HTTP (a wrong port): BadStatusLine and the like are
            # neither URLError nor OSError, so they escaped as a traceback. Their text is the
            # peer's raw bytes, so only the class name is shown.
            raise ApiError(
                f"cannot reach the gateway at {self.url}: the answer is not HTTP "
                f"({type(err).__name__})"
            ) from None


def _error_message(raw: bytes, status: int) -> str:
    try:
        doc = json.loads(raw)
        message = doc["error"]["message"]
        if isinstance(message, str):
            return message
    except (ValueError, KeyError, TypeError):
        pass
    return f"the gateway answered HTTP {status}"


class SessionStore:
    """Session tokens from ``login``, per gateway URL, in a file only the user can read."""

    def __init__(self, path: Path | None = None) -> None:
        if path is None:
            base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
            path = Path(base) / "pangolin" / "sessions.json"
        self.path = path

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return (
            {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}
        )

    def get(self, url: str) -> str | None:
        return self._load().get(url.rstrip("/"))

    def put(self, url: str, token: str) -> None:
        sessions = self._load()
        sessions[url.rstrip("/")] = token
        self._write(sessions)

    def remove(self, url: str) -> bool:
        sessions = self._load()
        if sessions.pop(url.rstrip("/"), None) is None:
            return False
        self._write(sessions)
        return True

    def _write(self, sessions: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_suffix(".tmp")
        # Created 0600 before anything is written, then renamed into place atomically.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(sessions, handle)
        os.replace(tmp, self.path)
