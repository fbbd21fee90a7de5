"""Synapse error text from the workspace's pipeline-run API, for failed runs whose logs carry none.

The documented ``SynapseIntegrationActivityRuns`` has no error columns (reference §2.2), so before extraction the
Log Analytics source hands its Synapse rows to :class:`SynapseEnrichment`. For each failed run whose rows lack
error text it asks the workspace's dev endpoint (``synapse_endpoints``) for the run's failed activity runs —
``ArtifactsClient.pipeline_run.query_activity_runs`` of azure-synapse-artifacts, ``POST
{endpoint}/pipelines/{name}/pipelineruns/{runId}/queryActivityruns`` — and writes the error into the row's own
error columns (``Error``, ``ErrorCode``, ``FailureType``; for a pipeline row, the failed leaf activity's), with
``ErrorSource`` = ``synapse_api``. ``poller.extractors.synapse`` then reads it like logged error text.

When the endpoint cannot be read (down, throttled beyond its retries, access denied) the rows get
``ErrorPending`` = the reason: their failures land now, saying so, and the runs stay on a pending list that
every later poll retries for ``synapse_pending_max_age``. A retry that succeeds re-emits the enriched row under
the same natural key. Rows of a workspace with no configured endpoint get ``ErrorUnavailable`` instead: nothing
will change by asking again. Successful answers are remembered per run, so the overlap window's re-reads do not
ask again; that memory, and the pending list, are only a cache of what the store also holds (``resume``).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.synapse.artifacts import ArtifactsClient
from azure.synapse.artifacts.models import RunFilterParameters, RunQueryFilter

from poller.extractors.adf import CONTAINER_ACTIVITY_TYPES, resource_name
from poller.extractors.cleaning import clean_message
from poller.extractors.columns import json_object, parse_time, text
from poller.extractors.synapse import (
    ERROR_PENDING,
    ERROR_SOURCE,
    ERROR_UNAVAILABLE,
    SYNAPSE_TABLES,
    has_error_text,
)
from poller.models import Failure

log = logging.getLogger("poller.sources.synapse_enrichment")

API_SOURCE = "synapse_api"
#: The API keeps runs for 45 days; the query's update window must cover the run, with slack either side.
QUERY_SLACK = timedelta(days=1)
#: Runs whose answer is remembered, so that re-reads of the overlap window do not ask again.
ANSWERS_KEPT = 2048

Answer = list[dict[str, Any]]


class SynapseUnavailable(Exception):
    """The workspace API could not be read this time; ``reason`` says why, on one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SynapseRunsClient:
    """The failed activity runs of one pipeline run, from one workspace endpoint (azure-synapse-artifacts)."""

    def __init__(self, endpoint: str, credential: TokenCredential, *, retry_total: int, timeout: timedelta) -> None:
        self.endpoint = endpoint
        seconds = int(timeout.total_seconds())
        self._client = ArtifactsClient(
            credential, endpoint, retry_total=retry_total, connection_timeout=seconds, read_timeout=seconds
        )

    def failed_activities(self, pipeline_name: str, run_id: str, since: datetime, until: datetime) -> Answer:
        """Every failed activity run of the run, each as ``{activity_run_id, activity_name, …, error}``."""
        token: str | None = None
        found: Answer = []
        while True:
            filters = RunFilterParameters(
                last_updated_after=since, last_updated_before=until, continuation_token=token,
                filters=[RunQueryFilter(operand="Status", operator="Equals", values=["Failed"])],
            )
            try:
                page = self._client.pipeline_run.query_activity_runs(pipeline_name, run_id, filters)
            except HttpResponseError as exc:
                raise SynapseUnavailable(f"{self.endpoint} answered HTTP {exc.status_code}: {_short(exc)}") from exc
            except (ServiceRequestError, ServiceResponseError) as exc:
                raise SynapseUnavailable(f"cannot reach {self.endpoint}: {_short(exc)}") from exc
            found.extend(_activity(run) for run in page.value or [])
            token = page.continuation_token
            if not token:
                return found

    def close(self) -> None:
        self._client.close()


@dataclass(slots=True)
class _Pending:
    row: dict[str, Any]
    since: datetime


