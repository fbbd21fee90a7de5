"""The extractor registry: any saved payload → the service it belongs to → its failures.

Accepted shapes: one Log Analytics row (a JSON object), a JSON array of rows or payloads, a Log Analytics API
response (``{"tables": [{"name", "columns": [{"name", "type"}], "rows": [[...]]}]}``), and alert payloads
(Azure Monitor common alert schema, legacy log alerts — see ``alerts``), and saved Databricks API responses,
run bundles and job-notification webhooks (``databricks``). Anything else raises
``ExtractError`` with a one-line reason. Adding a service means one module and one ``EXTRACTORS`` entry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from poller.errors import ExtractError
from poller.extractors import adf, adf_diagnostics, alerts, databricks, functions, synapse
from poller.models import Failure, Service

Extractor = Callable[[Any], list[Failure]]
RowRule = Callable[[Any], Failure | None]
AlertRule = Callable[[Any], list[Failure]]

#: Log Analytics tables (``Type`` / ``$table``) and the service whose records they hold.
TABLE_SERVICES: dict[str, str] = {
    adf.ACTIVITY_TABLE: Service.ADF.value,
    adf.PIPELINE_TABLE: Service.ADF.value,
    "SynapseIntegrationPipelineRuns": Service.SYNAPSE.value,
    "SynapseIntegrationActivityRuns": Service.SYNAPSE.value,
    "AppExceptions": Service.FUNCTIONS.value,
    "FunctionAppLogs": Service.FUNCTIONS.value,
    "exceptions": Service.FUNCTIONS.value,
}

#: Columns (or keys) that give a record's service away when it names no table, checked in this order.
MARKER_COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (Service.ADF.value, ("ActivityRunId", "PipelineRunId")),
    (Service.FUNCTIONS.value, ("ExceptionType", "OuterMessage", "outerMessage", "problemId", "FunctionName")),
    (Service.DATABRICKS.value, ("job_id", "cluster_id", "task_key", "library_statuses", "life_cycle_state")),
)


def extract_adf(payload: Any) -> list[Failure]:
    """Every ADF failure in a row, an array, a Log Analytics response or an alert."""
    return walk(payload, adf.extract_row, alerts.extract_alert)


def extract_synapse(payload: Any) -> list[Failure]:
    """Every Synapse pipeline failure in a row, an array, a Log Analytics response or an alert."""
    return walk(payload, synapse.extract_row, synapse.extract_alert)


def extract_functions(payload: Any) -> list[Failure]:
    """Every Azure Functions failure in a row, an array, a Log Analytics response or an alert."""
    return walk(payload, functions.extract_row, functions.extract_alert)


#: AzureDiagnostics ``ResourceProvider`` → the service whose legacy-mode rows it writes.
PROVIDER_SERVICES: dict[str, str] = {
    adf_diagnostics.PROVIDER: Service.ADF.value,
    "MICROSOFT.SYNAPSE": Service.SYNAPSE.value,
    "MICROSOFT.WEB": Service.FUNCTIONS.value,
}

EXTRACTORS: dict[str, Extractor] = {
    Service.ADF.value: extract_adf,
    Service.SYNAPSE.value: extract_synapse,
    Service.FUNCTIONS.value: extract_functions,
    Service.DATABRICKS.value: databricks.extract_payload,
}


def extract(payload: Any, service: str | None = None) -> list[Failure]:
    """The failures in a payload, read by the given service's rules, or by those of the detected service."""
    if service is None:
        if _is_empty(payload):
            return []
        service = detect_service(payload)
    extractor = EXTRACTORS.get(service)
    if extractor is None:
        known = [member.value for member in Service]
        if service in known:
            raise ExtractError(f"no extractor for service {service} yet")
        raise ExtractError(f"unknown service {service!r}; known: {', '.join(known)}")
    return extractor(payload)


def detect_service(payload: Any) -> str:
    """The service a payload belongs to (``adf``, ``synapse``, ``functions``, ``databricks``)."""
    if isinstance(payload, list):
        return _one_service(payload, "array")
    mapping = _mapping(payload)
    if alerts.is_alert(mapping):
        return _alert_service(alerts.read_alert(mapping))
    if "tables" in mapping:
        return _one_service(alerts.rows_from_tables(mapping["tables"]), "Log Analytics response")
    if databricks.looks_like_databricks(mapping):  # API responses, bundles and webhooks, by shape
        return Service.DATABRICKS.value
    service = row_service(mapping)
    if service is None:
        keys = ", ".join(list(map(str, mapping))[:6]) or "none"
        raise ExtractError(f"unrecognised payload: not a known row, response or alert (keys: {keys})")
    return service


