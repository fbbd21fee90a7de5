"""The Databricks source end to end: the real databricks-sdk over a socket → the emulator → extract → store."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from databricks.sdk import WorkspaceClient
from databricks.sdk.core import Config as SdkConfig

from poller.cli import main, run_once
from poller.config import Config, parse_config
from poller.emulators.databricks import DatabricksEmulator, make_workspace
from poller.emulators.databricks_runs import running_state, terminal_state
from poller.errors import SourceError
from poller.extractors import extract
from poller.pipeline import TickResult, tick
from poller.sources.base import Window
from poller.sources.databricks import DatabricksSource
from poller.sources.databricks_client import RateLimiter
from poller.sources.databricks_memory import LibraryEpisode, next_episode
from poller.store import Store
from tests.conftest import Clock

TOKEN_ENV = "RCA_TEST_DATABRICKS_TOKEN"
JOB, RUN = 771122, 900100
CLUSTER = "0601-101010-abcde123"
ANSI_TRACE = "\x1b[0;31mKeyError\x1b[0m   Traceback (most recent call last)\nFile \x1b[0;32m<command-1>, line 3\x1b[0m"


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def task(key: str, run_id: int, result: str | None = "FAILED", *, attempt: int = 0, start: int = 0,
         end: int = 0, **extra: Any) -> dict[str, Any]:
    state, status = terminal_state(result) if result else running_state()
    return {"task_key": key, "run_id": run_id, "attempt_number": attempt, "state": state, "status": status,
            "start_time": start, "end_time": end, **extra}


def job_run(run_id: int, start: int, end: int, tasks: list[dict[str, Any]], result: str | None = "FAILED",
            **extra: Any) -> dict[str, Any]:
    state, status = terminal_state(result) if result else running_state()
    return {"job_id": JOB, "run_id": run_id, "run_name": "orders-hourly", "run_type": "JOB_RUN",
            "start_time": start, "end_time": end, "state": state, "status": status, "tasks": tasks,
            "run_page_url": f"https://adb-1.7.azuredatabricks.net/?o=1#job/{JOB}/run/{run_id}", **extra}


def cluster(cluster_id: str, started: int, state: str = "RUNNING", **extra: Any) -> dict[str, Any]:
    return {"cluster_id": cluster_id, "cluster_name": f"name-{cluster_id}", "state": state, "state_message": "",
            "start_time": started, "cluster_source": "UI", "spark_version": "15.4.x-scala2.12", **extra}


class Harness:
    """One Databricks source and its store, ticking at the test clock's time."""

    def __init__(self, tmp_path: Path, emu: DatabricksEmulator, clock: Clock, **source: Any) -> None:
        self.emu, self.clock, self.sleeps = emu, clock, list[float]()
        # cluster_interval = interval and quiet_tick_requests null: these tests sweep clusters and libraries
        # whole every tick, as before the options
        settings = {"type": "databricks", "host": emu.url, "token_env": TOKEN_ENV, "retry_timeout": "5s",
                    "http_timeout": "5s", "requests_per_second": 1000, "initial_lookback": "6h",
                    "cluster_interval": "2m", "quiet_tick_requests": None, **source}
        self.config: Config = parse_config({"state": {"url": f"sqlite:///{tmp_path}/state.db"},
                                            "sources": {"dbx": settings}}, {})
        self.store = Store(self.config.state.url)
        self.restart()

    def restart(self) -> None:
        """A new source object, as after a restart of rca-poller: its memory is gone, the cursor is not."""
        self.source = DatabricksSource("dbx", self.config.sources["dbx"],  # type: ignore[arg-type]
                                       environ={TOKEN_ENV: self.emu.token}, sleep=self.sleeps.append)

    def tick(self, **advance: float) -> TickResult:
        if advance:
            self.clock.advance(**advance)
        return tick(self.source, self.store, self.clock())

    def failures(self) -> dict[str, Any]:
        return {f.key: f for f in self.store.failures()}

    def cursor(self) -> datetime | None:
        checkpoint = self.store.checkpoint("dbx")
        return checkpoint.cursor if checkpoint else None


@pytest.fixture
def emu() -> Iterator[DatabricksEmulator]:
    with DatabricksEmulator(workspace_id="1234567890") as emulator:
        yield emulator


@pytest.fixture
def h(tmp_path: Path, emu: DatabricksEmulator, clock: Clock) -> Harness:
    return Harness(tmp_path, emu, clock)


def output_calls(emu: DatabricksEmulator) -> list[int]:
    return [int(r.query["run_id"][0]) for r in emu.requests if r.path.endswith("/runs/get-output")]


def calls(emu: DatabricksEmulator, path: str) -> int:
    return sum(r.path == path for r in emu.requests)


# -- jobs ------------------------------------------------------------------------------------------------------


