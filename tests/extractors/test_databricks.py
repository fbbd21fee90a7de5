"""Databricks rules, from the JSON fixtures in tests/testdata/databricks/ and table-driven edge cases."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from databricks.sdk.service import compute, jobs

from poller.errors import ExtractError
from poller.extractors import databricks, databricks_clusters, databricks_error_text, databricks_run_states
from poller.extractors.databricks import (
    extract_cluster_events,
    extract_cluster_state,
    extract_library_statuses,
    extract_payload,
    extract_run,
    extract_webhook,
    looks_like_databricks,
    payload_shape,
)
from poller.models import Failure
from tests.extractors.expect import assert_matches as shared_assert_matches

FIXTURES = Path(__file__).parent.parent / "testdata" / "databricks"
FIXTURE_FILES = sorted(FIXTURES.glob("*.json"))
FAILURE_FIELDS = (
    "key", "kind", "resource", "resource_id", "run_id", "error_code", "error_message", "failure_type",
)
FUNCTIONS: dict[str, Callable[..., list[Failure]]] = {
    "extract_payload": extract_payload,
    "extract_library_statuses": extract_library_statuses,
}


def load(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        return dict(json.load(handle))


def run_case(case: dict[str, Any]) -> list[Failure]:
    kwargs = dict(case.get("kwargs", {}))
    if "observed_at" in kwargs:
        kwargs["observed_at"] = datetime.fromisoformat(kwargs["observed_at"])
    return FUNCTIONS[case.get("function", "extract_payload")](case["input"], **kwargs)


def refusal(call: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """The message of the ExtractError a call raises (it must raise one, on one line)."""
    with pytest.raises(ExtractError) as caught:
        call(*args, **kwargs)
    reason = str(caught.value)
    assert "\n" not in reason
    return reason


def assert_matches(failures: list[Failure], expected: list[dict[str, Any]]) -> None:
    shared_assert_matches(failures, expected, "databricks")
    for failure in failures:
        assert "\n" not in failure.error_message and "\x1b" not in failure.error_message
        assert failure.error_message == failure.error_message.strip() != ""
        assert "\x1b" not in failure.metadata.get("error_trace", "")
        json.dumps(failure.to_json())  # metadata stays plain JSON


def test_there_are_at_least_20_fixtures() -> None:
    assert len(FIXTURE_FILES) >= 20


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=[path.stem for path in FIXTURE_FILES])
def test_fixture(path: Path) -> None:
    case = load(path)
    assert_matches(run_case(case), case["expected"])


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=[path.stem for path in FIXTURE_FILES])
def test_fixture_is_recognised(path: Path) -> None:
    assert looks_like_databricks(load(path)["input"])


def test_an_array_of_payloads_is_read_item_by_item() -> None:
    cases = [load(path) for path in FIXTURE_FILES if "function" not in load(path)]
    failures = extract_payload([case["input"] for case in cases])
    assert [f.key for f in failures] == [want["key"] for case in cases for want in case["expected"]]


# Runs ------------------------------------------------------------------------------------------------------


def _run(tasks: list[dict[str, Any]], **state: Any) -> dict[str, Any]:
    return {"run_id": 7, "job_id": 3, "run_name": "job", "start_time": 1_000, "end_time": 2_000,
            "state": {"life_cycle_state": "TERMINATED", "result_state": "FAILED", **state}, "tasks": tasks}


def _task(key: str, run_id: int, attempt: int = 0, result: str = "FAILED", **more: Any) -> dict[str, Any]:
    return {"task_key": key, "run_id": run_id, "attempt_number": attempt,
            "state": {"life_cycle_state": "TERMINATED", "result_state": result,
                      "state_message": f"{key} attempt {attempt}"}, **more}


def test_latest_attempt_wins_whatever_the_order() -> None:
    run = _run([_task("a", 12, attempt=2), _task("a", 10, attempt=0), _task("a", 11, attempt=1)])
    (failure,) = extract_run(run, {12: {"error": "ValueError: third"}, 10: {"error": "ValueError: first"}})
    assert (failure.error_message, failure.metadata["task_run_id"]) == ("ValueError: third", 12)
    assert failure.metadata["attempts"] == 3


def test_missing_output_falls_back_to_termination_message_then_state_message() -> None:
    with_details = _task("a", 10, status={"termination_details": {
        "code": "DRIVER_ERROR", "type": "INTERNAL_ERROR", "message": "  Driver\n  lost  "}})
    (first, second) = extract_run(_run([with_details, _task("b", 11)]), {})
    assert (first.error_message, first.error_code, first.failure_type) == ("Driver lost", "DRIVER_ERROR",
                                                                          "INTERNAL_ERROR")
    assert (second.error_message, second.error_code) == ("b attempt 0", "FAILED")


def test_a_failed_run_without_any_failed_task_is_a_job_run_failure() -> None:
    run = _run([_task("a", 10, result="CANCELED")], result_state="TIMEDOUT", state_message="Run timed out")
    (failure,) = extract_run(run)
    assert (failure.key, failure.kind, failure.error_code) == ("databricks:run:7", "job_run", "TIMEDOUT")


def test_the_host_makes_the_resource_id() -> None:
    (failure,) = extract_run(_run([_task("a", 10)]), host="https://adb-1.2.azuredatabricks.net/")
    assert failure.resource_id == "https://adb-1.2.azuredatabricks.net#job/3"
    assert failure.occurred_at == datetime(1970, 1, 1, 0, 0, 2, tzinfo=UTC)


def test_the_trace_keeps_its_last_8192_characters() -> None:
    trace = "\x1b[0;31m" + "x" * 9000 + "\x1b[0m\nValueError: end"
    (failure,) = extract_run(_run([_task("a", 10)]), {10: {"error": "ValueError: end", "error_trace": trace}})
    kept = failure.metadata["error_trace"]
    assert kept.endswith("ValueError: end") and kept.startswith("…[truncated ")
    assert failure.metadata["error_trace_truncated"] is True
    assert len(kept.split("\n", 1)[1]) == databricks_error_text.TRACE_TAIL_CHARS


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("ZeroDivisionError: division by zero", "ZeroDivisionError"),
        ("AnalysisException: [TABLE_OR_VIEW_NOT_FOUND] The table", "AnalysisException"),
        ("org.apache.spark.SparkException: Job aborted", "org.apache.spark.SparkException"),
        ("py4j.protocol.Py4JJavaError: An error occurred while calling o123.save.", "py4j.protocol.Py4JJavaError"),
        ("com.databricks.backend.common.rpc.DatabricksExceptions$SQLExecutionException: boom",
         "com.databricks.backend.common.rpc.DatabricksExceptions$SQLExecutionException"),
        ("Exception: boom", "Exception"),
        ("SystemExit: 1", "SystemExit"),
        ("StopIteration", "StopIteration"),
        ("Workload failed, see run output for details", ""),
        ("dbfs:/mnt/x does not exist", ""),
        ("Notebook not found: /Users/x", ""),
    ],
)
def test_exception_type(message: str, expected: str) -> None:
    assert databricks_error_text.exception_type(message) == expected


def test_exception_type_from_the_trace_when_the_message_names_none() -> None:
    assert databricks_error_text.exception_type("Workload failed", "Traceback\n  File x\nKeyError: 'k'\n") == "KeyError"


@pytest.mark.parametrize(
    ("state", "details", "failed"),
    [
        ({"result_state": "FAILED"}, {}, True),
        ({"result_state": "TIMEDOUT"}, {}, True),
        ({"result_state": "CANCELED"}, {}, False),
        ({"result_state": "CANCELED"}, {"code": "USER_CANCELED", "type": "SUCCESS"}, False),
        ({"result_state": "CANCELED"}, {"code": "CANCELED", "type": "CLIENT_ERROR"}, True),
        ({"result_state": "UPSTREAM_FAILED"}, {"code": "SKIPPED"}, False),
        ({"result_state": "EXCLUDED"}, {}, False),
        ({"result_state": "MAXIMUM_CONCURRENT_RUNS_REACHED"}, {}, True),
        ({"result_state": "SUCCESS_WITH_FAILURES"}, {"code": "SUCCESS_WITH_FAILURES"}, False),
        ({"life_cycle_state": "INTERNAL_ERROR"}, {}, True),
        ({"result_state": "SOMETHING_NEW"}, {}, True),
        ({"result_state": "SOMETHING_NEW"}, {"code": "ALSO_NEW", "type": "SUCCESS"}, False),
        ({}, {"code": "ALSO_NEW", "type": "BRAND_NEW_TYPE"}, True),
        ({"life_cycle_state": "RUNNING"}, {}, False),
    ],
)
def test_is_failed(state: dict[str, str], details: dict[str, str], failed: bool) -> None:
    entry = {"state": state, "status": {"termination_details": details}}
    assert databricks_run_states.is_failed(entry) is failed


def test_the_tables_cover_every_sdk_enum_member() -> None:
    assert {m.value for m in jobs.RunResultState} <= set(databricks_run_states.RESULT_STATE_IS_FAILURE)
    assert {m.value for m in jobs.TerminationCodeCode} <= set(databricks_run_states.TERMINATION_CODE_IS_FAILURE)
    assert {m.value for m in jobs.TerminationTypeType} <= set(databricks_run_states.TERMINATION_TYPE_IS_FAILURE)
    assert {m.value for m in compute.EventType} <= set(databricks_clusters.EVENT_TYPES)
    assert {m.value for m in compute.TerminationReasonType} <= set(databricks_clusters.REASON_TYPE_IS_FAILURE)
    assert {m.value for m in compute.LibraryInstallStatus} <= set(databricks.LIBRARY_STATUS_IS_FAILURE)
    statuses = compute.InitScriptExecutionDetailsInitScriptExecutionStatus
    assert {m.value for m in statuses} <= set(databricks_clusters.INIT_SCRIPT_STATUS_IS_FAILURE)


def test_extraction_does_not_change_its_input() -> None:
    for path in FIXTURE_FILES:
        case = load(path)
        before = copy.deepcopy(case["input"])
        run_case(case)
        assert case["input"] == before, path.stem


# Clusters --------------------------------------------------------------------------------------------------


def test_a_terminated_event_after_its_terminating_is_not_a_second_failure() -> None:
    reason = {"code": "DRIVER_UNREACHABLE", "type": "SERVICE_FAULT"}
    events = [{"cluster_id": "c", "timestamp": t, "type": kind, "details": {"reason": reason}}
              for t, kind in ((1, "TERMINATING"), (2, "TERMINATED"))]
    assert [f.key for f in extract_cluster_events({}, events)] == ["databricks:cluster:c:1"]


def test_an_unknown_event_type_with_an_unexpected_reason_is_a_failure() -> None:
    events = [{"cluster_id": "c", "timestamp": 5, "type": "SOMETHING_NEW",
               "details": {"reason": {"code": "NEW_CODE", "type": "CLOUD_FAILURE"}}},
              {"cluster_id": "c", "timestamp": 6, "type": "ANOTHER_NEW", "details": {}}]
    (failure,) = extract_cluster_events({"cluster_id": "c"}, events)
    assert (failure.error_code, failure.error_message) == ("NEW_CODE", "Cluster event: NEW_CODE")


@pytest.mark.parametrize(
    ("reason", "failed_start", "failed"),
    [
        ({"code": "USER_REQUEST"}, True, False),
        ({"code": "INACTIVITY", "type": "SUCCESS"}, False, False),
        ({"code": "JOB_FINISHED", "type": "SUCCESS"}, False, False),
        ({"code": "DRIVER_UNREACHABLE"}, False, True),
        ({"code": "X", "type": "SUCCESS"}, False, False),
        ({"code": "X", "type": "SUCCESS"}, True, True),
        ({"code": "X", "type": "NEW_TYPE"}, False, True),
        ({}, False, False),
        ({}, True, True),
    ],
)
def test_reason_is_failure(reason: dict[str, str], failed_start: bool, failed: bool) -> None:
    assert databricks_clusters.reason_is_failure(reason, failed_start=failed_start) is failed


def test_a_cluster_that_is_not_terminated_gives_none() -> None:
    assert extract_cluster_state({"cluster_id": "c", "state": "RUNNING",
                                  "termination_reason": {"code": "X", "type": "CLIENT_ERROR"}}) is None


# Libraries and webhooks ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("ERROR: No matching distribution found for foo==9", "PYPI_NO_MATCHING_DISTRIBUTION"),
        ("ERROR: Cannot install a and b because these package versions have conflicting dependencies.",
         "PYPI_DEPENDENCY_CONFLICT"),
        ("error: subprocess-exited-with-error × Building wheel for x", "PYPI_BUILD_FAILED"),
        ("Library resolution failed because unresolved dependency: a:b:1: not found", "MAVEN_UNRESOLVED_DEPENDENCY"),
        ("'Manage' permissions are required to install libraries on a cluster", "LIBRARY_PERMISSION_DENIED"),
        ("ERROR: HTTP error 403 while getting https://pypi.contoso.com/x.whl", "REPOSITORY_AUTH_FAILED"),
        ("WARNING: Retrying ... Max retries exceeded with url: /simple/x/", "REPOSITORY_UNREACHABLE"),
        ("java.io.FileNotFoundException: dbfs:/x.jar", "LIBRARY_FILE_NOT_FOUND"),
        ("Error Code: DRIVER_LIBRARY_INSTALLATION_FAILURE. Error Message: boom", "DRIVER_LIBRARY_INSTALLATION_FAILURE"),
        ("something odd", "LIBRARY_INSTALL_FAILED"),
    ],
)
def test_library_error_codes(message: str, code: str) -> None:
    entry = {"cluster_id": "c", "library_statuses": [
        {"library": {"pypi": {"package": "foo"}}, "status": "FAILED", "messages": [message]}]}
    (failure,) = extract_library_statuses(entry)
    assert failure.error_code == code


def test_an_unknown_library_status_is_a_failure_only_when_it_says_so() -> None:
    entry = {"cluster_id": "c", "library_statuses": [
        {"library": {"jar": "a.jar"}, "status": "FAILED_NEWLY", "messages": ["x"]},
        {"library": {"jar": "b.jar"}, "status": "PAUSED", "messages": ["y"]}]}
    assert [f.key for f in extract_library_statuses(entry)] == ["databricks:library:c:jar:a.jar"]


def test_a_webhook_takes_the_time_it_was_received() -> None:
    received = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    payload = {"event_type": "jobs.on_failure", "run": {"run_id": 5}, "job": {"job_id": 6, "name": "j"}}
    (failure,) = extract_webhook(payload, host="https://h", received_at=received)
    assert (failure.occurred_at, failure.resource_id) == (received, "https://h#job/6")
    assert "occurred_at_unknown" not in failure.metadata


# Garbage ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (42, "expected a Databricks JSON object or array, got int"),
        ("text", "expected a Databricks JSON object or array, got str"),
        ({"foo": 1, "bar": 2}, "unrecognised Databricks payload: not a run, output, event, cluster, library "
                               "status or webhook (keys: foo, bar)"),
        ({}, "unrecognised Databricks payload: not a run, output, event, cluster, library status or webhook "
             "(keys: none)"),
        ([{"run_id": 1, "tasks": []}, 7], "item 1: expected a Databricks JSON object or array, got int"),
        ({"run_id": "abc", "tasks": []}, "runs/get response has no numeric run_id (got 'abc')"),
        ({"run_id": 1, "tasks": "x"}, "tasks must be a list, not str"),
        ({"run_id": 1, "tasks": [{"run_id": 2, "state": {"result_state": "FAILED"}}]},
         "run 1 has a task without task_key"),
        ({"run_id": 1, "state": {"result_state": "FAILED"}}, "run 1 has no end_time or start_time"),
        ({"run": {"run_id": 1}, "outputs": {"abc": {}}},
         "bundle outputs must map task run ids to get-output objects ('abc')"),
        ({"runs": [3]}, "runs[0] must be a JSON object, not int"),
        ({"events": [{"cluster_id": "c", "type": "RUNNING"}]}, "event 0 has no timestamp (epoch milliseconds)"),
        ({"events": [{"timestamp": 5, "type": "RUNNING"}]}, "event 0 names no cluster_id"),
        ({"events": ["x"]}, "event 0 has no timestamp (epoch milliseconds)"),
        ({"cluster_id": "c", "state": "TERMINATED", "termination_reason": {"code": "X", "type": "CLIENT_ERROR"}},
         "terminated cluster c has no cluster_id or terminated_time"),
        ({"statuses": [{"library_statuses": []}]}, "statuses[0]: library status entry has no cluster_id"),
        ({"cluster_id": "c", "library_statuses": "x"}, "library_statuses must be a list, not str"),
        ({"event_type": "jobs.on_something"}, "unknown Databricks webhook event_type 'jobs.on_something'"),
        ({"event_type": "jobs.on_failure", "run": {"run_id": "run_id"}},
         "webhook run has no numeric run_id (got 'run_id')"),
        ({"event_type": "jobs.on_failure"}, "webhook run must be a JSON object, not NoneType"),
    ],
)
def test_garbage_is_refused_with_a_one_line_reason(payload: Any, reason: str) -> None:
    assert refusal(extract_payload, payload) == reason


@pytest.mark.parametrize(
    "payload",
    [
        {"RunId": "x", "PipelineName": "p"},
        {"tables": []},
        [],
        [{"run_id": 1, "tasks": []}, {"foo": 1}],
        "run",
    ],
)
def test_not_databricks(payload: Any) -> None:
    assert not looks_like_databricks(payload)
    if isinstance(payload, dict):
        assert payload_shape(payload) is None
