"""The Databricks emulator, driven through the real databricks-sdk over a socket."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.core import Config
from databricks.sdk.errors import (
    InternalError,
    InvalidParameterValue,
    InvalidState,
    NotFound,
    OperationFailed,
    PermissionDenied,
    ResourceDoesNotExist,
    TooManyRequests,
    Unauthenticated,
)
from databricks.sdk.service import compute, jobs

from poller.emulators.databricks import (
    DEMO_DATA_DIR,
    DatabricksEmulator,
    RunOutcome,
    WorkspaceData,
    make_workspace,
)
from poller.emulators.tls import ThrowawayCA

REPO = Path(__file__).resolve().parents[2]
BASE = 1_767_225_600_000
SALES_RUN, INGEST_ATTEMPT_0, INGEST_ATTEMPT_1 = 890553971536365, 89018493834650, 89018493834687
SCORING_TASK_RUN = 831946571299017
SHARED_CLUSTER, QUOTA_CLUSTER = "0923-164208-meows279", "1231-221407-quota812"
ONE_MINUTE = timedelta(minutes=1)
MULTI_TASK_OUTPUT = ("Retrieving the output of runs with multiple tasks is not supported. "
                     "Please retrieve the output of each individual task run instead.")


@pytest.fixture
def emu() -> Iterator[DatabricksEmulator]:
    with DatabricksEmulator() as emulator:
        yield emulator


@pytest.fixture
def demo() -> Iterator[DatabricksEmulator]:
    with DatabricksEmulator(DEMO_DATA_DIR) as emulator:
        yield emulator


def client(emu: DatabricksEmulator, *, token: str | None = None, retry_timeout: int = 10) -> WorkspaceClient:
    return WorkspaceClient(config=Config(host=emu.url, token=token or emu.token, auth_type="pat",
                                         retry_timeout_seconds=retry_timeout, http_timeout_seconds=5))


def run_json(run_id: int, start: int, *, job_id: int = 1, result: str | None = "SUCCESS",
             run_type: str = "JOB_RUN", tasks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    state: dict[str, Any] = {"life_cycle_state": "TERMINATED" if result else "RUNNING"}
    if result:
        state["result_state"] = result
    default_tasks = [{"task_key": "main", "run_id": run_id + 1, "attempt_number": 0, "state": state}]
    return {"job_id": job_id, "run_id": run_id, "start_time": start,
            "end_time": start + 1000 if result else 0, "run_type": run_type, "state": state,
            "tasks": tasks or default_tasks}


def raw_get(emu: DatabricksEmulator, path: str, token: str | None = None) -> tuple[int, dict[str, Any], Any]:
    """One request without the SDK's retries: (status, headers, JSON body)."""
    request = urllib.request.Request(emu.url + path)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


# -- set-up paths ----------------------------------------------------------------------------------------


def test_config_probes_well_known_once_and_current_user_answers(emu: DatabricksEmulator) -> None:
    w = client(emu)
    assert w.current_user.me().user_name == "rca-poller@example.com"
    assert [(r.path, r.status) for r in emu.requests] == [
        ("/.well-known/databricks-config", 404), ("/api/2.0/preview/scim/v2/Me", 200)]


def test_well_known_with_a_workspace_id_configures_the_sdk() -> None:
    with DatabricksEmulator(workspace_id="1234567890") as emu:
        assert client(emu).config.workspace_id == "1234567890"


def test_unknown_endpoint_is_404(emu: DatabricksEmulator) -> None:
    with pytest.raises(NotFound, match=re.escape("No API found for 'GET /api/2.2/jobs/nope'")):
        client(emu).api_client.do("GET", "/api/2.2/jobs/nope")


# -- jobs: runs/list -----------------------------------------------------------------------------------


