"""`rca-poller demo`: the whole flow offline, against the built-in emulators and bundled real-shaped data."""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from poller.config import Config, parse_config
from poller.emulators.databricks import DEMO_DATA_DIR as DATABRICKS_DEMO_DATA
from poller.emulators.databricks import DatabricksEmulator
from poller.emulators.itsm import DEFAULT_PASSWORD as SERVICENOW_PASSWORD
from poller.emulators.itsm import DEFAULT_USER as SERVICENOW_USER
from poller.emulators.itsm import ServiceNowEmulator
from poller.emulators.log_analytics import LogAnalyticsEmulator
from poller.emulators.synapse import DEMO_DATA as SYNAPSE_DEMO_DATA
from poller.emulators.synapse import SynapseEmulator, load_runs
from poller.emulators.tls import ThrowawayCA
from poller.incidents import build_processor
from poller.models import iso
from poller.pipeline import TickResult, process, tick
from poller.sources import build_sources
from poller.store import Store

DATA = Path(__file__).parent / "emulators" / "data" / "demo"
# The bundled rows are written around this moment; the demo moves them so that it is "now".
DATA_EPOCH = datetime(2026, 11, 29, 10, 15, tzinfo=UTC)
SECOND_TICK_AFTER = timedelta(minutes=15)
DEMO_TOKEN = "demo-token-not-a-secret"
TIME_COLUMNS = ("TimeGenerated", "Start", "End", "start_t", "end_t")
#: Every table the demo workspace holds: ADF in both modes (a legacy factory, and one migrating), Synapse, Functions.
DEMO_TABLES = (
    "ADFActivityRun", "ADFPipelineRun", "AzureDiagnostics", "SynapseIntegrationPipelineRuns",
    "SynapseIntegrationActivityRuns", "AppExceptions", "FunctionAppLogs",
)
DEMO_SYNAPSE_WORKSPACE = "syn-analytics-prod"
DATABRICKS_TOKEN_ENV = "RCA_DEMO_DATABRICKS_TOKEN"
SERVICENOW_PASSWORD_ENV = "RCA_DEMO_SERVICENOW_PASSWORD"
RERUN_ACTIVITY, RERUN_AFTER = "Copy_SalesOrders", timedelta(minutes=12)
#: The demo workspace's run that is still going at tick 1 and fails before tick 2.
DATABRICKS_LATE_RUN, DATABRICKS_LATE_TASK = 550120987700401, 550120987700451


