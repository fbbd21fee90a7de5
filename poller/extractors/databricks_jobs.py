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
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from poller.errors import ExtractError
from poller.extractors.cleaning import ANSI_ESCAPE
from poller.models import Failure, Kind, Service, iso

#: ``state.result_state`` → is it a failure? None: the value alone does not say; the termination code decides.
RESULT_STATE_IS_FAILURE: dict[str, bool | None] = {
    "SUCCESS": False,
    "FAILED": True,
    "TIMEDOUT": True,
    # "Canceled at user request" — but the platform cancels too (max run duration): the code tells which.
    "CANCELED": None,
    # A scheduled run that never ran because earlier runs held every slot: lost work an operator must see.
    "MAXIMUM_CONCURRENT_RUNS_REACHED": True,
    # run_if / condition not met: skipped by design.
    "EXCLUDED": False,
    # The run as a whole succeeded (its leaf tasks did); its failed tasks are reported on their own.
    "SUCCESS_WITH_FAILURES": False,
    # Skipped because another task failed or was canceled: that task is the failure, not its dependants.
    "UPSTREAM_FAILED": False,
    "UPSTREAM_CANCELED": False,
    "DISABLED": False,
}

#: ``status.termination_details.code`` → is it a failure? Read before ``result_state``: it is the newer field
#: and tells a user's cancel from the platform's.
TERMINATION_CODE_IS_FAILURE: dict[str, bool] = {
    "SUCCESS": False,
    "SUCCESS_WITH_FAILURES": False,  # the failed child runs are reported on their own
    "USER_CANCELED": False,
    "CANCELED": True,  # canceled by the platform, e.g. maximum run duration exceeded
    "SKIPPED": False,  # never executed: upstream failed, condition not met, nothing to run
    "DISABLED": False,
    "INTERNAL_ERROR": True,
    "DRIVER_ERROR": True,
    "CLUSTER_ERROR": True,
    "REPOSITORY_CHECKOUT_FAILED": True,
    "INVALID_CLUSTER_REQUEST": True,
    "WORKSPACE_RUN_LIMIT_EXCEEDED": True,
    "FEATURE_DISABLED": True,
    "CLUSTER_REQUEST_LIMIT_EXCEEDED": True,
    "STORAGE_ACCESS_ERROR": True,
    "RUN_EXECUTION_ERROR": True,
    "UNAUTHORIZED_ERROR": True,
    "LIBRARY_INSTALLATION_ERROR": True,
    "MAX_CONCURRENT_RUNS_EXCEEDED": True,  # as MAXIMUM_CONCURRENT_RUNS_REACHED: the scheduled run was lost
    "MAX_SPARK_CONTEXTS_EXCEEDED": True,
    "RESOURCE_NOT_FOUND": True,
    "INVALID_RUN_CONFIGURATION": True,
    "CLOUD_FAILURE": True,
    "MAX_JOB_QUEUE_SIZE_EXCEEDED": True,  # skipped because the queue was full: lost work as well
    "BREAKING_CHANGE": True,  # the attempt failed; a retry with a mitigation is a new attempt
    "BUDGET_POLICY_LIMIT_EXCEEDED": True,
    "CLUSTER_TERMINATED_BY_USER": True,  # someone stopped the cluster under a running task
}

#: ``termination_details.type`` → failure? Only consulted for codes and result states newer than these tables,
#: which are reported unless the type says all went well (an unknown type counts as a failure).
TERMINATION_TYPE_IS_FAILURE: dict[str, bool] = {
    "SUCCESS": False,
    "INTERNAL_ERROR": True,
    "CLIENT_ERROR": True,
    "CLOUD_FAILURE": True,
}

#: Life cycle states of a run (or task) that has ended; ``result_state`` is set only in these.
TERMINAL_LIFE_CYCLE_STATES = frozenset({"TERMINATED", "SKIPPED", "INTERNAL_ERROR"})
#: Life cycle states of a task that is not done: a failed result on it may still be replaced by a retry.
UNSETTLED_LIFE_CYCLE_STATES = frozenset(
    {"QUEUED", "PENDING", "RUNNING", "TERMINATING", "BLOCKED", "WAITING_FOR_RETRY", "WAITING"}
)

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

#: How the exception type is read from the first line of an error, first match wins.
EXCEPTION_TYPE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    # JVM or Python qualified names: org.apache.spark.SparkException, py4j.protocol.Py4JJavaError,
    # com.databricks.backend.common.rpc.DatabricksExceptions$SQLExecutionException
    ("qualified class", re.compile(r"^((?:[a-z_][\w$]*\.)+[A-Z][\w$]*)(?=:|\s*$)")),
    # Bare names that say what they are: ZeroDivisionError, AnalysisException, Exception, SystemExit
    ("named class", re.compile(r"^(\w*(?:Error|Exception|Exit|Interrupt|Warning|Failure))(?=:|\s*$)")),
    # Python builtins without such a suffix
    ("python builtin", re.compile(r"^(StopIteration|StopAsyncIteration|GeneratorExit)(?=:|\s*$)")),
)
#: Spark error classes (``AnalysisException: [TABLE_OR_VIEW_NOT_FOUND] ...``) and SQLSTATEs.
ERROR_CLASS = re.compile(r"^(?:[\w.$]+:\s*)?\[([A-Z][A-Z0-9_]+(?:\.[A-Z0-9_]+)*)\]")
SQLSTATE = re.compile(r"SQLSTATE:\s*([0-9A-Z]{5})\b")
#: A code Databricks names inside a message: ``Error Code: DRIVER_LIBRARY_INSTALLATION_FAILURE``.
MESSAGE_ERROR_CODE = re.compile(r"Error Code:\s*([A-Z][A-Z0-9_]{2,})")

