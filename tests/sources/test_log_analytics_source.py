"""The Log Analytics source end to end: real LogsQueryClient over HTTPS → emulator running our KQL → store."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from poller.azure_auth import StaticTokenCredential, build_credential
from poller.config import Config
from poller.emulators.log_analytics import Fault, LogAnalyticsEmulator
from poller.pipeline import TickResult, tick
from poller.sources.log_analytics import LogAnalyticsSource
from poller.store import FailureRow, QuarantineRow, Store
from tests.conftest import TOKEN, Clock, activity_row, la_config, pipeline_row

RUN_A = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
RUN_B = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"


class Harness:
    """One configured source and its store, ticking at the clock's time."""

    def __init__(
        self, tmp_path: Path, la: LogAnalyticsEmulator, clock: Clock, client: object = None, **source: object
    ) -> None:
        self.config: Config = la_config(tmp_path, la, **source)
        self.clock = clock
        self.sleeps: list[float] = []
        self.client = client
        self.restart()

    def restart(self) -> None:
        """New source and store objects on the same state file, as after a process restart."""
        self.store = Store(self.config.state.url)
        cfg = self.config.sources["adf-test"]
        credential = build_credential(self.config.azure)
        self.source = LogAnalyticsSource("adf-test", cfg, credential, self.sleeps.append, self.client)  # type: ignore[arg-type]

    def tick(self) -> TickResult:
        return tick(self.source, self.store, self.clock())

    def keys(self) -> list[str]:
        return sorted(f.key for f in self.store.failures())

    def cursor(self) -> object:
        checkpoint = self.store.checkpoint("adf-test")
        return checkpoint.cursor if checkpoint else None


@pytest.fixture
def h(tmp_path: Path, la: LogAnalyticsEmulator, clock: Clock) -> Harness:
    return Harness(tmp_path, la, clock)


def test_first_tick_reads_lookback_and_extracts_exact_error(h: Harness, la: LogAnalyticsEmulator, clock: Clock) -> None:
    at = clock.now - timedelta(hours=2)
    row = activity_row("Copy_SalesOrders", run_id=RUN_A, at=at, ingested=at + timedelta(minutes=4))
    la.add_rows("ADFActivityRun", [row])
    la.add_rows("ADFPipelineRun", [pipeline_row("pl_sales_daily_load", run_id=RUN_A, at=at, ingested=at)])
    result = h.tick()
    assert result.ok and result.added == 1
    (failure,) = h.store.failures()
    assert failure.key == f"adf:activity:{row['ActivityRunId']}"
    assert failure.run_id == RUN_A
    assert failure.error_code == "SqlOperationFailed"
    assert failure.error_message.startswith("Failure happened on 'Source' side. ErrorCode=SqlOperationFailed,")
    assert failure.metadata["adf_error_code"] == "2200"
    assert failure.metadata["activity_run_id"] == row["ActivityRunId"]
    assert failure.source == "adf-test"
    assert h.cursor() == clock.now


def test_late_row_is_picked_up_by_a_later_tick(h: Harness, la: LogAnalyticsEmulator, clock: Clock) -> None:
    h.tick()
    at = clock.now - timedelta(minutes=1)  # happened before this tick, but ingested 12 minutes later
    la.add_rows(
        "ADFActivityRun", [activity_row("Call_FxRatesApi", run_id=RUN_A, at=at, ingested=at + timedelta(minutes=12))]
    )
    clock.advance(minutes=5)
    assert h.tick().added == 0
    clock.advance(minutes=10)
    assert h.tick().added == 1
    assert h.store.failures()[0].error_code == "2108"


