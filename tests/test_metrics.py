"""Metrics, /healthz, `status --check` and log levels: one picture of health, from the state store."""

from __future__ import annotations

import io
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from prometheus_client.utils import floatToGoString
from sqlalchemy import text
from sqlmodel import Session

from poller.cli import main
from poller.config import Config, parse_config
from poller.errors import ConfigError
from poller.logs import setup_logging
from poller.metrics import Metrics, MetricsServer, source_statuses, stale_after
from poller.pipeline import TickResult
from poller.store import IncidentRow, RcaCallRow, Store

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def make_config(tmp_path: Path, metrics: dict[str, Any] | None = None, **sources: dict[str, Any]) -> Config:
    defaults = {"type": "log_analytics", "workspace_id": "ws"}
    return parse_config({"state": {"url": f"sqlite:///{tmp_path}/state.db"},
                         "sources": {name: {**defaults, **s} for name, s in sources.items()},
                         "metrics": metrics or {}}, {})


def succeeded(store: Store, name: str, at: datetime) -> None:
    with store.tick(name, at) as tx:
        tx.advance(at - timedelta(minutes=1), 0)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path}/state.db")
    yield store
    store.close()


@pytest.mark.parametrize(
    ("interval", "configured", "expected"),
    [("60s", None, timedelta(minutes=5)), ("10m", None, timedelta(minutes=30)), ("60s", "2m", timedelta(minutes=2))],
)
def test_stale_after(tmp_path: Path, interval: str, configured: str | None, expected: timedelta) -> None:
    config = make_config(tmp_path, {"stale_after": configured} if configured else None, a={"interval": interval})
    assert stale_after(config, "a") == expected


def test_staleness_per_source(tmp_path: Path, store: Store) -> None:
    config = make_config(tmp_path, {"stale_after": "5m"}, fresh={}, old={}, never={}, off={"enabled": False})
    succeeded(store, "fresh", NOW - timedelta(minutes=4))
    succeeded(store, "old", NOW - timedelta(minutes=6))
    store.record_error("fresh", NOW, "HTTP 503")  # a failed tick after a recent success: not stale yet
    statuses = {s.source: s for s in source_statuses(config, store, NOW)}
    assert {name: s.stale for name, s in statuses.items()} == {"fresh": False, "old": True, "never": True, "off": False}
    row = statuses["fresh"].to_json()
    assert row["last_error"] == "HTTP 503" and row["lag_seconds"] == 300 and row["stale_after_seconds"] == 300


