"""`rca-poller remediations list|show|stats|approve|reject|reset-breaker` (registered by poller/cli.py)."""

from __future__ import annotations

import getpass
import json
import sys
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from poller.cli_common import config_option, format_option
from poller.config import load_config
from poller.errors import PollerError
from poller.remediation import operations
from poller.store import Store

STATUSES = ["scheduled", "pending_approval", "approved", "intent", "sent", "succeeded", "failed", "dry_run",
            "rejected", "expired", "blocked"]


def _store(config_path: str) -> Store:
    try:
        return Store(load_config(config_path).state.url)
    except PollerError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


def _run(action: Any) -> Any:
    try:
        return action()
    except PollerError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    table = Table(title=title)
    for name in columns:
        table.add_column(name)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    Console(width=160).print(table)


@click.group()
def remediations() -> None:
    """Auto-remediation: attempts, their audit trail, approvals and the circuit breaker."""


@remediations.command("list")
@config_option
@format_option
@click.option("--status", type=click.Choice(STATUSES), help="Only attempts in this status.")
@click.option("--limit", type=int, default=100, show_default=True, help="Most recent N (0 = all).")
def list_cmd(config_path: str, fmt: str, status: str | None, limit: int) -> None:
    """Attempts, newest first; the table ends with success rate and MTTR per error code."""
    store = _store(config_path)
    rows = operations.list_attempts(store, status, limit)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    _table("remediation attempts", rows, ["id", "incident_id", "attempt", "status", "mode", "policy", "action",
                                          "error_code", "external_id", "created_at", "message"])
    _stats_table(operations.stats(store))


@remediations.command("stats")
@config_option
@format_option
def stats_cmd(config_path: str, fmt: str) -> None:
    """Success rate and MTTR per error code."""
    rows = operations.stats(_store(config_path))
    click.echo(json.dumps(rows, indent=2)) if fmt == "json" else _stats_table(rows)


def _stats_table(rows: list[dict[str, Any]]) -> None:
    _table("per error code", rows, ["error_code", "incidents", "remediated", "escalated", "success_rate",
                                    "mttr_seconds"])


@remediations.command("show")
@config_option
@format_option
@click.argument("attempt_id", type=int)
def show_cmd(config_path: str, fmt: str, attempt_id: int) -> None:
    """One attempt and the audit trail of its incident."""
    data = _run(lambda: operations.show(_store(config_path), attempt_id))
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
        return
    trail = data.pop("audit")
    for key, value in data.items():
        click.echo(f"{key:16} {json.dumps(value) if isinstance(value, dict) else value}")
    _table("audit", [{**r, "detail": json.dumps(r["detail"])[:120]} for r in trail],
           ["id", "at", "event", "policy", "action", "mode", "detail", "seconds"])


@remediations.command("approve")
@config_option
@click.argument("attempt_id", type=int)
def approve_cmd(config_path: str, attempt_id: int) -> None:
    """Let a pending attempt run on the next pass (the budget and the breaker still apply)."""
    _run(lambda: operations.approve(_store(config_path), attempt_id, datetime.now(UTC), _who()))
    click.echo(f"attempt {attempt_id} approved")


@remediations.command("reject")
@config_option
@click.option("--reason", default="", help="Why; kept in the audit.")
@click.argument("attempt_id", type=int)
def reject_cmd(config_path: str, attempt_id: int, reason: str) -> None:
    """Drop a pending attempt; its incident goes back to open."""
    _run(lambda: operations.reject(_store(config_path), attempt_id, datetime.now(UTC), _who(), reason))
    click.echo(f"attempt {attempt_id} rejected")


@remediations.command("reset-breaker")
@config_option
def reset_breaker_cmd(config_path: str) -> None:
    """Close the circuit breaker so remediation resumes."""
    _run(lambda: operations.reset_breaker(_store(config_path), datetime.now(UTC), _who()))
    click.echo("circuit breaker reset")
