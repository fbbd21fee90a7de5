"""ADF reruns end to end: azure-mgmt-datafactory over HTTPS against the ADF management emulator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import col, select

from poller.azure_auth import StaticTokenCredential
from poller.emulators.adf_management import AdfManagementEmulator
from poller.models import Failure
from poller.remediation.actions.adf import adf_actions
from poller.schema import RemediationAttemptRow
from poller.store import Store
from tests.remediation.helpers import NOW, TICK, commit, processor, settings

FACTORY = "/subscriptions/sub-1/resourceGroups/rg-data/providers/Microsoft.DataFactory/factories/adf-prod"
POLICY = {"name": "adf-sql", "action": "adf_rerun", "max_attempts": 2, "backoff": {"initial": "1m", "jitter": 0},
          "match": {"service": ["adf"], "error_code": ["SqlConnectionIsClosed"]}}


@pytest.fixture
def arm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AdfManagementEmulator]:
    with AdfManagementEmulator(tmp_path) as emulator:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(emulator.ca_path))
        emulator.add_run("adf-prod", {"runId": "r0", "pipelineName": "pl_load_sales", "status": "Failed",
                                      "parameters": {"day": "2026-11-28"}})
        yield emulator


def adf_failure() -> Failure:
    return Failure(key="adf:activity:a1", source="la", service="adf", kind="activity_run", resource="pl_load_sales",
                   resource_id=FACTORY, run_id="r0", error_code="SqlConnectionIsClosed", failure_type="SystemError",
                   error_message="The connection is closed.", occurred_at=NOW,
                   metadata={"adf_error_code": "2200", "activity_name": "Copy sales", "pipeline_name": "pl_load_sales"})


def run(store: Store, arm: AdfManagementEmulator, ticks: int, **changes: object) -> list[RemediationAttemptRow]:
    config = settings(policies=[POLICY], adf={"management_endpoint": arm.url}, **changes)
    proc = processor(config, adf_actions(config, StaticTokenCredential(arm.token, "TEST")))
    for tick in range(ticks):
        proc.run(store, NOW + tick * TICK)
    with store.session() as session:
        rows = list(session.scalars(select(RemediationAttemptRow).order_by(col(RemediationAttemptRow.id))).all())
        session.expunge_all()
        return rows


def test_rerun_from_failure_in_the_same_group_resolves_the_incident(arm: AdfManagementEmulator,
                                                                    store: Store) -> None:
    commit(store, [adf_failure()])
    [attempt] = run(store, arm, 2)
    assert attempt.status == "succeeded" and store.incidents()[0].resolution == "remediated"
    [create] = [r for r in arm.requests if r.path.endswith("/createRun")]
    assert create.path == f"{FACTORY}/pipelines/pl_load_sales/createRun" and create.body is None
    assert {k: v[0] for k, v in create.query.items()} == {
        "api-version": "2018-06-01", "referencePipelineRunId": "r0", "isRecovery": "true", "startFromFailure": "true"}
    rerun = arm.get_run("adf-prod", str(attempt.external_id))
    assert (rerun["runGroupId"], rerun["parameters"], rerun["isLatest"]) == ("r0", {"day": "2026-11-28"}, True)


def test_failed_reruns_escalate_when_attempts_run_out(arm: AdfManagementEmulator, store: Store) -> None:
    arm.script_run("adf-prod", "pl_load_sales", "Failed", "Operation on target Copy sales failed")
    arm.script_run("adf-prod", "pl_load_sales", "Failed", "Operation on target Copy sales failed")
    commit(store, [adf_failure()])
    attempts = run(store, arm, 5)
    assert [a.status for a in attempts] == ["failed", "failed"]
    assert "Copy sales failed" in (attempts[-1].message or "")
    assert store.incidents()[0].status == "open" and arm.count("/createRun", "POST") == 2


def test_approval_pending_makes_no_mutating_request(arm: AdfManagementEmulator, store: Store) -> None:
    commit(store, [adf_failure()])
    [attempt] = run(store, arm, 3, mode="approval")
    assert attempt.status == "pending_approval" and arm.count("/createRun", "POST") == 0


def test_a_rerun_that_landed_before_a_crash_is_adopted_not_repeated(arm: AdfManagementEmulator,
                                                                    store: Store) -> None:
    config = settings(policies=[POLICY], adf={"management_endpoint": arm.url})
    actions = adf_actions(config, StaticTokenCredential(arm.token, "TEST"))
    real = actions["adf_rerun"]

    class DiesAfterCall:
        name = "adf_rerun"

        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

        def perform(self, params: dict[str, object], key: str) -> str:
            real.perform(params, key)
            raise KeyboardInterrupt  # the process dies before it records the new run id

    commit(store, [adf_failure()])
    with pytest.raises(KeyboardInterrupt):
        processor(config, {"adf_rerun": DiesAfterCall()}).run(store, NOW)  # type: ignore[dict-item]
    proc = processor(config, actions)
    proc.run(store, NOW + TICK)
    proc.run(store, NOW + 2 * TICK)
    assert arm.count("/createRun", "POST") == 1
    with store.session() as session:
        attempt = session.scalars(select(RemediationAttemptRow)).one()
        assert attempt.status == "succeeded" and attempt.external_id != "r0"
    query = [r for r in arm.requests if r.path.endswith("/queryPipelineRuns")][-1]
    assert query.body["filters"] == [{"operand": "RunGroupId", "operator": "Equals", "values": ["r0"]}]
