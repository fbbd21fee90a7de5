"""ADF rows in legacy AzureDiagnostics mode, from tests/testdata/adf_diagnostics/: the same failures as the
resource-specific rows they mirror."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from poller.errors import ExtractError
from poller.extractors import detect_service, extract
from poller.extractors.adf import extract_row
from poller.extractors.adf_diagnostics import flattened_parameters, to_resource_specific
from tests.extractors.expect import assert_matches

TESTDATA = Path(__file__).parent.parent / "testdata"
FIXTURES = sorted((TESTDATA / "adf_diagnostics").glob("*.json"))
MIRRORS = [path for path in FIXTURES if "mirrors" in json.loads(path.read_text())]
FIELDS = ("key", "kind", "service", "resource", "resource_id", "run_id", "error_code", "error_message", "failure_type")
#: Columns the source's KQL joins onto a resource-specific activity row; a raw AzureDiagnostics row has none.
JOINED = ("PipelineStatus", "PipelineParameters", "PipelineErrorMessage", "PipelineStart", "PipelineEnd",
          "PipelineAnnotations", "IngestedAt")


def load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text(encoding="utf-8")))


def test_there_are_at_least_10_fixtures() -> None:
    assert len(FIXTURES) >= 10 and len(MIRRORS) >= 10


@pytest.mark.parametrize("path", FIXTURES, ids=[path.stem for path in FIXTURES])
def test_fixture(path: Path) -> None:
    case = load(path)
    if "error" in case:
        with pytest.raises(ExtractError) as caught:
            extract(case["input"], service=case.get("service"))
        assert str(caught.value) == case["error"]
        return
    assert detect_service(case["input"]) == "adf"
    failures = extract(case["input"])
    assert_matches(failures, case["expected"], "adf")
    assert all(failure.raw is case["input"] for failure in failures)


@pytest.mark.parametrize("path", MIRRORS, ids=[path.stem for path in MIRRORS])
def test_the_same_run_gives_the_same_failure_from_either_table(path: Path) -> None:
    case = load(path)
    resource_specific = load(TESTDATA / case["mirrors"])["input"]
    raw_row = {column: value for column, value in resource_specific.items() if column not in JOINED}
    from_diagnostics, from_table = extract_row(case["input"]), extract_row(raw_row)
    if from_table is None:
        assert from_diagnostics is None
        return
    assert from_diagnostics is not None
    assert from_diagnostics.to_json() == from_table.to_json()


def test_flattened_parameters_columns_win_over_the_overflow_bag() -> None:
    row = {"Parameters_region_s": "emea", "Parameters_size_d": 3.0, "Parameters_gone_s": " ", "Other_s": "x"}
    bag = {"Parameters_region": "apac", "Parameters_extra_s": "y"}
    assert flattened_parameters(row, bag) == {"region": "emea", "size": 3, "extra": "y"}


def test_null_guid_rendered_by_the_sdk_counts_as_missing() -> None:
    case = load(TESTDATA / "adf_diagnostics" / "mirror_copy_blob_not_exist.json")["input"]
    shaped = to_resource_specific({**case, "runId_g": "None"})
    assert "RunId" not in shaped
    assert shaped["Type"] == "ADFActivityRun" and shaped["ActivityRunId"] == case["activityRunId_g"]


def test_a_kql_shaped_row_keeps_its_own_columns() -> None:
    case = load(TESTDATA / "adf_diagnostics" / "kql_shaped_activity_with_joined_pipeline.json")["input"]
    shaped = to_resource_specific(case)
    assert shaped["ErrorMessage"] == case["ErrorMessage"] and shaped["End"] == case["End"]
    assert shaped["PipelineParameters"] == {"invoiceDate": "2024-09-01", "vendor": "ACME"}
