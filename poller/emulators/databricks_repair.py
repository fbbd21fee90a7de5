"""Job remediation in the emulated workspace: runs/repair and run-now, which start task attempts or a run
and queue its end, as scripted with `script_repair` / `script_run_now` (a `RunOutcome`; unscripted: SUCCESS).
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from poller.emulators.databricks_core import ApiError, Json, invalid
from poller.emulators.databricks_runs import (
    ACTIVE_LIFE_CYCLES,
    SKIPPED_RESULTS,
    RunsPart,
    latest_attempts,
    running_state,
    terminal_state,
)

#: Results that count as "fine" when a repair decides the run's result and which tasks failed.
_OK_RESULTS = frozenset({"SUCCESS", "SUCCESS_WITH_FAILURES", "EXCLUDED", "DISABLED"})


@dataclass(frozen=True)
class RunOutcome:
    """How a repaired or run-now run ends: per-task results, else `result_state` for every task."""

    result_state: str = "SUCCESS"
    task_results: Mapping[str, str] = field(default_factory=dict)
    error: str = "Exception: scripted failure"
    error_trace: str | None = None


class RepairPart(RunsPart):
    """Repair and run-now over the runs part: each puts a run in RUNNING and queues its scripted end."""

    def __init__(self) -> None:
        super().__init__()
        self._run_scripts: dict[tuple[str, int], deque[RunOutcome]] = {}
        self._idempotency: dict[str, int] = {}

    def script_repair(self, run_id: int, outcome: RunOutcome) -> None:
        """The next repair of `run_id` ends as `outcome` (FIFO; unscripted repairs succeed)."""
        with self._lock:
            self._run_scripts.setdefault(("repair", run_id), deque()).append(outcome)

    def script_run_now(self, job_id: int, outcome: RunOutcome) -> None:
        """The next run-now of `job_id` ends as `outcome` (FIFO; unscripted runs succeed)."""
        with self._lock:
            self._run_scripts.setdefault(("run-now", job_id), deque()).append(outcome)

    def repair_run(self, request: Json) -> Json:
        with self._lock:
            run_id = int(request.get("run_id", 0))
            run = self._run(run_id)
            if run.get("state", {}).get("life_cycle_state") in ACTIVE_LIFE_CYCLES:
                raise ApiError(400, "INVALID_STATE", f"Run {run_id} is still active and cannot be repaired.")
            self._check_latest_repair(run, request.get("latest_repair_id"))
            keys = self._keys_to_rerun(run, request)
            repair_id, now = self._new_id(), self.now_ms()
            history = run.setdefault("repair_history", [])
            if not history:
                history.append(self._original_record(run))
            new_ids = [self._new_attempt(run, key, now) for key in keys]
            state, status = running_state()
            history.append({"type": "REPAIR", "id": repair_id, "start_time": now, "end_time": 0,
                            "task_run_ids": new_ids, "state": state, "status": status})
            run["state"], run["status"] = running_state()
            run["end_time"] = 0
            outcome = self._next_outcome(("repair", run_id))
            self._queue("run", str(run_id), lambda: self._complete_run(run_id, new_ids, outcome, repair_id))
            return {"repair_id": repair_id}

    def run_now(self, request: Json) -> Json:
        with self._lock:
            job_id = int(request.get("job_id", 0))
            job = self._job(job_id)
            token = request.get("idempotency_token")
            if token and token in self._idempotency:
                existing = self._idempotency[token]
                return {"run_id": existing, "number_in_job": existing}
            run_id = self._new_id()
            if token:
                self._idempotency[token] = run_id
            self.add_run(self._new_run(job, run_id, request.get("only")))
            task_ids = [t["run_id"] for t in self._runs[run_id]["tasks"]]
            outcome = self._next_outcome(("run-now", job_id))
            self._queue("run", str(run_id), lambda: self._complete_run(run_id, task_ids, outcome, None))
            return {"run_id": run_id, "number_in_job": run_id}

    # -- internals ---------------------------------------------------------------------------------

    def _next_outcome(self, script: tuple[str, int]) -> RunOutcome:
        queued = self._run_scripts.get(script)
        return queued.popleft() if queued else RunOutcome()

    def _check_latest_repair(self, run: Json, latest_repair_id: Any) -> None:
        repairs = [h for h in run.get("repair_history", []) if h.get("type") == "REPAIR"]
        if repairs and latest_repair_id != repairs[-1]["id"]:
            raise invalid(f"latest_repair_id must be {repairs[-1]['id']}, the latest repair of run "
                          f"{run['run_id']}; got {latest_repair_id}.")

    def _keys_to_rerun(self, run: Json, request: Json) -> list[str]:
        latest = latest_attempts(run)
        keys: list[str] = list(request.get("rerun_tasks") or [])
        if keys and request.get("rerun_all_failed_tasks"):
            raise invalid("Only one of rerun_tasks or rerun_all_failed_tasks can be specified.")
        if len(set(keys)) != len(keys):
            raise invalid("rerun_tasks cannot contain duplicate task keys.")
        if unknown := [k for k in keys if k not in latest]:
            raise invalid(f"Task keys {unknown} do not exist in run {run['run_id']}.")
        if request.get("rerun_all_failed_tasks"):
            keys = [k for k, t in latest.items() if t.get("state", {}).get("result_state") not in _OK_RESULTS]
        if request.get("rerun_dependent_tasks"):
            keys = [k for k in latest if k in keys or self._depends_on_any(latest, k, set(keys))]
        if not keys:
            raise invalid(f"Run {run['run_id']} has no tasks to repair.")
        return keys

    def _depends_on_any(self, latest: dict[str, Json], key: str, roots: set[str]) -> bool:
        parents = [d["task_key"] for d in latest[key].get("depends_on", []) if d["task_key"] in latest]
        return any(p in roots or self._depends_on_any(latest, p, roots) for p in parents)

    def _original_record(self, run: Json) -> Json:
        originals = [t["run_id"] for t in run.get("tasks", []) if t.get("attempt_number", 0) == 0]
        return {"type": "ORIGINAL", "start_time": run.get("start_time", 0),
                "end_time": run.get("end_time", 0), "task_run_ids": originals,
                "state": run.get("state", {}), "status": run.get("status", {})}

    def _new_attempt(self, run: Json, task_key: str, now: int) -> int:
        previous = latest_attempts(run)[task_key]
        attempt = {k: v for k, v in copy.deepcopy(previous).items() if k not in ("end_time", "run_page_url")}
        attempt["state"], attempt["status"] = running_state()
        attempt.update(run_id=0, attempt_number=previous.get("attempt_number", 0) + 1, start_time=now,
                       original_attempt_run_id=previous.get("original_attempt_run_id", previous["run_id"]))
        return self.add_task_attempt(run["run_id"], attempt)

    def _new_run(self, job: Json, run_id: int, only: list[str] | None) -> Json:
        settings = job.get("settings", {})
        specs = settings.get("tasks") or [{"task_key": "main"}]
        tasks = [t for t in specs if not only or t["task_key"] in only]
        state, status = running_state()
        now = self.now_ms()
        return {"job_id": job["job_id"], "run_id": run_id, "number_in_job": run_id,
                "original_attempt_run_id": run_id, "creator_user_name": self.user_name,
                "run_name": settings.get("name", f"job-{job['job_id']}"), "run_type": "JOB_RUN",
                "trigger": "ONE_TIME", "format": "MULTI_TASK", "start_time": now, "end_time": 0,
                "state": state, "status": status, "job_clusters": settings.get("job_clusters", []),
                "tasks": [{**copy.deepcopy(t), "run_id": 0, "attempt_number": 0, "start_time": now,
                           "state": state, "status": status} for t in tasks]}

    def _complete_run(self, run_id: int, task_ids: list[int], outcome: RunOutcome,
                      repair_id: int | None) -> None:
        run, now = self._runs[run_id], self.now_ms()
        failed: set[str] = set()
        for task in (t for t in run["tasks"] if t["run_id"] in task_ids):
            upstream = {d["task_key"] for d in task.get("depends_on", [])} & failed
            result = "UPSTREAM_FAILED" if upstream else outcome.task_results.get(task["task_key"],
                                                                                  outcome.result_state)
            task["state"], task["status"] = terminal_state(result)
            task["end_time"] = now
            if result not in _OK_RESULTS:
                failed.add(task["task_key"])
            if result not in _OK_RESULTS | SKIPPED_RESULTS:
                self.set_output(task["run_id"], error=outcome.error, error_trace=outcome.error_trace)
        self._end_run(run, now, repair_id)

    def _end_run(self, run: Json, now: int, repair_id: int | None) -> None:
        results = {k: t.get("state", {}).get("result_state") for k, t in latest_attempts(run).items()}
        bad = [k for k, r in results.items() if r not in _OK_RESULTS | SKIPPED_RESULTS]
        result = "SUCCESS" if not bad else "FAILED"
        # the parent's message names the first failed task, as in real runs (§3.5)
        message = f"Task {bad[0]} failed with message: Workload failed, see run output for details." \
            if bad else ""
        run["state"], run["status"] = terminal_state(result, message)
        run["end_time"] = now
        for record in run.get("repair_history", []):
            if repair_id is not None and record.get("id") == repair_id:
                record["state"], record["status"], record["end_time"] = run["state"], run["status"], now
