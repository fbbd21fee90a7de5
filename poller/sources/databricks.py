"""Databricks source: failed job runs, cluster failures and library install failures of one workspace.

A poll reads raw REST JSON (``databricks_client``) and returns one record per failure to come: a bundle of
the vendor JSON the rules of ``poller.extractors.databricks`` need — a run with its failed tasks' outputs, a
cluster with its events, a library status — plus that failure's ``key``. ``extract`` runs the same pure rules
on the bundle and returns the failure with the key. So a run with three failed tasks is three records, a
bundle the rules cannot read is quarantined whole, and a quarantined bundle reads again through
``rca-poller extract`` (it has the ``{"run", "outputs", "host"}`` / ``{"cluster", "events"}`` shapes).
The records and their rules are in ``databricks_records``, what the source remembers in ``databricks_memory``.

What a tick over the window (S, E] reads, and what it costs (requests):

* jobs — ``runs/list?active_only`` (⌈active/25⌉), then ``runs/list?completed_only`` from the later of S and
  the last tick − ``overlap`` (⌈runs started since/25⌉), then ``runs/get`` for each run that was active at the
  last tick and has ended since. The first tick of a process (or an explicit window, as a backfill gives)
  has no memory of active runs and lists instead every run started since S − ``max_run_duration``, keeping
  those that ended after S. A run that started before the cursor and fails after it is caught either way;
  natural keys drop repeats. Failed tasks of a run still going are reported once no retry will replace them.
  ``runs/get-output`` is called once per failed task run (its task run id, never the parent's) and kept
  in memory while the run is still read, so re-reading the overlap costs no further output calls.
* clusters — ``clusters/list`` (⌈clusters/100⌉, spread over ticks, below); ``clusters/events`` only for the
  clusters whose ``start_time``, ``last_restarted_time``, ``last_state_loss_time`` or ``terminated_time`` is
  after S, or whose state or state message changed since the last sweep, read from the start of the cluster's current
  life (at most ``max_run_duration`` before S).
* libraries — one ``libraries/all-cluster-statuses``. A FAILED library's key carries an occurrence stamp:
  the cluster's last (re)start, so it is reported once while it stays failed, also across restarts of
  rca-poller; and, when this process saw it INSTALLED after a failure in the same cluster life, the time
  it failed again, so that new failure is reported too.

Clusters and libraries are a sweep with its own cadence, ``cluster_interval``: a live tick begins one on the
first tick of a process, and then on the first tick whose window ends ``cluster_interval`` or more after the
cursor (the tick clock, never wall time; every tick when ``cluster_interval`` is not longer than ``interval`` —
also when only ``interval`` is raised past the 5m default, which config leaves unchecked). The first sweep of a
process is read whole. Later ones are spread over ticks: a tick makes what ``quiet_tick_requests`` leaves after
its jobs reads (at least one request) — one clusters/list page a request, each with the events of its changed
clusters on top, then all-cluster-statuses — and holds the page token until the next tick. Every page of a
sweep selects what changed since the window start of the tick the sweep began in; a refused token lists again
from the first page. Until a sweep is done a tick hands back the cursor it was given; the tick that finishes
it moves the cursor to the end of the window the sweep began in. So the cursor is always a point every change
after which a later sweep will still see, and every window starts at that point − ``overlap``. Nothing is lost
to a crash, a restart or a tick that read but did not commit: the next sweep selects from the last one that
did commit, and a new process's first sweep is whole. The cost is a cursor lag of up to a sweep's length +
``interval``, and cluster failures reported up to about a sweep's length after they happen (a cluster whose
page was read just before). The jobs listing is not widened by a held cursor: with the memory, runs that
started before its last tick are known, so it lists from that tick − ``overlap``. A backfill (an explicit
window) always reads clusters whole.

The memory (active runs, cluster states, library episodes, outputs) lives in this object only: it is a cost
saving and a way to see changes, never what the cursor relies on. It is replaced only when a poll succeeds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from poller.config import DatabricksSourceConfig
from poller.extractors.databricks_json import library_display, mapping_at, parse_id, text
from poller.extractors.databricks_run_states import UNSETTLED_LIFE_CYCLE_STATES
from poller.models import Failure, Kind, iso
from poller.sources.base import Poll, Window
from poller.sources.databricks_client import DatabricksApi, GoneError, Json
from poller.sources.databricks_memory import LibraryEpisode, Memory, RunMemory, Sweep, library_failed, next_episode
from poller.sources.databricks_records import extract_record, keyed_records, readable_failures

log = logging.getLogger("poller.sources.databricks")

#: Cluster fields that move when its state changes; a time after the window start selects the cluster.
CLUSTER_TIME_FIELDS = ("start_time", "last_restarted_time", "last_state_loss_time", "terminated_time")
STARTS = ("start_time", "last_restarted_time")
#: What the cluster sweep reads: clusters/list (which libraries need too) and all-cluster-statuses.
SWEPT = frozenset({"clusters", "libraries"})


def ms(moment: datetime) -> int:
    """Epoch milliseconds, the Databricks time unit."""
    return int(moment.timestamp() * 1000)


# -- the source ------------------------------------------------------------------------------------------------


class DatabricksSource:
    """Failed job runs and tasks, cluster failures and library install failures of one Databricks workspace."""

    def __init__(self, name: str, config: DatabricksSourceConfig, *, api: DatabricksApi | None = None,
                 sleep: Callable[[float], None] = time.sleep, environ: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.config = config
        self.interval = config.interval
        self.api = api or DatabricksApi(name, config, environ=environ, sleep=sleep)
        self._live: Window | None = None
        self._cursor: datetime | None = None  # the committed cursor the live window was made from
        self._memory = Memory()

    def __repr__(self) -> str:
        return f"DatabricksSource(name={self.name!r}, host={self.config.host!r}, watch={self.config.watch!r})"

    def close(self) -> None:
        self.api.close()

    def check(self) -> str:
        """Who the source reads as, once every watched API has answered; a SourceError (with the fix) if not."""
        user = self.api.current_user()
        if "jobs" in self.config.watch:
            next(self.api.list_runs(active_only=True), None)  # the first page only
        if "clusters" in self.config.watch:
            self.api.clusters_page()
        if "libraries" in self.config.watch:
            self.api.library_statuses()
        return f"{user} ({', '.join(self.config.watch)} readable)"

    def window(self, cursor: datetime | None, now: datetime) -> Window:
        # Re-read `overlap` behind the cursor: a tick that read but could not commit, and clock skew.
        start = now - self.config.initial_lookback if cursor is None else cursor - self.config.overlap
        self._live, self._cursor = Window(min(start, now), now), cursor
        return self._live

    def poll(self, window: Window) -> Poll:
        # Only the window this source last handed out is the live one; an explicit window (a backfill) is read
        # without the memory and leaves it alone.
        live = window == self._live
        watch = set(self.config.watch)
        warnings: list[str] = []
        records: list[Json] = []
        calls = self.api.calls
        memory = self._memory
        if "jobs" in watch:
            run_records, runs, outputs = self._poll_jobs(window, live, warnings)
            records += run_records
            memory = replace(memory, runs=runs, outputs=outputs)
        cursor = window.end
        if watch & SWEPT:
            sweep = memory.sweep if live else None
            if sweep is None and (not live or self._sweep_due(window)):
                sweep = Sweep(window)
            if sweep is not None:
                sweep_records, memory = self._sweep(sweep, window, live, self._sweep_steps(live, calls), memory,
                                                    warnings)
                records += sweep_records
            # Until a sweep is done the cursor stays where it was (the module docstring says why).
            if live and memory.sweep is not None:
                cursor = self._cursor or memory.sweep.began.start
            elif live:
                cursor = sweep.began.end if sweep is not None else self._cursor or window.end
        if live:
            self._memory = memory
        return Poll(records=records, cursor=cursor, warnings=warnings)

    def _sweep_due(self, window: Window) -> bool:
        """Whether a live tick begins a sweep: first in this process, or ``cluster_interval`` on."""
        cursor, every = self._cursor, self.config.cluster_interval
        return (not self._memory.swept or cursor is None or every <= self.interval
                or window.end - cursor >= every)

    def _sweep_steps(self, live: bool, calls_before: int) -> int | None:
        """How many sweep requests this tick may make: what ``quiet_tick_requests`` leaves after the jobs reads
        (at least one); no limit for a backfill, the first sweep of a process, or ``quiet_tick_requests: null``."""
        budget = self.config.quiet_tick_requests
        if not live or not self._memory.swept or budget is None:
            return None
        return max(1, budget - (self.api.calls - calls_before))

    def extract(self, raw: Any) -> Failure | None:
        return extract_record(raw)

    # -- jobs -------------------------------------------------------------------------------------------------

    def _poll_jobs(self, window: Window, live: bool,
                   warnings: list[str]) -> tuple[list[Json], RunMemory | None, dict[int, Json]]:
        memory = self._memory.runs if live else None
        known = memory is not None and memory.covers(window)
        # Active runs first: a run that ends between the two listings is then in one of them.
        active = {_run_id(run): run for run in self.api.list_runs(active_only=True)} if live else {}
        # With the memory, runs that started before its last tick are known (active then, or read then); a
        # cursor held for a sweep does not widen the listing.
        since = (max(window.start, memory.as_of - self.config.overlap) if memory is not None and known
                 else window.start - self.config.max_run_duration)
        listed = self.api.list_runs(completed_only=True, start_time_from=ms(since),
                                    start_time_to=None if live else ms(window.end))
        ended = {_run_id(run): run for run in listed if _ended_in(run, window, live)}
        finished = self._ended_since(memory, window, active, ended, warnings) if memory and known else {}
        outputs: dict[int, Json] = {}
        records: list[Json] = []
        failed: dict[int, Json] = {}
        for run_id, run in {**finished, **active, **ended}.items():  # the freshest copy of a run wins
            run_records, read = self._run_records(run, outputs, warnings)
            records += run_records
            if run_records and not _is_active(read):
                failed[run_id] = read
        if not live:
            return records, None, outputs
        # Failed runs stay remembered until the window start passes their end: if this tick's commit fails,
        # the next one returns them again even when no listing would show them any more.
        kept = {i: run for i, run in failed.items() if _end_ms(run) > ms(window.start)}
        covered_from = memory.covered_from if memory is not None and known else window.start
        return records, RunMemory(covered_from, window.end, frozenset(active), kept), outputs

    def _ended_since(self, memory: RunMemory, window: Window, active: dict[int, Json], ended: dict[int, Json],
                     warnings: list[str]) -> dict[int, Json]:
        """Runs that the memory holds: failed ones still in the overlap, and the ones active at the last tick
        that no listing shows now — they ended, and runs/get reads them (a run still active joins `active`)."""
        finished = {i: run for i, run in memory.finished.items() if _end_ms(run) > ms(window.start)}
        for run_id in memory.active - active.keys() - ended.keys() - finished.keys():
            run = self.api.get_run(run_id)
            if run is None:
                warnings.append(f"run {run_id} was active at the last tick and is gone now")
            elif _is_active(run):  # a listing raced it; look again next tick
                active[run_id] = run
            else:
                finished[run_id] = run
        return finished

    def _run_records(self, run: Json, outputs: dict[int, Json],
                     warnings: list[str]) -> tuple[list[Json], Json]:
        """The records of one run, its failed tasks' outputs read (or reused); and the run as read."""
        bundle: Json = {"kind": "run", "host": self.api.host, "run": run, "outputs": {}}
        found = readable_failures(bundle)  # which tasks failed, so that only their outputs are read
        if found and run.get("has_more"):  # runs/list cut an array at 100 elements: read it whole
            bundle["run"] = run = self.api.get_run(_run_id(run)) or run
            found = readable_failures(bundle)
        if found is None:  # keyed_records gives the reason, and the bundle is quarantined
            return keyed_records(bundle), run
        if not found:
            return [], run
        for task_run_id in _output_ids(found, run):
            output = outputs.get(task_run_id, self._memory.outputs.get(task_run_id))
            if output is None:
                output = self.api.get_output(task_run_id)
            if output is None:
                warnings.append(f"task run {task_run_id}: its output is gone (runs are kept 60 days)")
                continue
            outputs[task_run_id] = output
            bundle["outputs"][str(task_run_id)] = output
        return keyed_records(bundle), run

    # -- clusters and libraries: the sweep --------------------------------------------------------------------

    def _sweep(self, sweep: Sweep, window: Window, live: bool, steps: int | None, memory: Memory,
               warnings: list[str]) -> tuple[list[Json], Memory]:
        """Carry a sweep on by up to ``steps`` requests (None: to its end): clusters/list pages, each with the
        events of its changed clusters (not counted), then all-cluster-statuses. The memory returned holds the
        sweep while it is under way, and the clusters and libraries seen once it is done."""
        libraries = "libraries" in self.config.watch and live  # statuses are current: nothing to backfill
        records: list[Json] = []
        seen = dict(memory.clusters)
        episodes = memory.libraries
        while steps is None or steps > 0:
            steps = None if steps is None else steps - 1
            if sweep.listed:
                library_records, episodes = self._poll_libraries(window, sweep.clusters)
                records += library_records
                libraries = False
                break
            try:
                clusters, token = self.api.clusters_page(sweep.token)
            except GoneError:
                if sweep.token is None:
                    raise
                warnings.append("clusters/list refused the page token held since the last tick; listing again")
                sweep = replace(sweep, token=None, clusters=())
                continue
            sweep = replace(sweep, token=token, listed=token is None, clusters=(*sweep.clusters, *clusters))
            if "clusters" in self.config.watch:
                page_records, page_seen = self._poll_clusters(sweep.began, window, clusters, memory.clusters, live,
                                                              warnings)
                records += page_records
                seen.update(page_seen)
            if sweep.listed and not libraries:
                break
        if not live:
            return records, memory
        if not sweep.listed or libraries:  # under way: this tick's steps are spent
            return records, replace(memory, clusters=seen, sweep=sweep)
        listed = {text(c, "cluster_id") for c in sweep.clusters}
        seen = {cluster_id: state for cluster_id, state in seen.items() if cluster_id in listed}
        log.info("databricks.swept", extra={"source": self.name, "clusters": len(listed), "began": iso(sweep.began.end),
                                            "minutes": round((window.end - sweep.began.end).total_seconds() / 60, 1)})
        return records, replace(memory, clusters=seen, libraries=episodes, swept=True, sweep=None)

    def _poll_clusters(self, began: Window, window: Window, clusters: list[Json],
                       before: Mapping[str, tuple[tuple[str, str], int]], live: bool,
                       warnings: list[str]) -> tuple[list[Json], dict[str, tuple[tuple[str, str], int]]]:
        """The records of listed clusters that changed since the sweep began (``began.start``); their states."""
        since, now = ms(began.start), ms(window.end)
        seen: dict[str, tuple[tuple[str, str], int]] = {}
        records: list[Json] = []
        for cluster in clusters:
            cluster_id = text(cluster, "cluster_id")
            state = (text(cluster, "state"), text(cluster, "state_message"))
            last = before.get(cluster_id) if live else None
            # when this process saw the state or its message change; 0 when it has not
            changed = 0 if last is None else now if last[0] != state else last[1]
            seen[cluster_id] = (state, changed)
            if not cluster_id or max(changed, latest(cluster, CLUSTER_TIME_FIELDS)) < since:
                continue
            start = events_from(cluster, began, self.config.max_run_duration)
            events = self.api.cluster_events(cluster_id, start, None if live else ms(window.end))
            if events is None:
                warnings.append(f"cluster {cluster_id}: its events are gone (deleted, or terminated 30+ days ago)")
                continue
            records += keyed_records({"kind": "cluster", "cluster": cluster, "events": events, "events_from": start})
        return records, seen

    # -- libraries ---------------------------------------------------------------------------------------------

    def _poll_libraries(self, window: Window,
                        clusters: Iterable[Json]) -> tuple[list[Json], dict[tuple[str, str], LibraryEpisode]]:
        by_id = {text(c, "cluster_id"): c for c in clusters}
        episodes: dict[tuple[str, str], LibraryEpisode] = {}
        records: list[Json] = []
        for entry in self.api.library_statuses():
            cluster_id = text(entry, "cluster_id") if isinstance(entry, Mapping) else ""
            cluster = by_id.get(cluster_id, {})
            base = latest(cluster, STARTS)
            for status in _statuses(entry):
                library = library_display(mapping_at(status, "library"))
                episode = next_episode(self._memory.libraries.get((cluster_id, library)), text(status, "status"),
                                       base, ms(window.end))
                episodes[(cluster_id, library)] = episode
                if library_failed(episode.status):
                    observed = datetime.fromtimestamp(episode.observed_ms / 1000, tz=UTC)
                    records += keyed_records({
                        "kind": "library", "cluster_id": cluster_id, "cluster_name": text(cluster, "cluster_name"),
                        "library_statuses": [status], "occurrence": episode.stamp, "observed_at": iso(observed),
                    })
        return records, episodes


