"""The `remediations` commands, run through click against a real state file; approval end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlmodel import select

from poller.cli import main
from poller.emulators.databricks import DatabricksEmulator
from poller.schema import RemediationAuditRow
from poller.store import Store
from tests.remediation.helpers import (
    NOW,
    TICK,
    commit,
    dbx_actions,
    failure,
    make_store,
    processor,
    settings,
)


@pytest.fixture
def config_path(tmp_path: Path) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(f"state: {{url: 'sqlite:///{tmp_path}/state.db'}}\n"
                    "remediation: {enabled: true, mode: approval}\n")
    return str(path)


def cli(config_path: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["remediations", *args, "--config", config_path])
    return result.exit_code, result.output


def test_approve_then_act_then_list_show_stats(emu: DatabricksEmulator, tmp_path: Path, config_path: str) -> None:
    store = make_store(tmp_path)
    commit(store, [failure()])
    proc = processor(settings(mode="approval"), dbx_actions(emu))
    proc.run(store, NOW)
    assert emu.count(method="POST") == 0

    assert cli(config_path, "approve", "1") == (0, "attempt 1 approved\n")
    assert cli(config_path, "approve", "1") == (1, "error: attempt 1 is approved, not pending_approval\n")
    proc.run(store, NOW + TICK)
    proc.run(store, NOW + 2 * TICK)
    assert emu.count(method="POST") == 1 and store.incidents()[0].resolution == "remediated"

    code, out = cli(config_path, "list", "--format", "json")
    [row] = json.loads(out)
    assert code == 0 and (row["status"], row["action"], row["mode"]) == ("succeeded", "databricks_repair", "approval")
    code, out = cli(config_path, "show", "1", "--format", "json")
    assert [a["event"] for a in json.loads(out)["audit"]] == ["decided", "approved", "intent", "sent", "succeeded"]
    code, out = cli(config_path, "stats", "--format", "json")
    assert json.loads(out) == [{"error_code": "CLOUD_FAILURE", "incidents": 1, "remediated": 1, "escalated": 0,
                                "success_rate": 1.0, "mttr_seconds": (NOW + 2 * TICK - failure().occurred_at)
                                .total_seconds()}]
    code, out = cli(config_path, "list")
    assert code == 0 and "databricks_repair" in out and "CLOUD_FAILURE" in out
    store.close()


def test_reject_reopens_the_incident_and_sends_nothing(emu: DatabricksEmulator, tmp_path: Path,
                                                       config_path: str) -> None:
    store = make_store(tmp_path)
    commit(store, [failure()])
    proc = processor(settings(mode="approval"), dbx_actions(emu))
    proc.run(store, NOW)
    assert cli(config_path, "reject", "1", "--reason", "change freeze") == (0, "attempt 1 rejected\n")
    proc.run(store, NOW + TICK)
    assert store.incidents()[0].status == "open" and emu.count(method="POST") == 0
    assert cli(config_path, "show", "99")[0] == 1
    store.close()


def test_reset_breaker_is_audited_and_the_audit_is_append_only(tmp_path: Path, config_path: str) -> None:
    assert cli(config_path, "reset-breaker") == (0, "circuit breaker reset\n")
    store: Store = make_store(tmp_path)
    with pytest.raises(Exception, match="append-only"), store.session() as session:
        session.scalars(select(RemediationAuditRow)).one().event = "tampered"
    store.close()
