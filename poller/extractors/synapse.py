"""Azure Synapse pipeline rules: a ``SynapseIntegrationActivityRuns`` / ``…PipelineRuns`` row → one Failure, or None.

Synapse pipelines run the ADF engine, so the ADF rules apply unchanged (``poller.extractors.adf`` with the
:data:`SYNAPSE` flavor): one failure per failed leaf activity run, ``synapse:activity:<ActivityRunId>``; a
failed pipeline run with no failed activity of its own, ``synapse:pipeline:<RunId>``; containers that only
forward a child's error are skipped; ``error_code`` is the named ``ErrorCode=`` inside the message, else the
code column (kept as ``metadata["synapse_error_code"]``).

What differs is the error text. The documented tables have no error columns (reference §2.2); where a workspace
has them (``Error``, ``ErrorCode``, ``ErrorMessage``, ``FailureType``) they are read, otherwise the source asks
the workspace's pipeline-run API (``poller.sources.synapse_enrichment``) and writes what it got into those same
columns, with ``ErrorSource`` saying where the text came from. The enrichment marks what it could not do:

* ``ErrorPending`` (the reason) — the API could not be read this time: the failure lands with
  :data:`PENDING_MESSAGE`, ``metadata["error_pending"] = True`` and the reason, and the source fetches again on
  later ticks;
* ``ErrorUnavailable`` (the reason) — there is nothing to fetch from (no endpoint configured for the workspace):
  the failure says the logs hold no error text.

A container activity (ForEach, Until, If, Switch, Execute Pipeline) without any error text is skipped like one
whose error only forwards a child's: its failed child has a row of its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from poller.extractors import alerts
from poller.extractors.adf import CONTAINER_ACTIVITY_TYPES, RunFlavor
from poller.extractors.adf import extract_row as extract_run_row
from poller.extractors.adf import extract_unkeyed as extract_unkeyed_run
from poller.extractors.columns import json_object, mapping, text
from poller.models import Failure, Service

ACTIVITY_TABLE = "SynapseIntegrationActivityRuns"
PIPELINE_TABLE = "SynapseIntegrationPipelineRuns"
SYNAPSE_TABLES = frozenset({ACTIVITY_TABLE, PIPELINE_TABLE})
WORKSPACE_TYPE = "microsoft.synapse/workspaces"

SYNAPSE = RunFlavor(
    service=Service.SYNAPSE,
    label="Synapse",
    key_prefix="synapse",
    segment="/workspaces/",
    owner_key="workspace",
    code_key="synapse_error_code",
    monitor_url="https://web.azuresynapse.net/en/monitoring/pipelineruns/{run_id}?workspace={resource_id}",
)

#: The message of a failure whose error text could not be read yet; fixed, so that pending failures of one
#: pipeline group together until the text arrives.
PENDING_MESSAGE = "Error text not available yet: the Synapse logs carry none and the workspace API could not be read"
#: The message when there is no error text and nowhere to fetch it from.
NO_TEXT_MESSAGE = "Activity failed; the Synapse logs carry no error text"

#: Columns the enrichment adds to a row (``poller.sources.synapse_enrichment``).
ERROR_SOURCE = "ErrorSource"
ERROR_PENDING = "ErrorPending"
ERROR_UNAVAILABLE = "ErrorUnavailable"


def extract_row(row: Any, *, fallback_message: str = "") -> Failure | None:
    """One Synapse row (or alert row) → its failure; see the module docstring for the error-text rules."""
    given = mapping(row, "a Synapse")
    if has_error_text(given):
        return _annotated(extract_run_row(given, fallback_message=fallback_message, flavor=SYNAPSE), given)
    if text(given, "ActivityRunId") and text(given, "ActivityType") in CONTAINER_ACTIVITY_TYPES:
        return None
    fallback = _fallback(given, fallback_message)
    return _annotated(extract_run_row(given, fallback_message=fallback, flavor=SYNAPSE), given)


def extract_unkeyed(row: Mapping[str, Any], key: str, fallback_message: str = "") -> Failure | None:
    """A pipeline_run failure under a key the caller chose (an alert without run id)."""
    return extract_unkeyed_run(row, key, fallback_message=fallback_message, flavor=SYNAPSE)


def has_error_text(row: Mapping[str, Any]) -> bool:
    """Whether the row itself says what went wrong (an error object, message or detailed message)."""
    error = json_object(row.get("Error"))
    return bool(text(error, "message", "_text") or text(row, "ErrorMessage", "PipelineErrorMessage"))


def is_synapse_row(row: Mapping[str, Any]) -> bool:
    """Whether a row is a Synapse run row (by table, or by a workspace resource id with run columns)."""
    table = row.get("Type") or row.get("$table")
    if isinstance(table, str) and table in SYNAPSE_TABLES:
        return True
    resource_id = text(row, "_ResourceId", "ResourceId").lower()
    runs = any(row.get(column) for column in ("ActivityRunId", "PipelineRunId", "RunId", "PipelineName"))
    return f"/{WORKSPACE_TYPE}/" in resource_id and runs


def is_synapse_alert(alert: alerts.Alert) -> bool:
    """Whether an alert is about Synapse pipelines though it carries no Synapse row."""
    return alert.target_type == WORKSPACE_TYPE or any(table in alert.search_query for table in SYNAPSE_TABLES)


def extract_alert(payload: Any) -> list[Failure]:
    """The Synapse failures an alert reports (``poller.extractors.alerts`` rules, Synapse rows)."""
    return alerts.extract_alert_with(payload, SYNAPSE_ALERTS)


def _fallback(row: Mapping[str, Any], fallback_message: str) -> str:
    if text(row, ERROR_PENDING):
        return PENDING_MESSAGE
    if text(row, "ActivityRunId"):
        return fallback_message or NO_TEXT_MESSAGE
    return fallback_message


def _annotated(failure: Failure | None, row: Mapping[str, Any]) -> Failure | None:
    """The failure with what the enrichment said about its error text."""
    if failure is None:
        return None
    extra: dict[str, Any] = {}
    if text(row, ERROR_SOURCE):
        extra["error_source"] = text(row, ERROR_SOURCE)
    if not has_error_text(row):
        if text(row, ERROR_PENDING):
            extra["error_pending"] = True
            extra["error_fetch_error"] = text(row, ERROR_PENDING)
        elif text(row, ERROR_UNAVAILABLE):
            extra["error_unavailable"] = text(row, ERROR_UNAVAILABLE)
    if not extra:
        return failure
    return dataclasses.replace(failure, metadata={**failure.metadata, **extra})


def _alert_row(row: Mapping[str, Any], fallback: str) -> Failure | None:
    return extract_row(row, fallback_message=fallback)


def _is_alert_row(row: Mapping[str, Any]) -> bool:
    if is_synapse_row(row):
        return True
    # Alert dimensions rarely carry a table or resource id: run columns on a Synapse alert are Synapse's.
    return not text(row, "_ResourceId", "ResourceId") and any(
        row.get(column) for column in ("ActivityRunId", "PipelineRunId", "RunId", "PipelineName")
    )


SYNAPSE_ALERTS = alerts.AlertRules(
    service=Service.SYNAPSE.value,
    label="Synapse",
    target_type=WORKSPACE_TYPE,
    target_noun="a Synapse workspace",
    segment="/workspaces/",
    is_row=_is_alert_row,
    is_service_alert=is_synapse_alert,
    run_id_columns=("ActivityRunId", "RunId", "PipelineRunId"),
    extract_row=_alert_row,
    extract_unkeyed=extract_unkeyed,
)

