"""Databricks actions end to end: the real databricks-sdk against the emulator, through the processor."""

from __future__ import annotations

import json

import pytest
from sqlmodel import col, select

from poller.emulators.databricks import DatabricksEmulator, RunOutcome
from poller.schema import RemediationAttemptRow, RemediationAuditRow, TicketRow
from poller.store import Store
from tests.remediation.helpers import (
    LIBRARY_FALLBACKS,
    NOW,
    TICK,
    commit,
    dbx_actions,
    failed_library,
    failed_run,
    failure,
    library_statuses,
    processor,
    settings,
)

MUTATING = {"method": "POST"}  # repair, run-now, start, install, uninstall — every call the actions make that writes


def attempts(store: Store) -> list[RemediationAttemptRow]:
    with store.session() as session:
        rows = session.scalars(select(RemediationAttemptRow).order_by(col(RemediationAttemptRow.id))).all()
        session.expunge_all()
        return list(rows)


def events(store: Store) -> list[str]:
    with store.session() as session:
        return [row.event for row in session.scalars(select(RemediationAuditRow).order_by(col(RemediationAuditRow.id)))]


def test_repair_reruns_the_failed_task_and_resolves_the_incident(emu: DatabricksEmulator, store: Store) -> None:
    commit(store, [failure()])
    proc = processor(settings(), dbx_actions(emu))

    proc.run(store, NOW)
    [sent] = attempts(store)
    assert (sent.status, sent.action, sent.external_id) == ("sent", "databricks_repair", sent.external_id)
    repair = [r for r in emu.requests if r.path == "/api/2.2/jobs/runs/repair"]
    assert len(repair) == 1 and (repair[0].body or {})["rerun_tasks"] == ["ingest"]
    assert store.incidents()[0].status == "remediating"

    stats = proc.run(store, NOW + TICK)
    incident = store.incidents()[0]
    assert (incident.status, incident.resolution, stats.resolved) == ("resolved", "remediated", 1)
    assert attempts(store)[0].status == "succeeded"
    assert events(store) == ["decided", "intent", "sent", "succeeded"]
    with store.session() as session:
        audit = session.scalars(select(RemediationAuditRow).where(RemediationAuditRow.event == "succeeded")).one()
        assert json.loads(audit.detail_json)["mttr_seconds"] == (NOW + TICK - failure().occurred_at).total_seconds()
        assert session.scalars(select(TicketRow)).one().status == "resolved"
    assert emu.count(**MUTATING) == 1


def test_failed_repair_is_retried_with_the_latest_repair_id(emu: DatabricksEmulator, store: Store) -> None:
    emu.script_repair(501, RunOutcome("FAILED"))
    commit(store, [failure()])
    proc = processor(settings(), dbx_actions(emu))

    proc.run(store, NOW)
    proc.run(store, NOW + TICK)  # verify: failed → attempt 2 scheduled 1m later
    first, second = attempts(store)
    assert (first.status, second.status, second.attempt) == ("failed", "scheduled", 2)
    proc.run(store, NOW + 2 * TICK)
    proc.run(store, NOW + 3 * TICK)
    first, second = attempts(store)
    assert json.loads(second.params_json)["latest_repair_id"] == int(first.external_id or 0)
    assert second.status == "succeeded" and store.incidents()[0].status == "resolved"
    assert emu.count("/api/2.2/jobs/runs/repair", "POST") == 2


def test_attempts_exhausted_escalate_and_reopen_the_incident(emu: DatabricksEmulator, store: Store) -> None:
    emu.script_repair(501, RunOutcome("FAILED"))
    emu.script_repair(501, RunOutcome("FAILED"))
    commit(store, [failure()])
    proc = processor(settings(), dbx_actions(emu))
    for tick in range(5):
        proc.run(store, NOW + tick * TICK)
    incident = store.incidents()[0]
    assert incident.status == "open" and incident.resolution is None
    assert [a.status for a in attempts(store)] == ["failed", "failed"]
    assert events(store)[-2:] == ["failed", "escalated"]
    with store.session() as session:
        assert session.scalars(select(TicketRow)).one().incident_version == incident.version
    proc.run(store, NOW + 6 * TICK)  # an escalated incident is not decided again
    assert emu.count(**MUTATING) == 2


