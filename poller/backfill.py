"""`rca-poller backfill`: re-read history in chunks under its own resumable cursor; the live one never moves."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from poller.config import parse_duration
from poller.models import iso
from poller.pipeline import TickResult, tick
from poller.sources import Source, Window
from poller.store import Store

DEFAULT_CHUNK = timedelta(hours=6)


def parse_when(text: str, now: datetime) -> datetime:
    """``2026-11-01``, ``2026-11-01T06:00Z`` (absolute, UTC unless stated) or ``7d`` / ``36h`` (ago)."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?\s*(ms|s|m|h|d|w)", text):
        return now - parse_duration(text)
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            value = datetime.combine(date.fromisoformat(text), datetime.min.time())
        except ValueError:
            raise ValueError(f"{text!r} is neither a date (2026-11-01), a time (2026-11-01T06:00Z) "
                             "nor a duration ago (7d)") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def backfill_name(source: str, since: datetime, until: datetime) -> str:
    """The backfill's own cursor: the same range resumes, another range starts afresh."""
    return f"backfill:{source}:{iso(since)}:{iso(until)}"


@dataclass(frozen=True, slots=True)
class Plan:
    source: Source
    since: datetime
    until: datetime
    chunk: timedelta = DEFAULT_CHUNK

    @property
    def cursor_name(self) -> str:
        return backfill_name(self.source.name, self.since, self.until)

    def windows(self, resume_from: datetime | None) -> list[Window]:
        start = max(self.since, resume_from) if resume_from else self.since
        out = []
        while start < self.until:
            end = min(self.until, start + self.chunk)
            out.append(Window(start, end))
            start = end
        return out


def run_backfill(
    plan: Plan,
    store: Store,
    now: datetime,
    *,
    dry_run: bool = False,
    on_chunk: Callable[[TickResult, int, int], None] | None = None,
) -> list[TickResult]:
    """Each chunk commits with the backfill cursor; a failed chunk stops the run so it resumes there."""
    checkpoint = None if dry_run else store.checkpoint(plan.cursor_name)
    windows = plan.windows(checkpoint.cursor if checkpoint else None)
    results = []
    for index, window in enumerate(windows, 1):
        result = tick(plan.source, store, now, cursor_name=plan.cursor_name, window=window, dry_run=dry_run)
        results.append(result)
        if on_chunk:
            on_chunk(result, index, len(windows))
        if not result.ok:
            break
    return results
