"""`rca-poller backfill`: 30 days in chunks, SIGKILL mid-run, resume, rate limits, dry run, the live cursor."""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from poller.backfill import Plan, anchor, backfill_name, parse_when
from poller.cli import main
from poller.emulators.log_analytics import Fault, LogAnalyticsEmulator
from poller.emulators.tls import ThrowawayCA
from poller.lock import StateLock
from poller.models import iso
from poller.sources import Window
from poller.store import FailureRow, Store
from tests.conftest import TOKEN, activity_row
from tests.test_daemon import RCA_POLLER, ROOT, child_env, emulator, la_source, wait_until, write_config

NOW = datetime(2026, 11, 29, 14, 37, 12, tzinfo=UTC)


@pytest.fixture
def ca(tmp_path: Path) -> ThrowawayCA:
    folder = tmp_path / "ca"
    folder.mkdir()
    return ThrowawayCA(folder)


# --- WHEN, chunks and the cursor name ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T06:00Z", datetime(2026, 11, 1, 6, tzinfo=UTC)),
        ("2026-11-01T06:00:00+01:00", datetime(2026, 11, 1, 5, tzinfo=UTC)),
        ("2026-11-01T06:00", datetime(2026, 11, 1, 6, tzinfo=UTC)),  # no zone: UTC
        ("7d", datetime(2026, 11, 22, 14, tzinfo=UTC)),  # ago, from the start of this hour
        ("36h", datetime(2026, 11, 28, 2, tzinfo=UTC)),
        (" 90m ", datetime(2026, 11, 29, 12, 30, tzinfo=UTC)),
    ],
)
def test_parse_when(text: str, expected: datetime) -> None:
    assert parse_when(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01", "7 days", ""])
def test_parse_when_rejects_with_the_forms_it_takes(text: str) -> None:
    with pytest.raises(ValueError, match=r"is neither a date \(2026-11-01\), a time \(2026-11-01T06:00Z\)"):
        parse_when(text, NOW)


def test_a_relative_range_keeps_its_name_within_the_hour() -> None:
    later = NOW + timedelta(minutes=20)
    assert parse_when("7d", NOW) == parse_when("7d", later) and anchor(later) == anchor(NOW)
    assert backfill_name("a", parse_when("7d", NOW), None) == "backfill:a:2026-11-22T14:00:00Z:now"


class Named:
    name = "adf"
    interval = timedelta(seconds=60)


def test_chunks_cover_the_range_and_resume_from_the_cursor() -> None:
    since, until = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, 3, tzinfo=UTC)
    plan = Plan(Named(), since, until, timedelta(hours=6))  # type: ignore[arg-type]
    windows = plan.windows(None)
    assert [w.start.hour for w in windows] == [0, 6, 12, 18, 0] and windows[-1] == Window(until - timedelta(hours=3),
                                                                                           until)
    assert plan.windows(datetime(2026, 11, 1, 18, tzinfo=UTC))[0].start == datetime(2026, 11, 1, 18, tzinfo=UTC)
    assert plan.windows(until) == []
    assert plan.cursor_name == f"backfill:adf:{iso(since)}:{iso(until)}"


# --- against the emulator, as a process --------------------------------------------------------------------


def month_of_failures(la: LogAnalyticsEmulator, until: datetime) -> set[str]:
    """Four failed activity runs a day for 30 days, each ingested five minutes after it ended."""
    rows = []
    for n in range(120):
        at = until - timedelta(hours=6 * n + 1)
        ingested = at + timedelta(minutes=5)
        rows.append(activity_row("Copy_SalesOrders", run_id=str(uuid.uuid4()), at=at, ingested=ingested))
    la.add_rows("ADFActivityRun", rows)
    return {f"adf:activity:{r['ActivityRunId']}" for r in rows}


def cursor(db: Path, name: str) -> datetime | None:
    """A checkpoint's cursor, read as another process would while the backfill writes."""
    if not db.exists():
        return None
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            row = conn.execute("SELECT cursor FROM checkpoints WHERE name = ?", (name,)).fetchone()
    except sqlite3.OperationalError:  # the backfill is still creating the schema
        return None
    return datetime.fromisoformat(row[0]).replace(tzinfo=UTC) if row and row[0] else None


def ingest_froms(la: LogAnalyticsEmulator) -> list[datetime]:
    found = (re.search(r"let ingestFrom = datetime\(([^)]+)\)", r.query or "") for r in la.requests)
    return sorted(datetime.fromisoformat(m.group(1).replace("Z", "+00:00")) for m in found if m)


def invoke(*args: str) -> Result:
    """The command in this process (the emulator's CA and token are in the environment)."""
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def ca_env(ca: ThrowawayCA, monkeypatch: pytest.MonkeyPatch) -> ThrowawayCA:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca.ca_path))
    monkeypatch.setenv("AZURE_ACCESS_TOKEN", TOKEN)
    return ca


