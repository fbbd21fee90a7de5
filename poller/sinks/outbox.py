"""The outbox: incidents' state changes queued per sink in the state store, delivered in order, retried.

States of a row: ``pending`` → ``sent`` | ``failed_permanent``; ``skipped`` marks a version a sink's filters
left out (it is looked at again when the incident changes). Per sink, rows go oldest first; a retryable
failure sets ``next_attempt_at`` (exponential backoff with jitter) and stops that sink's queue for this run, so
nothing overtakes it. The remote ticket (`SinkTicketRow`) is recorded only after a successful call, and ticket
sinks look up their marker before creating, so a crash between the remote create and the local commit
repeats the delivery as an update of the same ticket.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from poller.errors import SinkError
from poller.schema import IncidentRow, OutboxRow, SinkTicketRow
from poller.sinks.base import Delivered, Delivery, RemoteRef, Sink, TicketAction
from poller.sinks.content import TicketContent, build_content, with_ticket_links

if TYPE_CHECKING:
    from poller.incidents import ProcessContext, ProcessStats
    from poller.store import Store

log = logging.getLogger("poller.sinks.outbox")
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(minutes=30)
INTENT = {"open": TicketAction.CREATE, "update": TicketAction.UPDATE, "resolve": TicketAction.RESOLVE}


def enqueue_stage(store: Store, ctx: ProcessContext, sinks: Sequence[Sink]) -> ProcessStats:
    """One row per sink per incident state change (open, update, resolve); pending updates coalesce."""
    from poller.incidents import ProcessStats

    stats = ProcessStats()
    for sink in sinks:
        with store.session() as session:
            for incident, last in _changed(session, sink.name):
                stats.enqueued += _enqueue(session, sink, incident, last, ctx.now)
    return stats


def _changed(session: Session, sink: str) -> list[tuple[IncidentRow, OutboxRow | None]]:
    """Analysed incidents whose version is newer than the last one this sink's outbox saw."""
    latest = (select(func.max(OutboxRow.id)).where(col(OutboxRow.sink) == sink,
                                                    col(OutboxRow.incident_id) == col(IncidentRow.id))
              .correlate(IncidentRow).scalar_subquery())
    rows = session.execute(
        select(IncidentRow, OutboxRow).join(OutboxRow, col(OutboxRow.id) == latest, isouter=True)
        .where(col(IncidentRow.rca_status) == "done")
        .where(col(OutboxRow.id).is_(None) | (col(OutboxRow.incident_version) < col(IncidentRow.version)))
        .order_by(col(IncidentRow.id))
    ).all()
    return [(incident, last) for incident, last in rows]


def _enqueue(session: Session, sink: Sink, incident: IncidentRow, last: OutboxRow | None, now: datetime) -> int:
    told = _last_told(session, sink.name, incident.id or 0)
    state = f"{incident.status}|{incident.rca_at.isoformat() if incident.rca_at else ''}"
    action = _action(incident, told)
    if action == "update" and told is not None and told.state == state and now - told.created_at < \
            sink.policy.repeat_interval:
        return 0  # a recurrence only: told again once repeat_interval has passed, if it still changed
    content = build_content(session, incident, sink.name)
    if action is None or not sink.policy.accepts(content):
        session.add(_row(sink.name, incident, action or "open", state, content, now, status="skipped"))
        log.info("sink.skipped", extra={"sink": sink.name, "incident": incident.id, "action": TicketAction.SKIP})
        return 0
    pending = last if last is not None and last.status == "pending" and last.action != "resolve" else None
    if pending is not None and action == "update":
        pending.payload_json, pending.incident_version = json.dumps(content.to_json()), incident.version
        pending.state = state
        return 0  # coalesced into the delivery still waiting
    session.add(_row(sink.name, incident, action, state, content, now))
    log.info("sink.enqueued", extra={"sink": sink.name, "incident": incident.id, "action": INTENT[action]})
    return 1


def _last_told(session: Session, sink: str, incident_id: int) -> OutboxRow | None:
    return session.scalars(
        select(OutboxRow).where(col(OutboxRow.sink) == sink, col(OutboxRow.incident_id) == incident_id,
                                col(OutboxRow.status) != "skipped").order_by(col(OutboxRow.id).desc())
    ).first()


def _action(incident: IncidentRow, told: OutboxRow | None) -> str | None:
    resolved = incident.status == "resolved"
    if told is None:
        return None if resolved else "open"  # resolved before anyone was told: nothing to say
    if told.action == "resolve":
        return None
    return "resolve" if resolved else "update"


def _row(sink: str, incident: IncidentRow, action: str, state: str, content: TicketContent, now: datetime, *,
         status: str = "pending") -> OutboxRow:
    return OutboxRow(sink=sink, incident_id=incident.id or 0, action=action, incident_version=incident.version,
                     state=state, payload_json=json.dumps(content.to_json()), status=status, created_at=now)


def deliver_stage(store: Store, ctx: ProcessContext, sinks: Sequence[Sink]) -> ProcessStats:
    """Each sink's pending rows oldest first; a retryable failure stops that sink until its next attempt."""
    from poller.incidents import ProcessStats

    stats = ProcessStats()
    # Ticket sinks first, so a notification sent in the same run can link to the tickets just made.
    for sink in sorted(sinks, key=lambda s: s.kind != "ticket"):
        stats.delivered += _drain(store, ctx.now, sink)
    return stats