def test_list_runs_pages_newest_first_within_the_filters(emu: DatabricksEmulator) -> None:
    for i in range(60):
        emu.add_run(run_json(1000 + i * 10, BASE + i * 1000, job_id=1 + i % 2))
    w = client(emu)

    runs = list(w.jobs.list_runs(job_id=1, start_time_from=BASE + 10_000, start_time_to=BASE + 50_000,
                                 limit=7))

    expected = [1000 + i * 10 for i in range(50, 9, -1) if i % 2 == 0]
    assert [r.run_id for r in runs] == expected
    assert emu.count("/api/2.2/jobs/runs/list") == 3  # 21 runs, 7 a page
    last = emu.requests[-1].query
    assert last["job_id"] == ["1"] and last["limit"] == ["7"] and "page_token" in last


def test_list_runs_leaves_next_page_token_out_of_the_last_page(emu: DatabricksEmulator) -> None:
    for i in range(5):
        emu.add_run(run_json(1000 + i * 10, BASE + i))
    w = client(emu)
    first = w.api_client.do("GET", "/api/2.2/jobs/runs/list", query={"limit": 3})
    last = w.api_client.do("GET", "/api/2.2/jobs/runs/list",
                           query={"limit": 3, "page_token": first["next_page_token"]})
    assert first["has_more"] is True and len(first["runs"]) == 3
    assert last == {"has_more": False, "runs": last["runs"]} and len(last["runs"]) == 2
    assert "tasks" not in last["runs"][0]  # only with expand_tasks


def test_list_runs_pages_stay_stable_when_new_runs_start(emu: DatabricksEmulator) -> None:
    for i in range(4):
        emu.add_run(run_json(1000 + i * 10, BASE + i))
    w = client(emu)
    first = w.api_client.do("GET", "/api/2.2/jobs/runs/list", query={"limit": 2})
    emu.add_run(run_json(5000, BASE + 99))
    rest = w.api_client.do("GET", "/api/2.2/jobs/runs/list",
                           query={"limit": 2, "page_token": first["next_page_token"]})
    assert [r["run_id"] for r in first["runs"] + rest["runs"]] == [1030, 1020, 1010, 1000]


@pytest.mark.parametrize(("params", "expected"), [
    ({"active_only": True}, {30}),
    ({"completed_only": True}, {10, 20, 40}),
    ({"run_type": jobs.RunType.SUBMIT_RUN}, {40}),
    ({"start_time_from": BASE + 2, "start_time_to": BASE + 3}, {20, 30}),
])
def test_list_runs_filters(emu: DatabricksEmulator, params: dict[str, Any], expected: set[int]) -> None:
    emu.add_run(run_json(10, BASE + 1))
    emu.add_run(run_json(20, BASE + 2, result="FAILED"))
    emu.add_run(run_json(30, BASE + 3, result=None))
    emu.add_run(run_json(40, BASE + 4, run_type="SUBMIT_RUN"))
    assert {r.run_id for r in client(emu).jobs.list_runs(**params)} == expected


def test_list_runs_rejects_a_limit_over_25(emu: DatabricksEmulator) -> None:
    with pytest.raises(InvalidParameterValue, match="between 1 and 25"):
        list(client(emu).jobs.list_runs(limit=26))


def test_list_runs_with_expand_tasks_fetches_the_rest_of_a_big_run(emu: DatabricksEmulator) -> None:
    tasks = [{"task_key": f"t{i}", "run_id": 10_000 + i, "attempt_number": 0} for i in range(130)]
    emu.add_run(run_json(1, BASE, tasks=tasks))
    [run] = client(emu).jobs.list_runs(expand_tasks=True)
    assert len(run.tasks or []) == 130
    assert emu.count("/api/2.2/jobs/runs/get") == 2  # the SDK completes has_more runs through runs/get


# -- jobs: runs/get and runs/get-output -------------------------------------------------------------------


def test_get_run_pages_tasks_until_the_token_is_gone(emu: DatabricksEmulator) -> None:
    tasks = [{"task_key": f"t{i // 2}", "run_id": 10_000 + i, "attempt_number": i % 2} for i in range(230)]
    emu.add_run(run_json(1, BASE, tasks=tasks))
    w = client(emu)

    run = w.jobs.get_run(1)

    assert [t.run_id for t in run.tasks or []] == [10_000 + i for i in range(230)]
    assert emu.count("/api/2.2/jobs/runs/get") == 3
    last = w.api_client.do("GET", "/api/2.2/jobs/runs/get",
                           query={"run_id": 1, "page_token": emu.requests[-1].query["page_token"][0]})
    assert "next_page_token" not in last and len(last["tasks"]) == 30


