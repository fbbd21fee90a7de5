"""A storm of 1,000 matching failures is stopped at the configured limits by the budget and the breaker."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from poller.emulators.databricks import DatabricksEmulator
from poller.incidents import ProcessContext, group_stage
from poller.rca import EvidenceLimits
from poller.remediation.engine import RemediationEngine
from poller.schema import RemediationAttemptRow, RemediationStateRow
from poller.store import Store
from tests.remediation.helpers import NOW, commit, dbx_actions, failed_run, failure, make_store, settings

STORM = 1000


@pytest.fixture
def emu() -> Iterator[DatabricksEmulator]:
    with DatabricksEmulator() as emulator:
        for i in range(STORM):
            failed_run(emulator, run_id=10_000 + 10 * i, job_id=11)
        yield emulator


@pytest.fixture
def store(tmp_path: Path, emu: DatabricksEmulator) -> Iterator[Store]:
    store = make_store(tmp_path)
    commit(store, [failure(key=f"databricks:run:{10_000 + 10 * i}:ingest", run_id=str(10_000 + 10 * i),
                           resource=f"job-{i}") for i in range(STORM)])
    group_stage(store, ProcessContext(NOW, timedelta(hours=6), timedelta(days=7), EvidenceLimits()))
    yield store
    store.close()


def statuses(store: Store) -> Counter[str]:
    with store.session() as session:
        return Counter(session.scalars(select(RemediationAttemptRow.status)).all())


def test_budget_caps_the_actions_sent_in_an_hour(emu: DatabricksEmulator, store: Store) -> None:
    engine = RemediationEngine(settings(actions_per_hour=25), dbx_actions(emu))
    engine.run(store, NOW)
    assert emu.count("/api/2.2/jobs/runs/repair", "POST") == 25
    assert statuses(store) == Counter({"sent": 25, "blocked": STORM - 25})
    assert len(store.incidents(status="open")) == STORM - 25  # the blocked go back to people


def test_breaker_opens_after_n_consecutive_failures_and_stops_everything(emu: DatabricksEmulator,
                                                                         store: Store) -> None:
    emu.inject(400, times=STORM, path_prefix="/api/2.2/jobs/runs/repair", message="repair refused")
    engine = RemediationEngine(settings(actions_per_hour=10_000, circuit_breaker_after=5, policies=[{
        "name": "one-shot", "action": "databricks_repair", "max_attempts": 1, "match": {"service": ["databricks"]}}]),
        dbx_actions(emu))
    engine.run(store, NOW)
    assert emu.count("/api/2.2/jobs/runs/repair", "POST") == 5
    assert statuses(store) == Counter({"failed": 5, "blocked": STORM - 5})
    with store.session() as session:
        breaker = session.get(RemediationStateRow, "breaker")
        assert breaker is not None and breaker.open and breaker.consecutive_failures == 5
