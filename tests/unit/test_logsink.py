"""Log lines to stderr: access lines batched, everything else at once, nothing lost or
reordered, the same text as before."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator

import pytest

from gateway.observability.access_log import ACCESS_LOGGER
from gateway.observability.log_handlers import (
    FORMAT,
    BufferedAccessHandler,
    _SecondFormatter,
    configure_logging,
)


def record(name: str, level: int, message: str, created: float | None = None) -> logging.LogRecord:
    rec = logging.LogRecord(name, level, __file__, 1, message, (), None)
    if created is not None:
        rec.created = created
        rec.msecs = (created - int(created)) * 1000
    return rec


@pytest.fixture
def sink() -> Iterator[tuple[BufferedAccessHandler, io.StringIO]]:
    stream = io.StringIO()
    handler = BufferedAccessHandler(stream, flush_seconds=3600)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    yield handler, stream
    handler.close()


def test_access_lines_wait_for_the_next_other_line_and_keep_their_order(
    sink: tuple[BufferedAccessHandler, io.StringIO],
) -> None:
    handler, stream = sink
    for i in range(3):
        handler.handle(record(ACCESS_LOGGER, logging.INFO, f"request {i}"))
    assert stream.getvalue() == ""  # batched: no write per request
    handler.handle(record("gateway.proxy.forwarder", logging.WARNING, "upstream broke"))
    assert stream.getvalue().splitlines() == [
        f"{ACCESS_LOGGER} request 0",
        f"{ACCESS_LOGGER} request 1",
        f"{ACCESS_LOGGER} request 2",
        "gateway.proxy.forwarder upstream broke",
    ]


def test_a_full_batch_is_written_without_waiting(
    sink: tuple[BufferedAccessHandler, io.StringIO],
) -> None:
    handler, stream = sink
    line = "x" * 1000
    for _ in range(80):  # 80 KB: past the 64 KiB batch
        handler.handle(record(ACCESS_LOGGER, logging.INFO, line))
    assert stream.getvalue().count("\n") >= 64


def test_pending_lines_are_written_at_close(
    sink: tuple[BufferedAccessHandler, io.StringIO],
) -> None:
    handler, stream = sink
    handler.handle(record(ACCESS_LOGGER, logging.INFO, "last request"))
    handler.close()  # what logging.shutdown() does at exit
    assert stream.getvalue() == f"{ACCESS_LOGGER} last request\n"


async def test_lines_are_written_within_the_flush_interval_when_nothing_else_is_logged() -> None:
    stream = io.StringIO()
    handler = BufferedAccessHandler(stream, flush_seconds=0.01)
    try:
        handler.handle(record(ACCESS_LOGGER, logging.INFO, "quiet period"))
        async with asyncio.timeout(5):
            while "quiet period" not in stream.getvalue():
                await asyncio.sleep(0.005)
    finally:
        handler.close()


@pytest.mark.parametrize("created", [1_795_000_000.0, 1_795_000_000.999, 1_795_000_059.5004])
def test_time_stamps_read_as_the_standard_formatter_writes_them(created: float) -> None:
    ours, standard = _SecondFormatter(FORMAT), logging.Formatter(FORMAT)
    for rec in (record("a", logging.INFO, "m", created), record("a", logging.INFO, "m", created)):
        assert ours.format(rec) == standard.format(rec)


def test_configure_logging_installs_the_sink_unless_logging_is_configured() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    flags = logging.logThreads, logging.logProcesses, logging.logMultiprocessing
    root.handlers = []
    try:
        configure_logging()
        (handler,) = root.handlers
        assert isinstance(handler, BufferedAccessHandler)
        assert root.level == logging.INFO
        configure_logging()  # configured already: left alone
        assert root.handlers == [handler]
        handler.close()
    finally:
        root.handlers, level = saved
        root.setLevel(level)
        logging.logThreads, logging.logProcesses, logging.logMultiprocessing = flags
