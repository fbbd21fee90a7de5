"""Databricks cluster rules: ``clusters/events`` and ``clusters/get`` (or list) entries → Failures.

Cluster failures (kind ``cluster_event``, key ``databricks:cluster:<cluster_id>:<event timestamp>``):

* a TERMINATING (or TERMINATED) event whose ``details.reason`` is unexpected (reference §5.5): never when the
  code is USER_REQUEST, JOB_FINISHED or INACTIVITY; always when it ends a start (a STARTING, CREATING or
  RESTARTING with no RUNNING since), whatever its type; otherwise by type — SUCCESS is fine, CLIENT_ERROR,
  SERVICE_FAULT, CLOUD_FAILURE and any newer type are failures, and a code without a type is one too;
* events that are failures by type (DRIVER_NOT_RESPONDING, DRIVER_UNAVAILABLE, NODES_LOST, …, table below);
* INIT_SCRIPTS_FINISHED with a script that failed to fetch, run or mount.

``error_code`` is the termination reason code verbatim, else the failed init script's status, else the event
type. The message is the vendor's own message parameter when there is one (cloud first, then Databricks'),
else a line made of the reason code, its meaning and its parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple

from poller.errors import ExtractError
from poller.extractors.databricks_error_text import one_line, tail
from poller.extractors.databricks_json import as_mapping, clean_metadata, mapping_at, text
from poller.models import Failure, Kind, Service


class Role(StrEnum):
    START = "start"  # a start begins: a termination before the next RUNNING is a failed start
    RUNNING = "running"
    TERMINATION = "termination"  # judged by its reason
    INIT_SCRIPTS = "init_scripts"  # judged by the scripts' statuses
    FAILURE = "failure"  # a failure by itself
    CONTEXT = "context"  # no failure


class EventRule(NamedTuple):
    role: Role
    meaning: str


#: Every ``EventType`` (reference §5.2) and what rca-poller makes of it. Unknown types are context, unless
#: they carry a reason that is unexpected.
EVENT_TYPES: dict[str, EventRule] = {
    "CREATING": EventRule(Role.START, "Cluster is being created"),
    "STARTING": EventRule(Role.START, "Cluster is starting"),
    "RESTARTING": EventRule(Role.START, "Cluster is restarting"),
    "RUNNING": EventRule(Role.RUNNING, "Cluster is running"),
    "TERMINATING": EventRule(Role.TERMINATION, "Cluster terminated"),
    # Not an EventType member, but EventDetails.reason is documented "on a TERMINATED event".
    "TERMINATED": EventRule(Role.TERMINATION, "Cluster terminated"),
    "INIT_SCRIPTS_FINISHED": EventRule(Role.INIT_SCRIPTS, "Init script failed"),
    "DRIVER_NOT_RESPONDING": EventRule(Role.FAILURE, "Driver is up but not responsive, likely due to GC"),
    "DRIVER_UNAVAILABLE": EventRule(Role.FAILURE, "The container that hosts the driver is unavailable"),
    "SPARK_EXCEPTION": EventRule(Role.FAILURE, "Spark context is null or the driver threw a Spark exception"),
    "DBFS_DOWN": EventRule(Role.FAILURE, "Driver is up but DBFS is down"),
    "METASTORE_DOWN": EventRule(Role.FAILURE, "Driver is up but the metastore is down"),
    "NODES_LOST": EventRule(Role.FAILURE, "Some nodes were lost"),
    "ADD_NODES_FAILED": EventRule(Role.FAILURE, "Adding nodes failed"),
    "AUTOSCALING_FAILED": EventRule(Role.FAILURE, "Autoscaling failed"),
    "FAILED_TO_EXPAND_DISK": EventRule(Role.FAILURE, "Failed to expand disk"),
    # The disk is nearly full and cannot grow: the next write fails with "No space left on device".
    "DID_NOT_EXPAND_DISK": EventRule(Role.FAILURE, "Disk is low on space but already at maximum capacity"),
    "UC_VOLUME_MISCONFIGURED": EventRule(Role.FAILURE, "Unity Catalog volume for log delivery misconfigured"),
    "EDITED": EventRule(Role.CONTEXT, "Cluster was edited"),
    "RESIZING": EventRule(Role.CONTEXT, "Cluster is resizing"),
    "UPSIZE_COMPLETED": EventRule(Role.CONTEXT, "Nodes were added"),
    "PINNED": EventRule(Role.CONTEXT, "Cluster was pinned"),
    "UNPINNED": EventRule(Role.CONTEXT, "Cluster was unpinned"),
    "DRIVER_HEALTHY": EventRule(Role.CONTEXT, "Driver is healthy"),  # a recovery, not a failure
    "EXPANDED_DISK": EventRule(Role.CONTEXT, "Disk was expanded"),
    "INIT_SCRIPTS_STARTED": EventRule(Role.CONTEXT, "Init scripts started"),
    # Databricks retries these on its own; the failure, if any, comes as ADD_NODES_FAILED or a termination.
    "AUTOSCALING_BACKOFF": EventRule(Role.CONTEXT, "Autoscaling is backing off"),
    "AUTOSCALING_STATS_REPORT": EventRule(Role.CONTEXT, "Autoscaling usage report"),
    "AUTOMATIC_CLUSTER_UPDATE": EventRule(Role.CONTEXT, "Restart for an automatic worker-image update"),
    "CLUSTER_MIGRATED": EventRule(Role.CONTEXT, "Cluster was migrated"),
    "NODE_BLACKLISTED": EventRule(Role.CONTEXT, "A node was excluded"),
    "NODE_EXCLUDED_DECOMMISSIONED": EventRule(Role.CONTEXT, "A decommissioned node was excluded"),
    "DECOMMISSION_STARTED": EventRule(Role.CONTEXT, "Node decommission started"),
    "DECOMMISSION_ENDED": EventRule(Role.CONTEXT, "Node decommission ended"),
    # Policy administration, not a workload failure.
    "DEFERRED_POLICY_ENFORCEMENT_SCHEDULED": EventRule(Role.CONTEXT, "Policy enforcement scheduled"),
    "DEFERRED_POLICY_ENFORCEMENT_FAILED": EventRule(Role.CONTEXT, "Policy enforcement failed"),
}
UNKNOWN_EVENT = EventRule(Role.CONTEXT, "Cluster event")

#: Termination reason codes that are expected whatever their type (reference §5.5), and what they mean.
EXPECTED_REASON_CODES: dict[str, str] = {
    "USER_REQUEST": "a user terminated the cluster",
    "JOB_FINISHED": "the job the cluster was created for ended",
    "INACTIVITY": "auto-termination after inactivity",
}
#: ``TerminationReason.type`` → failure? A type not listed here (a newer one) counts as a failure.
REASON_TYPE_IS_FAILURE: dict[str, bool] = {
    "SUCCESS": False,
    "CLIENT_ERROR": True,  # "client must fix parameters"
    "SERVICE_FAULT": True,  # "Databricks service issue; client can retry"
    "CLOUD_FAILURE": True,  # "cloud provider infrastructure issue"
}
#: Official meanings of frequent reason codes (reference §5.4), for messages when the vendor gave no text.
REASON_CODE_MEANINGS: dict[str, str] = {
    "DRIVER_UNREACHABLE": "no response from the chauffeur could be received",
    "DRIVER_UNRESPONSIVE": "the driver is unresponsive",
    "DRIVER_OUT_OF_MEMORY": "the driver ran out of memory",
    "DRIVER_OUT_OF_DISK": "the driver ran out of disk",
    "SPARK_STARTUP_FAILURE": "the Spark driver failed to start",
    "INIT_SCRIPT_FAILURE": "a cluster-scoped init script failed",
    "GLOBAL_INIT_SCRIPT_FAILURE": "a global init script failed",
    "INVALID_ARGUMENT": "the cluster request has an invalid argument",
    "CLOUD_PROVIDER_LAUNCH_FAILURE": "the cloud provider could not launch the instances",
    "CLOUD_PROVIDER_SHUTDOWN": "the cloud provider shut the instances down",
    "CLOUD_PROVIDER_RESOURCE_STOCKOUT": "the cloud provider has no capacity for this instance type",
    "SPOT_INSTANCE_TERMINATION": "spot instances were reclaimed",
    "INSTANCE_UNREACHABLE": "an instance could not be reached",
    "BOOTSTRAP_TIMEOUT": "the nodes did not bootstrap in time",
    "COMMUNICATION_LOST": "communication with the nodes was lost",
    "METASTORE_COMPONENT_UNHEALTHY": "the metastore is unhealthy",
    "DBFS_COMPONENT_UNHEALTHY": "DBFS is unhealthy",
    "INTERNAL_ERROR": "Databricks internal error",
}
#: Parameters that hold the vendor's own message, most specific (the cloud's) first.
VENDOR_MESSAGE_PARAMETERS = (
    "azure_error_message", "aws_error_message", "gcp_error_message", "databricks_error_message",
)

#: Init script execution statuses → failure? (``InitScriptExecutionDetails.status``)
INIT_SCRIPT_STATUS_IS_FAILURE: dict[str, bool] = {
    "FAILED_FETCH": True,
    "FAILED_EXECUTION": True,
    "FUSE_MOUNT_FAILED": True,
    "SUCCEEDED": False,
    "SKIPPED": False,
    "NOT_EXECUTED": False,
    "UNKNOWN": False,
}
INIT_SCRIPT_LOCATIONS = ("workspace", "volumes", "dbfs", "abfss", "s3", "gcs", "file")

#: Cluster states in which ``termination_reason`` describes the last termination.
TERMINATED_STATES = frozenset({"TERMINATED", "ERROR"})
CLUSTER_FIELDS = ("cluster_source", "spark_version", "node_type_id", "driver_node_type_id")
EVENT_DETAIL_FIELDS = (
    "current_num_workers", "target_num_workers", "instance_id", "driver_state_message", "user", "cause",
    "job_run_name",
)

MESSAGE_CAP = 8192


def extract_cluster_events(cluster: Mapping[str, Any], events: list[Any]) -> list[Failure]:
    """The failures among one cluster's ``clusters/events`` (any order); ``cluster`` is its get/list entry."""
    cluster = as_mapping(cluster or {}, "a cluster")
    if not isinstance(events, list):
        raise ExtractError(f"events must be a list, not {type(events).__name__}")
    timed = [(_timestamp(event, index), index, as_mapping(event, f"event {index}")) for index, event in
             enumerate(events)]
    failures: list[Failure] = []
    starting: set[str] = set()  # clusters in a start with no RUNNING yet
    terminated: set[str] = set()  # termination judged already (a TERMINATED after its TERMINATING)
    for timestamp, index, event in sorted(timed, key=lambda item: item[:2]):
        cluster_id = text(event, "cluster_id") or text(cluster, "cluster_id")
        if not cluster_id:
            raise ExtractError(f"event {index} names no cluster_id")
        failure = _judge(cluster, event, cluster_id, timestamp, starting, terminated)
        if failure is not None:
            failures.append(failure)
    return failures


