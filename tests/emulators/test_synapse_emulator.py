"""The Synapse dev-endpoint emulator, driven by the real azure-synapse-artifacts ArtifactsClient over HTTPS."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError
from azure.synapse.artifacts import ArtifactsClient
from azure.synapse.artifacts.models import RunFilterParameters, RunQueryFilter

from poller.azure_auth import StaticTokenCredential
from poller.emulators.synapse import DEMO_DATA, SynapseEmulator, load_runs
from poller.sources.synapse_enrichment import SynapseRunsClient, SynapseUnavailable

TOKEN = "synapse-test-token"
RUN = "d2f4a6c8-0e1b-4d3f-a5c7-e9f1b3d5a7c9"
AT = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


def activity(name: str, status: str, minutes: int, run_id: str = RUN, **extra: Any) -> dict[str, Any]:
    end = AT + timedelta(minutes=minutes)
    return {
        "pipelineName": "pl_load_lakehouse", "pipelineRunId": run_id, "activityName": name, "activityType": "Copy",
        "activityRunId": f"{name}-{run_id}", "status": status,
        "activityRunStart": (end - timedelta(minutes=1)).isoformat(),
        "activityRunEnd": end.isoformat(), "durationInMs": 60000, "input": {}, "output": {},
        "error": {"errorCode": "2200", "message": f"{name} broke", "failureType": "UserError", "target": name}
        if status == "Failed" else {"errorCode": "", "message": "", "failureType": "", "target": name},
        **extra,
    }


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[SynapseEmulator]:
    runs = [activity(f"Copy_{n}", "Failed" if n % 2 else "Succeeded", n) for n in range(1, 8)]
    runs.append(activity("Copy_other_run", "Failed", 3, run_id="99999999-0000-4000-8000-000000000000"))
    with SynapseEmulator(runs, expected_token=TOKEN, page_size=2) as emu:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(emu.ca_path))
        yield emu


def client(emu: SynapseEmulator, token: str = TOKEN, retries: int = 0) -> ArtifactsClient:
    return ArtifactsClient(StaticTokenCredential(token, "T"), emu.url, retry_total=retries, retry_backoff_factor=0.01)


def failed_filter(after: datetime = AT, before: datetime = AT + timedelta(hours=1)) -> RunFilterParameters:
    return RunFilterParameters(
        last_updated_after=after, last_updated_before=before,
        filters=[RunQueryFilter(operand="Status", operator="Equals", values=["Failed"])],
    )


def test_query_activity_runs_filters_and_pages(emulator: SynapseEmulator) -> None:
    with client(emulator) as artifacts:
        first = artifacts.pipeline_run.query_activity_runs("pl_load_lakehouse", RUN, failed_filter())
        names = [run.activity_name for run in first.value]
        token = first.continuation_token
        while token:
            page = artifacts.pipeline_run.query_activity_runs(
                "pl_load_lakehouse", RUN,
                RunFilterParameters(last_updated_after=AT, last_updated_before=AT + timedelta(hours=1),
                                    continuation_token=token,
                                    filters=[RunQueryFilter(operand="Status", operator="Equals", values=["Failed"])]))
            names += [run.activity_name for run in page.value]
            token = page.continuation_token
    assert names == ["Copy_1", "Copy_3", "Copy_5", "Copy_7"]
    assert first.value[0].error["message"] == "Copy_1 broke" and first.value[0].status == "Failed"
    (request, *_) = emulator.requests
    assert request.path == f"/pipelines/pl_load_lakehouse/pipelineruns/{RUN}/queryActivityruns"
    assert request.api_version == "2020-12-01" and request.status == 200
    assert request.body is not None and set(request.body) == {"lastUpdatedAfter", "lastUpdatedBefore", "filters"}


def test_the_update_window_bounds_the_runs(emulator: SynapseEmulator) -> None:
    with client(emulator) as artifacts:
        page = artifacts.pipeline_run.query_activity_runs(
            "pl_load_lakehouse", RUN, failed_filter(AT + timedelta(minutes=4), AT + timedelta(minutes=6)))
    assert [run.activity_name for run in page.value] == ["Copy_5"]


def test_auth_api_version_and_faults(emulator: SynapseEmulator) -> None:
    with client(emulator, token="someone-else") as artifacts, pytest.raises(ClientAuthenticationError):
        artifacts.pipeline_run.query_activity_runs("pl_load_lakehouse", RUN, failed_filter())
    with client(emulator) as artifacts:
        with pytest.raises(HttpResponseError) as raised:
            artifacts.pipeline_run.query_activity_runs("pl_load_lakehouse", RUN, failed_filter(),
                                                       api_version="2019-06-01-preview")
        assert raised.value.status_code == 400
        emulator.inject(503)
        with pytest.raises(HttpResponseError) as raised:
            artifacts.pipeline_run.query_activity_runs("pl_load_lakehouse", RUN, failed_filter())
        assert raised.value.status_code == 503
    emulator.inject(503, times=2)
    with client(emulator, retries=2) as artifacts:  # azure-core retries 5xx itself
        assert artifacts.pipeline_run.query_activity_runs("pl_load_lakehouse", RUN, failed_filter()).value
    assert [r.status for r in emulator.requests][-3:] == [503, 503, 200]


def test_down_then_up_on_the_same_port(emulator: SynapseEmulator) -> None:
    url = emulator.url
    emulator.stop()
    with client(emulator) as artifacts, pytest.raises(ServiceRequestError):
        artifacts.pipeline_run.query_activity_runs("pl_load_lakehouse", RUN, failed_filter())
    emulator.start()
    assert emulator.url == url
    with client(emulator) as artifacts:
        assert len(artifacts.pipeline_run.query_activity_runs("pl_load_lakehouse", RUN, failed_filter()).value) == 2


def test_the_wrapper_gathers_every_page_and_says_why_it_could_not(emulator: SynapseEmulator) -> None:
    runs = SynapseRunsClient(emulator.url, StaticTokenCredential(TOKEN, "T"), retry_total=0,
                             timeout=timedelta(seconds=5))
    try:
        found = runs.failed_activities("pl_load_lakehouse", RUN, AT, AT + timedelta(hours=1))
        assert [a["activity_name"] for a in found] == ["Copy_1", "Copy_3", "Copy_5", "Copy_7"]
        assert found[0]["error"]["errorCode"] == "2200"
        emulator.inject(500)
        with pytest.raises(SynapseUnavailable, match="answered HTTP 500"):
            runs.failed_activities("pl_load_lakehouse", RUN, AT, AT + timedelta(hours=1))
        emulator.stop()
        with pytest.raises(SynapseUnavailable, match="cannot reach"):
            runs.failed_activities("pl_load_lakehouse", RUN, AT, AT + timedelta(hours=1))
    finally:
        runs.close()


def test_demo_data_loads_and_shifts() -> None:
    runs = load_runs(DEMO_DATA)
    with SynapseEmulator(runs) as emu:
        emu.shift(timedelta(days=1))
        assert emu.url.startswith("https://127.0.0.1:")
    assert {run["pipelineName"] for run in runs} == {"pl_load_lakehouse", "pl_archive_raw"}
