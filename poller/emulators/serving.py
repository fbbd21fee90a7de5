"""The lifecycle every emulator shares: serve its HTTP server from a daemon thread, stop it, say where it is.

An emulator subclasses `ServedEmulator` and implements `_make_server`; `start`, `stop`, `close`, `url` and the
context manager come from here.
"""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Self

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
