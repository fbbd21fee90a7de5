"""Databricks Jobs rules: a ``runs/get`` response (with each task's ``runs/get-output``) → Failures.

Inputs are raw REST JSON, never SDK dataclasses: the SDK turns a state or code it does not know into None
(reference §0.3), and an unknown code must reach the failure intact.

* One failure per failed task, from its latest attempt only (``tasks[]`` holds one entry per attempt, §3.4):
  kind ``task_run``, key ``databricks:run:<job run id>:<task_key>``, ``run_id`` = the job run id,
  ``metadata["task_run_id"]`` = the task run's. Tasks skipped because of an upstream failure are not failures.
* A failed run without any failed task (it failed before a task ran, INTERNAL_ERROR with no tasks, a legacy
  single-task run) gives one ``job_run`` failure keyed ``databricks:run:<run id>``.
* While a run is still going, only failed tasks that will not be retried are reported, so the key (the same
  for every attempt) is never taken by an attempt that a retry will replace.
* The message is the first non-empty of get-output ``error``, ``status.termination_details.message``,
  ``state.state_message``: ANSI escapes stripped and whitespace collapsed to one line, so that repeats compare
  equal; the multi-line text stays in ``metadata["error_trace"]`` (ANSI-stripped, newlines kept, last 8192
  characters).
* ``error_code`` is ``termination_details.code``, else ``result_state``, else ``life_cycle_state``, verbatim.

Run and task states are judged by ``databricks_run_states``, error text read by ``databricks_error_text``, and
the REST JSON itself by ``databricks_json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from poller.errors import ExtractError
from poller.extractors.databricks_error_text import (
    LOGS_TAIL_CHARS,
    TRACE_TAIL_CHARS,
    error_message,
    message_fields,
    one_line,
    tail,
)
from poller.extractors.databricks_json import (
    as_mapping,
    clean_metadata,
    epoch_ms,
    library_display,
    mapping_at,
    parse_id,
    required_id,
    termination_details,
    text,
)
from poller.extractors.databricks_run_states import (
    attempt_number,
    final_attempt,
    is_failed,
    latest_attempts,
    run_finished,
    task_entries,
)
from poller.models import Failure, Kind, Service, iso

#: Task type object → metadata key → path inside that object (RunTask fields, reference §2.2).
TASK_TYPE_FIELDS: dict[str, dict[str, tuple[str, ...]]] = {
    "notebook_task": {
        "notebook_path": ("notebook_path",), "notebook_source": ("source",),
        "base_parameters": ("base_parameters",),
    },
    "spark_python_task": {"python_file": ("python_file",), "task_parameters": ("parameters",)},
    "python_wheel_task": {
        "package_name": ("package_name",), "entry_point": ("entry_point",),
        "task_parameters": ("parameters",), "named_parameters": ("named_parameters",),
    },
    "spark_jar_task": {
        "main_class_name": ("main_class_name",), "jar_uri": ("jar_uri",), "task_parameters": ("parameters",),
    },
    "spark_submit_task": {"task_parameters": ("parameters",)},
    "pipeline_task": {"pipeline_id": ("pipeline_id",), "full_refresh": ("full_refresh",)},
    "sql_task": {
        "sql_query_id": ("query", "query_id"), "sql_file": ("file", "path"),
        "sql_alert_id": ("alert", "alert_id"),
        "sql_dashboard_id": ("dashboard", "dashboard_id"), "warehouse_id": ("warehouse_id",),
        "task_parameters": ("parameters",),
    },
    "dbt_task": {
        "dbt_commands": ("commands",), "dbt_project_directory": ("project_directory",),
        "warehouse_id": ("warehouse_id",),
    },
    "run_job_task": {"child_job_id": ("job_id",)},
    "for_each_task": {"for_each_inputs": ("inputs",)},
    "condition_task": {"condition_op": ("op",), "condition_left": ("left",), "condition_right": ("right",)},
    "dashboard_task": {"dashboard_id": ("dashboard_id",), "warehouse_id": ("warehouse_id",)},
}


def extract_run(
    run: Mapping[str, Any], outputs: Mapping[int, Mapping[str, Any]] | None = None, *, host: str = ""
) -> list[Failure]:
    """The failures of one ``runs/get`` response: one per failed task (latest attempt), else the run's."""
    run = as_mapping(run, "a runs/get response")
    job_run_id = required_id(run, "run_id", "runs/get response")
    outputs = outputs or {}
    latest, attempts = latest_attempts(run.get("tasks"), job_run_id)
    finished = run_finished(run)
    failures = [
        _task_failure(run, task, _output(outputs, task), host=host, attempts=attempts[text(task, "task_key")])
        for task in latest
        if is_failed(task) and (finished or final_attempt(task))
    ]
    if failures or not finished or not is_failed(run):
        return failures
    return [_job_failure(run, _output(outputs, run), host=host)]