def test_run_now_uses_one_idempotency_token_per_attempt(emu: DatabricksEmulator, store: Store) -> None:
    config = settings(policies=[{"name": "rerun-job", "action": "databricks_run_now",
                                 "match": {"service": ["databricks"]}}])
    commit(store, [failure()])
    proc = processor(config, dbx_actions(emu))
    proc.run(store, NOW)
    proc.run(store, NOW + TICK)
    [attempt] = attempts(store)
    body = emu.requests[[r.path for r in emu.requests].index("/api/2.2/jobs/run-now")].body
    assert body == {"job_id": 11, "idempotency_token": attempt.idempotency_key}
    assert attempt.status == "succeeded" and attempt.external_id not in (None, "501")
    assert store.incidents()[0].status == "resolved"


def test_cluster_start_after_a_cloud_failure(emu: DatabricksEmulator, store: Store) -> None:
    emu.add_cluster({"cluster_id": "c-1", "cluster_name": "shared", "state": "TERMINATED",
                     "termination_reason": {"code": "CLOUD_PROVIDER_LAUNCH_FAILURE", "type": "CLOUD_FAILURE"}})
    config = settings(use_defaults=True, policies=[])
    item = failure(key="databricks:cluster:c-1:1", kind="cluster_event", resource="shared", resource_id="c-1",
                   run_id="", error_code="CLOUD_PROVIDER_LAUNCH_FAILURE",
                   metadata={"termination_type": "CLOUD_FAILURE"})
    commit(store, [item])
    proc = processor(config, dbx_actions(emu))
    proc.run(store, NOW)
    assert emu.count(**MUTATING) == 0  # the default's delay is 1m
    proc.run(store, NOW + TICK)
    proc.run(store, NOW + 2 * TICK)
    [attempt] = attempts(store)
    assert (attempt.policy, attempt.status, attempt.external_id) == ("databricks-cluster-service-fault",
                                                                     "succeeded", "c-1")
    assert emu.count("/api/2.1/clusters/start", "POST") == 1 and store.incidents()[0].status == "resolved"


def test_library_reinstall_restarts_so_the_failed_pin_is_gone(emu: DatabricksEmulator, store: Store) -> None:
    """uninstall + install + restart: the uninstall applies only on restart (§6.4), so only then is it a success."""
    config = settings(use_defaults=True, policies=[], library_fallbacks=LIBRARY_FALLBACKS)
    commit(store, [failed_library(emu)])
    proc = processor(config, dbx_actions(emu))
    proc.run(store, NOW)
    assert library_statuses(emu) == {"pandas==9.9": "UNINSTALL_ON_RESTART", "pandas==2.2.3": "PENDING"}
    assert emu.cluster_json("c-2")["state"] == "RESTARTING"
    proc.run(store, NOW + TICK)
    [attempt] = attempts(store)
    assert attempt.status == "succeeded" and json.loads(attempt.params_json)["install"] == "pandas==2.2.3"
    assert attempt.message == "pandas==2.2.3 installed, pandas==9.9 removed by the restart"
    assert library_statuses(emu) == {"pandas==2.2.3": "INSTALLED"}
    assert emu.cluster_json("c-2")["state"] == "RUNNING"
    install = [r for r in emu.requests if r.path == "/api/2.0/libraries/install"]
    assert (install[0].body or {})["libraries"] == [{"pypi": {"package": "pandas==2.2.3"}}]
    assert [r.path for r in emu.requests if r.method == "POST"] == [
        "/api/2.0/libraries/uninstall", "/api/2.0/libraries/install", "/api/2.1/clusters/restart"]


def test_library_reinstall_waits_for_the_restart(emu: DatabricksEmulator, store: Store) -> None:
    """While the cluster restarts the pin is still listed: the attempt is not a success yet."""
    emu.settle_after_reads = 3
    commit(store, [failed_library(emu)])
    proc = processor(settings(use_defaults=True, policies=[], library_fallbacks=LIBRARY_FALLBACKS),
                     dbx_actions(emu))
    proc.run(store, NOW)
    proc.run(store, NOW + TICK)
    assert attempts(store)[0].status == "sent"
    for tick in range(2, 6):
        proc.run(store, NOW + tick * TICK)
    assert attempts(store)[0].status == "succeeded" and library_statuses(emu) == {"pandas==2.2.3": "INSTALLED"}
    assert emu.count(**MUTATING) == 3


