"""Shared pieces of the remediation tests: failures as extractors make them, a store, a processor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from databricks.sdk import WorkspaceClient
from databricks.sdk.core import Config as SdkConfig

from poller.config import RcaConfig
from poller.emulators.databricks import DatabricksEmulator
from poller.incidents import Processor
from poller.models import Failure
from poller.rca import RcaEngine
from poller.remediation.actions.base import Action
from poller.remediation.build import databricks_actions
from poller.remediation.config import RemediationConfig
from poller.remediation.engine import RemediationEngine
from poller.store import Store

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
TICK = timedelta(minutes=5)
LIBRARY_FALLBACKS = {"pandas": "2.2.3"}


def failure(**changes: Any) -> Failure:
    """A Databricks task failed on a cloud failure, as `extractors/databricks_jobs.py` extracts it."""
    metadata = {"task_key": "ingest", "job_id": 11, "termination_type": "CLOUD_FAILURE",
                **changes.pop("metadata", {})}
    values: dict[str, Any] = {
        "key": "databricks:run:501:ingest", "source": "dbx", "service": "databricks", "kind": "task_run",
        "resource": "nightly-etl", "resource_id": "https://adb-1.azuredatabricks.net#job/11", "run_id": "501",
        "error_code": "CLOUD_FAILURE", "error_message": "Cloud provider launch failure: AllocationFailed",
        "failure_type": "CLOUD_FAILURE", "occurred_at": NOW - timedelta(minutes=10), "metadata": metadata,
    }
    values.update(changes)
    return Failure(**values)


def commit(store: Store, failures: list[Failure], now: datetime = NOW) -> None:
    with store.tick("dbx", now) as tx:
        tx.add_failures([f.stamped(f.source or "dbx", now) for f in failures])
        tx.advance(None, len(failures))


def make_store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path}/state.db")


def settings(**changes: Any) -> RemediationConfig:
    base: dict[str, Any] = {"enabled": True, "mode": "act", "policies": [{
        "name": "dbx-cloud", "action": "databricks_repair", "max_attempts": 2,
        "backoff": {"initial": "1m", "jitter": 0},
        "match": {"service": ["databricks"], "kind": ["task_run"], "error_code": ["CLOUD_FAILURE"]}}]}
    base.update(changes)
    return RemediationConfig.model_validate(base)


def processor(config: RemediationConfig, actions: dict[str, Action]) -> Processor:
    return Processor(engine=RcaEngine(RcaConfig()), remediation=RemediationEngine(config, actions))


def sdk_client(emu: DatabricksEmulator) -> WorkspaceClient:
    return WorkspaceClient(config=SdkConfig(host=emu.url, token=emu.token, auth_type="pat",
                                            retry_timeout_seconds=2, http_timeout_seconds=5))


def dbx_actions(emu: DatabricksEmulator) -> dict[str, Action]:
    client = sdk_client(emu)
    return databricks_actions(lambda source: client)


def failed_run(emu: DatabricksEmulator, run_id: int = 501, job_id: int = 11) -> None:
    """A finished job run whose `ingest` task failed on a cloud failure, and its job."""
    failed = {"life_cycle_state": "TERMINATED", "result_state": "FAILED", "state_message": "AllocationFailed"}
    ok = {"life_cycle_state": "TERMINATED", "result_state": "SUCCESS"}
    emu.add_job({"job_id": job_id, "settings": {"name": "nightly-etl", "tasks": [{"task_key": "ingest"}]}})
    emu.add_run({"job_id": job_id, "run_id": run_id, "start_time": 1, "end_time": 2, "run_type": "JOB_RUN",
                 "state": failed, "run_name": "nightly-etl",
                 "tasks": [{"task_key": "prep", "run_id": run_id + 1, "attempt_number": 0, "state": ok},
                           {"task_key": "ingest", "run_id": run_id + 2, "attempt_number": 0, "state": failed,
                            "depends_on": [{"task_key": "prep"}]}]})


def clock(emu: DatabricksEmulator, now: datetime = NOW) -> None:
    """The workspace's clock on the simulated one, so run start times line up with the passes' `now`."""
    emu.now_ms = lambda: int(now.timestamp() * 1000)


def failed_library(emu: DatabricksEmulator, cluster_id: str = "c-2", state: str = "RUNNING") -> Failure:
    """A cluster whose pin pandas==9.9 failed to install, and the failure the library extractor makes of it."""
    emu.add_cluster({"cluster_id": cluster_id, "cluster_name": "ml", "state": state})
    emu.set_library_status(cluster_id, {"pypi": {"package": "pandas==9.9"}}, "FAILED", ["No matching distribution"])
    return failure(key=f"databricks:library:{cluster_id}:pandas", kind="library_install", resource="ml",
                   resource_id=cluster_id, run_id="", error_code="LIBRARY_NOT_FOUND",
                   metadata={"pypi.package": "pandas==9.9"})


def library_statuses(emu: DatabricksEmulator, cluster_id: str = "c-2") -> dict[str, str]:
    return {s["library"]["pypi"]["package"]: s["status"] for s in emu.library_statuses(cluster_id)}
