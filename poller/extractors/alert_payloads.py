"""Azure Monitor alert payloads → :class:`Alert`: the parts rca-poller reads, and the rows they carry.

Shapes (reference §7): the common alert schema (``schemaId: azureMonitorCommonAlertSchema``) — Log Alerts V2
(each ``allOf[]`` criterion's ``dimensions`` make one row), Simple Log Alert (each ``event`` is a row), Log
Analytics / Application Insights (the rows of ``SearchResults``, else ``Dimensions``), metric alerts (no rows);
and the legacy Log Analytics (top-level ``SearchResult``) and Application Insights
(``schemaId: Microsoft.Insights/LogAlert``) payloads. ``alertContext.properties`` and ``customProperties``
are merged into ``Alert.properties``; keys that name ADF/Synapse columns fill gaps in the rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from poller.errors import ExtractError
from poller.extractors.columns import parse_time
from poller.models import iso

COMMON_SCHEMA = "azureMonitorCommonAlertSchema"
LEGACY_APP_INSIGHTS_SCHEMA = "Microsoft.Insights/LogAlert"
RESOLVED = "Resolved"
FACTORY_TYPE = "microsoft.datafactory/factories"
WORKSPACE_TYPE = "microsoft.operationalinsights/workspaces"
APP_INSIGHTS_TYPE = "microsoft.insights/components"

#: ARM resource types an alert may target, and the rca-poller service that watches them.
TARGET_SERVICES: dict[str, str] = {
    FACTORY_TYPE: "adf",
    "microsoft.synapse/workspaces": "synapse",
    "microsoft.web/sites": "functions",
    "microsoft.databricks/workspaces": "databricks",
}

#: Row columns an alert's property bags may supply, by lower-cased key.
PROPERTY_COLUMNS: dict[str, str] = {
    name.lower(): name
    for name in (
        "PipelineName", "PipelineRunId", "RunId", "ActivityName", "ActivityRunId", "ActivityType",
        "ErrorCode", "ErrorMessage", "FailureType", "_ResourceId",
    )
}


@dataclass(frozen=True, slots=True)
class Alert:
    """The parts of any alert payload shape that rca-poller reads."""

    alert_id: str = ""
    rule: str = ""
    severity: str = ""
    monitoring_service: str = ""
    monitor_condition: str = ""
    description: str = ""
    fired_at: str = ""
    target_ids: tuple[str, ...] = ()
    target_type: str = ""
    search_query: str = ""
    metric_name: str = ""
    metric_namespace: str = ""
    metric_value: Any = None
    window_start: str = ""
    window_end: str = ""
    rows: tuple[dict[str, Any], ...] = ()
    properties: dict[str, Any] = field(default_factory=dict)


def is_alert(payload: Mapping[str, Any]) -> bool:
    """Whether a JSON object is an alert payload (common schema, or legacy log alert)."""
    schema = payload.get("schemaId")
    if schema in (COMMON_SCHEMA, LEGACY_APP_INSIGHTS_SCHEMA):
        return True
    data = payload.get("data")
    if isinstance(data, Mapping) and "essentials" in data:
        return True
    return "essentials" in payload or "AlertRuleName" in payload


def read_alert(payload: Any) -> Alert:
    """An :class:`Alert` from a common-schema or legacy log-alert payload."""
    if not isinstance(payload, Mapping):
        raise ExtractError(f"an alert must be a JSON object, not {type(payload).__name__}")
    if payload.get("schemaId") == LEGACY_APP_INSIGHTS_SCHEMA:
        return _legacy(_object(payload.get("data"), "data"), APP_INSIGHTS_TYPE)
    data = payload.get("data") if "essentials" not in payload else payload
    if isinstance(data, Mapping) and "essentials" in data:
        return _common(data)
    if "AlertRuleName" in payload:
        return _legacy(payload, WORKSPACE_TYPE)
    raise ExtractError("alert payload has neither data.essentials nor AlertRuleName")


def rows_from_tables(tables: Any) -> list[dict[str, Any]]:
    """The rows of Log Analytics response tables (``{"name", "columns", "rows"}``) as column → value dicts."""
    if not isinstance(tables, list):
        raise ExtractError("'tables' is not an array")
    rows: list[dict[str, Any]] = []
    for table in tables:
        table = _object(table, "table")
        name = table.get("name")
        names = _column_names(table.get("columns"), name)
        values_list = table.get("rows") or []
        if not isinstance(values_list, list):
            raise ExtractError(f"table {name!r} rows are not an array")
        for index, values in enumerate(values_list):
            if not isinstance(values, list) or len(values) != len(names):
                raise ExtractError(f"table {name!r} row {index} does not match its {len(names)} columns")
            rows.append(dict(zip(names, values, strict=True)))
    return rows


def _column_names(columns: Any, table: Any) -> list[str]:
    """Column names from ``[{"name", "type"}]`` (the REST API) or ``["name"]`` (the SDK's LogsTable)."""
    if not isinstance(columns, list):
        raise ExtractError(f"table {table!r} columns are not an array")
    names: list[str] = []
    for column in columns:
        name = column.get("name") if isinstance(column, Mapping) else column
        if not isinstance(name, str) or not name:
            raise ExtractError(f"table {table!r} has a column without a name")
        names.append(name)
    return names


def arm_type(resource_id: str) -> str:
    """``microsoft.compute/virtualmachines`` from an ARM id, lower-cased; "" if it has no provider part."""
    parts = resource_id.lower().split("/providers/")
    if len(parts) < 2:
        return ""
    segments = parts[-1].split("/")
    return f"{segments[0]}/{segments[1]}" if len(segments) >= 2 else ""


def _common(data: Mapping[str, Any]) -> Alert:
    essentials = _object(data.get("essentials"), "essentials")
    context = _object(data.get("alertContext") or {}, "alertContext")
    condition = _object(context.get("condition") or {}, "alertContext.condition")
    all_of = _array(condition.get("allOf"), "condition.allOf")
    criteria = [_object(item, "condition.allOf[]") for item in all_of]
    targets = tuple(str(target) for target in _array(essentials.get("alertTargetIDs"), "alertTargetIDs"))
    first = criteria[0] if criteria else {}
    bags = _merged(context.get("properties"), data.get("customProperties"))
    return Alert(
        alert_id=_str(essentials.get("alertId")) or _str(essentials.get("originAlertId")),
        rule=_str(essentials.get("alertRule")),
        severity=_str(essentials.get("severity")),
        monitoring_service=_str(essentials.get("monitoringService")),
        monitor_condition=_str(essentials.get("monitorCondition")),
        description=_str(essentials.get("description")),
        fired_at=_str(essentials.get("firedDateTime")),
        target_ids=targets,
        target_type=_str(essentials.get("targetResourceType")).lower() or _target_type(targets),
        search_query=_str(context.get("SearchQuery") or first.get("searchQuery")),
        metric_name=_str(first.get("metricName")),
        metric_namespace=_str(first.get("metricNamespace")),
        metric_value=first.get("metricValue"),
        window_start=_alert_time(condition.get("windowStartTime") or _interval_start(context)),
        window_end=_alert_time(condition.get("windowEndTime") or _interval_end(context)),
        rows=_with_bags(_context_rows(context, criteria), bags),
        properties=bags,
    )


def _legacy(data: Mapping[str, Any], target_type: str) -> Alert:
    resource_id = _str(data.get("ResourceId"))
    rows = rows_from_tables(data["SearchResult"].get("tables")) if _has_tables(data, "SearchResult") else []
    return Alert(
        rule=_str(data.get("AlertRuleName")),
        severity=_str(data.get("Severity")),
        monitoring_service="Application Insights" if target_type == APP_INSIGHTS_TYPE else "Log Analytics",
        description=_str(data.get("Description")),
        target_ids=(resource_id,) if resource_id else (),
        target_type=arm_type(resource_id) or target_type,
        search_query=_str(data.get("SearchQuery")),
        window_start=_alert_time(data.get("SearchIntervalStartTimeUtc")),
        window_end=_alert_time(_interval_end(data)),
        rows=tuple(rows or _dimension_rows(data.get("Dimensions"))),
    )


def _context_rows(context: Mapping[str, Any], criteria: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if _has_tables(context, "SearchResults"):
        rows = rows_from_tables(context["SearchResults"].get("tables"))
        if rows:
            return rows
    if context.get("Dimensions"):
        return _dimension_rows(context["Dimensions"])
    rows = []
    for criterion in criteria:
        events = _array(criterion.get("event"), "event")
        if events:
            # One event is a list of {name, value}; the documented sample wraps a list of them.
            batch = events if isinstance(events[0], list) else [events]
            rows.extend(_dimension_rows(event)[0] for event in batch if event)
        elif criterion.get("dimensions"):
            rows.extend(_dimension_rows(criterion["dimensions"]))
    return rows


def _dimension_rows(pairs: Any) -> list[dict[str, Any]]:
    if not pairs:
        return []
    if not isinstance(pairs, list):
        raise ExtractError("alert dimensions are not an array of {name, value}")
    row: dict[str, Any] = {}
    for pair in pairs:
        pair = _object(pair, "dimension")
        row[_str(pair.get("name"))] = pair.get("value")
    return [row]


def _with_bags(rows: list[dict[str, Any]], bags: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    """Fill row gaps from the property bags' ADF-named keys; the bags alone make a row if there is none."""
    from_bags = {
        PROPERTY_COLUMNS[key.lower()]: value
        for key, value in bags.items()
        if isinstance(key, str) and key.lower() in PROPERTY_COLUMNS and value not in (None, "")
    }
    if not from_bags:
        return tuple(rows)
    if not rows:
        return (from_bags,)
    return tuple({**from_bags, **{k: v for k, v in row.items() if v not in (None, "")}} for row in rows)


def _has_tables(container: Mapping[str, Any], name: str) -> bool:
    value = container.get(name)
    return isinstance(value, Mapping) and isinstance(value.get("tables"), list)


def _target_type(targets: Iterable[str]) -> str:
    return next((kind for kind in map(arm_type, targets) if kind), "")


def _interval_start(context: Mapping[str, Any]) -> Any:
    return context.get("SearchIntervalStartTimeUtc")


def _interval_end(context: Mapping[str, Any]) -> Any:
    return context.get("SearchIntervalEndtimeUtc") or context.get("SearchIntervalEndTimeUtc")


def _alert_time(value: Any) -> str:
    """An alert's time as ISO 8601 UTC; older payloads write ``3/22/2019 1:36:31 PM``."""
    text = _str(value)
    if not text:
        return ""
    try:
        parsed = datetime.strptime(text, "%m/%d/%Y %I:%M:%S %p") if "/" in text else parse_time(text, "time")
    except (ValueError, ExtractError):
        return text  # kept verbatim: metadata, not a key
    return iso(parsed) if parsed else text


def _merged(*bags: Any) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for bag in bags:
        if isinstance(bag, Mapping):
            merged.update(bag)
    return merged


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ExtractError(f"alert {what} is not a JSON object")
    return value


def _array(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ExtractError(f"alert {what} is not an array")
    return value


def _str(value: Any) -> str:
    return "" if value is None else str(value).strip()