def test_library_reinstall_on_a_stopped_cluster_does_not_start_it(emu: DatabricksEmulator, store: Store) -> None:
    commit(store, [failed_library(emu, state="TERMINATED")])
    proc = processor(settings(use_defaults=True, policies=[], library_fallbacks=LIBRARY_FALLBACKS),
                     dbx_actions(emu))
    proc.run(store, NOW)
    proc.run(store, NOW + TICK)
    [attempt] = attempts(store)
    assert attempt.status == "succeeded" and "when it next starts" in (attempt.message or "")
    assert emu.count("/api/2.1/clusters", "POST") == 0 and emu.count(**MUTATING) == 2
    emu.start_cluster("c-2")  # the next start applies the uninstall
    emu.settle()
    assert library_statuses(emu) == {"pandas==2.2.3": "INSTALLED"}


def test_library_reinstall_whose_restart_fails_is_a_failed_attempt(emu: DatabricksEmulator, store: Store) -> None:
    item = failed_library(emu)
    emu.script_cluster_start("c-2", "TERMINATED", termination_reason={"code": "CLOUD_PROVIDER_LAUNCH_FAILURE"})
    commit(store, [item])
    config = settings(policies=[{"name": "lib", "action": "databricks_library_reinstall", "max_attempts": 1,
                                 "match": {"kind": ["library_install"]}}], library_fallbacks=LIBRARY_FALLBACKS)
    proc = processor(config, dbx_actions(emu))
    proc.run(store, NOW)
    proc.run(store, NOW + TICK)
    [attempt] = attempts(store)
    assert (attempt.status, attempt.message) == ("failed", "the restart that removes pandas==9.9 ended TERMINATED")
    assert store.incidents()[0].status == "open"


def test_library_without_a_fallback_is_skipped_with_the_reason(emu: DatabricksEmulator, store: Store) -> None:
    item = failure(key="databricks:library:c-2:numpy", kind="library_install", resource_id="c-2", run_id="",
                   error_code="LIBRARY_NOT_FOUND", metadata={"pypi.package": "numpy==0.1"})
    commit(store, [item])
    processor(settings(use_defaults=True, policies=[]), dbx_actions(emu)).run(store, NOW)
    assert attempts(store) == [] and emu.count(**MUTATING) == 0
    with store.session() as session:
        row = session.scalars(select(RemediationAuditRow)).one()
        reason = json.loads(row.detail_json)["reason"]
        assert reason == "no fallback version for 'numpy' in remediation.library_fallbacks"


@pytest.mark.parametrize("mode", ["dry_run", "approval"])
def test_dry_run_and_pending_approval_send_nothing(emu: DatabricksEmulator, store: Store, mode: str) -> None:
    commit(store, [failure()])
    proc = processor(settings(mode=mode), dbx_actions(emu))
    for tick in range(3):
        proc.run(store, NOW + tick * TICK)
    [attempt] = attempts(store)
    assert attempt.status == {"dry_run": "dry_run", "approval": "pending_approval"}[mode]
    assert emu.count(**MUTATING) == 0


def test_once_within_skips_a_second_incident_on_the_same_resource(emu: DatabricksEmulator, store: Store) -> None:
    failed_run(emu, run_id=601)
    policy = {"name": "dbx-cloud", "action": "databricks_repair", "once_within": "1h",
              "match": {"service": ["databricks"], "error_code": ["CLOUD_FAILURE", "DRIVER_ERROR"]}}
    proc = processor(settings(policies=[policy]), dbx_actions(emu))
    commit(store, [failure()])
    proc.run(store, NOW)
    commit(store, [failure(key="databricks:run:601:ingest", run_id="601", error_code="DRIVER_ERROR")], NOW + TICK)
    proc.run(store, NOW + TICK)
    assert [a.status for a in attempts(store)] == ["succeeded"]
    with store.session() as session:
        last = session.scalars(select(RemediationAuditRow).order_by(col(RemediationAuditRow.id).desc())).first()
        assert last is not None and json.loads(last.detail_json)["reason"].startswith("once_within 1:00:00")
    assert emu.count(**MUTATING) == 1