def _drain(store: Store, now: datetime, sink: Sink) -> int:
    delivered = 0
    budget = _budget(store, now, sink)
    while budget is None or delivered < budget:
        with store.session() as session:
            row = session.scalars(
                select(OutboxRow).where(col(OutboxRow.sink) == sink.name, col(OutboxRow.status) == "pending")
                .order_by(col(OutboxRow.id))
            ).first()
            if row is None or (row.next_attempt_at is not None and row.next_attempt_at > now):
                return delivered
            delivery, row_id = _delivery(session, row), row.id
        try:
            # The remote call happens outside any transaction; only its result is committed.
            done = sink.deliver(delivery)
        except SinkError as exc:
            _failed(store, row_id, exc, now, INTENT[delivery.action])
            if exc.retryable:
                return delivered
            continue
        except Exception as exc:  # a bug in a sink: kept as a retryable error, in the log with its traceback
            log.exception("sink.crashed", extra={"sink": sink.name, "action": INTENT[delivery.action]})
            _failed(store, row_id, SinkError(sink.name, f"{type(exc).__name__}: {exc}", retryable=True), now,
                    INTENT[delivery.action])
            return delivered
        _sent(store, row_id, delivery, done, now)
        delivered += 1
    return delivered


def _budget(store: Store, now: datetime, sink: Sink) -> int | None:
    if not sink.policy.rate_limit:
        return None
    with store.session() as session:
        recent = session.execute(select(func.count()).where(
            col(OutboxRow.sink) == sink.name, col(OutboxRow.sent_at) > now - timedelta(minutes=1))).scalar_one()
    return max(0, sink.policy.rate_limit - int(recent))


def _delivery(session: Session, row: OutboxRow) -> Delivery:
    link = session.scalars(select(SinkTicketRow).where(col(SinkTicketRow.sink) == row.sink,
                                                       col(SinkTicketRow.incident_id) == row.incident_id)).first()
    remote = RemoteRef(link.remote_id, link.url) if link is not None and link.remote_id else None
    content = with_ticket_links(session, TicketContent.from_json(json.loads(row.payload_json)), row.sink)
    return Delivery(row.action, content, remote)


def _sent(store: Store, row_id: int | None, delivery: Delivery, done: Delivered, now: datetime) -> None:
    with store.session() as session:
        row = session.get(OutboxRow, row_id)
        if row is None:
            return
        row.status, row.sent_at, row.result, row.last_error = "sent", now, str(done.action), None
        row.attempts += 1
        link = session.scalars(select(SinkTicketRow).where(col(SinkTicketRow.sink) == row.sink,
                                                           col(SinkTicketRow.incident_id) == row.incident_id)).first()
        link = link or SinkTicketRow(sink=row.sink, incident_id=row.incident_id)
        if done.remote is not None:
            link.remote_id, link.url = done.remote.remote_id, done.remote.url or link.url
        link.last_action, link.last_version, link.updated_at = str(done.action), row.incident_version, now
        session.add(link)
        sink, incident = row.sink, row.incident_id
    log.info("sink.delivered", extra={"sink": sink, "incident": incident, "action": done.action,
                                      "remote_id": done.remote.remote_id if done.remote else "", "note": done.note})


def _failed(store: Store, row_id: int | None, exc: SinkError, now: datetime, action: TicketAction) -> None:
    with store.session() as session:
        row = session.get(OutboxRow, row_id)
        if row is None:
            return
        row.attempts += 1
        row.last_error = str(exc)[:1000]
        if exc.retryable:
            row.next_attempt_at = now + backoff(row.attempts)
        else:
            row.status = "failed_permanent"
        sink, incident, attempts = row.sink, row.incident_id, row.attempts
    log.warning("sink.failed", extra={"sink": sink, "incident": incident, "action": action, "attempt": attempts,
                                      "retryable": exc.retryable, "error": str(exc)})


def backoff(attempts: int) -> timedelta:
    """30s, 1m, 2m … capped at 30m, each stretched by up to 20% so many rows do not retry in lockstep."""
    base = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, attempts - 1))
    return timedelta(seconds=base.total_seconds() * (1 + random.random() * 0.2))


def outbox_rows(store: Store, *, status: str | None = None) -> list[OutboxRow]:
    """The outbox, oldest first (for `status`, `tickets list` and tests)."""
    query = select(OutboxRow).order_by(col(OutboxRow.id))
    if status:
        query = query.where(col(OutboxRow.status) == status)
    with store.session() as session:
        rows = list(session.scalars(query))
        session.expunge_all()
        return rows


def sink_tickets(store: Store) -> list[SinkTicketRow]:
    """Every remote ticket recorded, by incident then sink."""
    with store.session() as session:
        rows = list(session.scalars(select(SinkTicketRow).order_by(col(SinkTicketRow.incident_id),
                                                                   col(SinkTicketRow.sink))))
        session.expunge_all()
        return rows
