"""Azure Monitor alert payloads → rows → a service's row rules (ADF here; Synapse and Functions bring their own
:class:`AlertRules`). The payload shapes are read by ``poller.extractors.alert_payloads`` (reference §7).

Rules and judgement calls (ADF; the other services' rules follow the same pattern):

* A row with an ADF run id gives the failure its table row would give (same key). Dimensions that name
  a pipeline run but no ActivityRunId (the usual split: PipelineName, PipelineRunId, ActivityName,
  ErrorMessage …) give the pipeline run's failure, ``adf:pipeline:<PipelineRunId>``, with the activity in
  metadata.
* An ADF alert without any run id (metric alerts; log alerts without dimensions) gives one pipeline_run
  failure keyed ``adf:alert:<alertId or originAlertId>``: resource = the ``Name``/``PipelineName``
  dimension or the factory, message = an error field of the alert, else its description, else
  "Pipeline failed"; window, rule and severity go to metadata.
* An alert counts as ADF when a row is an ADF row, its target is a data factory, its metric namespace is
  ``Microsoft.DataFactory/factories`` or its query reads ``ADFPipelineRun``/``ADFActivityRun``.
* A ``Resolved`` alert is no new failure: it yields [].
* ``alertContext.properties`` and ``customProperties`` are merged into ``metadata["alert_properties"]``; keys
  that name ADF columns (PipelineName, ErrorMessage, …, case-insensitive) fill gaps in the rows.
* Alerts on other resources are not ADF's: ``poller.extractors.detect_service`` names the service of a
  Synapse, Functions or Databricks target, and refuses anything else (VMs, storage …) with an ExtractError.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from poller.errors import ExtractError
from poller.extractors.adf import ADF_TABLES, extract_row, extract_unkeyed, is_adf_row, resource_name
from poller.extractors.alert_payloads import (
    APP_INSIGHTS_TYPE,
    COMMON_SCHEMA,
    FACTORY_TYPE,
    LEGACY_APP_INSIGHTS_SCHEMA,
    RESOLVED,
    TARGET_SERVICES,
    WORKSPACE_TYPE,
    Alert,
    arm_type,
    is_alert,
    read_alert,
    rows_from_tables,
)
from poller.models import Failure

#: ADF metrics and the column their ``Name`` dimension stands for (ADF monitor-metrics-alerts doc).
ADF_METRIC_NAME_DIMENSION: dict[str, str] = {
    "PipelineFailedRuns": "PipelineName",
    "PipelineCancelledRuns": "PipelineName",
    "PipelineElapsedTimeRuns": "PipelineName",
    "ActivityFailedRuns": "ActivityName",
    "ActivityCancelledRuns": "ActivityName",
    "TriggerFailedRuns": "TriggerName",
    "TriggerCancelledRuns": "TriggerName",
}


def is_adf_alert(alert: Alert) -> bool:
    """Whether the alert is about a data factory even though it carries no ADF row."""
    if alert.target_type == FACTORY_TYPE or alert.metric_namespace.lower() == FACTORY_TYPE:
        return True
    return any(table in alert.search_query for table in ADF_TABLES)


@dataclass(frozen=True, slots=True)
class AlertRules:
    """How one service reads the rows of an alert: which rows are its own, how they key, and the row rules."""

    service: str
    label: str  # "ADF", in "alert carries no ADF rows"
    target_type: str  # the ARM type an alert on the service targets
    target_noun: str  # "a data factory", in "… and targets X, not a data factory"
    segment: str  # ARM id segment of the resource a row's _ResourceId is filled from
    is_row: Callable[[Mapping[str, Any]], bool]
    is_service_alert: Callable[[Alert], bool]
    run_id_columns: tuple[str, ...]
    extract_row: Callable[[Mapping[str, Any], str], Failure | None]  # (row, fallback message)
    extract_unkeyed: Callable[[Mapping[str, Any], str, str], Failure | None]  # (row, key, fallback message)
    time_columns: tuple[str, ...] = ("End", "TimeGenerated", "Start")
    #: Rows without a run id: "first" makes one failure of the alert, "each" one per row (keyed by position).
    unkeyed_rows: str = "first"


def extract_alert(payload: Any) -> list[Failure]:
    """The ADF failures an alert reports (see the module docstring for the rules)."""
    return extract_alert_with(payload, ADF_ALERTS)


def extract_alert_with(payload: Any, rules: AlertRules) -> list[Failure]:
    """The failures an alert reports, read by one service's rules."""
    alert = read_alert(payload)
    if alert.monitor_condition == RESOLVED:
        return []
    own_rows = [row for row in alert.rows if rules.is_row(row)]
    if not own_rows and not rules.is_service_alert(alert):
        target = alert.target_type or "no known resource type"
        raise ExtractError(f"alert carries no {rules.label} rows and targets {target}, not {rules.target_noun}")
    keyed = [row for row in own_rows if any(_str(row.get(c)) for c in rules.run_id_columns)]
    failures = []
    for index, row in enumerate(keyed):
        try:
            failure = rules.extract_row(_completed(row, alert, rules), alert.description)
        except ExtractError as exc:
            raise ExtractError(f"alert row {index}: {exc}") from None
        if failure is not None:
            failures.append(_with_alert(failure, alert, payload))
    if keyed:
        return failures
    # No run id anywhere: the alert itself is the failure; its rows (dimensions, events) still name things.
    rows = own_rows or list(alert.rows) or [{}]
    if rules.unkeyed_rows == "first":
        rows = rows[:1]
    for index, row in enumerate(rows):
        key = f"{rules.service}:alert:{_alert_key(alert)}" + (f":{index}" if len(rows) > 1 else "")
        try:
            failure = rules.extract_unkeyed(_alert_level_row(row, alert, rules), key, alert.description)
        except ExtractError as exc:
            raise ExtractError(f"alert row {index}: {exc}") from None
        if failure is not None:
            failures.append(_with_alert(failure, alert, payload))
    return failures