def test_retried_task_failing_on_its_second_attempt_is_one_failure_with_that_attempts_error(
    h: Harness, emu: DatabricksEmulator, clock: Clock
) -> None:
    start, end = ms(clock.now - timedelta(hours=1)), ms(clock.now - timedelta(minutes=30))
    notebook = {"notebook_path": "/Repos/etl/ingest", "source": "WORKSPACE"}
    emu.add_run(job_run(RUN, start, end, [
        task("ingest", RUN + 1, start=start, end=start + 60_000, max_retries=1, notebook_task=notebook,
             existing_cluster_id=CLUSTER),
        task("ingest", RUN + 2, attempt=1, start=start + 90_000, end=end, max_retries=1, notebook_task=notebook,
             existing_cluster_id=CLUSTER),
        task("publish", RUN + 3, "UPSTREAM_FAILED", depends_on=[{"task_key": "ingest"}]),
    ], job_parameters=[{"name": "region", "default": "eu", "value": "westeurope"}]))
    emu.set_output(RUN + 1, error="ConnectionError: first attempt")
    emu.set_output(RUN + 2, error="KeyError: 'customer_id'", error_trace=ANSI_TRACE)

    result = h.tick()

    assert result.ok and result.added == 1, result
    (failure,) = h.failures().values()
    assert failure.key == f"databricks:run:{RUN}:ingest" and failure.kind == "task_run"
    assert failure.run_id == str(RUN) and failure.error_code == "RUN_EXECUTION_ERROR"
    assert failure.error_message == "KeyError: 'customer_id'"
    meta = failure.metadata
    assert (meta["task_run_id"], meta["attempt_number"], meta["attempts"]) == (RUN + 2, 1, 2)
    assert meta["notebook_path"] == "/Repos/etl/ingest" and meta["cluster_id"] == CLUSTER
    assert meta["job_parameters"] == {"region": "westeurope"}
    assert meta["run_page_url"].endswith(f"#job/{JOB}/run/{RUN}")
    assert "\x1b" not in meta["error_trace"] and "KeyError" in meta["error_trace"]
    assert output_calls(emu) == [RUN + 2]  # the task run's id, never the parent's, and no skipped task's


def test_run_started_before_the_cursor_and_failing_after_it_is_caught(
    h: Harness, emu: DatabricksEmulator, clock: Clock
) -> None:
    started = ms(clock.now - timedelta(hours=3))
    emu.add_run(job_run(RUN, started, 0, [task("load", RUN + 1, None, start=started)], None))
    assert h.tick().added == 0
    cursor = h.cursor()
    assert cursor is not None and ms(cursor) - started > 10_800_000 - 1
    clock.advance(minutes=2)
    emu.finish_run(RUN, "FAILED", end_time=ms(clock.now))
    emu.set_output(RUN + 1, error="java.lang.OutOfMemoryError: GC overhead limit exceeded")

    result = h.tick(minutes=2)

    assert result.ok and result.added == 1
    assert h.failures()[f"databricks:run:{RUN}:load"].error_message.startswith("java.lang.OutOfMemoryError")
    assert calls(emu, "/api/2.2/jobs/runs/get") == 1  # seen active at tick 1, read once it had ended
    for _ in range(3):  # the overlap re-reads it; the key drops it, the kept output is not fetched again
        assert h.tick(minutes=2).added == 0
    assert output_calls(emu) == [RUN + 1]


def test_run_crossing_the_cursor_is_caught_after_a_restart_too(
    h: Harness, emu: DatabricksEmulator, clock: Clock
) -> None:
    started = ms(clock.now - timedelta(hours=3))
    emu.add_run(job_run(RUN, started, 0, [task("load", RUN + 1, None, start=started)], None))
    h.tick()
    h.restart()  # no memory of the active run: the first tick lists every run since cursor − max_run_duration
    emu.finish_run(RUN, "TIMEDOUT", end_time=ms(clock.now + timedelta(minutes=1)))
    result = h.tick(minutes=3)
    assert result.added == 1
    assert h.failures()[f"databricks:run:{RUN}:load"].error_code == "CANCELED"
    assert emu.requests[-1].path.endswith("/all-cluster-statuses")


def test_a_poll_whose_commit_never_happened_is_returned_again(h: Harness, emu: DatabricksEmulator,
                                                             clock: Clock) -> None:
    started = ms(clock.now - timedelta(hours=3))
    emu.add_run(job_run(RUN, started, 0, [task("load", RUN + 1, None, start=started)], None))
    h.tick()
    emu.finish_run(RUN, "FAILED", end_time=ms(clock.now + timedelta(minutes=1)))
    clock.advance(minutes=2)
    lost = h.source.poll(h.source.window(h.cursor(), clock.now))  # read, then the process fell over
    assert [r["key"] for r in lost.records] == [f"databricks:run:{RUN}:load"]
    # No listing shows the run any more (it is not active, and started before the window), the memory does.
    assert h.tick(minutes=2).added == 1


def test_a_first_tick_that_was_not_committed_loses_nothing(h: Harness, emu: DatabricksEmulator,
                                                         clock: Clock) -> None:
    started = ms(clock.now - timedelta(hours=6) + timedelta(minutes=1))
    emu.add_run(job_run(RUN, started, ms(clock.now) - 60_000, [task("load", RUN + 1)]))
    assert len(list(h.source.poll(h.source.window(None, clock.now)).records)) == 1  # never committed
    clock.advance(minutes=5)  # the initial lookback slides past the run's start
    assert h.tick().added == 1