def test_get_run_of_an_unknown_run_is_resource_does_not_exist(emu: DatabricksEmulator) -> None:
    with pytest.raises(ResourceDoesNotExist, match="Run 42 does not exist"):
        client(emu).jobs.get_run(42)


def test_get_run_output_of_a_task_run(demo: DatabricksEmulator) -> None:
    w = client(demo)
    output = w.jobs.get_run_output(INGEST_ATTEMPT_1)
    assert (output.error or "").startswith("AnalysisException: [PATH_NOT_FOUND]")
    assert "\x1b[0;31mAnalysisException\x1b[0m" in (output.error_trace or "")
    assert output.metadata is not None and output.metadata.job_run_id == SALES_RUN
    raw = w.api_client.do("GET", "/api/2.2/jobs/runs/get-output", query={"run_id": INGEST_ATTEMPT_1})
    assert raw["metadata"]["parent_run_id"] == SALES_RUN and raw["metadata"]["task_key"] == "ingest_orders"
    assert raw["metadata"]["attempt_number"] == 1 and raw["notebook_output"] == {}


def test_get_run_output_of_a_multi_task_parent_is_400(demo: DatabricksEmulator) -> None:
    with pytest.raises(InvalidParameterValue) as caught:
        client(demo).jobs.get_run_output(SALES_RUN)
    assert str(caught.value) == MULTI_TASK_OUTPUT
    assert demo.requests[-1].status == 400


def test_jobs_get_list_and_the_2_1_alias(demo: DatabricksEmulator) -> None:
    w = client(demo)
    assert w.jobs.get(625234784902960).settings.name == "nightly-sales-etl"  # type: ignore[union-attr]
    assert len(list(w.jobs.list(limit=2))) == 6
    with pytest.raises(ResourceDoesNotExist):
        w.jobs.get(1)
    alias = w.api_client.do("GET", "/api/2.1/jobs/runs/get", query={"run_id": SALES_RUN})
    assert alias["run_id"] == SALES_RUN


# -- clusters and libraries ----------------------------------------------------------------------------


def test_clusters_list_pages_and_filters(emu: DatabricksEmulator) -> None:
    for i in range(250):
        emu.add_cluster({"cluster_id": f"c{i:03d}", "state": ["RUNNING", "TERMINATED", "ERROR"][i % 3],
                         "cluster_source": "JOB" if i % 2 else "UI"})
    w = client(emu)

    assert len(list(w.clusters.list(page_size=40))) == 250
    assert emu.count("/api/2.1/clusters/list") == 7
    emu.reset_log()
    states = [compute.State.TERMINATED, compute.State.ERROR]
    picked = list(w.clusters.list(filter_by=compute.ListClustersFilterBy(
        cluster_states=states, cluster_sources=[compute.ClusterSource.JOB])))
    assert {c.cluster_id for c in picked} == {f"c{i:03d}" for i in range(250) if i % 3 and i % 2}
    assert emu.requests[0].query["filter_by.cluster_states"] == ["TERMINATED", "ERROR"]


def test_clusters_get_of_an_unknown_cluster_is_resource_does_not_exist(emu: DatabricksEmulator) -> None:
    with pytest.raises(ResourceDoesNotExist, match="Cluster nope does not exist"):
        client(emu).clusters.get("nope")