def test_overlap_restart_and_reread_make_no_duplicates(h: Harness, la: LogAnalyticsEmulator, clock: Clock) -> None:
    at = clock.now - timedelta(minutes=30)
    la.add_rows(
        "ADFActivityRun",
        [
            activity_row("Copy_SalesOrders", run_id=RUN_A, at=at, ingested=at + timedelta(minutes=3)),
            activity_row("Run_FeatureNotebook", run_id=RUN_B, at=at, ingested=at + timedelta(minutes=25)),
        ],
    )
    assert h.tick().added == 2
    for _ in range(3):  # overlapping windows re-read both rows every time
        clock.advance(minutes=2)
        assert h.tick().added == 0
    h.restart()
    clock.advance(minutes=1)
    assert h.tick().added == 0
    h.store.engine.dispose()
    # Re-reading old windows explicitly (a backfill of the same hours) drops them by key too.
    from poller.sources.base import Window

    result = tick(h.source, h.store, clock.now, cursor_name="reread", window=Window(at - timedelta(hours=1), clock.now))
    assert result.failures == 2 and result.added == 0
    assert h.store.count(FailureRow) == 2


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (Fault(status=503, times=4), "Log Analytics error (HTTP 503)"),
        (Fault(status=500, times=4), "Log Analytics error (HTTP 500)"),
        (Fault(status=204), "204 No Content"),
        (Fault(status=429, times=3), "throttled by Log Analytics (HTTP 429)"),
    ],
)
def test_failed_tick_leaves_cursor(
    h: Harness, la: LogAnalyticsEmulator, clock: Clock, fault: Fault, message: str
) -> None:
    h.tick()
    before = h.cursor()
    at = clock.now
    la.add_rows("ADFActivityRun", [activity_row("Copy_SalesOrders", run_id=RUN_A, at=at, ingested=at)])
    clock.advance(minutes=5)
    la.inject(fault)
    result = h.tick()
    assert not result.ok and message in (result.error or "")
    assert h.cursor() == before
    assert h.store.count(FailureRow) == 0
    checkpoint = h.store.checkpoint("adf-test")
    assert checkpoint is not None and message in (checkpoint.last_error or "")
    la.clear_faults()
    assert h.tick().added == 1  # the next tick reads the same window again


def test_429_without_retry_after_backs_off_then_succeeds(h: Harness, la: LogAnalyticsEmulator) -> None:
    la.inject(Fault(status=429, times=2))
    assert h.tick().ok
    assert len(h.sleeps) == 2 and all(s > 0 for s in h.sleeps)


def test_429_with_retry_after_is_retried_by_the_sdk(h: Harness, la: LogAnalyticsEmulator) -> None:
    la.inject(Fault(status=429, retry_after=0, times=2))
    assert h.tick().ok
    assert h.sleeps == []
    assert [r.status for r in la.requests][:3] == [429, 429, 200]


def test_timeout_fails_the_tick(tmp_path: Path, la: LogAnalyticsEmulator, clock: Clock) -> None:
    from azure.monitor.query import LogsQueryClient

    impatient = LogsQueryClient(StaticTokenCredential(TOKEN, "T"), endpoint=la.url, read_timeout=0.5, retry_total=0)
    h = Harness(tmp_path, la, clock, client=impatient)
    la.inject(Fault(delay_seconds=2))
    result = h.tick()
    assert not result.ok and "cannot reach" in (result.error or "")
    assert h.cursor() is None


def test_malformed_row_is_quarantined_rest_lands(h: Harness, la: LogAnalyticsEmulator, clock: Clock) -> None:
    at = clock.now - timedelta(minutes=10)
    good = activity_row("Copy_SalesOrders", run_id=RUN_A, at=at, ingested=at)
    bad = activity_row("Copy_RawFile", run_id=RUN_B, at=at, ingested=at, ActivityRunId="")
    la.add_rows("ADFActivityRun", [good, bad])
    result = h.tick()
    assert result.ok and (result.added, result.quarantined) == (1, 1)
    (quarantined,) = h.store.quarantined()
    assert quarantined.reason == "ADF activity row has no ActivityRunId"
    assert '"ActivityName":"Copy_RawFile"' in quarantined.raw_json
    assert h.cursor() == clock.now


def test_pipeline_row_before_its_activity_rows_gives_one_failure(
    h: Harness, la: LogAnalyticsEmulator, clock: Clock
) -> None:
    h.tick()
    at = clock.now
    la.add_rows("ADFPipelineRun", [pipeline_row("pl_sales_daily_load", run_id=RUN_A, at=at, ingested=at)])
    for _ in range(3):  # pipeline row visible, activity row not yet ingested
        clock.advance(minutes=3)
        assert h.tick().added == 0
    la.add_rows(
        "ADFActivityRun", [activity_row("Copy_SalesOrders", run_id=RUN_A, at=at, ingested=at + timedelta(minutes=10))]
    )
    for _ in range(6):
        clock.advance(minutes=4)
        h.tick()
    (failure,) = h.store.failures()
    assert failure.kind == "activity_run" and failure.run_id == RUN_A
    assert failure.error_code == "SqlOperationFailed"


