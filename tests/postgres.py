"""A real PostgreSQL server for tests: Debian's ``postgresql`` package (``make postgres``
installs it), in a temporary directory, on a free loopback port, with durability switched off.

``initdb`` and ``pg_ctl`` refuse to run as root (as CI runs): then they run as the ``postgres``
system user the Debian package creates (``runuser -u postgres --``), in a directory owned by it.

Each test gets its own empty database (``database()``, created from ``template0`` and dropped
afterwards); ``kill_connections`` ends a database's backends, as a database restart or a
failover would.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from .processes import free_port

__all__ = ("PostgresServer", "find_bin_dir")

T = TypeVar("T")

SUPERUSER = "pangolin"
OS_USER = "postgres"  # created by Debian's postgresql package
PACKAGE_ROOT = Path("/usr/lib/postgresql")
# Tests only: nothing here needs to survive a crash.
SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
START_TIMEOUT = 30  # seconds, for pg_ctl -w
MEMORY_DIR = "/dev/shm"
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def find_bin_dir(root: Path = PACKAGE_ROOT) -> Path:
    """The newest ``/usr/lib/postgresql/<major>/bin`` with an ``initdb``."""
    found = [p.parent for p in root.glob("*/bin/initdb") if p.parent.parent.name.isdigit()]
    if not found:
        raise RuntimeError(f"no PostgreSQL server in {root}/*/bin: run `make postgres`")
    return max(found, key=lambda p: int(p.parent.name))


def _memory_dir(needed: int = 1 << 30) -> str | None:
    """/dev/shm when it is there with room to spare, else the usual temporary directory: on
    a disk, CREATE DATABASE (one per test) takes 0.4 s; in memory, 0.03 s."""
    try:
        stat = os.statvfs(MEMORY_DIR)
    except OSError:
        return None
    return MEMORY_DIR if stat.f_bavail * stat.f_frsize >= needed else None


def _quote(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"not a plain database name: {name!r}")
    return f'"{name}"'


def _literal(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]+", text):
        raise ValueError(f"not a plain locale name: {text!r}")
    return f"'{text}'"


@dataclass
class PostgresServer:
    """A running server; ``start()`` makes one and stops and removes it on the way out."""

    bin_dir: Path
    root: Path  # holds data/, the Unix socket and postgres.log
    port: int
    user: str = SUPERUSER
    # The OS user initdb and pg_ctl run as, when we are root.
    run_as: str | None = None
    # Seconds initdb and pg_ctl start took.
    timings: dict[str, float] = field(default_factory=dict)
    # Server settings beyond SETTINGS (TLS, say), as "name=value".
    options: tuple[str, ...] = ()

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    @property
    def dsn(self) -> str:
        """The superuser on the ``postgres`` maintenance database."""
        return self.url("postgres")

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    # -- the process ---------------------------------------------------------------------------

    @classmethod
    @contextmanager
    def start(
        cls,
        *,
        bin_dir: Path | None = None,
        tls: tuple[bytes, bytes] | None = None,
        hba: Sequence[str] = (),
    ) -> Iterator[PostgresServer]:
        """``tls``: a (certificate chain, private key) PEM pair the server offers (ssl=on);
        ``hba``: pg_hba.conf lines placed before initdb's own (which trust everything)."""
        bin_dir = bin_dir or find_bin_dir()
        run_as = OS_USER if os.geteuid() == 0 else None
        # Not under pytest's basetemp: as root that is 0700 and the postgres user could not
        # enter it. mkdtemp makes a 0700 directory, which becomes postgres's own.
        root = Path(tempfile.mkdtemp(prefix="pangolin-pg-", dir=_memory_dir()))
        try:
            if run_as is not None:
                shutil.chown(root, user=run_as, group=None)
            server = cls(bin_dir, root, port=0, run_as=run_as)
            server._initdb()
            if tls is not None:
                server._offer_tls(*tls)
            if hba:
                hba_file = server.data_dir / "pg_hba.conf"
                hba_file.write_text("\n".join(hba) + "\n" + hba_file.read_text())
            try:
                server._start()
                yield server
            finally:
                server._stop()  # also after a start that timed out, with a postmaster left
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def _command(self, program: str, *args: str) -> list[str]:
        command = [str(self.bin_dir / program), *args]
        return ["runuser", "-u", self.run_as, "--", *command] if self.run_as else command

    def _run(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        # PG* variables of the machine (PGHOST, PGDATA...) must not steer the tools; the
        # working directory must be one the postgres user may enter.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        return subprocess.run(
            self._command(program, *args), cwd=self.root, env=env, stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=START_TIMEOUT + 30, check=False,
        )  # fmt: skip

    def _check(self, what: str, done: subprocess.CompletedProcess[str]) -> None:
        if done.returncode != 0:
            raise RuntimeError(
                f"PostgreSQL {what} failed ({done.returncode}):\n{done.stdout}{done.stderr}\n"
                f"--- {self.log_path} ---\n{self.log_tail()}"
            )

    def _initdb(self) -> None:
        began = time.monotonic()
        done = self._run(
            "initdb", "-D", str(self.data_dir), "-A", "trust", "-U", self.user, "--no-sync",
            "-E", "UTF8", "--locale=C",
        )  # fmt: skip
        self._check("initdb", done)
        self.timings["initdb"] = time.monotonic() - began

    def _offer_tls(self, chain: bytes, key: bytes) -> None:
        # The server refuses a key file others may read; as root, it must be postgres's own.
        for name, content in (("server.crt", chain), ("server.key", key)):
            path = self.data_dir / name
            path.write_bytes(content)
            path.chmod(0o600)
            if self.run_as is not None:
                shutil.chown(path, user=self.run_as, group=None)
        self.options += ("ssl=on", "ssl_cert_file=server.crt", "ssl_key_file=server.key")

    def stop(self) -> None:
        """Stop the server (an outage, for tests of what clients do meanwhile)."""
        self._stop()

    def start_again(self) -> None:
        """Start a stopped server on the port it had, so URLs given out still work."""
        self._start(keep_port=True)

    def _start(self, attempts: int = 3, *, keep_port: bool = False) -> None:
        """pg_ctl start on a free port; another process may take the port between our probe and
        the server's bind, so a bind failure tries another (unless ``keep_port``)."""
        for attempt in range(attempts):
            if not keep_port:
                self.port = free_port()
            options = ["-k", str(self.root), "-h", "127.0.0.1", "-p", str(self.port)]
            for setting in (*SETTINGS, *self.options):
                options += ["-c", setting]
            began = time.monotonic()
            done = self._run(
                "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path),
                "-o", " ".join(options), "-w", "-t", str(START_TIMEOUT), "start",
            )  # fmt: skip
            if done.returncode == 0:
                self.timings["start"] = time.monotonic() - began
                return
            if "could not bind" not in self.log_tail() or attempt == attempts - 1:
                self._check("start", done)

    def _stop(self) -> None:
        for mode in ("fast", "immediate"):
            done = self._run(
                "pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "30", "stop"
            )
            if done.returncode == 0 or not (self.data_dir / "postmaster.pid").exists():
                return
        # pg_ctl could not stop it: end the postmaster itself, so no server outlives the run.
        pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server's log, for failure messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log yet)"
        return "\n".join(text.splitlines()[-lines:])

    # -- databases -----------------------------------------------------------------------------

    async def connect(self, database: str = "postgres") -> asyncpg.Connection:
        connection: asyncpg.Connection = await asyncpg.connect(self.url(database))
        return connection

    async def create_database(
        self, name: str | None = None, template: str = "template0", *, icu_locale: str = ""
    ) -> str:
        """A new empty database (``t_<hex>`` unless named); returns its name. ``icu_locale``:
        its collation is that language's (ICU's), rather than the server's default."""
        name = name or f"t_{secrets.token_hex(6)}"
        locale = f" LOCALE_PROVIDER icu ICU_LOCALE {_literal(icu_locale)}" if icu_locale else ""
        connection = await self.connect()
        try:
            await connection.execute(
                f"CREATE DATABASE {_quote(name)} TEMPLATE {_quote(template)}{locale}"
            )
        finally:
            await connection.close()
        return name

    async def drop_database(self, name: str) -> None:
        """Drops it, ending whatever is still connected to it."""
        connection = await self.connect()
        try:
            await connection.execute(f"DROP DATABASE IF EXISTS {_quote(name)} WITH (FORCE)")
        finally:
            await connection.close()

    async def kill_connections(
        self, database: str, *, connection: asyncpg.Connection | None = None
    ) -> int:
        """``pg_terminate_backend`` of every backend connected to ``database`` except the caller's
        (``connection``'s, if given, else a connection of our own to ``postgres``), waiting up to
        5 s for each to be gone; returns how many were ended."""
        own = connection or await self.connect()
        try:
            ended: int = await own.fetchval(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000))"
                " FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
        finally:
            if connection is None:
                await own.close()
        return ended

    def sync(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Runs one of the coroutines above to completion from synchronous code (a fixture, a
        test with its own threads), in a thread of its own, whatever event loop this one has."""
        result: list[T] = []
        error: list[BaseException] = []

        def run() -> None:
            try:
                result.append(asyncio.run(coroutine))
            except BaseException as exc:  # handed to the caller
                error.append(exc)

        thread = threading.Thread(target=run, name="postgres-admin")
        thread.start()
        thread.join()
        if error:
            raise error[0]
        return result[0]

    @contextmanager
    def database(self) -> Iterator[str]:
        """A fresh empty database for the duration; yields its URL."""
        name = self.sync(self.create_database())
        try:
            yield self.url(name)
        finally:
            self.sync(self.drop_database(name))
