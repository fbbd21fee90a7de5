"""`rca-poller demo`: the whole flow offline, against the built-in emulators and bundled real-shaped data."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from poller.config import Config, parse_config
from poller.emulators.log_analytics import LogAnalyticsEmulator
from poller.models import iso
from poller.pipeline import TickResult, process, tick
from poller.sources import build_sources
from poller.store import Store

DATA = Path(__file__).parent / "emulators" / "data" / "demo"
# The bundled rows are written around this moment; the demo moves them so that it is "now".
DATA_EPOCH = datetime(2026, 11, 29, 10, 15, tzinfo=UTC)
SECOND_TICK_AFTER = timedelta(minutes=15)
DEMO_TOKEN = "demo-token-not-a-secret"
TIME_COLUMNS = ("TimeGenerated", "Start", "End")


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
    tables = ("ADFActivityRun", "ADFPipelineRun")
    with demo_environment() as env, LogAnalyticsEmulator(clock=clock, empty_tables=tables) as la:
        env["REQUESTS_CA_BUNDLE"] = str(la.ca_path)
        env["AZURE_ACCESS_TOKEN"] = DEMO_TOKEN
        load_demo_rows(la, clock.now - DATA_EPOCH)
        config_path = write_config(workdir, la)
        config = parse_config(yaml.safe_load(config_path.read_text()), {})
        console.rule("rca-poller demo — offline, against the built-in Log Analytics emulator")
        console.print(f"emulator: {la.url} (workspace {la.workspace_id}); config: {config_path}")
        store = Store(config.state.url)
        try:
            first = run_tick(console, config, store, clock, "tick 1 (15 minutes ago, simulated)")
            clock.now += SECOND_TICK_AFTER
            second = run_tick(console, config, store, clock, "tick 2 (15 minutes later, simulated)")
            process(store, clock.now)
            show_results(console, store, first, second)
        finally:
            store.close()
    console.print(
        f"\nState file: {workdir / 'rca-poller.db'}\nTry next:\n"
        f"  rca-poller failures list --config {config_path} --format json\n"
        f"  rca-poller tickets list --config {config_path}\n"
        f"  rca-poller status --config {config_path}\n"
        f"  rca-poller extract {write_sample_alert(workdir)}   (an Azure Monitor alert payload)\n"
        "  Point it at a real workspace: see 'Pointing it at a real workspace' in README.md"
    )


def run_tick(console: Console, config: Config, store: Store, clock: DemoClock, title: str) -> TickResult:
    (source,) = build_sources(config, _credential(config))
    try:
        result = tick(source, store, clock.now)
    finally:
        source.close()
    if not result.ok:
        raise RuntimeError(f"demo tick failed: {result.error}")
    console.print(f"{title}: read {result.rows_read} rows → {result.failures} failures "
                  f"({result.added} new), {result.quarantined} quarantined")
    return result


def show_results(console: Console, store: Store, first: TickResult, second: TickResult) -> None:
    from poller.render import print_failures, print_tickets

    print_failures(store.failures())
    print_tickets(store.tickets())
    for row in store.quarantined():
        console.print(f"quarantined: {row.reason}")
    console.print(
        f"Tick 1 stored {first.added} failures. Tick 2 added {second.added}: the Databricks notebook failure, whose "
        "log row was ingested 15 minutes late and so invisible to tick 1, and the parameter error of "
        "pl_monthly_close, judged once its pipeline row had settled (a failed pipeline with no failed activity). "
        "The ForEach wrapper and the heartbeat row made no failure of their own, each failed pipeline run "
        "appears once, and the row with no run id was quarantined once, though both ticks read it."
    )


def write_sample_alert(workdir: Path) -> Path:
    """A Log Alerts V2 payload as an action group would have pushed it, for `rca-poller extract`."""
    path = workdir / "sample-alert.json"
    path.write_text((DATA / "log_alert_v2.json").read_text(encoding="utf-8"))
    return path


def load_demo_rows(la: LogAnalyticsEmulator, shift: timedelta) -> None:
    for table in ("ADFActivityRun", "ADFPipelineRun"):
        rows = json.loads((DATA / f"{table}.json").read_text(encoding="utf-8"))
        la.add_rows(table, [shifted(row, shift) for row in rows])


def shifted(row: dict[str, Any], shift: timedelta) -> dict[str, Any]:
    out = dict(row)
    for column in TIME_COLUMNS:
        value = out.get(column)
        if value and not str(value).startswith("1601-"):
            out[column] = iso(datetime.fromisoformat(str(value).replace("Z", "+00:00")[:26] + "+00:00") + shift)
    return out


def write_config(workdir: Path, la: LogAnalyticsEmulator) -> Path:
    config = {
        "state": {"url": f"sqlite:///{workdir / 'rca-poller.db'}"},
        "azure": {"credential": "access_token_env", "access_token_env": "AZURE_ACCESS_TOKEN"},
        "sources": {"adf-demo": {"type": "log_analytics", "workspace_id": la.workspace_id, "endpoint": la.url,
                                 "initial_lookback": "2h"}},
    }
    path = workdir / "config.yaml"
    path.write_text("# Written by `rca-poller demo`; the emulator it points at is gone once the demo ends.\n"
                    + yaml.safe_dump(config, sort_keys=False))
    return path


@contextmanager
def demo_environment() -> Iterator[dict[str, str]]:
    """Environment variables the demo sets for its own clients, restored afterwards."""
    names = ("REQUESTS_CA_BUNDLE", "AZURE_ACCESS_TOKEN")
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
