"""The Databricks REST routes: which (method, path) calls which `WorkspaceState` method, with what arguments."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from poller.emulators.databricks_clusters import ClustersQuery
from poller.emulators.databricks_core import Json, invalid
from poller.emulators.databricks_runs import RunsQuery
from poller.emulators.databricks_state import WorkspaceState

#: API family -> the versions served; the SDK uses the last one (§0.1), older clients the others.
_VERSIONS = {"jobs": ("2.1", "2.2"), "clusters": ("2.0", "2.1"), "libraries": ("2.0",), "preview": ("2.0",)}


@dataclass(frozen=True)
class ApiRequest:
    """An API call as the routes read it: the body a JSON object ({} when empty)."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Json


# -- request parsing: wrong parameters answer 400, as the service does ----------------------------------


def _arg(req: ApiRequest, name: str) -> Any:
    """A parameter from the JSON body or, failing that, the query string (last value wins)."""
    if name in req.body:
        return req.body[name]
    values = req.query.get(name)
    return values[-1] if values else None


def _int(req: ApiRequest, name: str, default: int | None = None) -> int | None:
    value = _arg(req, name)
    if value is None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise invalid(f"Invalid value for {name}: {value!r} is not an integer.") from exc


def _required_int(req: ApiRequest, name: str) -> int:
    value = _int(req, name)
    if value is None:
        raise invalid(f"Missing required field: {name}")
    return value


def _required_str(req: ApiRequest, name: str) -> str:
    value = _arg(req, name)
    if not value:
        raise invalid(f"Missing required field: {name}")
    return str(value)


def _bool(req: ApiRequest, name: str) -> bool | None:
    value = _arg(req, name)
    if value is None or isinstance(value, bool):
        return value
    if str(value).lower() not in ("true", "false"):  # the SDK sends query booleans as true/false (§1.3)
        raise invalid(f"Invalid value for {name}: {value!r} is not a boolean.")
    return str(value).lower() == "true"


# -- routes ------------------------------------------------------------------------------------------


def _list_runs(state: WorkspaceState, req: ApiRequest) -> Json:
    limit = _int(req, "limit", 20) or 25  # 0 means "the service maximum"
    if not 0 < limit <= 25:
        raise invalid(f"Invalid limit {limit}: it must be between 1 and 25.")
    run_type = _arg(req, "run_type")
    return state.list_runs(RunsQuery(
        active_only=bool(_bool(req, "active_only")), completed_only=bool(_bool(req, "completed_only")),
        expand_tasks=bool(_bool(req, "expand_tasks")), job_id=_int(req, "job_id"),
        run_type=None if run_type is None else str(run_type), start_time_from=_int(req, "start_time_from"),
        start_time_to=_int(req, "start_time_to"), limit=limit, page_token=_arg(req, "page_token") or None))


def _get_run(state: WorkspaceState, req: ApiRequest) -> Json:
    return state.get_run(_required_int(req, "run_id"), _arg(req, "page_token") or None,
                         bool(_bool(req, "include_history")))


def _list_jobs(state: WorkspaceState, req: ApiRequest) -> Json:
    limit = _int(req, "limit", 20) or 100
    if not 0 < limit <= 100:
        raise invalid(f"Invalid limit {limit}: it must be between 1 and 100.")
    name = _arg(req, "name")
    return state.list_jobs(limit, _arg(req, "page_token") or None, None if name is None else str(name),
                           bool(_bool(req, "expand_tasks")))


def _list_clusters(state: WorkspaceState, req: ApiRequest) -> Json:
    page_size = min(_int(req, "page_size", 100) or 100, 100)
    return state.list_clusters(ClustersQuery(
        states=frozenset(req.query.get("filter_by.cluster_states", [])),
        sources=frozenset(req.query.get("filter_by.cluster_sources", [])),
        is_pinned=_bool(req, "filter_by.is_pinned"), policy_id=_arg(req, "filter_by.policy_id"),
        page_size=page_size, page_token=_arg(req, "page_token") or None))


def _cluster_id(req: ApiRequest) -> str:
    return _required_str(req, "cluster_id")


def _libraries(req: ApiRequest) -> list[Json]:
    libraries = req.body.get("libraries")
    if not isinstance(libraries, list) or not libraries:
        raise invalid("Missing required field: libraries")
    return libraries


def _me(state: WorkspaceState, req: ApiRequest) -> Json:
    return {"id": "7304985012345678", "userName": state.user_name, "displayName": "RCA Poller",
            "active": True, "emails": [{"value": state.user_name, "type": "work", "primary": True}],
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
                        "urn:ietf:params:scim:schemas:extension:workspace:2.0:User"]}


_Route = Callable[[WorkspaceState, ApiRequest], Json]
_ROUTES: dict[tuple[str, str], _Route] = {
    ("GET", "preview/scim/v2/Me"): _me,
    ("GET", "jobs/runs/list"): _list_runs,
    ("GET", "jobs/runs/get"): _get_run,
    ("GET", "jobs/runs/get-output"): lambda s, r: s.get_output(_required_int(r, "run_id")),
    ("GET", "jobs/get"): lambda s, r: s.get_job(_required_int(r, "job_id")),
    ("GET", "jobs/list"): _list_jobs,
    ("POST", "jobs/runs/repair"): lambda s, r: s.repair_run(r.body),
    ("POST", "jobs/run-now"): lambda s, r: s.run_now(r.body),
    ("GET", "clusters/list"): _list_clusters,
    ("GET", "clusters/get"): lambda s, r: s.get_cluster(_cluster_id(r)),
    ("POST", "clusters/events"): lambda s, r: s.cluster_events(r.body),
    ("POST", "clusters/start"): lambda s, r: s.start_cluster(_cluster_id(r)),
    ("POST", "clusters/restart"): lambda s, r: s.start_cluster(_cluster_id(r), restart=True),
    ("GET", "libraries/all-cluster-statuses"): lambda s, r: s.all_library_statuses(),
    ("GET", "libraries/cluster-status"): lambda s, r: s.cluster_library_status(_cluster_id(r)),
    ("POST", "libraries/install"): lambda s, r: s.install_libraries(_cluster_id(r), _libraries(r)),
    ("POST", "libraries/uninstall"): lambda s, r: s.uninstall_libraries(_cluster_id(r), _libraries(r)),
}


def find_route(method: str, path: str) -> _Route | None:
    parts = path.split("/", 3)  # "", "api", "2.2", "jobs/runs/list"
    if len(parts) < 4 or parts[1] != "api":
        return None
    family = parts[3].split("/", 1)[0]
    if parts[2] not in _VERSIONS.get(family, ()):
        return None
    return _ROUTES.get((method, parts[3]))


def json_object(raw: bytes) -> Json | None:
    """The request body as a JSON object ({} when empty), or None when it is not one."""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error_code": code, "message": message}).encode()
