"""The emulated workspace behind `DatabricksEmulator`: raw REST JSON, paging, and remediation that settles.

Objects are kept as the dicts the REST API returns (reference/databricks-api.md §2-§6), so an enum string
the SDK does not know (``"result_state": "SOMETHING_NEW"``) reaches a raw ``api_client.do`` verbatim.
Remediation calls (repair, run-now, start, restart, install) put the object in its in-between state and
queue a completion; the completion lands after `settle_after_reads` reads of that object, or on `settle()`.
Every public method takes the one lock, which the HTTP server shares.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Json = dict[str, Any]

ACTIVE_LIFE_CYCLES = frozenset(
    {"QUEUED", "PENDING", "RUNNING", "TERMINATING", "BLOCKED", "WAITING_FOR_RETRY"}
)
#: Results that count as "fine" when a repair decides the run's result and which tasks failed.
_OK_RESULTS = frozenset({"SUCCESS", "SUCCESS_WITH_FAILURES", "EXCLUDED", "DISABLED"})
#: Results a task gets without executing; their life cycle is SKIPPED, as in the docs' getrun example.
_SKIPPED_RESULTS = frozenset(
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
#: Keys that hold epoch-ms times anywhere in the stored JSON; `shift` moves exactly these.
TIME_KEYS = frozenset(
    {"start_time", "end_time", "timestamp", "terminated_time", "last_restarted_time",
     "last_state_loss_time", "last_activity_time", "created_time"}
)
#: Cluster state -> the event a real cluster writes on entering it. There is no TERMINATED event type
#: (§5.1): the termination reason rides on TERMINATING.
_EVENT_FOR_STATE = {
    "PENDING": "STARTING", "RUNNING": "RUNNING", "RESTARTING": "RESTARTING", "RESIZING": "RESIZING",
    "TERMINATING": "TERMINATING", "TERMINATED": "TERMINATING", "ERROR": "TERMINATING",
}
TASK_PAGE_SIZE = 100  # runs/get and runs/list?expand_tasks cap each array at 100 (§3.1)
_FIRST_ID = 1_000_000_000_000


class ApiError(Exception):
    """An error answer: HTTP status plus the `{"error_code", "message"}` body the SDK parses."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


def invalid(message: str) -> ApiError:
    return ApiError(400, "INVALID_PARAMETER_VALUE", message)


def encode_token(value: str) -> str:
    """An opaque page token, as the service hands out; only this emulator can read it."""
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise invalid(f"Invalid page token: {token}") from exc


def terminal_state(result_state: str, message: str | None = None) -> tuple[Json, Json]:
    """The deprecated `state` and the `status` objects of a run or task that ended with `result_state`."""
    code, kind, default = TERMINATION_FOR_RESULT.get(result_state, _UNKNOWN_RESULT_TERMINATION)
    text = default if message is None else message
    life_cycle = "SKIPPED" if result_state in _SKIPPED_RESULTS else "TERMINATED"
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


