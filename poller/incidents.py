"""The processor of DESIGN §2: failures → incidents by fingerprint → one RCA each → local ticket → resolve.

Each stage reads its work from the store and records its progress there in the same transaction as its
result, so a crash at any moment neither skips a step nor repeats one that anyone could see.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from poller.fingerprint import Fingerprint, fingerprint
from poller.models import Failure, dumps
from poller.rca import CallRecord, EvidenceLimits, RcaEngine, RcaResult, build_evidence
from poller.remediation.build import build_remediation
from poller.remediation.engine import RemediationEngine
from poller.sinks import Sink, build_sinks
from poller.sinks.outbox import deliver_stage, enqueue_stage
from poller.store import FailureRow, IncidentRow, RcaCacheRow, RcaCallRow, Store, TicketRow, pending_failures

log = logging.getLogger("poller.incidents")
GROUP_BATCH = 500
OPEN = ("open", "remediating")


@dataclass(frozen=True, slots=True)
class ProcessContext:
    """Made once per processor run; stages read time from here."""

    now: datetime
    quiet_period: timedelta
    cache_ttl: timedelta
    limits: EvidenceLimits


@dataclass(slots=True)
class ProcessStats:
    grouped: int = 0
    opened: int = 0
    analysed: int = 0
    resolved: int = 0
    tickets: int = 0
    enqueued: int = 0
    delivered: int = 0

    def merge(self, other: ProcessStats) -> None:
        for name in ("grouped", "opened", "analysed", "resolved", "tickets", "enqueued", "delivered"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


Stage = Callable[[Store, ProcessContext], ProcessStats]


@dataclass
class Processor:
    """The stages in the order a failure goes through them; `build_processor` wires them from config."""

    engine: RcaEngine
    quiet_period: timedelta = timedelta(hours=6)
    cache_ttl: timedelta = timedelta(days=7)
    limits: EvidenceLimits = field(default_factory=EvidenceLimits)
    sinks: Sequence[Sink] = ()
    remediation: RemediationEngine | None = None

    def stages(self) -> Sequence[Stage]:
        return (group_stage, resolve_stage, self.rca_stage, self.remediation_stage, ticket_stage,
                self.enqueue_stage, self.deliver_stage)

    def remediation_stage(self, store: Store, ctx: ProcessContext) -> ProcessStats:
        """Policy matches on extracted failure fields → actions (never the RCA: model output triggers nothing)."""
        return ProcessStats(resolved=self.remediation.run(store, ctx.now)) if self.remediation else ProcessStats()

    def enqueue_stage(self, store: Store, ctx: ProcessContext) -> ProcessStats:
        return enqueue_stage(store, ctx, self.sinks)

    def deliver_stage(self, store: Store, ctx: ProcessContext) -> ProcessStats:
        return deliver_stage(store, ctx, self.sinks)

    def run(self, store: Store, now: datetime) -> ProcessStats:
        ctx = ProcessContext(now=now, quiet_period=self.quiet_period, cache_ttl=self.cache_ttl, limits=self.limits)
        stats = ProcessStats()
        for stage in self.stages():
            stats.merge(stage(store, ctx))
        return stats

    def rca_stage(self, store: Store, ctx: ProcessContext) -> ProcessStats:
        """One analysis per incident: from the cache when the fingerprint was explained lately, else the engine."""
        stats = ProcessStats()
        while True:
            with store.session() as session:
                incident = session.scalars(
                    select(IncidentRow).where(col(IncidentRow.rca_status) == "pending").order_by(col(IncidentRow.id))
                ).first()
                if incident is None:
                    return stats
                incident_id, print_ = incident.id or 0, incident.fingerprint
                cached = _cached(session, print_, ctx)
                evidence = None if cached else _evidence(session, incident, ctx.limits)
                used = 0 if cached else _tokens_today(session, ctx.now)
            # The model call happens outside any transaction: a slow answer must not hold the write lock.
            result, call = (cached, None) if cached else self.engine.analyse(evidence, tokens_used_today=used)  # type: ignore[arg-type]
            with store.session() as session:
                _record_rca(session, incident_id, print_, result, call, ctx, cached=cached is not None)
            stats.analysed += 1


def group_stage(store: Store, ctx: ProcessContext) -> ProcessStats:
    """Pending failures, oldest first, join the open incident with their fingerprint or open one."""
    stats = ProcessStats()
    while True:
        with store.session() as session:
            rows = pending_failures(session, GROUP_BATCH, ctx.now)
            if not rows:
                return stats
            open_by_print: dict[str, IncidentRow] = {}
            for row in rows:
                failure = row.to_failure()
                print_ = fingerprint(failure)
                incident = open_by_print.get(print_.value) or _open_incident(session, print_.value)
                if incident is None:
                    incident = _new_incident(session, failure, print_, ctx.now)
                    stats.opened += 1
                _add_occurrence(incident, failure, ctx.now)
                open_by_print[print_.value] = incident
                row.incident_id, row.fingerprint, row.processed_at = incident.id, print_.value, ctx.now
            stats.grouped += len(rows)


def resolve_stage(store: Store, ctx: ProcessContext) -> ProcessStats:
    """Open incidents quiet for `quiet_period` resolve; a recurrence later opens a new, linked incident."""
    cutoff = ctx.now - ctx.quiet_period
    with store.session() as session:
        quiet = session.scalars(
            select(IncidentRow).where(col(IncidentRow.status) == "open", col(IncidentRow.last_seen) < cutoff)
        ).all()
        for incident in quiet:
            incident.status, incident.resolved_at, incident.resolution = "resolved", ctx.now, "quiet"
            _touch(incident, ctx.now)
        return ProcessStats(resolved=len(quiet))


def ticket_stage(store: Store, ctx: ProcessContext) -> ProcessStats:
    """The local ticket of each incident follows its occurrences, RCA and status (one per incident)."""
    stats = ProcessStats()
    with store.session() as session:
        stale = session.execute(
            select(IncidentRow, TicketRow)
            .join(TicketRow, col(TicketRow.incident_id) == col(IncidentRow.id), isouter=True)
            .where((col(TicketRow.id).is_(None)) | (col(TicketRow.incident_version) < col(IncidentRow.version)))
        ).all()
        for incident, ticket in stale:
            session.add(_ticket(incident, ticket, ctx.now))
            stats.tickets += 1
    return stats


def _open_incident(session: Session, print_: str) -> IncidentRow | None:
    return session.scalars(
        select(IncidentRow).where(col(IncidentRow.fingerprint) == print_, col(IncidentRow.status).in_(OPEN))
    ).first()


def _new_incident(session: Session, failure: Failure, print_: Fingerprint, now: datetime) -> IncidentRow:
    previous = session.scalars(
        select(col(IncidentRow.id))
        .where(col(IncidentRow.fingerprint) == print_.value)
        .order_by(col(IncidentRow.id).desc())
    ).first()
    where = failure.metadata.get("activity_name") or failure.metadata.get("task_key") or failure.resource
    title = f"[{failure.service}] {failure.resource}: {where} failed ({failure.error_code or 'no code'})"
    incident = IncidentRow(
        fingerprint=print_.value, service=failure.service, resource=failure.resource, error_code=failure.error_code,
        kind=failure.kind, title=title[:300],
        template=print_.template.text, replaced_json=dumps(print_.template.replaced), first_seen=failure.occurred_at,
        last_seen=failure.occurred_at, previous_id=previous, created_at=now, updated_at=now,
    )
    session.add(incident)
    session.flush()  # the id links the failures of this batch
    log.info("incident.opened", extra={"incident": incident.id, "fingerprint": print_.value[:12]})
    return incident


def _add_occurrence(incident: IncidentRow, failure: Failure, now: datetime) -> None:
    incident.occurrences += 1
    incident.first_seen = min(incident.first_seen, failure.occurred_at)
    incident.last_seen = max(incident.last_seen, failure.occurred_at)
    _touch(incident, now)


def _touch(incident: IncidentRow, now: datetime) -> None:
    incident.version += 1
    incident.updated_at = now


def _cached(session: Session, print_: str, ctx: ProcessContext) -> RcaResult | None:
    row = session.get(RcaCacheRow, print_)
    if row is None or row.created_at < ctx.now - ctx.cache_ttl:
        return None
    return RcaResult.model_validate_json(row.rca_json)


def _tokens_today(session: Session, now: datetime) -> int:
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    total = session.execute(
        select(func.coalesce(func.sum(RcaCallRow.prompt_tokens + RcaCallRow.completion_tokens), 0))
        .where(col(RcaCallRow.at) >= midnight)
    ).scalar_one()
    return int(total)


def _evidence(session: Session, incident: IncidentRow, limits: EvidenceLimits) -> Any:
    recent = session.scalars(
        select(FailureRow).where(col(FailureRow.incident_id) == incident.id)
        .order_by(col(FailureRow.occurred_at).desc()).limit(limits.occurrences + 1)  # the latest + N others
    ).all()
    past = session.scalars(
        select(IncidentRow)
        .where(col(IncidentRow.fingerprint) == incident.fingerprint, col(IncidentRow.id) != incident.id)
        .order_by(col(IncidentRow.id).desc()).limit(limits.past_incidents)
    ).all()
    failures = [row.to_failure() for row in recent]
    return build_evidence(failures[0], failures[1:], [_past(p) for p in past], limits)


def _past(incident: IncidentRow) -> dict[str, Any]:
    rca = incident.rca() or {}
    return {"status": incident.status, "first_seen": incident.first_seen.isoformat(),
            "last_seen": incident.last_seen.isoformat(), "occurrences": incident.occurrences,
            "resolution": incident.resolution, "rca_summary": rca.get("summary")}


def _record_rca(session: Session, incident_id: int, print_: str, result: RcaResult, call: CallRecord | None,
                ctx: ProcessContext, *, cached: bool) -> None:
    incident = session.get(IncidentRow, incident_id)
    if incident is None or incident.rca_status != "pending":
        return  # another run got there first
    incident.rca_json, incident.rca_status, incident.rca_at = result.model_dump_json(), "done", ctx.now
    _touch(incident, ctx.now)
    if call is not None:
        session.add(RcaCallRow(incident_id=incident_id, provider=call.provider, model=call.model, status=call.status,
                               error=call.error, prompt_tokens=call.prompt_tokens,
                               completion_tokens=call.completion_tokens, cost=call.cost, seconds=call.seconds,
                               at=ctx.now))
    if not cached and result.fallback_reason is None:
        session.merge(RcaCacheRow(fingerprint=print_, rca_json=result.model_dump_json(), created_at=ctx.now))
    log.info("incident.analysed", extra={"incident": incident.id, "provider": result.provider,
                                         "fallback": result.fallback_reason or "", "cached": cached})


def _ticket(incident: IncidentRow, ticket: TicketRow | None, now: datetime) -> TicketRow:
    rca = incident.rca() or {}
    ticket = ticket or TicketRow(incident_id=incident.id or 0, title=incident.title, created_at=now)
    ticket.status = "resolved" if incident.status == "resolved" else "open"
    ticket.occurrences = incident.occurrences
    ticket.summary = str(rca.get("summary") or "")
    ticket.probable_cause = str(rca.get("probable_cause") or "")
    ticket.recommended_actions_json = json.dumps(rca.get("recommended_actions") or [])
    ticket.incident_version, ticket.updated_at = incident.version, now
    return ticket


def build_processor(config: Any, credential: Any = None) -> Processor:
    """The processor for a config: its RCA engine, the incident settings and the external sinks."""
    return Processor(
        engine=RcaEngine(config.rca, credential),
        quiet_period=config.incidents.quiet_period,
        cache_ttl=config.rca.cache_ttl,
        limits=EvidenceLimits(**config.rca.evidence.model_dump()),
        sinks=build_sinks(config),
        remediation=build_remediation(config, credential),
    )