def row_service(row: Mapping[str, Any]) -> str | None:
    """The service of one record, by table name, resource id, then marker columns; None if none fits."""
    table = row.get("Type") or row.get("$table")
    if isinstance(table, str) and table in TABLE_SERVICES:
        return TABLE_SERVICES[table]
    provider = row.get("ResourceProvider")
    if isinstance(provider, str) and provider.upper() in PROVIDER_SERVICES:
        return PROVIDER_SERVICES[provider.upper()]
    resource_id = row.get("_ResourceId") or row.get("ResourceId")
    if isinstance(resource_id, str):
        service = alerts.TARGET_SERVICES.get(alerts.arm_type(resource_id))
        if service:
            return service
    event_type = row.get("event_type")
    if isinstance(event_type, str) and event_type.startswith("jobs."):
        return Service.DATABRICKS.value
    for service, columns in MARKER_COLUMNS:
        if any(column in row for column in columns):
            return service
    if "RunId" in row and "PipelineName" in row:
        return Service.ADF.value
    return None


def walk(payload: Any, row_rule: RowRule, alert_rule: AlertRule) -> list[Failure]:
    """Apply a service's row rule to every row, and its alert rule to every alert, found in a payload."""
    if isinstance(payload, list):
        failures: list[Failure] = []
        for index, item in enumerate(payload):
            try:
                failures.extend(walk(item, row_rule, alert_rule))
            except ExtractError as exc:
                raise ExtractError(f"item {index}: {exc}") from None
        return failures
    mapping = _mapping(payload)
    if alerts.is_alert(mapping):
        return alert_rule(mapping)
    if "tables" in mapping:
        return walk(alerts.rows_from_tables(mapping["tables"]), row_rule, alert_rule)
    failure = row_rule(mapping)
    return [failure] if failure is not None else []


def _alert_service(alert: alerts.Alert) -> str:
    # ADF and Synapse rows share their column names: an alert that names Synapse (by its query's tables or its
    # target) is Synapse's unless a row says otherwise by its table or resource id.
    services = {service for service in map(row_service, alert.rows) if service}
    named = {service for service in map(_named_service, alert.rows) if service}
    if len(named) == 1:
        return named.pop()
    if synapse.is_synapse_alert(alert) and not named:
        return Service.SYNAPSE.value
    if Service.ADF.value in services or alerts.is_adf_alert(alert):
        return Service.ADF.value
    if services:
        return sorted(services)[0]
    service = alerts.TARGET_SERVICES.get(alert.target_type)
    if service:
        return service
    target = alert.target_type or "an unknown resource type"
    if target in (alerts.WORKSPACE_TYPE, alerts.APP_INSIGHTS_TYPE):
        raise ExtractError(f"alert on {target} carries no ADF, Synapse, Functions or Databricks rows")
    raise ExtractError(f"alert targets {target}, which rca-poller does not watch")


def _named_service(row: Mapping[str, Any]) -> str | None:
    """A row's service when its table, provider or resource id names it (column names alone do not)."""
    evidence = {key: row[key] for key in ("Type", "$table", "ResourceProvider", "_ResourceId", "ResourceId")
                if key in row}
    return row_service(evidence) if evidence else None


def _one_service(items: list[Any], what: str) -> str:
    if not items:
        raise ExtractError(f"empty {what}: nothing to detect a service from")
    services = set()
    for index, item in enumerate(items):
        try:
            services.add(detect_service(item))
        except ExtractError as exc:
            raise ExtractError(f"item {index}: {exc}") from None
    if len(services) > 1:
        raise ExtractError(f"{what} mixes services: {', '.join(sorted(services))}")
    return services.pop()


def _is_empty(payload: Any) -> bool:
    if isinstance(payload, list):
        return not payload
    if isinstance(payload, Mapping) and set(payload) <= {"tables", "error"} and "tables" in payload:
        return not alerts.rows_from_tables(payload["tables"])
    return False


def _mapping(payload: Any) -> Mapping[str, Any]:
    if not isinstance(payload, Mapping):
        raise ExtractError(f"expected a JSON object or array, got {type(payload).__name__}")
    return payload


__all__ = [
    "EXTRACTORS", "TABLE_SERVICES", "detect_service", "extract", "extract_adf", "extract_functions",
    "extract_synapse", "row_service", "walk",
]
