"""ADF rules, from the JSON fixtures in tests/testdata/adf/ and a few table-driven edge cases."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from poller.errors import ExtractError
from poller.extractors import EXTRACTORS, detect_service, extract, extract_adf
from poller.extractors.adf import (
    CONTAINER_ACTIVITY_TYPES,
    extract_activity,
    extract_pipeline,
    extract_row,
)
from poller.extractors.cleaning import clean_message
from poller.models import iso
from tests.extractors.expect import assert_matches

FIXTURES = Path(__file__).parent.parent / "testdata" / "adf"
FIXTURE_FILES = sorted(FIXTURES.glob("*.json"))
FAILURE_FIELDS = (
    "key", "kind", "service", "resource", "resource_id", "run_id",
    "error_code", "error_message", "failure_type",
)
BLOB_ROW = "copy_blob_not_exist.json"
INNER_FAILED = "Activity failed because an inner activity failed"


def load(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        return dict(json.load(handle))


def refusal(call: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """The message of the ExtractError a call raises (it must raise one, on one line)."""
    with pytest.raises(ExtractError) as caught:
        call(*args, **kwargs)
    reason = str(caught.value)
    assert "\n" not in reason
    return reason


def test_there_are_at_least_30_fixtures() -> None:
    assert len(FIXTURE_FILES) >= 30


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=[path.stem for path in FIXTURE_FILES])
def test_fixture(path: Path) -> None:
    case = load(path)
    assert_matches(extract(case["input"]), case["expected"], "adf")


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=[path.stem for path in FIXTURE_FILES])
def test_fixture_with_forced_service(path: Path) -> None:
    case = load(path)
    assert_matches(extract(case["input"], service="adf"), case["expected"], "adf")
    assert detect_service(case["input"]) == "adf"


def test_raw_is_the_row_as_given_and_the_row_is_not_changed() -> None:
    row = load(FIXTURES / BLOB_ROW)["input"]
    before = copy.deepcopy(row)
    failure = extract_row(row)
    assert failure is not None
    assert failure.raw is row
    assert row == before


def test_datetime_objects_from_the_sdk_are_read_as_utc() -> None:
    row = load(FIXTURES / BLOB_ROW)["input"]
    row["End"] = datetime(2024, 5, 14, 4, 17, 39, 905127, tzinfo=timezone(timedelta(hours=2)))
    failure = extract_row(row)
    assert failure is not None
    assert failure.occurred_at == datetime(2024, 5, 14, 2, 17, 39, 905127, tzinfo=UTC)
    row["End"] = datetime(1601, 1, 1, tzinfo=UTC)
    row["TimeGenerated"] = datetime(2024, 5, 14, 2, 17, 41)  # naive: Log Analytics times are UTC
    failure = extract_row(row)
    assert failure is not None
    assert failure.occurred_at == datetime(2024, 5, 14, 2, 17, 41, tzinfo=UTC)


def test_error_as_dict_and_as_json_text_give_the_same_failure() -> None:
    row = load(FIXTURES / "copy_sql_replace_function.json")["input"]
    as_dict = {**row, "Error": json.loads(row["Error"])}
    from_text, from_dict = extract_row(row), extract_row(as_dict)
    assert from_text is not None and from_dict is not None
    assert from_text.to_json() == from_dict.to_json()


def test_time_falls_back_to_start_when_end_and_time_generated_are_missing() -> None:
    row = load(FIXTURES / BLOB_ROW)["input"]
    row = {**row, "End": None, "TimeGenerated": ""}
    failure = extract_row(row)
    assert failure is not None
    assert iso(failure.occurred_at) == "2024-05-14T02:16:02.118342Z"


def test_type_dispatch_and_direct_calls_agree() -> None:
    activity = load(FIXTURES / BLOB_ROW)["input"]
    pipeline = load(FIXTURES / "pipeline_web_2108.json")["input"]
    assert extract_row(activity) == extract_activity(activity)
    assert extract_row(pipeline) == extract_pipeline(pipeline)
    untyped = {key: value for key, value in pipeline.items() if key != "Type"}
    failure = extract_row(untyped)
    assert failure is not None and failure.key == f"adf:pipeline:{pipeline['RunId']}"


def test_container_types_are_a_module_level_set() -> None:
    assert {"ForEach", "Until", "IfCondition", "Switch", "ExecutePipeline"} <= CONTAINER_ACTIVITY_TYPES


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"ActivityRunId": ""}, "ADF activity row has no ActivityRunId"),
        ({"End": "yesterday"}, "End is not an ISO 8601 time: 'yesterday'"),
        ({"End": 1715653059}, "End is not a time: int"),
        ({"End": None, "TimeGenerated": None, "Start": None},
         "ADF row has no End, TimeGenerated or Start time"),
    ],
)
def test_unreadable_activity_rows_raise(change: dict[str, Any], reason: str) -> None:
    row = {**load(FIXTURES / BLOB_ROW)["input"], **change}
    assert refusal(extract_row, row) == reason


def test_pipeline_row_without_run_id_raises() -> None:
    row = {**load(FIXTURES / "pipeline_web_2108.json")["input"], "RunId": None}
    assert refusal(extract_row, row) == "ADF pipeline row has no RunId"


def test_row_without_any_id_raises() -> None:
    row = {"PipelineName": "pl", "Status": "Failed"}
    assert refusal(extract_row, row) == "ADF row has no ActivityRunId, RunId or PipelineRunId"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("ErrorCode=2200 Copy failed", "expected a JSON object or array, got str"),
        ([1, 2, 3], "item 0: expected a JSON object or array, got int"),
        ({"hello": "world", "answer": 42},
         "unrecognised payload: not a known row, response or alert (keys: hello, answer)"),
        (42, "expected a JSON object or array, got int"),
        (None, "expected a JSON object or array, got NoneType"),
        ({"tables": "nope"}, "'tables' is not an array"),
        ({"tables": [{"name": "t", "columns": [{"name": "a"}], "rows": [[1, 2]]}]},
         "table 't' row 0 does not match its 1 columns"),
        ({"tables": [{"name": "t", "columns": [{"type": "string"}], "rows": []}]},
         "table 't' has a column without a name"),
    ],
)
def test_garbage_raises_a_one_line_extract_error(payload: Any, reason: str) -> None:
    assert refusal(extract, payload) == reason


def test_garbage_under_a_forced_service_raises_too() -> None:
    assert refusal(extract, {"hello": "world"}, service="adf") == (
        "ADF row has no ActivityRunId, RunId or PipelineRunId"
    )
    rows = [load(FIXTURES / BLOB_ROW)["input"], "x"]
    assert refusal(extract, rows, service="adf") == "item 1: expected a JSON object or array, got str"


@pytest.mark.parametrize(
    ("payload", "service"),
    [
        ({"Type": "SynapseIntegrationActivityRuns", "ActivityRunId": "a", "PipelineRunId": "p"}, "synapse"),
        ({"Type": "AppExceptions", "OuterMessage": "boom"}, "functions"),
        ({"_ResourceId": "/subscriptions/s/resourcegroups/r/providers/microsoft.web/sites/func-orders",
          "Message": "x"}, "functions"),
        ({"event_type": "jobs.on_failure", "run": {"run_id": 1}, "job": {"job_id": 2}}, "databricks"),
        ({"cluster_id": "0514-021700-abcd1234", "type": "DRIVER_NOT_RESPONDING"}, "databricks"),
    ],
)
def test_other_services_are_recognised_but_not_extracted_yet(payload: dict[str, Any], service: str) -> None:
    assert detect_service(payload) == service
    if service not in EXTRACTORS:  # a service gets its extractor by one entry in EXTRACTORS
        assert refusal(extract, payload) == f"no extractor for service {service} yet"


def test_unknown_forced_service_raises() -> None:
    assert refusal(extract, {}, service="kafka") == (
        "unknown service 'kafka'; known: adf, synapse, functions, databricks"
    )


def test_registry_and_empty_payloads() -> None:
    assert EXTRACTORS["adf"] is extract_adf
    assert extract([]) == []
    assert extract({"tables": [{"name": "PrimaryResult", "columns": [], "rows": []}]}) == []


def test_mixed_services_in_one_array_raise() -> None:
    rows = [load(FIXTURES / BLOB_ROW)["input"], {"Type": "AppExceptions", "OuterMessage": "x"}]
    assert refusal(extract, rows) == "array mixes services: adf, functions"


@pytest.mark.parametrize(
    ("raw", "text", "targets", "forwarded"),
    [
        ("  a\r\n\tb  ", "a b", (), False),
        ("\x1b[0;31mValueError\x1b[0m: bad", "ValueError: bad", (), False),
        ("Operation on target A failed: Operation on target B C failed: x", "x", ("A", "B C"), True),
        ("Operation on target A failed: Activity failed because an inner activity failed; "
         "Inner activity name: B, Error: Operation on target C failed: boom", "boom", ("A", "B", "C"), True),
        (INNER_FAILED, INNER_FAILED, (), True),
        ("Operation on target A failed:", "Operation on target A failed:", ("A",), True),
        ("'Type=X,Message=m,Source=S,'", "'Type=X,Message=m,Source=S,'", (), False),
    ],
)
def test_clean_message(raw: str, text: str, targets: tuple[str, ...], forwarded: bool) -> None:
    cleaned = clean_message(raw)
    assert (cleaned.text, cleaned.targets, cleaned.forwarded) == (text, targets, forwarded)