def extract_cluster_state(cluster: Mapping[str, Any]) -> Failure | None:
    """A ``clusters/get`` or list entry TERMINATED for an unexpected reason → its failure, else None."""
    cluster = as_mapping(cluster, "a cluster")
    if text(cluster, "state") not in TERMINATED_STATES:
        return None
    reason = mapping_at(cluster, "termination_reason")
    if not reason_is_failure(reason, failed_start=False):
        return None
    cluster_id = text(cluster, "cluster_id")
    terminated_time = _epoch_ms_int(cluster.get("terminated_time"))
    if not cluster_id or terminated_time is None:
        raise ExtractError(f"terminated cluster {cluster_id or '?'} has no cluster_id or terminated_time")
    message = _vendor_message(reason) or one_line(text(cluster, "state_message")) or reason_message(
        reason, EVENT_TYPES["TERMINATED"].meaning
    )
    return _cluster_failure(
        cluster, cluster_id, terminated_time, reason=reason, message=message,
        error_code=text(reason, "code") or text(cluster, "state"),
        extra={"event_type": "TERMINATED", "cluster_state": text(cluster, "state"),
               "state_message": one_line(text(cluster, "state_message"))},
        raw=cluster,
    )


def reason_is_failure(reason: Mapping[str, Any], *, failed_start: bool) -> bool:
    """Whether a termination reason is unexpected (reference §5.5, tables above)."""
    code, kind = text(reason, "code"), text(reason, "type")
    if code in EXPECTED_REASON_CODES:
        return False
    if failed_start:
        return True
    if kind:
        return REASON_TYPE_IS_FAILURE.get(kind, True)
    return bool(code)  # old payloads leave the type out; no reason at all says nothing


