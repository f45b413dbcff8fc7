"""The connection layer under the app: what happens before bytes become a request.

aiohttp's own protocol handler answers a request it cannot parse (bare LF line endings, a
space before a colon, a control character in a value, an over-long line) with a plain-text
400 that echoes the offending bytes, and logs them with a traceback at ERROR: a credential in
that header reached both. Here:

- every such refusal is an Iceberg JSON error with a fixed message (400; 405 for a method the
  parser does not know, such as ``get``; 414 for an over-long request line, 431 for an
  over-long header), and the connection is closed;
- every log line this layer writes names the error's class, never its text (aiohttp's messages
  quote the bytes they refused);
- a request head must arrive whole within ``server.header_timeout_seconds`` of its first byte
  (or of the connection's opening), as with nginx's ``client_header_timeout``: one header per
  second can no longer hold a connection open; late heads get 408;
- idle keep-alive connections close after ``server.keepalive_timeout_seconds`` (aiohttp's own
  default is an hour).

Serve with ``GatewayRunner`` (the CLI, the workers and the tests all do): a plain
``web.AppRunner`` runs the app without this layer.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from .routing import ICEBERG_METHODS
from .settings import Settings
from .state import CONFIGURED

__all__ = ("GatewayRunner", "handler_args")

_LOGGER = logging.getLogger(__name__)

_MESSAGES: Final = {
    400: ("BadRequestException", "Malformed HTTP request"),
    405: ("MethodNotAllowedException", "Method not allowed"),
    408: ("RequestTimeoutException", "The request head did not arrive in time"),
    414: ("BadRequestException", "Request line too long"),
    431: ("BadRequestException", "Request header too large"),
    500: ("InternalServerError", "Internal gateway error"),
}


def handler_args(settings: Settings) -> dict[str, Any]:
    """aiohttp protocol options from ``server`` settings (passed as the app's handler_args,
    so any runner, the test server's included, applies them)."""
    server = settings.server
    return {
        "max_line_size": server.max_request_line_bytes,
        # Room above the gateway's own 8 KiB token limit, so an oversized bearer gets the
        # usual Iceberg 401 instead of a parser refusal.
        "max_field_size": server.max_header_bytes,
        "keepalive_timeout": server.keepalive_timeout_seconds,
        # Request bodies are never decoded: what the gateway forwards is the bytes it framed
        # itself, and a decoded body could be longer than the length it declares (the
        # compressed-body smuggling the security review found). Encoded bodies are refused
        # with 415 by the middleware.
        "auto_decompress": False,
    }


def _error_body(status: int) -> bytes:
    type_, message = _MESSAGES.get(status, _MESSAGES[400])
    return json.dumps({"error": {"message": message, "type": type_, "code": status}}).encode()


class _GatewayRequestHandler(RequestHandler):
    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._head_timer: asyncio.TimerHandle | None = None

    # -- the request head's deadline ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # A head is complete once the parser queued it or a handler runs for it; bytes that
        # arrive while neither holds are part of a head still coming in.
        if self._messages or self._request_in_progress:
            self._cancel_head_timer()
        elif data and self._head_timer is None:
            self._arm_head_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if self._header_timeout > 0:
            self._head_timer = self._loop.call_later(self._header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._messages or self._request_in_progress or self.transport is None:
            return
        body = _error_body(408)
        self.transport.write(
            b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%b" % (len(body), body)
        )
        self.force_close()

    # -- refusals and logging -------------------------------------------------------------------

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The answer to a request aiohttp could not parse (or whose handler failed outside the
        app's middleware): fixed JSON, never the refused bytes, which may hold a credential."""
        headers: dict[str, str] = {}
        if isinstance(exc, BadHttpMethod):
            # A method the parser does not know (lower-case "get", made-up tokens): not one
            # Iceberg uses, so the same answer as for TRACE.
            status, headers = 405, {"Allow": ", ".join(ICEBERG_METHODS)}
        elif isinstance(exc, LineTooLong):
            # Which limit: LineTooLong carries it (args: cut line, limit, size).
            status = 414 if exc.args[1:2] == (self.max_line_size,) else 431
        elif isinstance(exc, HttpProcessingError):
            status = 400
        _LOGGER.info(
            "refused a malformed request from %s (%s)",
            request.remote or "-",
            type(exc).__name__ if exc is not None else status,
        )
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        response = web.Response(
            status=status, body=_error_body(status), content_type="application/json",
            headers=headers,
        )  # fmt: skip
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        # aiohttp's messages and tracebacks may quote request bytes: the class name only.
        exc = kw.get("exc_info")
        name = type(exc).__name__ if isinstance(exc, BaseException) else "-"
        _LOGGER.error("%s (%s)", args[0] if args else "server error", name)


class _GatewayServer(web.Server):
    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout

    def __call__(self) -> RequestHandler:
        return _GatewayRequestHandler(
            self, loop=self._loop, header_timeout=self._header_timeout, **self._kwargs
        )


class GatewayRunner(web.AppRunner):
    """``web.AppRunner`` whose connections are handled as described above."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # Rebuilt as ours with aiohttp's own arguments (Application._make_handler assembled
        # them from the runner's options and the app's handler_args).
        return _GatewayServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=asyncio.get_running_loop(),
            header_timeout=self.app[CONFIGURED].settings.server.header_timeout_seconds,
            **server._kwargs,
        )
