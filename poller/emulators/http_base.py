"""What the ticket and chat emulators share: a real HTTP server on 127.0.0.1, a request log, scripted faults.

A `Fault` is served to the next request(s) instead of (or, with ``after=True``, after) the real handling, so a
test can make the remote create happen and then hold or drop the answer — the crash window of a sink.
`down = True` answers 503 to everything until it is set back. `AnswerHandler`, which sends an `Answer` (its delay
and disconnect included), also serves the OpenAI emulator.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

from poller.emulators.serving import RequestLog, ScriptQueue, ServedEmulator
from poller.emulators.tls import EmulatorHandler, ThrowawayCA, TlsThreadingServer


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour: an error ``status`` (with ``body``), a ``delay``, or a dropped connection."""

    status: int = 503
    body: Any = field(default_factory=lambda: {"error": "emulated fault"})
    times: int = 1
    delay: float = 0.0
    after: bool = False  # handle the request for real first, then misbehave
    disconnect: bool = False
    method: str | None = None  # only requests with this method meet the fault (others pass it by)
    path: str | None = None  # … and whose path contains this


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: str

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Answer:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    disconnect: bool = False


class HttpEmulator(ServedEmulator):
    """Subclasses implement `route`; everything else (threads, TLS, faults, the log) is here."""

    def __init__(self, *, tls: bool = False, ca: ThrowawayCA | None = None) -> None:
        self.down = False
        self._tls, self._ca = tls, ca
        self._lock = threading.Lock()
        self._faults = ScriptQueue[Fault]()
        self._log = RequestLog[LoggedRequest]()

    def _make_server(self) -> TlsThreadingServer[HttpEmulator]:
        context = (self._ca.server_context() if self._ca else None) if self._tls else None
        return TlsThreadingServer(("127.0.0.1", 0), _Handler, self, context)

    def fail(self, *faults: Fault) -> None:
        """Queue faults for the next requests, in order."""
        with self._lock:
            for fault in faults:
                self._faults.push(fault, fault.times)

    @property
    def requests(self) -> list[LoggedRequest]:
        return self._log.snapshot()

    def route(self, request: LoggedRequest) -> Answer:
        raise NotImplementedError

    def handle(self, method: str, target: str, headers: dict[str, str], body: str) -> Answer:
        parts = urlsplit(target)
        request = LoggedRequest(method, parts.path, dict(parse_qsl(parts.query)), headers, body)
        with self._lock:
            self._log.append(request)
            fault = self._next_fault(request)
            down = self.down
        if down:
            return Answer(503, {"error": "service unavailable (emulated outage)"})
        if fault is not None and not fault.after:
            return Answer(fault.status, fault.body, delay=fault.delay, disconnect=fault.disconnect)
        with self._lock:
            answer = self.route(request)
        if fault is not None:
            return Answer(fault.status, fault.body, delay=fault.delay, disconnect=fault.disconnect)
        return answer

    def _next_fault(self, request: LoggedRequest) -> Fault | None:
        return self._faults.take(lambda f: f.method in (None, request.method) and (f.path or "") in request.path)


def json_body(request: LoggedRequest) -> Any:
    """The request's JSON, or None when it is not JSON (the route answers 400)."""
    try:
        return json.loads(request.body) if request.body else None
    except ValueError:
        return None


class Answering(Protocol):
    """What `AnswerHandler` serves: a `ServedEmulator` whose `handle` answers one request."""

    _stopping: threading.Event

    def handle(self, method: str, target: str, headers: dict[str, str], body: str) -> Answer: ...


class AnswerHandler(EmulatorHandler):
    """Sends the emulator's `Answer` after its delay; a disconnect, or `stop` during the delay, sends nothing."""

    timeout = 30
    server: TlsThreadingServer[Answering]

    def serve(self) -> None:
        headers, body = self.read_request()
        emulator = self.server.emulator
        answer = emulator.handle(self.command, self.path, headers, body.decode("utf-8", errors="replace"))
        if answer.delay and emulator._stopping.wait(answer.delay):
            answer.disconnect = True
        if answer.disconnect:
            self.close_connection = True
            return
        if answer.body is None:
            payload, kind = b"", "application/json"
        elif isinstance(answer.body, str):
            payload, kind = answer.body.encode(), "text/plain"
        else:
            payload, kind = json.dumps(answer.body).encode(), "application/json"
        self.send_reply(answer.status, {"content-type": kind, **answer.headers}.items(), payload)


class _Handler(AnswerHandler):
    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = AnswerHandler.serve