def _completed(row: Mapping[str, Any], alert: Alert, rules: AlertRules) -> dict[str, Any]:
    """An alert row with what the alert knows and the row may lack: status, time, the target resource."""
    completed = dict(row)
    if not completed.get("Status"):
        completed["Status"] = "Failed"
    if not any(completed.get(column) for column in rules.time_columns):
        completed["TimeGenerated"] = alert.window_end or alert.fired_at
    if not (completed.get("_ResourceId") or completed.get("ResourceId")):
        target = _service_target(alert, rules)
        if target:
            completed["_ResourceId"] = target
    return completed


def _alert_level_row(row: Mapping[str, Any], alert: Alert, rules: AlertRules) -> dict[str, Any]:
    completed = _completed(row, alert, rules)
    column = ADF_METRIC_NAME_DIMENSION.get(alert.metric_name, "PipelineName")
    name = completed.pop("Name", None)
    if name and not completed.get(column):
        completed[column] = name
    if not any(row.get(column) for column in rules.time_columns):
        completed["TimeGenerated"] = alert.window_end or alert.fired_at or completed.get("TimeGenerated")
    return completed


def _with_alert(failure: Failure, alert: Alert, payload: Any) -> Failure:
    extra = {
        "alert_rule": alert.rule,
        "alert_id": alert.alert_id,
        "severity": alert.severity,
        "monitoring_service": alert.monitoring_service,
        "metric_name": alert.metric_name,
        "metric_value": alert.metric_value,
        "window_start": alert.window_start,
        "window_end": alert.window_end,
        "alert_properties": alert.properties,
    }
    metadata = {**failure.metadata, **{k: v for k, v in extra.items() if v or v == 0}}
    return replace(failure, metadata=metadata, raw=payload)


def _alert_key(alert: Alert) -> str:
    if alert.alert_id:
        return alert.alert_id
    if alert.rule and alert.window_end:
        return f"{alert.rule}/{alert.window_end}"
    raise ExtractError("alert has no alertId, originAlertId or rule and window to key it by")


def _service_target(alert: Alert, rules: AlertRules) -> str:
    for target in alert.target_ids:
        if resource_name(target.lower(), rules.segment):
            return target.lower()
    return ""




ADF_ALERTS = AlertRules(
    service="adf",
    label="ADF",
    target_type=FACTORY_TYPE,
    target_noun="a data factory",
    segment="/factories/",
    is_row=is_adf_row,
    is_service_alert=is_adf_alert,
    run_id_columns=("ActivityRunId", "RunId", "PipelineRunId"),
    extract_row=lambda row, fallback: extract_row(row, fallback_message=fallback),
    extract_unkeyed=lambda row, key, fallback: extract_unkeyed(row, key, fallback_message=fallback),
)


def _str(value: Any) -> str:
    return "" if value is None else str(value).strip()


__all__ = [
    "ADF_ALERTS", "APP_INSIGHTS_TYPE", "COMMON_SCHEMA", "FACTORY_TYPE", "LEGACY_APP_INSIGHTS_SCHEMA",
    "TARGET_SERVICES", "WORKSPACE_TYPE", "Alert", "AlertRules", "arm_type", "extract_alert", "extract_alert_with",
    "is_adf_alert", "is_alert", "read_alert", "rows_from_tables",
]