class DemoClock:
    """Simulated time: the second tick happens fifteen minutes 'later' without waiting for it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def run_demo(console: Console, keep: Path | None = None) -> None:
    workdir = keep or Path(tempfile.mkdtemp(prefix="rca-poller-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    # Tick 1 runs "fifteen minutes ago" and tick 2 now, so the state the demo leaves reads as current.
    clock = DemoClock(datetime.now(UTC).replace(microsecond=0) - SECOND_TICK_AFTER)
    ca = ThrowawayCA(workdir)  # one CA for both emulators: one REQUESTS_CA_BUNDLE
    shift = clock.now - DATA_EPOCH
    with (
        demo_environment() as env,
        LogAnalyticsEmulator(clock=clock, ca=ca) as la,
        SynapseEmulator(load_runs(SYNAPSE_DEMO_DATA), ca=ca) as synapse,
        DatabricksEmulator(DATABRICKS_DEMO_DATA, workspace_id="2567941339669575") as dbx,
        ServiceNowEmulator() as servicenow,
    ):
        env["REQUESTS_CA_BUNDLE"] = str(ca.ca_path)
        env["AZURE_ACCESS_TOKEN"] = DEMO_TOKEN
        load_demo_rows(la, shift)
        synapse.shift(shift)
        env[DATABRICKS_TOKEN_ENV] = dbx.token
        env[SERVICENOW_PASSWORD_ENV] = SERVICENOW_PASSWORD
        dbx.rebase(_ms(clock.now - timedelta(minutes=2)))  # the newest Databricks event: just before tick 1
        config_path = write_config(workdir, la, synapse, dbx, servicenow.url)
        config = parse_config(yaml.safe_load(config_path.read_text()), {})
        console.rule("rca-poller demo — offline, against the built-in Log Analytics, Synapse and Databricks emulators")
        console.print(f"emulator: {la.url} (workspace {la.workspace_id}); Synapse {DEMO_SYNAPSE_WORKSPACE}: "
                      f"{synapse.url}; Databricks: {dbx.url}; ServiceNow: {servicenow.url}; config: {config_path}")
        store = Store(config.state.url)
        processor = build_processor(config)
        try:
            first = run_tick(console, config, store, clock, "tick 1 (15 minutes ago, simulated)")
            process(store, clock.now, processor)
            show_servicenow(console, servicenow, "after tick 1")
            fail_running_databricks_run(dbx, clock.now + timedelta(minutes=6))
            add_rerun_failure(la, shift)
            clock.now += SECOND_TICK_AFTER
            second = run_tick(console, config, store, clock, "tick 2 (now)")
            process(store, clock.now, processor)
            show_servicenow(console, servicenow, "after tick 2")
            show_results(console, store, first["adf-demo"], second["adf-demo"])
            show_databricks(console, first["dbx-demo"], second["dbx-demo"])
        finally:
            store.close()
    console.print(
        f"\nState file: {workdir / 'rca-poller.db'}\nTry next:\n"
        f"  rca-poller failures list --config {config_path} --format json\n"
        f"  rca-poller incidents list --config {config_path}\n"
        f"  rca-poller incidents show 2 --config {config_path}\n"
        f"  rca-poller tickets list --config {config_path}\n"
        f"  rca-poller status --config {config_path}\n"
        f"  rca-poller extract {write_sample_alert(workdir)}   (an Azure Monitor alert payload)\n"
        "  Point it at a real workspace: see 'Pointing it at a real workspace' in README.md"
    )


def run_tick(console: Console, config: Config, store: Store, clock: DemoClock, title: str) -> dict[str, TickResult]:
    results: dict[str, TickResult] = {}
    for source in build_sources(config, _credential(config)):
        try:
            result = tick(source, store, clock.now)
        finally:
            source.close()
        if not result.ok:
            raise RuntimeError(f"demo tick of {source.name} failed: {result.error}")
        console.print(f"{title}, {source.name}: read {result.rows_read} rows → {result.failures} failures "
                      f"({result.added} new), {result.quarantined} quarantined")
        results[source.name] = result
    return results


def add_rerun_failure(la: LogAnalyticsEmulator, shift: timedelta) -> None:
    """Between the ticks, pl_sales_daily_load is rerun and Copy_SalesOrders fails the same way: a recurrence."""
    rows = json.loads((DATA / "ADFActivityRun.json").read_text(encoding="utf-8"))
    row = next(r for r in rows if r.get("ActivityName") == RERUN_ACTIVITY and r.get("Status") == "Failed")
    rerun = shifted(row, shift + RERUN_AFTER) | {
        "ActivityRunId": str(uuid.uuid5(uuid.NAMESPACE_URL, "demo-rerun-activity")),
        "PipelineRunId": str(uuid.uuid5(uuid.NAMESPACE_URL, "demo-rerun-pipeline")),
        "CorrelationId": str(uuid.uuid5(uuid.NAMESPACE_URL, "demo-rerun-correlation")),
    }
    la.add_rows("ADFActivityRun", [rerun])


def show_servicenow(console: Console, servicenow: ServiceNowEmulator, when: str) -> None:
    """The ServiceNow emulator's incidents: opened once per incident, work notes when one recurs."""
    notes = sum(len(n) for n in servicenow.journal.values())
    updated = [r for r in servicenow.incidents.values() if servicenow.journal[r["sys_id"]]]
    console.print(f"ServiceNow {when}: {len(servicenow.incidents)} incident(s) (one per incident, correlation_id = "
                  f"its marker), {notes} work note(s) on recurrences")
    for record in updated[:3]:
        console.print(f"  {record['number']} {record['short_description'][:90]} — work note: "
                      f"{servicenow.journal[record['sys_id']][-1].splitlines()[0]}")


def fail_running_databricks_run(dbx: DatabricksEmulator, at: datetime) -> None:
    """Between the ticks, the hourly run that tick 1 saw running fails."""
    dbx.finish_run(DATABRICKS_LATE_RUN, "FAILED", end_time=_ms(at),
                   state_message="Task load_events failed with message: Workload failed, see run output for details.")
    dbx.set_output(DATABRICKS_LATE_TASK,
                   error="AnalysisException: [DELTA_CONCURRENT_APPEND] ConcurrentAppendException: Files were added to "
                   "the root of the table by a concurrent update. Please try the operation again.",
                   error_trace="\x1b[0;31mConcurrentAppendException\x1b[0m   Traceback (most recent call last)")


