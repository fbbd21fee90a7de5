"""A process killed mid-action never performs it twice: the intent is found on restart and reconciled."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from poller.emulators.databricks import DatabricksEmulator
from poller.schema import RemediationAttemptRow, RemediationAuditRow
from tests.remediation.helpers import (
    NOW,
    TICK,
    commit,
    dbx_actions,
    failed_run,
    failure,
    make_store,
    processor,
    settings,
)

CHILD = Path(__file__).with_name("crash_child.py")


@pytest.fixture
def emu() -> Iterator[DatabricksEmulator]:
    with DatabricksEmulator() as emulator:
        failed_run(emulator)
        emulator.add_cluster({"cluster_id": "c-1", "cluster_name": "shared", "state": "TERMINATED"})
        yield emulator


@pytest.mark.parametrize(("action", "path", "item"), [
    ("databricks_repair", "/api/2.2/jobs/runs/repair", failure()),
    ("databricks_cluster_start", "/api/2.1/clusters/start",
     failure(kind="cluster_event", resource_id="c-1", run_id="", key="databricks:cluster:c-1:1")),
])
def test_sigkill_after_the_call_then_restart_sends_exactly_one(emu: DatabricksEmulator, tmp_path: Path,
                                                               action: str, path: str, item: object) -> None:
    store = make_store(tmp_path)
    commit(store, [item])  # type: ignore[list-item]
    child = subprocess.run([sys.executable, str(CHILD), f"{tmp_path}/state.db", emu.url, emu.token, action],
                           capture_output=True, timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    with store.session() as session:
        assert session.scalars(select(RemediationAttemptRow.status)).one() == "intent"
    policy = {"name": "crash", "action": action, "match": {"service": ["databricks"]}}
    proc = processor(settings(policies=[policy]), dbx_actions(emu))
    proc.run(store, NOW + TICK)  # restart: reconcile finds the call landed, and adopts it
    proc.run(store, NOW + 2 * TICK)
    assert emu.count(path, "POST") == 1
    with store.session() as session:
        attempt = session.scalars(select(RemediationAttemptRow)).one()
        assert attempt.status == "succeeded" and attempt.external_id
        landed = session.scalars(select(RemediationAuditRow.detail_json)
                                 .where(RemediationAuditRow.event == "reconciled")).one()
        assert '"landed":true' in landed
    assert store.incidents()[0].resolution == "remediated"
    store.close()


def test_killed_before_the_call_makes_it_once_on_restart(emu: DatabricksEmulator, tmp_path: Path) -> None:
    """An intent whose call never left (killed between commit and call) is performed by the next pass."""
    store = make_store(tmp_path)
    commit(store, [failure()])
    actions = dbx_actions(emu)
    proc = processor(settings(), actions)

    class DiesBeforeCall:
        name = "databricks_repair"

        def __getattr__(self, name: str) -> object:
            return getattr(actions["databricks_repair"], name)

        def perform(self, params: object, key: str) -> str:
            raise KeyboardInterrupt  # stands in for the kill: not an Exception, so nothing records a result

    with pytest.raises(KeyboardInterrupt):
        processor(settings(), {"databricks_repair": DiesBeforeCall()}).run(store, NOW)  # type: ignore[dict-item]
    assert emu.count("/api/2.2/jobs/runs/repair", "POST") == 0
    proc.run(store, NOW + TICK)
    proc.run(store, NOW + 2 * TICK)
    assert emu.count("/api/2.2/jobs/runs/repair", "POST") == 1
    assert store.incidents()[0].resolution == "remediated"
    store.close()