def reason_message(reason: Mapping[str, Any], lead: str) -> str:
    """The vendor's message parameter verbatim, else ``<lead>: <CODE> (<meaning>) [param=value, …]``."""
    vendor = _vendor_message(reason)
    if vendor:
        return vendor
    code = text(reason, "code")
    message = f"{lead}: {code}" if code else lead
    meaning = REASON_CODE_MEANINGS.get(code) or EXPECTED_REASON_CODES.get(code)
    if meaning:
        message += f" ({meaning})"
    params = _parameters(reason)
    if params:
        message += " [" + ", ".join(f"{name}={value}" for name, value in sorted(params.items())) + "]"
    return message


def _judge(
    cluster: Mapping[str, Any],
    event: Mapping[str, Any],
    cluster_id: str,
    timestamp: int,
    starting: set[str],
    terminated: set[str],
) -> Failure | None:
    event_type = text(event, "type")
    rule = EVENT_TYPES.get(event_type, UNKNOWN_EVENT)
    details = mapping_at(event, "details")
    reason = mapping_at(details, "reason")
    if rule.role is Role.START:
        starting.add(cluster_id)
        terminated.discard(cluster_id)
        return None
    if rule.role is Role.RUNNING:
        starting.discard(cluster_id)
        return None
    failed_start = False
    if rule.role is Role.TERMINATION:
        if cluster_id in terminated:
            return None
        terminated.add(cluster_id)
        failed_start = cluster_id in starting
        starting.discard(cluster_id)
        if not reason_is_failure(reason, failed_start=failed_start):
            return None
        lead = "Cluster failed to start" if failed_start else rule.meaning
        message, code = reason_message(reason, lead), text(reason, "code") or event_type
    elif rule.role is Role.INIT_SCRIPTS:
        scripts = _failed_init_scripts(details)
        if not scripts:
            return None
        first = scripts[0]
        path, status = first.get("path", "?"), first["status"]
        message = first.get("error_message") or f"Init script {path} failed: {status}"
        code = text(reason, "code") or first["status"]
    elif rule.role is Role.FAILURE or (reason and reason_is_failure(reason, failed_start=False)):
        message, code = _event_message(rule, details, reason), text(reason, "code") or event_type
    else:
        return None
    extra: dict[str, Any] = {
        "event_type": event_type,
        "failed_start": True if failed_start else None,
        "init_scripts": _failed_init_scripts(details) or None,
        **{name: details.get(name) for name in EVENT_DETAIL_FIELDS},
    }
    return _cluster_failure(cluster, cluster_id, timestamp, reason=reason, message=message, error_code=code,
                            extra=extra, raw={"cluster": cluster, "event": event} if cluster else event)


