"""A Synapse workspace dev endpoint over real HTTPS, serving what azure-synapse-artifacts' ``ArtifactsClient``
calls for ``pipeline_run.query_activity_runs`` (0.22.0, data-plane api-version 2020-12-01):

    POST /pipelines/{pipelineName}/pipelineruns/{runId}/queryActivityruns?api-version=2020-12-01
    Authorization: Bearer <token for https://dev.azuresynapse.net/.default>
    {"lastUpdatedAfter": ISO, "lastUpdatedBefore": ISO, "continuationToken": str?,
     "filters": [{"operand": "Status", "operator": "Equals", "values": ["Failed"]}], "orderBy": [...]}
    → 200 {"value": [ActivityRun …], "continuationToken": str | null}

ActivityRun objects are kept as the API writes them (``pipelineName``, ``pipelineRunId``, ``activityName``,
``activityType``, ``activityRunId``, ``status``, ``activityRunStart``, ``activityRunEnd``, ``durationInMs``,
``input``, ``output``, ``error``). A run is listed when its ``activityRunEnd`` (else start) lies in the update
window; filters on ``Status``, ``ActivityName``, ``ActivityType`` (``Equals``, ``NotEquals``, ``In``,
``NotIn``) apply; pages hold ``page_size`` runs, the token being the next offset. A missing or wrong bearer token
is 401, another api-version or a body without the window 400, any other path 404.

Pipeline reruns (§8.4) are served from ``pipeline_runs`` (an ``adf_management.PipelineRunBook``): ``POST
/pipelines/{name}/createRun`` → 202 ``{runId}``, ``GET /pipelineruns/{runId}``, ``POST /queryPipelineRuns``.

Faults: ``inject(status, times=1, retry_after=None)`` answers the next API calls with that status (FIFO);
``stop()`` closes the port — the endpoint is down, connections are refused — and ``start()`` opens it again on the
same port. ``requests`` is the request log (method, path, api-version, body, status).

Run alone: ``python -m poller.emulators.synapse [--data FILE] [--port N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import signal
import socket
import ssl
import sys
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from poller.emulators.adf_management import PipelineRunBook
from poller.emulators.serving import RequestLog, ScriptQueue, ServedEmulator
from poller.emulators.tls import EmulatorHandler, ThrowawayCA, TlsThreadingServer

API_VERSION = "2020-12-01"
DEMO_DATA = Path(__file__).parent / "data" / "synapse_demo" / "activity_runs.json"
_PATH = re.compile(r"^/pipelines/(?P<pipeline>[^/]+)/pipelineruns/(?P<run>[^/]+)/queryActivityruns/?$")
_CREATE_RUN = re.compile(r"^/pipelines/(?P<pipeline>[^/]+)/createRun/?$")
_GET_RUN = re.compile(r"^/pipelineruns/(?P<run>[^/]+)/?$")
_FILTERABLE = {"Status": "status", "ActivityName": "activityName", "ActivityType": "activityType"}
_TIME_KEYS = ("activityRunStart", "activityRunEnd")
_STATUS_CODES = {400: "BadRequest", 401: "Unauthorized", 404: "NotFound", 429: "TooManyRequests",
                 500: "InternalServerError", 502: "BadGateway", 503: "ServiceUnavailable", 504: "GatewayTimeout"}

Json = dict[str, Any]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    api_version: str | None
    body: Json | None
    status: int


@dataclass(frozen=True)
class _Reply:
    status: int
    body: Json
    headers: tuple[tuple[str, str], ...] = ()


class SynapseEmulator(ServedEmulator):
    """An HTTPS Synapse dev endpoint serving queryActivityruns over in-memory activity runs."""

    thread_name = "synapse-emulator"

    def __init__(
        self,
        runs: Iterable[Json] = (),
        *,
        expected_token: str | None = None,
        page_size: int = 100,
        host: str = "127.0.0.1",
        port: int = 0,
        ca: ThrowawayCA | None = None,
    ) -> None:
        self.expected_token = expected_token
        self.page_size = page_size
        self._address = (host, port)
        self._scratch = tempfile.TemporaryDirectory(prefix="synapse-emulator-")
        self._ca = ca or ThrowawayCA(Path(self._scratch.name))
        self._runs: list[Json] = []
        self._faults = ScriptQueue[tuple[int, int | None]]()  # (status, Retry-After)
        self._log = RequestLog[RecordedRequest]()
        self._lock = threading.Lock()
        self.pipeline_runs = PipelineRunBook()  # createRun / getPipelineRun / queryPipelineRuns (reruns)
        self.add_activity_runs(runs)

    # lifecycle (start, stop, `with`: ServedEmulator); `stop` closes the port, `start` opens the same one again

    def _make_server(self) -> _Server:
        server = _Server(self._address, self, self._ca.server_context())
        host, port = server.server_address[:2]
        self._address = (str(host), port)  # a restart keeps the port the clients know
        return server

    def close(self) -> None:
        super().close()
        self._scratch.cleanup()

    @property
    def url(self) -> str:
        """``https://127.0.0.1:PORT`` — the workspace ``endpoint`` for ArtifactsClient (valid while stopped too)."""
        host, port = self._address
        if not port:
            raise RuntimeError("the emulator has not been started")
        return f"https://{host}:{port}"

    @property
    def ca_path(self) -> Path:
        return self._ca.ca_path

    # data, faults, log

    def add_activity_runs(self, runs: Iterable[Json]) -> None:
        with self._lock:
            self._runs.extend(dict(run) for run in runs)

    def shift(self, delta: timedelta) -> None:
        """Move every activity run's times by ``delta`` (the demo moves its data to "now")."""
        with self._lock:
            for run in self._runs:
                for key in _TIME_KEYS:
                    if run.get(key):
                        run[key] = _iso(_parse(run[key]) + delta)

    def inject(self, status: int, *, times: int = 1, retry_after: int | None = None) -> None:
        self._faults.push((status, retry_after), times)

    @property
    def requests(self) -> list[RecordedRequest]:
        return self._log.snapshot()

    def reset_requests(self) -> None:
        self._log.clear()

    # serving

    def serve(self, method: str, target: str, headers: dict[str, str], body: bytes) -> _Reply:
        url = urlsplit(target)
        versions = parse_qs(url.query).get("api-version")
        version = versions[-1] if versions else None
        parsed = _json_body(body)
        reply = self._pipeline_reply(method, url.path, parse_qs(url.query), headers, parsed) \
            or self._reply(method, url.path, version, headers, parsed)
        self._log.append(RecordedRequest(method, url.path, version, parsed, reply.status))
        return reply

    def _reply(self, method: str, path: str, version: str | None, headers: dict[str, str], body: Json | None) -> _Reply:
        match = _PATH.match(path)
        if method != "POST" or match is None:
            return _error(404, f"No route for {method} {path}")
        token = headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not token or (self.expected_token is not None and token != self.expected_token):
            return _error(401, "The access token is missing or invalid.")
        fault = self._take_fault()
        if fault is not None:
            return fault
        if version != API_VERSION:
            return _error(400, f"The api-version '{version}' is invalid. The supported versions are '{API_VERSION}'.")
        if body is None or not body.get("lastUpdatedAfter") or not body.get("lastUpdatedBefore"):
            return _error(400, "lastUpdatedAfter and lastUpdatedBefore are required.")
        return self._page(unquote(match["pipeline"]), unquote(match["run"]), body)

    def _pipeline_reply(self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str],
                        body: Json | None) -> _Reply | None:
        """Pipeline reruns (§8.4): POST createRun → 202, GET pipelineruns/{id}, POST queryPipelineRuns."""
        create, get = _CREATE_RUN.match(path), _GET_RUN.match(path)
        if not (create or get or path.rstrip("/") == "/queryPipelineRuns"):
            return None
        if headers.get("authorization", "") != f"Bearer {self.expected_token}" and self.expected_token:
            return _error(401, "The access token is missing or invalid.")
        args = {name: values[-1] for name, values in query.items()}
        try:
            if method == "POST" and create:
                return _Reply(202, self.pipeline_runs.create_run("ws", unquote(create["pipeline"]), args, body))
            if method == "GET" and get:
                return _Reply(200, self.pipeline_runs.get_run("ws", unquote(get["run"])))
            if method == "POST" and not (create or get):
                return _Reply(200, self.pipeline_runs.query("ws", body or {}))
        except KeyError as exc:
            return _error(404, f"Pipeline run {exc.args[0]} does not exist.")
        return _error(404, f"No route for {method} {path}")

    def _page(self, pipeline: str, run_id: str, body: Json) -> _Reply:
        after, before = _parse(body["lastUpdatedAfter"]), _parse(body["lastUpdatedBefore"])
        with self._lock:
            runs = [r for r in self._runs if r.get("pipelineName") == pipeline
                    and str(r.get("pipelineRunId", "")).lower() == run_id.lower()]
        runs = [r for r in runs if after <= _updated(r) <= before and _passes(r, body.get("filters") or [])]
        offset = int(body.get("continuationToken") or 0)
        page = runs[offset:offset + self.page_size]
        token = str(offset + self.page_size) if offset + self.page_size < len(runs) else None
        return _Reply(200, {"value": page, "continuationToken": token})

    def _take_fault(self) -> _Reply | None:
        fault = self._faults.take()
        if fault is None:
            return None
        status, retry_after = fault
        headers = (("Retry-After", str(retry_after)),) if retry_after is not None else ()
        return _error(status, f"Injected fault: HTTP {status}", headers)


