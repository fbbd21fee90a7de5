"""The remediation stage: follow sent actions, reconcile crashed ones, decide on new incidents, act on due ones.

Guards, in the order they apply: the mode (off | dry_run | act | approval); one active attempt per incident;
`once_within` per resource; `max_attempts` per incident; the circuit breaker (opened by N consecutive failed
attempts, closed only by `remediations reset-breaker`); the global budget of actions per hour. Nothing waits for
ever: an approval not given within `approval_ttl` expires (escalated), and a sent action with no outcome after
`verify_timeout` fails (next attempt or escalation). Every decision and outcome is appended to
`remediation_audit`. The intent of a call is committed before the call, so a process killed mid-call finds it
on restart and asks the platform whether the call landed (reconcile).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from poller.models import dumps, iso
from poller.remediation.actions.base import Action, NotApplicable, Outcome
from poller.remediation.config import PolicyConfig, RemediationConfig
from poller.remediation.policy import backoff, effective_policies, select_policy
from poller.schema import (
    FailureRow,
    IncidentRow,
    RemediationAttemptRow,
    RemediationAuditRow,
    RemediationStateRow,
)
from poller.store import Store

log = logging.getLogger("poller.remediation")
ACTIVE = ("scheduled", "pending_approval", "approved", "intent", "sent")
SPENT = ("intent", "sent", "succeeded", "failed")  # attempts that made (or may have made) a call
FIRST_STATUS = {"dry_run": "dry_run", "approval": "pending_approval", "act": "scheduled"}
Attempt = RemediationAttemptRow


def audit(session: Session, now: datetime, event: str, *, attempt: Attempt | None = None,
          incident_id: int | None = None, policy: str | None = None, action: str | None = None, mode: str = "",
          detail: Mapping[str, Any] | None = None, seconds: float | None = None) -> None:
    """Append one row to the audit table (never updated, never deleted)."""
    if attempt is not None:
        incident_id, policy, action, mode = attempt.incident_id, attempt.policy, attempt.action, attempt.mode
    session.add(RemediationAuditRow(at=now, incident_id=incident_id, attempt_id=attempt.id if attempt else None,
                                    event=event, policy=policy, action=action, mode=mode,
                                    detail_json=dumps(dict(detail or {})), seconds=seconds))
    log.info("remediation.%s", event, extra={"incident": incident_id, "policy": policy or ""})


def touch(incident: IncidentRow, now: datetime, status: str | None = None) -> None:
    """A change the incident's tickets must show: bump the version."""
    if status is not None:
        incident.status = status
    incident.version += 1
    incident.updated_at = now


def breaker(session: Session, now: datetime) -> RemediationStateRow:
    row = session.get(RemediationStateRow, "breaker")
    if row is None:
        row = RemediationStateRow(name="breaker", updated_at=now)
        session.add(row)
    return row


def idempotency_key(incident_id: int, attempt: int) -> str:
    """Stable per incident and attempt; ≤ 64 characters, as Databricks' idempotency_token allows."""
    return "rca-poller-" + hashlib.sha256(f"{incident_id}:{attempt}".encode()).hexdigest()[:40]


