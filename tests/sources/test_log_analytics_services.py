"""Synapse, Functions and legacy-mode ADF through the real LogsQueryClient and the emulator running our KQL."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from poller.azure_auth import build_credential
from poller.config import Config
from poller.emulators.log_analytics import LogAnalyticsEmulator
from poller.emulators.synapse import DEMO_DATA, SynapseEmulator, load_runs
from poller.extractors.synapse import PENDING_MESSAGE
from poller.models import Failure
from poller.pipeline import TickResult, tick
from poller.sources.base import Window
from poller.sources.log_analytics import LogAnalyticsSource
from poller.sources.log_analytics_plan import TablePresence
from poller.store import Store
from tests.conftest import TOKEN, Clock, activity_row, demo_rows, la_config, pipeline_row

RUN_A = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
RUN_B = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
WORKSPACE = "syn-analytics-prod"
ALL_SERVICES = ["adf", "synapse", "functions"]
PROBE = "// Which tables"
#: The demo data's epoch: the Synapse rows and the emulated API's runs are written around it.
START_A = datetime(2026, 11, 29, 10, tzinfo=UTC)


class Harness:
    """One configured source on the emulator and its store, ticking at the clock's time."""

    def __init__(self, tmp_path: Path, la: LogAnalyticsEmulator, clock: Clock, **source: Any) -> None:
        self.config: Config = la_config(tmp_path, la, **source)
        self.clock = clock
        self.store = Store(self.config.state.url)
        cfg = self.config.sources["adf-test"]
        self.source = LogAnalyticsSource("adf-test", cfg, build_credential(self.config.azure), lambda _: None)  # type: ignore[arg-type]

    def tick(self) -> TickResult:
        return tick(self.source, self.store, self.clock())

    def failures(self) -> dict[str, Failure]:
        return {failure.key: failure for failure in self.store.failures()}


# --- ADF in both modes ------------------------------------------------------------------------------------------


def as_diagnostics(row: dict[str, Any]) -> dict[str, Any]:
    """A resource-specific ADF row as legacy mode writes it to AzureDiagnostics (flattened, typed suffixes)."""
    activity = row["Type"] == "ADFActivityRun"
    error = json.loads(row["Error"]) if activity and row.get("Error") else {}
    out = {
        "TimeGenerated": row["TimeGenerated"], "_IngestionTime": row["_IngestionTime"], "Type": "AzureDiagnostics",
        "ResourceId": row["ResourceId"], "_ResourceId": row["_ResourceId"], "ResourceProvider": "MICROSOFT.DATAFACTORY",
        "ResourceType": "FACTORIES", "Resource": row["_ResourceId"].rsplit("/", 1)[-1].upper(),
        "Category": row["Category"], "OperationName": row["OperationName"], "Level": row["Level"],
        "CorrelationId": row["CorrelationId"], "pipelineName_s": row["PipelineName"], "status_s": row["Status"],
        "start_t": row["Start"], "end_t": row["End"],
        "Error_errorCode_s": error.get("errorCode") or row.get("ErrorCode", ""),
        "Error_message_s": error.get("message") or row.get("ErrorMessage", ""),
        "Error_failureType_s": error.get("failureType") or row.get("FailureType", ""),
    }
    if activity:
        out.update(activityRunId_g=row["ActivityRunId"].upper(), pipelineRunId_g=row["PipelineRunId"].upper(),
                   activityName_s=row["ActivityName"], activityType_s=row["ActivityType"],
                   effectiveIntegrationRuntime_s=row.get("EffectiveIntegrationRuntime", ""),
                   linkedServiceName_s=row.get("LinkedServiceName", ""),
                   activityIterationCount_d=float(row["ActivityIterationCount"]))
    else:
        out["runId_g"] = row["RunId"].upper()
        for name, value in json.loads(row.get("Parameters") or "{}").items():
            number = isinstance(value, int | float) and not isinstance(value, bool)
            out[f"Parameters_{name}_{'d' if number else 's'}"] = float(value) if number else value
    return out


