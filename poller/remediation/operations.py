"""What the `remediations` commands do to the store: approve, reject, reset the breaker, list, show, stats."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime
from statistics import mean
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from poller.errors import PollerError
from poller.models import iso
from poller.remediation.engine import Attempt, audit, breaker, touch
from poller.schema import IncidentRow, RemediationAuditRow, RemediationStateRow
from poller.store import Store


class RemediationError(PollerError):
    """A remediation command that cannot apply (unknown attempt, wrong status)."""


def _pending(session: Session, attempt_id: int) -> Attempt:
    attempt = session.get(Attempt, attempt_id)
    if attempt is None:
        raise RemediationError(f"no remediation attempt {attempt_id}")
    if attempt.status != "pending_approval":
        raise RemediationError(f"attempt {attempt_id} is {attempt.status}, not pending_approval")
    return attempt


def approve(store: Store, attempt_id: int, now: datetime, who: str) -> None:
    """The attempt runs on the next processor pass (guards still apply)."""
    with store.session() as session:
        attempt = _pending(session, attempt_id)
        attempt.status = "approved"
        attempt.not_before = min(attempt.not_before, now)
        audit(session, now, "approved", attempt=attempt, detail={"by": who})


def reject(store: Store, attempt_id: int, now: datetime, who: str, reason: str) -> None:
    """Nothing is done; the incident goes back to people."""
    with store.session() as session:
        attempt = _pending(session, attempt_id)
        attempt.status, attempt.message, attempt.finished_at = "rejected", reason or None, now
        incident = session.get(IncidentRow, attempt.incident_id)
        if incident is not None and incident.status == "remediating":
            touch(incident, now, "open")
        audit(session, now, "rejected", attempt=attempt, detail={"by": who, "reason": reason})


def reset_breaker(store: Store, now: datetime, who: str) -> RemediationStateRow:
    with store.session() as session:
        state = breaker(session, now)
        before = {"open": state.open, "consecutive_failures": state.consecutive_failures}
        state.open, state.consecutive_failures, state.opened_at, state.updated_at = False, 0, None, now
        audit(session, now, "breaker_reset", detail={"by": who, "before": before})
        session.flush()
        session.expunge(state)
        return state


def attempt_json(a: Attempt) -> dict[str, Any]:
    return {"id": a.id, "incident_id": a.incident_id, "attempt": a.attempt, "status": a.status, "mode": a.mode,
            "policy": a.policy, "action": a.action, "error_code": a.error_code, "resource": a.resource_key,
            "external_id": a.external_id, "message": a.message, "params": json.loads(a.params_json),
            "idempotency_key": a.idempotency_key, "created_at": iso(a.created_at), "not_before": iso(a.not_before),
            "sent_at": iso(a.sent_at) if a.sent_at else None,
            "finished_at": iso(a.finished_at) if a.finished_at else None}


def audit_json(row: RemediationAuditRow) -> dict[str, Any]:
    return {"id": row.id, "at": iso(row.at), "event": row.event, "incident_id": row.incident_id,
            "attempt_id": row.attempt_id, "policy": row.policy, "action": row.action, "mode": row.mode,
            "detail": json.loads(row.detail_json), "seconds": row.seconds}


def list_attempts(store: Store, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    with store.session() as session:
        query = select(Attempt).order_by(col(Attempt.id).desc())
        if status:
            query = query.where(col(Attempt.status) == status)
        if limit:
            query = query.limit(limit)
        return [attempt_json(a) for a in session.scalars(query).all()]


def show(store: Store, attempt_id: int) -> dict[str, Any]:
    """The attempt with every audit row of its incident (decision, intent, results, escalation)."""
    with store.session() as session:
        attempt = session.get(Attempt, attempt_id)
        if attempt is None:
            raise RemediationError(f"no remediation attempt {attempt_id}")
        rows = session.scalars(select(RemediationAuditRow).where(
            col(RemediationAuditRow.incident_id) == attempt.incident_id).order_by(col(RemediationAuditRow.id))).all()
        return {**attempt_json(attempt), "audit": [audit_json(r) for r in rows]}


def stats(store: Store) -> list[dict[str, Any]]:
    """Per error code: incidents acted on, remediated, escalated, success rate and mean MTTR (seconds)."""
    with store.session() as session:
        attempts = session.execute(select(col(Attempt.error_code), col(Attempt.incident_id))
                                   .where(col(Attempt.mode) != "dry_run")).all()
        mttr = {row.incident_id: json.loads(row.detail_json).get("mttr_seconds") for row in session.scalars(
            select(RemediationAuditRow).where(col(RemediationAuditRow.event) == "succeeded")).all()}
        escalated = set(session.scalars(select(col(RemediationAuditRow.incident_id)).where(
            col(RemediationAuditRow.event).in_(("escalated", "rejected")))).all())
    by_code: dict[str, set[int]] = defaultdict(set)
    for code, incident_id in attempts:
        by_code[code].add(incident_id)
    out = []
    for code, incidents in sorted(by_code.items()):
        won = [i for i in incidents if i in mttr]
        lost = [i for i in incidents if i in escalated and i not in mttr]
        done = len(won) + len(lost)
        out.append({"error_code": code, "incidents": len(incidents), "remediated": len(won), "escalated": len(lost),
                    "success_rate": round(len(won) / done, 3) if done else None,
                    "mttr_seconds": round(mean(mttr[i] for i in won), 1) if won else None})
    return out
