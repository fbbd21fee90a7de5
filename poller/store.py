"""The state store: schema, and the one transactional commit of a tick (DESIGN §2, STYLE 7)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from sqlmodel import SQLModel, col

from poller.errors import StoreError
from poller.models import Failure, dumps
from poller.schema import (
    SCHEMA_VERSION,
    CheckpointRow,
    FailureRow,
    IncidentRow,
    QuarantineRow,
    RcaCacheRow,
    RcaCallRow,
    SchemaVersionRow,
    TicketRow,
    migrate,
)

__all__ = [
    "SCHEMA_VERSION",
    "CheckpointRow",
    "FailureRow",
    "IncidentRow",
    "QuarantineRow",
    "RcaCacheRow",
    "RcaCallRow",
    "SchemaVersionRow",
    "Store",
    "TickTransaction",
    "TicketRow",
]

@dataclass(frozen=True, slots=True)
class TickStats:
    rows_read: int
    failures_added: int
    quarantined: int


class TickTransaction:
    """Everything one tick writes; committed together by ``Store.tick`` or not at all."""

    def __init__(self, session: Session, source: str, now: datetime) -> None:
        self._session = session
        self._source = source
        self._now = now
        self.added = 0
        self.quarantined = 0

    def add_failures(self, failures: Sequence[Failure]) -> int:
        """Insert-or-ignore by natural key; returns how many were new."""
        if not failures:
            return 0
        rows = [_failure_values(f) for f in failures]
        before = self._max_id()
        _execute_many(self._session, _insert_ignore(self._session, FailureRow, ["key"]), rows)
        added = int(
            self._session.execute(select(func.count()).where(col(FailureRow.id) > before)).scalar_one()
        )
        self.added += added
        self._replace_pending({row["key"]: row for row in rows if not row["pending"]})
        return added

    def _replace_pending(self, enriched: dict[str, dict[str, Any]]) -> None:
        """A stored failure whose error text was pending takes the fields of its enriched re-read."""
        any_pending = select(col(FailureRow.id)).where(col(FailureRow.pending)).limit(1)
        if not enriched or self._session.scalar(any_pending) is None:
            return  # nothing waits (the usual case): no lookup of every key
        waiting = self._session.scalars(
            select(FailureRow).where(col(FailureRow.pending), col(FailureRow.key).in_(list(enriched)))
        ).all()
        for row in waiting:
            values = enriched[row.key]
            for name in ("error_code", "error_message", "failure_type", "metadata_json", "raw_json"):
                setattr(row, name, values[name])
            row.pending = False

    def quarantine(self, raw: Any, reason: str) -> bool:
        """Keep an unreadable record with its reason; False if this very record is already kept."""
        raw_json = dumps(raw)
        digest = hashlib.sha256(f"{self._source}\0{raw_json}".encode()).hexdigest()
        before = self._session.execute(select(func.count()).select_from(QuarantineRow)).scalar_one()
        self._session.execute(
            _insert_ignore(self._session, QuarantineRow, ["digest"]),
            [{"source": self._source, "digest": digest, "reason": reason[:2000], "raw_json": raw_json,
              "detected_at": self._now}],
        )
        added = self._session.execute(select(func.count()).select_from(QuarantineRow)).scalar_one() > before
        self.quarantined += int(added)
        return bool(added)

    def advance(self, cursor: datetime | None, rows_read: int, warning: str | None = None) -> None:
        """Move the cursor (None keeps it) and record a successful tick, with any soft error it met."""
        row = self._session.get(CheckpointRow, self._source) or CheckpointRow(name=self._source)
        if cursor is not None:
            row.cursor = cursor
        row.last_tick_at = self._now
        row.last_success_at = self._now
        row.rows_read += rows_read
        row.failures_added += self.added
        row.quarantined += self.quarantined
        if warning:
            row.last_error, row.last_error_at = warning[:2000], self._now
        self._session.add(row)

    def _max_id(self) -> int:
        # The tick holds the write lock, so rows above this id are exactly the ones this insert added
        # (portable, unlike SQLite's changes()).
        return int(self._session.execute(select(func.max(FailureRow.id))).scalar() or 0)


class Store:
    """The engine and schema of the state store, and the transactions every stage writes through."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _engine(url)
        try:
            migrate(self.engine)
            self._stamp_version()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open state store {url}: {exc.__class__.__name__}: {exc}") from exc

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def tick(self, source: str, now: datetime) -> Iterator[TickTransaction]:
        """One transaction: failures, quarantine rows and the cursor commit together, or nothing does."""
        with Session(self.engine) as session, session.begin():
            yield TickTransaction(session, source, now)

    def record_error(self, name: str, now: datetime, message: str) -> None:
        """A failed tick: note the error, leave the cursor where it was."""
        with Session(self.engine) as session, session.begin():
            row = session.get(CheckpointRow, name) or CheckpointRow(name=name)
            row.last_tick_at = now
            row.last_error = message[:2000]
            row.last_error_at = now
            session.add(row)

    def checkpoint(self, name: str) -> CheckpointRow | None:
        with Session(self.engine) as session:
            row = session.get(CheckpointRow, name)
            if row is not None:
                session.expunge(row)
            return row

    def checkpoints(self) -> list[CheckpointRow]:
        with Session(self.engine) as session:
            return list(session.scalars(select(CheckpointRow).order_by(col(CheckpointRow.name))))

    def failures(self, *, limit: int | None = None, source: str | None = None) -> list[Failure]:
        query = select(FailureRow).order_by(col(FailureRow.occurred_at).desc(), col(FailureRow.id).desc())
        if source:
            query = query.where(col(FailureRow.source) == source)
        if limit:
            query = query.limit(limit)
        with Session(self.engine) as session:
            return [row.to_failure() for row in session.scalars(query)]

    def count(self, model: type[SQLModel]) -> int:
        with Session(self.engine) as session:
            return int(session.execute(select(func.count()).select_from(model)).scalar_one())

    def backlog(self, source: str | None = None) -> int:
        query = select(func.count()).select_from(FailureRow).where(col(FailureRow.processed_at).is_(None))
        if source:
            query = query.where(col(FailureRow.source) == source)
        with Session(self.engine) as session:
            return int(session.execute(query).scalar_one())

    def tickets(self) -> list[TicketRow]:
        with Session(self.engine) as session:
            rows = list(session.scalars(select(TicketRow).order_by(col(TicketRow.id))))
            session.expunge_all()
            return rows

    def incidents(self, *, status: str | None = None, limit: int | None = None) -> list[IncidentRow]:
        query = select(IncidentRow).order_by(col(IncidentRow.last_seen).desc(), col(IncidentRow.id).desc())
        if status:
            query = query.where(col(IncidentRow.status) == status)
        if limit:
            query = query.limit(limit)
        with Session(self.engine) as session:
            rows = list(session.scalars(query))
            session.expunge_all()
            return rows

    def incident(self, incident_id: int) -> tuple[IncidentRow, list[Failure], list[TicketRow], list[RcaCallRow]] | None:
        """One incident with its failures (newest first), tickets and LLM calls."""
        with Session(self.engine) as session:
            incident = session.get(IncidentRow, incident_id)
            if incident is None:
                return None
            failures = [row.to_failure() for row in session.scalars(
                select(FailureRow).where(col(FailureRow.incident_id) == incident_id)
                .order_by(col(FailureRow.occurred_at).desc()))]
            tickets = list(session.scalars(select(TicketRow).where(col(TicketRow.incident_id) == incident_id)))
            calls = list(session.scalars(select(RcaCallRow).where(col(RcaCallRow.incident_id) == incident_id)))
            session.expunge_all()
            return incident, failures, tickets, calls

    def enrichment_pending(self, source: str) -> list[Failure]:
        """Failures of a source whose error text is still to be fetched (to resume after a restart)."""
        with Session(self.engine) as session:
            rows = session.scalars(
                select(FailureRow).where(col(FailureRow.source) == source, col(FailureRow.pending))
            )
            return [row.to_failure() for row in rows]

    def quarantined(self) -> list[QuarantineRow]:
        with Session(self.engine) as session:
            rows = list(session.scalars(select(QuarantineRow).order_by(col(QuarantineRow.id))))
            session.expunge_all()
            return rows

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction for a processing stage; commits on success."""
        with Session(self.engine) as session, session.begin():
            yield session

    def _stamp_version(self) -> None:
        with Session(self.engine) as session, session.begin():
            if session.get(SchemaVersionRow, SCHEMA_VERSION) is None:
                session.add(SchemaVersionRow(version=SCHEMA_VERSION, applied_at=datetime.now(UTC)))


# How long a failure whose error text is still being fetched waits before it is grouped as it is.
PENDING_HOLD = timedelta(hours=1)


def pending_failures(session: Session, limit: int, now: datetime | None = None) -> list[FailureRow]:
    """Failures no processing stage has finished with, oldest first (enrichment-pending ones wait a while)."""
    query = (
        select(FailureRow)
        .where(col(FailureRow.processed_at).is_(None))
        .where(~col(FailureRow.pending) | (col(FailureRow.detected_at) < (now or datetime.max.replace(tzinfo=UTC))
                                            - PENDING_HOLD))
        .order_by(col(FailureRow.detected_at), col(FailureRow.id))
        .limit(limit)
    )
    return list(session.scalars(query))


def _failure_values(f: Failure) -> dict[str, Any]:
    return {
        "key": f.key, "source": f.source, "service": f.service, "kind": f.kind, "resource": f.resource,
        "resource_id": f.resource_id, "run_id": f.run_id, "error_code": f.error_code,
        "error_message": f.error_message, "failure_type": f.failure_type, "occurred_at": f.occurred_at,
        "detected_at": f.detected_at, "metadata_json": f.metadata_json(), "raw_json": f.raw_json(),
        "pending": bool(f.metadata.get("error_pending")),
    }


def _insert_ignore(session: Session, model: type[SQLModel], keys: list[str]) -> Any:
    dialect = session.get_bind().dialect.name
    maker = pg_insert if dialect == "postgresql" else sqlite_insert
    # The Core table, not the ORM class: ORM bulk inserts cost more than the SQL itself at 10k rows/s.
    return maker(model.__table__).on_conflict_do_nothing(index_elements=keys)  # type: ignore[attr-defined]


def _execute_many(session: Session, stmt: Any, rows: list[dict[str, Any]]) -> None:
    """``stmt`` for every row, as one DB-API ``executemany`` in the session's transaction.

    ``session.execute(stmt, rows)`` builds and processes the parameters row by row in Python, which costs about as
    much as SQLite's own insert at 10k rows/s; here they are built a column at a time.
    """
    connection = session.connection()
    compiled = stmt.compile(dialect=connection.dialect, column_keys=list(rows[0]))
    columns = stmt.table.c
    processors = {name: columns[name].type.bind_processor(connection.dialect) for name in rows[0]}
    names = list(compiled.positiontup or ()) if compiled.positional else list(rows[0])
    values = [_bound([row[name] for row in rows], processors[name]) for name in names]
    by_row = zip(*values, strict=True)
    params = list(by_row) if compiled.positional else [dict(zip(names, row, strict=True)) for row in by_row]
    connection.exec_driver_sql(str(compiled), params)


def _bound(values: list[Any], processor: Callable[[Any], Any] | None) -> list[Any]:
    """One column's values through its bind processor; a value that is the previous one is not processed again."""
    if processor is None:
        return values
    # A tick's failures share one detected_at object (and pending is one of two bools): ~0.6 µs a datetime saved.
    out: list[Any] = []
    last: Any = _NOTHING
    done: Any = None
    for value in values:
        if value is not last:
            last, done = value, processor(value)
        out.append(done)
    return out


_NOTHING = object()


def _engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            path = str(Path(path).expanduser())  # SQLite itself does not expand "~"
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{path}"
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # A stored failure is ~3 KB (its raw row and metadata): on the default 4 KB pages nearly every row needs a page
    # of its own. 32 KB pages insert ~1.5x faster. It only applies to a new file (before WAL is on); others keep theirs.
    cursor.execute("PRAGMA page_size=32768")
    # WAL lets `status` and `list` read while a tick writes. NORMAL survives a killed process; a power cut
    # may roll back the last ticks, data and cursor together, so the next tick simply re-reads them.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
