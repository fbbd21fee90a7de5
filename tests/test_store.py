"""The state store: insert-or-ignore by natural key, and all-or-nothing tick transactions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from poller.models import Failure
from poller.pipeline import process
from poller.store import SCHEMA_VERSION, CheckpointRow, FailureRow, QuarantineRow, SchemaVersionRow, Store

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def failure(n: int) -> Failure:
    return Failure(
        key=f"adf:activity:{n:08d}",
        service="adf",
        kind="activity_run",
        resource="pl_sales",
        error_message=f"boom {n}",
        error_code="SqlOperationFailed",
        occurred_at=NOW - timedelta(minutes=n),
        metadata={"activity_name": "Copy", "adf_error_code": "2200"},
        raw={"n": n},
    ).stamped("adf-prod", NOW)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path}/state.db")


def test_insert_or_ignore_counts_only_new(store: Store) -> None:
    with store.tick("adf-prod", NOW) as tx:
        assert tx.add_failures([failure(1), failure(2)]) == 2
        tx.advance(NOW, rows_read=2)
    with store.tick("adf-prod", NOW + timedelta(minutes=1)) as tx:
        assert tx.add_failures([failure(2), failure(3)]) == 1
        tx.advance(NOW + timedelta(minutes=1), rows_read=2)
    assert store.count(FailureRow) == 3
    checkpoint = store.checkpoint("adf-prod")
    assert checkpoint is not None
    assert checkpoint.cursor == NOW + timedelta(minutes=1)
    assert (checkpoint.rows_read, checkpoint.failures_added) == (4, 3)


def test_failed_transaction_commits_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError), store.tick("adf-prod", NOW) as tx:
        tx.add_failures([failure(1)])
        tx.quarantine({"bad": True}, "no run id")
        tx.advance(NOW, rows_read=2)
        raise RuntimeError("crash before commit")
    assert store.count(FailureRow) == 0
    assert store.count(QuarantineRow) == 0
    assert store.checkpoint("adf-prod") is None


def test_round_trip_keeps_fields_and_utc(store: Store) -> None:
    with store.tick("adf-prod", NOW) as tx:
        tx.add_failures([failure(7)])
    (got,) = store.failures()
    assert got.to_json(include_raw=True) == failure(7).to_json(include_raw=True)
    assert got.occurred_at.tzinfo is not None


def test_record_error_keeps_cursor(store: Store) -> None:
    with store.tick("adf-prod", NOW) as tx:
        tx.advance(NOW, rows_read=0)
    store.record_error("adf-prod", NOW + timedelta(minutes=5), "source 'adf-prod': HTTP 503")
    row = store.checkpoint("adf-prod")
    assert isinstance(row, CheckpointRow)
    assert row.cursor == NOW
    assert row.last_error == "source 'adf-prod': HTTP 503"
    assert row.last_success_at == NOW


def test_process_groups_every_failure_once_into_one_ticketed_incident(store: Store) -> None:
    with store.tick("adf-prod", NOW) as tx:
        tx.add_failures([failure(n) for n in range(1, 1201)])
    assert store.backlog() == 1200
    assert process(store, NOW) == 1200
    assert process(store, NOW) == 0
    (ticket,) = store.tickets()  # "boom <n>" differs only by a number: one cause, one incident, one ticket
    assert ticket.occurrences == 1200
    assert ticket.probable_cause
    assert store.backlog() == 0


def test_v1_state_file_migrates_to_incidents(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "v1.db"
    con = sqlite3.connect(db)
    con.executescript(V1_SCHEMA)
    con.commit()
    con.close()
    store = Store(f"sqlite:///{db}")
    assert store.backlog() == 1  # re-processed into an incident
    assert process(store, NOW) == 1
    (ticket,) = store.tickets()
    assert ticket.incident_id == store.incidents()[0].id
    assert {row.version for row in _versions(store)} == {1, SCHEMA_VERSION}
    with sqlite3.connect(db) as con:  # on to v3: the full indexes v2 added are partial ones now
        indexes = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'failures'")}
    assert indexes == {"failures", "sqlite_autoindex_failures_1", "ix_failures_unprocessed",
                       "ix_failures_pending_source", "ix_failures_incident"}


def _versions(store: Store) -> list[SchemaVersionRow]:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    with Session(store.engine) as session:
        return list(session.scalars(select(SchemaVersionRow)))


V1_SCHEMA = """
CREATE TABLE failures (id INTEGER PRIMARY KEY, key VARCHAR UNIQUE, source VARCHAR, service VARCHAR, kind VARCHAR,
  resource VARCHAR, resource_id VARCHAR, run_id VARCHAR, error_code VARCHAR, error_message VARCHAR,
  failure_type VARCHAR, occurred_at DATETIME, detected_at DATETIME, metadata_json VARCHAR, raw_json VARCHAR,
  processed_at DATETIME);
CREATE TABLE tickets (id INTEGER PRIMARY KEY, sink VARCHAR, failure_key VARCHAR UNIQUE, title VARCHAR,
  probable_cause VARCHAR, status VARCHAR, created_at DATETIME);
CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at DATETIME);
INSERT INTO schema_version VALUES (1, '2026-11-29 10:00:00');
INSERT INTO failures VALUES (1, 'adf:activity:a1', 'adf-prod', 'adf', 'activity_run', 'pl_sales', '', 'r1',
  'SqlOperationFailed', 'boom', 'UserError', '2026-11-29 10:00:00', '2026-11-29 10:05:00', '{}', '{}',
  '2026-11-29 10:05:00');
INSERT INTO tickets VALUES (1, 'local', 'adf:activity:a1', 't', 'c', 'open', '2026-11-29 10:05:00');
"""


def test_schema_version_is_stamped_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/v.db"
    Store(url).close()
    store = Store(url)
    assert store.count(SchemaVersionRow) == 1
