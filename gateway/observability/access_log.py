"""One access log line per request, to the ``pangolin.access`` logger.

Fields: request id, client address, principal id, catalog, method, path (without the query
string), status, bytes sent (aiohttp's ``%b``: the response as written) and duration in ms.
Never a header, so never a key or a token; the path is the raw (still percent-encoded) path,
cut to ``MAX_PATH`` characters. A forward-auth decision names the request it decided (the
original method and path the proxy sent in a header, where a space could hide) and ends with
``forward_auth=<dialect>``. Serve with ``access_log_class=AccessLogger``; aiohttp's
``access_log_format`` is not used.
"""

from __future__ import annotations

import logging
from typing import Final

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from ..state import AUTH, CATALOG, DECIDED, REQUEST_ID

__all__ = ("ACCESS_LOGGER", "AccessLogger")

ACCESS_LOGGER: Final = "pangolin.access"
MAX_PATH: Final = 512
_INFO: Final = logging.INFO
_SOURCE: Final = __file__


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access log hook; whatever logger aiohttp passes in, lines go to
    ``pangolin.access`` (so configuring logging for that name is all an operator does)."""

    __slots__ = ()

    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(logging.getLogger(ACCESS_LOGGER), log_format)

    @property
    def enabled(self) -> bool:
        # aiohttp asks once per connection; when INFO is off, nothing is formatted at all.
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        logger = self.logger
        if not logger.isEnabledFor(_INFO):  # what logger.info() checks first (cached)
            return
        # A request the HTTP parser refused never reached the middlewares: no keys on it.
        auth = request.get(AUTH)
        principal = auth.principal if auth is not None else None
        decided = request.get(DECIDED)
        if decided is None:
            method, path, tail = request.method, request.raw_path.partition("?")[0], ""
        else:
            # From a header, where a space can sit (the HTTP parser refuses one in a request
            # target): it would start another field of the line.
            dialect, method, path = decided
            path, tail = path.replace(" ", "?"), f" forward_auth={dialect}"
        if len(path) > MAX_PATH:
            path = path[:MAX_PATH] + "..."
        if not path.isprintable():
            path = "".join(ch if ch.isprintable() else "?" for ch in path)
        # One f-string, the same text the %-format gave (status and bytes as %d, duration %.2f).
        line = (
            f"request_id={request.get(REQUEST_ID, '-')} client={request.remote or '-'} "
            f"principal={principal.id if principal is not None else '-'} "
            f"catalog={request.get(CATALOG, '-')} method={method} path={path} "
            f"status={response.status:d} bytes={response.body_length:d} "
            f"duration_ms={time * 1000.0:.2f}{tail}"
        )
        # What logger.info(line) does, less its caller lookup (a walk up the stack on every
        # line; the source is always this method): the same record, through the logger's
        # filters and handlers (and its parents').
        logger.handle(logger.makeRecord(logger.name, _INFO, _SOURCE, 0, line, (), None, "log"))
