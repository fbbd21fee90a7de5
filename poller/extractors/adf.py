"""Azure Data Factory rules: one ``ADFActivityRun`` / ``ADFPipelineRun`` row → one Failure, or None.

A row is a Log Analytics row as a dict (column → value). Times may be ``datetime`` objects (the SDK) or ISO
strings (saved JSON); ``Error`` and ``Parameters`` may be JSON text or already dicts. The same rules read the
rows that alerts carry (``poller.extractors.alerts``).

* None — the row is no failure of its own: its Status is not ``Failed`` (start heartbeats, in-progress and
  succeeded records), or it is a container activity whose error only forwards an inner activity's failure.
  A row without a Status column is taken as failed (alert dimensions carry none).
* ExtractError — the row cannot be read: not a dict, no run id, a time that does not parse.

DESIGN §5: ``run_id`` is the pipeline run id; ``error_code`` is the first named ``ErrorCode=<Name>`` inside
the message, else the code column; the code column itself (usually numeric, "2200") is kept as
``metadata["adf_error_code"]``.

Synapse pipelines run the same engine and log the same shapes: ``poller.extractors.synapse`` applies these rules
with the Synapse :class:`RunFlavor` (its key prefix, workspace segment and monitoring link). ``AzureDiagnostics``
rows (legacy mode) are first mapped to the resource-specific shape by ``poller.extractors.adf_diagnostics``, so a
run gives the same Failure whichever table it was read from.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from poller.errors import ExtractError
from poller.extractors import adf_diagnostics
from poller.extractors.cleaning import (
    CleanMessage,
    clean_message,
    failure_side,
    named_error_code,
    sql_error_number,
)
from poller.extractors.columns import NULL_TEXTS, as_int, json_object, parse_time, run_id, text
from poller.models import Failure, Kind, Service, loads

ACTIVITY_TABLE = "ADFActivityRun"
PIPELINE_TABLE = "ADFPipelineRun"
ADF_TABLES = frozenset({ACTIVITY_TABLE, PIPELINE_TABLE})

#: Activities that run other activities. When a child fails, the container fails with a message that only
#: forwards the child's error; the child's own row is the failure, so the container's row is skipped.
CONTAINER_ACTIVITY_TYPES = frozenset({"ForEach", "Until", "IfCondition", "Switch", "ExecutePipeline"})

#: Numeric ADF error codes and what ADF means by them (Microsoft's troubleshooting guides, reference §9).
ADF_ERROR_CODES: dict[str, str] = {
    "2200": "Copy activity failure; the cause is the ErrorCode=<Name> inside the message",
    "2103": "A required property of the activity is missing",
    "2104": "A property of the activity has the wrong type",
    "2105": "A property of the activity is not valid JSON",
    "2106": "The storage connection string is invalid",
    "2108": "Error calling the endpoint (network, DNS, certificate, timeout or an HTTP error status)",
    "2128": "No response from the endpoint (network, DNS, certificate or timeout)",
    "2300": "HDInsight job submission failed",
    "2302": "Hadoop job failed",
    "2303": "Hadoop job failed with a transient exit code; retry",
    "3200": "Databricks refused the access token (HTTP 403)",
    "3201": "Databricks activity is misconfigured (notebook path, cluster, ...)",
    "3202": "Databricks job-creation rate limit exceeded; retry later",
    "3203": "Databricks cluster is terminated and not accepting jobs",
    "3204": "Databricks job execution failed",
    "3208": "Error while sending the request to Databricks; a retry usually works",
    "3603": "Azure Function response is not a valid JObject",
    "3608": "Azure Function call returned an error status",
    "4125": "Azure Machine Learning server error; retry later",
}

FAILED = "Failed"
#: ADF writes End = 1601-01-01T00:00:00Z while a run has not ended.
END_SENTINEL_YEAR = 1601
FALLBACK_MESSAGE = "Pipeline failed"

# ARM ids are nearly always [A-Za-z0-9._-/]: then URL-encoding is only "/" → %2F, far cheaper than quote().
_URL_PLAIN_ID = re.compile(r"[A-Za-z0-9._~/-]*")


@dataclass(frozen=True, slots=True)
class RunFlavor:
    """What differs between the services that log ADF-engine runs: names, keys and links."""

    service: Service
    label: str  # how errors name the service's rows: "ADF", "Synapse"
    key_prefix: str  # adf:activity:<id>, synapse:pipeline:<id>
    segment: str  # the ARM id segment that names the owning resource
    owner_key: str  # metadata key of that resource's name: "factory", "workspace"
    code_key: str  # metadata key of the (numeric) code column
    monitor_url: str  # {run_id}, {resource_id} (URL-encoded ARM id)


ADF = RunFlavor(
    service=Service.ADF,
    label="ADF",
    key_prefix="adf",
    segment="/factories/",
    owner_key="factory",
    code_key="adf_error_code",
    monitor_url="https://adf.azure.com/en/monitoring/pipelineruns/{run_id}?factory={resource_id}",
)


def extract_row(row: Any, *, fallback_message: str = "", flavor: RunFlavor = ADF) -> Failure | None:
    """Dispatch on ``Type`` (or ``$table``), else on which run-id columns the row has."""
    given = _mapping(row, flavor)
    table = given.get("Type") or given.get("$table")
    if table == adf_diagnostics.TABLE:
        return _from_diagnostics(given, fallback_message)
    if table in (ACTIVITY_TABLE, "SynapseIntegrationActivityRuns"):
        return extract_activity(given, fallback_message=fallback_message, flavor=flavor)
    if table in (PIPELINE_TABLE, "SynapseIntegrationPipelineRuns"):
        return extract_pipeline(given, fallback_message=fallback_message, flavor=flavor)
    if text(given, "ActivityRunId"):
        return extract_activity(given, fallback_message=fallback_message, flavor=flavor)
    if text(given, "RunId", "PipelineRunId"):
        return extract_pipeline(given, fallback_message=fallback_message, flavor=flavor)
    raise ExtractError(f"{flavor.label} row has no ActivityRunId, RunId or PipelineRunId")


def extract_activity(row: Any, *, fallback_message: str = "", flavor: RunFlavor = ADF) -> Failure | None:
    """An activity-run row → an activity_run failure keyed ``<prefix>:activity:<ActivityRunId>``."""
    given = _mapping(row, flavor)
    if not _is_failed(given):
        return None
    activity_run_id = run_id(text(given, "ActivityRunId"))
    if not activity_run_id:
        raise ExtractError(f"{flavor.label} activity row has no ActivityRunId")
    error = json_object(given.get("Error"))
    message = _message(given, error, fallback_message)
    activity_type = text(given, "ActivityType")
    if message.forwarded and activity_type in CONTAINER_ACTIVITY_TYPES:
        return None
    head = {
        "activity_name": text(given, "ActivityName") or text(error, "target"),
        "activity_type": activity_type,
        "activity_run_id": activity_run_id,
    }
    return _failure(
        given, error, message,
        key=f"{flavor.key_prefix}:activity:{activity_run_id}",
        kind=Kind.ACTIVITY_RUN,
        run_id=run_id(text(given, "PipelineRunId")),
        head=head,
        flavor=flavor,
    )


def extract_pipeline(row: Any, *, fallback_message: str = "", flavor: RunFlavor = ADF) -> Failure | None:
    """A pipeline-run row → a pipeline_run failure keyed ``<prefix>:pipeline:<RunId>``."""
    given = _mapping(row, flavor)
    if not _is_failed(given):
        return None
    pipeline_run_id = run_id(text(given, "RunId", "PipelineRunId"))
    if not pipeline_run_id:
        raise ExtractError(f"{flavor.label} pipeline row has no RunId")
    key = f"{flavor.key_prefix}:pipeline:{pipeline_run_id}"
    return extract_unkeyed(given, key, run_id=pipeline_run_id, fallback_message=fallback_message, flavor=flavor)


def extract_unkeyed(
    row: Any, key: str, *, run_id: str = "", fallback_message: str = "", flavor: RunFlavor = ADF
) -> Failure | None:
    """A pipeline_run failure under a key the caller chose (an alert that carries no run id)."""
    given = _mapping(row, flavor)
    if not _is_failed(given):
        return None
    error = json_object(given.get("Error"))
    message = _message(given, error, fallback_message)
    head = {"activity_name": text(given, "ActivityName"), "activity_type": text(given, "ActivityType")}
    return _failure(
        given, error, message, key=key, kind=Kind.PIPELINE_RUN, run_id=run_id, head=head, flavor=flavor
    )


def is_adf_row(row: Mapping[str, Any]) -> bool:
    """Whether a row looks like an ADF run row (by table name, resource id or ADF column names)."""
    table = row.get("Type") or row.get("$table")
    if isinstance(table, str) and table in ADF_TABLES:
        return True
    if table == adf_diagnostics.TABLE:
        return adf_diagnostics.is_adf(row)
    resource_id = text(row, "_ResourceId", "ResourceId").lower()
    if resource_id and "/microsoft.datafactory/" not in resource_id:
        return False
    return any(row.get(column) for column in ("ActivityRunId", "PipelineRunId", "PipelineName"))


def factory_name(resource_id: str) -> str:
    """The factory name in an ARM id (``.../factories/<name>``), or ""."""
    return resource_name(resource_id, ADF.segment)


def resource_name(resource_id: str, segment: str) -> str:
    """The name after ``segment`` in an ARM id (``.../workspaces/<name>``), or ""."""
    index = resource_id.find(segment)
    if index < 0:
        return ""
    return resource_id[index + len(segment):].split("/", 1)[0]


def _from_diagnostics(row: Mapping[str, Any], fallback_message: str) -> Failure | None:
    """An AzureDiagnostics row, read as the resource-specific row it stands for; ``raw`` stays the row given."""
    shaped = adf_diagnostics.to_resource_specific(row)
    if shaped.get("Type") == ACTIVITY_TABLE:
        failure = extract_activity(shaped, fallback_message=fallback_message)
    else:
        failure = extract_pipeline(shaped, fallback_message=fallback_message)
    return dataclasses.replace(failure, raw=row) if failure is not None else None


def _failure(
    row: Mapping[str, Any],
    error: Mapping[str, Any],
    message: CleanMessage,
    *,
    key: str,
    kind: Kind,
    run_id: str,
    head: dict[str, Any],
    flavor: RunFlavor,
) -> Failure:
    resource_id = text(row, "_ResourceId", "ResourceId").lower()
    owner = resource_name(resource_id, flavor.segment)
    pipeline_name = text(row, "PipelineName")
    code_column = text(row, "ErrorCode", "ErrCode") or text(error, "errorCode")
    error_code = named_error_code(message.text) or text(row, "InnerCode") or code_column
    metadata = _metadata(row, head, message, pipeline_name=pipeline_name, owner=owner, code=code_column, flavor=flavor)
    if run_id and owner:
        metadata["monitor_url"] = flavor.monitor_url.format(run_id=run_id, resource_id=_url_encoded(resource_id))
    return Failure(
        key=key,
        service=flavor.service.value,
        kind=kind.value,
        resource=pipeline_name or owner,
        error_message=message.text,
        occurred_at=_occurred_at(row, flavor),
        resource_id=resource_id,
        run_id=run_id,
        error_code=error_code,
        failure_type=text(row, "FailureType", "ErrType") or text(error, "failureType"),
        metadata=metadata,
        raw=row,
    )


def _metadata(
    row: Mapping[str, Any],
    head: dict[str, Any],
    message: CleanMessage,
    *,
    pipeline_name: str,
    owner: str,
    code: str,
    flavor: RunFlavor,
) -> dict[str, Any]:
    candidates: dict[str, Any] = {
        **head,
        "pipeline_name": pipeline_name,
        flavor.owner_key: owner,
        flavor.code_key: code,
        f"{flavor.key_prefix}_error_meaning": ADF_ERROR_CODES.get(code),
        "operation_targets": list(message.targets),
        "parameters": _parameters(row.get("PipelineParameters") or row.get("Parameters")),
        "linked_service": text(row, "LinkedServiceName"),
        "integration_runtime": text(row, "EffectiveIntegrationRuntime"),
        "iteration": as_int(row.get("ActivityIterationCount")),
        "sql_error_number": sql_error_number(message.text),
        "side": failure_side(message.text),
    }
    return {name: value for name, value in candidates.items() if value or value == 0}


def _message(row: Mapping[str, Any], error: Mapping[str, Any], fallback: str) -> CleanMessage:
    """The first non-empty message, most exact first (the contract's priority list), cleaned."""
    raw = (
        text(error, "message", "_text")
        or text(row, "ErrorMessage", "ErrMsg")
        or _detail_text(error)
        or text(row, "detailedMessage", "EventMessage", "PipelineErrorMessage")
        or fallback.strip()
        or FALLBACK_MESSAGE
    )
    return clean_message(raw)


def _detail_text(error: Mapping[str, Any]) -> str:
    detailed = text(error, "detailedMessage")
    if detailed:
        return detailed
    details = error.get("details")
    if isinstance(details, str):
        return "" if details.strip() in NULL_TEXTS else details.strip()
    if isinstance(details, Mapping):
        return text(details, "message")
    if isinstance(details, list):
        for item in details:
            found = text(item, "message") if isinstance(item, Mapping) else str(item).strip()
            if found:
                return found
    return ""


def _parameters(value: Any) -> Any:
    """Pipeline parameters as a dict; text that is not a JSON object is kept as it came."""
    if type(value) is not str:
        return dict(value) if isinstance(value, Mapping) else None
    if not value.strip() or value in NULL_TEXTS:
        return None
    try:
        parsed = loads(value)
    except ValueError:
        return value
    return parsed if isinstance(parsed, dict) else value


def _url_encoded(value: str) -> str:
    return value.replace("/", "%2F") if _URL_PLAIN_ID.fullmatch(value) else quote(value, safe="")


def _occurred_at(row: Mapping[str, Any], flavor: RunFlavor) -> datetime:
    end = parse_time(row.get("End"), "End")
    if end is not None and end.year > END_SENTINEL_YEAR:
        return end
    for column in ("TimeGenerated", "Start"):
        value = parse_time(row.get(column), column)
        if value is not None:
            return value
    raise ExtractError(f"{flavor.label} row has no End, TimeGenerated or Start time")


def _is_failed(row: Mapping[str, Any]) -> bool:
    status = row.get("Status")
    return not status or status == FAILED or (isinstance(status, str) and status.strip().lower() == "failed")


def _mapping(row: Any, flavor: RunFlavor) -> Mapping[str, Any]:
    if type(row) is not dict and not isinstance(row, Mapping):
        raise ExtractError(f"{flavor.label} rows must be JSON objects, not {type(row).__name__}")
    return row


__all__ = [
    "ADF", "ADF_TABLES", "CONTAINER_ACTIVITY_TYPES", "RunFlavor", "extract_activity", "extract_pipeline",
    "extract_row", "extract_unkeyed", "factory_name", "is_adf_row", "parse_time", "resource_name",
]
