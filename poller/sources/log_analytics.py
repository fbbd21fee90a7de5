"""Log Analytics source: KQL over the ADF, Synapse and Functions tables through azure-monitor-query's LogsQueryClient.

Each poll asks which tables hold logs (``log_analytics_plan``: resource-specific and/or legacy AzureDiagnostics
ADF tables, the Synapse and Functions tables), runs the configured services' queries over them, fills Synapse
rows' missing error text from the workspace API (``synapse_enrichment``), and hands the rows to the extractor of
their table.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.monitor.query import LogsQueryClient, LogsQueryPartialResult, LogsQueryStatus, LogsTable

from poller.config import LogAnalyticsSourceConfig
from poller.errors import SourceError, ThrottledError
from poller.extractors import adf, functions, synapse
from poller.models import Failure, iso
from poller.sources.base import Poll, Window
from poller.sources.log_analytics_plan import (
    SERVICE_QUERIES,
    TablePresence,
    build_queries,
    load_query,
    probe_query,
    tables_found,
)
from poller.sources.synapse_enrichment import SynapseEnrichment

log = logging.getLogger("poller.sources.log_analytics")

#: The extractor of each table's rows (``Type``); AzureDiagnostics rows are ADF's (the queries read no other).
TABLE_EXTRACTORS: dict[str, Callable[[Any], Failure | None]] = {
    **dict.fromkeys(("ADFActivityRun", "ADFPipelineRun", "AzureDiagnostics"), adf.extract_row),
    **dict.fromkeys(synapse.SYNAPSE_TABLES, synapse.extract_row),
    **dict.fromkeys(functions.FUNCTIONS_TABLES, functions.extract_row),
}
# TimeGenerated may lag ingestion by up to two days and lead it by one (Azure rewrites values beyond that),
# so the API timespan around an ingestion window is widened by these margins.
TIMESPAN_BEFORE = timedelta(days=2, hours=1)
TIMESPAN_AFTER = timedelta(days=1)
TRUNCATION_MARKERS = ("E_QUERY_RESULT_SET_TOO_LARGE", "exceeded the internal record count limit")
# A probe's union isfuzzy may report the tables a workspace lacks; that is the answer, not a problem.
MISSING_TABLE_MARKERS = ("Failed to resolve table", "could not be resolved")

__all__ = ["SERVICE_QUERIES", "LogAnalyticsSource", "load_query"]


@dataclass(frozen=True, slots=True)
class _Result:
    rows: list[dict[str, Any]]
    truncated: bool
    warning: str | None


class LogAnalyticsSource:
    """Failed ADF and Synapse runs and Functions exceptions from one workspace, windowed on ingestion time."""

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
        self._presence = TablePresence(config.services, config.adf_mode, config.table_probe_interval)
        self._synapse = (
            SynapseEnrichment(
                name, config.synapse_endpoints, credential, max_age=config.synapse_pending_max_age,
                retry_total=config.synapse_retries, timeout=config.synapse_timeout,
            )
            if "synapse" in config.services
            else None
        )

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
        if self._synapse is not None:
            self._synapse.close()

    def window(self, cursor: datetime | None, now: datetime) -> Window:
        # Re-read `overlap` behind the cursor: rows ingested late land there, and natural keys drop repeats.
        start = now - self.config.initial_lookback if cursor is None else cursor - self.config.overlap
        return Window(start=min(start, now), end=now)

    def poll(self, window: Window) -> Poll:
        warnings: list[str] = []
        present, start = self._present_tables(window, warnings)
        rows: list[dict[str, Any]] = []
        for name, template in build_queries(self.config.services, present).items():
            for result in self._read(name, template, start, window.end):
                rows.extend(result.rows)
                if result.warning:
                    warnings.append(f"{name}: {result.warning}")
        if self._synapse is not None:
            rows, enrichment_warnings = self._synapse.enrich(rows, window.end)
            warnings.extend(enrichment_warnings)
        return Poll(records=rows, cursor=window.end, warnings=warnings)

    def extract(self, raw: Any) -> Failure | None:
        table = raw.get("Type") if isinstance(raw, Mapping) else None
        return TABLE_EXTRACTORS.get(table if isinstance(table, str) else "", adf.extract_row)(raw)

    def resume_pending(self, failures: Iterable[Failure], now: datetime) -> None:
        """Stored failures still waiting for their Synapse error text, to fetch again (after a restart)."""
        if self._synapse is not None:
            self._synapse.resume(failures, now)

    @property
    def pending_enrichment(self) -> list[str]:
        """Keys of failures whose error text this source will fetch again on later polls."""
        return self._synapse.pending if self._synapse is not None else []

    def _present_tables(self, window: Window, warnings: list[str]) -> tuple[frozenset[str], datetime]:
        """The tables that hold logs (probed as needed), and where this poll starts reading."""
        asked = self._presence.to_probe(window)
        if not asked:
            self._presence.skip(window)
            return self._presence.found, window.start
        result = self._query("table_probe", probe_query(asked), window.start, window.end)
        if result.warning and not any(marker in result.warning for marker in MISSING_TABLE_MARKERS):
            warnings.append(f"table_probe: {result.warning}")
        start = self._presence.record(window, asked, tables_found(result.rows))
        log.debug("tables.probed", extra={"source": self.name, "tables": sorted(self._presence.found)})
        return self._presence.found, start

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
                    "the workspace answered 204 No Content (it holds no data): check that the diagnostic settings "
                    "of the factories, Synapse workspaces and function apps send their logs to it",
                ) from exc
            except (ServiceRequestError, ServiceResponseError) as exc:
                raise SourceError(self.name, f"cannot reach {self.config.endpoint}: {_short(exc)}") from exc
        raise AssertionError("unreachable")

    def _translate(self, exc: HttpResponseError) -> SourceError:
        """The one classifier of Log Analytics HTTP errors."""
        status = exc.status_code or 0
        message = _short(exc)
        if isinstance(exc, ClientAuthenticationError) and not status:
            # azure-identity failed before any request left: no token, so no HTTP status to judge by.
            return SourceError(
                self.name, f"cannot obtain an Azure token for Log Analytics: {message} — check azure.credential",
                retryable=False,
            )
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
            hint = (" — does a diagnostic setting send that table's category to this workspace?"
                    if "resolve table" in inner else "")
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
