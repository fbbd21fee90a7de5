"""A generated Databricks workspace for benchmarks and ``--generate``; the same seed gives the same data."""

from __future__ import annotations

import random

from poller.emulators.databricks_core import Json
from poller.emulators.databricks_runs import terminal_state
from poller.emulators.databricks_state import WorkspaceData

DEMO_BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: every time in the demo data is relative to it

_WORDS = ("brick", "meows", "aloe", "spark", "delta", "onyx", "cedar", "fjord", "lotus", "quartz")
_Termination = tuple[str, str, dict[str, str]]  # (code, type, parameters), §5.4
_UNEXPECTED: tuple[_Termination, ...] = (  # terminations a poller must report
    ("CLOUD_PROVIDER_LAUNCH_FAILURE", "CLOUD_FAILURE", {"azure_error_code": "OperationNotAllowed"}),
    ("AZURE_QUOTA_EXCEEDED_EXCEPTION", "CLOUD_FAILURE", {"azure_error_code": "QuotaExceeded"}),
    ("SPOT_INSTANCE_TERMINATION", "CLOUD_FAILURE", {}),
    ("DRIVER_UNREACHABLE", "SERVICE_FAULT", {}),
    ("INIT_SCRIPT_FAILURE", "CLIENT_ERROR", {"databricks_error_message": "Init script exited with code 1"}),
)
_BENIGN: tuple[_Termination, ...] = (("INACTIVITY", "SUCCESS", {"inactivity_duration_min": "60"}),
           ("USER_REQUEST", "SUCCESS", {"username": "jane.doe@example.com"}),
           ("JOB_FINISHED", "SUCCESS", {}))
_TASK_ERRORS = (
    ("AnalysisException: [PATH_NOT_FOUND] Path does not exist: abfss://raw@stlake.dfs.core.windows.net/x.",
     "pyspark.errors.exceptions.captured.AnalysisException"),
    ("KeyError: 'customer_id'", "KeyError"),
    ("org.apache.spark.SparkException: Job aborted due to stage failure: Task 3 in stage 12.0 failed 4 times",
     "org.apache.spark.SparkException"),
)
_HOUR_MS = 3_600_000


