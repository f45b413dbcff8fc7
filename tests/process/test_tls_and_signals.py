"""TLS on the listener, SIGHUP and SIGTERM, on real `pangolin-gateway serve` processes (issue
14): a certificate from a CA made here (``trustme``), verified by PyIceberg in front of the
real SeaweedFS; HSTS; a renewed certificate read on SIGHUP without dropping a connection (and
a broken one refused, the old one kept), also with ``--workers 2``; and SIGTERM draining a
long streaming answer in flight before the process exits 0."""

from __future__ import annotations

import contextlib
import http.client
import http.server
import signal
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import trustme
from cryptography import x509
from pyiceberg.catalog.rest import RestCatalog

from ..live import SeaweedUpstream
from ..processes import free_port, init_store, start_serve

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 30.0


def until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class TlsGateway:
    """A gateway process serving over TLS with ``cert``/``key`` files it re-reads on SIGHUP."""

    def __init__(self, root: Path, ca: trustme.CA, upstream: str, *, workers: int = 1,
                 catalog: str = "") -> None:  # fmt: skip
        self.root, self.ca, self.port = root, ca, free_port()
        self.cert, self.key = root / "server.pem", root / "server.key"
        self.ca_file = root / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        self.issue()
        self.config = root / "gateway.toml"
        self.config.write_text(
            f'[server]\nport = {self.port}\ntls_cert_file = "server.pem"\n'
            'tls_key_file = "server.key"\n'
            f'[store]\npath = "{root / "pangolin.db"}"\n'
            f'[catalogs.default]\nupstream = "{upstream}"\n{catalog}',
            encoding="utf-8",
        )
        self.root_id, self.root_key = init_store(self.config)
        self.log = root / "gateway.log"
        self.proc = start_serve(self.config, self.log, workers)
        until(self._answers, "the gateway to answer over TLS")

    def issue(self) -> str:
        """A new certificate for 127.0.0.1 in the files; its serial number (hex)."""
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        self.cert.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        self.key.write_bytes(cert.private_key_pem.bytes())
        return _serial(cert.cert_chain_pems[0].bytes())

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def connection(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=self.context(), timeout=10
        )

    def get(self, conn: http.client.HTTPSConnection, path: str = "/healthz",
            headers: dict[str, str] | None = None) -> http.client.HTTPResponse:  # fmt: skip
        conn.request("GET", path, headers=headers or {})
        return conn.getresponse()

    def serial(self) -> str:
        """The serial number of the certificate a fresh handshake gets."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw:
            with self.context().wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                der = tls.getpeercert(binary_form=True)
        assert der is not None
        return _serial(ssl.DER_cert_to_PEM_cert(der).encode())

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"the gateway exited:\n{self.log.read_text()}")
        try:
            with contextlib.closing(self.connection()) as conn:
                return self.get(conn).status == 200
        except OSError:
            return False

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def _serial(pem: bytes) -> str:
    return format(x509.load_pem_x509_certificate(pem).serial_number, "x")


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def gateway(tmp_path: Path, ca: trustme.CA, seaweed: SeaweedUpstream) -> Iterator[TlsGateway]:
    """In front of the real SeaweedFS, with its credential."""
    catalog = seaweed.catalog()
    served = TlsGateway(
        tmp_path, ca, catalog.upstream,
        catalog=f'warehouse = "{catalog.warehouse}"\n[catalogs.default.upstream_auth]\n'
        f'type = "oauth2"\nclient_id = "{catalog.upstream_auth.client_id}"\n'
        f'client_secret = "{catalog.upstream_auth.client_secret}"\n',
    )  # fmt: skip
    try:
        yield served
    finally:
        assert served.stop() == 0, served.log.read_text()


def test_the_gateway_serves_tls_with_hsts_and_pyiceberg_verifies_it(
    gateway: TlsGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    # requests lets these override a session's own CA bundle (PyIceberg's ssl.cabundle):
    # psf/requests#3829. Not set, PyIceberg's setting is the one used.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    with contextlib.closing(gateway.connection()) as conn:
        answer = gateway.get(conn)
        assert answer.status == 200
        assert answer.headers["Strict-Transport-Security"] == "max-age=31536000"
        answer.read()
    # Plain HTTP on the TLS port gets no HTTP answer.
    plain_http = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=5)
    with contextlib.closing(plain_http) as plain:
        with pytest.raises((http.client.HTTPException, OSError)):
            plain.request("GET", "/healthz")
            plain.getresponse().read()

    # PyIceberg reads "ssl" as a nested mapping, which its signature types as text.
    properties: dict[str, Any] = {
        "header.X-API-Key": gateway.root_key,
        "ssl": {"cabundle": str(gateway.ca_file)},
    }
    catalog = RestCatalog("tls", uri=f"https://127.0.0.1:{gateway.port}", **properties)
    namespace = f"tls_{int(time.time() * 1000)}"
    catalog.create_namespace(namespace)
    assert (namespace,) in catalog.list_namespaces()
    # A client that does not trust the CA is refused by its own TLS check.
    with pytest.raises(requests.exceptions.SSLError):
        RestCatalog(
            "untrusted", uri=f"https://127.0.0.1:{gateway.port}",
            **{"header.X-API-Key": gateway.root_key},
        )  # fmt: skip


def test_sighup_reads_a_renewed_certificate_without_dropping_a_connection(
    gateway: TlsGateway,
) -> None:
    before = gateway.serial()
    kept = gateway.connection()  # open across the reload
    assert gateway.get(kept).read()

    renewed = gateway.issue()
    gateway.proc.send_signal(signal.SIGHUP)
    until(lambda: gateway.serial() == renewed, "new handshakes to get the renewed certificate")

    assert renewed != before
    answer = gateway.get(kept)  # the connection made before the reload still works
    assert answer.status == 200
    answer.read()
    kept.close()
    assert gateway.proc.poll() is None


def test_a_broken_certificate_on_sighup_is_refused_and_the_old_one_stays(
    gateway: TlsGateway,
) -> None:
    before = gateway.serial()
    gateway.cert.write_text("not a certificate\n")
    gateway.proc.send_signal(signal.SIGHUP)
    until(lambda: "TLS certificate not reloaded" in gateway.log.read_text(), "the refusal")

    assert gateway.serial() == before
    assert gateway.proc.poll() is None
    assert "BEGIN" not in gateway.log.read_text()  # no key material in the log


def test_sighup_reaches_every_worker(tmp_path: Path, ca: trustme.CA) -> None:
    served = TlsGateway(tmp_path, ca, "http://127.0.0.1:9", workers=2)
    try:
        until(lambda: served.log.read_text().count(" serving on ") == 2, "both workers to serve")
        renewed = served.issue()
        served.proc.send_signal(signal.SIGHUP)
        # Fresh connections are spread over both workers: every one must have reloaded.
        until(
            lambda: all(served.serial() == renewed for _ in range(12)),
            "every worker to present the renewed certificate",
        )
        assert served.proc.poll() is None
    finally:
        assert served.stop() == 0, served.log.read_text()


class _SlowStream(http.server.BaseHTTPRequestHandler):
    """Answers GETs with 20 chunks, one every 100 ms: two seconds of a streaming answer."""

    protocol_version = "HTTP/1.1"
    started = threading.Event()

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for n in range(20):
            chunk = f'{{"n": {n}}}\n'.encode()
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.flush()
            type(self).started.set()
            time.sleep(0.1)
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *_: Any) -> None:
        pass


def test_sigterm_drains_a_streaming_answer_in_flight_then_exits_0(
    tmp_path: Path, ca: trustme.CA
) -> None:
    upstream = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SlowStream)
    upstream.daemon_threads = True
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    served = TlsGateway(tmp_path, ca, f"http://127.0.0.1:{upstream.server_address[1]}")
    conn = served.connection()
    try:
        answer = served.get(conn, "/v1/namespaces", {"X-API-Key": served.root_key})
        assert answer.status == 200
        first = answer.readline()
        assert first == b'{"n": 0}\n'

        served.proc.send_signal(signal.SIGTERM)

        # No new connections while it drains ...
        def refused() -> bool:
            try:
                socket.create_connection(("127.0.0.1", served.port), timeout=1).close()
            except OSError:
                return True
            return False

        until(refused, "the listener to close")
        # ... and the answer in flight arrives whole.
        rest = answer.read()
        lines = (first + rest).decode().splitlines()
        assert lines == [f'{{"n": {n}}}' for n in range(20)]
        assert served.proc.wait(timeout=30) == 0
    finally:
        conn.close()
        served.stop()
        upstream.shutdown()
        upstream.server_close()
