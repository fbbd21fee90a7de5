"""The emulated workspace behind `DatabricksEmulator`: raw REST JSON, paging, and remediation that settles.

Objects are kept as the dicts the REST API returns (reference/databricks-api.md §2-§6), so an enum string
the SDK does not know (``"result_state": "SOMETHING_NEW"``) reaches a raw ``api_client.do`` verbatim.
Remediation calls (repair, run-now, start, restart, install) put the object in its in-between state and
queue a completion; the completion lands after `settle_after_reads` reads of that object, or on `settle()`.
Every public method takes the one lock, which the HTTP server shares.

`WorkspaceState` composes the parts by role over `databricks_core.WorkspaceCore`: jobs, runs and outputs
(`databricks_runs`), repair and run-now (`databricks_repair`), clusters, events and libraries
(`databricks_clusters`). This module adds the data-directory format (`WorkspaceData`: load and snapshot)
and moving every stored time (`shift`, `rebase`).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poller.emulators.databricks_clusters import ClustersPart
from poller.emulators.databricks_core import Json
from poller.emulators.databricks_repair import RepairPart

#: Keys that hold epoch-ms times anywhere in the stored JSON; `shift` moves exactly these.
TIME_KEYS = frozenset(
    {"start_time", "end_time", "timestamp", "terminated_time", "last_restarted_time",
     "last_state_loss_time", "last_activity_time", "created_time"}
)


def shift_times(node: Any, delta_ms: int) -> None:
    """Add `delta_ms` to every positive time under TIME_KEYS; 0 stays 0 (it means "not ended yet")."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in TIME_KEYS and isinstance(value, int) and not isinstance(value, bool) and value > 0:
                node[key] = value + delta_ms
            else:
                shift_times(value, delta_ms)
    elif isinstance(node, list):
        for item in node:
            shift_times(item, delta_ms)


def _max_time(node: Any) -> int:
    if isinstance(node, dict):
        own = [v for k, v in node.items() if k in TIME_KEYS and type(v) is int]
        return max([*own, *(_max_time(v) for v in node.values())], default=0)
    if isinstance(node, list):
        return max((_max_time(item) for item in node), default=0)
    return 0


@dataclass
class WorkspaceData:
    """A workspace as files: the bulk format `DatabricksEmulator(data_dir)` reads (see its docstring)."""

    jobs: list[Json] = field(default_factory=list)
    runs: list[Json] = field(default_factory=list)
    clusters: list[Json] = field(default_factory=list)
    cluster_events: list[Json] = field(default_factory=list)
    libraries: list[Json] = field(default_factory=list)
    outputs: dict[str, Json] = field(default_factory=dict)

    @classmethod
    def read(cls, directory: Path) -> WorkspaceData:
        """Each file is optional; a list file may also be the API envelope (``{"runs": [...]}``)."""
        if not directory.is_dir():
            raise FileNotFoundError(f"Databricks emulator data directory {directory} does not exist")

        def load(name: str, key: str) -> Any:
            path = directory / name
            if not path.exists():
                return None
            data = json.loads(path.read_text(encoding="utf-8"))
            return data[key] if isinstance(data, dict) and key in data else data

        return cls(jobs=load("jobs.json", "jobs") or [], runs=load("runs.json", "runs") or [],
                   clusters=load("clusters.json", "clusters") or [],
                   cluster_events=load("cluster_events.json", "events") or [],
                   libraries=load("libraries.json", "statuses") or [],
                   outputs=load("outputs.json", "outputs") or {})

    def write(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for name, value in [("jobs", self.jobs), ("runs", self.runs), ("clusters", self.clusters),
                            ("cluster_events", self.cluster_events), ("libraries", self.libraries),
                            ("outputs", self.outputs)]:
            (directory / f"{name}.json").write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")


class WorkspaceState(RepairPart, ClustersPart):
    """Jobs, runs, outputs, clusters, events and libraries of one workspace, as raw JSON."""

    def load(self, data: WorkspaceData) -> None:
        """Add everything in `data` (later objects with the same id replace earlier ones)."""
        with self._lock:
            for job in data.jobs:
                self.add_job(job)
            for run in data.runs:
                self.add_run(run)
            for cluster in data.clusters:
                self.add_cluster(cluster)
            for event in data.cluster_events:
                self.add_cluster_event(event["cluster_id"], event)
            for entry in data.libraries:
                self._libraries[entry["cluster_id"]] = copy.deepcopy(entry.get("library_statuses", []))
            for run_id, output in data.outputs.items():
                self._outputs[int(run_id)] = copy.deepcopy(output)

    def snapshot(self) -> WorkspaceData:
        """A deep copy of the whole workspace in the data-dir format."""
        with self._lock:
            libraries = [{"cluster_id": c, "library_statuses": s} for c, s in self._libraries.items()]
            events = [e for cluster_events in self._events.values() for e in cluster_events]
            return copy.deepcopy(WorkspaceData(
                jobs=list(self._jobs.values()), runs=list(self._runs.values()),
                clusters=list(self._clusters.values()), cluster_events=events, libraries=libraries,
                outputs={str(k): v for k, v in self._outputs.items()}))

    # -- time ------------------------------------------------------------------------------------------

    def shift(self, delta_ms: int) -> None:
        """Move every stored time (runs, tasks, repairs, clusters, events) by `delta_ms`."""
        with self._lock:
            for collection in (self._jobs, self._runs, self._clusters, self._events):
                shift_times(collection, delta_ms)

    def rebase(self, now_ms: int | None = None) -> int:
        """Shift all times so the newest one is `now_ms` (default: the clock); returns the shift."""
        with self._lock:
            newest = _max_time([self._runs, self._clusters, self._events])
            delta = (self.now_ms() if now_ms is None else now_ms) - newest if newest else 0
            self.shift(delta)
            return delta
