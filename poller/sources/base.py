"""What every source is: a window to read, a poll that returns raw records, and the extractor for them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from poller.models import Failure


@dataclass(frozen=True, slots=True)
class Window:
    """The slice of the source's timeline one tick reads: (start, end]."""

    start: datetime
    end: datetime

    @property
    def span(self) -> timedelta:
        return self.end - self.start


@dataclass(slots=True)
class Poll:
    """What a poll read: raw records, where the cursor may move once they are committed, and soft errors."""

    records: Iterable[Any]
    cursor: datetime
    warnings: list[str] = field(default_factory=list)


class Source(Protocol):
    name: str
    interval: timedelta

    def window(self, cursor: datetime | None, now: datetime) -> Window: ...

    def poll(self, window: Window) -> Poll: ...

    def extract(self, raw: Any) -> Failure | None: ...

    def close(self) -> None: ...