@dataclass
class RemediationEngine:
    """Built from the `remediation:` config and the actions registry (`build_remediation`)."""

    config: RemediationConfig
    actions: Mapping[str, Action]
    policies: tuple[PolicyConfig, ...] = ()
    rand: Callable[[], float] = field(default=random.random)

    def __post_init__(self) -> None:
        self.policies = self.policies or effective_policies(self.config)

    def run(self, store: Store, now: datetime) -> int:
        """One pass of the stage; returns how many incidents remediation resolved."""
        if not self.config.active:
            return 0
        resolved = self._verify(store, now)
        self._reconcile(store, now)
        self._expire(store, now)
        self._decide(store, now)
        self._execute(store, now)
        return resolved

    # -- decide ------------------------------------------------------------------------------------------------

    def _decide(self, store: Store, now: datetime) -> None:
        decided = select(col(RemediationAuditRow.incident_id)).where(col(RemediationAuditRow.event) == "decided")
        with store.session() as session:
            incidents = session.scalars(
                select(IncidentRow).where(col(IncidentRow.status) == "open", col(IncidentRow.id).not_in(decided))
                .order_by(col(IncidentRow.id))
            ).all()
            for incident in incidents:
                latest = session.scalars(
                    select(FailureRow).where(col(FailureRow.incident_id) == incident.id)
                    .order_by(col(FailureRow.occurred_at).desc(), col(FailureRow.id).desc())
                ).first()
                if latest is not None:
                    self._decide_one(session, incident, latest, now)

    def _decide_one(self, session: Session, incident: IncidentRow, row: FailureRow, now: datetime) -> None:
        failure = row.to_failure()
        mode = self.config.mode
        selection = select_policy(self.policies, failure)
        detail: dict[str, Any] = {"failure_key": failure.key, "error_code": failure.error_code,
                                  "not_matched": selection.reasons}
        policy = selection.policy
        if policy is None:
            audit(session, now, "decided", incident_id=incident.id, mode=mode, detail={**detail, "outcome": "no_match"})
            return
        skip = self._skip_reason(session, policy, failure.resource_id, now)
        params: dict[str, Any] = {}
        action = self.actions.get(policy.action)
        if skip is None and action is None:
            skip = f"action {policy.action} is not available (no client configured for it)"
        if skip is None and action is not None:
            try:
                params = action.plan(failure, policy, self.config)
            except NotApplicable as exc:
                skip = str(exc)
        if skip is not None:
            audit(session, now, "decided", incident_id=incident.id, policy=policy.name, action=policy.action,
                  mode=mode, detail={**detail, "outcome": "skipped", "reason": skip})
            return
        attempt = Attempt(incident_id=incident.id or 0, failure_key=failure.key, policy=policy.name,
                          action=policy.action, mode=mode, resource_key=failure.resource_id or failure.resource,
                          error_code=failure.error_code, attempt=1, status=FIRST_STATUS[mode],
                          params_json=dumps(params), idempotency_key=idempotency_key(incident.id or 0, 1),
                          created_at=now, not_before=now + policy.delay)
        session.add(attempt)
        session.flush()
        if attempt.status != "dry_run":
            touch(incident, now, "remediating")  # one action per incident at a time
        audit(session, now, "decided", attempt=attempt,
              detail={**detail, "outcome": attempt.status, "params": params, "not_before": attempt.not_before})

    def _skip_reason(self, session: Session, policy: PolicyConfig, resource_key: str, now: datetime) -> str | None:
        if not policy.once_within:
            return None
        last = session.scalars(
            select(col(Attempt.sent_at)).where(col(Attempt.policy) == policy.name,
                                               col(Attempt.resource_key) == resource_key,
                                               col(Attempt.sent_at) >= now - policy.once_within)
        ).first()
        return f"once_within {policy.once_within}: acted on this resource at {last}" if last else None

    # -- act ---------------------------------------------------------------------------------------------------

    def _execute(self, store: Store, now: datetime) -> None:
        with store.session() as session:
            due = session.scalars(
                select(col(Attempt.id)).where(col(Attempt.status).in_(("scheduled", "approved")),
                                         col(Attempt.not_before) <= now).order_by(col(Attempt.id))
            ).all()
        for attempt_id in due:
            self._execute_one(store, int(attempt_id or 0), now)

    def _execute_one(self, store: Store, attempt_id: int, now: datetime) -> None:
        with store.session() as session:
            attempt = session.get(Attempt, attempt_id)
            if attempt is None or attempt.status not in ("scheduled", "approved"):
                return
            blocked = self._blocked(session, now)
            if blocked is not None:
                attempt.status, attempt.message, attempt.finished_at = "blocked", blocked, now
                self._escalate(session, attempt, now, blocked)
                return
            action, params = self.actions[attempt.action], json.loads(attempt.params_json)
        started = time.monotonic()
        try:
            params = action.prepare(params, now)
        except Exception as exc:  # recorded as a failed attempt, with the error, in the audit
            self._record_failure(store, attempt_id, f"prepare: {exc}", now, time.monotonic() - started)
            return
        with store.session() as session:  # the intent is durable before the call is made
            attempt = session.get(Attempt, attempt_id)
            assert attempt is not None
            attempt.status, attempt.params_json, attempt.sent_at = "intent", dumps(params), now
            audit(session, now, "intent", attempt=attempt, detail={"params": params, "key": attempt.idempotency_key})
        self._perform(store, action, attempt_id, params, now, started)

    def _perform(self, store: Store, action: Action, attempt_id: int, params: dict[str, Any], now: datetime,
                 started: float) -> None:
        key = self._key(store, attempt_id)
        try:
            external_id = action.perform(params, key)
        except Exception as exc:  # recorded as a failed attempt, with the error, in the audit
            self._record_failure(store, attempt_id, str(exc), now, time.monotonic() - started)
            return
        with store.session() as session:
            attempt = session.get(Attempt, attempt_id)
            assert attempt is not None
            attempt.status, attempt.external_id = "sent", external_id
            audit(session, now, "sent", attempt=attempt, detail={"external_id": external_id},
                  seconds=time.monotonic() - started)

    def _key(self, store: Store, attempt_id: int) -> str:
        with store.session() as session:
            attempt = session.get(Attempt, attempt_id)
            assert attempt is not None
            return attempt.idempotency_key

    def _expire(self, store: Store, now: datetime) -> None:
        """Approvals not given within `approval_ttl`: the attempt expires and the incident goes back to people."""
        ttl = self.config.approval_ttl
        if not ttl:
            return
        with store.session() as session:
            stale = session.scalars(
                select(Attempt).where(col(Attempt.status) == "pending_approval", col(Attempt.created_at) < now - ttl)
                .order_by(col(Attempt.id))
            ).all()
            for attempt in stale:
                reason = f"not approved within approval_ttl {ttl} (pending since {iso(attempt.created_at)})"
                attempt.status, attempt.message, attempt.finished_at = "expired", reason, now
                audit(session, now, "expired", attempt=attempt, detail={"approval_ttl_seconds": ttl.total_seconds()})
                self._escalate(session, attempt, now, reason)

    def _blocked(self, session: Session, now: datetime) -> str | None:
        state = breaker(session, now)
        if state.open:
            return f"circuit breaker open since {state.opened_at} after {state.consecutive_failures} failed attempts"
        spent = session.execute(
            select(func.count()).select_from(Attempt)
            .where(col(Attempt.sent_at) >= now - timedelta(hours=1), col(Attempt.status).in_(SPENT))
        ).scalar_one()
        if spent >= self.config.actions_per_hour:
            return f"budget of {self.config.actions_per_hour} actions per hour is spent"
        return None

    # -- follow ------------------------------------------------------------------------------------------------

    def _reconcile(self, store: Store, now: datetime) -> None:
        """Intents left by a process that died mid-call: adopt the call if it landed, else make it now."""
        with store.session() as session:
            pending = [(a.id, a.action, a.params_json, a.idempotency_key, a.sent_at)
                       for a in session.scalars(select(Attempt).where(col(Attempt.status) == "intent")).all()]
        for attempt_id, name, params_json, key, sent_at in pending:
            action, params, started = self.actions[name], json.loads(params_json), time.monotonic()
            try:
                found = action.reconcile(params, key)
            except Exception as exc:  # unknown whether the call landed: never call again blind; ask next pass
                log.warning("remediation.reconcile_failed", extra={"attempt": attempt_id, "error": str(exc)[:300]})
                if self._overdue(sent_at, now):  # a retry could act twice: the incident goes back to people
                    reason = (f"could not tell within verify_timeout {self.config.verify_timeout} whether the call "
                              f"landed (last error: {str(exc)[:300]}); not retried")
                    self._record_failure(store, int(attempt_id or 0), reason, now, None, retry=False)
                continue
            with store.session() as session:
                attempt = session.get(Attempt, attempt_id)
                assert attempt is not None
                audit(session, now, "reconciled", attempt=attempt, detail={"landed": found is not None,
                                                                           "external_id": found})
                if found is not None:
                    attempt.status, attempt.external_id = "sent", found
            if found is None:
                self._perform(store, action, int(attempt_id or 0), params, now, started)

    def _verify(self, store: Store, now: datetime) -> int:
        with store.session() as session:
            sent = [(a.id, a.action, a.params_json, a.external_id, a.sent_at)
                    for a in session.scalars(select(Attempt).where(col(Attempt.status) == "sent")).all()]
        resolved = 0
        for attempt_id, name, params_json, external_id, sent_at in sent:
            outcome = self._outcome(int(attempt_id or 0), self.actions[name], json.loads(params_json), str(external_id))
            if outcome.verdict == "running" and self._overdue(sent_at, now):
                # The call may still finish: a retry now could act twice, so people take it from here.
                message = (f"no outcome within verify_timeout {self.config.verify_timeout} of the call; "
                           f"last seen: {outcome.message}; not retried while it may still finish")
                self._record_failure(store, int(attempt_id or 0), message, now, None, retry=False)
            elif outcome.verdict == "succeeded":
                with store.session() as session:
                    self._succeeded(session, int(attempt_id or 0), outcome.message, now)
                resolved += 1
            elif outcome.verdict == "failed":
                self._record_failure(store, int(attempt_id or 0), outcome.message, now, None)
        return resolved

    def _outcome(self, attempt_id: int, action: Action, params: dict[str, Any], external_id: str) -> Outcome:
        try:
            return action.verify(params, external_id)
        except Exception as exc:  # the platform did not answer: still sent, asked again next pass (to verify_timeout)
            log.warning("remediation.verify_failed", extra={"attempt": attempt_id, "error": str(exc)[:300]})
            return Outcome("running", f"verify failed: {str(exc)[:300]}")

    def _succeeded(self, session: Session, attempt_id: int, message: str, now: datetime) -> None:
        attempt = session.get(Attempt, attempt_id)
        incident = session.get(IncidentRow, attempt.incident_id) if attempt else None
        if attempt is None or incident is None:
            return
        attempt.status, attempt.message, attempt.finished_at = "succeeded", message, now
        breaker(session, now).consecutive_failures = 0
        incident.resolved_at, incident.resolution = now, "remediated"
        touch(incident, now, "resolved")
        mttr = (now - incident.first_seen).total_seconds()
        audit(session, now, "succeeded", attempt=attempt,
              detail={"external_id": attempt.external_id, "message": message, "mttr_seconds": mttr})

    def _overdue(self, sent_at: datetime | None, now: datetime) -> bool:
        """Whether a call made at `sent_at` is past `verify_timeout` (0: never)."""
        timeout = self.config.verify_timeout
        return bool(timeout) and sent_at is not None and now - sent_at > timeout

    def _record_failure(self, store: Store, attempt_id: int, message: str, now: datetime,
                        seconds: float | None, *, retry: bool = True) -> None:
        with store.session() as session:
            attempt = session.get(Attempt, attempt_id)
            assert attempt is not None
            attempt.status, attempt.message, attempt.finished_at = "failed", message[:2000], now
            audit(session, now, "failed", attempt=attempt, detail={"message": message[:2000]}, seconds=seconds)
            self._trip(session, now)
            policy = next((p for p in self.policies if p.name == attempt.policy), None)
            if retry and policy is not None and attempt.attempt < policy.max_attempts:
                self._schedule_retry(session, attempt, policy, now)
            else:
                self._escalate(session, attempt, now, f"{attempt.attempt} attempt(s) failed; last: {message[:500]}")

    def _trip(self, session: Session, now: datetime) -> None:
        state = breaker(session, now)
        state.consecutive_failures += 1
        state.updated_at = now
        if not state.open and state.consecutive_failures >= self.config.circuit_breaker_after:
            state.open, state.opened_at = True, now
            audit(session, now, "breaker_opened", detail={"consecutive_failures": state.consecutive_failures})
            log.warning("remediation.breaker_opened", extra={"failures": state.consecutive_failures})

    def _schedule_retry(self, session: Session, failed: Attempt, policy: PolicyConfig, now: datetime) -> None:
        number = failed.attempt + 1
        retry = Attempt(incident_id=failed.incident_id, failure_key=failed.failure_key, policy=failed.policy,
                        action=failed.action, mode=failed.mode, resource_key=failed.resource_key,
                        error_code=failed.error_code, attempt=number, status="scheduled",
                        params_json=failed.params_json, idempotency_key=idempotency_key(failed.incident_id, number),
                        created_at=now, not_before=now + backoff(policy.backoff, failed.attempt, self.rand))
        session.add(retry)
        session.flush()
        audit(session, now, "retry_scheduled", attempt=retry, detail={"not_before": retry.not_before})

    def _escalate(self, session: Session, attempt: Attempt, now: datetime, reason: str) -> None:
        """Back to people: the incident reopens (its tickets update) and the reason is audited."""
        incident = session.get(IncidentRow, attempt.incident_id)
        if incident is not None and incident.status == "remediating":
            touch(incident, now, "open")
        audit(session, now, "escalated", attempt=attempt, detail={"reason": reason})
        log.warning("remediation.escalated", extra={"incident": attempt.incident_id, "reason": reason[:200]})
