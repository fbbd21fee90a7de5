"""The failures indexes of schema v3: partial, used by the lookups that need them, and migrated in from v2."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlmodel import col

from poller.models import Failure
from poller.store import SCHEMA_VERSION, FailureRow, SchemaVersionRow, Store, pending_failures

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
V3_INDEXES = {
    name: f"CREATE INDEX {name} ON failures ({column}) WHERE {where}"
    for name, column, where in [
        ("ix_failures_unprocessed", "detected_at", "processed_at IS NULL"),
        ("ix_failures_pending_source", "source", "pending = 1"),
        ("ix_failures_incident", "incident_id", "incident_id IS NOT NULL"),
    ]
}
V2_INDEXES = {"ix_failures_source", "ix_failures_processed_at", "ix_failures_incident_id", "ix_failures_pending"}


def failure(key: str, source: str = "adf-prod", *, pending: bool = False) -> Failure:
    return Failure(
        key=key, service="synapse", kind="activity_run", resource="pl_sales", error_message=f"boom {key}",
        occurred_at=NOW - timedelta(minutes=5), metadata={"error_pending": True} if pending else {}, raw={"k": key},
    ).stamped(source, NOW)


def failures_indexes(db: Path) -> dict[str, str]:
    """Name → CREATE statement of the failures table's own indexes (not the key's automatic one)."""
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'failures' "
                           "AND sql IS NOT NULL").fetchall()
    return dict(rows)


def test_a_new_store_has_the_partial_indexes_only(tmp_path: Path) -> None:
    Store(f"sqlite:///{tmp_path}/state.db").close()
    assert failures_indexes(tmp_path / "state.db") == V3_INDEXES


@contextmanager
def failure_selects(store: Store) -> Iterator[list[tuple[str, Any]]]:
    """Every SELECT on failures the store runs meanwhile, with its parameters, as SQLite received it."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if statement.lstrip().startswith("SELECT") and "FROM failures" in statement:
            seen.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(store.engine, "before_cursor_execute", record)


def plan(store: Store, statement: str, parameters: Any) -> str:
    with store.engine.connect() as conn:
        return " | ".join(row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters))


def grouped(store: Store, incident_id: int) -> list[str]:
    """The keys of an incident's failures, looked up as the incident, ticket and remediation code do."""
    with store.session() as session:
        query = select(FailureRow).where(col(FailureRow.incident_id) == incident_id)
        return [row.key for row in session.scalars(query.order_by(col(FailureRow.occurred_at).desc()))]


@pytest.mark.parametrize(
    ("lookup", "index"),
    [
        ("enrichment_pending", "SEARCH failures USING INDEX ix_failures_pending_source (source=?)"),
        ("any_pending", "SCAN failures USING INDEX ix_failures_pending_source"),
        ("pending_failures", "SCAN failures USING INDEX ix_failures_unprocessed"),
        ("backlog", "SCAN failures USING INDEX ix_failures_unprocessed"),
        ("incident", "SEARCH failures USING INDEX ix_failures_incident (incident_id=?)"),
    ],
)
def test_each_lookup_reads_its_partial_index(tmp_path: Path, lookup: str, index: str) -> None:
    store = Store(f"sqlite:///{tmp_path}/state.db")
    with store.tick("synapse-prod", NOW) as tx:
        tx.add_failures([failure("a", "synapse-prod", pending=True)])
    with failure_selects(store) as seen:
        if lookup == "enrichment_pending":
            store.enrichment_pending("synapse-prod")
        elif lookup == "any_pending":
            with store.tick("synapse-prod", NOW) as tx:
                tx.add_failures([failure("b", "synapse-prod")])
        elif lookup == "pending_failures":
            with store.session() as session:
                pending_failures(session, 500, NOW)
        elif lookup == "backlog":
            store.backlog("synapse-prod")
        else:
            grouped(store, 1)
    assert any(index in plan(store, statement, parameters) for statement, parameters in seen), seen