def test_a_failed_final_attempt_is_reported_while_its_run_goes_on_and_only_once(
    h: Harness, emu: DatabricksEmulator, clock: Clock
) -> None:
    start = ms(clock.now - timedelta(minutes=20))
    emu.add_run(job_run(RUN, start, 0, [
        task("a", RUN + 1, start=start, end=start + 60_000, max_retries=1),  # attempt 0 of 2: not yet
        task("b", RUN + 2, start=start, end=start + 60_000),  # no retries: final
        task("c", RUN + 3, None, start=start),
    ], None))
    assert [*h.failures()] == [] and h.tick().added == 1
    assert [*h.failures()] == [f"databricks:run:{RUN}:b"]
    emu.add_task_attempt(RUN, task("a", RUN + 4, attempt=1, start=start + 90_000, end=start + 95_000,
                                   max_retries=1))
    emu.set_output(RUN + 4, error="ValueError: second attempt")
    assert h.tick(minutes=2).added == 1
    emu.finish_run(RUN, "FAILED", task_results={"c": "SUCCESS"}, end_time=ms(clock.now))
    assert h.tick(minutes=2).added == 0
    assert h.failures()[f"databricks:run:{RUN}:a"].error_message == "ValueError: second attempt"
    assert sorted(output_calls(emu)) == [RUN + 2, RUN + 4]


def test_old_completed_runs_are_not_read_again(h: Harness, emu: DatabricksEmulator, clock: Clock) -> None:
    start = ms(clock.now - timedelta(hours=2))
    emu.add_run(job_run(RUN, start, start + 60_000, [task("t", RUN + 1)]))
    assert h.tick().added == 1
    emu.reset_log()
    h.tick(minutes=30)  # the run ended long before the window: it is not listed nor its output read
    assert output_calls(emu) == [] and calls(emu, "/api/2.2/jobs/runs/get") == 0


def test_a_run_whose_listing_was_cut_is_read_whole(h: Harness, emu: DatabricksEmulator, clock: Clock) -> None:
    emu.task_page_size = 2  # as the service cuts arrays at 100 elements
    at = ms(clock.now - timedelta(minutes=30))
    emu.add_run(job_run(RUN, at, at + 1000, [task("a", RUN + 1, "SUCCESS"), task("b", RUN + 2, "FAILED"),
                                             task("c", RUN + 3, "FAILED"), task("d", RUN + 4, "FAILED")]))
    assert h.tick().added == 3
    assert calls(emu, "/api/2.2/jobs/runs/get") == 2 and sorted(output_calls(emu)) == [RUN + 2, RUN + 3, RUN + 4]


def test_unknown_enum_strings_reach_the_failure_intact(h: Harness, emu: DatabricksEmulator, clock: Clock) -> None:
    at = ms(clock.now - timedelta(minutes=30))
    brand_new = {"life_cycle_state": "TERMINATED", "result_state": "SOMETHING_NEW", "state_message": "odd"}
    novel = {"state": "TERMINATED", "termination_details": {"code": "BRAND_NEW_TERMINATION", "type": "NEW_TYPE",
                                                            "message": "the platform said so"}}
    emu.add_run(job_run(RUN, at, at + 1000, [{**task("t", RUN + 1), "state": brand_new, "status": novel}],
                        state=brand_new, status=novel))
    emu.add_cluster(cluster(CLUSTER, at, "TERMINATED", terminated_time=at + 5000))
    emu.add_cluster_event(CLUSTER, {"timestamp": at + 5000, "type": "TERMINATING", "details": {
        "reason": {"code": "BRAND_NEW_CODE", "type": "BRAND_NEW_TYPE", "parameters": {"k": "v"}}}})

    assert h.tick().added == 2

    failures = h.failures()
    run_failure = failures[f"databricks:run:{RUN}:t"]
    assert (run_failure.error_code, run_failure.failure_type) == ("BRAND_NEW_TERMINATION", "NEW_TYPE")
    assert run_failure.metadata["result_state"] == "SOMETHING_NEW"
    cluster_failure = failures[f"databricks:cluster:{CLUSTER}:{at + 5000}"]
    assert (cluster_failure.error_code, cluster_failure.failure_type) == ("BRAND_NEW_CODE", "BRAND_NEW_TYPE")
    # what the SDK's typed view would have made of the same answer:
    w = WorkspaceClient(config=SdkConfig(host=emu.url, token=emu.token, auth_type="pat"))
    state = w.jobs.get_run(RUN).state
    assert state is not None and state.result_state is None


def test_a_malformed_run_is_quarantined_and_the_rest_lands(h: Harness, emu: DatabricksEmulator, clock: Clock) -> None:
    at = ms(clock.now - timedelta(minutes=30))
    emu.add_run(job_run(RUN, at, at + 1000, [task("good", RUN + 1)]))
    emu.add_run(job_run(RUN + 10, at, at + 1000, [{"run_id": RUN + 11, "state": {"result_state": "FAILED"}}]))
    result = h.tick()
    assert result.ok and (result.added, result.quarantined) == (1, 1)
    (row,) = h.store.quarantined()
    assert row.reason == f"run {RUN + 10} has a task without task_key"
    assert h.cursor() == h.clock.now


# -- clusters ------------------------------------------------------------------------------------------------


