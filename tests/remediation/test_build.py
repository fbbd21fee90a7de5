"""build_processor wires remediation from config: off by default; Databricks clients from the named source."""

from __future__ import annotations

from pathlib import Path

import pytest

from poller.config import parse_config
from poller.emulators.databricks import DatabricksEmulator
from poller.incidents import build_processor
from poller.remediation.actions.adf import AdfRerunAction
from tests.remediation.helpers import NOW, TICK, commit, failed_run, failure, make_store

POLICY = {"name": "dbx", "action": "databricks_repair", "match": {"service": ["databricks"]}}


def test_remediation_is_off_unless_enabled() -> None:
    assert build_processor(parse_config({}, {})).remediation is None
    assert build_processor(parse_config({"remediation": {"enabled": True, "mode": "off"}}, {})).remediation is None


def test_azure_actions_get_the_configured_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_ACCESS_TOKEN", "t")
    config = parse_config({"azure": {"credential": "access_token_env"}, "remediation": {
        "enabled": True, "use_defaults": True}}, {})
    engine = build_processor(config).remediation
    assert engine is not None and isinstance(engine.actions["adf_rerun"], AdfRerunAction)
    assert {"databricks_repair", "synapse_rerun"} <= set(engine.actions)


def test_a_databricks_failure_is_repaired_with_its_sources_client(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    with DatabricksEmulator() as emu:
        failed_run(emu)
        monkeypatch.setenv("DBX_TOKEN", emu.token)
        config = parse_config({
            "state": {"url": f"sqlite:///{tmp_path}/state.db"},
            "sources": {"dbx": {"type": "databricks", "host": emu.url, "token_env": "DBX_TOKEN"}},
            "remediation": {"enabled": True, "mode": "act", "policies": [POLICY]}}, None)
        store = make_store(tmp_path)
        commit(store, [failure()])
        processor = build_processor(config)
        processor.run(store, NOW)
        processor.run(store, NOW + TICK)
        assert emu.count("/api/2.2/jobs/runs/repair", "POST") == 1
        assert store.incidents()[0].resolution == "remediated"
        store.close()
