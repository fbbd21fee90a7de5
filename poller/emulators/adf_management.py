"""The ADF management API over real HTTPS, serving what azure-mgmt-datafactory 10.0.0 calls for reruns:

    POST {factory}/pipelines/{pipeline}/createRun?api-version=2018-06-01
         [&referencePipelineRunId=ID&isRecovery=true&startActivityName=A&startFromFailure=true]  → {"runId"}
    GET  {factory}/pipelineruns/{runId}?api-version=2018-06-01                                  → PipelineRun
    POST {factory}/queryPipelineRuns?api-version=2018-06-01  (filters: PipelineName, Status, RunGroupId)

where {factory} = /subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.DataFactory/factories/{f}
(reference/azure-log-analytics.md §8). A recovery run joins the reference run's group (``runGroupId``) and
takes ``isLatest`` from it; its parameters are the reference run's. A new run is ``InProgress`` and ends as
scripted (``script_run(pipeline, "Failed", message)``, FIFO; unscripted runs succeed) after
``settle_after_reads`` reads of it. A missing or wrong bearer token is 401; an unknown run or factory 404.
``requests`` is the request log; ``count(path_part, method)`` counts it.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from poller.emulators.serving import RecordedRequest, RequestLog, ServedEmulator
from poller.emulators.tls import EmulatorHandler, ThrowawayCA, TlsThreadingServer

API_VERSION = "2018-06-01"
Json = dict[str, Any]
_FACTORY = r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.DataFactory" \
           r"/factories/(?P<factory>[^/]+)"
_CREATE = re.compile(_FACTORY + r"/pipelines/(?P<pipeline>[^/]+)/createRun/?$", re.I)
_GET = re.compile(_FACTORY + r"/pipelineruns/(?P<run>[^/]+)/?$", re.I)
_QUERY = re.compile(_FACTORY + r"/queryPipelineRuns/?$", re.I)
_FILTERS = {"PipelineName": "pipelineName", "Status": "status", "RunGroupId": "runGroupId"}


@dataclass
class _Run:
    data: Json
    outcome: tuple[str, str] | None = None  # the scripted end, while it runs
    reads_left: int = 0


@dataclass
class PipelineRunBook:
    """Pipeline runs of any number of factories, keyed by (factory, run id); thread-safe."""

    settle_after_reads: int = 0
    runs: dict[tuple[str, str], _Run] = field(default_factory=dict)
    scripts: dict[tuple[str, str], deque[tuple[str, str]]] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)

    def add_run(self, factory: str, run: Json) -> str:
        """Store a PipelineRun as the API writes it (``runId``, ``pipelineName``, ``status``, …)."""
        with self.lock:
            data = {"runGroupId": run["runId"], "isLatest": True, "parameters": {}, **run}
            self.runs[(factory, data["runId"])] = _Run(data)
            return str(data["runId"])

    def script_run(self, factory: str, pipeline: str, status: str = "Succeeded", message: str = "") -> None:
        with self.lock:
            self.scripts.setdefault((factory, pipeline), deque()).append((status, message))

    def create_run(self, factory: str, pipeline: str, query: dict[str, str], parameters: Json | None) -> Json:
        with self.lock:
            reference_id = query.get("referencePipelineRunId")
            group, params = None, parameters or {}
            if reference_id:
                reference = self.get_run(factory, reference_id, advance=False)
                params = dict(reference["parameters"])
                if query.get("isRecovery", "").lower() == "true":
                    group = reference["runGroupId"]
                    for item in self.runs.values():
                        if item.data["runGroupId"] == group:
                            item.data["isLatest"] = False
            run_id = str(uuid.uuid4())
            queued = self.scripts.get((factory, pipeline))
            now = _iso(datetime.now(UTC))
            self.runs[(factory, run_id)] = _Run(
                {"runId": run_id, "runGroupId": group or run_id, "isLatest": True, "pipelineName": pipeline,
                 "parameters": params, "invokedBy": {"name": "Manual", "id": run_id, "invokedByType": "Manual"},
                 "runStart": now, "runEnd": None, "lastUpdated": now, "status": "InProgress", "message": "",
                 "runDimensions": {"startFromFailure": query.get("startFromFailure", "false")}},
                queued.popleft() if queued else ("Succeeded", ""), self.settle_after_reads)
            return {"runId": run_id}

    def get_run(self, factory: str, run_id: str, *, advance: bool = True) -> Json:
        with self.lock:
            run = self.runs.get((factory, run_id))
            if run is None:
                raise KeyError(run_id)
            if advance and run.outcome is not None:
                if run.reads_left <= 0:
                    run.data["status"], run.data["message"] = run.outcome
                    run.data["runEnd"] = run.data["lastUpdated"] = _iso(datetime.now(UTC))
                    run.outcome = None
                else:
                    run.reads_left -= 1
            return dict(run.data)

    def query(self, factory: str, body: Json) -> Json:
        with self.lock:
            runs = [r.data for (f, _), r in self.runs.items() if f == factory]
            for item in body.get("filters") or []:
                key, values = _FILTERS.get(item.get("operand")), set(item.get("values") or [])
                if key is not None:
                    keep = item.get("operator", "Equals") in ("Equals", "In")
                    runs = [r for r in runs if (r.get(key) in values) == keep]
            return {"value": [dict(r) for r in runs], "continuationToken": None}


class AdfManagementEmulator(PipelineRunBook, ServedEmulator):
    """ARM for Data Factory on 127.0.0.1; point DataFactoryManagementClient's ``base_url`` at ``url``."""

    thread_name = "adf-management-emulator"

    def __init__(self, directory: Path, *, token: str = "test-arm-token", ca: ThrowawayCA | None = None) -> None:
        super().__init__()
        self.token = token
        self.ca = ca or ThrowawayCA(directory)
        self._log = RequestLog[RecordedRequest]()

    @property
    def ca_path(self) -> Path:
        return self.ca.ca_path

    def _make_server(self) -> TlsThreadingServer[AdfManagementEmulator]:
        return TlsThreadingServer(("127.0.0.1", 0), _Handler, self, self.ca.server_context())

    @property
    def requests(self) -> list[RecordedRequest]:
        return self._log.snapshot()

    def count(self, path_part: str | None = None, method: str | None = None) -> int:
        return sum(1 for r in self._log.snapshot() if (path_part is None or path_part.lower() in r.path.lower())
                   and (method is None or r.method == method))

    def serve(self, method: str, target: str, authorization: str | None, raw: bytes) -> tuple[int, Json]:
        parts = urlsplit(target)
        path, query = unquote(parts.path), parse_qs(parts.query)
        body = json.loads(raw) if raw.strip() else None
        status, answer = self._answer(method, path, {k: v[0] for k, v in query.items()}, authorization, body)
        self._log.append(RecordedRequest(method, path, query, body, status))
        return status, answer

    def _answer(self, method: str, path: str, query: dict[str, str], authorization: str | None,
                body: Any) -> tuple[int, Json]:
        if authorization != f"Bearer {self.token}":
            return 401, _error("AuthenticationFailed", "Missing or invalid bearer token.")
        if query.get("api-version") != API_VERSION:
            return 400, _error("InvalidApiVersionParameter", f"api-version must be {API_VERSION}.")
        try:
            if method == "POST" and (match := _CREATE.match(path)):
                return 200, self.create_run(match["factory"], match["pipeline"], query, body)
            if method == "GET" and (match := _GET.match(path)):
                return 200, self.get_run(match["factory"], match["run"])
            if method == "POST" and (match := _QUERY.match(path)):
                return 200, self.query(match["factory"], body or {})
        except KeyError as exc:
            return 404, _error("PipelineRunNotFound", f"Pipeline run {exc.args[0]} does not exist.")
        return 404, _error("NotFound", f"No route for {method} {path}")


def _error(code: str, message: str) -> Json:
    return {"error": {"code": code, "message": message}}


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class _Handler(EmulatorHandler):
    server: TlsThreadingServer[AdfManagementEmulator]

    def _dispatch(self) -> None:
        headers, raw = self.read_request()
        status, answer = self.server.emulator.serve(self.command, self.path, headers.get("authorization"), raw)
        self.send_reply(status, [("Content-Type", "application/json; charset=utf-8"),
                                 ("x-ms-request-id", str(uuid.uuid4()))], json.dumps(answer).encode())

    do_GET = do_POST = _dispatch