def adf_rows(clock: Clock) -> dict[str, list[dict[str, Any]]]:
    """A failed activity with its pipeline run (RUN_A), and a failed pipeline with no failed activity (RUN_B)."""
    at = clock.now - timedelta(minutes=40)
    return {
        "ADFActivityRun": [activity_row("Copy_SalesOrders", run_id=RUN_A, at=at, ingested=at + timedelta(minutes=4))],
        "ADFPipelineRun": [
            pipeline_row("pl_sales_daily_load", run_id=RUN_A, at=at, ingested=at + timedelta(minutes=3)),
            pipeline_row("pl_monthly_close", run_id=RUN_B, at=at, ingested=at + timedelta(minutes=2)),
        ],
    }


def load_adf(la: LogAnalyticsEmulator, rows: dict[str, list[dict[str, Any]]], modes: tuple[str, ...]) -> None:
    for table, table_rows in rows.items():
        if "resource_specific" in modes:
            la.add_rows(table, copy.deepcopy(table_rows))
        if "azure_diagnostics" in modes:
            la.add_rows("AzureDiagnostics", [as_diagnostics(row) for row in table_rows])


def adf_failures(
    tmp_path: Path, clock: Clock, rows: dict[str, list[dict[str, Any]]], modes: tuple[str, ...], **source: Any
) -> tuple[list[dict[str, Any]], int]:
    """The failures one tick stores for the ADF runs logged in the given modes, and the rows the tick read."""
    with LogAnalyticsEmulator(clock=clock, expected_token=TOKEN) as la:
        load_adf(la, rows, modes)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("REQUESTS_CA_BUNDLE", str(la.ca_path))
            patch.setenv("AZURE_ACCESS_TOKEN", TOKEN)
            harness = Harness(tmp_path / "-".join(modes), la, clock, **source)
            result = harness.tick()
        assert result.ok, result.error
        return [failure.to_json() for failure in harness.store.failures()], result.rows_read


def test_the_same_adf_run_gives_identical_failures_from_either_mode_or_both(tmp_path: Path, clock: Clock) -> None:
    rows = adf_rows(clock)
    specific, specific_rows = adf_failures(tmp_path, clock, rows, ("resource_specific",))
    legacy, legacy_rows = adf_failures(tmp_path, clock, rows, ("azure_diagnostics",))
    both, both_rows = adf_failures(tmp_path, clock, rows, ("resource_specific", "azure_diagnostics"))
    assert len(specific) == 2 and f"adf:pipeline:{RUN_B}" in {f["key"] for f in specific}
    assert specific == legacy == both
    assert specific_rows == legacy_rows == both_rows == 2  # one row per run: the query never emits both copies
    activity = next(f for f in specific if f["kind"] == "activity_run")
    assert activity["error_code"] == "SqlOperationFailed" and activity["metadata"]["parameters"]
    pipeline = next(f for f in specific if f["kind"] == "pipeline_run")
    assert (pipeline["error_code"], pipeline["metadata"]["parameters"]) == ("BadRequest", {"closingPeriod": 202611})


@pytest.mark.parametrize(
    ("adf_mode", "modes", "expected"),
    [
        ("resource_specific", ("azure_diagnostics",), 0),
        ("azure_diagnostics", ("resource_specific",), 0),
        ("azure_diagnostics", ("resource_specific", "azure_diagnostics"), 2),
        ("resource_specific", ("resource_specific", "azure_diagnostics"), 2),
    ],
)
def test_a_forced_adf_mode_reads_only_its_tables(
    tmp_path: Path, clock: Clock, adf_mode: str, modes: tuple[str, ...], expected: int
) -> None:
    failures, _ = adf_failures(tmp_path, clock, adf_rows(clock), modes, adf_mode=adf_mode)
    assert len(failures) == expected


def test_legacy_mode_queries_name_only_azure_diagnostics(
    tmp_path: Path, la: LogAnalyticsEmulator, clock: Clock
) -> None:
    load_adf(la, adf_rows(clock), ("azure_diagnostics",))
    h = Harness(tmp_path, la, clock)
    assert h.tick().added == 2
    queries = [r.query or "" for r in la.requests if not (r.query or "").startswith(PROBE)]
    assert len(queries) == 2 and all("ADFActivityRun\n" not in q and "AzureDiagnostics" in q for q in queries)


