"""The Databricks source's poll records and their extraction (pure).

A record is a bundle of the vendor JSON the rules of ``poller.extractors.databricks`` need — a run with its failed
tasks' outputs, a cluster with its events, a library status — plus the ``key`` of the one failure it stands for,
or ``unreadable`` with the reason the rules could not read it (it is then quarantined whole).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from poller.errors import ExtractError
from poller.extractors.databricks import (
    extract_bundle,
    extract_cluster_events,
    extract_cluster_state,
    extract_library_statuses,
)
from poller.extractors.databricks_clusters import TERMINATED_STATES
from poller.extractors.databricks_json import mapping_at, text
from poller.models import Failure
from poller.sources.databricks_client import Json

TERMINATION_EVENTS = frozenset({"TERMINATING", "TERMINATED"})


def cluster_failures(record: Mapping[str, Any]) -> list[Failure]:
    """A cluster's events; its list entry stands in when the events no longer show its termination."""
    cluster = mapping_at(record, "cluster")
    events = record.get("events")
    if not isinstance(events, list):
        raise ExtractError("a cluster record holds no events (clusters/events JSON)")
    failures = extract_cluster_events(cluster, events)
    terminated = cluster.get("terminated_time")
    shown = any(isinstance(e, Mapping) and text(e, "type") in TERMINATION_EVENTS for e in events)
    if (not shown and text(cluster, "state") in TERMINATED_STATES and isinstance(terminated, int)
            and terminated >= int(record.get("events_from") or 0)):
        state_failure = extract_cluster_state(cluster)
        if state_failure is not None:
            failures.append(state_failure)
    return failures


def library_failures(record: Mapping[str, Any]) -> list[Failure]:
    observed = text(record, "observed_at")
    return extract_library_statuses(
        record, occurrence=text(record, "occurrence"), cluster_name=text(record, "cluster_name"),
        observed_at=datetime.fromisoformat(observed.replace("Z", "+00:00")) if observed else None,
    )


#: Record kind → the rules that read it.
RECORD_RULES: dict[str, Callable[[Mapping[str, Any]], list[Failure]]] = {
    "run": extract_bundle,
    "cluster": cluster_failures,
    "library": library_failures,
}


def record_failures(record: Mapping[str, Any]) -> list[Failure]:
    rule = RECORD_RULES.get(text(record, "kind"))
    if rule is None:
        raise ExtractError(f"unknown Databricks record kind {record.get('kind')!r}")
    return rule(record)


def keyed_records(bundle: Json) -> list[Json]:
    """One record per failure a bundle yields; one record saying why, when the rules cannot read it."""
    try:
        failures = record_failures(bundle)
    except Exception as exc:  # a rule that fails on this data quarantines the bundle; the tick goes on
        reason = str(exc) if isinstance(exc, ExtractError) else f"unexpected {type(exc).__name__}: {exc}"
        return [{**bundle, "unreadable": reason}]
    return [{**bundle, "key": failure.key} for failure in failures]


def extract_record(raw: Any) -> Failure | None:
    """The failure a poll record names (``key``), read from its bundle by the Databricks rules."""
    if not isinstance(raw, Mapping):
        raise ExtractError(f"expected a Databricks record (a JSON object), got {type(raw).__name__}")
    if "unreadable" in raw:
        raise ExtractError(str(raw["unreadable"]))
    wanted = raw.get("key")
    for failure in record_failures(raw):
        if failure.key == wanted:
            return failure
    raise ExtractError(f"the {text(raw, 'kind')} record yields no failure keyed {wanted!r}")


def readable_failures(bundle: Json) -> list[Failure] | None:
    """A bundle's failures, or None when the rules cannot read it."""
    try:
        return record_failures(bundle)
    except Exception:  # ExtractError, or a rule's bug: either way the bundle goes to quarantine
        return None
