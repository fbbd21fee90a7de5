"""Monitoring: Prometheus metrics on a per-process registry, source health, and the /metrics + /healthz server.

Counters of this process's work (ticks, rows, failures, quarantined, processing) are recorded by the daemon
around each tick. What the state store already knows (cursor lag, last success, backlog, incidents, LLM
tokens and cost, tickets, sink deliveries, remediation outcomes) is read from it at scrape time, so the
numbers match `rca-poller status` and survive restarts. Health is one rule, shared by /healthz and
`rca-poller status --check`: every enabled source has ticked successfully within its `stale_after`.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from sqlmodel import SQLModel, col

from poller.config import Config
from poller.errors import PollerError
from poller.models import iso
from poller.pipeline import TickResult
from poller.schema import OutboxRow, RemediationAttemptRow
from poller.store import CheckpointRow, IncidentRow, RcaCallRow, Store, TicketRow

log = logging.getLogger("poller.metrics")
#: With no `metrics.stale_after`, a source is stale after this many of its intervals, and never sooner than
#: MIN_STALE_AFTER: one slow query or a short backoff must not flip health.
STALE_INTERVALS = 3
MIN_STALE_AFTER = timedelta(minutes=5)
TICK_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


# --- health: one rule for /healthz, `status` and `status --check` -----------------------------------------


def stale_after(config: Config, source: str) -> timedelta:
    """How long a source may go without a successful tick before it counts as stale."""
    if config.metrics.stale_after is not None:
        return config.metrics.stale_after
    return max(config.sources[source].interval * STALE_INTERVALS, MIN_STALE_AFTER)


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """One source as `status` shows it: its checkpoint, backlog, and whether it is stale at `now`."""

    source: str
    enabled: bool
    checkpoint: CheckpointRow | None
    backlog: int
    stale_after: timedelta
    now: datetime

    @property
    def last_success_at(self) -> datetime | None:
        return self.checkpoint.last_success_at if self.checkpoint else None

    @property
    def lag_seconds(self) -> float | None:
        cursor = self.checkpoint.cursor if self.checkpoint else None
        return (self.now - cursor).total_seconds() if cursor else None

    @property
    def stale(self) -> bool:
        """Enabled, and no successful tick within `stale_after` (a source that never succeeded is stale)."""
        last = self.last_success_at
        return self.enabled and (last is None or self.now - last > self.stale_after)

    def to_json(self) -> dict[str, Any]:
        c = self.checkpoint

        def when(value: datetime | None) -> str | None:
            return iso(value) if value else None

        return {
            "source": self.source,
            "enabled": self.enabled,
            "cursor": when(c.cursor) if c else None,
            "lag_seconds": self.lag_seconds,
            "last_tick_at": when(c.last_tick_at) if c else None,
            "last_success_at": when(c.last_success_at) if c else None,
            "last_error": c.last_error if c else None,
            "last_error_at": when(c.last_error_at) if c else None,
            "backlog": self.backlog,
            "stale": self.stale,
            "stale_after_seconds": self.stale_after.total_seconds(),
        }


def source_statuses(config: Config, store: Store, now: datetime) -> list[SourceStatus]:
    """Every configured source's status, in config order."""
    checkpoints = {c.name: c for c in store.checkpoints()}
    return [
        SourceStatus(name, cfg.enabled, checkpoints.get(name), store.backlog(name), stale_after(config, name), now)
        for name, cfg in config.sources.items()
    ]


def health_report(statuses: list[SourceStatus]) -> dict[str, Any]:
    """The /healthz body: ``ok`` or ``stale``, and which sources are stale since when."""
    stale = [s for s in statuses if s.stale]
    return {
        "status": "stale" if stale else "ok",
        "stale": [
            {"source": s.source, "last_success_at": iso(s.last_success_at) if s.last_success_at else None,
             "stale_after_seconds": s.stale_after.total_seconds(),
             "last_error": s.checkpoint.last_error if s.checkpoint else None}
            for s in stale
        ],
        "sources": len(statuses),
    }


# --- metrics ----------------------------------------------------------------------------------------------


