"""Synapse pipeline rules, from tests/testdata/synapse/: error text from the logs, from the API, or pending."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from poller.errors import ExtractError
from poller.extractors import EXTRACTORS, detect_service, extract, extract_synapse
from poller.extractors.synapse import NO_TEXT_MESSAGE, PENDING_MESSAGE, extract_row, has_error_text
from poller.models import iso

FIXTURES = sorted((Path(__file__).parent.parent / "testdata" / "synapse").glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text(encoding="utf-8")))


def test_there_are_at_least_10_fixtures() -> None:
    assert len(FIXTURES) >= 10


@pytest.mark.parametrize("path", FIXTURES, ids=[path.stem for path in FIXTURES])
def test_fixture(path: Path) -> None:
    case = load(path)
    assert detect_service(case["input"]) == "synapse"
    got = [failure.to_json() for failure in extract(case["input"])]
    for failure in got:
        assert failure.pop("source") is None and failure.pop("detected_at") is None
    assert got == case["expected"]
    assert extract(case["input"], service="synapse") == extract(case["input"])


def test_registry() -> None:
    assert EXTRACTORS["synapse"] is extract_synapse


def test_keys_messages_and_pending_state() -> None:
    by_name = {path.stem: load(path) for path in FIXTURES}
    pending = by_name["activity_pending_endpoint_down"]["expected"][0]
    assert pending["key"] == "synapse:activity:9d1f3b5a-7c9e-4b1d-8f3a-5c7e9b1d3f48"
    assert pending["error_message"] == PENDING_MESSAGE and pending["metadata"]["error_pending"] is True
    unavailable = by_name["activity_unavailable_no_endpoint"]["expected"][0]
    assert unavailable["error_message"] == NO_TEXT_MESSAGE and "error_pending" not in unavailable["metadata"]
    enriched = by_name["activity_enriched_from_api_notebook"]["expected"][0]
    assert (enriched["error_code"], enriched["metadata"]["error_source"]) == ("6002", "synapse_api")
    assert enriched["metadata"]["workspace"] == "syn-contoso-prod"


def test_enriched_row_replaces_the_pending_failure_under_the_same_key() -> None:
    pending_row = load(FIXTURES[0].parent / "activity_pending_endpoint_down.json")["input"]
    error = {"errorCode": "2011", "message": "Notebook failed: NameError: name 'spark_df' is not defined",
             "failureType": "UserError", "target": "Notebook_Curate"}
    later = {k: v for k, v in pending_row.items() if k != "ErrorPending"}
    later |= {"Error": error, "ErrorSource": "synapse_api"}
    first, second = extract_row(pending_row), extract_row(later)
    assert first is not None and second is not None
    assert first.key == second.key
    assert (second.error_message, second.error_code) == (error["message"], "2011")
    assert "error_pending" not in second.metadata and iso(second.occurred_at) == iso(first.occurred_at)


@pytest.mark.parametrize(
    ("row", "has_text"),
    [
        ({"Error": ""}, False),
        ({"Error": "null", "ErrorMessage": "null"}, False),
        ({"Error": {"message": "boom"}}, True),
        ({"Error": '{"message": "boom"}'}, True),
        ({"ErrorMessage": "boom"}, True),
        ({"PipelineErrorMessage": "Operation on target X failed: boom"}, True),
    ],
)
def test_has_error_text(row: dict[str, Any], has_text: bool) -> None:
    assert has_error_text(row) is has_text


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"Type": "SynapseIntegrationActivityRuns", "Status": "Failed", "ActivityRunId": ""},
         "Synapse activity row has no ActivityRunId"),
        ({"Type": "SynapseIntegrationPipelineRuns", "Status": "Failed", "RunId": "r", "ErrorMessage": "x"},
         "Synapse row has no End, TimeGenerated or Start time"),
    ],
)
def test_unreadable_rows_raise_one_line(row: dict[str, Any], reason: str) -> None:
    with pytest.raises(ExtractError) as caught:
        extract(row, service="synapse")
    assert str(caught.value) == reason
