"""`rca-poller check` against the Log Analytics emulator: healthy, unreachable, unauthorised, misconfigured."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from poller.checks import CheckResult, adf_log_mode, check_state, from_hook, probe_query
from poller.cli import main
from poller.emulators.log_analytics import Fault, LogAnalyticsEmulator
from poller.errors import SourceError
from poller.lock import StateLock
from poller.store import SCHEMA_VERSION, Store
from tests.conftest import TOKEN, activity_row, pipeline_row


@pytest.fixture
def live_la(monkeypatch: pytest.MonkeyPatch) -> Iterator[LogAnalyticsEmulator]:
    with LogAnalyticsEmulator(expected_token=TOKEN) as emulator:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(emulator.ca_path))
        monkeypatch.setenv("AZURE_ACCESS_TOKEN", TOKEN)
        yield emulator


def with_adf_rows(la: LogAnalyticsEmulator) -> None:
    now = datetime.now(UTC) - timedelta(hours=1)
    la.add_rows("ADFActivityRun", [activity_row("Copy_SalesOrders", run_id=str(uuid.uuid4()), at=now, ingested=now)])
    la.add_rows("ADFPipelineRun", [pipeline_row("pl_sales_daily_load", run_id=str(uuid.uuid4()), at=now,
                                                ingested=now)])


def with_legacy_adf_rows(la: LogAnalyticsEmulator, count: int = 3) -> None:
    now = datetime.now(UTC) - timedelta(hours=1)
    la.add_rows("AzureDiagnostics", [
        {"TimeGenerated": now.isoformat(), "ResourceProvider": "MICROSOFT.DATAFACTORY", "Category": "ActivityRuns",
         "OperationName": "Copy_SalesOrders - Failed", "_IngestionTime": now.isoformat()} for _ in range(count)
    ])


def check(tmp_path: Path, source: dict[str, Any] | None = None, **top: Any) -> tuple[int, dict[tuple[str, str], Any]]:
    """Run `check --format json`; the rows keyed by (component, item)."""
    config = {"state": {"url": f"sqlite:///{tmp_path}/state.db"}, "azure": {"credential": "access_token_env"},
              "sources": {"adf-test": source} if source else {}, **top}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(main, ["check", "--config", str(path), "--format", "json"])
    assert "Traceback" not in result.output, result.output
    rows = {(r["component"], r["item"]): r for r in json.loads(result.stdout)}
    assert all(r["hint"] for r in rows.values() if not r["ok"]), "every ✗ says how to fix it"
    return result.exit_code, rows


def la_source(la: LogAnalyticsEmulator, **settings: Any) -> dict[str, Any]:
    return {"type": "log_analytics", "workspace_id": la.workspace_id, "endpoint": la.url, **settings}


SOURCE = "source adf-test"


def test_healthy_workspace_all_green(tmp_path: Path, live_la: LogAnalyticsEmulator) -> None:
    with_adf_rows(live_la)
    code, rows = check(tmp_path, la_source(live_la))
    assert code == 0, rows
    assert rows[(SOURCE, "credential")]["detail"] == f"token for {live_la.url}/.default (access_token_env)"
    assert rows[(SOURCE, "workspace")]["detail"].startswith(f"{live_la.workspace_id} answered in")
    assert rows[(SOURCE, "table ADFActivityRun")]["detail"] == "1 rows in the last 7 days"
    assert rows[(SOURCE, "table AzureDiagnostics")]["detail"] == "no ADF rows"
    assert rows[(SOURCE, "ADF log mode")]["detail"] == "resource-specific"
    assert rows[("state", "store")]["detail"].endswith("state.db will be created on the first run")
    assert rows[("sink local", "tickets")]["ok"]
    assert (tmp_path / "state.db").exists() is False  # a check creates nothing


def test_table_output_marks_each_row(tmp_path: Path, live_la: LogAnalyticsEmulator) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"state": {"url": f"sqlite:///{tmp_path}/s.db"},
                                    "azure": {"credential": "access_token_env"},
                                    "sources": {"adf-test": la_source(live_la)}}))
    result = CliRunner().invoke(main, ["check", "--config", str(path)])
    assert result.exit_code == 1  # no ADF logs at all
    assert "✓" in result.output and "✗" in result.output and "1 check(s) failed" in result.output


def test_unreachable_endpoint(tmp_path: Path, live_la: LogAnalyticsEmulator) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]  # bound, never listening: connections are refused
        code, rows = check(tmp_path, {**la_source(live_la), "endpoint": f"https://127.0.0.1:{closed}"})
    assert code == 1
    row = rows[(SOURCE, "workspace")]
    assert not row["ok"] and row["detail"].startswith(f"cannot reach https://127.0.0.1:{closed}")
    assert "check sources.adf-test.endpoint, DNS, and that outbound HTTPS" in row["hint"]
    assert rows[(SOURCE, "credential")]["ok"] and (SOURCE, "ADF log mode") not in rows


def test_untrusted_certificate(tmp_path: Path, live_la: LogAnalyticsEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    monkeypatch.setenv("SSL_CERT_FILE", "/nonexistent")  # no system CA may vouch for the emulator either
    code, rows = check(tmp_path, la_source(live_la))
    assert code == 1
    assert "REQUESTS_CA_BUNDLE" in rows[(SOURCE, "workspace")]["hint"]


def test_unauthorised_identity_gets_the_role_to_grant(tmp_path: Path, live_la: LogAnalyticsEmulator,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_ACCESS_TOKEN", "a-token-of-someone-else")
    code, rows = check(tmp_path, la_source(live_la))
    assert code == 1
    row = rows[(SOURCE, "workspace")]
    assert row["detail"].startswith("HTTP 403")
    role = f"grant the identity the 'Log Analytics Reader' role on workspace {live_la.workspace_id}"
    assert row["hint"].startswith(role)


def test_missing_token_variable(tmp_path: Path, live_la: LogAnalyticsEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_ACCESS_TOKEN")
    code, rows = check(tmp_path, la_source(live_la))
    assert code == 1
    row = rows[(SOURCE, "credential")]
    assert "environment variable AZURE_ACCESS_TOKEN is not set or empty" in row["detail"]
    assert row["hint"].startswith(f"export AZURE_ACCESS_TOKEN=$(az account get-access-token --resource {live_la.url} ")
    assert live_la.requests == []


def test_wrong_workspace_id(tmp_path: Path, live_la: LogAnalyticsEmulator) -> None:
    code, rows = check(tmp_path, {**la_source(live_la), "workspace_id": str(uuid.uuid4())})
    assert code == 1
    assert rows[(SOURCE, "workspace")]["detail"].startswith("HTTP 404")
    hint = rows[(SOURCE, "workspace")]["hint"]
    assert "check sources.adf-test.workspace_id: it is the workspace's Workspace ID" in hint


def test_workspace_without_adf_logs_names_the_diagnostic_setting(tmp_path: Path, live_la: LogAnalyticsEmulator) -> None:
    code, rows = check(tmp_path, la_source(live_la))
    assert code == 1
    assert rows[(SOURCE, "workspace")]["ok"]
    assert rows[(SOURCE, "table ADFActivityRun")]["detail"] == "not in this workspace"
    mode = rows[(SOURCE, "ADF log mode")]
    assert not mode["ok"] and mode["detail"] == "none: no ADF logs reach this workspace"
    assert "diagnostic setting that sends ActivityRuns and PipelineRuns" in mode["hint"]
    assert "'Resource specific'" in mode["hint"]


def test_legacy_azure_diagnostics_workspace(tmp_path: Path, live_la: LogAnalyticsEmulator) -> None:
    with_legacy_adf_rows(live_la)
    _, rows = check(tmp_path, la_source(live_la))
    assert rows[(SOURCE, "table AzureDiagnostics")]["detail"] == "3 ADF rows in the last 7 days"
    assert rows[(SOURCE, "ADF log mode")]["detail"].startswith("AzureDiagnostics (legacy)")


def test_no_data_at_all_204(tmp_path: Path, live_la: LogAnalyticsEmulator) -> None:
    live_la.inject(Fault(status=204))
    code, rows = check(tmp_path, la_source(live_la))
    assert code == 1
    assert rows[(SOURCE, "workspace")]["detail"] == "the workspace holds no data at all (HTTP 204)"


def test_bad_config_is_one_red_row(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("sources: {a: {type: log_analytics, workspace_id: x, intervall: 5s}}\n")
    result = CliRunner().invoke(main, ["check", "--config", str(path), "--format", "json"])
    assert result.exit_code == 1
    (row,) = json.loads(result.stdout)
    assert row["component"] == "config" and row["detail"] == "sources.a.intervall: unknown key" and row["hint"]


def test_disabled_source_is_not_contacted(tmp_path: Path, live_la: LogAnalyticsEmulator) -> None:
    code, rows = check(tmp_path, {**la_source(live_la), "enabled": False})
    assert code == 0 and rows[(SOURCE, "enabled")]["detail"].startswith("disabled")
    assert live_la.requests == []


# --- the pieces --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("counts", "setting", "ok", "detail", "hint"),
    [
        ({"ADFActivityRun": 5, "ADFPipelineRun": 2}, None, True, "resource-specific", ""),
        ({"ADFActivityRun": 5, "AzureDiagnostics": 4}, None, True,
         "both: resource-specific and AzureDiagnostics; rows in AzureDiagnostics are not read", "'Resource specific'"),
        ({"AzureDiagnostics": 4}, None, False, "AzureDiagnostics (legacy); rows in AzureDiagnostics are not read",
         "logAnalyticsDestinationType: Dedicated"),
        ({"AzureDiagnostics": 4}, "auto", True, "AzureDiagnostics (legacy)", ""),
        ({"ADFActivityRun": 1}, "azure_diagnostics", False,
         "resource-specific; rows in the resource-specific tables are not read", "set adf_mode: auto"),
        ({"ADFActivityRun": 0, "AzureDiagnostics": 0}, None, True, "resource-specific", ""),  # exists, quiet week
        ({}, "auto", False, "none: no ADF logs reach this workspace", "add a diagnostic setting"),
    ],
)
def test_adf_log_mode(counts: dict[str, int], setting: str | None, ok: bool, detail: str, hint: str) -> None:
    row = adf_log_mode("source s", counts, setting)
    assert (row.ok, row.detail) == (ok, detail)
    assert hint in row.hint and bool(row.hint) == bool(hint)


def test_probe_query_names_each_branch_and_survives_no_tables() -> None:
    query = probe_query(["ADFActivityRun"], legacy_adf=True)
    assert query.startswith("union isfuzzy=true")
    assert '(ADFActivityRun | summarize Rows = count() | extend SourceTable = "ADFActivityRun")' in query
    assert 'ResourceProvider == "MICROSOFT.DATAFACTORY"' in query and "datatable(Rows: long" in query


class Identity:
    def check(self) -> str:
        return "svc-rca-poller@contoso.com"


class Forbidden:
    def check(self) -> str:
        raise SourceError("dbx", "permission denied on /api/2.2/jobs/runs/list (HTTP 403) — the identity needs "
                                 "CAN VIEW on the jobs")


class Rows:
    def check(self) -> list[CheckResult]:
        return [CheckResult("source dbx", "jobs", True, "12 jobs visible")]


class Broken:
    def check(self) -> str:
        raise KeyError("userName")


@pytest.mark.parametrize(
    ("component", "expected"),
    [
        (Identity(), CheckResult("source dbx", "identity", True, "authenticated as svc-rca-poller@contoso.com")),
        (Forbidden(), CheckResult("source dbx", "access", False, "permission denied on /api/2.2/jobs/runs/list "
                                  "(HTTP 403)", "the identity needs CAN VIEW on the jobs")),
        (Rows(), CheckResult("source dbx", "jobs", True, "12 jobs visible")),
        (Broken(), CheckResult("source dbx", "check", False, "the check itself failed: KeyError: 'userName'")),
    ],
)
def test_a_components_own_check_plugs_in(component: Any, expected: CheckResult) -> None:
    assert from_hook("source dbx", component.check) == [expected]


def test_state_store_schema_and_owner(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/state.db"
    Store(url).close()
    rows = {r.item: r for r in check_state(url)}
    assert rows["store"].ok and rows["store"].detail.endswith("state.db is writable")
    assert rows["schema"].detail == f"v{SCHEMA_VERSION} (current)"
    assert rows["owner"].detail == "free"
    with StateLock(url):
        assert {r.item: r for r in check_state(url)}["owner"].detail == f"in use by rca-poller pid {os.getpid()}"
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute("INSERT INTO schema_version (version, applied_at) VALUES (99, '2030-01-01 00:00:00')")
    schema = {r.item: r for r in check_state(url)}["schema"]
    assert not schema.ok and schema.detail == f"v99 is newer than this rca-poller (v{SCHEMA_VERSION})"
    assert schema.hint.startswith("upgrade rca-poller")


def test_unwritable_state_directory(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere: a read-only directory cannot be shown")
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    (row,) = check_state(f"sqlite:///{folder}/state.db")
    assert not row.ok and "is read-only" in row.detail and "RCA_POLLER_STATE" in row.hint


def test_databricks_sources_answer_through_their_own_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from poller.emulators.databricks import DatabricksEmulator

    monkeypatch.setenv("RCA_TEST_DATABRICKS_TOKEN", DatabricksEmulator().token)
    common = {"type": "databricks", "token_env": "RCA_TEST_DATABRICKS_TOKEN", "retry_timeout": "1s", "max_retries": 0}
    with DatabricksEmulator() as good, DatabricksEmulator(forbidden=True) as refused:
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump({"state": {"url": f"sqlite:///{tmp_path}/s.db"}, "sources": {
            "dbx-good": {**common, "host": good.url}, "dbx-refused": {**common, "host": refused.url}}}))
        result = CliRunner().invoke(main, ["check", "--config", str(path), "--format", "json"])
    rows = {(r["component"], r["item"]): r for r in json.loads(result.stdout)}
    assert result.exit_code == 1
    assert rows[("source dbx-good", "identity")]["ok"] and rows[("source dbx-good", "identity")]["detail"].startswith(
        "authenticated as ")
    refused_row = rows[("source dbx-refused", "access")]
    assert not refused_row["ok"] and "403" in refused_row["detail"] and refused_row["hint"]
