"""`rca-poller run`: one APScheduler job per source, the processor after ticks, clean stop on signals."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from poller.config import Config
from poller.pipeline import process, tick
from poller.sources import Source, build_sources
from poller.store import Store

log = logging.getLogger("poller.daemon")
MAX_BACKOFF = timedelta(minutes=15)


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


@dataclass
class Daemon:
    config: Config
    store: Store
    credential_factory: Callable[[Config], object]
    shutdown_timeout: float = 30.0
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    _stop: threading.Event = field(default_factory=threading.Event)
    _reload: threading.Event = field(default_factory=threading.Event)
    _process_lock: threading.Lock = field(default_factory=threading.Lock)
    _health: dict[str, SourceHealth] = field(default_factory=dict)

    def run(self, load_config: Callable[[], Config] | None = None) -> None:
        """Serve until SIGTERM/SIGINT; SIGHUP reloads the config (a bad new config keeps the old one)."""
        self._install_signals()
        notify("READY=1")
        while True:
            sources = build_sources(self.config, self.credential_factory(self.config))  # type: ignore[arg-type]
            scheduler = self._schedule(sources)
            log.info("daemon.started", extra={"sources": ",".join(s.name for s in sources)})
            self._wait_for_signal()
            self._shutdown(scheduler, sources)
            if self._stop.is_set() or load_config is None:
                log.info("daemon.stopped")
                return
            self._reload.clear()
            try:
                self.config = load_config()
                log.info("daemon.reloaded")
            except Exception as exc:  # keep serving with the old config rather than dying on a typo
                log.error("daemon.reload_failed", extra={"error": str(exc)})

    def tick_source(self, source: Source) -> None:
        health = self._health.setdefault(source.name, SourceHealth())
        now = self.clock()
        if health.retry_at and now < health.retry_at:
            return
        if self._stop.is_set():
            return
        result = tick(source, self.store, now)
        health.record(result.ok, now, source.interval)
        with self._process_lock:
            process(self.store, self.clock())

    def _schedule(self, sources: list[Source]) -> BackgroundScheduler:
        scheduler = BackgroundScheduler(timezone=UTC, job_defaults={"coalesce": True, "max_instances": 1})
        for source in sources:
            seconds = source.interval.total_seconds()
            scheduler.add_job(
                self.tick_source, IntervalTrigger(seconds=seconds, jitter=max(1, int(seconds * 0.1))),
                args=[source], id=source.name, name=f"tick {source.name}",
                next_run_time=datetime.now(UTC), misfire_grace_time=int(seconds),
            )
        scheduler.start()
        return scheduler

    def _wait_for_signal(self) -> None:
        interval = watchdog_interval()
        while not (self._stop.is_set() or self._reload.is_set()):
            self._stop.wait(interval or 1.0)
            if interval:
                notify("WATCHDOG=1")

    def _shutdown(self, scheduler: BackgroundScheduler, sources: list[Source]) -> None:
        notify("STOPPING=1")
        done = threading.Event()

        def stop() -> None:
            scheduler.shutdown(wait=True)  # lets a running tick finish its transaction
            done.set()

        threading.Thread(target=stop, daemon=True).start()
        if not done.wait(self.shutdown_timeout):
            # A query stuck past the timeout: its transaction never committed, so the cursor did not move
            # and the next start re-reads that window. Nothing is lost by leaving now.
            log.warning("daemon.shutdown_timeout", extra={"seconds": self.shutdown_timeout})
        for source in sources:
            source.close()

    def _install_signals(self) -> None:
        def on_stop(signum: int, _frame: FrameType | None) -> None:
            log.info("daemon.signal", extra={"signal": signal.Signals(signum).name})
            self._stop.set()

        def on_hup(_signum: int, _frame: FrameType | None) -> None:
            self._reload.set()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)


def notify(state: str) -> None:
    """sd_notify(3) without a dependency: one datagram to $NOTIFY_SOCKET, when systemd gave us one."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(state.encode(), address)
        except OSError as exc:
            log.warning("daemon.notify_failed", extra={"error": str(exc)})


def watchdog_interval() -> float | None:
    """Half of systemd's WatchdogSec, when it is set for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000
