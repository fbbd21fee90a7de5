"""The lifecycle every emulator shares: serve its HTTP server from a daemon thread, stop it, say where it is.

An emulator subclasses `ServedEmulator` and implements `_make_server`; `start`, `stop`, `close`, `url` and the
context manager come from here, as do the request log each keeps (`RequestLog`; `RecordedRequest` is the entry
of those that log nothing more) and its queue of scripted faults or replies (`ScriptQueue`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

Entry = TypeVar("Entry")

_NOT_SERVING = threading.Event()
_NOT_SERVING.set()


class ServedEmulator:
    """Serves `_make_server()` in a daemon thread: `start` returns self, `stop` ends it, `with` does both.

    It has no ``__init__``: its state starts as the class defaults below, so it also mixes into emulators whose
    other base (a dataclass, a state class) does not chain ``__init__``.
    """

    thread_name = "emulator"
    _tls = True  # the scheme in `url`; an emulator that can also speak plain HTTP sets it per instance
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    # Set while not serving; a reply delayed with ``_stopping.wait(seconds)`` ends as soon as `stop` is called.
    _stopping: threading.Event = _NOT_SERVING

    def _make_server(self) -> ThreadingHTTPServer:
        """A bound server whose handlers reach this emulator (typically as ``server.emulator``)."""
        raise NotImplementedError

    @property
    def url(self) -> str:
        """``https://127.0.0.1:PORT`` (``http`` without TLS), no trailing slash; only while started."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started: call start() or use it in a with block")
        host, port = self._server.server_address[:2]
        return f"{'https' if self._tls else 'http'}://{host!s}:{port}"

    def start(self) -> Self:
        """Bind and serve in a background thread; idempotent."""
        if self._server is None:
            self._stopping = threading.Event()
            self._server = self._make_server()
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                            name=self.thread_name, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; delayed replies end at once. Safe to call twice; `start` serves again."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server, self._thread = None, None

    def close(self) -> None:
        """Stop, and release what the emulator holds beyond the server (an override adds that)."""
        self.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class RequestLog(Generic[Entry]):
    """Entries appended from the HTTP threads, read as snapshots, oldest first; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[Entry] = []

    def append(self, entry: Entry) -> None:
        with self._lock:
            self._entries.append(entry)

    def snapshot(self) -> list[Entry]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class ScriptQueue(Generic[Entry]):
    """Scripted faults or replies, first in first out, each taken `times` times; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[tuple[Entry, int]] = deque()

    def push(self, entry: Entry, times: int) -> None:
        with self._lock:
            self._queue.append((entry, times))

    def take(self, meets: Callable[[Entry], bool] | None = None) -> Entry | None:
        """The first entry, one of its times used up; None when there is none or `meets` turns it down."""
        with self._lock:
            if not self._queue or (meets is not None and not meets(self._queue[0][0])):
                return None
            entry, times = self._queue[0]
            if times > 1:
                self._queue[0] = (entry, times - 1)
            else:
                self._queue.popleft()
            return entry

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()

    def pending(self) -> int:
        """The times left, summed over the entries."""
        with self._lock:
            return sum(times for _, times in self._queue)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the emulator saw and answered it."""

    method: str
    path: str
    query: dict[str, list[str]]  # as parse_qs gives it: repeated keys (filter_by.cluster_states) stay lists
    body: Any  # the parsed JSON body; None when there was none (or, for Databricks, not an object)
    status: int
    time: float = field(default_factory=time.time)  # time.time() when it arrived
