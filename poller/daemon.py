"""`rca-poller run`: one APScheduler job per source, the processor after ticks, clean stop on signals."""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any, NoReturn

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from poller.config import Config
from poller.errors import ConfigError
from poller.incidents import Processor, build_processor
from poller.logs import setup_logging
from poller.metrics import Metrics, MetricsServer
from poller.pipeline import TickResult, process, resume_pending, tick
from poller.sources import Source, build_sources
from poller.store import Store

log = logging.getLogger("poller.daemon")
MAX_BACKOFF = timedelta(minutes=15)
JITTER = 0.1  # of the interval: many sources on one interval spread out instead of querying in lockstep


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class SourceHealth:
    """Per-source error backoff: a failing source waits longer between tries; the others carry on."""

    failures: int = 0
    retry_at: datetime | None = None

    def record(self, ok: bool, now: datetime, interval: timedelta) -> None:
        if ok:
            self.failures, self.retry_at = 0, None
            return
        self.failures += 1
        self.retry_at = now + min(MAX_BACKOFF, interval * 2 ** min(self.failures, 10))

    def waiting(self, now: datetime) -> bool:
        return self.retry_at is not None and now < self.retry_at


@dataclass
class Daemon:
    config: Config
    store: Store
    credential_factory: Callable[[Config], Any]
    shutdown_timeout: float = 30.0
    clock: Callable[[], datetime] = _utc_now
    metrics: Metrics | None = None
    #: Set when a stop or reload gave up waiting for a tick: its thread is still running, so the process must
    #: leave with os._exit (see `exit_now`) — Python would otherwise wait for it at exit.
    abandoned: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)
    _reload: threading.Event = field(default_factory=threading.Event)
    _wake: threading.Event = field(default_factory=threading.Event)
    _process_lock: threading.Lock = field(default_factory=threading.Lock)
    _process_due: threading.Event = field(default_factory=threading.Event)
    _health: dict[str, SourceHealth] = field(default_factory=dict)
    _built: tuple[Config, Processor] | None = None

    def _processor(self) -> Processor:
        """The config's processor (RCA engine, sinks), built once per loaded config."""
        if self._built is None or self._built[0] is not self.config:
            self._built = (self.config, build_processor(self.config, self.credential_factory(self.config)))
        return self._built[1]

    def run(self, load_config: Callable[[], Config] | None = None) -> None:
        """Serve until SIGTERM/SIGINT; SIGHUP reloads the config (a bad new config keeps the old one)."""
        self._install_signals()
        self.metrics = self.metrics or Metrics(self.config, self.store, self.clock)
        self._processor()  # a bad RCA, sink or remediation setting stops the start (exit 2), not every tick
        server = self._start_metrics_server()
        try:
            while True:
                sources = build_sources(self.config, self.credential_factory(self.config))
                resume_pending(sources, self.store, self.clock())
                scheduler = self._schedule(sources)
                notify("READY=1")
                log.info("daemon.started", extra={"sources": ",".join(s.name for s in sources) or "-"})
                new = None
                while new is None and not self._stop.is_set():
                    self._wait_for_signal(scheduler)
                    self._reload.clear()
                    if not self._stop.is_set() and load_config is not None:
                        new = self._load_new_config(load_config)  # a bad one is refused: ticks carry on
                notify("STOPPING=1" if new is None else "RELOADING=1")
                self._shutdown(scheduler, sources)
                if new is None:
                    log.info("daemon.stopped", extra={"clean": not self.abandoned})
                    return
                server = self._apply_config(*new, server)
        finally:
            if server is not None:
                server.close()

    def tick_source(self, source: Source) -> None:
        """One scheduled tick: skipped while backing off or stopping; never raises into the scheduler."""
        health = self._health.setdefault(source.name, SourceHealth())
        now = self.clock()
        if self._stop.is_set() or health.waiting(now):
            return
        started = time.monotonic()
        try:
            result = tick(source, self.store, now)
        except Exception as exc:  # a store or programming error: back off like a source error, keep serving
            log.error("tick.crashed", extra={"source": source.name, "error": f"{exc.__class__.__name__}: {exc}"},
                      exc_info=True)
            result = TickResult(source=source.name, error=f"{exc.__class__.__name__}: {exc}")
        recovering = health.failures > 0
        health.record(result.ok, self.clock(), source.interval)  # from the end: a slow failure still waits
        if result.ok and recovering:
            log.info("source.recovered", extra={"source": source.name})
        elif not result.ok:
            log.warning("source.backoff", extra={"source": source.name, "failures": health.failures,
                                                 "retry_at": health.retry_at.isoformat() if health.retry_at else None})
        if self.metrics is not None:
            self.metrics.record_tick(result, time.monotonic() - started, health.failures)
        # After every tick, not only those that added failures: the processor also retries what it could not
        # finish before and does time-based work (resolving quiet incidents).
        self._process_after_tick()

    def _process_after_tick(self) -> None:
        """Run the processor now, unless another thread is running it — then that thread goes round again.

        So a tick never waits for another source's processing, and nothing that landed waits for a next tick.
        """
        self._process_due.set()
        while self._process_due.is_set():
            if not self._process_lock.acquire(blocking=False):
                return
            try:
                self._process_due.clear()
                self._process_once()
            finally:
                self._process_lock.release()

    def _process_once(self) -> None:
        try:
            done = process(self.store, self.clock(), self._processor())
        except Exception as exc:  # the failures stay pending; the next tick's processing retries them
            log.error("process.failed", extra={"error": f"{exc.__class__.__name__}: {exc}"}, exc_info=True)
            if self.metrics is not None:
                self.metrics.record_process(None)
            return
        if self.metrics is not None:
            self.metrics.record_process(done)

    def _schedule(self, sources: list[Source]) -> BackgroundScheduler:
        # One worker per source: with max_instances=1 no source ever waits for a worker another one holds.
        scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(max(1, len(sources)))},
            job_defaults={"coalesce": True, "max_instances": 1},
        )
        now = datetime.now(UTC)
        for source in sources:
            seconds = source.interval.total_seconds()
            jitter = seconds * JITTER
            scheduler.add_job(
                self.tick_source, IntervalTrigger(seconds=seconds, jitter=jitter),
                args=[source], id=source.name, name=f"tick {source.name}",
                next_run_time=now + timedelta(seconds=random.uniform(0, jitter)),
                misfire_grace_time=max(1, int(seconds)),
            )
        scheduler.start()
        return scheduler

    def _wait_for_signal(self, scheduler: BackgroundScheduler) -> None:
        interval = watchdog_interval()
        next_ping = time.monotonic()
        while not (self._stop.is_set() or self._reload.is_set()):
            if interval and time.monotonic() >= next_ping and scheduler.running:
                notify("WATCHDOG=1")
                next_ping = time.monotonic() + interval
            self._wake.wait(min(interval, 1.0) if interval else 1.0)
            self._wake.clear()

    def _shutdown(self, scheduler: BackgroundScheduler, sources: list[Source]) -> None:
        done = threading.Event()

        def stop() -> None:
            scheduler.shutdown(wait=True)  # lets a running tick finish its transaction
            with self._process_lock:  # and a running processor its batch
                done.set()

        threading.Thread(target=stop, name="shutdown", daemon=True).start()
        if not done.wait(self.shutdown_timeout):
            # A query stuck past the timeout: its transaction never committed, so the cursor did not move
            # and the next start re-reads that window. Nothing is lost by leaving now.
            log.warning("daemon.shutdown_timeout", extra={"seconds": self.shutdown_timeout})
            self.abandoned = True
        for source in sources:
            source.close()

    def _load_new_config(self, load_config: Callable[[], Config]) -> tuple[Config, Processor] | None:
        try:
            new = load_config()
            if new.state.url != self.config.state.url:
                raise ConfigError("state.url", "a new state store needs a restart, not a reload")
            credential = self.credential_factory(new)  # a bad credential setting is refused here, not in every tick
            processor = build_processor(new, credential)
        except Exception as exc:  # keep serving with the old config rather than dying on a typo
            log.error("daemon.reload_failed", extra={"error": str(exc)})
            return None
        return new, processor

    def _apply_config(self, new: Config, processor: Processor, server: MetricsServer | None) -> MetricsServer | None:
        old, self.config, self._built = self.config, new, (new, processor)
        setup_logging(new.logging.level, new.logging.format, new.logging.levels, reset=old.logging.levels)
        if self.metrics is not None:
            self.metrics.config = new
        if new.metrics != old.metrics:
            if server is not None:
                server.close()
            try:
                server = self._start_metrics_server()
            except Exception as exc:  # the new port is taken: serve on without metrics rather than stop
                log.error("metrics.unavailable", extra={"error": str(exc)})
                server = None
        log.info("daemon.reloaded")
        return server

    def _start_metrics_server(self) -> MetricsServer | None:
        settings = self.config.metrics
        if settings.port is None or self.metrics is None:
            return None
        return MetricsServer(self.metrics, settings.host, settings.port).start()

    def _install_signals(self) -> None:
        def on_stop(signum: int, _frame: FrameType | None) -> None:
            log.info("daemon.signal", extra={"signal": signal.Signals(signum).name})
            self._stop.set()
            self._wake.set()

        def on_hup(_signum: int, _frame: FrameType | None) -> None:
            log.info("daemon.signal", extra={"signal": "SIGHUP"})
            self._reload.set()
            self._wake.set()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)


def exit_now(code: int) -> NoReturn:
    """Leave at once, for a stop that abandoned a stuck tick: flush what was said, skip joining its thread."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def notify(state: str) -> None:
    """sd_notify(3) without a dependency: one datagram to $NOTIFY_SOCKET, when systemd gave us one."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)  # a receiver that stopped reading must not hang the daemon (or its stop)
        try:
            sock.sendto(state.encode(), address)
        except OSError as exc:
            log.warning("daemon.notify_failed", extra={"state": state, "error": str(exc) or exc.__class__.__name__})


def watchdog_interval() -> float | None:
    """Half of systemd's WatchdogSec, when it is set for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000
