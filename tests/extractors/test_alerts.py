"""Alert payloads (reference §7 samples and ADF variants of each shape), from tests/testdata/alerts/."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from poller.errors import ExtractError
from poller.extractors import detect_service, extract
from poller.extractors.alerts import arm_type, extract_alert, read_alert
from tests.extractors.expect import assert_matches

FIXTURES = Path(__file__).parent.parent / "testdata" / "alerts"
FIXTURE_FILES = sorted(FIXTURES.glob("*.json"))
FAILURE_FIELDS = (
    "key", "kind", "service", "resource", "resource_id", "run_id",
    "error_code", "error_message", "failure_type",
)


def load(name: str | Path) -> dict[str, Any]:
    path = name if isinstance(name, Path) else FIXTURES / f"{name}.json"
    with path.open(encoding="utf-8") as handle:
        return dict(json.load(handle))


def test_every_reference_section_7_sample_is_a_fixture() -> None:
    names = {path.stem for path in FIXTURE_FILES}
    assert {
        "ref_7_1_envelope_skeleton",
        "ref_7_2_log_alerts_v2_vm_heartbeat",
        "ref_7_2_log_alerts_v2_adf_dimensions",
        "ref_7_3_metric_vm_cpu",
        "ref_7_3_metric_adf_pipeline_failed_runs",
    } <= names


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=[path.stem for path in FIXTURE_FILES])
def test_fixture(path: Path) -> None:
    case = load(path)
    if "error" in case:
        with pytest.raises(ExtractError) as caught:
            extract(case["input"])
        assert str(caught.value) == case["error"]
    else:
        service = case.get("service", "adf")
        assert detect_service(case["input"]) == service
        failures = extract(case["input"])
        assert_matches(failures, case["expected"], service)
        assert extract(case["input"], service=service) == failures
        assert all(failure.raw is case["input"] for failure in failures)


def test_a_v2_alert_gives_the_same_key_as_the_table_row_it_came_from() -> None:
    payload = load("log_alerts_v2_adf_activity_run_ids")["input"]
    dimensions = payload["data"]["alertContext"]["condition"]["allOf"][0]["dimensions"]
    row = {pair["name"]: pair["value"] for pair in dimensions}
    (failure,) = extract(payload)
    (from_row,) = extract({**row, "Type": "ADFActivityRun", "Status": "Failed"})
    assert failure.key == from_row.key
    assert failure.error_message == from_row.error_message
    assert failure.error_code == from_row.error_code


def test_non_adf_alert_forced_to_adf_is_refused() -> None:
    payload = load("ref_7_2_log_alerts_v2_vm_heartbeat")["input"]
    with pytest.raises(ExtractError) as caught:
        extract(payload, service="adf")
    assert str(caught.value) == (
        "alert carries no ADF rows and targets microsoft.compute/virtualmachines, not a data factory"
    )


def test_alert_without_any_id_to_key_by_is_refused() -> None:
    payload = load("ref_7_3_metric_adf_pipeline_failed_runs")["input"]
    essentials = payload["data"]["essentials"]
    essentials.pop("alertId")
    essentials.pop("originAlertId")
    payload["data"]["alertContext"]["condition"].pop("windowEndTime")
    with pytest.raises(ExtractError) as caught:
        extract_alert(payload)
    assert str(caught.value) == "alert has no alertId, originAlertId or rule and window to key it by"


def test_origin_alert_id_keys_an_alert_without_alert_id() -> None:
    payload = load("ref_7_3_metric_adf_pipeline_failed_runs")["input"]
    payload["data"]["essentials"].pop("alertId")
    (failure,) = extract(payload)
    assert failure.key == "adf:alert:<opaque>"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"schemaId": "azureMonitorCommonAlertSchema", "data": "x"},
         "alert payload has neither data.essentials nor AlertRuleName"),
        ({"schemaId": "azureMonitorCommonAlertSchema", "data": {"essentials": []}},
         "alert essentials is not a JSON object"),
        ({"data": {"essentials": {}, "alertContext": {"condition": {"allOf": ["x"]}}}},
         "alert condition.allOf[] is not a JSON object"),
        ({"data": {"essentials": {}, "alertContext": {"condition": {"allOf": [{"dimensions": "x"}]}}}},
         "alert dimensions are not an array of {name, value}"),
    ],
)
def test_malformed_alerts_raise_one_line(payload: dict[str, Any], reason: str) -> None:
    with pytest.raises(ExtractError) as caught:
        read_alert(payload)
    assert str(caught.value) == reason


def test_an_array_of_alerts_is_read_alert_by_alert() -> None:
    first = load("ref_7_3_metric_adf_pipeline_failed_runs")["input"]
    second = load("log_alerts_v2_adf_activity_run_ids")["input"]
    failures = extract([first, second])
    assert [failure.kind for failure in failures] == ["pipeline_run", "activity_run"]


@pytest.mark.parametrize(
    ("resource_id", "kind"),
    [
        ("/subscriptions/s/resourceGroups/r/providers/Microsoft.DataFactory/factories/adf1",
         "microsoft.datafactory/factories"),
        ("/SUBSCRIPTIONS/S/RESOURCEGROUPS/R/PROVIDERS/MICROSOFT.WEB/SITES/FUNC1/slots/staging",
         "microsoft.web/sites"),
        ("a0a0a0a0-bbbb-cccc-dddd-e1e1e1e1e1e1", ""),
        ("", ""),
    ],
)
def test_arm_type(resource_id: str, kind: str) -> None:
    assert arm_type(resource_id) == kind


JUNK: tuple[Any, ...] = (None, 0, 3.5, True, "", "null", "{", [], [1], {}, {"a": 1}, "x", [[1]], [{"name": 1}])


def mangled(value: Any, rng: random.Random) -> Any:
    """The value with some of its nested fields replaced by junk or dropped."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            roll = rng.random()
            if roll < 0.1:
                out[key] = rng.choice(JUNK)
            elif roll > 0.95:
                continue
            else:
                out[key] = mangled(item, rng)
        return out
    if isinstance(value, list):
        return [rng.choice(JUNK) if rng.random() < 0.05 else mangled(item, rng) for item in value]
    return value


def test_mangled_payloads_raise_nothing_but_extract_error() -> None:
    rng = random.Random(20240514)
    paths = sorted(FIXTURES.glob("*.json")) + sorted((FIXTURES.parent / "adf").glob("*.json"))
    inputs = [load(path)["input"] for path in paths]
    for _ in range(1500):
        payload = mangled(rng.choice(inputs), rng)
        for service in (None, "adf"):
            try:
                extract(payload, service=service)
            except ExtractError as exc:
                assert "\n" not in str(exc)
