"""What `status` and `tickets list` show about external sinks: backlog, permanent errors, remote tickets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from poller.models import iso
from poller.sinks.outbox import outbox_rows, sink_tickets

if TYPE_CHECKING:
    from poller.schema import OutboxRow, SinkTicketRow
    from poller.store import Store


def sink_summaries(store: Store, names: Sequence[str]) -> list[dict[str, Any]]:
    """Per configured sink: pending rows, the oldest one's next attempt, permanent failures, the last error."""
    rows = outbox_rows(store)
    out = []
    for name in names:
        mine = [r for r in rows if r.sink == name]
        pending = [r for r in mine if r.status == "pending"]
        failed = [r for r in mine if r.status == "failed_permanent"]
        errored = [r for r in mine if r.last_error and r.status != "sent"]
        head = pending[0] if pending else None
        out.append({
            "sink": name, "pending": len(pending), "failed_permanent": len(failed),
            "sent": sum(r.status == "sent" for r in mine),
            "next_attempt_at": iso(head.next_attempt_at) if head and head.next_attempt_at else None,
            "attempts": head.attempts if head else 0,
            "last_error": errored[-1].last_error if errored else None,
        })
    return out


def remote_tickets(store: Store) -> list[dict[str, Any]]:
    """Each incident's ticket per external sink, with its delivery state (ok, pending, failed_permanent)."""
    links = {(t.sink, t.incident_id): t for t in sink_tickets(store)}
    latest: dict[tuple[str, int], OutboxRow] = {}
    for row in outbox_rows(store):
        if row.status != "skipped":
            latest[(row.sink, row.incident_id)] = row
    out = []
    for key in sorted(set(links) | set(latest), key=lambda k: (k[1], k[0])):
        link, last = links.get(key), latest.get(key)
        out.append(_remote(key, link, last))
    return out


def _remote(key: tuple[str, int], link: SinkTicketRow | None, row: OutboxRow | None) -> dict[str, Any]:
    return {
        "sink": key[0], "incident_id": key[1], "remote_id": link.remote_id if link else None,
        "url": link.url if link else None, "last_action": link.last_action if link else None,
        "delivery": "ok" if row is None or row.status == "sent" else row.status,
        "attempts": row.attempts if row else 0,
        "last_error": row.last_error if row is not None and row.status != "sent" else None,
        "updated_at": iso(link.updated_at) if link else None,
    }
