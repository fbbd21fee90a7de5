"""Requests and wall time of Databricks source ticks on a 500-cluster, 2,000-run workspace (the emulator).

Run:  python bench/databricks_tick.py [--clusters 500] [--runs 2000] [--rps 10] [--whole]

The real databricks-sdk talks to the emulator over a socket; each tick is the pipeline's own `tick` (poll,
extract, one SQLite commit). Requests are counted from the emulator's log (API calls only; the SDK's one
`/.well-known` probe per client is left out). The source has the default config: interval 2m,
cluster_interval 5m, quiet_tick_requests 5 (the first tick of a process sweeps clusters and libraries whole;
later sweeps begin 5 minutes or more after the last one began and read one clusters/list page, or the
library statuses, per tick: what 5 requests leave after the jobs reads). Ticks, on the simulated clock:

  cold         the first tick: 24 h initial lookback, every run since then listed (no memory yet); sweeps whole
  quiet        2 minutes after a catch-up tick (a new process an hour later, which swept whole), nothing
               changed: no sweep due, jobs only
  quiet+sweep  6 minutes after the catch-up tick (after another quiet tick at 4), nothing changed: a sweep
               begins, one page
  busy         2 minutes later, the sweep under way: in the 5 minutes before, 20 runs failed, 2 clusters
               terminated unexpectedly and 1 library failed to install; the ticks after it are followed until
               all 23 failures are in (the clusters and the library wait for the sweep to reach them)
  restart      from a fresh process (cron mode, `rca-poller once`): no memory of active runs; the first tick
               of a process always sweeps whole
  steady       the restarted process then ticks every 2 minutes for an hour, nothing changing
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from poller.config import DatabricksSourceConfig, parse_config  # noqa: E402
from poller.emulators.databricks import DatabricksEmulator, make_workspace  # noqa: E402
from poller.emulators.databricks_runs import terminal_state  # noqa: E402
from poller.pipeline import TickResult, tick  # noqa: E402
from poller.sources.databricks import DatabricksSource  # noqa: E402
from poller.store import Store  # noqa: E402

BASE = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
TOKEN_ENV = "BENCH_DATABRICKS_TOKEN"
# make_workspace ends a few runs and clusters up to 45 minutes after its base time: an unreported tick an hour
# later reads those, so that the quiet tick after it finds nothing new.
CATCH_UP_AFTER = timedelta(hours=1)
BUSY_FAILURES = 23  # make_busy: 20 task failures, 2 cluster terminations, 1 library


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def make_busy(emu: DatabricksEmulator, now: datetime) -> None:
    """What happens in the five minutes before the busy tick."""
    start = ms(now - timedelta(minutes=4))
    for i in range(20):
        run_id = 990_000_000 + i * 10
        ok, failed = terminal_state("SUCCESS"), terminal_state("FAILED")
        tasks = [{"task_key": "ingest", "run_id": run_id + 1, "attempt_number": 0, "state": ok[0], "status": ok[1]},
                 {"task_key": "transform", "run_id": run_id + 2, "attempt_number": 0, "state": failed[0],
                  "status": failed[1], "notebook_task": {"notebook_path": f"/Repos/etl/transform_{i}"}}]
        emu.add_run({"job_id": 500_000_000 + i, "run_id": run_id, "run_name": f"etl-job-{i:03d}", "start_time": start,
                     "end_time": start + 120_000, "state": failed[0], "status": failed[1], "tasks": tasks})
        emu.set_output(run_id + 2, error=f"KeyError: 'col_{i}'", error_trace="KeyError\n  at line 3")
    running = [c for c in emu.snapshot().clusters if c.get("state") == "RUNNING"]
    for c in running[:2]:
        emu.set_cluster_state(c["cluster_id"], "TERMINATED", at=ms(now - timedelta(minutes=2)), termination_reason={
            "code": "DRIVER_UNREACHABLE", "type": "SERVICE_FAULT", "parameters": {}})
    emu.set_library_status(running[2]["cluster_id"], {"pypi": {"package": "pandas==9.9.9"}}, "FAILED",
                           ["ERROR: No matching distribution found for pandas==9.9.9"])


def measure(emu: DatabricksEmulator, source: DatabricksSource, store: Store, now: datetime,
            ) -> tuple[TickResult, int, float, Counter[str]]:
    emu.reset_log()
    began = time.perf_counter()
    result = tick(source, store, now)
    seconds = time.perf_counter() - began
    if not result.ok:
        raise SystemExit(f"tick failed: {result.error}")
    paths = Counter(endpoint(r.path, r.query) for r in emu.requests if r.path.startswith("/api/"))
    return result, sum(paths.values()), seconds, paths


def endpoint(path: str, query: dict[str, list[str]]) -> str:
    """The API path after /api/<version>/, runs/list told apart by its listing (active or completed)."""
    name = path.split("/", 3)[3]
    if name == "jobs/runs/list":
        return f"{name}?{'active_only' if query.get('active_only') else 'completed_only'}"
    return name


def swept(paths: Counter[str]) -> bool:
    return paths["clusters/list"] + paths["libraries/all-cluster-statuses"] > 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clusters", type=int, default=500)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--rps", type=float, default=10.0, help="requests_per_second of the source")
    parser.add_argument("--whole", action="store_true", help="quiet_tick_requests: null (due sweeps read whole)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-dbx-"))
    with DatabricksEmulator(workspace_id="1234567890") as emu:
        emu.load(make_workspace(args.clusters, args.runs, base_ms=ms(BASE)))
        settings = {"type": "databricks", "host": emu.url, "token_env": TOKEN_ENV,
                    "requests_per_second": args.rps, **({"quiet_tick_requests": None} if args.whole else {})}
        config = parse_config({"state": {"url": f"sqlite:///{workdir / 'state.db'}"},
                               "sources": {"dbx": settings}}, {})
        cfg = config.sources["dbx"]
        assert isinstance(cfg, DatabricksSourceConfig)
        store = Store(config.state.url)

        def fresh() -> DatabricksSource:
            return DatabricksSource("dbx", cfg, environ={TOKEN_ENV: emu.token})

        source = fresh()
        now = BASE
        rows = []
        # (tick, time since the previous tick, a new process); unreported ticks are named in parentheses
        plan = [("cold", timedelta(0), False), ("(catch-up)", CATCH_UP_AFTER, True),
                ("quiet", cfg.interval, False), ("(quiet, 4 min after the sweep)", cfg.interval, False),
                ("quiet+sweep", cfg.interval, False), ("busy", cfg.interval, False)]
        for name, after, new_process in plan:
            now += after
            if name == "busy":
                make_busy(emu, now)
            if new_process:
                source = fresh()
            result, requests, seconds, paths = measure(emu, source, store, now)
            if not name.startswith("("):
                rows.append((name, requests, seconds, result.added, paths))
        found, follow = rows[-1][3], []
        while found < BUSY_FAILURES and len(follow) < 20:  # the busy tick's clusters and library, as the sweep goes
            now += cfg.interval
            result, requests, seconds, paths = measure(emu, source, store, now)
            found += result.added
            follow.append((requests, result.added))
        now += cfg.interval
        source = fresh()
        result, requests, seconds, paths = measure(emu, source, store, now)
        rows.append(("restart", requests, seconds, result.added, paths))
        steady = []
        for _ in range(30):  # an hour at the default interval
            now += cfg.interval
            result, requests, seconds, paths = measure(emu, source, store, now)
            steady.append((requests, seconds, swept(paths)))
        store.close()
    print(f"workspace: {args.clusters} clusters, {args.runs} runs; requests_per_second={args.rps:g}; "
          f"interval={cfg.interval.total_seconds():g}s, cluster_interval={cfg.cluster_interval.total_seconds():g}s, "
          f"quiet_tick_requests={cfg.quiet_tick_requests}")
    print(f"{'tick':11} {'sweep':5} {'requests':>8} {'seconds':>8} {'new failures':>13}  requests by endpoint")
    for name, requests, seconds, added, paths in rows:
        detail = ", ".join(f"{path} {count}" for path, count in sorted(paths.items()))
        print(f"{name:11} {'yes' if swept(paths) else 'no':5} {requests:8d} {seconds:8.2f} {added:13d}  {detail}")
    minutes = len(follow) * cfg.interval.total_seconds() / 60
    print(f"after busy: {found} of {BUSY_FAILURES} failures in {minutes:g} min more ({len(follow)} ticks); requests "
          f"{' '.join(str(r) for r, _ in follow)}; failures {' '.join(str(a) for _, a in follow)}")
    sweeps = sum(s for _, _, s in steady)
    print(f"steady: {len(steady)} quiet ticks over {len(steady) * cfg.interval.total_seconds() / 60:g} min, "
          f"{sweeps} of them sweeps; requests per tick: mean {sum(r for r, _, _ in steady) / len(steady):.2f}, "
          f"min {min(r for r, _, _ in steady)}, max {max(r for r, _, _ in steady)}; "
          f"seconds per tick: mean {sum(t for _, t, _ in steady) / len(steady):.2f}")
    print("steady requests, tick by tick:", " ".join(str(r) for r, _, _ in steady))


if __name__ == "__main__":
    main()