def test_the_probe_is_kept_while_every_table_is_found_then_repeated(
    tmp_path: Path, la: LogAnalyticsEmulator, clock: Clock
) -> None:
    load_adf(la, adf_rows(clock), ("resource_specific", "azure_diagnostics"))
    h = Harness(tmp_path, la, clock, table_probe_interval="30m")
    for _ in range(4):
        assert h.tick().ok
        clock.advance(minutes=10)
    probes = [r for r in la.requests if (r.query or "").startswith(PROBE)]
    assert len(probes) == 2  # ticks at 0 and 30 minutes


def test_a_table_not_found_is_asked_about_every_tick(tmp_path: Path, la: LogAnalyticsEmulator, clock: Clock) -> None:
    rows = adf_rows(clock)
    la.add_rows("ADFPipelineRun", rows["ADFPipelineRun"])
    h = Harness(tmp_path, la, clock)
    h.tick()
    la.add_rows("AzureDiagnostics", [as_diagnostics(row) for row in rows["ADFActivityRun"]])
    clock.advance(minutes=2)
    h.tick()
    probes = [r.query or "" for r in la.requests if (r.query or "").startswith(PROBE)]
    assert len(probes) == 2 and "ADFPipelineRun |" not in probes[1] and "AzureDiagnostics" in probes[1]
    assert {f.kind for f in h.failures().values()} == {"activity_run", "pipeline_run"}


def test_a_table_found_later_makes_the_poll_read_back_to_the_previous_probe() -> None:
    presence = TablePresence(["adf"], "auto", timedelta(hours=1))
    first, second = Window(START_A, START_A + timedelta(minutes=5)), Window(START_A + timedelta(minutes=20),
                                                                              START_A + timedelta(minutes=40))
    assert presence.record(first, presence.wanted, frozenset({"ADFActivityRun"})) == first.start
    asked = presence.to_probe(second)
    assert asked == ("ADFPipelineRun", "AzureDiagnostics")
    assert presence.record(second, asked, frozenset({"AzureDiagnostics"})) == first.start
    assert presence.found == {"ADFActivityRun", "AzureDiagnostics"}


# --- Functions --------------------------------------------------------------------------------------------------


def test_one_invocation_logged_several_times_is_one_failure(
    tmp_path: Path, la: LogAnalyticsEmulator, clock: Clock
) -> None:
    la.add_rows("AppExceptions", demo_rows("AppExceptions"), ingested_at=clock.now - timedelta(minutes=5))
    la.add_rows("FunctionAppLogs", demo_rows("FunctionAppLogs"), ingested_at=clock.now - timedelta(minutes=5))
    h = Harness(tmp_path, la, clock, services=["functions"])
    result = h.tick()
    assert result.ok and (result.rows_read, result.added) == (3, 3)
    failures = h.failures()
    order = failures["functions:invocation:5d7f9b1c-3e5a-4c7e-9a1b-3d5f7b9c1e2a"]
    assert (order.resource, order.error_code) == ("ProcessOrder", "Microsoft.Data.SqlClient.SqlException")
    assert order.error_message == (
        "Cannot insert duplicate key row in object 'sales.OrderLines' with unique index 'UX_OrderLines_Order_Line'. "
        "The duplicate key value is (100482, 3). The statement has been terminated."
    )
    assert order.metadata["exception_rows"] == 3 and order.metadata["function_app"] == "func-orders-prod"
    assert order.metadata["outer_message"] == "Exception while executing function: Functions.ProcessOrder"
    manifest = failures["functions:invocation:8e0a2c4d-6f8b-4d0e-a2c4-6e8f0a2b4c6d"]
    assert (manifest.error_code, manifest.error_message) == ("KeyError", "'batch_id'")
    assert manifest.metadata["item_count"] == 4 and manifest.metadata["sampled"] is True
    timeout = failures["functions:invocation:2c4e6a8b-0d2f-4a6c-8e0b-2d4f6a8c0e1b"]
    assert timeout.error_code == "Microsoft.Azure.WebJobs.Host.FunctionTimeoutException"
    assert timeout.metadata["table"] == "FunctionAppLogs"


