"""Databricks actions through databricks-sdk: repair the failed tasks, run-now, cluster start, library fallback.

Each mutating call is recognisable afterwards, so a crash never repeats it: a repair by the latest repair id
recorded in the intent, a run-now by its idempotency token, a start by the cluster's state, an install by the
library status of the fallback version (reference/databricks-api.md §4, §5.6, §6.4).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from poller.models import Failure
from poller.remediation.actions.base import Json, NotApplicable, Outcome
from poller.remediation.config import PolicyConfig, RemediationConfig

if TYPE_CHECKING:
    from databricks.sdk import WorkspaceClient

ClientFor = Callable[[str], "WorkspaceClient"]  # source name → client of that workspace
_FAILED_RUN = {"FAILED", "TIMEDOUT", "CANCELED", "MAXIMUM_CONCURRENT_RUNS_REACHED", "UPSTREAM_FAILED",
               "UPSTREAM_CANCELED", "EXCLUDED"}


def _run_outcome(run: Any) -> Outcome:
    state = run.state
    life = state.life_cycle_state.value if state and state.life_cycle_state else ""
    result = state.result_state.value if state and state.result_state else ""
    if life in ("TERMINATED", "SKIPPED", "INTERNAL_ERROR"):
        ok = life == "TERMINATED" and result in ("SUCCESS", "SUCCESS_WITH_FAILURES")
        return Outcome("succeeded" if ok else "failed", f"{life} {result} {state.state_message or ''}".strip())
    return Outcome("running", life)


def _job_id(failure: Failure) -> int:
    job_id = failure.metadata.get("job_id")
    if not job_id:
        raise NotApplicable("the failure has no job_id")
    return int(job_id)


class _DatabricksAction:
    def __init__(self, client_for: ClientFor) -> None:
        self._client_for = client_for

    def _client(self, params: Json) -> WorkspaceClient:
        return self._client_for(str(params["source"]))

    def prepare(self, params: Json) -> Json:
        return params


class RepairAction(_DatabricksAction):
    """Reruns the failed tasks of the failed run (deduplicated keys), passing the latest repair id."""

    name = "databricks_repair"

    def plan(self, failure: Failure, policy: PolicyConfig, config: RemediationConfig) -> Json:
        if not failure.run_id:
            raise NotApplicable("the failure has no run_id")
        task_key = failure.metadata.get("task_key")
        params: Json = {"source": failure.source, "run_id": int(failure.run_id)}
        if task_key:
            params["rerun_tasks"] = [str(task_key)]
        else:
            params["rerun_all_failed_tasks"] = True
        if policy.params.get("rerun_dependent_tasks"):
            params["rerun_dependent_tasks"] = True
        return params

    def prepare(self, params: Json) -> Json:
        return {**params, "latest_repair_id": self._latest_repair_id(params)}

    def perform(self, params: Json, key: str) -> str:
        tasks = list(dict.fromkeys(params.get("rerun_tasks") or []))  # the API rejects duplicate task keys
        wait = self._client(params).jobs.repair_run(
            int(params["run_id"]), latest_repair_id=params.get("latest_repair_id"), rerun_tasks=tasks or None,
            rerun_all_failed_tasks=None if tasks else True, rerun_dependent_tasks=params.get("rerun_dependent_tasks"),
        )
        response: Any = wait.response
        return str(response.repair_id)

    def reconcile(self, params: Json, key: str) -> str | None:
        latest = self._latest_repair_id(params)
        return str(latest) if latest is not None and latest != params.get("latest_repair_id") else None

    def verify(self, params: Json, external_id: str) -> Outcome:
        run = self._client(params).jobs.get_run(int(params["run_id"]), include_history=True)
        for item in run.repair_history or []:
            if str(item.id) == external_id and item.state is not None:
                return _run_outcome(item)
        return _run_outcome(run)

    def _latest_repair_id(self, params: Json) -> int | None:
        run = self._client(params).jobs.get_run(int(params["run_id"]), include_history=True)
        repairs = [h.id for h in run.repair_history or [] if h.type is not None and h.type.value == "REPAIR"]
        return repairs[-1] if repairs else None


class RunNowAction(_DatabricksAction):
    """A new run of the job; the idempotency token makes a repeated call return the same run."""

    name = "databricks_run_now"

    def plan(self, failure: Failure, policy: PolicyConfig, config: RemediationConfig) -> Json:
        return {"source": failure.source, "job_id": _job_id(failure)}

    def perform(self, params: Json, key: str) -> str:
        wait = self._client(params).jobs.run_now(int(params["job_id"]), idempotency_token=key)
        response: Any = wait.response
        return str(response.run_id)

    def reconcile(self, params: Json, key: str) -> str | None:
        # run-now with the same token is itself the lookup: it returns the run made before the crash, if any.
        return None

    def verify(self, params: Json, external_id: str) -> Outcome:
        return _run_outcome(self._client(params).jobs.get_run(int(external_id)))


class ClusterStartAction(_DatabricksAction):
    """Starts a cluster that terminated for a service or cloud fault; a cluster already starting is left be."""

    name = "databricks_cluster_start"

    def plan(self, failure: Failure, policy: PolicyConfig, config: RemediationConfig) -> Json:
        cluster_id = failure.resource_id if failure.kind == "cluster_event" else failure.metadata.get("cluster_id")
        if not cluster_id:
            raise NotApplicable("the failure names no cluster")
        return {"source": failure.source, "cluster_id": str(cluster_id)}

    def perform(self, params: Json, key: str) -> str:
        # InvalidState: not TERMINATED — someone (or Databricks) started it already; nothing to do (§5.6)
        from databricks.sdk.errors import InvalidState

        with contextlib.suppress(InvalidState):
            self._client(params).clusters.start(str(params["cluster_id"]))
        return str(params["cluster_id"])

    def reconcile(self, params: Json, key: str) -> str | None:
        state = self._client(params).clusters.get(str(params["cluster_id"])).state
        return None if state is None or state.value in ("TERMINATED", "ERROR") else str(params["cluster_id"])

    def verify(self, params: Json, external_id: str) -> Outcome:
        cluster = self._client(params).clusters.get(external_id)
        state = cluster.state.value if cluster.state else ""
        if state == "RUNNING":
            return Outcome("succeeded", state)
        if state in ("TERMINATED", "ERROR"):
            return Outcome("failed", f"{state}: {cluster.state_message or ''}".strip())
        return Outcome("running", state)


class LibraryReinstallAction(_DatabricksAction):
    """Uninstalls the failed PyPI pin and installs the fallback version named in `library_fallbacks`."""

    name = "databricks_library_reinstall"

    def plan(self, failure: Failure, policy: PolicyConfig, config: RemediationConfig) -> Json:
        spec = str(failure.metadata.get("pypi.package") or "")
        package = spec.split("==")[0].split(">")[0].split("<")[0].strip()
        if not package:
            raise NotApplicable("only PyPI libraries have a fallback version")
        fallback = config.library_fallbacks.get(package)
        if not fallback:
            raise NotApplicable(f"no fallback version for {package!r} in remediation.library_fallbacks")
        return {"source": failure.source, "cluster_id": failure.resource_id, "failed": spec,
                "install": f"{package}=={fallback}"}

    def perform(self, params: Json, key: str) -> str:
        libraries = self._client(params).libraries
        cluster_id = str(params["cluster_id"])
        from databricks.sdk.service import compute

        libraries.uninstall(cluster_id, [compute.Library(pypi=compute.PythonPyPiLibrary(package=params["failed"]))])
        libraries.install(cluster_id, [compute.Library(pypi=compute.PythonPyPiLibrary(package=params["install"]))])
        return cluster_id

    def reconcile(self, params: Json, key: str) -> str | None:
        return str(params["cluster_id"]) if self._status(params) is not None else None

    def verify(self, params: Json, external_id: str) -> Outcome:
        status = self._status(params)
        if status == "INSTALLED":
            return Outcome("succeeded", f"{params['install']} installed")
        if status in ("FAILED", "SKIPPED"):
            return Outcome("failed", f"{params['install']} {status}")
        return Outcome("running", status or "")

    def _status(self, params: Json) -> str | None:
        for item in self._client(params).libraries.cluster_status(str(params["cluster_id"])):
            if item.library and item.library.pypi and item.library.pypi.package == params["install"]:
                return item.status.value if item.status else None
        return None