def _cluster_failure(
    cluster: Mapping[str, Any],
    cluster_id: str,
    timestamp: int,
    *,
    reason: Mapping[str, Any],
    message: str,
    error_code: str,
    extra: dict[str, Any],
    raw: Any,
) -> Failure:
    metadata = {
        **extra,
        "termination_type": text(reason, "type"),
        "termination_parameters": _parameters(reason),
        **{name: text(cluster, name) for name in CLUSTER_FIELDS},
        "creator": text(cluster, "creator_user_name"),
    }
    return Failure(
        key=f"databricks:cluster:{cluster_id}:{timestamp}",
        service=Service.DATABRICKS.value,
        kind=Kind.CLUSTER_EVENT.value,
        resource=text(cluster, "cluster_name") or cluster_id,
        resource_id=cluster_id,
        run_id="",
        error_code=error_code,
        error_message=message,
        failure_type=text(reason, "type"),
        occurred_at=datetime.fromtimestamp(timestamp / 1000, tz=UTC),
        metadata=clean_metadata(metadata),
        raw=raw,
    )


def _event_message(rule: EventRule, details: Mapping[str, Any], reason: Mapping[str, Any]) -> str:
    driver_message = one_line(text(details, "driver_state_message"))
    if driver_message:
        return driver_message
    message = reason_message(reason, rule.meaning) if reason else rule.meaning
    current, target = details.get("current_num_workers"), details.get("target_num_workers")
    if isinstance(current, int) and isinstance(target, int) and not _vendor_message(reason):
        message += f" ({current} of {target} workers)"
    return message


def _failed_init_scripts(details: Mapping[str, Any]) -> list[dict[str, Any]]:
    scripts = mapping_at(details, "init_scripts")
    failed: list[dict[str, Any]] = []
    for scope in ("cluster", "global"):
        for script in scripts.get(scope) or []:
            if not isinstance(script, Mapping):
                continue
            status = text(script, "status")
            if not INIT_SCRIPT_STATUS_IS_FAILURE.get(status, "FAIL" in status):
                continue
            location = next((name for name in INIT_SCRIPT_LOCATIONS if isinstance(script.get(name), Mapping)),
                            "")
            failed.append({
                "scope": scope,
                "path": text(mapping_at(script, location), "destination"),
                "status": status,
                "error_message": one_line(text(script, "error_message")),
                "stderr": tail(text(script, "stderr"), MESSAGE_CAP)[0],
            })
    return [clean_metadata(script) for script in failed]


def _vendor_message(reason: Mapping[str, Any]) -> str:
    params = mapping_at(reason, "parameters")
    for name in VENDOR_MESSAGE_PARAMETERS:
        message = one_line(text(params, name))
        if message:
            return message
    return ""


def _parameters(reason: Mapping[str, Any]) -> dict[str, str]:
    params = mapping_at(reason, "parameters")
    return {str(name): str(value) for name, value in params.items() if value is not None and value != ""}


def _timestamp(event: Any, index: int) -> int:
    value = _epoch_ms_int(event.get("timestamp") if isinstance(event, Mapping) else None)
    if value is None:
        raise ExtractError(f"event {index} has no timestamp (epoch milliseconds)")
    return value


def _epoch_ms_int(value: Any) -> int | None:
    """Epoch milliseconds as the exact integer the key is made of (digits in a string accepted)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        return None
    return value