def test_500_clusters_with_2_changes_cost_a_handful_of_requests(
    h: Harness, emu: DatabricksEmulator, clock: Clock
) -> None:
    emu.load(make_workspace(500, 100, base_ms=ms(clock.now - timedelta(days=2))))
    h.tick()
    emu.reset_log()
    quiet = h.tick(minutes=30)
    assert quiet.ok and quiet.added == 0
    assert emu.count("/api/2.1/clusters/events") == 0
    quiet_requests = emu.count("/api/")
    assert quiet_requests <= 5 + 2 + 1  # clusters/list ×5 (100 a page), runs/list ×2, all-cluster-statuses
    emu.reset_log()
    first, second = (c["cluster_id"] for c in emu.snapshot().clusters[:2])
    emu.set_cluster_state(first, "TERMINATED", at=ms(clock.now), termination_reason={
        "code": "DRIVER_UNREACHABLE", "type": "SERVICE_FAULT", "parameters": {}})
    emu.set_cluster_state(second, "RESTARTING", at=ms(clock.now))
    emu.set_cluster_state(second, "TERMINATED", at=ms(clock.now) + 60_000, termination_reason={
        "code": "CLOUD_PROVIDER_LAUNCH_FAILURE", "type": "CLOUD_FAILURE",
        "parameters": {"azure_error_message": "Allocation failed. We do not have sufficient capacity."}})

    busy = h.tick(minutes=5)

    assert busy.ok and busy.added == 2
    assert emu.count("/api/2.1/clusters/events") == 2
    assert emu.count("/api/") <= quiet_requests + 2
    failures = h.failures()
    failed_start = next(f for f in failures.values() if f.resource_id == second)
    assert failed_start.error_message == "Allocation failed. We do not have sufficient capacity."
    assert failed_start.metadata["failed_start"] is True


def test_a_start_that_began_before_the_cursor_and_fails_after_it_is_a_failed_start(
    h: Harness, emu: DatabricksEmulator, clock: Clock
) -> None:
    began = ms(clock.now - timedelta(hours=1))
    emu.add_cluster(cluster(CLUSTER, began, "PENDING"))
    emu.add_cluster_event(CLUSTER, {"timestamp": began, "type": "STARTING", "details": {}})
    h.tick()
    clock.advance(minutes=30)
    reason = {"code": "INVALID_ARGUMENT", "type": "SUCCESS", "parameters": {"databricks_error_message": "bad conf"}}
    emu.set_cluster_state(CLUSTER, "TERMINATED", at=ms(clock.now), termination_reason=reason)
    assert h.tick(minutes=1).added == 1
    (failure,) = h.failures().values()
    assert failure.error_code == "INVALID_ARGUMENT" and failure.metadata["failed_start"] is True


def test_a_health_event_on_a_running_cluster_is_read_when_its_state_message_changes(
    h: Harness, emu: DatabricksEmulator, clock: Clock
) -> None:
    emu.add_cluster(cluster(CLUSTER, ms(clock.now - timedelta(days=3))))
    h.tick()
    assert h.tick(minutes=30).added == 0 and emu.count("/api/2.1/clusters/events") == 0
    emu.add_cluster_event(CLUSTER, {"timestamp": ms(clock.now), "type": "DRIVER_NOT_RESPONDING",
                                    "details": {"driver_state_message": "Driver is up but is not responsive"}})
    emu.add_cluster({**emu.cluster_json(CLUSTER), "state_message": "Driver is not responding"})
    assert h.tick(minutes=2).added == 1
    (failure,) = h.failures().values()
    assert failure.error_code == "DRIVER_NOT_RESPONDING"


# -- the cluster sweep's cadence (cluster_interval) ------------------------------------------------------------


DRIVER_UNREACHABLE = {"code": "DRIVER_UNREACHABLE", "type": "SERVICE_FAULT", "parameters": {}}


def by_endpoint(emu: DatabricksEmulator) -> dict[str, int]:
    """API calls by path; runs/list split into its active and completed listings."""
    counts: dict[str, int] = {}
    for r in emu.requests:
        if r.path.startswith("/api/"):
            listing = " active" if r.query.get("active_only") else " completed" if r.query.get("completed_only") else ""
            name = r.path.split("/", 3)[3] + (listing if r.path.endswith("/runs/list") else "")
            counts[name] = counts.get(name, 0) + 1
    return counts


def test_a_quiet_tick_between_sweeps_reads_jobs_only_in_at_most_5_requests(
    tmp_path: Path, emu: DatabricksEmulator, clock: Clock
) -> None:
    h = Harness(tmp_path, emu, clock, cluster_interval="5m")
    emu.load(make_workspace(500, 2000, base_ms=ms(clock.now - timedelta(hours=2))))  # 61 runs still going
    h.tick()  # the first tick of a process sweeps
    emu.reset_log()

    quiet = h.tick(minutes=2)

    assert quiet.ok and quiet.added == 0
    assert by_endpoint(emu) == {"jobs/runs/list active": 3, "jobs/runs/list completed": 1}
    assert emu.count("/api/") <= 5
    emu.reset_log()
    assert h.tick(minutes=2).added == 0  # 4 minutes since the sweep: not due yet
    assert emu.count("/api/") == 4
    emu.reset_log()
    assert h.tick(minutes=2).added == 0  # 6 minutes: the sweep is due
    assert by_endpoint(emu) == {"jobs/runs/list active": 3, "jobs/runs/list completed": 1, "clusters/list": 5,
                                "libraries/all-cluster-statuses": 1}


