"""Nothing waits for ever: approvals expire after `approval_ttl`, a sent action without outcome fails after
`verify_timeout`. Time is the passes' simulated `now`."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlmodel import col, select

from poller.cli import main
from poller.emulators.databricks import DatabricksEmulator
from poller.remediation.config import RemediationConfig
from poller.schema import RemediationAttemptRow, RemediationAuditRow
from poller.store import Store
from tests.remediation.helpers import (
    NOW,
    TICK,
    commit,
    dbx_actions,
    failure,
    processor,
    settings,
)


def attempts(store: Store) -> list[tuple[int, str, str | None]]:
    with store.session() as session:
        rows = session.scalars(select(RemediationAttemptRow).order_by(col(RemediationAttemptRow.id))).all()
        return [(row.attempt, row.status, row.message) for row in rows]


def events(store: Store) -> list[str]:
    with store.session() as session:
        return [row.event for row in session.scalars(select(RemediationAuditRow).order_by(col(RemediationAuditRow.id)))]


def cli(tmp_path: Path, *args: str) -> tuple[int, str]:
    path = tmp_path / "config.yaml"
    path.write_text(f"state: {{url: 'sqlite:///{tmp_path}/state.db'}}\n"
                    "remediation: {enabled: true, mode: approval}\n")
    result = CliRunner().invoke(main, ["remediations", *args, "--config", str(path)])
    return result.exit_code, result.output


def test_durations_and_their_defaults() -> None:
    assert (settings().approval_ttl, settings().verify_timeout) == (timedelta(hours=24), timedelta(hours=6))
    custom = settings(approval_ttl="2h", verify_timeout="45m")
    assert (custom.approval_ttl, custom.verify_timeout) == (timedelta(hours=2), timedelta(minutes=45))
    with pytest.raises(ValueError, match="expected a duration"):
        RemediationConfig.model_validate({"approval_ttl": "soon"})


def test_an_approval_not_given_within_the_ttl_expires_and_escalates(emu: DatabricksEmulator, store: Store,
                                                                    tmp_path: Path) -> None:
    commit(store, [failure()])
    proc = processor(settings(mode="approval", approval_ttl="24h"), dbx_actions(emu))
    proc.run(store, NOW)
    proc.run(store, NOW + timedelta(hours=24))  # not older than the ttl yet
    assert attempts(store) == [(1, "pending_approval", None)]
    assert store.incidents()[0].status == "remediating"

    proc.run(store, NOW + timedelta(hours=24, minutes=5))
    assert attempts(store) == [(1, "expired", "not approved within approval_ttl 1 day, 0:00:00 "
                                              "(pending since 2026-11-29T12:00:00Z)")]
    assert store.incidents()[0].status == "open"
    assert events(store) == ["decided", "expired", "escalated"]
    proc.run(store, NOW + timedelta(hours=25))  # an escalated incident is not decided again
    assert len(attempts(store)) == 1 and emu.count(method="POST") == 0

    assert cli(tmp_path, "approve", "1") == (1, "error: attempt 1 is expired, not pending_approval\n")
    code, out = cli(tmp_path, "list", "--status", "expired", "--format", "json")
    assert code == 0 and [row["status"] for row in json.loads(out)] == ["expired"]
    code, out = cli(tmp_path, "show", "1")
    assert code == 0 and "expired" in out and "not approved within approval_ttl" in out
    code, out = cli(tmp_path, "stats", "--format", "json")
    assert json.loads(out)[0]["escalated"] == 1


def test_a_sent_action_still_running_after_verify_timeout_fails_and_goes_to_people(
    emu: DatabricksEmulator, store: Store
) -> None:
    emu.settle_after_reads = 10**6  # the repaired run never ends
    commit(store, [failure()])
    proc = processor(settings(verify_timeout="2h"), dbx_actions(emu))  # max_attempts 3: a retry was possible
    proc.run(store, NOW)
    proc.run(store, NOW + timedelta(hours=2))
    assert attempts(store) == [(1, "sent", None)]
    repairs = emu.count("/api/2.2/jobs/runs/repair")

    proc.run(store, NOW + timedelta(hours=2) + TICK)
    proc.run(store, NOW + timedelta(hours=2) + 2 * TICK)
    [(number, status, message)] = attempts(store)  # no retry while the first repair may still finish
    assert (number, status) == (1, "failed")
    assert message == ("no outcome within verify_timeout 2:00:00 of the call; last seen: RUNNING; "
                       "not retried while it may still finish")
    assert events(store)[-2:] == ["failed", "escalated"] and store.incidents()[0].status == "open"
    assert emu.count("/api/2.2/jobs/runs/repair") == repairs == 1


def test_the_last_attempt_timing_out_escalates(emu: DatabricksEmulator, store: Store) -> None:
    emu.settle_after_reads = 10**6
    commit(store, [failure()])
    policy = {"name": "once", "action": "databricks_repair", "max_attempts": 1, "match": {"service": ["databricks"]}}
    proc = processor(settings(policies=[policy], verify_timeout="1h"), dbx_actions(emu))
    proc.run(store, NOW)
    proc.run(store, NOW + timedelta(hours=2))
    assert [a[1] for a in attempts(store)] == ["failed"]
    assert events(store)[-2:] == ["failed", "escalated"] and store.incidents()[0].status == "open"


@pytest.mark.parametrize("knob", ["approval_ttl", "verify_timeout"])
def test_zero_means_never(emu: DatabricksEmulator, store: Store, knob: str) -> None:
    emu.settle_after_reads = 10**6
    commit(store, [failure()])
    mode = "approval" if knob == "approval_ttl" else "act"
    proc = processor(settings(mode=mode, **{knob: 0}), dbx_actions(emu))
    proc.run(store, NOW)
    proc.run(store, NOW + timedelta(days=30))
    assert [a[1] for a in attempts(store)] == ["pending_approval" if mode == "approval" else "sent"]


def test_an_intent_whose_fate_stays_unknown_goes_to_people_not_to_a_retry(emu: DatabricksEmulator,
                                                                         store: Store) -> None:
    commit(store, [failure()])
    proc = processor(settings(verify_timeout="6h"), dbx_actions(emu))
    proc.run(store, NOW)
    with store.session() as session:  # as a process killed between the call and its record leaves it
        attempt = session.scalars(select(RemediationAttemptRow)).one()
        attempt.status, attempt.external_id = "intent", None
    emu.inject(403, times=100)  # and the platform cannot be asked whether the call landed
    proc.run(store, NOW + timedelta(hours=1))
    assert [a[1] for a in attempts(store)] == ["intent"]  # asked again next pass, never called blind

    proc.run(store, NOW + timedelta(hours=7))
    [(number, status, message)] = attempts(store)  # failed, and no retry that could act twice
    assert (number, status) == (1, "failed") and message and "whether the call landed" in message
    assert events(store)[-2:] == ["failed", "escalated"] and store.incidents()[0].status == "open"
