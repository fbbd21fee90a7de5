"""Databricks run and task states: whether a run or task ended in failure, and which task attempt counts.

Tables say what each ``result_state``, termination code and termination type means; an unknown code or state
is a failure. ``tasks[]`` holds one entry per attempt (reference §3.4): only the latest counts, and while a
run is still going, only when no retry will replace it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from poller.errors import ExtractError
from poller.extractors.databricks_json import as_mapping, mapping_at, termination_details, text

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
    for task in task_entries(tasks):
        key = text(task, "task_key")
        if not key:
            raise ExtractError(f"run {job_run_id} has a task without task_key")
        counts[key] = counts.get(key, 0) + 1
        if key not in latest or attempt_number(task) >= attempt_number(latest[key]):
            latest[key] = task
    return list(latest.values()), counts


def run_finished(run: Mapping[str, Any]) -> bool:
    state = mapping_at(run, "state")
    return bool(
        text(state, "result_state")
        or text(state, "life_cycle_state") in TERMINAL_LIFE_CYCLE_STATES
        or text(mapping_at(run, "status"), "state") == "TERMINATED"
    )


def final_attempt(task: Mapping[str, Any]) -> bool:
    """In a run still going: whether this failed attempt is the last one (no retry will replace it)."""
    if text(mapping_at(task, "state"), "life_cycle_state") in UNSETTLED_LIFE_CYCLE_STATES:
        return False
    retries = task.get("max_retries")
    if not isinstance(retries, int) or isinstance(retries, bool):
        retries = 0  # not set: "unsuccessful runs are not retried"
    return retries >= 0 and attempt_number(task) >= retries  # -1 retries for ever


def task_entries(value: Any) -> Iterable[Mapping[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ExtractError(f"tasks must be a list, not {type(value).__name__}")
    return [as_mapping(task, "a task") for task in value]


def attempt_number(task: Mapping[str, Any]) -> int:
    value = task.get("attempt_number")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
