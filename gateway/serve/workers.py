"""``serve --workers N``: N worker processes (``spawn``: fresh interpreters, settings passed
pickled, never on a command line) sharing one port (``SO_REUSEPORT``) and one store. The
supervisor forwards SIGINT/SIGTERM and, when a worker exits unasked, stops the others and
exits 1 so the process manager restarts the whole gateway. On SIGHUP it reads and checks the
configuration once and hands it to one worker after another over a pipe, each confirming
before the next is asked (workers ignore SIGHUP themselves: every one gets the same settings,
even if the file changes meanwhile). Design: docs/architecture.md, "Several workers"."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Final

from ..app import create_app
from ..auth.rate_limit import SharedRates
from ..observability.log_handlers import configure_logging
from ..settings import Settings
from ..state import METRICS
from ..store import StoreError
from . import metrics_share, reload
from .serving import STOP_SIGNALS, Reload, ignore_reloads, new_event_loop, serving, stop_signal

__all__ = ("supervise",)

_LOGGER = logging.getLogger(__name__)
# After SIGTERM, how long a worker may take beyond its drain before it is killed: time to
# flush and close the store.
_CLOSE_GRACE: Final = 10.0
_PARENT_CHECK_SECONDS: Final = 1.0
# How long the supervisor waits for a worker to confirm a reload before it asks the next one
# (a worker still starting confirms once it serves).
_RELOAD_SECONDS: Final = 10.0
Connection = multiprocessing.connection.Connection


def supervise(
    settings: Settings, workers: int, reread: Callable[[], Settings] | None = None
) -> int:
    """Run ``workers`` worker processes until SIGINT/SIGTERM; the exit status (0: all of them
    stopped cleanly when asked; 1: one exited on its own or failed to stop cleanly). SIGHUP
    reloads them (the configuration ``reread`` reads)."""
    context = multiprocessing.get_context("spawn")
    shared = metrics_share.create_directory()  # the workers' metrics snapshots
    # The rate limits' table, one for the whole instance, and its lock.
    rates_memory = SharedRates.create()
    rates = (rates_memory.name, context.Lock(), uuid.uuid4().hex)
    received: list[int] = []
    # Self-pipe: a signal wakes the wait below (PEP 475 would otherwise resume it silently).
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)

    def note(signum: int, _frame: object) -> None:
        received.append(signum)

    previous_handlers = {sig: signal.signal(sig, note) for sig in STOP_SIGNALS}
    previous_wakeup = signal.set_wakeup_fd(wake_w.fileno())
    processes: list[multiprocessing.process.BaseProcess] = []
    controls: list[Connection] = []  # the supervisor's end of each worker's pipe
    try:
        for index in range(workers):
            if received:
                break
            ours, theirs = context.Pipe()
            process: multiprocessing.process.BaseProcess = context.Process(
                target=_worker_main,
                args=(settings, index, workers, shared, rates, theirs),
                name=f"pangolin-worker-{index}",
            )
            process.start()
            theirs.close()
            processes.append(process)
            controls.append(ours)
        # Only now: a worker inherits SIGHUP ignored (as serve left it) across its exec, and
        # keeps it so until it serves, so no reload can end a worker still starting.
        previous_handlers[signal.SIGHUP] = signal.signal(signal.SIGHUP, note)
        _LOGGER.info(
            "supervisor pid %d started %d worker(s) on %s:%d: %s; metrics shared in %s",
            os.getpid(), len(processes), settings.server.host, settings.server.port,
            ", ".join(str(p.pid) for p in processes), shared,
        )  # fmt: skip
        reloads = _Reloads(processes, controls, reread, received, wake_r)
        return _wait(
            processes, received, wake_r, settings.server.drain_seconds + _CLOSE_GRACE, reloads
        )
    finally:
        for control in controls:
            control.close()
        for process in processes:  # only after an unexpected error in the supervisor itself
            if process.exitcode is None:
                process.kill()
                process.join()
        metrics_share.remove_directory(shared)
        rates_memory.close()
        rates_memory.unlink()
        signal.set_wakeup_fd(previous_wakeup)
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
        wake_r.close()
        wake_w.close()


def _wait(
    processes: list[multiprocessing.process.BaseProcess],
    received: list[int],
    wake: socket.socket,
    stop_grace: float,
    reloads: _Reloads,
) -> int:
    failed = False
    stopping = False
    kill_at: float | None = None
    while True:
        running = [p for p in processes if p.exitcode is None]
        while signal.SIGHUP in received:  # a reload, not a stop
            received.remove(signal.SIGHUP)
            if not stopping:
                reloads.roll()
        if not stopping:
            gone = [p for p in processes if p.exitcode is not None]
            if received or gone:
                stopping = True
                for process in gone:
                    failed = True
                    _LOGGER.error(
                        "worker pid %s exited unexpectedly; stopping the others", process.pid
                    )
                if received:
                    _LOGGER.info(
                        "%s: stopping %d worker(s)", signal.Signals(received[0]).name, len(running)
                    )
                for process in running:
                    _signal(process, signal.SIGTERM)
                kill_at = time.monotonic() + stop_grace
        if not running:
            break
        timeout = None if kill_at is None else kill_at - time.monotonic()
        if timeout is not None and timeout <= 0:
            for process in running:
                _LOGGER.error("worker pid %s did not stop in time; killing it", process.pid)
                process.kill()
                process.join()
            failed = True
            continue
        multiprocessing.connection.wait([p.sentinel for p in running] + [wake], timeout)
        with contextlib.suppress(BlockingIOError):
            while wake.recv(512):
                pass
    # A worker still starting when asked to stop has no handler yet and ends by the signal
    # itself (-SIGTERM): it served nothing, so that is a clean stop too.
    asked = -signal.SIGTERM if received else 0
    unclean = [p for p in processes if p.exitcode not in (0, asked)]
    for process in unclean:
        _LOGGER.error("worker pid %s exited with code %s", process.pid, process.exitcode)
    return 1 if failed or unclean else 0


class _Reloads:
    """Rolling reloads: the configuration read and checked once, then each worker in turn."""

    def __init__(
        self,
        processes: list[multiprocessing.process.BaseProcess],
        controls: list[Connection],
        reread: Callable[[], Settings] | None,
        received: list[int],
        wake: socket.socket,
    ) -> None:
        self._workers = list(zip(processes, controls, strict=True))
        self._reread = reread
        self._generation = 0
        # The signals the supervisor noted, and the self-pipe that tells of one: a stop
        # asked for during a reload ends the reload, it never waits for it.
        self._received = received
        self._wake = wake

    def _stopping(self) -> bool:
        with contextlib.suppress(BlockingIOError):
            while self._wake.recv(512):
                pass
        return any(sig in STOP_SIGNALS for sig in self._received)

    def roll(self) -> None:
        # None: refused (its problems logged) or nothing to read; the workers still re-read
        # their TLS certificate.
        settings = reload.reread(self._reread) if self._reread is not None else None
        self._generation += 1
        running = [(p, c) for p, c in self._workers if p.exitcode is None]
        if settings is not None:
            _LOGGER.info("SIGHUP: reloading %d worker(s) one after another", len(running))
        for process, control in running:
            if self._stopping():
                _LOGGER.info("SIGHUP: reload left unfinished: the gateway is stopping")
                return
            self._one(process, control, settings)

    def _one(
        self, process: multiprocessing.process.BaseProcess, control: Connection,
        settings: Settings | None,
    ) -> None:  # fmt: skip
        try:
            control.send((self._generation, settings))
            deadline = time.monotonic() + _RELOAD_SECONDS
            while (left := deadline - time.monotonic()) > 0:
                ready = multiprocessing.connection.wait(
                    [control, process.sentinel, self._wake], left
                )
                if not ready:
                    break
                if self._wake in ready and self._stopping():
                    return
                if control not in ready:
                    if process.sentinel in ready:  # gone: the supervisor's loop sees it
                        return
                    continue
                if not control.poll():
                    return
                if control.recv() == self._generation:  # (an older one confirmed late)
                    return
        except (OSError, EOFError):  # its end closed: it is exiting
            return
        _LOGGER.warning(
            "worker pid %s did not confirm the reload within %.0f s; it applies it when it "
            "can", process.pid, _RELOAD_SECONDS,
        )  # fmt: skip


def _signal(process: multiprocessing.process.BaseProcess, sig: int) -> None:
    if process.pid is not None and process.exitcode is None:  # not reaped: the pid is ours
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, sig)


# -- in each worker -----------------------------------------------------------------------------


def _worker_main(
    settings: Settings, index: int, workers: int, shared: Path, rates: tuple[str, Any, str],
    control: Connection,
) -> None:  # fmt: skip
    # Always: a SIGHUP (a terminal closing signals the whole group) must not end it, and
    # reloads come from the supervisor, over ``control``.
    ignore_reloads()
    configure_logging()
    peers = metrics_share.SnapshotFiles(shared, index, workers)
    table = SharedRates(*rates, merges_others=index == 0)
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(_serve(settings, index, os.getppid(), peers, table, control))
    except (OSError, LookupError, StoreError) as exc:
        _LOGGER.error("worker %d (pid %d) cannot serve: %s", index, os.getpid(), exc)
        sys.exit(1)
    finally:
        table.close()


async def _serve(
    settings: Settings,
    index: int,
    parent: int,
    peers: metrics_share.SnapshotFiles,
    rates: SharedRates,
    control: Connection,
) -> None:
    loop = asyncio.get_running_loop()
    with stop_signal() as stop:
        app = create_app(settings, rates=rates)
        metrics = app[METRICS]
        metrics.share(peers)
        host, port = settings.server.host, settings.server.port
        async with (
            serving(app, settings.server, reuse_port=True, reload_on_hangup=False) as reload_with,
            _reloads_from(control, reload_with),
        ):
            # After the set-up, which has given the metrics the queues to report.
            publisher = asyncio.create_task(
                peers.publish_every(metrics.snapshot, metrics_share.SNAPSHOT_SECONDS),
                name="pangolin-metrics-snapshots",
            )
            try:
                _LOGGER.info(
                    "worker %d (pid %d) serving on %s:%d with %s.%s",
                    index, os.getpid(), host, port, type(loop).__module__, type(loop).__name__,
                )  # fmt: skip
                watch = asyncio.create_task(_watch_parent(parent, stop), name="pangolin-parent")
                try:
                    await stop.wait()
                finally:
                    watch.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watch
            finally:
                publisher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await publisher
        # Everything this worker answered (the app's cleanup has run), for the workers still
        # serving.
        peers.publish(metrics.snapshot())
    _LOGGER.info("worker %d (pid %d) stopped", index, os.getpid())


@contextlib.asynccontextmanager
async def _reloads_from(control: Connection, reload_with: Reload) -> AsyncIterator[None]:
    """Apply each reload the supervisor sends, and confirm it, while the block runs."""
    loop = asyncio.get_running_loop()

    def received() -> None:
        try:
            generation, settings = control.recv()
        except (OSError, EOFError):  # the supervisor is gone: _watch_parent stops this worker
            loop.remove_reader(control.fileno())
            return
        reload_with(settings)
        with contextlib.suppress(OSError):
            control.send(generation)

    loop.add_reader(control.fileno(), received)
    try:
        yield
    finally:
        loop.remove_reader(control.fileno())


async def _watch_parent(parent: int, stop: asyncio.Event) -> None:
    """Stop if the supervisor disappears (SIGKILL, crash): no orphan keeps the port."""
    while os.getppid() == parent:
        await asyncio.sleep(_PARENT_CHECK_SECONDS)
    _LOGGER.warning("supervisor pid %d is gone; stopping", parent)
    stop.set()