def test_cluster_events_page_through_next_page(emu: DatabricksEmulator) -> None:
    emu.add_cluster({"cluster_id": "c1", "state": "RUNNING"})
    for i in range(120):
        kind = "RUNNING" if i % 2 else "DRIVER_NOT_RESPONDING"
        emu.add_cluster_event("c1", {"timestamp": BASE + i, "type": kind})
    w = client(emu)

    events = list(w.clusters.events("c1", start_time=BASE + 20, order=compute.GetEventsOrder.ASC, limit=25))

    assert [e.timestamp for e in events] == [BASE + i for i in range(20, 120)]
    assert emu.count("/api/2.1/clusters/events") == 4
    assert emu.requests[-1].body == {"cluster_id": "c1", "start_time": BASE + 20, "order": "ASC", "limit": 25,
                                     "offset": 75}
    driver = list(w.clusters.events("c1", event_types=[compute.EventType.DRIVER_NOT_RESPONDING]))
    assert len(driver) == 60 and driver[0].timestamp == BASE + 118  # DESC by default


def test_cluster_events_desc_pins_end_time_in_next_page(emu: DatabricksEmulator) -> None:
    emu.add_cluster({"cluster_id": "c1", "state": "RUNNING"})
    for i in range(3):
        emu.add_cluster_event("c1", {"timestamp": BASE + i, "type": "RUNNING"})
    page = client(emu).api_client.do("POST", "/api/2.1/clusters/events",
                                     body={"cluster_id": "c1", "limit": 2})
    assert page["next_page"] == {"cluster_id": "c1", "limit": 2, "offset": 2, "end_time": BASE + 2}
    assert page["total_count"] == 3


def test_sdk_events_iterator_stops_after_one_page_in_token_mode(emu: DatabricksEmulator) -> None:
    emu.add_cluster({"cluster_id": "c1", "state": "RUNNING"})
    for i in range(30):
        emu.add_cluster_event("c1", {"timestamp": BASE + i, "type": "RUNNING"})
    # reference §0.4: the SDK follows only next_page, so page_size paging silently ends after one page
    assert len(list(client(emu).clusters.events("c1", page_size=10))) == 10


def test_library_statuses(demo: DatabricksEmulator) -> None:
    w = client(demo)
    statuses = {s.cluster_id: s.library_statuses for s in w.libraries.all_cluster_statuses()}
    failed = [s for s in statuses[SHARED_CLUSTER] or [] if s.status == compute.LibraryInstallStatus.FAILED]
    assert [s.library.pypi.package for s in failed] == ["alembic===1.13.1"]  # type: ignore[union-attr]
    assert "No matching distribution found for alembic===1.13.1" in (failed[0].messages or [""])[0]
    assert len(list(w.libraries.cluster_status(SHARED_CLUSTER))) == 3


# -- remediation --------------------------------------------------------------------------------------------


def test_repair_reruns_the_failed_tasks_as_new_attempts(demo: DatabricksEmulator) -> None:
    w = client(demo)

    run = w.jobs.repair_run(SALES_RUN, rerun_all_failed_tasks=True).result(timeout=ONE_MINUTE)

    assert run.state.result_state == jobs.RunResultState.SUCCESS  # type: ignore[union-attr]
    attempts = [(t.task_key, t.attempt_number) for t in run.tasks or []]
    assert attempts[-3:] == [("ingest_orders", 2), ("transform_sales", 1), ("publish_dashboard", 1)]
    history = w.jobs.get_run(SALES_RUN, include_history=True).repair_history or []
    assert [h.type.value for h in history if h.type] == ["ORIGINAL", "REPAIR"]
    with pytest.raises(InvalidParameterValue, match="latest_repair_id"):
        w.jobs.repair_run(SALES_RUN, rerun_tasks=["ingest_orders"])
    w.jobs.repair_run(SALES_RUN, rerun_tasks=["ingest_orders"], latest_repair_id=history[-1].id)


