"""Log Analytics source: KQL over the ADF tables through azure-monitor-query's LogsQueryClient."""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.monitor.query import LogsQueryClient, LogsQueryPartialResult, LogsQueryStatus, LogsTable

from poller.config import LogAnalyticsSourceConfig
from poller.errors import SourceError, ThrottledError
from poller.extractors import adf
from poller.models import Failure, iso
from poller.sources.base import Poll, Window

log = logging.getLogger("poller.sources.log_analytics")

# One query per kind of failure; each service lists its queries in the order they run.
SERVICE_QUERIES: dict[str, tuple[str, ...]] = {
    "adf": ("adf_activity_failures", "adf_pipeline_failures"),
}
# TimeGenerated may lag ingestion by up to two days and lead it by one (Azure rewrites values beyond that),
# so the API timespan around an ingestion window is widened by these margins.
TIMESPAN_BEFORE = timedelta(days=2, hours=1)
TIMESPAN_AFTER = timedelta(days=1)
TRUNCATION_MARKERS = ("E_QUERY_RESULT_SET_TOO_LARGE", "exceeded the internal record count limit")


def load_query(name: str) -> str:
    return resources.files("poller.sources").joinpath(f"kql/{name}.kql").read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class _Result:
    rows: list[dict[str, Any]]
    truncated: bool
    warning: str | None


