"""What a ticket or message says about an incident, built once per outbox row and redacted.

Incidents carry no severity of their own; it is derived from the RCA category: a cause someone must fix
(permission, configuration, data, code, capacity) is ``high``, a transient blip ``low``, anything else
``medium``. An incident recurring ``RECURRING_AT`` times or more moves one step up.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from poller.rca.redact import redact_text, redact_tree
from poller.schema import FailureRow, IncidentRow, SinkTicketRow

SEVERITIES = ("low", "medium", "high", "critical")
SEVERITY_BY_CATEGORY = {
    "permission": "high", "configuration": "high", "data": "high", "code": "high", "capacity": "high",
    "dependency": "medium", "transient": "low",
}
RECURRING_AT = 50
ERROR_CHARS = 4000
TICKET_LINK = "Ticket in "


@dataclass(frozen=True, slots=True)
class TicketContent:
    """Everything a sink may show about one incident; all text already redacted."""

    incident_id: int
    marker: str
    title: str
    status: str
    severity: str
    service: str
    resource: str
    run_id: str
    error_code: str
    error: str
    summary: str
    probable_cause: str
    category: str
    actions: tuple[str, ...]
    occurrences: int
    first_seen: str
    last_seen: str
    links: tuple[tuple[str, str], ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TicketContent:
        return cls(**{**data, "actions": tuple(data["actions"]), "links": tuple(tuple(x) for x in data["links"])})

    def text(self) -> str:
        """The plain-text body every sink can use."""
        lines = [self.title, "", f"Severity: {self.severity}   Status: {self.status}   "
                 f"Occurrences: {self.occurrences} ({self.first_seen} → {self.last_seen})",
                 f"Service: {self.service}   Resource: {self.resource}   Run: {self.run_id or '-'}", "",
                 f"Error ({self.error_code or 'no code'}):", self.error, ""]
        if self.summary:
            lines += [f"Summary: {self.summary}", f"Probable cause ({self.category}): {self.probable_cause}"]
        if self.actions:
            lines += ["Recommended actions:", *(f"  {i}. {a}" for i, a in enumerate(self.actions, 1))]
        lines += ["", *(f"{label}: {url}" for label, url in self.links), f"rca-poller incident {self.incident_id} "
                  f"(marker {self.marker})"]
        return "\n".join(lines)


def severity(category: str, occurrences: int) -> str:
    level = SEVERITIES.index(SEVERITY_BY_CATEGORY.get(category, "medium"))
    return SEVERITIES[min(level + (occurrences >= RECURRING_AT), len(SEVERITIES) - 1)]


def marker(incident: IncidentRow) -> str:
    """The id carried by the remote ticket (correlation_id, label, tag): letters, digits and '-' only."""
    return f"rcapoller-{incident.fingerprint[:16]}-{incident.id}"


def build_content(session: Session, incident: IncidentRow, sink: str) -> TicketContent:
    rca = incident.rca() or {}
    sample = session.scalars(
        select(FailureRow).where(col(FailureRow.incident_id) == incident.id).order_by(col(FailureRow.id).desc())
    ).first()
    meta: dict[str, Any] = json.loads(sample.metadata_json) if sample else {}
    category = str(rca.get("category") or "unknown")
    return TicketContent(
        incident_id=incident.id or 0, marker=marker(incident), title=redact_text(incident.title),
        status=incident.status, severity=severity(category, incident.occurrences), service=incident.service,
        resource=incident.resource, run_id=sample.run_id if sample else "", error_code=incident.error_code,
        error=redact_text(sample.error_message if sample else incident.template)[:ERROR_CHARS],
        summary=redact_text(str(rca.get("summary") or "")),
        probable_cause=redact_text(str(rca.get("probable_cause") or "")), category=category,
        actions=tuple(redact_tree([str(a) for a in rca.get("recommended_actions") or []])),
        occurrences=incident.occurrences, first_seen=incident.first_seen.isoformat(timespec="seconds"),
        last_seen=incident.last_seen.isoformat(timespec="seconds"),
        links=tuple(_source_links(meta)) + ticket_links(session, incident.id or 0, sink),
    )


def _source_links(meta: dict[str, Any]) -> list[tuple[str, str]]:
    return [(label, str(meta[key])) for key, label in (("monitor_url", "Monitoring page"),
                                                        ("run_page_url", "Databricks run")) if meta.get(key)]


def ticket_links(session: Session, incident_id: int, sink: str) -> tuple[tuple[str, str], ...]:
    """Links to the same incident's tickets in the other sinks, as recorded now."""
    others = session.scalars(
        select(SinkTicketRow).where(col(SinkTicketRow.incident_id) == incident_id, col(SinkTicketRow.sink) != sink)
    ).all()
    return tuple((f"{TICKET_LINK}{t.sink}", t.url or t.remote_id or "") for t in others if t.url or t.remote_id)


def with_ticket_links(session: Session, content: TicketContent, sink: str) -> TicketContent:
    """The content with its cross-links brought up to date at delivery time."""
    kept = tuple(link for link in content.links if not link[0].startswith(TICKET_LINK))
    return replace(content, links=kept + ticket_links(session, content.incident_id, sink))