def test_scripted_repair_failure_settles_after_reads(demo: DatabricksEmulator) -> None:
    demo.settle_after_reads = 1
    demo.script_repair(SALES_RUN, RunOutcome("FAILED", error="AnalysisException: still missing"))
    w = client(demo)

    w.jobs.repair_run(SALES_RUN, rerun_tasks=["ingest_orders"], rerun_dependent_tasks=True)

    assert w.jobs.get_run(SALES_RUN).state.life_cycle_state == jobs.RunLifeCycleState.RUNNING  # type: ignore[union-attr]
    run = w.jobs.get_run(SALES_RUN)
    assert run.state.result_state == jobs.RunResultState.FAILED  # type: ignore[union-attr]
    latest = {t.task_key: t for t in run.tasks or []}  # later attempts come later in tasks[]
    assert latest["transform_sales"].state.result_state == jobs.RunResultState.UPSTREAM_FAILED  # type: ignore[union-attr]
    output = w.jobs.get_run_output(latest["ingest_orders"].run_id)  # type: ignore[arg-type]
    assert output.error == "AnalysisException: still missing"


@pytest.mark.parametrize(("body", "error"), [
    ({"rerun_tasks": ["ingest_orders", "ingest_orders"]}, "rerun_tasks cannot contain duplicate task keys."),
    ({"rerun_tasks": ["nope"]}, "Task keys ['nope'] do not exist"),
    ({"rerun_tasks": ["ingest_orders"], "rerun_all_failed_tasks": True}, "Only one of rerun_tasks"),
])
def test_repair_rejects_bad_requests(demo: DatabricksEmulator, body: dict[str, Any], error: str) -> None:
    with pytest.raises(InvalidParameterValue, match=re.escape(error)):
        client(demo).api_client.do("POST", "/api/2.2/jobs/runs/repair", body={"run_id": SALES_RUN, **body})


def test_repair_of_an_active_run_is_invalid_state(emu: DatabricksEmulator) -> None:
    emu.add_run(run_json(1, BASE, result=None))
    with pytest.raises(InvalidState):
        client(emu).jobs.repair_run(1, rerun_all_failed_tasks=True)


def test_run_now_creates_a_run_once_per_idempotency_token(demo: DatabricksEmulator) -> None:
    w = client(demo)
    job_id = 625234784902960

    first = w.jobs.run_now(job_id, idempotency_token="rca-1")
    again = w.jobs.run_now(job_id, idempotency_token="rca-1")
    run = first.result(timeout=ONE_MINUTE)

    assert first.bind()["run_id"] == again.bind()["run_id"] == run.run_id  # Wait.run_id is typed `any`
    assert [t.task_key for t in run.tasks or []] == ["ingest_orders", "transform_sales", "publish_dashboard"]
    assert run.state.result_state == jobs.RunResultState.SUCCESS  # type: ignore[union-attr]
    demo.script_run_now(job_id, RunOutcome(task_results={"transform_sales": "FAILED"}))
    failed = w.jobs.run_now_and_wait(job_id, timeout=ONE_MINUTE)
    assert failed.state.result_state == jobs.RunResultState.FAILED  # type: ignore[union-attr]
    assert failed.state.state_message.startswith("Task transform_sales failed")  # type: ignore[union-attr]


def test_start_moves_a_cluster_through_pending_to_running(demo: DatabricksEmulator) -> None:
    demo.settle_after_reads = 1
    w = client(demo)

    w.clusters.start(QUOTA_CLUSTER)

    assert w.clusters.get(QUOTA_CLUSTER).state == compute.State.PENDING
    cluster = w.clusters.get(QUOTA_CLUSTER)
    assert cluster.state == compute.State.RUNNING and cluster.termination_reason is None
    types = [e.type for e in w.clusters.events(QUOTA_CLUSTER, order=compute.GetEventsOrder.ASC)][-2:]
    assert types == [compute.EventType.STARTING, compute.EventType.RUNNING]


def test_scripted_start_failure_fails_start_and_wait(demo: DatabricksEmulator) -> None:
    reason = {"code": "AZURE_QUOTA_EXCEEDED_EXCEPTION", "type": "CLOUD_FAILURE"}
    demo.script_cluster_start(QUOTA_CLUSTER, "TERMINATED", termination_reason=reason)
    with pytest.raises(OperationFailed, match="failed to reach RUNNING"):
        client(demo).clusters.start_and_wait(QUOTA_CLUSTER, timeout=ONE_MINUTE)
    assert demo.cluster_json(QUOTA_CLUSTER)["termination_reason"] == reason