def test_a_cluster_failure_between_sweeps_is_reported_at_the_next_sweep_exactly_once(
    tmp_path: Path, emu: DatabricksEmulator, clock: Clock
) -> None:
    h = Harness(tmp_path, emu, clock, cluster_interval="10m")
    emu.add_cluster(cluster(CLUSTER, ms(clock.now - timedelta(days=1))))
    assert h.tick().added == 0
    swept = clock.now
    assert h.tick(minutes=2).added == 0
    emu.set_cluster_state(CLUSTER, "TERMINATED", at=ms(clock.now) + 60_000, termination_reason=DRIVER_UNREACHABLE)
    emu.reset_log()

    assert [h.tick(minutes=2).added for _ in range(3)] == [0, 0, 0]  # +4, +6, +8 minutes: jobs only
    assert emu.count("/api/2.1/clusters") == emu.count("/api/2.0/libraries") == 0
    assert h.cursor() == swept  # held at the end of the last sweep
    assert h.tick(minutes=2).added == 1  # +10: the sweep
    assert h.cursor() == clock.now
    assert [h.tick(minutes=2).added for _ in range(6)] == [0] * 6  # the next sweep (+20) re-reads it: same key

    (failure,) = h.failures().values()
    assert (failure.resource_id, failure.error_code) == (CLUSTER, "DRIVER_UNREACHABLE")
    assert emu.count("/api/2.1/clusters/list") == 2


@pytest.mark.parametrize("lost", ["restart", "uncommitted sweep", "failed sweep"])
def test_nothing_between_sweeps_is_lost_to_a_restart_or_a_sweep_that_did_not_commit(
    tmp_path: Path, emu: DatabricksEmulator, clock: Clock, lost: str
) -> None:
    h = Harness(tmp_path, emu, clock, cluster_interval="30m", retry_timeout="1s")
    emu.add_cluster(cluster(CLUSTER, ms(clock.now - timedelta(days=1))))
    h.tick()
    swept = clock.now
    emu.set_cluster_state(CLUSTER, "TERMINATED", at=ms(clock.now) + 180_000, termination_reason=DRIVER_UNREACHABLE)
    for _ in range(14):  # +2 … +28 minutes: committed, jobs only; the termination (+3) is far behind now − overlap
        assert h.tick(minutes=2).added == 0
    assert h.cursor() == swept
    if lost == "restart":
        h.restart()  # a new process: its first tick sweeps from the last committed sweep − overlap
    else:
        clock.advance(minutes=2)
        if lost == "uncommitted sweep":  # read, then the process fell over before the commit
            assert len(list(h.source.poll(h.source.window(h.cursor(), clock.now)).records)) == 1
        else:
            emu.inject(500, times=4, path_prefix="/api/2.1/clusters/list")
            assert not h.tick().ok
        assert h.cursor() == swept

    assert h.tick(minutes=2).added == 1
    assert h.tick(minutes=2).added == 0 and len(h.failures()) == 1


