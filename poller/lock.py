"""One owner per state store: a second `run` or `once` on the same state refuses (or waits) instead of
processing the same failures twice."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from poller.errors import PollerError


class LockedError(PollerError):
    """Another rca-poller process owns this state store."""


class StateLock:
    """An exclusive ``flock`` on ``<state file>.lock``; the kernel releases it if the process dies."""

    def __init__(self, state_url: str, *, wait: bool = False, timeout: float | None = None) -> None:
        self.path = lock_path(state_url)
        self.wait = wait
        self.timeout = timeout
        self._fd: int | None = None

    def __enter__(self) -> StateLock:
        if self.path is None:
            return self  # PostgreSQL: replicas share sources through lease rows (DESIGN §7), not a file
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not self.wait or (deadline is not None and time.monotonic() > deadline):
                    owner = _read_owner(fd)
                    os.close(fd)
                    raise LockedError(
                        f"another rca-poller process{owner} is using the state store ({self.path}); "
                        "stop it, or pass --wait to wait for it"
                    ) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def lock_path(state_url: str) -> Path | None:
    if not state_url.startswith("sqlite:///"):
        return None
    db = state_url.removeprefix("sqlite:///")
    return Path(db + ".lock") if db and db != ":memory:" else None


def _read_owner(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""
