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
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from poller.errors import ExtractError
from poller.extractors.cleaning import (
    CleanMessage,
    clean_message,
    failure_side,
    named_error_code,
    sql_error_number,
)
from poller.models import Failure, Kind, Service

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
MONITOR_URL = "https://adf.azure.com/en/monitoring/pipelineruns/{run_id}?factory={factory}"

_NULL_TEXTS = frozenset({"null", "NULL", "Null"})
_FACTORY_SEGMENT = "/factories/"
# ARM ids are nearly always [A-Za-z0-9._-/]: then URL-encoding is only "/" → %2F, far cheaper than quote().
_URL_PLAIN_ID = re.compile(r"[A-Za-z0-9._~/-]*")


def extract_row(row: Any, *, fallback_message: str = "") -> Failure | None:
    """Dispatch on ``Type`` (or ``$table``), else on which run-id columns the row has."""
    mapping = _mapping(row)
    table = mapping.get("Type") or mapping.get("$table")
    if table == ACTIVITY_TABLE:
        return extract_activity(mapping, fallback_message=fallback_message)
    if table == PIPELINE_TABLE:
        return extract_pipeline(mapping, fallback_message=fallback_message)
    if _text(mapping, "ActivityRunId"):
        return extract_activity(mapping, fallback_message=fallback_message)
    if _text(mapping, "RunId", "PipelineRunId"):
        return extract_pipeline(mapping, fallback_message=fallback_message)
    raise ExtractError("ADF row has no ActivityRunId, RunId or PipelineRunId")


def extract_activity(row: Any, *, fallback_message: str = "") -> Failure | None:
    """An ``ADFActivityRun`` row → an activity_run failure keyed ``adf:activity:<ActivityRunId>``."""
    mapping = _mapping(row)
    if not _is_failed(mapping):
        return None
    activity_run_id = _text(mapping, "ActivityRunId")
    if not activity_run_id:
        raise ExtractError("ADF activity row has no ActivityRunId")
    error = _error_object(mapping.get("Error"))
    message = _message(mapping, error, fallback_message)
    activity_type = _text(mapping, "ActivityType")
    if message.forwarded and activity_type in CONTAINER_ACTIVITY_TYPES:
        return None
    activity_name = _text(mapping, "ActivityName") or _text(error, "target")
    head = {
        "activity_name": activity_name,
        "activity_type": activity_type,
        "activity_run_id": activity_run_id,
    }
    return _failure(
        mapping, error, message,
        key=f"adf:activity:{activity_run_id}",
        kind=Kind.ACTIVITY_RUN,
        run_id=_text(mapping, "PipelineRunId"),
        head=head,
    )


def extract_pipeline(row: Any, *, fallback_message: str = "") -> Failure | None:
    """An ``ADFPipelineRun`` row → a pipeline_run failure keyed ``adf:pipeline:<RunId>``."""
    mapping = _mapping(row)
    if not _is_failed(mapping):
        return None
    run_id = _text(mapping, "RunId", "PipelineRunId")
    if not run_id:
        raise ExtractError("ADF pipeline row has no RunId")
    key = f"adf:pipeline:{run_id}"
    return extract_unkeyed(mapping, key, run_id=run_id, fallback_message=fallback_message)


def extract_unkeyed(
    row: Any, key: str, *, run_id: str = "", fallback_message: str = ""
) -> Failure | None:
    """A pipeline_run failure under a key the caller chose (an alert that carries no run id)."""
    mapping = _mapping(row)
    if not _is_failed(mapping):
        return None
    error = _error_object(mapping.get("Error"))
    message = _message(mapping, error, fallback_message)
    head = {"activity_name": _text(mapping, "ActivityName"), "activity_type": _text(mapping, "ActivityType")}
    return _failure(mapping, error, message, key=key, kind=Kind.PIPELINE_RUN, run_id=run_id, head=head)


def is_adf_row(row: Mapping[str, Any]) -> bool:
    """Whether a row looks like an ADF run row (by table name, resource id or ADF column names)."""
    table = row.get("Type") or row.get("$table")
    if isinstance(table, str) and table in ADF_TABLES:
        return True
    resource_id = _text(row, "_ResourceId", "ResourceId").lower()
    if resource_id and "/microsoft.datafactory/" not in resource_id:
        return False
    return any(row.get(column) for column in ("ActivityRunId", "PipelineRunId", "PipelineName"))


def factory_name(resource_id: str) -> str:
    """The factory name in an ARM id (``.../factories/<name>``), or ""."""
    index = resource_id.find(_FACTORY_SEGMENT)
    if index < 0:
        return ""
    return resource_id[index + len(_FACTORY_SEGMENT):].split("/", 1)[0]