class Metrics:
    """The daemon's Prometheus metrics; each instance owns its registry (no global state)."""

    def __init__(self, config: Config, store: Store, clock: Callable[[], datetime]) -> None:
        self.config = config  # replaced on reload: stale_after and the source list follow the new config
        self.store = store
        self.clock = clock
        self.registry = CollectorRegistry()
        r = self.registry
        self.ticks = Counter("rca_poller_ticks_total", "Ticks by source and outcome (ok, error).",
                             ["source", "outcome"], registry=r)
        self.tick_seconds = Histogram("rca_poller_tick_duration_seconds", "How long a tick took (read, commit).",
                                      ["source"], buckets=TICK_BUCKETS, registry=r)
        self.rows_read = Counter("rca_poller_rows_read_total", "Raw records read from a source.", ["source"],
                                 registry=r)
        self.failures = Counter("rca_poller_failures_total", "New failures stored (re-reads not counted).",
                                ["source"], registry=r)
        self.quarantined = Counter("rca_poller_quarantined_total", "Records quarantined as unreadable.",
                                   ["source"], registry=r)
        self.consecutive_errors = Gauge("rca_poller_source_consecutive_errors",
                                        "Failed ticks in a row; the source backs off while this is above 0.",
                                        ["source"], registry=r)
        self.processed = Counter("rca_poller_processed_total", "Failures the processor grouped into incidents.",
                                 registry=r)
        self.process_errors = Counter("rca_poller_process_errors_total", "Processor runs that raised.", registry=r)
        r.register(_StoreCollector(self))

    def record_tick(self, result: TickResult, seconds: float, consecutive_errors: int) -> None:
        source = result.source
        self.ticks.labels(source, "ok" if result.ok else "error").inc()
        self.tick_seconds.labels(source).observe(seconds)
        self.rows_read.labels(source).inc(result.rows_read)
        self.failures.labels(source).inc(result.added)
        self.quarantined.labels(source).inc(result.quarantined)
        self.consecutive_errors.labels(source).set(consecutive_errors)

    def record_process(self, processed: int | None) -> None:
        """After a processor run: how many failures it took, or None when it raised."""
        if processed is None:
            self.process_errors.inc()
        else:
            self.processed.inc(processed)

    def statuses(self) -> list[SourceStatus]:
        return source_statuses(self.config, self.store, self.clock())

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _StoreCollector:
    """Gauges and persisted counters read from the state store at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        try:
            families = [*self._sources(), *self._processing()]
        except (SQLAlchemyError, PollerError) as exc:  # a scrape must still show the process counters
            log.warning("metrics.store_unreadable", extra={"error": str(exc)})
            return
        yield from families

    def _sources(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily("rca_poller_cursor_lag_seconds", "Seconds from the source's cursor to now.",
                                labels=["source"])
        success = GaugeMetricFamily("rca_poller_last_success_timestamp_seconds",
                                    "Unix time of the source's last successful tick.", labels=["source"])
        healthy = GaugeMetricFamily("rca_poller_source_healthy",
                                    "1 when the source ticked successfully within stale_after, else 0.",
                                    labels=["source"])
        backlog = GaugeMetricFamily("rca_poller_backlog", "Stored failures not yet processed.", labels=["source"])
        for s in self._metrics.statuses():
            if s.lag_seconds is not None:
                lag.add_metric([s.source], s.lag_seconds)
            if s.last_success_at is not None:
                success.add_metric([s.source], s.last_success_at.timestamp())
            if s.enabled:
                healthy.add_metric([s.source], 0.0 if s.stale else 1.0)
            backlog.add_metric([s.source], s.backlog)
        yield from (lag, success, healthy, backlog)

    def _processing(self) -> Iterator[Metric]:
        counted = (  # (family, table, label columns): one `count(*) GROUP BY` each
            (GaugeMetricFamily("rca_poller_incidents", "Incidents by status.", labels=["status"]),
             IncidentRow, ("status",)),
            (GaugeMetricFamily("rca_poller_tickets", "Tickets by sink and status.", labels=["sink", "status"]),
             TicketRow, ("sink", "status")),
            (GaugeMetricFamily("rca_poller_sink_deliveries", "Deliveries owed to external sinks by status (pending, "
                               "sent, failed_permanent, skipped).", labels=["sink", "status"]),
             OutboxRow, ("sink", "status")),
            (GaugeMetricFamily("rca_poller_remediations", "Remediation attempts by action and status.",
                               labels=["action", "status"]), RemediationAttemptRow, ("action", "status")),
            (CounterMetricFamily("rca_poller_llm_calls", "LLM calls by provider and status.",
                                 labels=["provider", "status"]), RcaCallRow, ("provider", "status")),
        )
        tokens = CounterMetricFamily("rca_poller_llm_tokens", "LLM tokens by provider and kind (prompt, completion).",
                                     labels=["provider", "kind"])
        cost = CounterMetricFamily("rca_poller_llm_cost_usd", "Estimated LLM cost in US dollars.", labels=["provider"])
        provider = col(RcaCallRow.provider)
        with Session(self._metrics.store.engine) as session:
            for family, row, columns in counted:
                for labels, count in _count_by(session, row, *columns):
                    family.add_metric(labels, count)
            for name, prompt, completion, dollars in session.execute(
                select(provider, func.sum(col(RcaCallRow.prompt_tokens)), func.sum(col(RcaCallRow.completion_tokens)),
                       func.sum(col(RcaCallRow.cost))).group_by(provider)
            ):
                tokens.add_metric([name, "prompt"], prompt or 0)
                tokens.add_metric([name, "completion"], completion or 0)
                cost.add_metric([name], dollars or 0.0)
        yield from (*(family for family, _, _ in counted), tokens, cost)


def _count_by(session: Session, row: type[SQLModel], *columns: str) -> Iterator[tuple[list[str], int]]:
    keys = [col(getattr(row, name)) for name in columns]
    for *values, count in session.execute(select(*keys, func.count()).group_by(*keys)):
        yield [str(v) for v in values], int(count)


# --- the HTTP server --------------------------------------------------------------------------------------


class MetricsServer:
    """/metrics (Prometheus text format) and /healthz (200 ok, 503 with the stale sources) on host:port."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        server_class = _V6Server if ":" in host else ThreadingHTTPServer
        try:
            self._server = server_class((host, port), _handler(metrics))
        except OSError as exc:
            raise PollerError(f"metrics: cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="metrics-server", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info("metrics.listening", extra={"host": self.address[0], "port": self.address[1]})
        return self

    def close(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for serve_forever, forever if it never ran
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()


class _V6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _handler(metrics: Metrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            try:
                if path == "/metrics":
                    self._reply(200, metrics.exposition(), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    report = health_report(metrics.statuses())
                    self._reply(200 if report["status"] == "ok" else 503, json.dumps(report).encode(),
                                "application/json")
                else:
                    self._reply(404, b"not found: try /metrics or /healthz\n", "text/plain")
            except Exception as exc:  # a broken scrape answers 500 and is logged; the daemon carries on
                log.error("metrics.request_failed", extra={"path": path, "error": str(exc)}, exc_info=True)
                self._reply(500, f"error: {exc}\n".encode(), "text/plain")

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("metrics.request", extra={"request": format % args})

    return Handler