def test_start_of_a_running_cluster_is_invalid_state(demo: DatabricksEmulator) -> None:
    message = f"Cluster {SHARED_CLUSTER} is in unexpected state Running."
    with pytest.raises(InvalidState, match=re.escape(message)):
        client(demo).clusters.start(SHARED_CLUSTER)


def test_install_goes_pending_then_scripted_status(demo: DatabricksEmulator) -> None:
    demo.settle_after_reads = 1
    demo.script_library_install(SHARED_CLUSTER, "FAILED", messages=["ERROR: No matching distribution"])
    w = client(demo)
    library = compute.Library(pypi=compute.PythonPyPiLibrary(package="alembic==1.13.0"))

    w.libraries.install(SHARED_CLUSTER, [library])

    def status() -> compute.LibraryInstallStatus | None:
        return next(s.status for s in w.libraries.cluster_status(SHARED_CLUSTER) if s.library == library)

    assert status() == compute.LibraryInstallStatus.PENDING
    assert status() == compute.LibraryInstallStatus.FAILED
    w.libraries.install(SHARED_CLUSTER, [library])
    assert demo.settle() == 1 and status() == compute.LibraryInstallStatus.INSTALLED


# -- faults, auth, raw JSON, the log ------------------------------------------------------------------------


def test_429_with_retry_after_is_retried_by_the_sdk(emu: DatabricksEmulator) -> None:
    emu.add_run(run_json(1, BASE))
    emu.inject(429, retry_after=1, path_prefix="/api/2.2/jobs/runs/list")
    started = time.monotonic()
    assert [r.run_id for r in client(emu).jobs.list_runs()] == [1]
    assert time.monotonic() - started >= 1.0
    assert [r.status for r in emu.requests if r.path == "/api/2.2/jobs/runs/list"] == [429, 200]


def test_429_past_the_retry_budget_raises_timeout_error(emu: DatabricksEmulator) -> None:
    emu.inject(429, retry_after=1, times=10)
    with pytest.raises(TimeoutError) as caught:
        client(emu, retry_timeout=1).clusters.get("c1")
    assert isinstance(caught.value.__cause__, TooManyRequests)


def test_500_is_not_retried_and_faults_are_fifo(emu: DatabricksEmulator) -> None:
    emu.inject(500, path_prefix="/api/2.1/clusters")
    emu.inject(500, message="second")
    w = client(emu)
    with pytest.raises(InternalError, match=re.escape("Injected 500 for /api/2.1/clusters/list")):
        list(w.clusters.list())
    with pytest.raises(InternalError, match="second"):
        w.current_user.me()
    assert w.current_user.me().user_name


def test_rate_limit_answers_429_with_retry_after(emu: DatabricksEmulator) -> None:
    emu.rate_limit_per_second = 3
    answers = [raw_get(emu, "/api/2.0/preview/scim/v2/Me", emu.token) for _ in range(5)]
    assert [status for status, _, _ in answers] == [200, 200, 200, 429, 429]
    assert answers[-1][1]["Retry-After"] == "1"
    assert answers[-1][2]["error_code"] == "REQUEST_LIMIT_EXCEEDED"


def test_an_emulator_bug_answers_500_instead_of_dropping_the_connection(emu: DatabricksEmulator) -> None:
    emu.add_run({"run_id": 5, "state": {"life_cycle_state": "TERMINATED"}, "tasks": [{"run_id": 6}]})
    with pytest.raises(InternalError, match="Emulator failure: KeyError"):  # a task without task_key
        client(emu).jobs.repair_run(5, rerun_all_failed_tasks=True)
    assert emu.count("/api/2.2/jobs/runs/repair") == 1


def test_serves_https_with_a_throwaway_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = ThrowawayCA(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca.ca_path))  # verified TLS, as in production
    with DatabricksEmulator(DEMO_DATA_DIR, ssl_context=ca.server_context()) as emu:
        assert emu.url.startswith("https://127.0.0.1:")
        assert len(list(client(emu).clusters.list())) == 7