def test_metrics_server_serves_metrics_and_health(tmp_path: Path, store: Store) -> None:
    config = make_config(tmp_path, {"stale_after": "5m"}, a={}, b={})
    clock = [NOW]
    metrics = Metrics(config, store, lambda: clock[0])
    metrics.record_tick(TickResult(source="a", rows_read=7, added=3, quarantined=1), 0.42, 0)
    metrics.record_tick(TickResult(source="b", error="HTTP 503"), 6.0, 1)
    metrics.record_process(3)
    succeeded(store, "a", NOW)
    succeeded(store, "b", NOW - timedelta(minutes=1))
    server = MetricsServer(metrics, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{server.address[1]}"
    try:
        status, headers, body = fetch(f"{base}/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=")
        for line in ('rca_poller_ticks_total{outcome="ok",source="a"} 1.0',
                     'rca_poller_ticks_total{outcome="error",source="b"} 1.0',
                     'rca_poller_rows_read_total{source="a"} 7.0', 'rca_poller_failures_total{source="a"} 3.0',
                     'rca_poller_quarantined_total{source="a"} 1.0', "rca_poller_processed_total 3.0",
                     'rca_poller_source_consecutive_errors{source="b"} 1.0',
                     'rca_poller_cursor_lag_seconds{source="a"} 60.0', 'rca_poller_source_healthy{source="b"} 1.0',
                     f'rca_poller_last_success_timestamp_seconds{{source="a"}} {floatToGoString(NOW.timestamp())}',
                     'rca_poller_tick_duration_seconds_count{source="b"} 1.0', 'rca_poller_backlog{source="a"} 0.0'):
            assert line in body, line
        assert fetch(f"{base}/healthz")[0] == 200

        clock[0] = NOW + timedelta(minutes=4, seconds=30)  # a's last success is 4.5 minutes old, b's 5.5
        status, _, body = fetch(f"{base}/healthz")
        report = json.loads(body)
        assert status == 503 and report["status"] == "stale" and [s["source"] for s in report["stale"]] == ["b"]
        assert report["stale"][0]["stale_after_seconds"] == 300
        assert fetch(f"{base}/other")[0] == 404
    finally:
        server.close()


def test_llm_and_incident_metrics_come_from_the_store(tmp_path: Path, store: Store) -> None:
    with Session(store.engine) as session, session.begin():
        session.add(IncidentRow(fingerprint="f1", service="adf", resource="pl", error_code="E", kind="activity_run",
                                title="t", template="t", first_seen=NOW, last_seen=NOW, created_at=NOW, updated_at=NOW))
        for tokens in (100, 50):
            session.add(RcaCallRow(incident_id=1, provider="openai", model="gpt-4o-mini", status="ok",
                                   prompt_tokens=tokens, completion_tokens=10, cost=0.25, at=NOW))
    body = Metrics(make_config(tmp_path), store, lambda: NOW).exposition().decode()
    assert 'rca_poller_incidents{status="open"} 1.0' in body
    assert 'rca_poller_llm_tokens_total{kind="prompt",provider="openai"} 150.0' in body
    assert 'rca_poller_llm_tokens_total{kind="completion",provider="openai"} 20.0' in body
    assert 'rca_poller_llm_cost_usd_total{provider="openai"} 0.5' in body
    assert 'rca_poller_llm_calls_total{provider="openai",status="ok"} 2.0' in body


def test_each_metrics_has_its_own_registry_and_survives_a_broken_store(tmp_path: Path, store: Store) -> None:
    config = make_config(tmp_path, a={})
    first, second = Metrics(config, store, lambda: NOW), Metrics(config, store, lambda: NOW)
    first.record_tick(TickResult(source="a"), 0.1, 0)
    assert 'rca_poller_ticks_total{outcome="ok",source="a"}' not in second.exposition().decode()
    with store.engine.begin() as conn:
        conn.execute(text("DROP TABLE checkpoints"))
    body = first.exposition().decode()  # the store part is skipped, the process counters remain
    assert 'rca_poller_ticks_total{outcome="ok",source="a"} 1.0' in body and "rca_poller_cursor_lag" not in body


def test_metrics_port_in_use_is_a_clear_error(tmp_path: Path, store: Store) -> None:
    metrics = Metrics(make_config(tmp_path), store, lambda: NOW)
    taken = MetricsServer(metrics, "127.0.0.1", 0)
    try:
        with pytest.raises(Exception, match=rf"metrics: cannot listen on 127.0.0.1:{taken.address[1]}: "):
            MetricsServer(metrics, "127.0.0.1", taken.address[1])
    finally:
        taken.close()


def test_status_check_exit_code(tmp_path: Path, store: Store) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "state": {"url": f"sqlite:///{tmp_path}/state.db"}, "metrics": {"stale_after": "10m"},
        "sources": {"adf-a": {"type": "log_analytics", "workspace_id": "ws"},
                    "adf-b": {"type": "log_analytics", "workspace_id": "ws"}},
    }))
    now = datetime.now(UTC)
    succeeded(store, "adf-a", now)
    succeeded(store, "adf-b", now - timedelta(minutes=2))
    assert CliRunner().invoke(main, ["status", "--check", "--config", str(path)]).exit_code == 0

    succeeded(store, "adf-b", now - timedelta(minutes=11))
    result = CliRunner().invoke(main, ["status", "--check", "--config", str(path)])
    assert result.exit_code == 1
    assert "stale: adf-b (no successful tick within stale_after)" in result.output
    assert CliRunner().invoke(main, ["status", "--config", str(path)]).exit_code == 0  # without --check: a report
    rows = json.loads(CliRunner().invoke(main, ["status", "--config", str(path), "--format", "json"]).stdout)
    assert [(r["source"], r["stale"]) for r in rows] == [("adf-a", False), ("adf-b", True)]


# --- logs --------------------------------------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name in ("poller.sources", "azure", "apscheduler", "urllib3", "httpx", "databricks"):
        logging.getLogger(name).setLevel(logging.NOTSET)


def test_log_levels_per_component_and_json_events(restore_logging: None, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    setup_logging("WARNING", "json", {"poller.sources": "DEBUG", "azure": "INFO"})
    logging.getLogger("poller.sources.log_analytics").debug("query.split", extra={"source": "a"})
    logging.getLogger("poller.daemon").info("daemon.started")  # below the root's WARNING
    logging.getLogger("azure.core").info("request")
    assert logging.getLogger("apscheduler").level == logging.ERROR  # a default that stays
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["logger"], e["event"], e["level"]) for e in events] == [
        ("poller.sources.log_analytics", "query.split", "DEBUG"), ("azure.core", "request", "INFO")]
    assert events[0]["source"] == "a"

    setup_logging("WARNING", "json", {}, reset=["poller.sources"])  # a reload that drops the override
    assert logging.getLogger("poller.sources").level == logging.NOTSET
    assert logging.getLogger("azure").level == logging.WARNING


def test_log_levels_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"^logging\.levels\.azure: Input should be 'DEBUG'"):
        parse_config({"logging": {"levels": {"azure": "LOUD"}}}, {})
    with pytest.raises(ConfigError, match=r"^metrics\.port: Input should be greater than or equal to 1"):
        parse_config({"metrics": {"port": 0}}, {})
    with pytest.raises(ConfigError, match=r"^metrics\.bind: unknown key"):
        parse_config({"metrics": {"bind": "0.0.0.0"}}, {})


def fetch(url: str) -> tuple[int, Any, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read().decode()