def test_a_backfill_and_every_rca_poller_once_read_clusters(
    tmp_path: Path, emu: DatabricksEmulator, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(tmp_path, emu, clock, cluster_interval="1h")
    emu.add_cluster(cluster(CLUSTER, ms(clock.now - timedelta(days=2)), "TERMINATED",
                            terminated_time=ms(clock.now - timedelta(days=1)), termination_reason=DRIVER_UNREACHABLE))
    h.tick()
    h.tick(minutes=2)
    emu.reset_log()
    window = Window(clock.now - timedelta(days=3), clock.now - timedelta(hours=12))
    assert tick(h.source, h.store, clock.now, cursor_name="backfill", window=window).added == 1
    assert emu.count("/api/2.1/clusters/list") == 1
    monkeypatch.setenv(TOKEN_ENV, emu.token)
    emu.reset_log()
    for _ in range(2):  # cron mode: each run is a new process, whose one tick sweeps
        run_once(h.config, h.store, clock.advance(minutes=2))
    assert emu.count("/api/2.1/clusters/list") == emu.count("/api/2.0/libraries/all-cluster-statuses") == 2


# -- a sweep spread over ticks (quiet_tick_requests) -----------------------------------------------------------


def spread(tmp_path: Path, emu: DatabricksEmulator, clock: Clock, **source: Any) -> Harness:
    """The defaults (interval 2m, cluster_interval 5m, quiet_tick_requests 5) on 500 clusters and 2,000 runs, 61 of
    them still going; the first tick of the process, which sweeps whole, is done."""
    h = Harness(tmp_path, emu, clock, cluster_interval="5m", quiet_tick_requests=5, **source)
    emu.load(make_workspace(500, 2000, base_ms=ms(clock.now - timedelta(hours=2))))
    h.tick()
    return h


def running_cluster_on_page(emu: DatabricksEmulator, page: int) -> str:
    """A RUNNING cluster that clusters/list serves on that page (100 a page, in the order they were added)."""
    listed = emu.snapshot().clusters[(page - 1) * 100: page * 100]
    return next(str(c["cluster_id"]) for c in listed if c["state"] == "RUNNING")


def test_every_quiet_tick_makes_at_most_5_requests_the_sweep_spread_over_ticks(
    tmp_path: Path, emu: DatabricksEmulator, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="poller.sources.databricks")
    h = spread(tmp_path, emu, clock)
    caplog.clear()  # the first tick's whole sweep
    swept = clock.now
    per_tick, cursors = [], []
    for _ in range(15):  # half an hour
        emu.reset_log()
        result = h.tick(minutes=2)
        assert result.ok and result.added == 0
        per_tick.append(by_endpoint(emu))
        cursors.append(h.cursor())

    assert all(sum(counts.values()) <= 5 for counts in per_tick)
    assert all(counts["jobs/runs/list completed"] == 1 for counts in per_tick)  # a held cursor widens no listing
    # The first spread sweep begins at +6 (5 minutes after the last), lists one page a tick at +6 … +14 and
    # reads the library statuses at +16; only then does the cursor move, to the end of the tick it began in.
    # The next sweep is due at once (+18 … +28), and a third begins at +30.
    assert [c.get("clusters/list", 0) for c in per_tick] == [0, 0, *[1] * 5, 0, *[1] * 5, 0, 1]
    assert [i for i, c in enumerate(per_tick) if "libraries/all-cluster-statuses" in c] == [7, 13]
    assert cursors == [swept] * 7 + [swept + timedelta(minutes=6)] * 6 + [swept + timedelta(minutes=18)] * 2
    done = [r for r in caplog.records if r.getMessage() == "databricks.swept"]
    assert [(r.clusters, r.minutes) for r in done] == [(500, 10.0), (500, 10.0)]  # type: ignore[attr-defined]


@pytest.mark.parametrize("page", [1, 5])
def test_a_cluster_that_fails_while_a_spread_sweep_is_under_way_is_reported_once(
    tmp_path: Path, emu: DatabricksEmulator, clock: Clock, page: int
) -> None:
    h = spread(tmp_path, emu, clock)
    for _ in range(4):  # +2, +4: jobs only; +6, +8: the sweep lists pages 1 and 2
        h.tick(minutes=2)
    failing = running_cluster_on_page(emu, page)  # page 1: listed already; page 5: not yet
    emu.set_cluster_state(failing, "TERMINATED", at=ms(clock.now) + 30_000, termination_reason=DRIVER_UNREACHABLE)
    run = RUN + 7
    at = ms(clock.now)
    emu.add_run(job_run(run, at, at + 60_000, [task("t", run + 1)]))
    emu.set_output(run + 1, error="Exception: failed while the sweep went on")

    added = [h.tick(minutes=2).added for _ in range(12)]

    assert sum(added) == 2 and added[0] == 1  # the run at once; the cluster at its page, in this sweep or the next
    assert added.index(1, 1) == (2 if page == 5 else 4)  # +14 (page 5 of this sweep), +18 (page 1 of the next)
    assert {f.error_code for f in h.failures().values() if f.resource_id == failing} == {"DRIVER_UNREACHABLE"}


def test_a_restart_in_the_middle_of_a_spread_sweep_loses_nothing(
    tmp_path: Path, emu: DatabricksEmulator, clock: Clock
) -> None:
    h = spread(tmp_path, emu, clock)
    for _ in range(4):
        h.tick(minutes=2)
    failing = running_cluster_on_page(emu, 1)  # listed by the sweep under way: only the next one would see it
    emu.set_cluster_state(failing, "TERMINATED", at=ms(clock.now) + 30_000, termination_reason=DRIVER_UNREACHABLE)
    assert h.tick(minutes=2).added == 0
    h.restart()  # the sweep under way is gone with the process; the cursor is still before it began

    assert h.tick(minutes=2).added == 1  # a new process sweeps whole from the cursor − overlap
    assert [h.tick(minutes=2).added for _ in range(8)] == [0] * 8


def test_a_page_token_the_service_refuses_starts_the_listing_again(
    tmp_path: Path, emu: DatabricksEmulator, clock: Clock
) -> None:
    h = spread(tmp_path, emu, clock)
    for _ in range(3):  # +2, +4; +6 lists page 1
        h.tick(minutes=2)
    failing = running_cluster_on_page(emu, 4)
    emu.set_cluster_state(failing, "TERMINATED", at=ms(clock.now), termination_reason=DRIVER_UNREACHABLE)
    emu.inject(400, path_prefix="/api/2.1/clusters/list", message="Invalid page token")

    refused = h.tick(minutes=2)

    assert refused.ok and any("page token" in w for w in refused.warnings)
    emu.reset_log()
    added = [h.tick(minutes=2).added for _ in range(6)]  # pages 1-5 again, then the statuses
    assert sum(added) == 1 and added[3] == 1
    assert [int(r.query.get("page_token") is not None) for r in emu.requests if r.path.endswith("/clusters/list")] \
        == [0, 1, 1, 1, 1]


# -- libraries -----------------------------------------------------------------------------------------------


PANDAS = {"pypi": {"package": "pandas==9.9.9"}}


def test_library_failure_fires_once_then_again_after_installing_then_failing(
    h: Harness, emu: DatabricksEmulator, clock: Clock
) -> None:
    emu.add_cluster(cluster(CLUSTER, ms(clock.now - timedelta(days=1))))
    emu.set_library_status(CLUSTER, PANDAS, "FAILED", ["ERROR: No matching distribution found for pandas==9.9.9"])
    assert h.tick().added == 1
    assert h.tick(minutes=2).added == 0  # still failed: the same failure
    h.restart()
    assert h.tick(minutes=2).added == 0  # and across a restart of rca-poller
    emu.set_library_status(CLUSTER, PANDAS, "INSTALLED")
    assert h.tick(minutes=2).added == 0
    emu.set_library_status(CLUSTER, PANDAS, "FAILED", ["ERROR: Could not fetch URL https://pypi.org/simple/"])
    assert h.tick(minutes=2).added == 1
    assert h.tick(minutes=2).added == 0
    emu.set_cluster_state(CLUSTER, "RESTARTING", at=ms(clock.now))
    emu.set_cluster_state(CLUSTER, "RUNNING", at=ms(clock.now) + 1)
    assert h.tick(minutes=2).added == 1  # failed again on the cluster's new start: a new failure
    assert h.tick(minutes=2).added == 0
    codes = sorted(f.error_code for f in h.failures().values())
    assert codes == ["PYPI_NO_MATCHING_DISTRIBUTION", "REPOSITORY_UNREACHABLE", "REPOSITORY_UNREACHABLE"]
    assert all(f.resource == f"name-{CLUSTER}" and f.metadata["pypi.package"] == "pandas==9.9.9"
               for f in h.failures().values())


@pytest.mark.parametrize(("statuses", "stamps"), [
    (["FAILED", "FAILED", "INSTALLING", "FAILED"], ["10", "10", "10", "10"]),  # a retry that never installed
    (["INSTALLED", "FAILED", "INSTALLED", "FAILED", "FAILED"], ["", "10", "10", "10+3", "10+3"]),
    (["PENDING", "FAILED"], ["", "10"]),
])
def test_library_occurrence_stamp(statuses: list[str], stamps: list[str]) -> None:
    episode: LibraryEpisode | None = None
    seen = []
    for now, status in enumerate(statuses):
        episode = next_episode(episode, status, 10, now)
        seen.append(episode.stamp)
    assert seen == stamps


# -- throttling and faults -----------------------------------------------------------------------------------


def demo_failures(emu: DatabricksEmulator, clock: Clock, runs: int = 3) -> None:
    """Failed runs that started five minutes ago and ended a minute later."""
    at = ms(clock.now - timedelta(minutes=5))
    for i in range(runs):
        emu.add_run(job_run(RUN + 100 * i, at, at + 60_000, [task("t", RUN + 100 * i + 1)]))
        emu.set_output(RUN + 100 * i + 1, error=f"Exception: failure {i}")


def test_a_429_storm_slows_the_tick_without_losing_anything(
    tmp_path: Path, emu: DatabricksEmulator, clock: Clock
) -> None:
    h = Harness(tmp_path, emu, clock, retry_timeout="30s")
    demo_failures(emu, clock)
    emu.inject(429, retry_after=1, times=3, path_prefix="/api/2.2/jobs/runs/get-output")
    began = time.monotonic()
    result = h.tick()
    assert result.ok and result.added == 3
    assert time.monotonic() - began >= 3.0
    assert sum(r.status == 429 for r in emu.requests) == 3


def test_the_client_side_rate_keeps_the_workspace_from_throttling(tmp_path: Path, emu: DatabricksEmulator,
                                                                  clock: Clock) -> None:
    demo_failures(emu, clock, runs=4)
    emu.rate_limit_per_second = 6  # the workspace answers 429 past 6 requests in a second
    h = Harness(tmp_path, emu, clock, requests_per_second=4)
    began = time.monotonic()
    assert h.tick().added == 4
    calls = emu.count("/api/")
    assert calls == 8 and all(r.status == 200 for r in emu.requests)
    assert time.monotonic() - began >= (calls - 1) / 4


def test_rate_limiter_spaces_requests_after_the_burst() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(2, clock=lambda: now[0], sleep=sleep)
    for _ in range(6):
        limiter.acquire()
    assert slept == [0.5] * 5 and now[0] == 2.5
    bursty = RateLimiter(2, burst=3, clock=lambda: now[0], sleep=sleep)
    now[0] += 10
    for _ in range(4):
        bursty.acquire()
    assert slept[5:] == [0.5]


@pytest.mark.parametrize(("status", "sdk_retries"), [(500, False), (502, False), (504, False), (503, True)])
def test_5xx_is_backed_off_and_retried(h: Harness, emu: DatabricksEmulator, clock: Clock, status: int,
                                       sdk_retries: bool) -> None:
    demo_failures(emu, clock, runs=1)
    emu.inject(status, retry_after=0 if status == 503 else None, times=2)
    result = h.tick()
    assert result.ok and result.added == 1
    assert len(h.sleeps) == (0 if sdk_retries else 2)  # ours for 500/502/504; the SDK's own for 503


@pytest.mark.parametrize(("throttled", "message"), [
    (False, "failed on /api/2.2/jobs/runs/list (HTTP 500)"),
    (True, "throttled by http://127.0.0.1"),
])
def test_a_failed_tick_leaves_the_cursor(tmp_path: Path, emu: DatabricksEmulator, clock: Clock,
                                         throttled: bool, message: str) -> None:
    h = Harness(tmp_path, emu, clock, retry_timeout="2s")
    h.tick()
    before = h.cursor()
    demo_failures(emu, clock, runs=1)
    if throttled:
        emu.rate_limit_per_second = 0  # every call answers 429, past the SDK's retry budget
    else:
        emu.inject(500, times=4)  # the first try and our 3 retries
    result = h.tick(minutes=2)
    assert not result.ok and message in (result.error or "")
    assert h.cursor() == before and h.failures() == {}
    checkpoint = h.store.checkpoint("dbx")
    assert checkpoint is not None and message in (checkpoint.last_error or "")
    emu.rate_limit_per_second = None
    assert h.tick(minutes=2).added == 1  # the next tick reads the same window again


def test_permission_and_token_errors_say_what_to_fix_and_show_no_secret(
    tmp_path: Path, emu: DatabricksEmulator, clock: Clock
) -> None:
    h = Harness(tmp_path, emu, clock)
    h.source = DatabricksSource("dbx", h.config.sources["dbx"],  # type: ignore[arg-type]
                                environ={TOKEN_ENV: "dapi-wrong-secret-123"})
    error = h.tick().error or ""
    assert "authentication failed at http://127.0.0.1" in error and f"check the token in ${TOKEN_ENV}" in error
    assert "dapi-wrong-secret-123" not in error and emu.token not in error
    assert "secret" not in repr(h.source) and "dapi" not in repr(h.source.api)
    emu.forbidden = True
    h.restart()
    error = h.tick().error or ""
    assert "permission denied on /api/2.2/jobs/runs/list (HTTP 403)" in error
    h.source = DatabricksSource("dbx", h.config.sources["dbx"], environ={})  # type: ignore[arg-type]
    with pytest.raises(SourceError, match=f"environment variable {TOKEN_ENV} is not set"):
        h.source.poll(h.source.window(None, clock.now))


def test_check_reads_every_watched_api(tmp_path: Path, emu: DatabricksEmulator, clock: Clock) -> None:
    h = Harness(tmp_path, emu, clock, watch=["jobs", "libraries"])
    assert h.source.check() == "rca-poller@example.com (jobs, libraries readable)"
    assert {r.path for r in emu.requests if r.path.startswith("/api/")} == {
        "/api/2.0/preview/scim/v2/Me", "/api/2.2/jobs/runs/list", "/api/2.0/libraries/all-cluster-statuses"}
    emu.forbidden = True
    with pytest.raises(SourceError, match=r"permission denied on /api/2.0/preview/scim/v2/Me \(HTTP 403\)"):
        h.source.check()


def test_two_workspaces_one_broken_the_others_failures_land(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "dapi-emulator-0000000000000000")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]
    with DatabricksEmulator() as good, DatabricksEmulator(forbidden=True) as refused:
        demo_failures(good, clock, runs=2)
        common = {"type": "databricks", "token_env": TOKEN_ENV, "retry_timeout": "1s", "max_retries": 0}
        config = parse_config({"state": {"url": f"sqlite:///{tmp_path}/state.db"}, "sources": {
            "dbx-refused": {**common, "host": refused.url},
            "dbx-down": {**common, "host": f"http://127.0.0.1:{dead_port}"},
            "dbx-good": {**common, "host": good.url},
        }}, {})
        store = Store(config.state.url)
        results = {r.source: r for r in run_once(config, store, clock.now)}
    assert results["dbx-good"].ok and results["dbx-good"].added == 2
    assert "permission denied" in (results["dbx-refused"].error or "")
    assert f"cannot reach http://127.0.0.1:{dead_port}" in (results["dbx-down"].error or "")
    assert {f.source for f in store.failures()} == {"dbx-good"}
    assert store.checkpoint("dbx-refused").cursor is None  # type: ignore[union-attr]