def extract_output(output: Mapping[str, Any], *, host: str = "") -> list[Failure]:
    """A ``runs/get-output`` response alone: the failure of the task run its ``metadata`` describes."""
    output = as_mapping(output, "a runs/get-output response")
    meta = as_mapping(output.get("metadata"), "get-output metadata")
    run_id = required_id(meta, "run_id", "get-output metadata")
    if not is_failed(meta):
        return []
    job_run_id = parse_id(meta.get("job_run_id")) or parse_id(meta.get("parent_run_id"))
    task_key = text(meta, "task_key")
    if not (job_run_id and task_key):
        return [_job_failure(meta, output, host=host)]
    task = next((t for t in task_entries(meta.get("tasks")) if parse_id(t.get("run_id")) == run_id), None)
    task = {**meta, **(task or {}), "run_id": run_id, "task_key": task_key}
    job_run = {**meta, "run_id": job_run_id}
    return [_task_failure(job_run, task, output, host=host, attempts=1)]


def _task_failure(
    run: Mapping[str, Any], task: Mapping[str, Any], output: Mapping[str, Any], *, host: str, attempts: int
) -> Failure:
    job_run_id = required_id(run, "run_id", "runs/get response")
    task_key = text(task, "task_key")
    metadata = {
        "task_key": task_key,
        "task_run_id": parse_id(task.get("run_id")),
        "attempt_number": attempt_number(task),
        "attempts": attempts if attempts > 1 else None,
        **_entry_metadata(run, task, output),
    }
    return _failure(
        run, task, output, host=host, metadata=metadata,
        key=f"databricks:run:{job_run_id}:{task_key}", kind=Kind.TASK_RUN, run_id=job_run_id,
    )


def _job_failure(run: Mapping[str, Any], output: Mapping[str, Any], *, host: str) -> Failure:
    run_id = required_id(run, "run_id", "runs/get response")
    metadata = {"task_key": text(run, "task_key"), **_entry_metadata(run, run, output)}
    return _failure(
        run, run, output, host=host, metadata=metadata,
        key=f"databricks:run:{run_id}", kind=Kind.JOB_RUN, run_id=run_id,
    )


def _failure(
    run: Mapping[str, Any],
    entry: Mapping[str, Any],
    output: Mapping[str, Any],
    *,
    host: str,
    metadata: dict[str, Any],
    key: str,
    kind: Kind,
    run_id: int,
) -> Failure:
    state, details = mapping_at(entry, "state"), termination_details(entry)
    message = error_message(entry, output)
    metadata.update(message_fields(message, metadata.get("error_trace") or ""))
    job_id = parse_id(run.get("job_id"))
    host = (host or _host_of(text(run, "run_page_url"))).rstrip("/")
    return Failure(
        key=key,
        service=Service.DATABRICKS.value,
        kind=kind.value,
        resource=text(run, "run_name") or (f"job {job_id}" if job_id else f"run {run_id}"),
        resource_id=f"{host}#job/{job_id}" if job_id else f"{host}#run/{run_id}",
        run_id=str(run_id),
        error_code=text(details, "code") or text(state, "result_state") or text(state, "life_cycle_state"),
        error_message=message,
        failure_type=text(details, "type"),
        occurred_at=_occurred_at(entry, run),
        metadata=clean_metadata(metadata),
        raw={"run": run, "output": output} if output else run,
    )


