"""Jobs, runs and task-run outputs of the emulated workspace: runs/list, runs/get, runs/get-output, jobs/get
and jobs/list, the setters that build runs, and the run-state vocabulary (`terminal_state`, `running_state`,
`latest_attempts`) that repairs, the generated workspace and tests write runs with.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from poller.emulators.databricks_core import Json, WorkspaceCore, decode_token, encode_token, invalid

ACTIVE_LIFE_CYCLES = frozenset(
    {"QUEUED", "PENDING", "RUNNING", "TERMINATING", "BLOCKED", "WAITING_FOR_RETRY"}
)
#: Results a task gets without executing; their life cycle is SKIPPED, as in the docs' getrun example.
SKIPPED_RESULTS = frozenset(
    {"UPSTREAM_FAILED", "UPSTREAM_CANCELED", "EXCLUDED", "DISABLED", "MAXIMUM_CONCURRENT_RUNS_REACHED"}
)
#: result_state -> (termination code, type, message) written when the emulator ends a run or task.
#: FAILED and UPSTREAM_FAILED follow the real samples (§3.5); the others are the emulator's best reading
#: of the TerminationCodeCode docstrings (§2.3), e.g. CANCELED = "canceled by the platform, e.g. max run
#: duration exceeded" for a timeout.
TERMINATION_FOR_RESULT: dict[str, tuple[str, str, str]] = {
    "SUCCESS": ("SUCCESS", "SUCCESS", ""),
    "SUCCESS_WITH_FAILURES": ("SUCCESS_WITH_FAILURES", "SUCCESS", ""),
    "FAILED": ("RUN_EXECUTION_ERROR", "CLIENT_ERROR", "Workload failed, see run output for details"),
    "TIMEDOUT": ("CANCELED", "CLIENT_ERROR", "Run timed out."),
    "CANCELED": ("USER_CANCELED", "SUCCESS", "Run cancelled."),
    "UPSTREAM_FAILED": ("SKIPPED", "SUCCESS", "An upstream task failed."),
    "UPSTREAM_CANCELED": ("SKIPPED", "SUCCESS", "An upstream task was canceled."),
    "EXCLUDED": ("SKIPPED", "SUCCESS", "The task was excluded."),
    "DISABLED": ("DISABLED", "SUCCESS", "The task was disabled."),
    "MAXIMUM_CONCURRENT_RUNS_REACHED": ("MAX_CONCURRENT_RUNS_EXCEEDED", "CLIENT_ERROR", "Run skipped."),
}
_UNKNOWN_RESULT_TERMINATION = ("RUN_EXECUTION_ERROR", "CLIENT_ERROR", "")
TASK_PAGE_SIZE = 100  # runs/get and runs/list?expand_tasks cap each array at 100 (§3.1)


def terminal_state(result_state: str, message: str | None = None) -> tuple[Json, Json]:
    """The deprecated `state` and the `status` objects of a run or task that ended with `result_state`."""
    code, kind, default = TERMINATION_FOR_RESULT.get(result_state, _UNKNOWN_RESULT_TERMINATION)
    text = default if message is None else message
    life_cycle = "SKIPPED" if result_state in SKIPPED_RESULTS else "TERMINATED"
    state = {"life_cycle_state": life_cycle, "result_state": result_state, "state_message": text,
             "user_cancelled_or_timedout": result_state in {"CANCELED", "TIMEDOUT"}}
    status = {"state": "TERMINATED", "termination_details": {"code": code, "type": kind, "message": text}}
    return state, status


def running_state() -> tuple[Json, Json]:
    return ({"life_cycle_state": "RUNNING", "state_message": "", "user_cancelled_or_timedout": False},
            {"state": "RUNNING"})


def latest_attempts(run: Json) -> dict[str, Json]:
    """task_key -> the entry with the highest attempt_number: `tasks[]` holds one entry per attempt (§3.4)."""
    latest: dict[str, Json] = {}
    for task in run.get("tasks", []):
        key = task["task_key"]
        if key not in latest or task.get("attempt_number", 0) >= latest[key].get("attempt_number", 0):
            latest[key] = task
    return latest


@dataclass(frozen=True)
class RunsQuery:
    """The parsed runs/list parameters (§2.1)."""

    active_only: bool = False
    completed_only: bool = False
    expand_tasks: bool = False
    job_id: int | None = None
    run_type: str | None = None
    start_time_from: int | None = None
    start_time_to: int | None = None
    limit: int = 20
    page_token: str | None = None

    def keeps(self, run: Json) -> bool:
        life_cycle = run.get("state", {}).get("life_cycle_state")
        start = run.get("start_time", 0)
        return not (
            (self.active_only and life_cycle not in ACTIVE_LIFE_CYCLES)
            or (self.completed_only and life_cycle in ACTIVE_LIFE_CYCLES)
            or (self.job_id is not None and run.get("job_id") != self.job_id)
            or (self.run_type is not None and run.get("run_type") != self.run_type)
            or (self.start_time_from is not None and start < self.start_time_from)
            or (self.start_time_to is not None and start > self.start_time_to)
        )


class RunsPart(WorkspaceCore):
    """Jobs, runs (`tasks[]` one entry per attempt) and task-run outputs, as raw JSON."""

    def __init__(self) -> None:
        super().__init__()
        self.task_page_size = TASK_PAGE_SIZE
        self._jobs: dict[int, Json] = {}
        self._runs: dict[int, Json] = {}
        self._task_parent: dict[int, int] = {}
        self._outputs: dict[int, Json] = {}

    def run_json(self, run_id: int) -> Json:
        """A copy of the stored job run (parent id)."""
        with self._lock:
            return copy.deepcopy(self._run(run_id))

    def add_job(self, job: Json) -> int:
        with self._lock:
            job_id = int(job.get("job_id") or self._new_id())
            self._jobs[job_id] = {**copy.deepcopy(job), "job_id": job_id}
            self._bump_ids(job_id)
            return job_id

    def add_run(self, run: Json) -> int:
        """Store a runs/get-shaped run, `tasks[]` one entry per attempt; missing run ids are assigned."""
        with self._lock:
            stored = copy.deepcopy(run)
            stored["run_id"] = int(stored.get("run_id") or self._new_id())
            self._bump_ids(stored["run_id"])
            self._index_tasks(stored, self._runs.get(stored["run_id"]))
            self._runs[stored["run_id"]] = stored
            return int(stored["run_id"])

    def update_run(self, run_id: int, changes: Mapping[str, Any]) -> None:
        """Replace top-level keys of a run (e.g. ``{"state": {...}, "end_time": ...}``)."""
        with self._lock:
            run = self._run(run_id)
            replaced = {"tasks": list(run.get("tasks", []))}
            run.update(copy.deepcopy(dict(changes)))
            self._index_tasks(run, replaced)

    def add_task_attempt(self, run_id: int, task: Json) -> int:
        """Append one task attempt (a retry or repair); its attempt_number defaults to the next one."""
        with self._lock:
            run = self._run(run_id)
            previous = latest_attempts(run).get(task["task_key"])
            entry = copy.deepcopy(task)
            entry["run_id"] = int(entry.get("run_id") or self._new_id())
            if previous is not None:
                entry.setdefault("attempt_number", previous.get("attempt_number", 0) + 1)
                entry.setdefault("original_attempt_run_id", previous.get("original_attempt_run_id",
                                                                         previous["run_id"]))
            run.setdefault("tasks", []).append(entry)
            self._task_parent[entry["run_id"]] = run_id
            return int(entry["run_id"])

    def finish_run(self, run_id: int, result_state: str = "SUCCESS", *, task_results: Mapping[str, str]
                   | None = None, state_message: str | None = None, end_time: int | None = None) -> None:
        """End a run: unfinished tasks take `task_results[key]` or `result_state`, then the run itself."""
        with self._lock:
            run = self._run(run_id)
            end = self.now_ms() if end_time is None else end_time
            for task in latest_attempts(run).values():
                if task.get("state", {}).get("life_cycle_state") in ACTIVE_LIFE_CYCLES | {None}:
                    task_result = (task_results or {}).get(task["task_key"], result_state)
                    task["state"], task["status"] = terminal_state(task_result)
                    task["end_time"] = end
            run["state"], run["status"] = terminal_state(result_state, state_message)
            run["end_time"] = end

    def set_output(self, task_run_id: int, *, error: str | None = None, error_trace: str | None = None,
                   logs: str | None = None, notebook_output: Json | None = None,
                   extra: Mapping[str, Any] | None = None) -> None:
        """Set what runs/get-output returns for a task run (metadata is added when served)."""
        fields = {"error": error, "error_trace": error_trace, "logs": logs,
                  "notebook_output": notebook_output}
        with self._lock:
            output = self._outputs.setdefault(task_run_id, {})
            output.update({k: v for k, v in fields.items() if v is not None})
            output.update(copy.deepcopy(dict(extra or {})))

    def list_runs(self, query: RunsQuery) -> Json:
        """One runs/list page, newest start first; the token marks the last run served, so runs that
        start while a client pages do not shift later pages."""
        with self._lock:
            self._advance("run", None)
            if query.active_only and query.completed_only:
                raise invalid("active_only and completed_only cannot both be true.")
            runs = sorted((r for r in self._runs.values() if query.keeps(r)),
                          key=lambda r: (r.get("start_time", 0), r["run_id"]), reverse=True)
            if query.page_token:
                start, _, rid = decode_token(query.page_token).partition(":")
                after = (int(start), int(rid))
                runs = [r for r in runs if (r.get("start_time", 0), r["run_id"]) < after]
            page = runs[: query.limit]
            body: Json = {"has_more": len(runs) > len(page)}
            if page:
                body["runs"] = [self._listed_run(r, query.expand_tasks) for r in page]
            if len(runs) > len(page):  # the key is left out on the last page (§0.5)
                last = page[-1]
                body["next_page_token"] = encode_token(f"{last.get('start_time', 0)}:{last['run_id']}")
            return body

    def get_run(self, run_id: int, page_token: str | None, include_history: bool) -> Json:
        """One runs/get page; a task run id answers with that task run, as the service does."""
        with self._lock:
            parent_id = self._task_parent.get(run_id, run_id)
            self._advance("run", str(parent_id))
            if run_id in self._task_parent:
                return self._task_run_view(run_id)
            run = self._run(run_id)
            page = int(decode_token(page_token)) if page_token else 0
            size = self.task_page_size
            body = {k: v for k, v in run.items() if include_history or k != "repair_history"}
            more = False
            for key in ("tasks", "job_clusters", "job_parameters", "repair_history"):
                if key in body:
                    body[key] = run[key][page * size: (page + 1) * size]
                    more = more or len(run[key]) > (page + 1) * size
            if more:
                body["next_page_token"] = encode_token(str(page + 1))
            return body

    def get_output(self, run_id: int) -> Json:
        with self._lock:
            self._advance("run", str(self._task_parent.get(run_id, run_id)))
            if run_id not in self._task_parent:
                run = self._run(run_id)
                if run.get("tasks"):
                    raise invalid("Retrieving the output of runs with multiple tasks is not supported. "
                                  "Please retrieve the output of each individual task run instead.")
                return {"metadata": run, **self._outputs.get(run_id, {})}
            return {"metadata": self._task_run_view(run_id), **self._outputs.get(run_id, {})}

    def get_job(self, job_id: int) -> Json:
        with self._lock:
            return self._job(job_id)

    def list_jobs(self, limit: int, page_token: str | None, name: str | None, expand_tasks: bool) -> Json:
        with self._lock:
            jobs = sorted(self._jobs.values(), key=lambda j: j["job_id"])
            if name is not None:
                jobs = [j for j in jobs if j.get("settings", {}).get("name", "").lower() == name.lower()]
            offset = int(decode_token(page_token)) if page_token else 0
            page = jobs[offset: offset + limit]
            if not expand_tasks:
                page = [{**j, "settings": {k: v for k, v in j.get("settings", {}).items()
                                           if k not in ("tasks", "job_clusters")}} for j in page]
            body: Json = {"has_more": len(jobs) > offset + limit}
            if page:
                body["jobs"] = page
            if body["has_more"]:
                body["next_page_token"] = encode_token(str(offset + limit))
            return body

    # -- internals ---------------------------------------------------------------------------------

    def _index_tasks(self, run: Json, replaced: Json | None) -> None:
        """Give every task attempt a run id and map it to its parent, forgetting the replaced tasks."""
        run_id = run["run_id"]
        for task in (replaced or {}).get("tasks", []):
            self._task_parent.pop(task.get("run_id"), None)
        for task in run.get("tasks", []):
            task["run_id"] = int(task.get("run_id") or self._new_id())
            self._bump_ids(task["run_id"])
            self._task_parent[task["run_id"]] = run_id

    def _run(self, run_id: int) -> Json:
        if run_id not in self._runs:
            raise invalid(f"Run {run_id} does not exist.")
        return self._runs[run_id]

    def _job(self, job_id: int) -> Json:
        if job_id not in self._jobs:
            raise invalid(f"Job {job_id} does not exist.")
        return self._jobs[job_id]

    def _listed_run(self, run: Json, expand_tasks: bool) -> Json:
        listed = {k: v for k, v in run.items() if k not in ("tasks", "job_clusters", "repair_history")}
        if expand_tasks:
            size = self.task_page_size
            for key in ("tasks", "job_clusters"):
                if key in run:
                    listed[key] = run[key][:size]
            listed["has_more"] = any(len(run.get(k, [])) > size for k in ("tasks", "job_clusters"))
        return listed

    def _task_run_view(self, task_run_id: int) -> Json:
        """A task run as runs/get and get-output `metadata` show it (real sample §3.5 a)."""
        parent = self._runs[self._task_parent[task_run_id]]
        task = next(t for t in parent["tasks"] if t["run_id"] == task_run_id)
        inherited = {k: parent[k] for k in ("job_id", "creator_user_name", "run_name", "run_type", "trigger",
                                            "cluster_spec") if k in parent}
        return {**inherited, **task, "number_in_job": task_run_id,
                "original_attempt_run_id": task.get("original_attempt_run_id", task_run_id),
                "tasks": [task], "format": "MULTI_TASK", "parent_run_id": parent["run_id"],
                "job_run_id": parent["run_id"]}
