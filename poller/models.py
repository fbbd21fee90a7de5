"""The records rca-poller works with: Failure (extracted), and the rows of the state store."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson


class Service(StrEnum):
    ADF = "adf"
    SYNAPSE = "synapse"
    FUNCTIONS = "functions"
    DATABRICKS = "databricks"


class Kind(StrEnum):
    PIPELINE_RUN = "pipeline_run"
    ACTIVITY_RUN = "activity_run"
    JOB_RUN = "job_run"
    TASK_RUN = "task_run"
    CLUSTER_EVENT = "cluster_event"
    LIBRARY_INSTALL = "library_install"
    EXCEPTION = "exception"


FAILURE_FIELDS = (
    "key", "source", "service", "kind", "resource", "resource_id", "run_id", "error_code",
    "error_message", "failure_type", "occurred_at", "detected_at", "metadata",
)


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed run, task, event or library install, as extracted (DESIGN §3)."""

    key: str
    service: str
    kind: str
    resource: str
    error_message: str
    occurred_at: datetime
    resource_id: str = ""
    run_id: str = ""
    error_code: str = ""
    failure_type: str = ""
    source: str = ""
    detected_at: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    raw: Any = None
    # JSON of metadata and raw, dumped once and shared by the redaction check and the store. Not an init field,
    # so dataclasses.replace (a redacted copy) starts with an empty cache.
    _json: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def metadata_json(self) -> str:
        return self._dumped("metadata")

    def raw_json(self) -> str:
        return self._dumped("raw")

    def _dumped(self, name: str) -> str:
        text = self._json.get(name)
        if text is None:
            text = self._json[name] = dumps(getattr(self, name))
        return text

    def stamped(self, source: str, detected_at: datetime) -> Failure:
        """The same failure, attributed to a configured source at the tick's time."""
        # Spelled out: dataclasses.replace costs three times as much, and every failure of every tick is stamped.
        return Failure(key=self.key, service=self.service, kind=self.kind, resource=self.resource,
                       error_message=self.error_message, occurred_at=self.occurred_at, resource_id=self.resource_id,
                       run_id=self.run_id, error_code=self.error_code, failure_type=self.failure_type, source=source,
                       detected_at=detected_at, metadata=self.metadata, raw=self.raw)

    def to_json(self, *, include_raw: bool = False) -> dict[str, Any]:
        """The JSON object of DESIGN §5: Failure fields by name, times in ISO 8601 UTC."""
        out: dict[str, Any] = {name: getattr(self, name) for name in FAILURE_FIELDS}
        out["occurred_at"] = iso(self.occurred_at)
        out["detected_at"] = iso(self.detected_at) if self.detected_at else None
        out["source"] = self.source or None
        if include_raw:
            out["raw"] = self.raw
        return out


def iso(value: datetime) -> str:
    """ISO 8601 in UTC with a Z, as every JSON output of rca-poller writes times."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


#: Datetimes natively: UTC (and naive, taken as UTC) ones end in Z, as ``iso`` writes them; an aware non-UTC one
#: keeps its offset. Dataclasses go to ``_default`` (str), as with the standard library.
_ORJSON = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_NON_STR_KEYS


def dumps(value: Any) -> str:
    """Compact JSON that tolerates datetimes (as ISO 8601) and other odd values (as str).

    orjson writes what ``json.dumps(separators=(",", ":"), ensure_ascii=False)`` would, at three times the speed
    (every stored failure is dumped). What it refuses — integers beyond 64 bits, lone surrogates — the standard
    library writes.
    """
    try:
        return orjson.dumps(value, default=_default, option=_ORJSON).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, default=_default, ensure_ascii=False, separators=(",", ":"))


def loads(text: str) -> Any:
    """JSON text as ``json.loads`` reads it, at twice its speed or more (every row's ``Error`` column is parsed).

    What orjson refuses — NaN, Infinity, lone surrogates — goes to the standard library, and so does a text
    holding a float: orjson reads an integer beyond 64 bits as one, where ``json.loads`` keeps it exact.
    """
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
    return json.loads(text) if _holds_float(value) else value


def _holds_float(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is float:
            return True
        if kind is dict:
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
    return False


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    return str(value)
