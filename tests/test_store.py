"""The state store: insert-or-ignore by natural key, and all-or-nothing tick transactions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from poller.models import Failure
from poller.pipeline import process
from poller.store import CheckpointRow, FailureRow, QuarantineRow, SchemaVersionRow, Store

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


def test_process_gives_one_ticket_per_failure_once(store: Store) -> None:
    with store.tick("adf-prod", NOW) as tx:
        tx.add_failures([failure(n) for n in range(1, 1201)])
    assert store.backlog() == 1200
    assert process(store, NOW) == 1200
    assert process(store, NOW) == 0
    tickets = store.tickets()
    assert len(tickets) == 1200
    assert tickets[0].probable_cause.startswith("A SQL statement failed")
    assert store.backlog() == 0


def test_schema_version_is_stamped_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/v.db"
    Store(url).close()
    store = Store(url)
    assert store.count(SchemaVersionRow) == 1