def _entry_metadata(
    run: Mapping[str, Any], entry: Mapping[str, Any], output: Mapping[str, Any]
) -> dict[str, Any]:
    state, details = mapping_at(entry, "state"), termination_details(entry)
    trace, trace_cut = tail(text(output, "error_trace"), TRACE_TAIL_CHARS)
    logs, _ = tail(text(output, "logs"), LOGS_TAIL_CHARS)
    run_page_url = text(entry, "run_page_url") or text(run, "run_page_url")
    task_type = next(
        (name for name, value in entry.items() if name.endswith("_task") and isinstance(value, Mapping)), ""
    )
    cluster_id = (
        text(mapping_at(entry, "cluster_instance"), "cluster_id")
        or text(entry, "existing_cluster_id")
        or text(mapping_at(run, "cluster_instance"), "cluster_id")
    )
    libraries = [library_display(lib) for lib in entry.get("libraries") or [] if isinstance(lib, Mapping)]
    return {
        "job_id": parse_id(run.get("job_id")),
        "task_type": task_type,
        **_task_fields(task_type, mapping_at(entry, task_type)),
        "cluster_id": cluster_id,
        "job_cluster_key": text(entry, "job_cluster_key"),
        "libraries": libraries,
        "run_page_url": run_page_url,
        "workspace_id": _workspace_id(run_page_url),
        "job_parameters": _job_parameters(run.get("job_parameters")),
        "trigger": text(run, "trigger"),
        "run_type": text(run, "run_type"),
        "creator": text(run, "creator_user_name"),
        "start_time": _iso_ms(entry.get("start_time")),
        "end_time": _iso_ms(entry.get("end_time")),
        "result_state": text(state, "result_state"),
        "life_cycle_state": text(state, "life_cycle_state"),
        "termination_type": text(details, "type"),
        "termination_message": one_line(text(details, "message")),
        "state_message": one_line(text(state, "state_message")),
        "error_trace": trace,
        "error_trace_truncated": True if trace_cut else None,
        "logs_tail": logs,
    }


def _task_fields(task_type: str, task: Mapping[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, path in TASK_TYPE_FIELDS.get(task_type, {}).items():
        value: Any = task
        for step in path:
            value = value.get(step) if isinstance(value, Mapping) else None
        fields[name] = value
    return fields


def _occurred_at(entry: Mapping[str, Any], run: Mapping[str, Any]) -> datetime:
    for holder in (entry, run):
        for field_name in ("end_time", "start_time"):
            moment = epoch_ms(holder.get(field_name))
            if moment is not None:
                return moment
    raise ExtractError(f"run {text(run, 'run_id')} has no end_time or start_time")


def _output(outputs: Mapping[Any, Mapping[str, Any]], entry: Mapping[str, Any]) -> Mapping[str, Any]:
    run_id = parse_id(entry.get("run_id"))
    if run_id is None:
        return {}
    found = outputs.get(run_id) or outputs.get(str(run_id))
    return found if isinstance(found, Mapping) else {}


def _job_parameters(value: Any) -> dict[str, Any] | None:
    """``[{name, default, value}]`` → name → value (the default when the run did not override it)."""
    if not isinstance(value, list):
        return None
    params = {
        str(item["name"]): item.get("value", item.get("default"))
        for item in value
        if isinstance(item, Mapping) and "name" in item
    }
    return params or None


def _host_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") and parts.netloc else ""


def _workspace_id(url: str) -> str:
    values = parse_qs(urlsplit(url).query).get("o") if url else None
    return values[0] if values else ""


def _iso_ms(value: Any) -> str | None:
    moment = epoch_ms(value)
    return iso(moment) if moment else None


__all__ = ["TASK_TYPE_FIELDS", "extract_output", "extract_run"]