def test_pipeline_without_failed_activity_yields_its_own_failure(
    h: Harness, la: LogAnalyticsEmulator, clock: Clock
) -> None:
    h.tick()
    at = clock.now
    la.add_rows("ADFPipelineRun", [pipeline_row("pl_monthly_close", run_id=RUN_B, at=at, ingested=at)])
    clock.advance(minutes=5)
    assert h.tick().added == 0  # not settled yet
    clock.advance(minutes=11)
    assert h.tick().added == 1
    (failure,) = h.store.failures()
    assert (failure.key, failure.kind, failure.error_code) == (f"adf:pipeline:{RUN_B}", "pipeline_run", "BadRequest")


def test_container_and_heartbeat_rows_yield_only_the_leaf(h: Harness, la: LogAnalyticsEmulator, clock: Clock) -> None:
    at = clock.now - timedelta(minutes=30)
    leaf = activity_row("Copy_RawFile", run_id=RUN_A, at=at, ingested=at)
    wrapper = activity_row("ForEach_File", run_id=RUN_A, at=at, ingested=at)
    heartbeat = dict(
        leaf,
        Status="InProgress",
        OperationName="Copy_RawFile -",
        End="1601-01-01T00:00:00Z",
        TimeGenerated=(at - timedelta(minutes=1)).isoformat(),
        Error="",
        ErrorMessage="",
        ErrorCode="",
    )
    la.add_rows("ADFActivityRun", [heartbeat, leaf, dict(leaf), wrapper])
    la.add_rows("ADFPipelineRun", [pipeline_row("pl_ingest_raw_files", run_id=RUN_A, at=at, ingested=at)])
    h.tick()
    assert h.keys() == [f"adf:activity:{leaf['ActivityRunId']}"]
    assert h.store.count(QuarantineRow) == 0


def test_partial_result_keeps_data_and_records_error(h: Harness, la: LogAnalyticsEmulator, clock: Clock) -> None:
    at = clock.now - timedelta(minutes=10)
    la.add_rows("ADFActivityRun", [activity_row("Copy_SalesOrders", run_id=RUN_A, at=at, ingested=at)])
    la.inject(Fault(partial_error="Query execution has exceeded the allowed limits (E_RUNAWAY_QUERY)"))
    result = h.tick()
    assert result.ok and result.added == 1
    assert "E_RUNAWAY_QUERY" in "; ".join(result.warnings)
    checkpoint = h.store.checkpoint("adf-test")
    assert checkpoint is not None and "E_RUNAWAY_QUERY" in (checkpoint.last_error or "")


def test_row_limit_splits_the_window_instead_of_truncating(
    tmp_path: Path, la: LogAnalyticsEmulator, clock: Clock
) -> None:
    h = Harness(tmp_path, la, clock, max_rows=3)
    la.row_limit = 3
    rows = [
        activity_row(
            "Copy_SalesOrders", run_id=RUN_A, at=clock.now - timedelta(hours=n), ingested=clock.now - timedelta(hours=n)
        )
        for n in range(1, 8)
    ]
    la.add_rows("ADFActivityRun", rows)
    result = h.tick()
    assert result.ok and result.added == 7
    activity_queries = [r for r in la.requests if r.query.startswith("// Failed ADF activity runs")]
    assert len(activity_queries) > 3  # the first answer was cut at 3 rows, so the window was halved


def test_denser_than_min_split_fails_cleanly(tmp_path: Path, la: LogAnalyticsEmulator, clock: Clock) -> None:
    h = Harness(tmp_path, la, clock, max_rows=2, min_split="6h", initial_lookback="6h")
    la.row_limit = 2
    at = clock.now - timedelta(hours=1)
    la.add_rows(
        "ADFActivityRun", [activity_row("Copy_SalesOrders", run_id=RUN_A, at=at, ingested=at) for _ in range(3)]
    )
    result = h.tick()
    assert not result.ok and "even after splitting" in (result.error or "")
    assert h.cursor() is None


def test_wrong_token_is_a_clear_access_error(
    tmp_path: Path, la: LogAnalyticsEmulator, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_ACCESS_TOKEN", "someone-elses-token")
    h = Harness(tmp_path, la, clock)
    result = h.tick()
    assert not result.ok
    assert "access denied (HTTP 403)" in (result.error or "") and "Log Analytics Reader" in (result.error or "")
    assert "someone-elses-token" not in (result.error or "")