def make_workspace(n_clusters: int, n_runs: int, seed: int = 0, *,
                   base_ms: int = DEMO_BASE_MS) -> WorkspaceData:
    """A plausible workspace: mostly running/terminated-by-design clusters and succeeded runs, a few
    unexpected terminations, failed/timed-out/internal-error runs with outputs and failed libraries."""
    rng = random.Random(seed)
    data = WorkspaceData()
    for index in range(n_clusters):
        _add_generated_cluster(data, rng, index, base_ms)
    cluster_ids = [c["cluster_id"] for c in data.clusters] or ["0101-000000-brick000"]
    data.jobs = [_generated_job(rng, index, cluster_ids) for index in range(max(1, n_runs // 20))]
    for index in range(n_runs):
        _add_generated_run(data, rng, index, base_ms)
    return data


def _add_generated_cluster(data: WorkspaceData, rng: random.Random, index: int, base_ms: int) -> None:
    # the real shape, e.g. 0923-164208-meows279; the index suffix keeps ids unique
    cluster_id = f"{index % 12 + 1:02d}{index % 28 + 1:02d}-{rng.randint(0, 235959):06d}-" \
                 f"{rng.choice(_WORDS)}{index:03d}"
    started = base_ms - rng.randint(1, 72) * _HOUR_MS
    roll = rng.random()
    cluster: Json = {"cluster_id": cluster_id, "cluster_name": f"cluster-{index:04d}", "spark_version":
                     "15.4.x-scala2.12", "node_type_id": "Standard_DS3_v2", "num_workers": rng.randint(1, 8),
                     "cluster_source": rng.choice(("UI", "JOB", "API")), "creator_user_name":
                     "jane.doe@example.com", "start_time": started, "state": "RUNNING", "state_message": ""}
    events: list[Json] = [{"cluster_id": cluster_id, "timestamp": started, "type": "CREATING", "details": {}},
                          {"cluster_id": cluster_id, "timestamp": started + 240_000, "type": "RUNNING",
                           "details": {"current_num_workers": cluster["num_workers"]}}]
    if roll < 0.4:
        code, kind, params = rng.choice(_UNEXPECTED if roll < 0.05 else _BENIGN)
        ended = started + rng.randint(1, 12) * _HOUR_MS // 4
        cluster.update(state="TERMINATED", terminated_time=ended,
                       termination_reason={"code": code, "type": kind, "parameters": params})
        events.append({"cluster_id": cluster_id, "timestamp": ended, "type": "TERMINATING",
                       "details": {"reason": cluster["termination_reason"]}})
    elif roll > 0.98:
        message = "Driver is up but is not responsive, likely due to GC."
        events.append({"cluster_id": cluster_id, "timestamp": base_ms - 60_000,
                       "type": "DRIVER_NOT_RESPONDING", "details": {"driver_state_message": message}})
    data.clusters.append(cluster)
    data.cluster_events.extend(events)
    if rng.random() < 0.2:
        failed = rng.random() < 0.1
        data.libraries.append({"cluster_id": cluster_id, "library_statuses": [{
            "library": {"pypi": {"package": f"requests=={rng.randint(20, 32)}.0"}},
            "status": "FAILED" if failed else "INSTALLED", "is_library_for_all_clusters": False,
            "messages": ["ERROR: No matching distribution found"] if failed else []}]})


def _generated_job(rng: random.Random, index: int, cluster_ids: list[str]) -> Json:
    keys = ["ingest", "transform", "publish"][: rng.randint(1, 3)]
    tasks = [{"task_key": key, "existing_cluster_id": rng.choice(cluster_ids),
              "notebook_task": {"notebook_path": f"/Repos/etl/job_{index}/{key}", "source": "WORKSPACE"},
              **({"depends_on": [{"task_key": keys[i - 1]}]} if i else {})} for i, key in enumerate(keys)]
    return {"job_id": 500_000_000 + index, "creator_user_name": "etl@example.com",
            "settings": {"name": f"etl-job-{index:03d}", "tasks": tasks, "max_concurrent_runs": 1}}


def _add_generated_run(data: WorkspaceData, rng: random.Random, index: int, base_ms: int) -> None:
    job = rng.choice(data.jobs)
    run_id = 700_000_000 + index * 10
    start = base_ms - rng.randint(0, 24 * _HOUR_MS)
    roll = rng.random()
    result = "RUNNING" if roll < 0.03 else "FAILED" if roll < 0.08 else "TIMEDOUT" if roll < 0.09 else \
        "INTERNAL_ERROR" if roll < 0.1 else "SUCCESS"
    end = 0 if result == "RUNNING" else start + rng.randint(60_000, _HOUR_MS)
    failing = rng.randrange(len(job["settings"]["tasks"]))
    tasks = []
    for position, spec in enumerate(job["settings"]["tasks"]):
        task = {**spec, "run_id": run_id + position + 1, "attempt_number": 0, "start_time": start,
                "end_time": end}
        task_result = "SUCCESS" if position < failing or result == "SUCCESS" else \
            result if position == failing else "UPSTREAM_FAILED"
        task["state"], task["status"] = _generated_state(task_result)
        tasks.append(task)
        if position == failing and result in ("FAILED", "TIMEDOUT"):
            error, kind = rng.choice(_TASK_ERRORS)
            data.outputs[str(task["run_id"])] = {"error": error, "error_trace": f"{kind}\n  at line 1"}
    state, status = _generated_state(result)
    data.runs.append({"job_id": job["job_id"], "run_id": run_id, "run_name": job["settings"]["name"],
                      "number_in_job": run_id, "creator_user_name": "etl@example.com", "run_type": "JOB_RUN",
                      "trigger": "PERIODIC", "format": "MULTI_TASK", "start_time": start, "end_time": end,
                      "state": state, "status": status, "tasks": tasks})


def _generated_state(result: str) -> tuple[Json, Json]:
    if result == "RUNNING":
        return {"life_cycle_state": "RUNNING", "state_message": ""}, {"state": "RUNNING"}
    if result == "INTERNAL_ERROR":
        message = "The spark driver has stopped unexpectedly and is restarting."
        details = {"code": "DRIVER_ERROR", "type": "INTERNAL_ERROR", "message": message}
        return ({"life_cycle_state": "INTERNAL_ERROR", "result_state": "FAILED", "state_message": message},
                {"state": "TERMINATED", "termination_details": details})
    return terminal_state(result)

