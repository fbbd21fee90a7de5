"""One owner per state store: a second `run` or `once` on the same state refuses (or waits) instead of
processing the same failures twice."""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path
from types import TracebackType

from poller.errors import PollerError

log = logging.getLogger("poller.lock")
POLL_SECONDS = 0.2


class LockedError(PollerError):
    """Another rca-poller process owns this state store."""


class StateLock:
    """An exclusive ``flock`` on ``<state file>.lock``; the kernel releases it if the process dies.

    The owner's pid is written into the file while it holds the lock, for the refusal message and `check`.
    """

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
        try:
            self._acquire(fd)
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def _acquire(self, fd: int) -> None:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                owner = _read_owner(fd)
                if not self.wait or (deadline is not None and time.monotonic() > deadline):
                    held_by = f" (pid {owner})" if owner else ""
                    raise LockedError(
                        f"another rca-poller process{held_by} is using the state store ({self.path}); "
                        "stop it, or pass --wait to wait for it"
                    ) from None
                if not announced:
                    log.info("lock.waiting", extra={"path": str(self.path), "owner_pid": owner})
                    announced = True
                time.sleep(POLL_SECONDS)

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # an empty file: nobody holds it (a killed owner leaves its pid behind)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def lock_path(state_url: str) -> Path | None:
    if not state_url.startswith("sqlite:///"):
        return None
    db = state_url.removeprefix("sqlite:///")
    return Path(db + ".lock").expanduser() if db and db != ":memory:" else None


def holder(state_url: str) -> int | None:
    """The pid of the live process that owns the state store, if any — read without taking the lock."""
    path = lock_path(state_url)
    if path is None:
        return None
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not text.isdigit():
        return None
    try:
        os.kill(int(text), 0)
    except ProcessLookupError:
        return None  # killed while holding it: the kernel released the lock, the pid stayed
    except PermissionError:
        pass  # alive, owned by another user
    return int(text)


def _read_owner(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None