def test_an_explicit_window_reads_history_and_leaves_the_live_memory_alone(
    h: Harness, emu: DatabricksEmulator, clock: Clock
) -> None:
    old = ms(clock.now - timedelta(days=2))
    emu.add_run(job_run(RUN, old, old + 60_000, [task("t", RUN + 1)]))
    h.tick()
    assert h.failures() == {}
    emu.reset_log()
    window = Window(clock.now - timedelta(days=3), clock.now - timedelta(days=1))
    result = tick(h.source, h.store, clock.now, cursor_name="backfill", window=window)
    assert result.added == 1
    assert not any(r.query.get("active_only") for r in emu.requests)
    assert emu.count("/api/2.0/libraries") == 0 and calls(emu, "/api/2.2/jobs/runs/list") == 1
    assert h.tick(minutes=2).ok and calls(emu, "/api/2.2/jobs/runs/list") == 1 + 2  # the memory still holds


def test_a_poll_record_reads_again_through_rca_poller_extract(
    h: Harness, emu: DatabricksEmulator, clock: Clock
) -> None:
    demo_failures(emu, clock, runs=1)
    poll = h.source.poll(h.source.window(None, clock.now))
    (record,) = poll.records
    assert [f.key for f in extract(record)] == [record["key"]] == [h.source.extract(record).key]  # type: ignore[union-attr]


def test_extract_reads_saved_databricks_payloads(tmp_path: Path) -> None:
    fixture = Path(__file__).parent.parent / "testdata" / "databricks" / "jobs_bundle_retried_task_second_attempt.json"
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(json.loads(fixture.read_text())["input"]))
    for args in (["extract", str(path)], ["extract", "--service", "databricks", str(path)]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        assert [f["key"] for f in json.loads(result.output)] == ["databricks:run:900100:ingest"]