def parse_time(value: Any, column: str) -> datetime | None:
    """A Log Analytics time (``datetime`` or ISO text, 7-digit fractions allowed) in UTC; None if empty."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ExtractError(f"{column} is not an ISO 8601 time: {value[:60]!r}") from None
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    raise ExtractError(f"{column} is not a time: {type(value).__name__}")


def _failure(
    row: Mapping[str, Any],
    error: Mapping[str, Any],
    message: CleanMessage,
    *,
    key: str,
    kind: Kind,
    run_id: str,
    head: dict[str, Any],
) -> Failure:
    resource_id = _text(row, "_ResourceId", "ResourceId").lower()
    factory = factory_name(resource_id)
    pipeline_name = _text(row, "PipelineName")
    code_column = _text(row, "ErrorCode", "ErrCode") or _text(error, "errorCode")
    text = message.text
    error_code = named_error_code(text) or _text(row, "InnerCode") or code_column
    metadata = _metadata(row, head, message, pipeline_name=pipeline_name, factory=factory, code=code_column)
    if run_id and factory:
        metadata["monitor_url"] = MONITOR_URL.format(run_id=run_id, factory=_url_encoded(resource_id))
    return Failure(
        key=key,
        service=Service.ADF.value,
        kind=kind.value,
        resource=pipeline_name or factory,
        error_message=text,
        occurred_at=_occurred_at(row),
        resource_id=resource_id,
        run_id=run_id,
        error_code=error_code,
        failure_type=_text(row, "FailureType", "ErrType") or _text(error, "failureType"),
        metadata=metadata,
        raw=row,
    )


def _metadata(
    row: Mapping[str, Any],
    head: dict[str, Any],
    message: CleanMessage,
    *,
    pipeline_name: str,
    factory: str,
    code: str,
) -> dict[str, Any]:
    text = message.text
    candidates: dict[str, Any] = {
        **head,
        "pipeline_name": pipeline_name,
        "factory": factory,
        "adf_error_code": code,
        "adf_error_meaning": ADF_ERROR_CODES.get(code),
        "operation_targets": list(message.targets),
        "parameters": _parameters(row.get("PipelineParameters") or row.get("Parameters")),
        "linked_service": _text(row, "LinkedServiceName"),
        "integration_runtime": _text(row, "EffectiveIntegrationRuntime"),
        "iteration": _iteration(row.get("ActivityIterationCount")),
        "sql_error_number": sql_error_number(text),
        "side": failure_side(text),
    }
    return {name: value for name, value in candidates.items() if value or value == 0}


def _message(row: Mapping[str, Any], error: Mapping[str, Any], fallback: str) -> CleanMessage:
    """The first non-empty message, most exact first (the contract's priority list), cleaned."""
    raw = (
        _text(error, "message", "_text")
        or _text(row, "ErrorMessage", "ErrMsg")
        or _detail_text(error)
        or _text(row, "detailedMessage", "EventMessage", "PipelineErrorMessage")
        or fallback.strip()
        or FALLBACK_MESSAGE
    )
    return clean_message(raw)


def _detail_text(error: Mapping[str, Any]) -> str:
    detailed = _text(error, "detailedMessage")
    if detailed:
        return detailed
    details = error.get("details")
    if isinstance(details, str):
        return "" if details.strip() in _NULL_TEXTS else details.strip()
    if isinstance(details, Mapping):
        return _text(details, "message")
    if isinstance(details, list):
        for item in details:
            text = _text(item, "message") if isinstance(item, Mapping) else str(item).strip()
            if text:
                return text
    return ""


def _error_object(value: Any) -> Mapping[str, Any]:
    """The ``Error`` column as a dict; text that is not JSON is kept as ``{"_text": ...}``."""
    if type(value) is not str:
        return value if isinstance(value, Mapping) else {}
    if not value or value in _NULL_TEXTS:
        return {}
    if value.lstrip().startswith("{"):
        try:
            parsed = json.loads(value)
        except ValueError:
            return {"_text": value}
        if isinstance(parsed, dict):
            return parsed
    return {"_text": value}


def _parameters(value: Any) -> Any:
    """Pipeline parameters as a dict; text that is not a JSON object is kept as it came."""
    if type(value) is not str:
        return dict(value) if isinstance(value, Mapping) else None
    if not value.strip() or value in _NULL_TEXTS:
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    return parsed if isinstance(parsed, dict) else value


def _url_encoded(text: str) -> str:
    return text.replace("/", "%2F") if _URL_PLAIN_ID.fullmatch(text) else quote(text, safe="")


def _iteration(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _occurred_at(row: Mapping[str, Any]) -> datetime:
    end = parse_time(row.get("End"), "End")
    if end is not None and end.year > END_SENTINEL_YEAR:
        return end
    for column in ("TimeGenerated", "Start"):
        value = parse_time(row.get(column), column)
        if value is not None:
            return value
    raise ExtractError("ADF row has no End, TimeGenerated or Start time")


def _is_failed(row: Mapping[str, Any]) -> bool:
    status = row.get("Status")
    return not status or status == FAILED or (isinstance(status, str) and status.strip().lower() == "failed")


def _text(row: Mapping[str, Any], *columns: str) -> str:
    """The first of ``columns`` that holds a non-empty value other than the literal "null", as text."""
    for column in columns:
        value = row.get(column)
        if value is None or value == "":
            continue
        text = (value if type(value) is str else str(value)).strip()
        if text and text not in _NULL_TEXTS:
            return text
    return ""


def _mapping(row: Any) -> Mapping[str, Any]:
    if type(row) is not dict and not isinstance(row, Mapping):
        raise ExtractError(f"an ADF row must be a JSON object, not {type(row).__name__}")
    return row
