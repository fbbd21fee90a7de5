"""A Databricks workspace over real HTTP, speaking the REST paths databricks-sdk calls (reference §10).

    with DatabricksEmulator(DEMO_DATA_DIR) as emu:
        w = WorkspaceClient(config=Config(host=emu.url, token=emu.token, auth_type="pat"))
        emu.inject(429, retry_after=1)            # the next API call is throttled, the SDK retries it
        runs = list(w.jobs.list_runs(completed_only=True, expand_tasks=True))

Served (``/api/2.1/jobs/...`` answers like ``/api/2.2/jobs/...``; ``/api/2.0/clusters/...`` like 2.1):
``GET /.well-known/databricks-config`` (404, or 200 ``{"workspace_id"}`` when given one; never authenticated,
never faulted), ``GET /api/2.0/preview/scim/v2/Me``, jobs ``runs/list``, ``runs/get``, ``runs/get-output``,
``get``, ``list``, ``POST runs/repair``, ``run-now``; clusters ``list``, ``get``, ``POST events``, ``start``,
``restart``; libraries ``all-cluster-statuses``, ``cluster-status``, ``POST install``, ``uninstall``.
Remediation state moves as described in `databricks_state`: repair adds a REPAIR record and one new attempt
per rerun task, run-now adds a run, start goes TERMINATED→PENDING→RUNNING, install PENDING→INSTALLED, each
ending as scripted (``script_repair``, ``script_run_now``, ``script_cluster_start``,
``script_library_install``) after ``settle_after_reads`` reads (default 0: the first read sees the end).

Data directory (every file optional, UTF-8 JSON; each list file may also be the API envelope):

* ``jobs.json``: ``[Job]`` as ``jobs/get`` returns it (``job_id``, ``settings{name, tasks[]}``, ...).
* ``runs.json``: ``[Run]`` as ``runs/get`` returns it, ``tasks[]`` holding one entry per attempt, each with
  its task ``run_id``; ``repair_history[]`` optional.
* ``clusters.json``: ``[ClusterDetails]`` as ``clusters/get`` returns it.
* ``cluster_events.json``: ``[ClusterEvent]`` (``cluster_id``, ``timestamp``, ``type``, ``details``).
* ``libraries.json``: ``[{"cluster_id", "library_statuses": [LibraryFullStatus]}]`` (all-cluster-statuses).
* ``outputs.json``: ``{"<task run id>": {"error", "error_trace", "logs", "notebook_output", ...}}``;
  ``metadata`` is built from the run when served.

Paging, as the SDK expects it (§1.5): runs/list gives 1-25 runs a page (default 20), newest start first,
and leaves ``next_page_token`` out of the last page; its token marks the last run served, so runs starting
mid-listing do not shift pages. runs/get gives 100 elements of each array a page (``task_page_size``).
clusters/list up to 100 a page. clusters/events pages by ``next_page`` (the next request body; DESC pins
``end_time`` to the newest event), or by ``next_page_token`` when asked with page_size/page_token, which
the SDK's iterator does not follow (§0.4).

Times are epoch ms; the demo data sits just before ``DEMO_BASE_MS`` (2026-01-01T00:00Z), and
``shift(delta_ms)`` / ``rebase(now_ms)`` move every time. Objects stay raw dicts, so unknown enum strings
are served verbatim.

Faults: ``inject(status, retry_after=None, times=1, path_prefix=None)`` queues a fault (FIFO; the first
queued fault whose prefix matches answers the request); 429 bodies are ``REQUEST_LIMIT_EXCEEDED``.
``rate_limit_per_second`` answers 429 (``Retry-After: 1``) past that many API calls in the last second.
A missing or wrong ``Authorization: Bearer`` gets 401 ``UNAUTHENTICATED``; ``forbidden=True`` makes every
API call 403 ``PERMISSION_DENIED``. ``requests`` / ``count()`` / ``reset_log()`` expose the request log.

Run alone: ``python -m poller.emulators.databricks [--data DIR | --generate CLUSTERS RUNS] [--port N]
[--rebase]``; it prints ``DATABRICKS_HOST=...`` and ``DATABRICKS_TOKEN=...`` and serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import signal
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from poller.emulators.databricks_state import (
    ApiError,
    ClustersQuery,
    Json,
    RunOutcome,
    RunsQuery,
    WorkspaceData,
    WorkspaceState,
    invalid,
    terminal_state,
)
from poller.emulators.serving import ServedEmulator

__all__ = ["DEFAULT_TOKEN", "DEMO_DATA_DIR", "DatabricksEmulator", "RecordedRequest", "RunOutcome",
           "WorkspaceData", "make_workspace"]

_LOG = logging.getLogger(__name__)
DEMO_DATA_DIR = Path(__file__).parent / "data" / "databricks_demo"
DEFAULT_TOKEN = "dapi-emulator-0000000000000000"
DEMO_BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: every time in the demo data is relative to it
_WELL_KNOWN = "/.well-known/databricks-config"
#: API family -> the versions served; the SDK uses the last one (§0.1), older clients the others.
_VERSIONS = {"jobs": ("2.1", "2.2"), "clusters": ("2.0", "2.1"), "libraries": ("2.0",), "preview": ("2.0",)}
_FAULT_CODES = {429: "REQUEST_LIMIT_EXCEEDED", 500: "INTERNAL_ERROR", 502: "BAD_GATEWAY",
                503: "TEMPORARILY_UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the emulator saw and answered it."""

    method: str
    path: str
    query: dict[str, list[str]]  # as parse_qs gives it: repeated keys (filter_by.cluster_states) stay lists
    body: Json | None
    status: int
    time: float  # time.time() when it arrived


