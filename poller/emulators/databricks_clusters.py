"""Clusters, cluster events and libraries of the emulated workspace: clusters/list, get and events, the
libraries status calls, and their remediation: start/restart (TERMINATED→PENDING→RUNNING) and install
(PENDING→INSTALLED), each ending as scripted with `script_cluster_start` / `script_library_install`.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from poller.emulators.databricks_core import ApiError, Json, WorkspaceCore, decode_token, encode_token, invalid

#: Cluster state -> the event a real cluster writes on entering it. There is no TERMINATED event type
#: (§5.1): the termination reason rides on TERMINATING.
_EVENT_FOR_STATE = {
    "PENDING": "STARTING", "RUNNING": "RUNNING", "RESTARTING": "RESTARTING", "RESIZING": "RESIZING",
    "TERMINATING": "TERMINATING", "TERMINATED": "TERMINATING", "ERROR": "TERMINATING",
}


@dataclass(frozen=True)
class ClustersQuery:
    """The parsed clusters/list parameters (§5.3)."""

    states: frozenset[str] = frozenset()
    sources: frozenset[str] = frozenset()
    is_pinned: bool | None = None
    policy_id: str | None = None
    page_size: int = 100
    page_token: str | None = None

    def keeps(self, cluster: Json) -> bool:
        return not (
            (self.states and cluster.get("state") not in self.states)
            or (self.sources and cluster.get("cluster_source") not in self.sources)
            or (self.is_pinned is not None and bool(cluster.get("is_pinned")) != self.is_pinned)
            or (self.policy_id is not None and cluster.get("policy_id") != self.policy_id)
        )


class ClustersPart(WorkspaceCore):
    """Clusters, their events (oldest first) and their library statuses, as raw JSON."""

    def __init__(self) -> None:
        super().__init__()
        self._clusters: dict[str, Json] = {}
        self._events: dict[str, list[Json]] = {}
        self._libraries: dict[str, list[Json]] = {}
        self._start_scripts: dict[str, deque[tuple[str, Json | None]]] = {}
        self._install_scripts: dict[str, deque[tuple[str, list[str]]]] = {}

    def cluster_json(self, cluster_id: str) -> Json:
        with self._lock:
            return copy.deepcopy(self._cluster(cluster_id))

    def library_statuses(self, cluster_id: str) -> list[Json]:
        with self._lock:
            return copy.deepcopy(self._libraries.get(cluster_id, []))

    def add_cluster(self, cluster: Json) -> str:
        with self._lock:
            stored = copy.deepcopy(cluster)
            self._clusters[stored["cluster_id"]] = stored
            self._events.setdefault(stored["cluster_id"], [])
            return str(stored["cluster_id"])

    def add_cluster_event(self, cluster_id: str, event: Json) -> None:
        with self._lock:
            events = self._events.setdefault(cluster_id, [])
            events.append({**copy.deepcopy(event), "cluster_id": cluster_id})
            events.sort(key=lambda e: e.get("timestamp", 0))

    def set_cluster_state(self, cluster_id: str, state: str, *, termination_reason: Json | None = None,
                          at: int | None = None, state_message: str = "") -> None:
        """Move a cluster to `state`, writing the event a real cluster writes and its state timestamps."""
        with self._lock:
            cluster = self._cluster(cluster_id)
            when = self.now_ms() if at is None else at
            previous = cluster.get("state")
            cluster["state"], cluster["state_message"] = state, state_message
            if state in ("PENDING", "RESTARTING"):
                cluster["last_restarted_time"] = cluster["last_state_loss_time"] = when
                cluster.pop("termination_reason", None)
                cluster.pop("terminated_time", None)
            if state in ("TERMINATED", "ERROR"):
                cluster["terminated_time"] = when
                cluster["termination_reason"] = copy.deepcopy(termination_reason or {"code": "UNKNOWN"})
            event_type = _EVENT_FOR_STATE.get(state)
            if event_type is None or (state == "TERMINATED" and previous == "TERMINATING"):
                return
            self.add_cluster_event(cluster_id, {"timestamp": when, "type": event_type,
                                                "details": self._event_details(cluster, event_type,
                                                                               termination_reason)})

    def list_clusters(self, query: ClustersQuery) -> Json:
        with self._lock:
            self._advance("cluster", None)
            clusters = [c for c in self._clusters.values() if query.keeps(c)]
            offset = int(decode_token(query.page_token)) if query.page_token else 0
            page = clusters[offset: offset + query.page_size]
            body: Json = {"clusters": page} if page else {}
            if len(clusters) > offset + query.page_size:
                body["next_page_token"] = encode_token(str(offset + query.page_size))
            if offset:
                body["prev_page_token"] = encode_token(str(max(0, offset - query.page_size)))
            return body

    def get_cluster(self, cluster_id: str) -> Json:
        with self._lock:
            self._advance("cluster", cluster_id)
            return self._cluster(cluster_id)

    def cluster_events(self, request: Json) -> Json:
        """clusters/events in the old offset style: `next_page` is the next request body (§0.4).
        A request with page_size/page_token gets token paging instead, which the SDK does not follow."""
        with self._lock:
            cluster_id = str(request.get("cluster_id", ""))
            self._advance("cluster", cluster_id)
            self._cluster(cluster_id)
            events = self._filtered_events(cluster_id, request)
            if "page_size" in request or "page_token" in request:
                return self._events_by_token(events, request)
            limit, offset = int(request.get("limit", 50)), int(request.get("offset", 0))
            if not 0 < limit <= 500:
                raise invalid(f"limit must be between 1 and 500, got {limit}.")
            if offset and request.get("order", "DESC") == "DESC" and "end_time" not in request:
                raise invalid("end_time is required when offset is given with order DESC.")
            page = events[offset: offset + limit]
            body: Json = {"events": page, "total_count": len(events)}
            if offset + limit < len(events):
                body["next_page"] = {**request, "offset": offset + limit}
                if request.get("order", "DESC") == "DESC" and "end_time" not in request:
                    # pin the window to the newest event, so events arriving later do not shift offsets
                    body["next_page"]["end_time"] = events[0]["timestamp"]
            return body

    def set_library_status(self, cluster_id: str, library: Json, status: str,
                           messages: Iterable[str] = ()) -> None:
        """Add or replace the status of one library on a cluster."""
        with self._lock:
            statuses = self._libraries.setdefault(cluster_id, [])
            entry = next((s for s in statuses if s["library"] == library), None)
            if entry is None:
                entry = {"library": copy.deepcopy(library), "is_library_for_all_clusters": False}
                statuses.append(entry)
            entry["status"], entry["messages"] = status, list(messages)

    def all_library_statuses(self) -> Json:
        with self._lock:
            self._advance("library", None)
            return {"statuses": [{"cluster_id": cid, "library_statuses": statuses}
                                 for cid, statuses in self._libraries.items() if statuses]}

    def cluster_library_status(self, cluster_id: str) -> Json:
        with self._lock:
            self._advance("library", cluster_id)
            self._cluster(cluster_id)
            return {"cluster_id": cluster_id, "library_statuses": self._libraries.get(cluster_id, [])}

    # -- remediation ---------------------------------------------------------------------------------

    def script_cluster_start(self, cluster_id: str, state: str = "RUNNING", *,
                             termination_reason: Json | None = None) -> None:
        """The next start/restart of the cluster ends in `state` (e.g. TERMINATED with a reason)."""
        with self._lock:
            self._start_scripts.setdefault(cluster_id, deque()).append((state, termination_reason))

    def script_library_install(self, cluster_id: str, status: str = "INSTALLED", *,
                               messages: Sequence[str] = ()) -> None:
        """The next install on the cluster ends with every library in `status`."""
        with self._lock:
            self._install_scripts.setdefault(cluster_id, deque()).append((status, list(messages)))

    def start_cluster(self, cluster_id: str, restart: bool = False) -> Json:
        with self._lock:
            cluster = self._cluster(cluster_id)
            wanted = "RUNNING" if restart else "TERMINATED"
            if cluster.get("state") != wanted:
                raise ApiError(400, "INVALID_STATE", f"Cluster {cluster_id} is in unexpected state "
                                                     f"{str(cluster.get('state', 'UNKNOWN')).title()}.")
            self.set_cluster_state(cluster_id, "RESTARTING" if restart else "PENDING",
                                   state_message="Starting Spark")
            queued = self._start_scripts.get(cluster_id)
            state, reason = queued.popleft() if queued else ("RUNNING", None)
            self._queue("cluster", cluster_id, lambda: self._complete_start(cluster_id, state, reason))
            return {}

    def install_libraries(self, cluster_id: str, libraries: list[Json]) -> Json:
        with self._lock:
            self._cluster(cluster_id)
            for library in libraries:
                self.set_library_status(cluster_id, library, "PENDING")
            queued = self._install_scripts.get(cluster_id)
            status, messages = queued.popleft() if queued else ("INSTALLED", [])
            self._queue("library", cluster_id, lambda: self._complete_install(cluster_id, libraries, status,
                                                                              messages))
            return {}

    def uninstall_libraries(self, cluster_id: str, libraries: list[Json]) -> Json:
        """Marks installed libraries UNINSTALL_ON_RESTART; others are ignored, as documented (§6.1)."""
        with self._lock:
            self._cluster(cluster_id)
            for status in self._libraries.get(cluster_id, []):
                if status["library"] in libraries:
                    status["status"] = "UNINSTALL_ON_RESTART"
            return {}

    # -- internals ---------------------------------------------------------------------------------

    def _cluster(self, cluster_id: str) -> Json:
        if cluster_id not in self._clusters:
            raise invalid(f"Cluster {cluster_id} does not exist")
        return self._clusters[cluster_id]

    def _complete_start(self, cluster_id: str, state: str, reason: Json | None) -> None:
        if state == "RUNNING":
            for status in self._libraries.get(cluster_id, []):
                if status["status"] == "UNINSTALL_ON_RESTART":
                    self._libraries[cluster_id].remove(status)
        self.set_cluster_state(cluster_id, state, termination_reason=reason,
                               state_message="" if state == "RUNNING" else "Cluster failed to start")

    def _complete_install(self, cluster_id: str, libraries: list[Json], status: str,
                          messages: list[str]) -> None:
        for library in libraries:
            self.set_library_status(cluster_id, library, status, messages)

    def _event_details(self, cluster: Json, event_type: str, reason: Json | None) -> Json:
        if event_type == "RUNNING":
            workers = cluster.get("num_workers", 0)
            return {"current_num_workers": workers, "target_num_workers": workers}
        if event_type == "TERMINATING":
            return {"reason": copy.deepcopy(reason or {"code": "UNKNOWN"})}
        return {"user": self.user_name} if event_type in ("STARTING", "RESTARTING") else {}

    def _filtered_events(self, cluster_id: str, request: Json) -> list[Json]:
        types = set(request.get("event_types") or [])
        start, end = request.get("start_time"), request.get("end_time")
        events = [e for e in self._events.get(cluster_id, [])
                  if (not types or e.get("type") in types)
                  and (start is None or e.get("timestamp", 0) >= start)
                  and (end is None or e.get("timestamp", 0) <= end)]
        return events if request.get("order") == "ASC" else events[::-1]

    def _events_by_token(self, events: list[Json], request: Json) -> Json:
        size = min(int(request.get("page_size") or 50), 500)
        offset = int(decode_token(request["page_token"])) if request.get("page_token") else 0
        body: Json = {"events": events[offset: offset + size], "total_count": 0}
        if offset + size < len(events):
            body["next_page_token"] = encode_token(str(offset + size))
        return body