class SynapseEnrichment:
    """Fills Synapse rows' missing error text from the workspace APIs; keeps what it could not fill pending."""

    def __init__(
        self,
        source: str,
        endpoints: Mapping[str, str],
        credential: TokenCredential,
        *,
        max_age: timedelta,
        retry_total: int = 2,
        timeout: timedelta = timedelta(seconds=30),
    ) -> None:
        self.source = source
        self.endpoints = {name.lower(): url for name, url in endpoints.items()}
        self.max_age = max_age
        self._credential = credential
        self._retry_total = retry_total
        self._timeout = timeout
        self._clients: dict[str, SynapseRunsClient] = {}
        self._answers: OrderedDict[tuple[str, str], Answer] = OrderedDict()
        self._pending: dict[str, _Pending] = {}

    @property
    def pending(self) -> list[str]:
        """Keys (``synapse:activity:<id>`` …) of the failures whose error text is still to be fetched."""
        return sorted(self._pending)

    def enrich(self, rows: list[dict[str, Any]], now: datetime) -> tuple[list[dict[str, Any]], list[str]]:
        """The rows with Synapse error text filled in where it could be, plus pending runs now enriched."""
        out: list[dict[str, Any]] = []
        needing: list[dict[str, Any]] = []
        for row in rows:
            (needing if _needs_text(row) else out).append(row)
        fresh = {_key(row) for row in needing}
        retried = [p.row for key, p in self._pending.items() if key not in fresh and p.since >= now - self.max_age]
        self._pending = {key: p for key, p in self._pending.items() if p.since >= now - self.max_age}
        warnings: list[str] = []
        for group in _by_run([*needing, *retried]):
            done = self._fill(group, now, warnings)
            out.extend(row for row in done if _key(row) in fresh or not row.get(ERROR_PENDING))
        return out, warnings

    def resume(self, failures: Iterable[Failure], now: datetime) -> None:
        """Put stored failures still marked ``error_pending`` back on the pending list (after a restart)."""
        for failure in failures:
            if failure.metadata.get("error_pending") and isinstance(failure.raw, Mapping):
                row = {k: v for k, v in failure.raw.items() if k not in (ERROR_PENDING, ERROR_SOURCE)}
                self._pending[_key(row)] = _Pending(row, failure.detected_at or now)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def _fill(self, rows: list[dict[str, Any]], now: datetime, warnings: list[str]) -> list[dict[str, Any]]:
        workspace, pipeline, run_id = _run_of(rows[0])
        endpoint = self.endpoints.get(workspace)
        if endpoint is None:
            reason = f"no synapse_endpoints entry for workspace {workspace or '(unknown)'}"
            return [{**row, ERROR_UNAVAILABLE: reason} for row in rows]
        try:
            answer = self._answer(endpoint, pipeline, run_id, _since(rows) or now - self.max_age, now)
        except SynapseUnavailable as exc:
            warnings.append(f"synapse error text for run {run_id} pending: {exc.reason}")
            for row in rows:
                self._pending.setdefault(_key(row), _Pending(_bare(row), now))
            return [{**row, ERROR_PENDING: exc.reason} for row in rows]
        for row in rows:
            self._pending.pop(_key(row), None)
        return [_with_answer(row, answer) for row in rows]

    def _answer(self, endpoint: str, pipeline: str, run_id: str, since: datetime, now: datetime) -> Answer:
        remembered = self._answers.get((endpoint, run_id))
        if remembered is not None:
            return remembered
        client = self._clients.get(endpoint)
        if client is None:
            client = SynapseRunsClient(endpoint, self._credential, retry_total=self._retry_total, timeout=self._timeout)
            self._clients[endpoint] = client
        try:
            answer = client.failed_activities(pipeline, run_id, since - QUERY_SLACK, now + QUERY_SLACK)
        except (TypeError, ValueError) as exc:  # the SDK refuses names its path pattern does not allow
            raise SynapseUnavailable(f"cannot ask about pipeline {pipeline!r}: {exc}") from exc
        self._answers[(endpoint, run_id)] = answer
        while len(self._answers) > ANSWERS_KEPT:
            self._answers.popitem(last=False)
        log.info("synapse.enriched", extra={"source": self.source, "run_id": run_id, "activities": len(answer)})
        return answer


def _with_answer(row: dict[str, Any], answer: Answer) -> dict[str, Any]:
    """The row with the API's error for it: its own activity's, or (a pipeline row) the failed leaf's."""
    activity_run_id = text(row, "ActivityRunId").lower()
    if activity_run_id:
        match = next((a for a in answer if a["activity_run_id"].lower() == activity_run_id), None)
    else:
        match = _leaf(answer)
    if match is None or not text(match["error"], "message"):
        return {**row, ERROR_SOURCE: API_SOURCE, ERROR_UNAVAILABLE: "the workspace API holds no error for this run"}
    error = match["error"]
    filled = {**row, ERROR_SOURCE: API_SOURCE, "ErrorCode": text(error, "errorCode"),
              "FailureType": text(error, "failureType")}
    if activity_run_id:
        filled["Error"] = dict(error)
    else:
        filled.update(ErrorMessage=text(error, "message"), ActivityName=match["activity_name"],
                      ActivityType=match["activity_type"])
    return filled


def _leaf(answer: Answer) -> dict[str, Any] | None:
    """The failed activity that caused a pipeline's failure: not a container only forwarding, earliest end."""
    leaves = [
        a for a in answer
        if a["activity_type"] not in CONTAINER_ACTIVITY_TYPES
        or not clean_message(text(a["error"], "message")).forwarded
    ]
    return min(leaves, key=lambda a: (a["end"] or "", a["activity_run_id"]), default=None)


def _activity(run: Any) -> dict[str, Any]:
    end = getattr(run, "activity_run_end", None)
    return {
        "activity_run_id": str(run.activity_run_id or ""),
        "activity_name": str(run.activity_name or ""),
        "activity_type": str(run.activity_type or ""),
        "end": end.isoformat() if end else "",
        "error": dict(json_object(run.error)),
    }


def _needs_text(row: Mapping[str, Any]) -> bool:
    return row.get("Type") in SYNAPSE_TABLES and not has_error_text(row)


def _by_run(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(_run_of(row), []).append(row)
    return list(groups.values())


def _run_of(row: Mapping[str, Any]) -> tuple[str, str, str]:
    workspace = resource_name(text(row, "_ResourceId", "ResourceId").lower(), "/workspaces/")
    return workspace, text(row, "PipelineName"), text(row, "PipelineRunId", "RunId").lower()


def _key(row: Mapping[str, Any]) -> str:
    activity = text(row, "ActivityRunId").lower()
    return f"synapse:activity:{activity}" if activity else f"synapse:pipeline:{text(row, 'RunId').lower()}"


def _since(rows: list[dict[str, Any]]) -> datetime | None:
    times = [parse_time(row.get(column), column) for row in rows for column in ("Start", "TimeGenerated")]
    return min((t for t in times if t is not None), default=None)


def _bare(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in (ERROR_PENDING, ERROR_SOURCE, ERROR_UNAVAILABLE)}


def _short(exc: Exception) -> str:
    message = str(getattr(exc, "message", "") or exc).strip()
    return message.splitlines()[0][:300] if message else exc.__class__.__name__