@dataclass
class _Fault:
    status: int
    retry_after: int | None
    remaining: int
    path_prefix: str | None
    message: str | None


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Json


# -- request parsing: wrong parameters answer 400, as the service does ----------------------------------


def _arg(req: _Request, name: str) -> Any:
    """A parameter from the JSON body or, failing that, the query string (last value wins)."""
    if name in req.body:
        return req.body[name]
    values = req.query.get(name)
    return values[-1] if values else None


def _int(req: _Request, name: str, default: int | None = None) -> int | None:
    value = _arg(req, name)
    if value is None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise invalid(f"Invalid value for {name}: {value!r} is not an integer.") from exc


def _required_int(req: _Request, name: str) -> int:
    value = _int(req, name)
    if value is None:
        raise invalid(f"Missing required field: {name}")
    return value


def _required_str(req: _Request, name: str) -> str:
    value = _arg(req, name)
    if not value:
        raise invalid(f"Missing required field: {name}")
    return str(value)


def _bool(req: _Request, name: str) -> bool | None:
    value = _arg(req, name)
    if value is None or isinstance(value, bool):
        return value
    if str(value).lower() not in ("true", "false"):  # the SDK sends query booleans as true/false (§1.3)
        raise invalid(f"Invalid value for {name}: {value!r} is not a boolean.")
    return str(value).lower() == "true"


# -- routes ------------------------------------------------------------------------------------------


def _list_runs(state: WorkspaceState, req: _Request) -> Json:
    limit = _int(req, "limit", 20) or 25  # 0 means "the service maximum"
    if not 0 < limit <= 25:
        raise invalid(f"Invalid limit {limit}: it must be between 1 and 25.")
    run_type = _arg(req, "run_type")
    return state.list_runs(RunsQuery(
        active_only=bool(_bool(req, "active_only")), completed_only=bool(_bool(req, "completed_only")),
        expand_tasks=bool(_bool(req, "expand_tasks")), job_id=_int(req, "job_id"),
        run_type=None if run_type is None else str(run_type), start_time_from=_int(req, "start_time_from"),
        start_time_to=_int(req, "start_time_to"), limit=limit, page_token=_arg(req, "page_token") or None))


def _get_run(state: WorkspaceState, req: _Request) -> Json:
    return state.get_run(_required_int(req, "run_id"), _arg(req, "page_token") or None,
                         bool(_bool(req, "include_history")))


def _list_jobs(state: WorkspaceState, req: _Request) -> Json:
    limit = _int(req, "limit", 20) or 100
    if not 0 < limit <= 100:
        raise invalid(f"Invalid limit {limit}: it must be between 1 and 100.")
    name = _arg(req, "name")
    return state.list_jobs(limit, _arg(req, "page_token") or None, None if name is None else str(name),
                           bool(_bool(req, "expand_tasks")))


def _list_clusters(state: WorkspaceState, req: _Request) -> Json:
    page_size = min(_int(req, "page_size", 100) or 100, 100)
    return state.list_clusters(ClustersQuery(
        states=frozenset(req.query.get("filter_by.cluster_states", [])),
        sources=frozenset(req.query.get("filter_by.cluster_sources", [])),
        is_pinned=_bool(req, "filter_by.is_pinned"), policy_id=_arg(req, "filter_by.policy_id"),
        page_size=page_size, page_token=_arg(req, "page_token") or None))


def _cluster_id(req: _Request) -> str:
    return _required_str(req, "cluster_id")


def _libraries(req: _Request) -> list[Json]:
    libraries = req.body.get("libraries")
    if not isinstance(libraries, list) or not libraries:
        raise invalid("Missing required field: libraries")
    return libraries


def _me(state: WorkspaceState, req: _Request) -> Json:
    return {"id": "7304985012345678", "userName": state.user_name, "displayName": "RCA Poller",
            "active": True, "emails": [{"value": state.user_name, "type": "work", "primary": True}],
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
                        "urn:ietf:params:scim:schemas:extension:workspace:2.0:User"]}