class LogAnalyticsSource:
    """Failed ADF runs from one Log Analytics workspace, windowed on ingestion time."""

    def __init__(
        self,
        name: str,
        config: LogAnalyticsSourceConfig,
        credential: TokenCredential,
        sleep: Callable[[float], None] = time.sleep,
        client: LogsQueryClient | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.interval = config.interval
        self._credential = credential
        self._sleep = sleep
        self._client = client
        self._queries = {q: load_query(q) for s in config.services for q in SERVICE_QUERIES[s]}

    def __repr__(self) -> str:
        return f"LogAnalyticsSource(name={self.name!r}, workspace={self.config.workspace_id!r})"

    @property
    def client(self) -> LogsQueryClient:
        if self._client is None:
            timeout = int(self.config.query_timeout.total_seconds())
            extra = {"audience": self.config.audience} if self.config.audience else {}
            self._client = LogsQueryClient(
                self._credential, endpoint=self.config.endpoint, read_timeout=timeout + 30, **extra
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def window(self, cursor: datetime | None, now: datetime) -> Window:
        # Re-read `overlap` behind the cursor: rows ingested late land there, and natural keys drop repeats.
        start = now - self.config.initial_lookback if cursor is None else cursor - self.config.overlap
        return Window(start=min(start, now), end=now)

    def poll(self, window: Window) -> Poll:
        rows: list[dict[str, Any]] = []
        warnings: list[str] = []
        for name, template in self._queries.items():
            for result in self._read(name, template, window.start, window.end):
                rows.extend(result.rows)
                if result.warning:
                    warnings.append(f"{name}: {result.warning}")
        return Poll(records=rows, cursor=window.end, warnings=warnings)

    def extract(self, raw: Any) -> Failure | None:
        return adf.extract_row(raw)

    def _read(self, name: str, template: str, start: datetime, end: datetime) -> Iterator[_Result]:
        """Run one query over (start, end], halving the window while the service truncates the result."""
        result = self._query(name, template, start, end)
        if not result.truncated:
            yield result
            return
        if end - start <= self.config.min_split:
            raise SourceError(
                self.name,
                f"{name}: more than {self.config.max_rows} rows between {iso(start)} and {iso(end)} even after "
                f"splitting; lower sources.{self.name}.min_split",
                retryable=False,
            )
        middle = start + (end - start) / 2
        log.info("query.split", extra={"source": self.name, "query": name, "at": iso(middle)})
        yield from self._read(name, template, start, middle)
        yield from self._read(name, template, middle, end)

    def _query(self, name: str, template: str, start: datetime, end: datetime) -> _Result:
        query = (
            template.replace("{ingest_from}", iso(start))
            .replace("{ingest_to}", iso(end))
            .replace("{settle_seconds}", str(int(self.config.settle.total_seconds())))
        )
        response = self._with_backoff(
            lambda: self.client.query_workspace(
                self.config.workspace_id,
                query,
                timespan=(start - TIMESPAN_BEFORE, end + TIMESPAN_AFTER),
                server_timeout=int(self.config.query_timeout.total_seconds()),
            )
        )
        if response.status == LogsQueryStatus.SUCCESS:
            rows = _rows(response.tables)
            return _Result(rows, truncated=len(rows) >= self.config.max_rows, warning=None)
        assert isinstance(response, LogsQueryPartialResult)
        rows = _rows(response.partial_data or [])
        text = _partial_text(response.partial_error)
        truncated = len(rows) >= self.config.max_rows or any(m in text for m in TRUNCATION_MARKERS)
        return _Result(rows, truncated=truncated, warning=None if truncated else f"partial result ({text})")

    def _with_backoff(self, call: Callable[[], Any]) -> Any:
        """Our own backoff for 429s: azure-core retries a throttled POST only when Retry-After is present."""
        for attempt in range(self.config.max_retries + 1):
            try:
                return call()
            except HttpResponseError as exc:
                error = self._translate(exc)
                if not isinstance(error, ThrottledError) or attempt == self.config.max_retries:
                    raise error from exc
                delay = error.retry_after or min(60.0, 2.0**attempt) * (0.5 + random.random())
                log.warning("query.throttled", extra={"source": self.name, "retry_in": round(delay, 2)})
                self._sleep(delay)
            except json.JSONDecodeError as exc:
                # azure-monitor-query 2.0.0 cannot parse the documented 204 "workspace has no data" reply.
                raise SourceError(
                    self.name,
                    "the workspace answered 204 No Content (it holds no data): check that the data factory's "
                    "diagnostic setting sends ActivityRuns and PipelineRuns to it",
                ) from exc
            except (ServiceRequestError, ServiceResponseError) as exc:
                raise SourceError(self.name, f"cannot reach {self.config.endpoint}: {_short(exc)}") from exc
        raise AssertionError("unreachable")

    def _translate(self, exc: HttpResponseError) -> SourceError:
        """The one classifier of Log Analytics HTTP errors."""
        status = exc.status_code or 0
        message = _short(exc)
        if status == 429:
            header = getattr(exc.response, "headers", {}).get("Retry-After") if exc.response is not None else None
            retry_after = float(header) if header and header.isdigit() else None
            return ThrottledError(self.name, f"throttled by Log Analytics (HTTP 429): {message}", retry_after)
        if status in (401, 403):
            return SourceError(
                self.name,
                f"access denied (HTTP {status}): {message} — the identity needs 'Log Analytics Reader' on "
                f"workspace {self.config.workspace_id}",
                retryable=False,
            )
        if status == 404:
            return SourceError(
                self.name, f"workspace {self.config.workspace_id} not found at {self.config.endpoint}", retryable=False
            )
        if status == 400:
            inner = str(getattr(exc.model, "message", "") or message)
            hint = (" — is each factory's diagnostic setting sending PipelineRuns and ActivityRuns to this workspace "
                    "in resource-specific mode?" if "resolve table" in inner else "")
            return SourceError(self.name, f"query rejected (HTTP 400): {inner}{hint}", retryable=False)
        return SourceError(self.name, f"Log Analytics error (HTTP {status}): {message}", retryable=status >= 500)


def _rows(tables: list[LogsTable]) -> list[dict[str, Any]]:
    return [dict(zip(table.columns, row, strict=False)) for table in tables for row in table.rows]


def _partial_text(error: Any) -> str:
    """The SDK keeps only the generic top message; the real cause (e.g. truncation) sits in details."""
    inner = [
        str((d.get("innererror") or {}).get("message") or d.get("message") or "")
        for d in (getattr(error, "details", None) or [])
        if isinstance(d, Mapping)  # the SDK's generated models are Mappings, not dicts
    ]
    return "; ".join([f"{getattr(error, 'code', '')}: {getattr(error, 'message', '')}", *filter(None, inner)])


def _short(exc: Exception) -> str:
    """First line of an SDK error: their multi-line dumps don't belong in a one-line status."""
    text = str(getattr(exc, "message", "") or exc).strip()
    return text.splitlines()[0][:500] if text else exc.__class__.__name__
