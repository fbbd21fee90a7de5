"""The footing every part of the emulated Databricks workspace stands on: JSON and error vocabulary, page
tokens, and `WorkspaceCore` (the one lock, object ids, the clock, and remediation completions that settle).

A remediation call queues a completion with `_queue`; each read of that kind of object (`_advance`) counts
towards it, and it lands after `settle_after_reads` reads, or at once on `settle()`.
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Json = dict[str, Any]

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


@dataclass
class _Pending:
    kind: str  # "run" | "cluster" | "library": which reads count towards settling
    key: str
    reads_left: int
    complete: Callable[[], None]


class WorkspaceCore:
    """The state every part shares: the lock, the clock, the id counter and the pending completions."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.now_ms: Callable[[], int] = lambda: int(time.time() * 1000)
        self.settle_after_reads = 0
        self.user_name = "rca-poller@example.com"
        self._pending: list[_Pending] = []
        self._next_id = _FIRST_ID

    def settle(self) -> int:
        """Complete every pending remediation now; returns how many completed."""
        with self._lock:
            pending, self._pending = self._pending, []
            for item in pending:
                item.complete()
            return len(pending)

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _bump_ids(self, seen: int) -> None:
        self._next_id = max(self._next_id, seen)

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