def show_databricks(console: Console, first: TickResult, second: TickResult) -> None:
    console.print(
        f"Databricks (dbx-demo, through databricks-sdk): tick 1 stored {first.added} failures — failed and "
        "timed-out job tasks with the error of the attempt that failed last (the retried ingest_orders once), "
        "none for the tasks skipped because an upstream task failed; an unexpected cluster termination, a failed "
        "start over the Azure quota, lost nodes, a driver not responding, a failing init script; and a library "
        f"that cannot install. Tick 2 added {second.added}: the hourly-web-events run, still running at tick 1, "
        "failed in between — caught once, from the task run's own output."
    )


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def show_results(console: Console, store: Store, first: TickResult, second: TickResult) -> None:
    from poller.render import print_failures, print_incidents, print_tickets

    print_failures(store.failures())
    print_incidents(store.incidents())
    print_tickets(store.tickets())
    for row in store.quarantined():
        console.print(f"quarantined: {row.reason}")
    console.print(
        f"Tick 1 stored {first.added} failures. Tick 2 added {second.added}: the Databricks notebook failure, whose "
        "log row was ingested 15 minutes late and so invisible to tick 1, and the failed pipelines with no failed "
        "activity (pl_monthly_close, the legacy pl_fx_revaluation, Synapse's pl_archive_raw), each judged once its "
        "pipeline row had settled, and a rerun of pl_sales_daily_load whose Copy_SalesOrders failed the same way — a "
        "recurrence, so its ServiceNow incident got a work note rather than a second incident. The ForEach wrappers "
        "and heartbeat rows made no failure of their own, each failed "
        "pipeline run appears once, and the row with no run id was quarantined once, though both ticks read it. "
        "The legacy factory adf-finance-legacy logs to AzureDiagnostics, and its failures read like the others; the "
        "fx-rates call, logged in both modes while its factory migrates, is one failure. The Synapse logs carry no "
        "error text: it was fetched from the workspace's pipeline-run API. ProcessOrder's exception, logged three "
        "times, is one Functions failure with the innermost SQL error."
    )


def write_sample_alert(workdir: Path) -> Path:
    """A Log Alerts V2 payload as an action group would have pushed it, for `rca-poller extract`."""
    path = workdir / "sample-alert.json"
    path.write_text((DATA / "log_alert_v2.json").read_text(encoding="utf-8"))
    return path


def load_demo_rows(la: LogAnalyticsEmulator, shift: timedelta) -> None:
    for table in DEMO_TABLES:
        rows = json.loads((DATA / f"{table}.json").read_text(encoding="utf-8"))
        la.add_rows(table, [shifted(row, shift) for row in rows])


def shifted(row: dict[str, Any], shift: timedelta) -> dict[str, Any]:
    out = dict(row)
    for column in TIME_COLUMNS:
        value = out.get(column)
        if value and not str(value).startswith("1601-"):
            out[column] = iso(datetime.fromisoformat(str(value).replace("Z", "+00:00")[:26] + "+00:00") + shift)
    return out


def write_config(workdir: Path, la: LogAnalyticsEmulator, synapse: SynapseEmulator, dbx: DatabricksEmulator,
                 servicenow_url: str) -> Path:
    config = {
        "state": {"url": f"sqlite:///{workdir / 'rca-poller.db'}"},
        "azure": {"credential": "access_token_env", "access_token_env": "AZURE_ACCESS_TOKEN"},
        "sources": {"adf-demo": {"type": "log_analytics", "workspace_id": la.workspace_id, "endpoint": la.url,
                                 "initial_lookback": "2h", "services": ["adf", "synapse", "functions"],
                                 "synapse_endpoints": {DEMO_SYNAPSE_WORKSPACE: synapse.url}},
                    "dbx-demo": {"type": "databricks", "host": dbx.url, "token_env": DATABRICKS_TOKEN_ENV,
                                 "initial_lookback": "12h", "requests_per_second": 50}},
        # A recurrence updates its ServiceNow incident at once here (repeat_interval), so tick 2 shows updates.
        "sinks": {"servicenow-demo": {"type": "servicenow", "instance_url": servicenow_url,
                                      "username": SERVICENOW_USER, "password_env": SERVICENOW_PASSWORD_ENV,
                                      "repeat_interval": "1m"}},
    }
    path = workdir / "config.yaml"
    path.write_text("# Written by `rca-poller demo`; the emulator it points at is gone once the demo ends.\n"
                    + yaml.safe_dump(config, sort_keys=False))
    return path


@contextmanager
def demo_environment() -> Iterator[dict[str, str]]:
    """Environment variables the demo sets for its own clients, restored afterwards."""
    names = ("REQUESTS_CA_BUNDLE", "AZURE_ACCESS_TOKEN", DATABRICKS_TOKEN_ENV, SERVICENOW_PASSWORD_ENV)
    saved = {name: os.environ.get(name) for name in names}

    class Env(dict[str, str]):
        def __setitem__(self, key: str, value: str) -> None:
            os.environ[key] = value
            super().__setitem__(key, value)

    try:
        yield Env()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _credential(config: Config) -> Any:
    from poller.azure_auth import build_credential

    return build_credential(config.azure)
