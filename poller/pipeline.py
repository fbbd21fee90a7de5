"""The flow of DESIGN §2 as small stages: tick(source) checkpoints failures; process() acts on them."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from poller.config import RcaConfig
from poller.errors import ExtractError, SourceError
from poller.models import Failure
from poller.rca.redact import redacted
from poller.sources.base import Source, Window
from poller.store import Store

if TYPE_CHECKING:
    from poller.incidents import Processor

log = logging.getLogger("poller.pipeline")


@dataclass(frozen=True, slots=True)
class TickContext:
    """Made once per tick; stages read time from here, never from the clock."""

    now: datetime
    source: str
    window: Window
    dry_run: bool = False


@dataclass(slots=True)
class TickResult:
    source: str
    window: Window | None = None
    rows_read: int = 0
    failures: int = 0
    added: int = 0
    quarantined: int = 0
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(slots=True)
class Extracted:
    failures: dict[str, Failure] = field(default_factory=dict)
    quarantine: list[tuple[Any, str]] = field(default_factory=list)
    rows: int = 0


def extract_stage(ctx: TickContext, source: Source, records: Iterable[Any]) -> Extracted:
    """Raw records → failures (deduplicated by key) and quarantined records; never raises on data."""
    out = Extracted()
    for raw in records:
        out.rows += 1
        try:
            failure = source.extract(raw)
        except ExtractError as exc:
            out.quarantine.append((raw, str(exc)))
            continue
        except Exception as exc:  # a bug in a rule must not stop the tick; the row waits in quarantine
            out.quarantine.append((raw, f"unexpected {exc.__class__.__name__}: {exc}"))
            continue
        if failure is not None:
            # Credentials in error text and parameters are redacted before the failure is stored anywhere.
            out.failures.setdefault(failure.key, redacted(failure.stamped(ctx.source, ctx.now)))
    return out


def tick(
    source: Source,
    store: Store,
    now: datetime,
    *,
    cursor_name: str | None = None,
    window: Window | None = None,
    dry_run: bool = False,
) -> TickResult:
    """Read one window of a source and commit failures, quarantine and cursor in one transaction.

    The live cursor is the source's name; a backfill passes its own ``cursor_name`` and explicit ``window``.
    ``dry_run`` reads and extracts but writes nothing.
    """
    name = cursor_name or source.name
    if window is None:
        checkpoint = store.checkpoint(name)
        window = source.window(checkpoint.cursor if checkpoint else None, now)
    ctx = TickContext(now=now, source=source.name, window=window, dry_run=dry_run)
    result = TickResult(source=source.name, window=window)
    try:
        poll = source.poll(window)
        extracted = extract_stage(ctx, source, poll.records)
    except SourceError as exc:
        result.error = str(exc)
        if not dry_run:
            store.record_error(name, now, str(exc))
        log.error("tick.failed", extra={"source": source.name, "error": str(exc)})
        return result
    if not dry_run:
        with store.tick(name, now) as tx:
            result.added = tx.add_failures(list(extracted.failures.values()))
            result.quarantined = sum(tx.quarantine(raw, reason) for raw, reason in extracted.quarantine)
            tx.advance(poll.cursor, extracted.rows, warning="; ".join(poll.warnings) or None)
    result.rows_read, result.failures = extracted.rows, len(extracted.failures)
    result.warnings = poll.warnings
    if dry_run:
        result.quarantined = len(extracted.quarantine)
    log.info("tick.done", extra={"source": source.name, "rows": result.rows_read, "added": result.added})
    return result


def resume_pending(sources: Iterable[Source], store: Store, now: datetime) -> None:
    """Give sources that enrich failures later (Synapse error text) back what they were still waiting for."""
    for source in sources:
        resume = getattr(source, "resume_pending", None)
        if resume is not None:
            resume(store.enrichment_pending(source.name), now)


def process(store: Store, now: datetime, processor: Processor | None = None) -> int:
    """Run the processor (incidents, RCA, local tickets); returns how many failures it grouped."""
    from poller.incidents import Processor as DefaultProcessor
    from poller.rca import RcaEngine

    processor = processor or DefaultProcessor(engine=RcaEngine(RcaConfig()))
    return processor.run(store, now).grouped