_Route = Callable[[WorkspaceState, _Request], Json]
_ROUTES: dict[tuple[str, str], _Route] = {
    ("GET", "preview/scim/v2/Me"): _me,
    ("GET", "jobs/runs/list"): _list_runs,
    ("GET", "jobs/runs/get"): _get_run,
    ("GET", "jobs/runs/get-output"): lambda s, r: s.get_output(_required_int(r, "run_id")),
    ("GET", "jobs/get"): lambda s, r: s.get_job(_required_int(r, "job_id")),
    ("GET", "jobs/list"): _list_jobs,
    ("POST", "jobs/runs/repair"): lambda s, r: s.repair_run(r.body),
    ("POST", "jobs/run-now"): lambda s, r: s.run_now(r.body),
    ("GET", "clusters/list"): _list_clusters,
    ("GET", "clusters/get"): lambda s, r: s.get_cluster(_cluster_id(r)),
    ("POST", "clusters/events"): lambda s, r: s.cluster_events(r.body),
    ("POST", "clusters/start"): lambda s, r: s.start_cluster(_cluster_id(r)),
    ("POST", "clusters/restart"): lambda s, r: s.start_cluster(_cluster_id(r), restart=True),
    ("GET", "libraries/all-cluster-statuses"): lambda s, r: s.all_library_statuses(),
    ("GET", "libraries/cluster-status"): lambda s, r: s.cluster_library_status(_cluster_id(r)),
    ("POST", "libraries/install"): lambda s, r: s.install_libraries(_cluster_id(r), _libraries(r)),
    ("POST", "libraries/uninstall"): lambda s, r: s.uninstall_libraries(_cluster_id(r), _libraries(r)),
}


def _route(method: str, path: str) -> _Route | None:
    parts = path.split("/", 3)  # "", "api", "2.2", "jobs/runs/list"
    if len(parts) < 4 or parts[1] != "api":
        return None
    family = parts[3].split("/", 1)[0]
    if parts[2] not in _VERSIONS.get(family, ()):
        return None
    return _ROUTES.get((method, parts[3]))


def _json_object(raw: bytes) -> Json | None:
    """The request body as a JSON object ({} when empty), or None when it is not one."""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"error_code": code, "message": message}).encode()