def test_unknown_enum_strings_reach_raw_json_verbatim(emu: DatabricksEmulator) -> None:
    emu.add_run(run_json(1, BASE, result="SOMETHING_NEW"))
    emu.add_cluster({"cluster_id": "c1", "state": "TERMINATED",
                     "termination_reason": {"code": "BRAND_NEW_CODE", "type": "CLOUD_FAILURE"}})
    w = client(emu)
    raw = w.api_client.do("GET", "/api/2.2/jobs/runs/get", query={"run_id": 1})
    assert raw["state"]["result_state"] == "SOMETHING_NEW"
    assert w.jobs.get_run(1).state.result_state is None  # type: ignore[union-attr]  # the SDK drops it (§0.3)
    cluster = w.api_client.do("GET", "/api/2.1/clusters/get", query={"cluster_id": "c1"})
    assert cluster["termination_reason"]["code"] == "BRAND_NEW_CODE"


def test_wrong_or_missing_token_is_unauthenticated(emu: DatabricksEmulator) -> None:
    with pytest.raises(Unauthenticated, match=re.escape("Invalid access token.")):
        client(emu, token="dapi-wrong").current_user.me()
    status, _, body = raw_get(emu, "/api/2.2/jobs/runs/list")
    assert (status, body["error_code"]) == (401, "UNAUTHENTICATED")


def test_forbidden_workspace_answers_403_to_every_call() -> None:
    with DatabricksEmulator(DEMO_DATA_DIR, forbidden=True) as emu:
        w = client(emu)
        with pytest.raises(PermissionDenied):
            list(w.jobs.list_runs())
        with pytest.raises(PermissionDenied):
            w.clusters.get(SHARED_CLUSTER)


def test_request_log_counts_and_resets(demo: DatabricksEmulator) -> None:
    w = client(demo)
    list(w.jobs.list_runs(limit=3))
    w.clusters.get(SHARED_CLUSTER)
    assert demo.count("/api/2.2/jobs/runs/list", method="GET") == 3
    assert demo.count("/api/2.1/clusters/") == 1
    assert demo.count(method="POST") == 0
    assert demo.requests[-1].query == {"cluster_id": [SHARED_CLUSTER]} and demo.requests[-1].time > 0
    demo.reset_log()
    assert demo.count() == 0


# -- the Python API, data and entry point ------------------------------------------------------------------


def test_finish_run_and_task_attempts_show_through_the_api(emu: DatabricksEmulator) -> None:
    emu.add_run(run_json(1, BASE, result=None))
    retry = emu.add_task_attempt(1, {"task_key": "main", "state": {"life_cycle_state": "RUNNING"}})
    emu.finish_run(1, "FAILED", task_results={"main": "TIMEDOUT"}, end_time=BASE + 5)
    emu.set_output(retry, error="Timed out", error_trace="trace")

    run = client(emu).jobs.get_run(1)
    assert [(t.attempt_number, t.state.result_state) for t in run.tasks or []] == [  # type: ignore[union-attr]
        (0, None), (1, jobs.RunResultState.TIMEDOUT)]
    assert run.state.result_state == jobs.RunResultState.FAILED and run.end_time == BASE + 5  # type: ignore[union-attr]
    assert client(emu).jobs.get_run_output(retry).error == "Timed out"
    emu.update_run(1, {"run_name": "renamed"})
    assert emu.run_json(1)["run_name"] == "renamed"


def test_set_cluster_state_writes_the_matching_event(emu: DatabricksEmulator) -> None:
    emu.add_cluster({"cluster_id": "c1", "state": "RUNNING", "num_workers": 2})
    reason = {"code": "DRIVER_UNREACHABLE", "type": "SERVICE_FAULT"}
    emu.set_cluster_state("c1", "TERMINATED", termination_reason=reason, at=BASE)
    cluster = emu.cluster_json("c1")
    assert (cluster["terminated_time"], cluster["termination_reason"]) == (BASE, reason)
    [event] = client(emu).clusters.events("c1")
    assert event.type == compute.EventType.TERMINATING and event.timestamp == BASE
    assert event.details.reason.code == compute.TerminationReasonCode.DRIVER_UNREACHABLE  # type: ignore[union-attr]


