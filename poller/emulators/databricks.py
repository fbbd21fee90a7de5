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

Times are epoch ms; the demo data sits just before ``databricks_generated.DEMO_BASE_MS`` (2026-01-01T00:00Z), and
``shift(delta_ms)`` / ``rebase(now_ms)`` move every time. Objects stay raw dicts, so unknown enum strings
are served verbatim.

Faults: ``inject(status, retry_after=None, times=1, path_prefix=None)`` queues a fault (FIFO; the first
queued fault whose prefix matches answers the request); 429 bodies are ``REQUEST_LIMIT_EXCEEDED``.
``rate_limit_per_second`` answers 429 (``Retry-After: 1``) past that many API calls in the last second.
A missing or wrong ``Authorization: Bearer`` gets 401 ``UNAUTHENTICATED``; ``forbidden=True`` makes every
API call 403 ``PERMISSION_DENIED``. ``requests`` / ``count()`` / ``reset_log()`` expose the request log.

The routes are in `databricks_routes`, the workspace behind them in `databricks_state`, the generated workspace
(``make_workspace``) in `databricks_generated`.

Run alone: ``python -m poller.emulators.databricks [--data DIR | --generate CLUSTERS RUNS] [--port N]
[--rebase]``; it prints ``DATABRICKS_HOST=...`` and ``DATABRICKS_TOKEN=...`` and serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from urllib.parse import parse_qs, urlsplit

from poller.emulators.databricks_core import ApiError
from poller.emulators.databricks_generated import make_workspace
from poller.emulators.databricks_repair import RunOutcome
from poller.emulators.databricks_routes import ApiRequest, error_body, find_route, json_object
from poller.emulators.databricks_state import WorkspaceData, WorkspaceState
from poller.emulators.serving import RecordedRequest, RequestLog, ServedEmulator
from poller.emulators.tls import EmulatorHandler, TlsThreadingServer

__all__ = ["DEFAULT_TOKEN", "DEMO_DATA_DIR", "DatabricksEmulator", "RecordedRequest", "RunOutcome",
           "WorkspaceData", "make_workspace"]

