"""The rca-poller command as operators and cron run it: exit codes, output contracts, crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from poller.cli import main
from poller.emulators.log_analytics import Fault, LogAnalyticsEmulator
from poller.store import FailureRow, IncidentRow, Store, TicketRow
from tests.conftest import ADF_TABLES, TOKEN, activity_row

ROOT = Path(__file__).resolve().parents[1]
RCA_POLLER = [sys.executable, "-m", "poller.cli"]


@pytest.fixture
def live_la(monkeypatch: pytest.MonkeyPatch) -> Iterator[LogAnalyticsEmulator]:
    """The emulator on the real clock, for commands that run as separate processes."""
    with LogAnalyticsEmulator(expected_token=TOKEN, empty_tables=ADF_TABLES) as emulator:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(emulator.ca_path))
        monkeypatch.setenv("AZURE_ACCESS_TOKEN", TOKEN)
        yield emulator


def write_config(tmp_path: Path, la: LogAnalyticsEmulator, **source: Any) -> Path:
    config = {
        "state": {"url": f"sqlite:///{tmp_path}/state.db"},
        "azure": {"credential": "access_token_env"},
        "sources": {
            "adf-test": {
                "type": "log_analytics",
                "workspace_id": la.workspace_id,
                "endpoint": la.url,
                "max_retries": 0,
                **source,
            }
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RCA_POLLER, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        check=False,
    )


def add_failures(la: LogAnalyticsEmulator, count: int, templates: tuple[str, ...] = ("Copy_SalesOrders",)) -> None:
    now = datetime.now(UTC)
    rows = []
    for n in range(count):
        at = now - timedelta(minutes=30, seconds=n)
        rows.append(activity_row(templates[n % len(templates)], run_id=str(uuid.uuid4()), at=at, ingested=at))
    la.add_rows("ADFActivityRun", rows)


def test_once_lists_and_status(tmp_path: Path, live_la: LogAnalyticsEmulator) -> None:
    add_failures(live_la, 3, ("Copy_SalesOrders", "Call_FxRatesApi", "Copy_RawFile"))
    config = write_config(tmp_path, live_la)
    result = run("once", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "adf-test" in result.stdout

    listed = json.loads(run("failures", "list", "--config", str(config), "--format", "json").stdout)
    assert len(listed) == 3
    assert set(listed[0]) == {
        "key",
        "source",
        "service",
        "kind",
        "resource",
        "resource_id",
        "run_id",
        "error_code",
        "error_message",
        "failure_type",
        "occurred_at",
        "detected_at",
        "metadata",
    }
    assert {f["error_code"] for f in listed} == {"SqlOperationFailed", "2108", "UserErrorSourceBlobNotExist"}
    assert all(f["occurred_at"].endswith("Z") and f["source"] == "adf-test" for f in listed)
    with_raw = json.loads(run("failures", "list", "--config", str(config), "--format", "json", "--raw").stdout)
    assert with_raw[0]["raw"]["Type"] == "ADFActivityRun"

    tickets = json.loads(run("tickets", "list", "--config", str(config), "--format", "json").stdout)
    assert len(tickets) == 3 and all(t["status"] == "open" and t["probable_cause"] for t in tickets)
    incidents = json.loads(run("incidents", "list", "--config", str(config), "--format", "json").stdout)
    assert len(incidents) == 3 and all(i["rca"]["provider"] == "rules" for i in incidents)
    shown = json.loads(run("incidents", "show", str(incidents[0]["id"]), "--config", str(config), "--format",
                           "json").stdout)
    assert shown["occurrences"] == 1 and len(shown["failures"]) == 1 and shown["tickets"]
    assert "pl_" in run("incidents", "show", str(incidents[0]["id"]), "--config", str(config)).stdout

    status = json.loads(run("status", "--config", str(config), "--format", "json").stdout)
    assert status[0]["source"] == "adf-test" and status[0]["backlog"] == 0 and status[0]["cursor"]
    table = run("failures", "list", "--config", str(config))
    assert "Copy_SalesOrders" in table.stdout and "[adf]" not in table.stdout


def test_once_exits_1_when_a_source_fails(tmp_path: Path, live_la: LogAnalyticsEmulator) -> None:
    config = write_config(tmp_path, live_la)
    live_la.inject(Fault(status=503, times=10))
    result = run("once", "--config", str(config))
    assert result.returncode == 1
    assert "HTTP 503" in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("config_text", "message"),
    [
        ("sources: {a: {type: log_analytics}}", "sources.a.workspace_id: required key is missing"),
        ("sources: {a: {type: log_analytics, workspace_id: x, intervall: 5s}}", "sources.a.intervall: unknown key"),
        (
            "sources: {a: {type: log_analytics, workspace_id: '${NOT_SET_ANYWHERE}'}}",
            "sources.a.workspace_id: environment variable NOT_SET_ANYWHERE is not set",
        ),
        (
            "azure: {credential: access_token_env, access_token_env: NO_SUCH_TOKEN_VAR}\n"
            "sources: {a: {type: log_analytics, workspace_id: x}}",
            "azure.access_token_env: environment variable NO_SUCH_TOKEN_VAR is not set or empty",
        ),
        ("sources: [", "is not valid YAML"),
    ],
)
def test_bad_config_exits_2_naming_the_key(tmp_path: Path, config_text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(config_text + f"\nstate: {{url: 'sqlite:///{tmp_path}/s.db'}}\n")
    result = CliRunner().invoke(main, ["once", "--config", str(path)])
    assert result.exit_code == 2
    assert message in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["once", "--config", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "cannot read config file" in result.output


def test_extract_every_reference_alert_and_row(tmp_path: Path) -> None:
    files = sorted((ROOT / "tests" / "testdata" / "alerts").glob("*.json"))
    adf_alerts = []
    for path in files:
        payload = json.loads(path.read_text())["input"]
        target = tmp_path / path.name
        target.write_text(json.dumps(payload))
        result = CliRunner().invoke(main, ["extract", str(target)])
        assert "Traceback" not in result.output
        assert result.exit_code in (0, 1), path.name
        if result.exit_code == 0 and "adf" in path.name:
            adf_alerts.append(json.loads(result.stdout))
    assert adf_alerts and all(isinstance(a, list) for a in adf_alerts)


def test_extract_prints_the_failure_contract(tmp_path: Path) -> None:
    row = activity_row(
        "Copy_SalesOrders",
        run_id="3f6c2a91-7d4e-4b8a-9e21-5c0d7f1a2b34",
        at=datetime(2026, 11, 29, 10, 2, tzinfo=UTC),
        ingested=datetime(2026, 11, 29, 10, 6, tzinfo=UTC),
    )
    path = tmp_path / "row.json"
    path.write_text(json.dumps(row))
    result = CliRunner().invoke(main, ["extract", str(path)])
    assert result.exit_code == 0
    (failure,) = json.loads(result.stdout)
    assert failure["run_id"] == "3f6c2a91-7d4e-4b8a-9e21-5c0d7f1a2b34"
    assert failure["metadata"]["activity_run_id"] == row["ActivityRunId"]
    assert failure["error_code"] == "SqlOperationFailed" and failure["metadata"]["adf_error_code"] == "2200"
    assert failure["source"] is None and "raw" not in failure


@pytest.mark.parametrize("content", ["not json at all", "[1, 2, 3]", '{"hello": "world"}', '"a string"', ""])
def test_extract_garbage_is_one_line_and_exit_1(tmp_path: Path, content: str) -> None:
    path = tmp_path / "garbage.json"
    path.write_text(content)
    result = run("extract", str(path))
    assert result.returncode == 1
    assert json.loads(result.stdout) == []
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and "Traceback" not in result.stderr


def test_extract_unreadable_file_exit_1(tmp_path: Path) -> None:
    result = run("extract", str(tmp_path / "missing.json"))
    assert result.returncode == 1 and "cannot read" in result.stderr


def test_init_writes_a_loadable_config(tmp_path: Path) -> None:
    target = tmp_path / "config.yaml"
    assert CliRunner().invoke(main, ["init", "--path", str(target)]).exit_code == 0
    assert target.read_text() == (ROOT / "config.yaml").read_text()
    again = CliRunner().invoke(main, ["init", "--path", str(target)])
    assert again.exit_code == 1 and "--force" in again.output


def test_second_process_on_same_state_refuses(tmp_path: Path, live_la: LogAnalyticsEmulator) -> None:
    config = write_config(tmp_path, live_la)
    live_la.inject(Fault(delay_seconds=3))
    first = subprocess.Popen(
        [*RCA_POLLER, "once", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    second = run("once", "--config", str(config))
    assert second.returncode == 1
    assert "another rca-poller process" in second.stderr and "--wait" in second.stderr
    assert first.wait(30) == 0
    waited = run("once", "--config", str(config), "--wait")
    assert waited.returncode == 0


def test_sigkill_mid_tick_then_rerun_is_complete_and_consistent(tmp_path: Path, live_la: LogAnalyticsEmulator) -> None:
    count = 4000
    add_failures(live_la, count, ("Copy_SalesOrders", "Call_FxRatesApi", "Copy_RawFile", "Run_FeatureNotebook"))
    bad = activity_row(
        "Copy_RawFile",
        run_id=str(uuid.uuid4()),
        at=datetime.now(UTC) - timedelta(hours=1),
        ingested=datetime.now(UTC) - timedelta(hours=1),
        ActivityRunId="",
    )
    live_la.add_rows("ADFActivityRun", [bad])
    config = write_config(tmp_path, live_la)
    killed = 0
    for delay in (0.8, 1.6, 2.4, 3.2):  # kill at several points: in the query, in extraction, in the commit
        proc = subprocess.Popen(
            [*RCA_POLLER, "once", "--config", str(config)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait(30)
        assert_consistent(tmp_path, count)
    assert killed >= 1
    final = run("once", "--config", str(config))
    assert final.returncode == 0, final.stdout + final.stderr
    store = Store(f"sqlite:///{tmp_path}/state.db")
    assert store.count(FailureRow) == count
    assert store.count(TicketRow) == store.count(IncidentRow) == 4  # four causes, one incident and ticket each
    assert len(store.quarantined()) == 1
    assert store.backlog() == 0


def assert_consistent(tmp_path: Path, count: int) -> None:
    """Whatever moment the kill hit: all or nothing of a tick, never a cursor without its failures."""
    db = tmp_path / "state.db"
    if not db.exists():
        return
    store = Store(f"sqlite:///{db}")
    stored = store.count(FailureRow)
    checkpoint = store.checkpoint("adf-test")
    assert stored in (0, count)
    assert (checkpoint is not None and checkpoint.cursor is not None) == (stored == count)
    keys = [f.key for f in store.failures()]
    assert len(keys) == len(set(keys))
    store.close()


def test_demo_runs_offline(tmp_path: Path) -> None:
    result = run("demo", "--keep", str(tmp_path / "demo"))  # its time is measured in bench/README.md
    assert result.returncode == 0, result.stderr
    assert "pl_customer_features" in result.stdout and "quarantined" in result.stdout
    store = Store(f"sqlite:///{tmp_path / 'demo' / 'rca-poller.db'}")
    failures = store.failures()
    assert {f.service for f in failures} == {"adf", "synapse", "functions", "databricks"}
    assert len({f.key for f in failures}) == len(failures) == store.count(FailureRow)
    assert store.backlog() == 0
    assert store.count(TicketRow) == store.count(IncidentRow) <= len(failures)  # one local ticket per incident
    assert all(i.rca_status == "done" for i in store.incidents())
    sample = run("extract", str(tmp_path / "demo" / "sample-alert.json"))
    assert sample.returncode == 0 and json.loads(sample.stdout)[0]["error_code"] == "TypeConversionFailure"
