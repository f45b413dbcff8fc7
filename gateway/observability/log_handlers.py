"""Where the gateway's log lines go: stderr, with the access log written in batches.

An access line per request written on its own costs a ``write(2)`` per request (stderr is
line-buffered), and the standard record and time formatting cost as much again; at
thousands of requests per second that is a measurable share of a request's CPU. So:

- access lines (logger ``pangolin.access``) are buffered and written together: when 64 KiB
  have gathered, when any other line is logged (so lines stay in order, and a warning or
  error is never held back), at least every ``FLUSH_SECONDS`` (a daemon thread) and at exit
  (``logging.shutdown`` flushes every handler). A process killed with SIGKILL can lose up to
  that much of its access log, as with nginx's ``access_log ... buffer= flush=``;
- the time stamp is formatted once per second, not per line;
- records skip the thread and process name lookups, which no line here shows.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Final, TextIO

from .access_log import ACCESS_LOGGER

__all__ = ("FLUSH_SECONDS", "BufferedAccessHandler", "configure_logging")

FLUSH_SECONDS: Final = 0.5
_BATCH_BYTES: Final = 64 * 1024
FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _SecondFormatter(logging.Formatter):
    """The default ``asctime`` text (``2026-11-28 05:00:00,123``), its date and time part
    formatted once per second."""

    _second = -1
    _text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        second = int(record.created)
        if second != self._second:
            self._text = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
            self._second = second
        return f"{self._text},{int(record.msecs):03d}"


class BufferedAccessHandler(logging.StreamHandler[TextIO]):
    def __init__(self, stream: TextIO | None = None, *, flush_seconds: float = FLUSH_SECONDS):
        super().__init__(stream if stream is not None else sys.stderr)
        self._pending: list[str] = []
        self._size = 0
        self._stop = threading.Event()
        self._flusher = threading.Thread(
            target=self._flush_every, args=(flush_seconds,), name="pangolin-log-flush",
            daemon=True,
        )  # fmt: skip
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:
        # Called with the handler's lock held (Handler.handle).
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self._pending.append(line)
        self._size += len(line)
        if record.name != ACCESS_LOGGER or self._size >= _BATCH_BYTES:
            self._write()

    def _write(self) -> None:
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        self._size = 0
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # stderr closed or gone: nothing better to do
            pass

    def flush(self) -> None:
        self.acquire()
        try:
            self._write()
        finally:
            self.release()

    def _flush_every(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self.flush()
        super().close()


def configure_logging() -> None:
    """INFO and above to stderr (what ``logging.basicConfig`` gave, with batched access lines).
    Does nothing if the root logger already has handlers (an embedding application's)."""
    root = logging.getLogger()
    if root.handlers:
        return
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = BufferedAccessHandler()
    handler.setFormatter(_SecondFormatter(FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
