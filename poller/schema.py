"""The tables of the state store, and the migrations between schema versions."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DDL, DateTime, Engine, Index, TypeDecorator, UniqueConstraint, event, inspect, text
from sqlmodel import Field, SQLModel

from poller.models import Failure

SCHEMA_VERSION = 3


class UTCDateTime(TypeDecorator[datetime]):
    """Times are stored as naive UTC and always read back timezone-aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None


def _time(**kw: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kw)


def _partial_index(name: str, column: str, where: str, *, sqlite_where: str | None = None) -> Index:
    """An index of only the rows ``where`` holds; a query uses it only if its own WHERE says the same."""
    return Index(name, column, sqlite_where=text(sqlite_where or where), postgresql_where=text(where))


class FailureRow(SQLModel, table=True):
    __tablename__ = "failures"
    # Every index but the key's is partial, over only the rows its lookup wants (not yet processed, waiting for
    # their error text, grouped): a new failure, ungrouped and rarely pending, goes into one of them, not four.
    # SQLAlchemy writes a boolean test on SQLite as `pending = 1`: the index says the same, or SQLite skips it.
    __table_args__ = (
        _partial_index("ix_failures_unprocessed", "detected_at", "processed_at IS NULL"),
        _partial_index("ix_failures_pending_source", "source", "pending", sqlite_where="pending = 1"),
        _partial_index("ix_failures_incident", "incident_id", "incident_id IS NOT NULL"),
    )
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True)
    source: str
    service: str
    kind: str
    resource: str
    resource_id: str
    run_id: str
    error_code: str
    error_message: str
    failure_type: str
    occurred_at: datetime = _time()
    detected_at: datetime = _time()
    metadata_json: str
    raw_json: str
    processed_at: datetime | None = _time(default=None, nullable=True)
    incident_id: int | None = Field(default=None, nullable=True)
    fingerprint: str | None = Field(default=None, nullable=True)
    # The source could not read the error text yet (metadata.error_pending); an enriched re-read replaces it.
    pending: bool = False

    def to_failure(self) -> Failure:
        return Failure(
            key=self.key, source=self.source, service=self.service, kind=self.kind, resource=self.resource,
            resource_id=self.resource_id, run_id=self.run_id, error_code=self.error_code,
            error_message=self.error_message, failure_type=self.failure_type, occurred_at=self.occurred_at,
            detected_at=self.detected_at, metadata=json.loads(self.metadata_json), raw=json.loads(self.raw_json),
        )


class QuarantineRow(SQLModel, table=True):
    """A record no rule could read, kept whole with the reason; re-reads of it are not stored twice."""

    __tablename__ = "quarantine"
    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(index=True)
    digest: str = Field(unique=True)
    reason: str
    raw_json: str
    detected_at: datetime = _time()


class CheckpointRow(SQLModel, table=True):
    """Per source (and per backfill job): where reading resumes, and how the last tick went."""

    __tablename__ = "checkpoints"
    name: str = Field(primary_key=True)
    cursor: datetime | None = _time(default=None, nullable=True)
    last_tick_at: datetime | None = _time(default=None, nullable=True)
    last_success_at: datetime | None = _time(default=None, nullable=True)
    last_error: str | None = None
    last_error_at: datetime | None = _time(default=None, nullable=True)
    rows_read: int = 0
    failures_added: int = 0
    quarantined: int = 0


class IncidentRow(SQLModel, table=True):
    """Failures grouped by fingerprint while open; explained once; resolved after a quiet period."""

    __tablename__ = "incidents"
    id: int | None = Field(default=None, primary_key=True)
    fingerprint: str = Field(index=True)
    service: str
    resource: str
    error_code: str
    kind: str
    title: str
    template: str
    replaced_json: str = "[]"
    status: str = Field(default="open", index=True)  # open | remediating | resolved
    occurrences: int = 0
    first_seen: datetime = _time()
    last_seen: datetime = _time()
    resolved_at: datetime | None = _time(default=None, nullable=True)
    resolution: str | None = None
    previous_id: int | None = None
    rca_status: str = Field(default="pending", index=True)  # pending | done
    rca_json: str | None = None
    rca_at: datetime | None = _time(default=None, nullable=True)
    version: int = 1  # bumped on every change a ticket must show
    created_at: datetime = _time()
    updated_at: datetime = _time()

    def rca(self) -> dict[str, Any] | None:
        return json.loads(self.rca_json) if self.rca_json else None


class RcaCallRow(SQLModel, table=True):
    """One attempted LLM call: what it cost, and why it fell back when it did."""

    __tablename__ = "rca_calls"
    id: int | None = Field(default=None, primary_key=True)
    incident_id: int = Field(index=True)
    provider: str
    model: str | None = None
    status: str
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    seconds: float = 0.0
    at: datetime = _time(index=True)


class RcaCacheRow(SQLModel, table=True):
    """The last good analysis per fingerprint, reused by a recurrence within the cache TTL."""

    __tablename__ = "rca_cache"
    fingerprint: str = Field(primary_key=True)
    rca_json: str
    created_at: datetime = _time()


class TicketRow(SQLModel, table=True):
    """The local sink: one ticket per incident, kept in step with the incident's occurrences and RCA."""

    __tablename__ = "tickets"
    id: int | None = Field(default=None, primary_key=True)
    sink: str = "local"
    incident_id: int = Field(unique=True)
    title: str
    status: str = "open"
    occurrences: int = 0
    summary: str = ""
    probable_cause: str = ""
    recommended_actions_json: str = "[]"
    incident_version: int = 0
    created_at: datetime = _time()
    updated_at: datetime = _time()