def load_runs(path: Path) -> list[Json]:
    """A JSON array of ActivityRun objects (or the API envelope ``{"value": [...]}``)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    runs = data.get("value", []) if isinstance(data, dict) else data
    if not isinstance(runs, list):
        raise ValueError(f"{path}: expected a JSON array of activity runs")
    return runs


def _passes(run: Json, filters: list[Any]) -> bool:
    for item in filters:
        key = _FILTERABLE.get(str(item.get("operand")))
        if key is None:
            continue
        values = [str(v) for v in item.get("values") or []]
        inside = str(run.get(key, "")) in values
        if (item.get("operator") in ("Equals", "In")) != inside:
            return False
    return True


def _updated(run: Json) -> datetime:
    stamp = run.get("activityRunEnd") or run.get("activityRunStart")
    return _parse(stamp) if stamp else datetime.min.replace(tzinfo=UTC)


def _parse(text: str) -> datetime:
    value = text.strip().replace("Z", "+00:00")
    head, _, rest = value.partition(".")
    if rest:  # seven-digit fractions, as the service writes them
        digits = re.match(r"\d+", rest)
        fraction = digits.group(0) if digits else ""
        value = f"{head}.{fraction[:6]}{rest[len(fraction):]}"
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json_body(body: bytes) -> Json | None:
    try:
        parsed = json.loads(body or b"null")
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _error(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> _Reply:
    return _Reply(status, {"error": {"code": _STATUS_CODES.get(status, "Error"), "message": message}}, headers)


class _Server(TlsThreadingServer[SynapseEmulator]):
    def __init__(self, address: tuple[str, int], emulator: SynapseEmulator, tls: ssl.SSLContext) -> None:
        self._connections: set[socket.socket] = set()  # before binding: a failed bind calls server_close
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler, emulator, tls)

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            (self._connections.add if open_ else self._connections.discard)(connection)

    def drop_connections(self) -> None:
        with self._connections_lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            self._connections.clear()

    def server_close(self) -> None:
        super().server_close()
        self.drop_connections()  # kept-alive connections too: a stopped endpoint answers nothing


class _Handler(EmulatorHandler):
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        self.server.track(self.connection, False)
        super().finish()

    def _dispatch(self) -> None:
        headers, body = self.read_request()
        reply = self.server.emulator.serve(self.command, self.path, headers, body)
        self.send_reply(reply.status, (("Content-Type", "application/json; charset=utf-8"), *reply.headers),
                        json.dumps(reply.body).encode())

    do_GET = do_POST = _dispatch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m poller.emulators.synapse",
                                     description="Serve a local HTTPS Synapse dev endpoint (queryActivityruns).")
    parser.add_argument("--data", type=Path, default=DEMO_DATA, help="JSON array of ActivityRun objects")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with SynapseEmulator(load_runs(args.data), port=args.port) as emulator:
        print(f"url: {emulator.url}\nca_file: {emulator.ca_path}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            done.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
