"""How the CLI and the demo show things: readable tables for people, JSON objects for tools."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from poller.models import Failure, iso
from poller.pipeline import TickResult
from poller.store import IncidentRow, RcaCallRow, TicketRow

if TYPE_CHECKING:
    from poller.checks import CheckResult
    from poller.metrics import SourceStatus


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
    """One line per failure; `--format json` has the whole text."""
    table = Table(title="failures", expand=True)
    widths = (("occurred (UTC)", 19), ("service", 10), ("resource", 26), ("activity / task", 22), ("code", 26))
    for name, width in widths:
        table.add_column(name, no_wrap=True, min_width=min(width, 12), max_width=width, overflow="ellipsis")
    table.add_column("error", no_wrap=True, overflow="ellipsis", ratio=1)
    for f in rows:
        where = str(f.metadata.get("activity_name") or f.metadata.get("task_key") or "")
        table.add_row(iso(f.occurred_at)[:19], f.service, f.resource, where, f.error_code, clip(f.error_message, 400))
    console.print(table)


def ticket_json(t: TicketRow) -> dict[str, Any]:
    return {"id": t.id, "sink": t.sink, "incident_id": t.incident_id, "title": t.title, "status": t.status,
            "occurrences": t.occurrences, "summary": t.summary, "probable_cause": t.probable_cause,
            "recommended_actions": json.loads(t.recommended_actions_json), "created_at": iso(t.created_at),
            "updated_at": iso(t.updated_at)}


def print_tickets(rows: Sequence[TicketRow]) -> None:
    table = Table(title="tickets", expand=True)
    for name in ("id", "sink", "incident", "status", "seen"):
        table.add_column(name, no_wrap=True)
    table.add_column("title", no_wrap=True, overflow="ellipsis", ratio=1)
    table.add_column("probable cause", no_wrap=True, overflow="ellipsis", ratio=1)
    for t in rows:
        table.add_row(str(t.id), t.sink, str(t.incident_id), t.status, f"{t.occurrences}×", t.title,
                      clip(t.probable_cause, 160))
    console.print(table)


def print_remote_tickets(rows: Sequence[dict[str, Any]]) -> None:
    table = Table(title="tickets in external sinks")
    for name in ("sink", "incident", "remote id", "last action", "delivery"):
        table.add_column(name, no_wrap=True)
    table.add_column("link / last error", overflow="fold", ratio=1)
    for r in rows:
        delivery = Text(r["delivery"], style="red" if r["delivery"] == "failed_permanent" else "")
        table.add_row(r["sink"], str(r["incident_id"]), r["remote_id"] or "-", r["last_action"] or "-", delivery,
                      clip(r["last_error"] or r["url"] or "", 200))
    console.print(table)


def print_sink_status(rows: Sequence[dict[str, Any]]) -> None:
    table = Table("sink", "pending", "next attempt", "failed (permanent)", "sent", "last error", title="sinks")
    for r in rows:
        failed = Text(str(r["failed_permanent"]), style="red" if r["failed_permanent"] else "")
        table.add_row(r["sink"], str(r["pending"]), r["next_attempt_at"] or "-", failed, str(r["sent"]),
                      clip(r["last_error"] or "", 90))
    console.print(table)


def incident_json(i: IncidentRow) -> dict[str, Any]:
    return {"id": i.id, "fingerprint": i.fingerprint, "status": i.status, "service": i.service,
            "resource": i.resource, "error_code": i.error_code, "kind": i.kind, "title": i.title,
            "template": i.template, "replaced": json.loads(i.replaced_json), "occurrences": i.occurrences,
            "first_seen": iso(i.first_seen), "last_seen": iso(i.last_seen),
            "resolved_at": iso(i.resolved_at) if i.resolved_at else None, "resolution": i.resolution,
            "previous_incident_id": i.previous_id, "rca": i.rca()}


def print_incidents(rows: Sequence[IncidentRow]) -> None:
    table = Table(title="incidents", expand=True)
    for name, width in (("id", 6), ("status", 11), ("service", 10), ("resource", 26), ("code", 26), ("seen", 6),
                        ("last seen (UTC)", 19)):
        table.add_column(name, no_wrap=True, max_width=width, overflow="ellipsis")
    table.add_column("root cause", no_wrap=True, overflow="ellipsis", ratio=1)
    for i in rows:
        rca = i.rca() or {}
        cause = f"[{rca.get('category', '?')}] {rca.get('summary', '')}" if rca else "(not analysed yet)"
        table.add_row(str(i.id), i.status, i.service, i.resource, i.error_code, f"{i.occurrences}×",
                      iso(i.last_seen)[:19], clip(cause, 200))
    console.print(table)


def print_incident(incident: IncidentRow, failures: Sequence[Failure], tickets: Sequence[TicketRow],
                   calls: Sequence[RcaCallRow]) -> None:
    data = incident_json(incident)
    rca = data.pop("rca") or {}
    table = Table(title=f"incident {incident.id}", show_header=False)
    table.add_column("field", no_wrap=True)
    table.add_column("value", overflow="fold", ratio=1)
    for name, value in data.items():
        table.add_row(name, "" if value is None else str(value))
    for name in ("summary", "probable_cause", "category", "confidence", "retry_safe", "inconclusive", "provider",
                 "model", "fallback_reason", "evidence_quotes", "recommended_actions"):
        if name in rca:
            table.add_row(f"rca.{name}", str(rca[name]))
    runs = sorted({f.run_id for f in failures if f.run_id})
    table.add_row("affected runs", ", ".join(runs[:20]) + (f" … (+{len(runs) - 20})" if len(runs) > 20 else ""))
    table.add_row("tickets", ", ".join(f"{t.sink}#{t.id} ({t.status})" for t in tickets))
    table.add_row("llm calls", ", ".join(f"{c.provider}:{c.status} {c.prompt_tokens + c.completion_tokens} tok "
                                         f"${c.cost:.4f}" for c in calls))
    console.print(table)
    print_failures(failures[:10])


def print_status(statuses: Sequence[SourceStatus]) -> None:
    table = Table("source", "cursor", "lag", "last tick", "last success", "health", "last error", "backlog",
                  title="status")
    for s in statuses:
        row = s.to_json()
        lag = f"{row['lag_seconds']:.0f}s" if row["lag_seconds"] is not None else "never ticked"
        health = Text("disabled") if not s.enabled else (
            Text(f"stale (> {s.stale_after})", style="red") if s.stale else Text("ok", style="green"))
        table.add_row(s.source, row["cursor"] or "-", lag, row["last_tick_at"] or "-", row["last_success_at"] or "-",
                      health, clip(row["last_error"] or "", 70), str(s.backlog))
    console.print(table)


def print_checks(results: Sequence[CheckResult]) -> None:
    table = Table("", "component", "check", "detail", "fix", title="rca-poller check")
    for r in results:
        mark = Text("✓", style="green") if r.ok else Text("✗", style="bold red")
        table.add_row(mark, r.component, r.item, Text(r.detail, overflow="fold"), Text(r.hint, overflow="fold"))
    console.print(table)
    failed = sum(not r.ok for r in results)
    console.print(f"{failed} check(s) failed" if failed else "all checks passed")


def clip(text: str, width: int = 110) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
