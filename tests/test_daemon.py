"""`rca-poller run` as systemd runs it: real processes, signals, the Log Analytics emulator over HTTPS."""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from poller.config import parse_config
from poller.daemon import MAX_BACKOFF, Daemon, SourceHealth, notify, watchdog_interval
from poller.emulators.log_analytics import Fault, LogAnalyticsEmulator
from poller.emulators.tls import ThrowawayCA
from poller.errors import SourceError
from poller.metrics import Metrics
from poller.models import Failure
from poller.sources import Poll, Window
from poller.store import FailureRow, Store
from tests.conftest import ADF_TABLES, TOKEN, activity_row

ROOT = Path(__file__).resolve().parents[1]
RCA_POLLER = [sys.executable, "-m", "poller.cli"]


# --- helpers shared with the other process-level tests ------------------------------------------------------


@pytest.fixture
def ca(tmp_path: Path) -> ThrowawayCA:
    """One CA for every emulator of a test, so the child process needs one REQUESTS_CA_BUNDLE."""
    folder = tmp_path / "ca"
    folder.mkdir()
    return ThrowawayCA(folder)


@contextmanager
def emulator(ca: ThrowawayCA, workspace: int = 1) -> Iterator[LogAnalyticsEmulator]:
    with LogAnalyticsEmulator(workspace_id=str(uuid.UUID(int=workspace)), expected_token=TOKEN, ca=ca,
                              empty_tables=ADF_TABLES) as la:
        yield la


def la_source(la: LogAnalyticsEmulator, **settings: Any) -> dict[str, Any]:
    return {"type": "log_analytics", "workspace_id": la.workspace_id, "endpoint": la.url, "interval": "1s",
            "max_retries": 0, **settings}


