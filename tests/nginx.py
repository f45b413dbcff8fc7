"""A real nginx (Debian's) for the forward-auth tests, running a shipped template as it is
rendered in production (``${NAME}`` placeholders, as envsubst fills them)."""

from __future__ import annotations

import os
import shutil
import string
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from .processes import REPO, free_port, http_answers

__all__ = ("DECISION_CACHE_TEMPLATE", "FORWARD_AUTH_TEMPLATE", "render", "running_nginx")

DEPLOY = REPO / "deploy" / "nginx"
FORWARD_AUTH_TEMPLATE = DEPLOY / "pangolin-forward-auth.conf.template"
DECISION_CACHE_TEMPLATE = DEPLOY / "pangolin-decision-cache.conf.template"


def render(template: Path, values: Mapping[str, str]) -> str:
    """The template with its ``${NAME}`` placeholders filled; nginx's own ``$variables`` are
    left alone (what ``envsubst`` does with the names it is given)."""
    return string.Template(template.read_text(encoding="utf-8")).safe_substitute(values)


@contextmanager
def running_nginx(
    root: Path, template: Path, values: Mapping[str, str], *, decision_cache: bool = False
) -> Iterator[str]:
    """nginx in the foreground with ``template`` rendered inside its ``http`` block, listening
    on a free loopback port; its base URL. ``values`` fill the template (PANGOLIN_LISTEN and
    PANGOLIN_DECISION_CACHE are given here); with ``decision_cache``, the decision cache's
    template too."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    given = {
        **values, "PANGOLIN_LISTEN": f"127.0.0.1:{port}",
        "PANGOLIN_DECISION_CACHE": "pangolin_decisions" if decision_cache else "off",
        "PANGOLIN_DECISION_CACHE_DIR": str(root / "decisions"),
    }  # fmt: skip
    site = render(template, given)
    if decision_cache:
        site = render(DECISION_CACHE_TEMPLATE, given) + "\n" + site
    temps = "\n".join(
        f"    {kind}_temp_path {root}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # As root (CI), workers would otherwise switch to "nobody", who cannot write the temps.
    user = "user root;" if os.geteuid() == 0 else ""
    conf = root / "nginx.conf"
    conf.write_text(
        f"daemon off;\nworker_processes 1;\npid {root}/nginx.pid;\n{user}\n"
        f"error_log {root}/error.log warn;\nevents {{ worker_connections 1024; }}\n"
        f"http {{\n    access_log {root}/access.log;\n{temps}\n{site}\n}}\n",
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [nginx, "-p", str(root), "-c", str(conf), "-e", str(root / "error.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not http_answers(url + "/v1/oauth/tokens"):
            if proc.poll() is not None:
                raise AssertionError(f"nginx exited:\n{(root / 'error.log').read_text()}")
            if time.monotonic() > deadline:
                raise AssertionError("nginx did not start")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