def test_shift_and_rebase_move_every_time(demo: DatabricksEmulator) -> None:
    before = demo.run_json(SALES_RUN)
    demo.shift(1000)
    after = demo.run_json(SALES_RUN)
    assert after["start_time"] == before["start_time"] + 1000
    assert after["tasks"][1]["end_time"] == before["tasks"][1]["end_time"] + 1000
    delta = demo.rebase(2_000_000_000_000)
    newest = max(e["timestamp"] for e in demo.snapshot().cluster_events)
    assert newest <= 2_000_000_000_000 and delta > 0
    running = demo.run_json(550120987700401)
    assert running["end_time"] == 0  # "not ended" is not a time


def test_data_dir_round_trip(demo: DatabricksEmulator, tmp_path: Path) -> None:
    demo.snapshot().write(tmp_path)
    with DatabricksEmulator(tmp_path) as copy:
        assert copy.snapshot() == demo.snapshot()
    with pytest.raises(FileNotFoundError):
        DatabricksEmulator(tmp_path / "missing")


def test_demo_data_holds_each_failure_kind() -> None:
    data = WorkspaceData.read(DEMO_DATA_DIR)
    task_results = {t["state"].get("result_state") for r in data.runs for t in r["tasks"]}
    assert {"FAILED", "TIMEDOUT", "UPSTREAM_FAILED", "SUCCESS"} <= task_results
    internal = [r for r in data.runs if r["state"]["life_cycle_state"] == "INTERNAL_ERROR"]
    assert {r["status"]["termination_details"]["code"] for r in internal} == {
        "DRIVER_ERROR", "LIBRARY_INSTALLATION_ERROR"}
    assert "\x1b[0;31m" in data.outputs[str(INGEST_ATTEMPT_1)]["error_trace"]
    assert data.outputs[str(SCORING_TASK_RUN)]["error"] == "KeyError: 'customer_id'"
    codes = {c["termination_reason"]["code"] for c in data.clusters if "termination_reason" in c}
    assert {"AZURE_QUOTA_EXCEEDED_EXCEPTION", "SPOT_INSTANCE_TERMINATION", "INIT_SCRIPT_FAILURE",
            "USER_REQUEST"} <= codes
    assert "DRIVER_NOT_RESPONDING" in {e["type"] for e in data.cluster_events}


def test_generated_workspace_at_bench_scale(emu: DatabricksEmulator) -> None:
    emu.load(make_workspace(500, 2000, seed=7))
    w = client(emu)
    started = time.monotonic()
    runs = list(w.jobs.list_runs(expand_tasks=True, limit=25))
    clusters = list(w.clusters.list())
    elapsed = time.monotonic() - started
    assert (len(runs), len(clusters)) == (2000, 500)
    results = [r.state.result_state for r in runs if r.state]
    assert results.count(jobs.RunResultState.SUCCESS) > 1600 and jobs.RunResultState.FAILED in results
    cloud = compute.TerminationReasonType.CLOUD_FAILURE
    assert any(c.termination_reason and c.termination_reason.type == cloud for c in clusters)
    assert elapsed < 10


def test_module_entry_point_serves_until_terminated() -> None:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "poller.emulators.databricks", "--data", str(DEMO_DATA_DIR),
               "--port", "0"]
    proc = subprocess.Popen(command, cwd=REPO, env={**os.environ, "PYTHONPATH": path},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        host = proc.stdout.readline().strip().removeprefix("DATABRICKS_HOST=")
        token = proc.stdout.readline().strip().removeprefix("DATABRICKS_TOKEN=")
        assert host.startswith("http://127.0.0.1:") and token.startswith("dapi-")
        w = WorkspaceClient(config=Config(host=host, token=token, auth_type="pat", retry_timeout_seconds=5))
        assert len(list(w.clusters.list())) == 7
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