class OutboxRow(SQLModel, table=True):
    """One delivery owed to an external sink: an incident's state change (open, update, resolve), sent in order."""

    __tablename__ = "outbox"
    id: int | None = Field(default=None, primary_key=True)
    sink: str = Field(index=True)
    incident_id: int = Field(index=True)
    action: str  # open | update | resolve
    incident_version: int = 0
    state: str = ""  # the incident's status/rca state when enqueued: a repeat of the same state waits repeat_interval
    payload_json: str = "{}"
    status: str = Field(default="pending", index=True)  # pending | sent | failed_permanent | skipped
    attempts: int = 0
    next_attempt_at: datetime | None = _time(default=None, nullable=True)
    last_error: str | None = None
    result: str | None = None  # the TicketAction the sink performed
    created_at: datetime = _time()
    sent_at: datetime | None = _time(default=None, nullable=True)


class SinkTicketRow(SQLModel, table=True):
    """An incident's ticket in an external sink, written only after the remote call succeeded."""

    __tablename__ = "sink_tickets"
    __table_args__ = (UniqueConstraint("sink", "incident_id"),)
    id: int | None = Field(default=None, primary_key=True)
    sink: str = Field(index=True)
    incident_id: int = Field(index=True)
    remote_id: str | None = None
    url: str | None = None
    last_action: str = ""
    last_version: int = 0
    updated_at: datetime = _time()


class SchemaVersionRow(SQLModel, table=True):
    __tablename__ = "schema_version"
    version: int = Field(primary_key=True)
    applied_at: datetime = _time()




def migrate(engine: Engine) -> None:
    """Bring an older state file to SCHEMA_VERSION, then create whatever tables are missing."""
    tables = set(inspect(engine).get_table_names())
    with engine.begin() as conn:
        versions = (
            {row[0] for row in conn.execute(text("SELECT version FROM schema_version"))}
            if "schema_version" in tables else set()
        )
        if versions and max(versions) < 2:
            _v1_to_v2(conn)
        if versions and max(versions) < 3:
            _v2_to_v3(conn)
    SQLModel.metadata.create_all(engine)


def _v1_to_v2(conn: Any) -> None:
    # v1 kept one provisional local ticket per failure; v2 groups failures into incidents, so the old tickets
    # go and every failure is processed again into its incident.
    conn.execute(text("ALTER TABLE failures ADD COLUMN incident_id INTEGER"))
    conn.execute(text("ALTER TABLE failures ADD COLUMN fingerprint VARCHAR"))
    conn.execute(text("ALTER TABLE failures ADD COLUMN pending BOOLEAN NOT NULL DEFAULT 0"))
    conn.execute(text("CREATE INDEX ix_failures_incident_id ON failures (incident_id)"))
    conn.execute(text("CREATE INDEX ix_failures_pending ON failures (pending)"))
    conn.execute(text("DROP TABLE IF EXISTS tickets"))
    conn.execute(text("UPDATE failures SET processed_at = NULL"))


def _v2_to_v3(conn: Any) -> None:
    # v3 keeps only partial indexes beside the key's (see FailureRow); the full ones of v2 go.
    for name in ("ix_failures_source", "ix_failures_processed_at", "ix_failures_incident_id", "ix_failures_pending"):
        conn.execute(text(f"DROP INDEX IF EXISTS {name}"))
    for index in FailureRow.__table__.indexes:  # type: ignore[attr-defined]
        index.create(conn, checkfirst=True)


# -- remediation (issue 7) ------------------------------------------------------------------------------------


class RemediationAttemptRow(SQLModel, table=True):
    """One remediation attempt; its intent is committed before the vendor call, its external id after."""

    __tablename__ = "remediation_attempts"
    id: int | None = Field(default=None, primary_key=True)
    incident_id: int = Field(index=True)
    failure_key: str
    policy: str
    action: str
    mode: str
    resource_key: str = Field(index=True)  # what once_within counts per: the failure's resource_id
    error_code: str = ""
    attempt: int = 1
    # scheduled | pending_approval | approved | intent | sent | succeeded | failed | dry_run | rejected | expired |
    # blocked
    status: str = Field(index=True)
    params_json: str = "{}"
    idempotency_key: str = Field(unique=True)
    external_id: str | None = None  # the new run, repair or cluster id
    message: str | None = None
    created_at: datetime = _time()
    not_before: datetime = _time()
    sent_at: datetime | None = _time(default=None, nullable=True, index=True)
    finished_at: datetime | None = _time(default=None, nullable=True)


class RemediationAuditRow(SQLModel, table=True):
    """Append-only: every remediation decision and outcome, with the rule and parameters behind it."""

    __tablename__ = "remediation_audit"
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _time(index=True)
    incident_id: int | None = Field(default=None, nullable=True, index=True)
    attempt_id: int | None = Field(default=None, nullable=True)
    event: str = Field(index=True)
    policy: str | None = None
    action: str | None = None
    mode: str = ""
    detail_json: str = "{}"
    seconds: float | None = None


class RemediationStateRow(SQLModel, table=True):
    """Global guard state: the circuit breaker (name ``breaker``)."""

    __tablename__ = "remediation_state"
    name: str = Field(primary_key=True)
    consecutive_failures: int = 0
    open: bool = False
    opened_at: datetime | None = _time(default=None, nullable=True)
    updated_at: datetime = _time()


_APPEND_ONLY = ("CREATE TRIGGER IF NOT EXISTS remediation_audit_no_{verb} BEFORE {verb} ON remediation_audit "
                "BEGIN SELECT RAISE(ABORT, 'remediation_audit is append-only'); END")
for _verb in ("UPDATE", "DELETE"):
    _ddl = DDL(_APPEND_ONLY.format(verb=_verb))  # type: ignore[no-untyped-call]
    event.listen(RemediationAuditRow.__table__, "after_create", _ddl.execute_if(dialect="sqlite"))  # type: ignore[attr-defined]
