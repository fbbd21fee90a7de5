"""`rca-poller backfill`: re-read history in chunks under its own resumable cursor; the live one never moves.

The cursor is the checkpoint ``backfill:<source>:<since>:<until>`` (``until`` is ``now`` when it was left
open), so running the same command again resumes where the last run stopped. Durations (``7d``) count back
from the start of the current hour, which keeps the name — and so the resume point — stable for an hour.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from poller.durations import parse_duration
from poller.models import iso
from poller.pipeline import TickResult, tick
from poller.sources import Source, Window
from poller.store import Store

DEFAULT_CHUNK = timedelta(hours=6)
_RELATIVE = re.compile(r"\d+(\.\d+)?\s*(ms|s|m|h|d|w)")
OnChunk = Callable[[TickResult, int, int], None]


def anchor(now: datetime) -> datetime:
    """What durations count back from: the start of the current hour."""
    return now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def parse_when(text: str, now: datetime) -> datetime:
    """``2026-11-01``, ``2026-11-01T06:00Z`` (absolute, UTC unless stated) or ``7d`` / ``36h`` (ago)."""
    text = text.strip()
    if _RELATIVE.fullmatch(text):
        return anchor(now) - parse_duration(text)
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            value = datetime.combine(date.fromisoformat(text), datetime.min.time())
        except ValueError:
            raise ValueError(f"{text!r} is neither a date (2026-11-01), a time (2026-11-01T06:00Z) "
                             "nor a duration ago (7d)") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_range(since: str, until: str | None, chunk: str, now: datetime) -> tuple[datetime, datetime, timedelta]:
    """The command's --since/--until/--chunk as (start, end, step); ValueError says what is wrong."""
    start, end = parse_when(since, now), parse_when(until, now) if until else now
    step = parse_duration(chunk)
    if start >= end or step <= timedelta(0):
        raise ValueError(f"--since ({iso(start)}) must be before --until ({iso(end)}), and --chunk positive")
    return start, end, step


def backfill_name(source: str, since: datetime, until: datetime | None) -> str:
    """The backfill's own cursor: the same range resumes, another range starts afresh."""
    return f"backfill:{source}:{iso(since)}:{iso(until) if until else 'now'}"


@dataclass(frozen=True, slots=True)
class Plan:
    source: Source
    since: datetime
    until: datetime
    chunk: timedelta = DEFAULT_CHUNK
    open_ended: bool = False  # --until was left out: it is `now` on every run, and the name says so

    @property
    def cursor_name(self) -> str:
        return backfill_name(self.source.name, self.since, None if self.open_ended else self.until)

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
    on_chunk: OnChunk | None = None,
) -> list[TickResult]:
    """Each chunk commits with the backfill cursor; a failed chunk stops the run so it resumes there.

    A dry run reads and extracts every chunk from the start and writes nothing, not even its cursor.
    """
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


def backfill_source(
    plan: Plan, store: Store, now: datetime, console: Console, progress: Console, *, dry_run: bool
) -> list[TickResult]:
    """Run one source's backfill with a progress bar on `progress`; say on `console` what it does and did."""
    checkpoint = None if dry_run else store.checkpoint(plan.cursor_name)
    resumed = checkpoint.cursor if checkpoint and checkpoint.cursor and checkpoint.cursor > plan.since else None
    until = "now (" + iso(plan.until) + ")" if plan.open_ended else iso(plan.until)
    console.print(f"backfill {plan.source.name}: {iso(plan.since)} → {until} in chunks of {plan.chunk}"
                  + (f", resuming at {iso(resumed)}" if resumed else "") + (" (dry run)" if dry_run else ""),
                  soft_wrap=True)
    with progress_bar(progress, plan.source.name) as on_chunk:
        results = run_backfill(plan, store, now, dry_run=dry_run, on_chunk=on_chunk)
    console.print(summary(plan.source.name, results, dry_run), soft_wrap=True)
    return results


def backfill_all(
    plans: Sequence[Plan], store: Store, now: datetime, console: Console, progress: Console, *, dry_run: bool
) -> bool:
    """Each plan in turn (closing its source after); False if any chunk failed."""
    ok = True
    for plan in plans:
        try:
            ok = all(r.ok for r in backfill_source(plan, store, now, console, progress, dry_run=dry_run)) and ok
        finally:
            plan.source.close()
    return ok


@contextmanager
def progress_bar(console: Console, name: str) -> Iterator[OnChunk]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("rows {task.fields[rows]} · failures {task.fields[failures]}"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(f"backfill {name}", total=None, rows=0, failures=0)
        totals = [0, 0]

        def on_chunk(result: TickResult, index: int, count: int) -> None:
            totals[0] += result.rows_read
            totals[1] += result.failures
            progress.update(task, completed=index, total=count, rows=totals[0], failures=totals[1])

        yield on_chunk


def summary(name: str, results: Sequence[TickResult], dry_run: bool) -> str:
    rows = sum(r.rows_read for r in results)
    found = sum(r.failures for r in results)
    errors = [r.error for r in results if r.error]
    counted = "nothing stored (dry run)" if dry_run else f"{sum(r.added for r in results)} new"
    line = f"{name}: {len(results)} chunk(s), {rows} rows, {found} failures, {counted}"
    return line + (f" — stopped: {errors[0]} (run the same command again to resume)" if errors else "")