TRACE_TAIL_CHARS = 8192
LOGS_TAIL_CHARS = 4096
TRUNCATED_MARK = "…[truncated {count} characters]\n"


def extract_run(
    run: Mapping[str, Any], outputs: Mapping[int, Mapping[str, Any]] | None = None, *, host: str = ""
) -> list[Failure]:
    """The failures of one ``runs/get`` response: one per failed task (latest attempt), else the run's."""
    run = as_mapping(run, "a runs/get response")
    job_run_id = required_id(run, "run_id", "runs/get response")
    outputs = outputs or {}
    latest, attempts = latest_attempts(run.get("tasks"), job_run_id)
    finished = _run_finished(run)
    failures = [
        _task_failure(run, task, _output(outputs, task), host=host, attempts=attempts[text(task, "task_key")])
        for task in latest
        if is_failed(task) and (finished or _final_attempt(task))
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
    task = next((t for t in _tasks(meta.get("tasks")) if parse_id(t.get("run_id")) == run_id), None)
    task = {**meta, **(task or {}), "run_id": run_id, "task_key": task_key}
    job_run = {**meta, "run_id": job_run_id}
    return [_task_failure(job_run, task, output, host=host, attempts=1)]


def is_failed(entry: Mapping[str, Any]) -> bool:
    """Whether a run or task ended in failure, by the tables above; unknown codes and states are failures."""
    state = mapping_at(entry, "state")
    details = termination_details(entry)
    code, result, kind = text(details, "code"), text(state, "result_state"), text(details, "type")
    if code in TERMINATION_CODE_IS_FAILURE:
        return TERMINATION_CODE_IS_FAILURE[code]
    verdict = RESULT_STATE_IS_FAILURE.get(result)
    if verdict is not None:
        return verdict
    if text(state, "life_cycle_state") == "INTERNAL_ERROR":
        return True
    if code or (result and result not in RESULT_STATE_IS_FAILURE):
        return TERMINATION_TYPE_IS_FAILURE.get(kind, True)
    return False  # CANCELED with no code (a user's cancel), or not ended yet


def latest_attempts(tasks: Any, job_run_id: int) -> tuple[list[Mapping[str, Any]], dict[str, int]]:
    """The highest-``attempt_number`` entry per ``task_key`` (first-seen order), and attempt counts."""
    latest: dict[str, Mapping[str, Any]] = {}
    counts: dict[str, int] = {}
    for task in _tasks(tasks):
        key = text(task, "task_key")
        if not key:
            raise ExtractError(f"run {job_run_id} has a task without task_key")
        counts[key] = counts.get(key, 0) + 1
        if key not in latest or _attempt(task) >= _attempt(latest[key]):
            latest[key] = task
    return list(latest.values()), counts


def exception_type(message: str, trace: str = "") -> str:
    """The exception class named by an error (``ZeroDivisionError``, ``org.apache.spark.SparkException``)."""
    trace_lines = [line.strip() for line in reversed(trace.splitlines()) if line.strip()][:5]
    for candidate in (message, *trace_lines):
        for _, pattern in EXCEPTION_TYPE_PATTERNS:
            match = pattern.match(candidate)
            if match:
                return match.group(1)
    return ""


def _task_failure(
    run: Mapping[str, Any], task: Mapping[str, Any], output: Mapping[str, Any], *, host: str, attempts: int
) -> Failure:
    job_run_id = required_id(run, "run_id", "runs/get response")
    task_key = text(task, "task_key")
    metadata = {
        "task_key": task_key,
        "task_run_id": parse_id(task.get("run_id")),
        "attempt_number": _attempt(task),
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
    message = _message(entry, output)
    trace = metadata.get("error_trace") or ""
    metadata["exception_type"] = exception_type(message, trace)
    error_class = ERROR_CLASS.match(message)
    metadata["error_class"] = error_class.group(1) if error_class else None
    sqlstate = SQLSTATE.search(message)
    metadata["sqlstate"] = sqlstate.group(1) if sqlstate else None
    named = MESSAGE_ERROR_CODE.search(message)
    metadata["message_error_code"] = named.group(1) if named else None
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


def _message(entry: Mapping[str, Any], output: Mapping[str, Any]) -> str:
    for candidate in (
        text(output, "error"),
        text(termination_details(entry), "message"),
        text(mapping_at(entry, "state"), "state_message"),
    ):
        cleaned = one_line(candidate)
        if cleaned:
            return cleaned
    state = mapping_at(entry, "state")
    ended = text(state, "result_state") or text(state, "life_cycle_state") or "failure"
    task_key = text(entry, "task_key")
    return f"Task {task_key} ended {ended}" if task_key else f"Run ended {ended}"


def _occurred_at(entry: Mapping[str, Any], run: Mapping[str, Any]) -> datetime:
    for holder in (entry, run):
        for field_name in ("end_time", "start_time"):
            moment = epoch_ms(holder.get(field_name))
            if moment is not None:
                return moment
    raise ExtractError(f"run {text(run, 'run_id')} has no end_time or start_time")


def _run_finished(run: Mapping[str, Any]) -> bool:
    state = mapping_at(run, "state")
    return bool(
        text(state, "result_state")
        or text(state, "life_cycle_state") in TERMINAL_LIFE_CYCLE_STATES
        or text(mapping_at(run, "status"), "state") == "TERMINATED"
    )


def _final_attempt(task: Mapping[str, Any]) -> bool:
    """In a run still going: whether this failed attempt is the last one (no retry will replace it)."""
    if text(mapping_at(task, "state"), "life_cycle_state") in UNSETTLED_LIFE_CYCLE_STATES:
        return False
    retries = task.get("max_retries")
    if not isinstance(retries, int) or isinstance(retries, bool):
        retries = 0  # not set: "unsuccessful runs are not retried"
    return retries >= 0 and _attempt(task) >= retries  # -1 retries for ever


def _output(outputs: Mapping[Any, Mapping[str, Any]], entry: Mapping[str, Any]) -> Mapping[str, Any]:
    run_id = parse_id(entry.get("run_id"))
    if run_id is None:
        return {}
    found = outputs.get(run_id) or outputs.get(str(run_id))
    return found if isinstance(found, Mapping) else {}


def _tasks(value: Any) -> Iterable[Mapping[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ExtractError(f"tasks must be a list, not {type(value).__name__}")
    return [as_mapping(task, "a task") for task in value]


def _attempt(task: Mapping[str, Any]) -> int:
    value = task.get("attempt_number")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


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


# Helpers shared with the clusters and libraries rules.


def library_display(library: Mapping[str, Any]) -> str:
    """``pypi:pandas==2.2.0``, ``maven:com.x:y:1.0``, ``whl:/Volumes/...whl`` … for a ``Library`` object."""
    for kind, field_name in (("pypi", "package"), ("maven", "coordinates"), ("cran", "package")):
        spec = library.get(kind)
        if isinstance(spec, Mapping) and text(spec, field_name):
            return f"{kind}:{text(spec, field_name)}"
    for kind, value in library.items():
        if isinstance(value, str) and value.strip():
            return f"{kind}:{value.strip()}"
    return ",".join(map(str, library)) or "unknown"


def termination_details(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    return mapping_at(mapping_at(entry, "status"), "termination_details")


def strip_ansi(value: str) -> str:
    return ANSI_ESCAPE.sub("", value) if "\x1b" in value else value


def one_line(value: str) -> str:
    """ANSI escapes stripped, whitespace (newlines too) collapsed to single spaces, trimmed."""
    return " ".join(strip_ansi(value).split())


def tail(value: str, limit: int) -> tuple[str, bool]:
    """ANSI-stripped text, newlines kept, trailing blanks trimmed; only its last ``limit`` characters."""
    cleaned = "\n".join(line.rstrip() for line in strip_ansi(value).replace("\r\n", "\n").split("\n")).strip()
    if len(cleaned) <= limit:
        return cleaned, False
    cut = len(cleaned) - limit
    return TRUNCATED_MARK.format(count=cut) + cleaned[cut:], True


def epoch_ms(value: Any) -> datetime | None:
    """Epoch milliseconds (the Databricks time unit) as aware UTC; None for missing or 0 (not ended)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        return None
    return datetime.fromtimestamp(value / 1000, tz=UTC)


def parse_id(value: Any) -> int | None:
    """A numeric Databricks id given as a number or as digits in a string; None otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def required_id(holder: Mapping[str, Any], name: str, what: str) -> int:
    value = parse_id(holder.get(name))
    if value is None:
        found = holder.get(name)
        got = f" (got {found!r:.40})" if found is not None else ""
        raise ExtractError(f"{what} has no numeric {name}{got}")
    return value


def text(holder: Mapping[str, Any], name: str) -> str:
    value = holder.get(name)
    if value is None or isinstance(value, Mapping | list):
        return ""
    return (value if isinstance(value, str) else str(value)).strip()


def mapping_at(holder: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = holder.get(name) if name else None
    return value if isinstance(value, Mapping) else {}


def as_mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ExtractError(f"{what} must be a JSON object, not {type(value).__name__}")
    return value


def clean_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata without empty values (None, "", [], {}); False and 0 stay."""
    return {name: value for name, value in metadata.items() if not _empty(value)}


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict | tuple) and len(value) == 0)
