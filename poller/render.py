"""How the CLI and the demo show things: readable tables for people, JSON objects for tools."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from poller.models import Failure, iso
from poller.pipeline import TickResult
from poller.store import TicketRow


def make_console(stderr: bool = False) -> Console:
    # Markup off: error text and names are data ("[adf]", "[TABLE_OR_VIEW_NOT_FOUND]"), not styling.
    width = max(shutil.get_terminal_size((160, 24)).columns, 120)
    return Console(stderr=stderr, markup=False, highlight=False, width=width)


console = make_console()


def print_tick_results(results: Sequence[TickResult]) -> None:
    table = Table("source", "window", "rows", "failures", "new", "quarantined", "result")
    for r in results:
        window = f"{iso(r.window.start)} → {iso(r.window.end)}" if r.window else ""
        outcome = Text(r.error, style="red") if r.error else Text("ok" + _warned(r.warnings))
        table.add_row(r.source, window, str(r.rows_read), str(r.failures), str(r.added), str(r.quarantined), outcome)
    console.print(table)


def _warned(warnings: list[str]) -> str:
    return f" (warning: {'; '.join(warnings)})" if warnings else ""


def print_failures(rows: Sequence[Failure]) -> None:
    table = Table(title="failures")
    for name in ("occurred (UTC)", "service", "resource", "activity / task", "code"):
        table.add_column(name, no_wrap=True, max_width=40)
    table.add_column("error", overflow="fold", ratio=1)
    for f in rows:
        where = str(f.metadata.get("activity_name") or f.metadata.get("task_key") or "")
        table.add_row(iso(f.occurred_at)[:19], f.service, f.resource, where, f.error_code, clip(f.error_message, 300))
    console.print(table)


def ticket_json(t: TicketRow) -> dict[str, Any]:
    return {"id": t.id, "sink": t.sink, "failure_key": t.failure_key, "title": t.title,
            "probable_cause": t.probable_cause, "status": t.status, "created_at": iso(t.created_at)}


def print_tickets(rows: Sequence[TicketRow]) -> None:
    table = Table(title="tickets")
    for name in ("id", "sink", "status"):
        table.add_column(name, no_wrap=True)
    table.add_column("title", overflow="fold", ratio=1)
    table.add_column("probable cause", overflow="fold", ratio=1)
    for t in rows:
        table.add_row(str(t.id), t.sink, t.status, t.title, clip(t.probable_cause, 90))
    console.print(table)


def clip(text: str, width: int = 110) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
