"""A process killed mid-action never performs it twice: the intent is found on restart and reconciled."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from poller.emulators.databricks import DatabricksEmulator
from poller.remediation.actions.base import Json
from poller.remediation.config import RemediationConfig
from poller.schema import RemediationAttemptRow, RemediationAuditRow
from tests.remediation.helpers import (
    LIBRARY_FALLBACKS,
    NOW,
    TICK,
    clock,
    commit,
    dbx_actions,
    failed_library,
    failed_run,
    failure,
    library_statuses,
    make_store,
    processor,
    sdk_client,
    settings,
)

CHILD = Path(__file__).with_name("crash_child.py")


REPAIR, RUN_NOW, START = "/api/2.2/jobs/runs/repair", "/api/2.2/jobs/run-now", "/api/2.1/clusters/start"
UNINSTALL, INSTALL, RESTART = "/api/2.0/libraries/uninstall", "/api/2.0/libraries/install", "/api/2.1/clusters/restart"


@pytest.fixture
def emu() -> Iterator[DatabricksEmulator]:
    with DatabricksEmulator() as emulator:
        clock(emulator)
        failed_run(emulator)
        emulator.add_cluster({"cluster_id": "c-1", "cluster_name": "shared", "state": "TERMINATED"})
        yield emulator


def crash_settings(action: str) -> RemediationConfig:
    policy = {"name": "crash", "action": action, "match": {"service": ["databricks"]}}
    return settings(policies=[policy], library_fallbacks=LIBRARY_FALLBACKS)


@pytest.mark.parametrize(("action", "paths"), [
    ("databricks_repair", [REPAIR]),
    ("databricks_cluster_start", [START]),
    ("databricks_run_now", [RUN_NOW]),
    ("databricks_library_reinstall", [UNINSTALL, INSTALL, RESTART]),
])
def test_sigkill_after_the_call_then_restart_sends_exactly_one(emu: DatabricksEmulator, tmp_path: Path,
                                                               action: str, paths: list[str]) -> None:
    items = {"databricks_cluster_start": lambda: failure(kind="cluster_event", resource_id="c-1", run_id="",
                                                          key="databricks:cluster:c-1:1"),
             "databricks_library_reinstall": lambda: failed_library(emu)}
    store = make_store(tmp_path)
    commit(store, [items.get(action, failure)()])
    child = subprocess.run([sys.executable, str(CHILD), f"{tmp_path}/state.db", emu.url, emu.token, action],
                           capture_output=True, timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    with store.session() as session:
        assert session.scalars(select(RemediationAttemptRow.status)).one() == "intent"
    proc = processor(crash_settings(action), dbx_actions(emu))
    proc.run(store, NOW + TICK)  # restart: reconcile finds the call landed, and adopts it
    proc.run(store, NOW + 2 * TICK)
    assert [emu.count(path, "POST") for path in paths] == [1] * len(paths)
    assert emu.count(method="POST") == len(paths)  # exactly the mutating requests of one action, nothing repeated
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


def test_run_now_restart_ignores_a_run_of_the_job_that_was_there_before(emu: DatabricksEmulator,
                                                                        tmp_path: Path) -> None:
    """A person's "Run now" five minutes before the intent is not taken for the remediation's own run."""
    running = {"life_cycle_state": "RUNNING"}
    earlier = emu.add_run({"job_id": 11, "run_type": "JOB_RUN", "trigger": "ONE_TIME", "state": running,
                           "start_time": int((NOW - timedelta(minutes=5)).timestamp() * 1000), "tasks": []})
    store = make_store(tmp_path)
    commit(store, [failure()])
    actions = dbx_actions(emu)

    class DiesBeforeCall:
        name = "databricks_run_now"

        def __getattr__(self, name: str) -> object:
            return getattr(actions["databricks_run_now"], name)

        def perform(self, params: Json, key: str) -> str:
            raise KeyboardInterrupt  # the kill, before the request left

    with pytest.raises(KeyboardInterrupt):
        processor(crash_settings("databricks_run_now"), {"databricks_run_now": DiesBeforeCall()}).run(  # type: ignore[dict-item]
            store, NOW)
    proc = processor(crash_settings("databricks_run_now"), actions)
    proc.run(store, NOW + TICK)
    assert emu.count(RUN_NOW, "POST") == 1
    with store.session() as session:
        attempt = session.scalars(select(RemediationAttemptRow)).one()
        assert attempt.status == "sent" and attempt.external_id not in (None, str(earlier))
        assert json.loads(attempt.params_json)["known_runs"] == [earlier]


@pytest.mark.parametrize(("landed", "left"), [
    ([UNINSTALL], [INSTALL, RESTART]),
    ([UNINSTALL, INSTALL], [RESTART]),
])
def test_library_fallback_killed_between_its_calls_makes_only_the_rest(emu: DatabricksEmulator, tmp_path: Path,
                                                                      landed: list[str], left: list[str]) -> None:
    """The three calls of a library fallback: after a crash between them, only the ones that did not land."""
    store = make_store(tmp_path)
    commit(store, [failed_library(emu)])
    actions, client = dbx_actions(emu), sdk_client(emu)

    class DiesBetweenCalls:
        name = "databricks_library_reinstall"

        def __getattr__(self, name: str) -> object:
            return getattr(actions["databricks_library_reinstall"], name)

        def perform(self, params: Json, key: str) -> str:
            for path in landed:
                client.api_client.do("POST", path, body={"cluster_id": "c-2", "libraries": [
                    {"pypi": {"package": params["failed" if path == UNINSTALL else "install"]}}]})
            raise KeyboardInterrupt  # the kill, between two calls

    config = crash_settings("databricks_library_reinstall")
    with pytest.raises(KeyboardInterrupt):
        processor(config, {"databricks_library_reinstall": DiesBetweenCalls()}).run(store, NOW)  # type: ignore[dict-item]
    proc = processor(config, actions)
    proc.run(store, NOW + TICK)
    proc.run(store, NOW + 2 * TICK)
    assert [emu.count(path, "POST") for path in (UNINSTALL, INSTALL, RESTART)] == [1, 1, 1]
    assert library_statuses(emu) == {"pandas==2.2.3": "INSTALLED"}
    assert store.incidents()[0].resolution == "remediated"
    store.close()
