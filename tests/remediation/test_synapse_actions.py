"""Synapse reruns end to end: azure-synapse-artifacts over HTTPS against the Synapse emulator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from poller.azure_auth import StaticTokenCredential
from poller.emulators.synapse import SynapseEmulator
from poller.models import Failure
from poller.remediation.actions.adf import adf_actions
from poller.schema import RemediationAttemptRow
from poller.store import Store
from tests.remediation.helpers import NOW, TICK, commit, make_store, processor, settings

TOKEN = "synapse-token"
POLICY = {"name": "syn", "action": "synapse_rerun", "max_attempts": 1, "match": {"service": ["synapse"]}}


@pytest.fixture
def syn(monkeypatch: pytest.MonkeyPatch) -> Iterator[SynapseEmulator]:
    with SynapseEmulator(expected_token=TOKEN) as emulator:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(emulator.ca_path))
        emulator.pipeline_runs.add_run("ws", {"runId": "s0", "pipelineName": "pl_sales", "status": "Failed"})
        yield emulator


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = make_store(tmp_path)
    commit(store, [Failure(
        key="synapse:activity:x", source="la", service="synapse", kind="activity_run", resource="pl_sales",
        resource_id="/subscriptions/s/resourceGroups/rg/providers/Microsoft.Synapse/workspaces/ws", run_id="s0",
        error_code="SqlConnectionIsClosed", error_message="closed", occurred_at=NOW,
        metadata={"activity_name": "Copy sales", "pipeline_name": "pl_sales"})])
    yield store
    store.close()


def attempts(store: Store, syn: SynapseEmulator, ticks: int) -> list[RemediationAttemptRow]:
    config = settings(policies=[POLICY], synapse={"endpoints": {"ws": syn.url}})
    proc = processor(config, adf_actions(config, StaticTokenCredential(TOKEN, "TEST")))
    for tick in range(ticks):
        proc.run(store, NOW + tick * TICK)
    with store.session() as session:
        rows = list(session.scalars(select(RemediationAttemptRow)).all())
        session.expunge_all()
        return rows


def test_recovery_run_from_the_failed_activity_resolves(syn: SynapseEmulator, store: Store) -> None:
    [attempt] = attempts(store, syn, 2)
    assert attempt.status == "succeeded" and store.incidents()[0].resolution == "remediated"
    [create] = [r for r in syn.requests if r.path.endswith("/createRun")]
    assert (create.method, create.path, create.status) == ("POST", "/pipelines/pl_sales/createRun", 202)
    rerun = syn.pipeline_runs.get_run("ws", str(attempt.external_id))
    assert rerun["runGroupId"] == "s0"


def test_a_failed_rerun_escalates(syn: SynapseEmulator, store: Store) -> None:
    syn.pipeline_runs.script_run("ws", "pl_sales", "Failed", "still broken")
    [attempt] = attempts(store, syn, 3)
    assert attempt.status == "failed" and store.incidents()[0].status == "open"