def test_a_30_day_backfill_resumes_after_sigkill_without_duplicates(tmp_path: Path, ca_env: ThrowawayCA) -> None:
    until = anchor(datetime.now(UTC))
    since = until - timedelta(days=30)
    with emulator(ca_env) as la:
        expected = month_of_failures(la, until)
        config = write_config(tmp_path, {"adf-test": la_source(la, max_retries=3)})
        args = ["backfill", "--config", str(config), "--since", iso(since), "--until", iso(until), "--chunk", "1d"]
        name = backfill_name("adf-test", since, until)
        db = tmp_path / "state.db"

        la.inject(Fault(delay_seconds=0.1, times=40))  # slow enough to be caught mid-run
        first = subprocess.Popen([*RCA_POLLER, *args], cwd=ROOT, env=child_env(ca_env), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        wait_until(lambda: (cursor(db, name) or since) >= since + timedelta(days=4), 30, "a few committed chunks")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed_at = cursor(db, name)
        assert killed_at is not None and killed_at < until

        la.clear_faults()
        la.reset_requests()
        la.inject(Fault(status=429))  # throttled, without Retry-After: the source's own backoff waits it out
        second = invoke(*args)
        assert second.exit_code == 0, second.output
        assert f"resuming at {iso(killed_at)}" in second.stdout
        assert min(ingest_froms(la)) == killed_at  # carried on from the cursor, did not start over
        statuses = [r.status for r in la.requests]
        assert statuses.count(429) == 1 and statuses[statuses.index(429) + 1] == 200  # waited, asked again
        again = invoke(*args)  # nothing left to read
        assert again.exit_code == 0 and "0 chunk(s)" in again.stdout

    store = Store(f"sqlite:///{db}")
    assert {f.key for f in store.failures()} == expected and store.count(FailureRow) == len(expected)
    assert cursor(db, name) == until
    assert store.checkpoint("adf-test") is None  # the live cursor never moved
    assert store.backlog() == 0  # processed once the backfill finished
    assert "backfill adf-test" in second.stderr and "rows" in second.stderr and "ETA" in second.stderr


def test_dry_run_counts_and_stores_nothing_even_beside_a_running_owner(tmp_path: Path, ca_env: ThrowawayCA) -> None:
    until = anchor(datetime.now(UTC))
    with emulator(ca_env) as la:
        expected = month_of_failures(la, until)
        config = write_config(tmp_path, {"adf-test": la_source(la)})
        Store(f"sqlite:///{tmp_path}/state.db").close()
        args = ["backfill", "--config", str(config), "--since", "30d", "--chunk", "7d"]
        with StateLock(f"sqlite:///{tmp_path}/state.db"):  # as if `rca-poller run` owned the store
            dry = invoke(*args, "--dry-run")
            busy = invoke(*args)
    assert dry.exit_code == 0, dry.output
    assert f"{len(expected)} failures, nothing stored (dry run)" in dry.stdout
    assert busy.exit_code == 1 and "another rca-poller process" in busy.stderr
    store = Store(f"sqlite:///{tmp_path}/state.db")
    assert store.count(FailureRow) == 0 and store.checkpoints() == []


def test_a_failed_chunk_stops_with_exit_1_and_the_same_command_resumes(tmp_path: Path, ca_env: ThrowawayCA) -> None:
    until = anchor(datetime.now(UTC))
    since = until - timedelta(days=3)
    with emulator(ca_env) as la:
        config = write_config(tmp_path, {"adf-test": la_source(la)})
        args = ["backfill", "--config", str(config), "--since", iso(since), "--until", iso(until), "--chunk", "1d"]
        la.inject(Fault(status=400))  # refused: not retryable, the chunk fails
        failed = invoke(*args)
        resumed = invoke(*args)
    assert failed.exit_code == 1 and "run the same command again to resume" in failed.stdout
    assert resumed.exit_code == 0 and "3 chunk(s)" in resumed.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "2026-11-02", "--until", "2026-11-01"], "--since (2026-11-02T00:00:00Z) must be before --until"),
        (["--since", "soon"], "'soon' is neither a date"),
        (["--since", "1d", "--chunk", "0s"], "and --chunk positive"),
        (["--since", "1d", "--source", "nope"], "sources.nope: no such source"),
    ],
)
def test_bad_arguments_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    config = write_config(tmp_path, {"adf-test": {"type": "log_analytics", "workspace_id": "ws"}})
    result = CliRunner().invoke(main, ["backfill", "--config", str(config), *args])
    assert result.exit_code == 2 and message in result.output