def write_config(tmp_path: Path, sources: dict[str, Any], **sections: Any) -> Path:
    config = {"state": {"url": f"sqlite:///{tmp_path}/state.db"}, "azure": {"credential": "access_token_env"},
              "sources": sources, **sections}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def child_env(ca: ThrowawayCA, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    return {**env, "REQUESTS_CA_BUNDLE": str(ca.ca_path), "AZURE_ACCESS_TOKEN": TOKEN, **extra}


def add_failures(la: LogAnalyticsEmulator, count: int, *, ago: timedelta = timedelta(minutes=30)) -> None:
    now = datetime.now(UTC)
    rows = [activity_row("Copy_SalesOrders", run_id=str(uuid.uuid4()), at=now - ago - timedelta(seconds=n),
                         ingested=now - ago) for n in range(count)]
    la.add_rows("ADFActivityRun", rows)


def tick_times(la: LogAnalyticsEmulator) -> list[datetime]:
    """When each tick reached this emulator: a tick's queries share one window, so one timespan each."""
    first: dict[str | None, datetime] = {}
    for request in la.requests:
        first.setdefault(request.timespan, request.time)
    return sorted(first.values())


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DaemonProcess:
    """`rca-poller run` in a child process, its stderr in a file (a pipe could fill up and block it)."""

    def __init__(self, tmp_path: Path, config: Path, env: dict[str, str], *args: str) -> None:
        self.log = tmp_path / f"daemon-{time.monotonic_ns()}.log"
        with self.log.open("w") as out:
            self.proc = subprocess.Popen([*RCA_POLLER, "run", "--config", str(config), *args], cwd=ROOT, env=env,
                                         stdout=subprocess.DEVNULL, stderr=out)

    @property
    def stderr(self) -> str:
        return self.log.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> tuple[int, float]:
        started = time.monotonic()
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"no exit within {timeout}s of {signal.Signals(sig).name}:\n{self.stderr}") from None
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RCA_POLLER, *args], capture_output=True, text=True, timeout=60, cwd=ROOT, env=env,
                          check=False)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def sample(metrics: str, name: str, **labels: str) -> float:
    """The value of one series in Prometheus text format (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    match = re.search(rf"^{name}\{{{re.escape(wanted)}\}} (\S+)$", metrics, flags=re.MULTILINE)
    return float(match.group(1)) if match else 0.0


# --- the acceptance scenarios ------------------------------------------------------------------------------


def test_sources_tick_independently_and_sigterm_exits_0_with_all_committed(tmp_path: Path, ca: ThrowawayCA) -> None:
    with emulator(ca, 1) as healthy, emulator(ca, 2) as broken:
        add_failures(healthy, 5)
        broken.inject(Fault(status=503, times=100_000))  # azure-core retries each 503 ~6 s, then we back off
        port = free_port()
        config = write_config(tmp_path, {"adf-a": la_source(healthy), "adf-b": la_source(broken)},
                              metrics={"port": port, "stale_after": "30s"})
        with NotifySocket(tmp_path / "n.sock") as systemd:
            env = child_env(ca, NOTIFY_SOCKET=str(systemd.path), WATCHDOG_USEC="1000000")
            daemon = DaemonProcess(tmp_path, config, env)
            try:
                wait_until(lambda: len(tick_times(healthy)) >= 5 and broken.requests != [], 20, "ticks of both")
                # While adf-b was stuck in retries of its outage, adf-a kept its 1 s pace (+ ≤10% jitter).
                times = tick_times(healthy)
                gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
                assert max(gaps) < 3.5, gaps  # blocked behind adf-b, a gap would be 5 s or more

                second = cli("run", "--config", str(config), env=env)
                assert second.returncode == 1
                assert f"another rca-poller process (pid {daemon.proc.pid})" in second.stderr

                url = f"http://127.0.0.1:{port}"
                wait_until(lambda: sample(get(f"{url}/metrics")[1], "rca_poller_ticks_total", outcome="error",
                                          source="adf-b") >= 1, 15, "adf-b's first failed tick")
                metrics = get(f"{url}/metrics")[1]
                assert sample(metrics, "rca_poller_ticks_total", outcome="ok", source="adf-a") >= 4
                assert sample(metrics, "rca_poller_failures_total", source="adf-a") == 5
                assert sample(metrics, "rca_poller_source_healthy", source="adf-a") == 1
                assert sample(metrics, "rca_poller_source_healthy", source="adf-b") == 0
                assert sample(metrics, "rca_poller_source_consecutive_errors", source="adf-b") >= 1
                assert 0 <= sample(metrics, "rca_poller_cursor_lag_seconds", source="adf-a") < 10
                status, body = get(f"{url}/healthz")
                assert status == 503 and '"source": "adf-b"' in body and "adf-a" not in body

                code, seconds = daemon.stop()
            finally:
                daemon.kill()
    messages = systemd.messages
    assert code == 0, daemon.stderr
    assert len(tick_times(broken)) <= 3  # never two at once, missed runs coalesced, then backing off
    assert seconds < 10
    assert "Traceback" not in daemon.stderr and "daemon.stopped" in daemon.stderr
    assert messages[0] == "READY=1" and "WATCHDOG=1" in messages and messages[-1] == "STOPPING=1"
    store = Store(f"sqlite:///{tmp_path}/state.db")
    assert store.count(FailureRow) == 5 and store.backlog() == 0
    a, b = store.checkpoint("adf-a"), store.checkpoint("adf-b")
    assert a is not None and a.cursor is not None and a.last_error is None
    assert b is not None and b.cursor is None and "HTTP 503" in (b.last_error or "")


def test_sigterm_mid_tick_lets_it_finish_and_commit(tmp_path: Path, ca: ThrowawayCA) -> None:
    with emulator(ca) as la:
        add_failures(la, 3)
        la.inject(Fault(delay_seconds=3))  # the first query of the first tick is slow
        config = write_config(tmp_path, {"adf-a": la_source(la, interval="5s")})
        daemon = DaemonProcess(tmp_path, config, child_env(ca))
        try:
            wait_until(lambda: la.pending_faults == 0, 10, "the slow query")  # taken as the request came in
            assert la.requests == []
            code, seconds = daemon.stop()
        finally:
            daemon.kill()
    assert code == 0 and seconds < 10, daemon.stderr
    store = Store(f"sqlite:///{tmp_path}/state.db")
    assert store.count(FailureRow) == 3
    checkpoint = store.checkpoint("adf-a")
    assert checkpoint is not None and checkpoint.cursor is not None


def test_a_tick_stuck_past_the_shutdown_timeout_is_left_uncommitted(tmp_path: Path, ca: ThrowawayCA) -> None:
    with emulator(ca) as la:
        add_failures(la, 3)
        la.inject(Fault(delay_seconds=60))
        config = write_config(tmp_path, {"adf-a": la_source(la, interval="5s")})
        daemon = DaemonProcess(tmp_path, config, child_env(ca), "--shutdown-timeout", "1")
        try:
            wait_until(lambda: la.pending_faults == 0, 10, "the stuck query")
            code, seconds = daemon.stop()
        finally:
            daemon.kill()
    assert code == 0 and seconds < 5, daemon.stderr
    assert "daemon.shutdown_timeout" in daemon.stderr
    store = Store(f"sqlite:///{tmp_path}/state.db")
    assert store.count(FailureRow) == 0 and store.checkpoint("adf-a") is None  # the next start re-reads it


def test_sighup_reloads_the_config_and_a_bad_one_is_refused(tmp_path: Path, ca: ThrowawayCA) -> None:
    with emulator(ca, 1) as first, emulator(ca, 2) as added:
        config = write_config(tmp_path, {"adf-a": la_source(first)})
        daemon = DaemonProcess(tmp_path, config, child_env(ca))
        try:
            wait_until(lambda: len(tick_times(first)) >= 1, 10, "the first tick")
            write_config(tmp_path, {"adf-a": la_source(first), "adf-new": la_source(added)})
            daemon.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: len(tick_times(added)) >= 2, 10, "ticks of the source added by the reload")
            config.write_text("sources: {adf-a: {type: log_analytics}}\n")  # no workspace_id
            daemon.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: "daemon.reload_failed" in daemon.stderr, 10, "the refused reload")
            ticks = len(tick_times(added))
            wait_until(lambda: len(tick_times(added)) >= ticks + 2, 10, "ticks on the kept config")
            code, _ = daemon.stop()
        finally:
            daemon.kill()
    assert code == 0
    assert "daemon.reloaded" in daemon.stderr and "sources.adf-a.workspace_id: required key is missing" in daemon.stderr


# --- in-process pieces -------------------------------------------------------------------------------------


def test_backoff_doubles_per_failure_up_to_a_cap_and_resets_on_success() -> None:
    health, now, interval = SourceHealth(), datetime(2026, 11, 29, tzinfo=UTC), timedelta(seconds=60)
    waits = []
    for _ in range(6):
        health.record(False, now, interval)
        assert health.retry_at is not None
        waits.append(health.retry_at - now)
    assert waits[:3] == [timedelta(minutes=2), timedelta(minutes=4), timedelta(minutes=8)]
    assert waits[3:] == [MAX_BACKOFF] * 3
    assert health.waiting(now + MAX_BACKOFF - timedelta(seconds=1)) and not health.waiting(now + MAX_BACKOFF)
    health.record(True, now, interval)
    assert health.failures == 0 and not health.waiting(now)


class CrashingSource:
    """A source whose poll has a bug (not a SourceError): the daemon must log it and back off, not die."""

    name = "crashy"
    interval = timedelta(seconds=30)

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.polls = 0

    def window(self, cursor: datetime | None, now: datetime) -> Window:
        return Window(now - timedelta(minutes=5), now)

    def poll(self, window: Window) -> Poll:
        self.polls += 1
        raise self.error

    def extract(self, raw: Any) -> Failure | None:
        return None

    def close(self) -> None:
        pass


@pytest.mark.parametrize("error", [RuntimeError("bug in a rule"), SourceError("crashy", "HTTP 500")])
def test_a_failing_tick_backs_off_that_source_and_is_counted(tmp_path: Path, error: Exception) -> None:
    config = parse_config({"state": {"url": f"sqlite:///{tmp_path}/s.db"}}, {})
    store = Store(config.state.url)
    now = datetime(2026, 11, 29, 12, tzinfo=UTC)
    metrics = Metrics(config, store, lambda: now)
    daemon = Daemon(config, store, lambda _c: None, clock=lambda: now, metrics=metrics)
    source = CrashingSource(error)
    daemon.tick_source(source)
    daemon.tick_source(source)  # still backing off: not polled again
    assert source.polls == 1
    text = metrics.exposition().decode()
    assert sample(text, "rca_poller_ticks_total", outcome="error", source="crashy") == 1
    assert sample(text, "rca_poller_source_consecutive_errors", source="crashy") == 1


def test_sd_notify_and_watchdog_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "n.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        started = time.monotonic()
        for _ in range(50):  # far beyond the socket's queue: a receiver that does not read never blocks us
            notify("WATCHDOG=1")
        assert time.monotonic() - started < 2
        assert systemd.recv(64) == b"WATCHDOG=1"
    monkeypatch.setenv("WATCHDOG_USEC", "120000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 60
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert watchdog_interval() is None
    monkeypatch.delenv("NOTIFY_SOCKET")
    notify("READY=1")  # outside systemd: nothing to do, no error


class NotifySocket:
    """systemd's side of sd_notify: a datagram socket read by a thread, as PID 1 reads it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[str] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.2)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                self.messages.append(self._sock.recv(4096).decode())
            except TimeoutError:
                continue

    def __enter__(self) -> NotifySocket:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._closed.set()
        self._thread.join(5)
        self._sock.close()
