"""TLS on the listener (``server.tls_cert_file`` and ``server.tls_key_file``).

Modern defaults: TLS 1.2 and 1.3 only, OpenSSL's secure cipher list, no compression, no
renegotiation, ALPN ``http/1.1`` (what the gateway speaks). The certificate and key are
re-read on SIGHUP into the same context: connections already open keep the certificate they
were made with, new handshakes get the new one, and nothing is dropped. A pair that fails to
load is logged and the old one stays, so a botched renewal never takes the listener down.
"""

from __future__ import annotations

import logging
import ssl

from ..settings import ServerSettings

__all__ = ("TlsError", "reload_certificate", "server_context")

_LOGGER = logging.getLogger(__name__)


class TlsError(OSError):
    """The certificate or key cannot be used (its message says which and why)."""


def server_context(server: ServerSettings) -> ssl.SSLContext | None:
    """The listener's TLS context, or None when TLS is off; TlsError if the pair is unusable."""
    if not server.tls_cert_file:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(["http/1.1"])
    _load(context, server)
    return context


def reload_certificate(context: ssl.SSLContext, server: ServerSettings) -> bool:
    """Re-read the certificate and key into ``context`` (SIGHUP); False, with the old pair
    kept, when the new one cannot be loaded."""
    try:
        _load(context, server)
    except TlsError as exc:
        _LOGGER.error("TLS certificate not reloaded, the old one stays: %s", exc)
        return False
    _LOGGER.info("TLS certificate reloaded from %s", server.tls_cert_file)
    return True


def _load(context: ssl.SSLContext, server: ServerSettings) -> None:
    try:
        context.load_cert_chain(server.tls_cert_file, server.tls_key_file)
    except FileNotFoundError as exc:
        raise TlsError(f"server.tls_cert_file/tls_key_file: {exc.filename} not found") from None
    except (ssl.SSLError, OSError) as exc:
        # OpenSSL's words (a key that does not match, not PEM); never the key's content.
        raise TlsError(f"server.tls_cert_file/tls_key_file cannot be loaded: {exc}") from None