_LOG = logging.getLogger(__name__)
DEMO_DATA_DIR = Path(__file__).parent / "data" / "databricks_demo"
DEFAULT_TOKEN = "dapi-emulator-0000000000000000"
_WELL_KNOWN = "/.well-known/databricks-config"
_FAULT_CODES = {429: "REQUEST_LIMIT_EXCEEDED", 500: "INTERNAL_ERROR", 502: "BAD_GATEWAY",
                503: "TEMPORARILY_UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


@dataclass
class _Fault:
    status: int
    retry_after: int | None
    remaining: int
    path_prefix: str | None
    message: str | None


class _Handler(EmulatorHandler):
    # headers and body go out in two writes; with Nagle on, each answer waits ~40 ms for a delayed ACK
    disable_nagle_algorithm = True
    server: TlsThreadingServer[DatabricksEmulator]

    def _serve(self) -> None:
        headers, raw = self.read_request()
        authorization = headers.get("authorization")
        status, extra, payload = self.server.emulator.handle(self.command, self.path, authorization, raw)
        self.send_reply(status, {"Content-Type": "application/json", **extra}.items(), payload)

    do_GET = do_POST = do_PATCH = do_DELETE = _serve


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
        self._log = RequestLog[RecordedRequest]()
        self._admitted: deque[float] = deque()
        self._tls = ssl_context is not None
        if data_dir is not None:
            self.load(WorkspaceData.read(data_dir))

    def _make_server(self) -> TlsThreadingServer[DatabricksEmulator]:
        return TlsThreadingServer(("127.0.0.1", self._port), _Handler, self, self._ssl_context)

    # -- faults and the log ------------------------------------------------------------------------------

    def inject(self, status: int, retry_after: int | None = None, times: int = 1,
               path_prefix: str | None = None, *, message: str | None = None) -> None:
        """Answer the next `times` API calls under `path_prefix` with `status` (FIFO across injections)."""
        with self._lock:
            self._faults.append(_Fault(status, retry_after, times, path_prefix, message))

    @property
    def requests(self) -> list[RecordedRequest]:
        return self._log.snapshot()

    def count(self, path_prefix: str | None = None, method: str | None = None) -> int:
        """How many logged requests match the path prefix and method."""
        return sum(1 for r in self._log.snapshot() if (path_prefix is None or r.path.startswith(path_prefix))
                   and (method is None or r.method == method))

    def reset_log(self) -> None:
        self._log.clear()

    # -- request handling --------------------------------------------------------------------------------

    def handle(self, method: str, target: str, authorization: str | None,
               raw_body: bytes) -> tuple[int, dict[str, str], bytes]:
        """Answer one HTTP request: (status, extra headers, JSON body). The server thread calls this."""
        parts = urlsplit(target)
        query = parse_qs(parts.query, keep_blank_values=True)
        with self._lock:
            body = json_object(raw_body)
            answer: tuple[int, dict[str, str], bytes]
            if body is None:
                answer = 400, {}, error_body("MALFORMED_REQUEST", "The request body is not a JSON object.")
            else:
                answer = self._answer(ApiRequest(method, parts.path, query, body), authorization)
            self._log.append(RecordedRequest(method, parts.path, query, body, answer[0]))
        return answer

    def _answer(self, req: ApiRequest, authorization: str | None) -> tuple[int, dict[str, str], bytes]:
        if req.path == _WELL_KNOWN:
            return self._well_known()
        refusal = self._refusal(req, authorization)
        if refusal is not None:
            return refusal
        route = find_route(req.method, req.path)
        if route is None:
            return 404, {}, error_body("ENDPOINT_NOT_FOUND", f"No API found for '{req.method} {req.path}'")
        try:
            return 200, {}, json.dumps(route(self, req)).encode()
        except ApiError as exc:
            return exc.status, {}, error_body(exc.error_code, exc.message)
        except Exception as exc:
            # A dropped connection would make the SDK retry "cannot connect" for its whole budget;
            # a 500 (whose text avoids the SDK's retry phrases) fails the caller at once.
            _LOG.exception("Databricks emulator failed on %s %s", req.method, req.path)
            return 500, {}, error_body("INTERNAL_ERROR", f"Emulator failure: {type(exc).__name__}: {exc}")

    def _well_known(self) -> tuple[int, dict[str, str], bytes]:
        # The SDK probes this once per Config() and carries on after a 404 (§0.2).
        if self.workspace_id is None:
            return 404, {}, error_body("NOT_FOUND", f"{_WELL_KNOWN} is not served by this workspace")
        return 200, {}, json.dumps({"workspace_id": self.workspace_id}).encode()

    def _refusal(self, req: ApiRequest, authorization: str | None) -> tuple[int, dict[str, str], bytes] | None:
        """Authentication, authorisation, rate limit, injected faults: the order a gateway applies them."""
        if authorization != f"Bearer {self.token}":
            message = "Invalid access token." if authorization else "No access token was provided."
            return 401, {}, error_body("UNAUTHENTICATED", message)
        if self.forbidden:
            message = f"User {self.user_name} does not have permission to call {req.method} {req.path}."
            return 403, {}, error_body("PERMISSION_DENIED", message)
        if self._over_rate_limit():
            return 429, {"Retry-After": "1"}, error_body("REQUEST_LIMIT_EXCEEDED",
                                                         f"Rate limit exceeded for {req.path}.")
        fault = self._take_fault(req.path)
        if fault is None:
            return None
        code = _FAULT_CODES.get(fault.status, "INTERNAL_ERROR")
        headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
        message = fault.message or f"Injected {fault.status} for {req.path}."
        return fault.status, headers, error_body(code, message)

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
