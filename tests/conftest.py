"""Shared fixtures: a controllable clock, the Log Analytics emulator over HTTPS, and real-shaped ADF rows."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from poller.config import Config, parse_config
from poller.emulators.log_analytics import LogAnalyticsEmulator

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "poller" / "emulators" / "data" / "demo"
TOKEN = "test-la-token"
START = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
ADF_TABLES = ("ADFActivityRun", "ADFPipelineRun")


class Clock:
    """A clock tests move by hand; the emulator and the ticks read the same one."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def la(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> Iterator[LogAnalyticsEmulator]:
    with LogAnalyticsEmulator(clock=clock, expected_token=TOKEN, empty_tables=ADF_TABLES) as emulator:
        # The CA reaches the SDK the way an operator's private CA does: the standard requests variable.
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(emulator.ca_path))
        monkeypatch.setenv("AZURE_ACCESS_TOKEN", TOKEN)
        yield emulator


def la_config(tmp_path: Path, la: LogAnalyticsEmulator, **source: Any) -> Config:
    settings = {
        "type": "log_analytics",
        "workspace_id": la.workspace_id,
        "endpoint": la.url,
        "max_retries": 2,
        **source,
    }
    return parse_config(
        {
            "state": {"url": f"sqlite:///{tmp_path}/state.db"},
            "azure": {"credential": "access_token_env"},
            "sources": {"adf-test": settings},
        },
        {},
    )


def demo_rows(table: str) -> list[dict[str, Any]]:
    return list(json.loads((DEMO / f"{table}.json").read_text()))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def activity_row(template: str, *, run_id: str, at: datetime, ingested: datetime, **changes: Any) -> dict[str, Any]:
    """A failed ADFActivityRun row copied from the bundled real-shaped samples, with new ids and times."""
    base = next(r for r in demo_rows("ADFActivityRun") if r["ActivityName"] == template and r["Status"] == "Failed")
    row = copy.deepcopy(base)
    row.pop("_IngestionDelaySeconds", None)
    row.update(
        PipelineRunId=run_id,
        CorrelationId=run_id,
        ActivityRunId=str(uuid.uuid4()),
        TimeGenerated=_iso(at),
        End=_iso(at),
        Start=_iso(at - timedelta(minutes=2)),
        _IngestionTime=_iso(ingested),
    )
    row.update(changes)
    return row


def pipeline_row(template: str, *, run_id: str, at: datetime, ingested: datetime, **changes: Any) -> dict[str, Any]:
    base = next(r for r in demo_rows("ADFPipelineRun") if r["PipelineName"] == template)
    row = copy.deepcopy(base)
    row.pop("_IngestionDelaySeconds", None)
    row.update(
        RunId=run_id,
        CorrelationId=run_id,
        TimeGenerated=_iso(at),
        End=_iso(at),
        Start=_iso(at - timedelta(minutes=3)),
        _IngestionTime=_iso(ingested),
    )
    row.update(changes)
    return row