def test_functions_with_only_function_app_logs(tmp_path: Path, la: LogAnalyticsEmulator, clock: Clock) -> None:
    la.add_rows("FunctionAppLogs", demo_rows("FunctionAppLogs"), ingested_at=clock.now - timedelta(minutes=5))
    h = Harness(tmp_path, la, clock, services=["functions"])
    assert h.tick().added == 2  # ProcessOrder's and NightlyReconcile's; the succeeded invocation is none
    order = h.failures()["functions:invocation:5d7f9b1c-3e5a-4c7e-9a1b-3d5f7b9c1e2a"]
    assert order.error_code == "Microsoft.Data.SqlClient.SqlException" and order.metadata["table"] == "FunctionAppLogs"


# --- Synapse ----------------------------------------------------------------------------------------------------


@pytest.fixture
def synapse(la: LogAnalyticsEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SynapseEmulator]:
    with SynapseEmulator(expected_token=TOKEN) as emulator:
        bundle = tmp_path / "ca-bundle.pem"
        bundle.write_text(la.ca_path.read_text() + emulator.ca_path.read_text())
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
        yield emulator


def load_synapse(la: LogAnalyticsEmulator, syn: SynapseEmulator, clock: Clock) -> None:
    ingested = clock.now - timedelta(minutes=30)
    for table in ("SynapseIntegrationPipelineRuns", "SynapseIntegrationActivityRuns"):
        la.add_rows(table, demo_rows(table), ingested_at=ingested)
    syn.add_activity_runs(load_runs(DEMO_DATA))


def synapse_harness(tmp_path: Path, la: LogAnalyticsEmulator, syn: SynapseEmulator, clock: Clock) -> Harness:
    return Harness(tmp_path, la, clock, services=["synapse"], synapse_endpoints={WORKSPACE: syn.url},
                   synapse_retries=0, synapse_timeout="5s", settle="1m", overlap="5m")


def harness_with_synapse_down(tmp_path: Path, la: LogAnalyticsEmulator, syn: SynapseEmulator,
                              clock: Clock) -> Harness:
    """The demo's Synapse rows in Log Analytics, the workspace's pipeline-run API unreachable."""
    clock.now = START_A + timedelta(minutes=40)
    load_synapse(la, syn, clock)
    syn.stop()
    return synapse_harness(tmp_path, la, syn, clock)


def test_synapse_error_text_is_fetched_from_the_workspace_api(
    tmp_path: Path, la: LogAnalyticsEmulator, synapse: SynapseEmulator, clock: Clock
) -> None:
    clock.now = START_A + timedelta(minutes=40)
    load_synapse(la, synapse, clock)
    h = synapse_harness(tmp_path, la, synapse, clock)
    result = h.tick()
    assert result.ok and result.added == 2, result
    failures = h.failures()
    notebook = failures["synapse:activity:91c3e5a7-b9d1-4f3a-8c5e-7a9b1d3f5e71"]
    assert notebook.error_message.startswith("AnalysisException: [UNRESOLVED_COLUMN.WITH_SUGGESTION] A column")
    assert (notebook.error_code, notebook.failure_type, notebook.resource) == ("6002", "UserError", "pl_load_lakehouse")
    assert notebook.metadata["error_source"] == "synapse_api" and notebook.metadata["workspace"] == WORKSPACE
    archive = failures["synapse:pipeline:f1a3c5e7-9b2d-4f6a-8c0e-2a4c6e8b0d19"]
    assert (archive.error_code, archive.metadata["activity_name"]) == ("AdlsGen2OperationFailed", "Delete_OldRawFiles")
    bodies = [r.body for r in synapse.requests]
    failed_only = [{"operand": "Status", "operator": "Equals", "values": ["Failed"]}]
    assert all(body and body["filters"] == failed_only for body in bodies)
    assert {r.api_version for r in synapse.requests} == {"2020-12-01"}
    clock.advance(minutes=2)
    assert h.tick().ok
    assert len(synapse.requests) == 2  # the overlap's re-read is answered from memory


