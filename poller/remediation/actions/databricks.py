"""Databricks actions through databricks-sdk: repair the failed tasks, run-now, cluster start, library fallback.

Each mutating call is recognisable afterwards by a read, so a crash never repeats it: a repair by the latest
repair id recorded in the intent, a run-now by a new one-time run of the job (its idempotency token is the second
line of defence), a start by the cluster's state, a library fallback by the library statuses and the cluster's
state (reference/databricks-api.md §4, §5.6, §6.4).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from poller.models import Failure
from poller.remediation.actions.base import Json, NotApplicable, Outcome
from poller.remediation.config import PolicyConfig, RemediationConfig

if TYPE_CHECKING:
    from databricks.sdk import WorkspaceClient

ClientFor = Callable[[str], "WorkspaceClient"]  # source name → client of that workspace
#: How far before the pass's `now` a run started by this attempt may look started: the poller's clock against the
#: workspace's, and the pass's start against the moment of the call.
RUN_NOW_SKEW = timedelta(minutes=15)
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


def _pypi(spec: str) -> list[Any]:
    from databricks.sdk.service import compute

    return [compute.Library(pypi=compute.PythonPyPiLibrary(package=spec))]


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

    def prepare(self, params: Json, now: datetime) -> Json:
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

    def prepare(self, params: Json, now: datetime) -> Json:
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
    """A new run of the job; the idempotency token makes a repeated call return the same run.

    After a crash the run is looked up read-only: runs/list does not return the token (§2.2), so the run this
    attempt made is the earliest one-time run (trigger ONE_TIME: run-now or "Run now" in the UI) of the job that
    started after the intent's `since_ms` and was not already listed when the intent was prepared. Residual risk:
    a person pressing "Run now" on the same job between the intent and the restart is adopted as ours; the
    remediation then follows that run, and no second run is started.
    """

    name = "databricks_run_now"

    def plan(self, failure: Failure, policy: PolicyConfig, config: RemediationConfig) -> Json:
        return {"source": failure.source, "job_id": _job_id(failure)}

    def prepare(self, params: Json, now: datetime) -> Json:
        since = int((now - RUN_NOW_SKEW).timestamp() * 1000)
        return {**params, "since_ms": since, "known_runs": sorted(self._one_time_runs(params, since))}

    def perform(self, params: Json, key: str) -> str:
        wait = self._client(params).jobs.run_now(int(params["job_id"]), idempotency_token=key)
        response: Any = wait.response
        return str(response.run_id)

    def reconcile(self, params: Json, key: str) -> str | None:
        if "since_ms" not in params:  # an intent recorded before runs were looked up: the token alone protects it
            return None
        runs, known = self._one_time_runs(params, int(params["since_ms"])), set(params["known_runs"])
        new = sorted((start, run_id) for run_id, start in runs.items() if run_id not in known)
        return str(new[0][1]) if new else None

    def verify(self, params: Json, external_id: str) -> Outcome:
        return _run_outcome(self._client(params).jobs.get_run(int(external_id)))

    def _one_time_runs(self, params: Json, since_ms: int) -> dict[int, int]:
        """run id → start time (ms) of the job's runs triggered once (run-now) at or after `since_ms`."""
        from databricks.sdk.service import jobs

        listed = self._client(params).jobs.list_runs(job_id=int(params["job_id"]), start_time_from=since_ms,
                                                     run_type=jobs.RunType.JOB_RUN)
        return {int(run.run_id): int(run.start_time or 0) for run in listed
                if run.run_id is not None and run.trigger == jobs.TriggerType.ONE_TIME}


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
    """Uninstalls the failed PyPI pin, installs the fallback version named in `library_fallbacks`, and restarts
    a running cluster: an uninstall takes effect only on restart (§6.4), until then the pin is UNINSTALL_ON_RESTART.

    Each step is skipped when the statuses show it done (the pin marked or gone, the fallback listed, the cluster
    restarting or the pin gone), so a call repeated after a crash makes only the steps that did not land. A
    cluster that was not running is not started: its next start applies both changes.
    """

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

    def prepare(self, params: Json, now: datetime) -> Json:
        return {**params, "restart": self._cluster_state(params) == "RUNNING"}

    def perform(self, params: Json, key: str) -> str:
        from databricks.sdk.errors import InvalidState

        client, cluster_id = self._client(params), str(params["cluster_id"])
        steps = self._steps_left(params)
        if "uninstall" in steps:
            client.libraries.uninstall(cluster_id, _pypi(params["failed"]))
        if "install" in steps:
            client.libraries.install(cluster_id, _pypi(params["install"]))
        if "restart" in steps:
            with contextlib.suppress(InvalidState):  # no longer RUNNING: restarted or stopped by someone else
                client.clusters.restart(cluster_id)
        return cluster_id

    def reconcile(self, params: Json, key: str) -> str | None:
        return None if self._steps_left(params) else str(params["cluster_id"])

    def verify(self, params: Json, external_id: str) -> Outcome:
        state = self._cluster_state(params)  # read first: the restart is what removes the pin
        statuses = self._statuses(params)
        pin, fallback = statuses.get(params["failed"]), statuses.get(params["install"])
        if fallback in ("FAILED", "SKIPPED"):
            return Outcome("failed", f"{params['install']} {fallback}")
        if not params.get("restart"):
            if fallback is None or pin not in (None, "UNINSTALL_ON_RESTART"):
                return Outcome("running", f"{params['failed']} {pin}, {params['install']} {fallback}")
            return Outcome("succeeded", f"{params['install']} {fallback}, {params['failed']} "
                                        f"{pin or 'removed'}: the cluster applies both when it next starts")
        if state in ("TERMINATED", "ERROR"):
            return Outcome("failed", f"the restart that removes {params['failed']} ended {state}")
        if state != "RUNNING" or pin is not None or fallback != "INSTALLED":
            return Outcome("running", f"cluster {state}, {params['failed']} {pin or 'removed'}, "
                                      f"{params['install']} {fallback}")
        return Outcome("succeeded", f"{params['install']} installed, {params['failed']} removed by the restart")

    def _steps_left(self, params: Json) -> list[str]:
        # the cluster first: a restart that ends between the two reads then shows as the pin gone, not as a
        # RUNNING cluster that still lists the pin (which would restart it twice)
        running = bool(params.get("restart")) and self._cluster_state(params) == "RUNNING"
        statuses = self._statuses(params)
        pin = statuses.get(params["failed"])
        steps = [] if pin in (None, "UNINSTALL_ON_RESTART") else ["uninstall"]
        if params["install"] not in statuses:
            steps.append("install")
        if running and pin is not None:  # the pin still listed on a RUNNING cluster: not restarted since
            steps.append("restart")
        return steps

    def _statuses(self, params: Json) -> dict[str, str | None]:
        """PyPI spec → install status, for the cluster's libraries."""
        return {item.library.pypi.package: item.status.value if item.status else None
                for item in self._client(params).libraries.cluster_status(str(params["cluster_id"]))
                if item.library and item.library.pypi}

    def _cluster_state(self, params: Json) -> str:
        state = self._client(params).clusters.get(str(params["cluster_id"])).state
        return state.value if state else ""