def shift_times(node: Any, delta_ms: int) -> None:
    """Add `delta_ms` to every positive time under TIME_KEYS; 0 stays 0 (it means "not ended yet")."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in TIME_KEYS and isinstance(value, int) and not isinstance(value, bool) and value > 0:
                node[key] = value + delta_ms
            else:
                shift_times(value, delta_ms)
    elif isinstance(node, list):
        for item in node:
            shift_times(item, delta_ms)


def _max_time(node: Any) -> int:
    if isinstance(node, dict):
        own = [v for k, v in node.items() if k in TIME_KEYS and type(v) is int]
        return max([*own, *(_max_time(v) for v in node.values())], default=0)
    if isinstance(node, list):
        return max((_max_time(item) for item in node), default=0)
    return 0


@dataclass
class WorkspaceData:
    """A workspace as files: the bulk format `DatabricksEmulator(data_dir)` reads (see its docstring)."""

    jobs: list[Json] = field(default_factory=list)
    runs: list[Json] = field(default_factory=list)
    clusters: list[Json] = field(default_factory=list)
    cluster_events: list[Json] = field(default_factory=list)
    libraries: list[Json] = field(default_factory=list)
    outputs: dict[str, Json] = field(default_factory=dict)

    @classmethod
    def read(cls, directory: Path) -> WorkspaceData:
        """Each file is optional; a list file may also be the API envelope (``{"runs": [...]}``)."""
        if not directory.is_dir():
            raise FileNotFoundError(f"Databricks emulator data directory {directory} does not exist")

        def load(name: str, key: str) -> Any:
            path = directory / name
            if not path.exists():
                return None
            data = json.loads(path.read_text(encoding="utf-8"))
            return data[key] if isinstance(data, dict) and key in data else data

        return cls(jobs=load("jobs.json", "jobs") or [], runs=load("runs.json", "runs") or [],
                   clusters=load("clusters.json", "clusters") or [],
                   cluster_events=load("cluster_events.json", "events") or [],
                   libraries=load("libraries.json", "statuses") or [],
                   outputs=load("outputs.json", "outputs") or {})

    def write(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for name, value in [("jobs", self.jobs), ("runs", self.runs), ("clusters", self.clusters),
                            ("cluster_events", self.cluster_events), ("libraries", self.libraries),
                            ("outputs", self.outputs)]:
            (directory / f"{name}.json").write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class RunOutcome:
    """How a repaired or run-now run ends: per-task results, else `result_state` for every task."""

    result_state: str = "SUCCESS"
    task_results: Mapping[str, str] = field(default_factory=dict)
    error: str = "Exception: scripted failure"
    error_trace: str | None = None


@dataclass
class _Pending:
    kind: str  # "run" | "cluster" | "library": which reads count towards settling
    key: str
    reads_left: int
    complete: Callable[[], None]


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


@dataclass(frozen=True)
class ClustersQuery:
    """The parsed clusters/list parameters (§5.3)."""

    states: frozenset[str] = frozenset()
    sources: frozenset[str] = frozenset()
    is_pinned: bool | None = None
    policy_id: str | None = None
    page_size: int = 100
    page_token: str | None = None

    def keeps(self, cluster: Json) -> bool:
        return not (
            (self.states and cluster.get("state") not in self.states)
            or (self.sources and cluster.get("cluster_source") not in self.sources)
            or (self.is_pinned is not None and bool(cluster.get("is_pinned")) != self.is_pinned)
            or (self.policy_id is not None and cluster.get("policy_id") != self.policy_id)
        )


class WorkspaceState:
    """Jobs, runs, outputs, clusters, events and libraries of one workspace, as raw JSON."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.now_ms: Callable[[], int] = lambda: int(time.time() * 1000)
        self.settle_after_reads = 0
        self.task_page_size = TASK_PAGE_SIZE
        self.user_name = "rca-poller@example.com"
        self._jobs: dict[int, Json] = {}
        self._runs: dict[int, Json] = {}
        self._task_parent: dict[int, int] = {}
        self._outputs: dict[int, Json] = {}
        self._clusters: dict[str, Json] = {}
        self._events: dict[str, list[Json]] = {}
        self._libraries: dict[str, list[Json]] = {}
        self._pending: list[_Pending] = []
        self._run_scripts: dict[tuple[str, int], deque[RunOutcome]] = {}
        self._start_scripts: dict[str, deque[tuple[str, Json | None]]] = {}
        self._install_scripts: dict[str, deque[tuple[str, list[str]]]] = {}
        self._idempotency: dict[str, int] = {}
        self._next_id = _FIRST_ID

    # -- loading and inspection ------------------------------------------------------------------

    def load(self, data: WorkspaceData) -> None:
        """Add everything in `data` (later objects with the same id replace earlier ones)."""
        with self._lock:
            for job in data.jobs:
                self.add_job(job)
            for run in data.runs:
                self.add_run(run)
            for cluster in data.clusters:
                self.add_cluster(cluster)
            for event in data.cluster_events:
                self.add_cluster_event(event["cluster_id"], event)
            for entry in data.libraries:
                self._libraries[entry["cluster_id"]] = copy.deepcopy(entry.get("library_statuses", []))
            for run_id, output in data.outputs.items():
                self._outputs[int(run_id)] = copy.deepcopy(output)

    def snapshot(self) -> WorkspaceData:
        """A deep copy of the whole workspace in the data-dir format."""
        with self._lock:
            libraries = [{"cluster_id": c, "library_statuses": s} for c, s in self._libraries.items()]
            events = [e for cluster_events in self._events.values() for e in cluster_events]
            return copy.deepcopy(WorkspaceData(
                jobs=list(self._jobs.values()), runs=list(self._runs.values()),
                clusters=list(self._clusters.values()), cluster_events=events, libraries=libraries,
                outputs={str(k): v for k, v in self._outputs.items()}))

    def run_json(self, run_id: int) -> Json:
        """A copy of the stored job run (parent id)."""
        with self._lock:
            return copy.deepcopy(self._run(run_id))

    def cluster_json(self, cluster_id: str) -> Json:
        with self._lock:
            return copy.deepcopy(self._cluster(cluster_id))

    def library_statuses(self, cluster_id: str) -> list[Json]:
        with self._lock:
            return copy.deepcopy(self._libraries.get(cluster_id, []))

    # -- jobs and runs -----------------------------------------------------------------------------

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

    # -- clusters and libraries ---------------------------------------------------------------------

    def add_cluster(self, cluster: Json) -> str:
        with self._lock:
            stored = copy.deepcopy(cluster)
            self._clusters[stored["cluster_id"]] = stored
            self._events.setdefault(stored["cluster_id"], [])
            return str(stored["cluster_id"])

    def add_cluster_event(self, cluster_id: str, event: Json) -> None:
        with self._lock:
            events = self._events.setdefault(cluster_id, [])
            events.append({**copy.deepcopy(event), "cluster_id": cluster_id})
            events.sort(key=lambda e: e.get("timestamp", 0))

    def set_cluster_state(self, cluster_id: str, state: str, *, termination_reason: Json | None = None,
                          at: int | None = None, state_message: str = "") -> None:
        """Move a cluster to `state`, writing the event a real cluster writes and its state timestamps."""
        with self._lock:
            cluster = self._cluster(cluster_id)
            when = self.now_ms() if at is None else at
            previous = cluster.get("state")
            cluster["state"], cluster["state_message"] = state, state_message
            if state in ("PENDING", "RESTARTING"):
                cluster["last_restarted_time"] = cluster["last_state_loss_time"] = when
                cluster.pop("termination_reason", None)
                cluster.pop("terminated_time", None)
            if state in ("TERMINATED", "ERROR"):
                cluster["terminated_time"] = when
                cluster["termination_reason"] = copy.deepcopy(termination_reason or {"code": "UNKNOWN"})
            event_type = _EVENT_FOR_STATE.get(state)
            if event_type is None or (state == "TERMINATED" and previous == "TERMINATING"):
                return
            self.add_cluster_event(cluster_id, {"timestamp": when, "type": event_type,
                                                "details": self._event_details(cluster, event_type,
                                                                               termination_reason)})

    def list_clusters(self, query: ClustersQuery) -> Json:
        with self._lock:
            self._advance("cluster", None)
            clusters = [c for c in self._clusters.values() if query.keeps(c)]
            offset = int(decode_token(query.page_token)) if query.page_token else 0
            page = clusters[offset: offset + query.page_size]
            body: Json = {"clusters": page} if page else {}
            if len(clusters) > offset + query.page_size:
                body["next_page_token"] = encode_token(str(offset + query.page_size))
            if offset:
                body["prev_page_token"] = encode_token(str(max(0, offset - query.page_size)))
            return body

    def get_cluster(self, cluster_id: str) -> Json:
        with self._lock:
            self._advance("cluster", cluster_id)
            return self._cluster(cluster_id)

    def cluster_events(self, request: Json) -> Json:
        """clusters/events in the old offset style: `next_page` is the next request body (§0.4).
        A request with page_size/page_token gets token paging instead, which the SDK does not follow."""
        with self._lock:
            cluster_id = str(request.get("cluster_id", ""))
            self._advance("cluster", cluster_id)
            self._cluster(cluster_id)
            events = self._filtered_events(cluster_id, request)
            if "page_size" in request or "page_token" in request:
                return self._events_by_token(events, request)
            limit, offset = int(request.get("limit", 50)), int(request.get("offset", 0))
            if not 0 < limit <= 500:
                raise invalid(f"limit must be between 1 and 500, got {limit}.")
            if offset and request.get("order", "DESC") == "DESC" and "end_time" not in request:
                raise invalid("end_time is required when offset is given with order DESC.")
            page = events[offset: offset + limit]
            body: Json = {"events": page, "total_count": len(events)}
            if offset + limit < len(events):
                body["next_page"] = {**request, "offset": offset + limit}
                if request.get("order", "DESC") == "DESC" and "end_time" not in request:
                    # pin the window to the newest event, so events arriving later do not shift offsets
                    body["next_page"]["end_time"] = events[0]["timestamp"]
            return body

    def set_library_status(self, cluster_id: str, library: Json, status: str,
                           messages: Iterable[str] = ()) -> None:
        """Add or replace the status of one library on a cluster."""
        with self._lock:
            statuses = self._libraries.setdefault(cluster_id, [])
            entry = next((s for s in statuses if s["library"] == library), None)
            if entry is None:
                entry = {"library": copy.deepcopy(library), "is_library_for_all_clusters": False}
                statuses.append(entry)
            entry["status"], entry["messages"] = status, list(messages)

    def all_library_statuses(self) -> Json:
        with self._lock:
            self._advance("library", None)
            return {"statuses": [{"cluster_id": cid, "library_statuses": statuses}
                                 for cid, statuses in self._libraries.items() if statuses]}

    def cluster_library_status(self, cluster_id: str) -> Json:
        with self._lock:
            self._advance("library", cluster_id)
            self._cluster(cluster_id)
            return {"cluster_id": cluster_id, "library_statuses": self._libraries.get(cluster_id, [])}

    # -- time ------------------------------------------------------------------------------------------

    def shift(self, delta_ms: int) -> None:
        """Move every stored time (runs, tasks, repairs, clusters, events) by `delta_ms`."""
        with self._lock:
            for collection in (self._jobs, self._runs, self._clusters, self._events):
                shift_times(collection, delta_ms)

    def rebase(self, now_ms: int | None = None) -> int:
        """Shift all times so the newest one is `now_ms` (default: the clock); returns the shift."""
        with self._lock:
            newest = _max_time([self._runs, self._clusters, self._events])
            delta = (self.now_ms() if now_ms is None else now_ms) - newest if newest else 0
            self.shift(delta)
            return delta

    # -- remediation ---------------------------------------------------------------------------------

    def script_repair(self, run_id: int, outcome: RunOutcome) -> None:
        """The next repair of `run_id` ends as `outcome` (FIFO; unscripted repairs succeed)."""
        with self._lock:
            self._run_scripts.setdefault(("repair", run_id), deque()).append(outcome)

    def script_run_now(self, job_id: int, outcome: RunOutcome) -> None:
        """The next run-now of `job_id` ends as `outcome` (FIFO; unscripted runs succeed)."""
        with self._lock:
            self._run_scripts.setdefault(("run-now", job_id), deque()).append(outcome)

    def script_cluster_start(self, cluster_id: str, state: str = "RUNNING", *,
                             termination_reason: Json | None = None) -> None:
        """The next start/restart of the cluster ends in `state` (e.g. TERMINATED with a reason)."""
        with self._lock:
            self._start_scripts.setdefault(cluster_id, deque()).append((state, termination_reason))

    def script_library_install(self, cluster_id: str, status: str = "INSTALLED", *,
                               messages: Sequence[str] = ()) -> None:
        """The next install on the cluster ends with every library in `status`."""
        with self._lock:
            self._install_scripts.setdefault(cluster_id, deque()).append((status, list(messages)))

    def settle(self) -> int:
        """Complete every pending remediation now; returns how many completed."""
        with self._lock:
            pending, self._pending = self._pending, []
            for item in pending:
                item.complete()
            return len(pending)

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

    def start_cluster(self, cluster_id: str, restart: bool = False) -> Json:
        with self._lock:
            cluster = self._cluster(cluster_id)
            wanted = "RUNNING" if restart else "TERMINATED"
            if cluster.get("state") != wanted:
                raise ApiError(400, "INVALID_STATE", f"Cluster {cluster_id} is in unexpected state "
                                                     f"{str(cluster.get('state', 'UNKNOWN')).title()}.")
            self.set_cluster_state(cluster_id, "RESTARTING" if restart else "PENDING",
                                   state_message="Starting Spark")
            queued = self._start_scripts.get(cluster_id)
            state, reason = queued.popleft() if queued else ("RUNNING", None)
            self._queue("cluster", cluster_id, lambda: self._complete_start(cluster_id, state, reason))
            return {}

    def install_libraries(self, cluster_id: str, libraries: list[Json]) -> Json:
        with self._lock:
            self._cluster(cluster_id)
            for library in libraries:
                self.set_library_status(cluster_id, library, "PENDING")
            queued = self._install_scripts.get(cluster_id)
            status, messages = queued.popleft() if queued else ("INSTALLED", [])
            self._queue("library", cluster_id, lambda: self._complete_install(cluster_id, libraries, status,
                                                                              messages))
            return {}

    def uninstall_libraries(self, cluster_id: str, libraries: list[Json]) -> Json:
        """Marks installed libraries UNINSTALL_ON_RESTART; others are ignored, as documented (§6.1)."""
        with self._lock:
            self._cluster(cluster_id)
            for status in self._libraries.get(cluster_id, []):
                if status["library"] in libraries:
                    status["status"] = "UNINSTALL_ON_RESTART"
            return {}

    # -- internals ---------------------------------------------------------------------------------

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _bump_ids(self, seen: int) -> None:
        self._next_id = max(self._next_id, seen)

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

    def _cluster(self, cluster_id: str) -> Json:
        if cluster_id not in self._clusters:
            raise invalid(f"Cluster {cluster_id} does not exist")
        return self._clusters[cluster_id]

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

    def _advance(self, kind: str, key: str | None) -> None:
        """Count one read towards each matching pending completion, completing those that are due."""
        still: list[_Pending] = []
        for item in self._pending:
            if item.kind != kind or (key is not None and item.key != key):
                still.append(item)
            elif item.reads_left <= 0:
                item.complete()
            else:
                item.reads_left -= 1
                still.append(item)
        self._pending = still

    def _queue(self, kind: str, key: str, complete: Callable[[], None]) -> None:
        self._pending.append(_Pending(kind, key, self.settle_after_reads, complete))

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
            if result not in _OK_RESULTS | _SKIPPED_RESULTS:
                self.set_output(task["run_id"], error=outcome.error, error_trace=outcome.error_trace)
        self._end_run(run, now, repair_id)

    def _end_run(self, run: Json, now: int, repair_id: int | None) -> None:
        results = {k: t.get("state", {}).get("result_state") for k, t in latest_attempts(run).items()}
        bad = [k for k, r in results.items() if r not in _OK_RESULTS | _SKIPPED_RESULTS]
        result = "SUCCESS" if not bad else "FAILED"
        # the parent's message names the first failed task, as in real runs (§3.5)
        message = f"Task {bad[0]} failed with message: Workload failed, see run output for details." \
            if bad else ""
        run["state"], run["status"] = terminal_state(result, message)
        run["end_time"] = now
        for record in run.get("repair_history", []):
            if repair_id is not None and record.get("id") == repair_id:
                record["state"], record["status"], record["end_time"] = run["state"], run["status"], now

    def _complete_start(self, cluster_id: str, state: str, reason: Json | None) -> None:
        if state == "RUNNING":
            for status in self._libraries.get(cluster_id, []):
                if status["status"] == "UNINSTALL_ON_RESTART":
                    self._libraries[cluster_id].remove(status)
        self.set_cluster_state(cluster_id, state, termination_reason=reason,
                               state_message="" if state == "RUNNING" else "Cluster failed to start")

    def _complete_install(self, cluster_id: str, libraries: list[Json], status: str,
                          messages: list[str]) -> None:
        for library in libraries:
            self.set_library_status(cluster_id, library, status, messages)

    def _event_details(self, cluster: Json, event_type: str, reason: Json | None) -> Json:
        if event_type == "RUNNING":
            workers = cluster.get("num_workers", 0)
            return {"current_num_workers": workers, "target_num_workers": workers}
        if event_type == "TERMINATING":
            return {"reason": copy.deepcopy(reason or {"code": "UNKNOWN"})}
        return {"user": self.user_name} if event_type in ("STARTING", "RESTARTING") else {}

    def _filtered_events(self, cluster_id: str, request: Json) -> list[Json]:
        types = set(request.get("event_types") or [])
        start, end = request.get("start_time"), request.get("end_time")
        events = [e for e in self._events.get(cluster_id, [])
                  if (not types or e.get("type") in types)
                  and (start is None or e.get("timestamp", 0) >= start)
                  and (end is None or e.get("timestamp", 0) <= end)]
        return events if request.get("order") == "ASC" else events[::-1]

    def _events_by_token(self, events: list[Json], request: Json) -> Json:
        size = min(int(request.get("page_size") or 50), 500)
        offset = int(decode_token(request["page_token"])) if request.get("page_token") else 0
        body: Json = {"events": events[offset: offset + size], "total_count": 0}
        if offset + size < len(events):
            body["next_page_token"] = encode_token(str(offset + size))
        return body