# -- the server ----------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], emulator: DatabricksEmulator) -> None:
        super().__init__(address, _Handler)
        self.emulator = emulator


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the SDK's requests session reuses its connection
    # headers and body go out in two writes; with Nagle on, each answer waits ~40 ms for a delayed ACK
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        status, headers, payload = self.server.emulator.handle(method, self.path,
                                                               self.headers.get("Authorization"), raw)
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the request log is `DatabricksEmulator.requests`."""


class DatabricksEmulator(WorkspaceState, ServedEmulator):
    """A Databricks workspace on 127.0.0.1; `url` and `token` are what WorkspaceClient needs."""

    thread_name = "databricks-emulator"

    def __init__(self, data_dir: Path | None = None, *, token: str = DEFAULT_TOKEN, port: int = 0,
                 forbidden: bool = False, workspace_id: str | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__()
        self.token = token
        self.forbidden = forbidden
        self.workspace_id = workspace_id
        self.rate_limit_per_second: float | None = None
        self._port = port
        self._ssl_context = ssl_context
        self._faults: list[_Fault] = []
        self._log: list[RecordedRequest] = []
        self._admitted: deque[float] = deque()
        self._tls = ssl_context is not None
        if data_dir is not None:
            self.load(WorkspaceData.read(data_dir))

    def _make_server(self) -> _Server:
        server = _Server(("127.0.0.1", self._port), self)
        if self._ssl_context is not None:
            server.socket = self._ssl_context.wrap_socket(server.socket, server_side=True)
        return server

    # -- faults and the log ------------------------------------------------------------------------------

    def inject(self, status: int, retry_after: int | None = None, times: int = 1,
               path_prefix: str | None = None, *, message: str | None = None) -> None:
        """Answer the next `times` API calls under `path_prefix` with `status` (FIFO across injections)."""
        with self._lock:
            self._faults.append(_Fault(status, retry_after, times, path_prefix, message))

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._log)

    def count(self, path_prefix: str | None = None, method: str | None = None) -> int:
        """How many logged requests match the path prefix and method."""
        with self._lock:
            return sum(1 for r in self._log if (path_prefix is None or r.path.startswith(path_prefix))
                       and (method is None or r.method == method))

    def reset_log(self) -> None:
        with self._lock:
            self._log.clear()

    # -- request handling --------------------------------------------------------------------------------

    def handle(self, method: str, target: str, authorization: str | None,
               raw_body: bytes) -> tuple[int, dict[str, str], bytes]:
        """Answer one HTTP request: (status, extra headers, JSON body). The server thread calls this."""
        parts = urlsplit(target)
        query = parse_qs(parts.query, keep_blank_values=True)
        with self._lock:
            body = _json_object(raw_body)
            answer: tuple[int, dict[str, str], bytes]
            if body is None:
                answer = 400, {}, _error_body("MALFORMED_REQUEST", "The request body is not a JSON object.")
            else:
                answer = self._answer(_Request(method, parts.path, query, body), authorization)
            self._log.append(RecordedRequest(method, parts.path, query, body, answer[0], time.time()))
        return answer

    def _answer(self, req: _Request, authorization: str | None) -> tuple[int, dict[str, str], bytes]:
        if req.path == _WELL_KNOWN:
            return self._well_known()
        refusal = self._refusal(req, authorization)
        if refusal is not None:
            return refusal
        route = _route(req.method, req.path)
        if route is None:
            return 404, {}, _error_body("ENDPOINT_NOT_FOUND", f"No API found for '{req.method} {req.path}'")
        try:
            return 200, {}, json.dumps(route(self, req)).encode()
        except ApiError as exc:
            return exc.status, {}, _error_body(exc.error_code, exc.message)
        except Exception as exc:
            # A dropped connection would make the SDK retry "cannot connect" for its whole budget;
            # a 500 (whose text avoids the SDK's retry phrases) fails the caller at once.
            _LOG.exception("Databricks emulator failed on %s %s", req.method, req.path)
            return 500, {}, _error_body("INTERNAL_ERROR", f"Emulator failure: {type(exc).__name__}: {exc}")

    def _well_known(self) -> tuple[int, dict[str, str], bytes]:
        # The SDK probes this once per Config() and carries on after a 404 (§0.2).
        if self.workspace_id is None:
            return 404, {}, _error_body("NOT_FOUND", f"{_WELL_KNOWN} is not served by this workspace")
        return 200, {}, json.dumps({"workspace_id": self.workspace_id}).encode()

    def _refusal(self, req: _Request, authorization: str | None) -> tuple[int, dict[str, str], bytes] | None:
        """Authentication, authorisation, rate limit, injected faults: the order a gateway applies them."""
        if authorization != f"Bearer {self.token}":
            message = "Invalid access token." if authorization else "No access token was provided."
            return 401, {}, _error_body("UNAUTHENTICATED", message)
        if self.forbidden:
            message = f"User {self.user_name} does not have permission to call {req.method} {req.path}."
            return 403, {}, _error_body("PERMISSION_DENIED", message)
        if self._over_rate_limit():
            return 429, {"Retry-After": "1"}, _error_body("REQUEST_LIMIT_EXCEEDED",
                                                          f"Rate limit exceeded for {req.path}.")
        fault = self._take_fault(req.path)
        if fault is None:
            return None
        code = _FAULT_CODES.get(fault.status, "INTERNAL_ERROR")
        headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
        message = fault.message or f"Injected {fault.status} for {req.path}."
        return fault.status, headers, _error_body(code, message)

    def _over_rate_limit(self) -> bool:
        if self.rate_limit_per_second is None:
            return False
        now = time.monotonic()
        while self._admitted and now - self._admitted[0] >= 1.0:
            self._admitted.popleft()
        if len(self._admitted) >= self.rate_limit_per_second:
            return True
        self._admitted.append(now)
        return False

    def _take_fault(self, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.path_prefix is None or path.startswith(fault.path_prefix):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None


# -- a generated workspace for benchmarks ----------------------------------------------------------------

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


# -- python -m poller.emulators.databricks ------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m poller.emulators.databricks",
                                     description="Serve an emulated Databricks workspace until Ctrl-C.")
    parser.add_argument("--data", type=Path, default=None, help=f"data directory (default: {DEMO_DATA_DIR})")
    parser.add_argument("--generate", nargs=2, type=int, metavar=("CLUSTERS", "RUNS"),
                        help="serve a generated workspace instead of a data directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free port)")
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    parser.add_argument("--rebase", action="store_true", help="move all times so the newest one is now")
    args = parser.parse_args(argv)
    emulator = DatabricksEmulator(None if args.generate else args.data or DEMO_DATA_DIR,
                                  token=args.token, port=args.port)
    if args.generate:
        emulator.load(make_workspace(args.generate[0], args.generate[1], args.seed))
    if args.rebase:
        emulator.rebase()
    stopped = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with emulator:
        print(f"DATABRICKS_HOST={emulator.url}", flush=True)
        print(f"DATABRICKS_TOKEN={emulator.token}", flush=True)
        print("Serving the Databricks emulator; Ctrl-C stops it.", file=sys.stderr, flush=True)
        while not stopped.wait(0.5):  # a timed wait lets the signal handler run promptly
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
