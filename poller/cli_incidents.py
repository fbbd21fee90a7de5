"""`rca-poller incidents list|show`: failures grouped by cause, with their RCA, runs, tickets and LLM calls."""

from __future__ import annotations

import json

import click

from poller.cli_common import EXIT_FAILED, config_option, fail, format_option, open_config, open_store
from poller.models import iso
from poller.render import incident_json, print_incident, print_incidents, ticket_json


@click.group()
def incidents() -> None:
    """Incidents: failures grouped by cause, each explained once."""


@incidents.command("list")
@config_option
@format_option
@click.option("--status", "state", type=click.Choice(["open", "remediating", "resolved"]), help="Only this status.")
@click.option("--limit", type=int, default=100, show_default=True, help="Most recent N (0 = all).")
def incidents_list(config_path: str, fmt: str, state: str | None, limit: int) -> None:
    """List incidents, most recently seen first."""
    rows = open_store(open_config(config_path)).incidents(status=state, limit=limit or None)
    if fmt == "json":
        click.echo(json.dumps([incident_json(i) for i in rows], indent=2))
        return
    print_incidents(rows)


@incidents.command("show")
@config_option
@format_option
@click.argument("incident_id", type=int)
def incidents_show(config_path: str, fmt: str, incident_id: int) -> None:
    """One incident: its RCA, affected runs, failures, tickets and LLM calls."""
    found = open_store(open_config(config_path)).incident(incident_id)
    if found is None:
        fail(f"no incident {incident_id}", EXIT_FAILED)
    incident, failures_, tickets_, calls = found
    if fmt == "json":
        body = incident_json(incident) | {
            "affected_runs": sorted({f.run_id for f in failures_ if f.run_id}),
            "failures": [f.to_json() for f in failures_],
            "tickets": [ticket_json(t) for t in tickets_],
            "llm_calls": [{"provider": c.provider, "model": c.model, "status": c.status, "error": c.error,
                           "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
                           "cost": c.cost, "at": iso(c.at)} for c in calls],
        }
        click.echo(json.dumps(body, indent=2))
        return
    print_incident(incident, failures_, tickets_, calls)