def events_from(cluster: Mapping[str, Any], window: Window, lookback: timedelta) -> int:
    """Where a selected cluster's events are read from: the start of its current life if that is earlier
    than the window (so a start that fails inside the window is judged a failed start), but no further back
    than ``lookback`` before the window."""
    since = ms(window.start)
    started = latest(cluster, STARTS)
    return max(min(started or since, since), ms(window.start - lookback))


def latest(cluster: Mapping[str, Any], names: Iterable[str]) -> int:
    """The latest of some epoch-ms fields of a cluster; 0 when none is set."""
    times = [value for value in (cluster.get(name) for name in names)
             if isinstance(value, int) and not isinstance(value, bool)]
    return max(times, default=0)


def _statuses(entry: Any) -> list[Json]:
    statuses = entry.get("library_statuses") if isinstance(entry, Mapping) else None
    return [s for s in statuses if isinstance(s, dict)] if isinstance(statuses, list) else []


def _output_ids(found: list[Failure], run: Mapping[str, Any]) -> list[int]:
    """Task run ids whose get-output holds the error; a run without tasks (legacy single task) is its own."""
    ids = [f.metadata.get("task_run_id") for f in found if f.kind == Kind.TASK_RUN.value]
    if not run.get("tasks") and any(f.kind == Kind.JOB_RUN.value for f in found):
        ids.append(parse_id(run.get("run_id")))
    return [i for i in ids if isinstance(i, int)]


def _run_id(run: Mapping[str, Any]) -> int:
    return parse_id(run.get("run_id")) or 0


def _end_ms(run: Mapping[str, Any]) -> int:
    value = run.get("end_time")
    return value if isinstance(value, int) else 0


def _ended_in(run: Mapping[str, Any], window: Window, live: bool) -> bool:
    end = _end_ms(run)
    return end > ms(window.start) and (live or end <= ms(window.end))


def _is_active(run: Mapping[str, Any]) -> bool:
    return text(mapping_at(run, "state"), "life_cycle_state") in UNSETTLED_LIFE_CYCLE_STATES