V2_SCHEMA = """
CREATE TABLE failures (id INTEGER NOT NULL, "key" VARCHAR NOT NULL, source VARCHAR NOT NULL,
  service VARCHAR NOT NULL, kind VARCHAR NOT NULL, resource VARCHAR NOT NULL, resource_id VARCHAR NOT NULL,
  run_id VARCHAR NOT NULL, error_code VARCHAR NOT NULL, error_message VARCHAR NOT NULL,
  failure_type VARCHAR NOT NULL, occurred_at DATETIME NOT NULL, detected_at DATETIME NOT NULL,
  metadata_json VARCHAR NOT NULL, raw_json VARCHAR NOT NULL, processed_at DATETIME, incident_id INTEGER,
  fingerprint VARCHAR, pending BOOLEAN NOT NULL, PRIMARY KEY (id), UNIQUE ("key"));
CREATE INDEX ix_failures_source ON failures (source);
CREATE INDEX ix_failures_pending ON failures (pending);
CREATE INDEX ix_failures_incident_id ON failures (incident_id);
CREATE INDEX ix_failures_processed_at ON failures (processed_at);
CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at DATETIME NOT NULL, PRIMARY KEY (version));
INSERT INTO schema_version VALUES (2, '2026-11-28 10:00:00.000000');
INSERT INTO failures VALUES
  (1, 'adf:activity:grouped', 'adf-prod', 'adf', 'activity_run', 'pl_sales', '', 'r1', '2200', 'boom', 'UserError',
   '2026-11-29 10:00:00.000000', '2026-11-29 10:05:00.000000', '{}', '{"n":1}', '2026-11-29 10:06:00.000000', 7,
   'fp1', 0),
  (2, 'adf:activity:waiting', 'adf-prod', 'adf', 'activity_run', 'pl_sales', '', 'r2', '2200', 'boom', 'UserError',
   '2026-11-29 11:00:00.000000', '2026-11-29 11:05:00.000000', '{}', '{"n":2}', NULL, NULL, NULL, 0),
  (3, 'synapse:activity:pending', 'synapse-prod', 'synapse', 'activity_run', 'pl_nb', '', 'r3', '', 'pending', '',
   '2026-11-29 11:50:00.000000', '2026-11-29 11:55:00.000000', '{"error_pending":true}', '{"n":3}', NULL, NULL,
   NULL, 1);
"""


@pytest.fixture
def v2_store(tmp_path: Path) -> Store:
    db = tmp_path / "v2.db"
    with sqlite3.connect(db) as con:
        con.executescript(V2_SCHEMA)
    con.close()
    return Store(f"sqlite:///{db}")


def test_a_v2_state_file_trades_its_full_indexes_for_the_partial_ones(v2_store: Store, tmp_path: Path) -> None:
    indexes = failures_indexes(tmp_path / "v2.db")
    assert indexes == V3_INDEXES
    assert not V2_INDEXES & set(indexes)
    with v2_store.session() as session:
        assert {row.version for row in session.scalars(select(SchemaVersionRow))} == {2, SCHEMA_VERSION}


def test_a_migrated_v2_file_keeps_its_rows_and_answers_as_before(v2_store: Store) -> None:
    assert [f.key for f in v2_store.failures()] == [
        "synapse:activity:pending", "adf:activity:waiting", "adf:activity:grouped",
    ]
    assert [f.key for f in v2_store.enrichment_pending("synapse-prod")] == ["synapse:activity:pending"]
    assert v2_store.enrichment_pending("adf-prod") == []
    assert (v2_store.backlog(), v2_store.backlog("adf-prod"), v2_store.backlog("synapse-prod")) == (2, 1, 1)
    assert grouped(v2_store, 7) == ["adf:activity:grouped"]
    with v2_store.session() as session:
        # The pending one waits PENDING_HOLD after it was detected, then is grouped as it is.
        assert [row.key for row in pending_failures(session, 10, NOW)] == ["adf:activity:waiting"]
        later = NOW + timedelta(hours=1)
        assert [row.key for row in pending_failures(session, 10, later)] == [
            "adf:activity:waiting", "synapse:activity:pending",
        ]


def test_the_enriched_re_read_replaces_a_pending_failure_of_a_migrated_file(v2_store: Store) -> None:
    enriched = Failure(
        key="synapse:activity:pending", service="synapse", kind="activity_run", resource="pl_nb",
        error_message="Notebook failed: KeyError 'id'", error_code="6002", occurred_at=NOW,
    ).stamped("synapse-prod", NOW)
    with v2_store.tick("synapse-prod", NOW) as tx:
        assert tx.add_failures([enriched]) == 0
    assert v2_store.enrichment_pending("synapse-prod") == []
    with v2_store.session() as session:
        row = session.scalars(select(FailureRow).where(col(FailureRow.key) == enriched.key)).one()
        assert (row.error_code, row.error_message, row.pending) == ("6002", "Notebook failed: KeyError 'id'", False)
