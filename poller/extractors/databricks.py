"""Databricks rules: any saved Databricks payload → its failures, by shape; library statuses and webhooks.

Runs and task outputs are read by ``databricks_jobs``, cluster events and states by ``databricks_clusters``.
This module reads the two shapes that carry no time of their own — library statuses and job-notification
webhooks — and recognises which payload it was given. Shapes, checked in this order (``SHAPES``):

* ``webhook``  — a job-notification webhook (``event_type: jobs.*``, reference §8);
* ``bundle``   — a saved ``{"run": <runs/get>, "outputs": {"<task run id>": <get-output>}, "host"?}``;
* ``statuses`` — ``libraries/all-cluster-statuses`` (``statuses[]``); ``cluster_statuses`` — one entry of it
  (or ``libraries/cluster-status``);
* ``events``   — ``clusters/events`` (``events[]``, optionally with the ``cluster`` it is about);
* ``runs``     — ``jobs/runs/list`` (``runs[]``); ``clusters`` — ``clusters/list`` (``clusters[]``);
* ``output``   — ``runs/get-output`` alone (``metadata`` is the run); ``run`` — ``runs/get``;
* ``event``    — one ``clusters/events`` event; ``cluster`` — ``clusters/get`` or one ``clusters/list`` entry.

A JSON array is read item by item. Anything else raises ``ExtractError`` with a one-line reason.

Library failures (kind ``library_install``): a ``FAILED`` status, keyed
``databricks:library:<cluster_id>:<library>:<occurrence>`` (the source's stamp, which changes only when the
library fails again after having installed); ``error_code`` is the most specific cause found in the messages
(``LIBRARY_ERROR_CODES``), else the ``Error Code: X`` Databricks names, else ``LIBRARY_INSTALL_FAILED``.

Webhooks carry no error text: a ``jobs.on_failure`` gives the failure under the key the API path gives
(``databricks:run:<run_id>``, or ``databricks:run:<parent_run_id>:<task_key>`` for a task's notification),
flagged ``needs_enrichment``. With no time from the caller, both use ``UNKNOWN_TIME``, flagged
``occurred_at_unknown``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from poller.errors import ExtractError
from poller.extractors.databricks_clusters import MESSAGE_CAP, extract_cluster_events, extract_cluster_state
from poller.extractors.databricks_error_text import MESSAGE_ERROR_CODE, one_line, tail
from poller.extractors.databricks_jobs import extract_output, extract_run
from poller.extractors.databricks_json import (
    as_mapping,
    clean_metadata,
    library_display,
    mapping_at,
    parse_id,
    required_id,
    text,
)
from poller.models import Failure, Kind, Service

#: ``LibraryInstallStatus`` → failure? A newer status counts as one when its name says it failed.
LIBRARY_STATUS_IS_FAILURE: dict[str, bool] = {
    "PENDING": False,
    "RESOLVING": False,
    "INSTALLING": False,
    "INSTALLED": False,
    "FAILED": True,
    "UNINSTALL_ON_RESTART": False,
    "SKIPPED": False,
    "RESTORED": False,
}
#: The library spec fields kept in metadata, as ``<kind>.<field>`` (or ``<kind>`` for a plain URI).
LIBRARY_FIELDS: dict[str, tuple[str, ...]] = {
    "pypi": ("package", "repo"),
    "maven": ("coordinates", "repo", "exclusions"),
    "cran": ("package", "repo"),
    "whl": (), "jar": (), "egg": (), "requirements": (),
}
#: Stable codes for the causes of library install failures, read from the messages; first match wins.
LIBRARY_ERROR_CODES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("PYPI_NO_MATCHING_DISTRIBUTION",
     re.compile(r"No matching distribution found|Could not find a version that satisfies the requirement")),
    ("PYPI_DEPENDENCY_CONFLICT", re.compile(r"ResolutionImpossible|conflicting dependencies")),
    ("PYPI_BUILD_FAILED", re.compile(r"Failed building wheel|Failed to build|subprocess-exited-with-error")),
    ("WHEEL_NOT_SUPPORTED", re.compile(r"is not a supported wheel on this platform")),
    ("MAVEN_UNRESOLVED_DEPENDENCY", re.compile(r"unresolved dependency|Could not resolve dependencies")),
    ("LIBRARY_PERMISSION_DENIED", re.compile(
        r"permissions are required|PERMISSION_DENIED|Permission denied|does not have permission", re.I)),
    ("REPOSITORY_AUTH_FAILED", re.compile(r"\b40[13] Client Error|HTTP error 40[13]|Unauthorized")),
    ("REPOSITORY_UNREACHABLE", re.compile(
        r"Could not fetch URL|Max retries exceeded|NewConnectionError|Temporary failure in name resolution"
        r"|Connection (?:refused|timed out)")),
    ("LIBRARY_FILE_NOT_FOUND",
     re.compile(r"FileNotFoundException|No such file or directory|RESOURCE_DOES_NOT_EXIST|does not exist")),
    ("LIBRARY_NOT_SUPPORTED", re.compile(
        r"not supported on this (?:spark|runtime)|is not supported on Databricks"
        r"|installation is not supported", re.I)),
)
LIBRARY_INSTALL_FAILED = "LIBRARY_INSTALL_FAILED"

#: Job-notification webhook ``event_type`` → failure? (reference §8). Unknown types are refused, not dropped.
WEBHOOK_EVENT_IS_FAILURE: dict[str, bool] = {
    "jobs.on_failure": True,
    "jobs.on_success": False,  # also sent for "succeeded with failures"; the API path reports those tasks
    "jobs.on_start": False,
    "jobs.on_duration_warning_threshold_exceeded": False,  # a warning, the run goes on
    "jobs.on_streaming_backlog_exceeded": False,
}
WEBHOOK_NO_TEXT = "the job notification carries no error text"
#: Webhook payloads and library statuses carry no time; without one from the caller this stands in, flagged.
UNKNOWN_TIME = datetime(1970, 1, 1, tzinfo=UTC)

Shape = Callable[[Mapping[str, Any]], bool]
Handler = Callable[[Mapping[str, Any]], list[Failure]]

#: Keys that, next to ``run_id`` / ``cluster_id``, make an object a run / a cluster.
RUN_MARKERS = ("tasks", "state", "status", "job_id", "run_name")
CLUSTER_MARKERS = ("state", "termination_reason", "cluster_name", "spark_version")


def _is_webhook(payload: Mapping[str, Any]) -> bool:
    return text(payload, "event_type").startswith("jobs.")


def _is_bundle(payload: Mapping[str, Any]) -> bool:
    return isinstance(payload.get("run"), Mapping) and "run_id" in mapping_at(payload, "run")


def _has(name: str) -> Shape:
    return lambda payload: name in payload


def _is_output(payload: Mapping[str, Any]) -> bool:
    return "run_id" in mapping_at(payload, "metadata")


def _is_run(payload: Mapping[str, Any]) -> bool:
    return "run_id" in payload and any(name in payload for name in RUN_MARKERS)


def _is_event(payload: Mapping[str, Any]) -> bool:
    return all(name in payload for name in ("cluster_id", "timestamp", "type"))


def _is_cluster(payload: Mapping[str, Any]) -> bool:
    return "cluster_id" in payload and any(name in payload for name in CLUSTER_MARKERS)


#: Payload shapes in the order they are tried; the first that fits decides.
SHAPES: dict[str, Shape] = {
    "webhook": _is_webhook,
    "bundle": _is_bundle,
    "statuses": _has("statuses"),
    "cluster_statuses": _has("library_statuses"),
    "events": _has("events"),
    "runs": _has("runs"),
    "clusters": _has("clusters"),
    "output": _is_output,
    "run": _is_run,
    "event": _is_event,
    "cluster": _is_cluster,
}


def payload_shape(payload: Any) -> str | None:
    """The name of the Databricks shape a JSON object has (``SHAPES``), or None."""
    if not isinstance(payload, Mapping):
        return None
    return next((name for name, fits in SHAPES.items() if fits(payload)), None)


def looks_like_databricks(payload: Any) -> bool:
    """Whether a payload (or every item of a non-empty array) is one of the Databricks shapes."""
    if isinstance(payload, list):
        return bool(payload) and all(payload_shape(item) is not None for item in payload)
    return payload_shape(payload) is not None


def extract_payload(payload: Any) -> list[Failure]:
    """Every failure in a saved Databricks payload of any known shape (or an array of them)."""
    if isinstance(payload, list):
        failures: list[Failure] = []
        for index, item in enumerate(payload):
            try:
                failures.extend(extract_payload(item))
            except ExtractError as exc:
                raise ExtractError(f"item {index}: {exc}") from None
        return failures
    if not isinstance(payload, Mapping):
        raise ExtractError(f"expected a Databricks JSON object or array, got {type(payload).__name__}")
    shape = payload_shape(payload)
    if shape is None:
        keys = ", ".join(list(map(str, payload))[:6]) or "none"
        raise ExtractError(
            f"unrecognised Databricks payload: not a run, output, event, cluster, library status or webhook "
            f"(keys: {keys})"
        )
    return HANDLERS[shape](payload)


def extract_library_statuses(
    cluster_statuses: Mapping[str, Any],
    *,
    occurrence: str = "",
    observed_at: datetime | None = None,
    cluster_name: str = "",
) -> list[Failure]:
    """One ``all-cluster-statuses`` entry → a failure per FAILED library. No time is in the data: pass one."""
    entry = as_mapping(cluster_statuses, "a cluster library status")
    cluster_id = text(entry, "cluster_id")
    if not cluster_id:
        raise ExtractError("library status entry has no cluster_id")
    statuses = entry.get("library_statuses") or []
    if not isinstance(statuses, list):
        raise ExtractError(f"library_statuses must be a list, not {type(statuses).__name__}")
    return [
        _library_failure(cluster_id, as_mapping(item, f"library status {index}"), occurrence=occurrence,
                         observed_at=observed_at, cluster_name=cluster_name)
        for index, item in enumerate(statuses)
        if _library_failed(item)
    ]


def extract_webhook(
    payload: Mapping[str, Any], *, host: str = "", received_at: datetime | None = None
) -> list[Failure]:
    """A job-notification webhook (reference §8) → the failure the API path keys alike, without error text."""
    payload = as_mapping(payload, "a webhook payload")
    event = text(payload, "event_type")
    if event not in WEBHOOK_EVENT_IS_FAILURE:
        raise ExtractError(f"unknown Databricks webhook event_type {event!r}")
    if not WEBHOOK_EVENT_IS_FAILURE[event]:
        return []
    run = as_mapping(payload.get("run"), "webhook run")
    job = mapping_at(payload, "job")
    run_id = required_id(run, "run_id", "webhook run")
    parent_id = parse_id(run.get("parent_run_id"))
    task_key = text(mapping_at(payload, "task"), "task_key")
    job_id = parse_id(job.get("job_id"))
    metadata = clean_metadata({
        "event_type": event, "workspace_id": text(payload, "workspace_id"), "job_id": job_id,
        "task_key": task_key, "task_run_id": run_id if task_key else None, "needs_enrichment": True,
        "occurred_at_unknown": True if received_at is None else None,
    })
    as_task = bool(task_key and parent_id)
    return [Failure(
        key=f"databricks:run:{parent_id}:{task_key}" if as_task else f"databricks:run:{run_id}",
        service=Service.DATABRICKS.value,
        kind=(Kind.TASK_RUN if as_task else Kind.JOB_RUN).value,
        resource=text(job, "name") or (f"job {job_id}" if job_id else f"run {run_id}"),
        resource_id=f"{host.rstrip('/')}#job/{job_id}" if job_id else "",
        run_id=str(parent_id if as_task else run_id),
        error_message=f"Task {task_key} failed; {WEBHOOK_NO_TEXT}" if task_key else f"Job run failed; "
        f"{WEBHOOK_NO_TEXT}",
        occurred_at=received_at.astimezone(UTC) if received_at else UNKNOWN_TIME,
        metadata=metadata,
        raw=payload,
    )]


def extract_bundle(payload: Mapping[str, Any]) -> list[Failure]:
    """A run with the get-output objects of its failed tasks by task run id (``{"run", "outputs", "host"}``): what
    the Databricks source keeps for each run, and what a saved one reads back as."""
    run = payload.get("run")
    if not isinstance(run, Mapping):
        raise ExtractError("a run record holds no run (runs/get JSON)")
    outputs: dict[int, Mapping[str, Any]] = {}
    for name, output in mapping_at(payload, "outputs").items():
        run_id = parse_id(name)
        if run_id is None or not isinstance(output, Mapping):
            raise ExtractError(f"bundle outputs must map task run ids to get-output objects ({name!r:.40})")
        outputs[run_id] = output
    return extract_run(run, outputs, host=text(payload, "host"))


def _each(name: str, handler: Handler) -> Handler:
    def handle(payload: Mapping[str, Any]) -> list[Failure]:
        return extract_payload_items(payload[name], handler, name)

    return handle


def extract_payload_items(items: Any, handler: Handler, what: str) -> list[Failure]:
    """``handler`` applied to every object of a list; an error names the item it comes from."""
    if not isinstance(items, list):
        raise ExtractError(f"{what} must be a list, not {type(items).__name__}")
    failures: list[Failure] = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise ExtractError(f"{what}[{index}] must be a JSON object, not {type(item).__name__}")
        try:
            failures.extend(handler(item))
        except ExtractError as exc:
            raise ExtractError(f"{what}[{index}]: {exc}") from None
    return failures


def _cluster(payload: Mapping[str, Any]) -> list[Failure]:
    failure = extract_cluster_state(payload)
    return [failure] if failure is not None else []


def _events(payload: Mapping[str, Any]) -> list[Failure]:
    return extract_cluster_events(mapping_at(payload, "cluster"), payload["events"])


def _event(payload: Mapping[str, Any]) -> list[Failure]:
    return extract_cluster_events({}, [payload])


def _run(payload: Mapping[str, Any]) -> list[Failure]:
    return extract_run(payload)


def _library_failed(item: Any) -> bool:
    status = text(item, "status") if isinstance(item, Mapping) else ""
    return LIBRARY_STATUS_IS_FAILURE.get(status, "FAIL" in status)


def _library_failure(
    cluster_id: str,
    item: Mapping[str, Any],
    *,
    occurrence: str,
    observed_at: datetime | None,
    cluster_name: str,
) -> Failure:
    library = mapping_at(item, "library")
    display = library_display(library)
    raw_messages = item.get("messages") or []
    messages = [tail(str(message), MESSAGE_CAP)[0] for message in raw_messages if str(message).strip()]
    message = one_line(" ".join(messages)) or f"Library {display} failed to install on cluster {cluster_id}"
    named = MESSAGE_ERROR_CODE.search(message)
    code = next((code for code, pattern in LIBRARY_ERROR_CODES if pattern.search(message)), "")
    metadata = {
        **_library_fields(library),
        "library": display,
        "library_status": text(item, "status"),
        "messages": messages,
        "databricks_error_code": named.group(1) if named else None,
        "is_library_for_all_clusters": item.get("is_library_for_all_clusters"),
        "occurrence": occurrence,
        "occurred_at_unknown": True if observed_at is None else None,
    }
    return Failure(
        key=f"databricks:library:{cluster_id}:{display}" + (f":{occurrence}" if occurrence else ""),
        service=Service.DATABRICKS.value,
        kind=Kind.LIBRARY_INSTALL.value,
        resource=cluster_name or cluster_id,
        resource_id=cluster_id,
        error_code=code or (named.group(1) if named else LIBRARY_INSTALL_FAILED),
        error_message=message,
        occurred_at=observed_at.astimezone(UTC) if observed_at else UNKNOWN_TIME,
        metadata=clean_metadata(metadata),
        raw={"cluster_id": cluster_id, **item},
    )


def _library_fields(library: Mapping[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for kind, names in LIBRARY_FIELDS.items():
        spec = library.get(kind)
        if isinstance(spec, str):
            fields[kind] = spec
        elif isinstance(spec, Mapping):
            fields.update({f"{kind}.{name}": spec.get(name) for name in names})
    return fields


#: What each shape is read with.
HANDLERS: dict[str, Handler] = {
    "webhook": extract_webhook,
    "bundle": extract_bundle,
    "statuses": _each("statuses", extract_library_statuses),
    "cluster_statuses": extract_library_statuses,
    "events": _events,
    "runs": _each("runs", _run),
    "clusters": _each("clusters", _cluster),
    "output": extract_output,
    "run": _run,
    "event": _event,
    "cluster": _cluster,
}

__all__ = [
    "HANDLERS",
    "SHAPES",
    "extract_bundle",
    "extract_cluster_events",
    "extract_cluster_state",
    "extract_library_statuses",
    "extract_output",
    "extract_payload",
    "extract_run",
    "extract_webhook",
    "looks_like_databricks",
    "payload_shape",
]