def test_synapse_endpoint_down_lands_pending_and_a_later_poll_fetches_it(
    tmp_path: Path, la: LogAnalyticsEmulator, synapse: SynapseEmulator, clock: Clock
) -> None:
    h = harness_with_synapse_down(tmp_path, la, synapse, clock)
    result = h.tick()
    assert result.ok and result.added == 2
    assert any("pending" in warning and "cannot reach" in warning for warning in result.warnings)
    notebook = h.failures()["synapse:activity:91c3e5a7-b9d1-4f3a-8c5e-7a9b1d3f5e71"]
    assert notebook.error_message == PENDING_MESSAGE and notebook.metadata["error_pending"] is True
    assert "cannot reach" in notebook.metadata["error_fetch_error"]
    assert len(h.source.pending_enrichment) == 3  # the notebook, the ForEach (no text yet) and pl_archive_raw
    synapse.start()
    clock.advance(minutes=30)  # far past the overlap: the rows are no longer re-read from Log Analytics
    poll = h.source.poll(h.source.window(clock.now - timedelta(minutes=1), clock.now))
    keys = {f.key: f for f in map(h.source.extract, poll.records) if f is not None}
    enriched = keys["synapse:activity:91c3e5a7-b9d1-4f3a-8c5e-7a9b1d3f5e71"]
    assert enriched.error_code == "6002" and "error_pending" not in enriched.metadata
    assert set(keys) == {"synapse:activity:91c3e5a7-b9d1-4f3a-8c5e-7a9b1d3f5e71",
                         "synapse:pipeline:f1a3c5e7-9b2d-4f6a-8c0e-2a4c6e8b0d19"}
    assert h.source.pending_enrichment == []


def test_an_enriched_failure_replaces_the_stored_pending_one(
    tmp_path: Path, la: LogAnalyticsEmulator, synapse: SynapseEmulator, clock: Clock
) -> None:
    h = harness_with_synapse_down(tmp_path, la, synapse, clock)
    h.tick()
    synapse.start()
    clock.advance(minutes=30)
    h.tick()
    notebook = h.failures()["synapse:activity:91c3e5a7-b9d1-4f3a-8c5e-7a9b1d3f5e71"]
    assert notebook.error_code == "6002" and "error_pending" not in notebook.metadata


def test_a_workspace_without_endpoint_says_the_logs_carry_no_error_text(
    tmp_path: Path, la: LogAnalyticsEmulator, clock: Clock
) -> None:
    clock.now = START_A + timedelta(minutes=40)
    for table in ("SynapseIntegrationPipelineRuns", "SynapseIntegrationActivityRuns"):
        la.add_rows(table, demo_rows(table), ingested_at=clock.now - timedelta(minutes=30))
    h = Harness(tmp_path, la, clock, services=["synapse"], settle="1m", overlap="5m")
    assert h.tick().ok
    notebook = h.failures()["synapse:activity:91c3e5a7-b9d1-4f3a-8c5e-7a9b1d3f5e71"]
    assert notebook.error_message == "Activity failed; the Synapse logs carry no error text"
    assert notebook.metadata["error_unavailable"] == f"no synapse_endpoints entry for workspace {WORKSPACE}"
    assert h.source.pending_enrichment == []


def test_synapse_error_columns_where_a_workspace_has_them(
    tmp_path: Path, la: LogAnalyticsEmulator, clock: Clock
) -> None:
    clock.now = START_A + timedelta(minutes=40)
    rows = demo_rows("SynapseIntegrationActivityRuns")
    failed = next(r for r in rows if r["ActivityType"] == "SynapseNotebook" and r["Status"] == "Failed")
    failed.update(ErrorCode="6002", FailureType="UserError", ErrorMessage="NameError: name 'df_orders' is not defined")
    la.add_rows("SynapseIntegrationActivityRuns", rows, ingested_at=clock.now - timedelta(minutes=30))
    h = Harness(tmp_path, la, clock, services=["synapse"])
    assert h.tick().ok
    (notebook,) = h.failures().values()  # the ForEach has no text: skipped; no pipeline table, no pipeline query
    assert (notebook.error_message, notebook.error_code) == ("NameError: name 'df_orders' is not defined", "6002")


def test_all_services_in_one_workspace(tmp_path: Path, la: LogAnalyticsEmulator, clock: Clock) -> None:
    for table in ("AppExceptions", "FunctionAppLogs", "AzureDiagnostics", "SynapseIntegrationActivityRuns"):
        la.add_rows(table, demo_rows(table), ingested_at=clock.now - timedelta(minutes=10))
    h = Harness(tmp_path, la, clock, services=ALL_SERVICES, settle="1m", overlap="2m")
    result = h.tick()
    assert result.ok
    assert {f.service for f in h.failures().values()} == {"adf", "synapse", "functions"}
