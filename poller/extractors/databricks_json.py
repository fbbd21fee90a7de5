"""Reading Databricks REST JSON the way every Databricks rule needs it: text, ids, epoch-ms times, objects.

Shared by the jobs, clusters and libraries rules and by the Databricks source.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from poller.errors import ExtractError


def library_display(library: Mapping[str, Any]) -> str:
    """``pypi:pandas==2.2.0``, ``maven:com.x:y:1.0``, ``whl:/Volumes/...whl`` … for a ``Library`` object."""
    for kind, field_name in (("pypi", "package"), ("maven", "coordinates"), ("cran", "package")):
        spec = library.get(kind)
        if isinstance(spec, Mapping) and text(spec, field_name):
            return f"{kind}:{text(spec, field_name)}"
    for kind, value in library.items():
        if isinstance(value, str) and value.strip():
            return f"{kind}:{value.strip()}"
    return ",".join(map(str, library)) or "unknown"


def termination_details(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    return mapping_at(mapping_at(entry, "status"), "termination_details")


def epoch_ms(value: Any) -> datetime | None:
    """Epoch milliseconds (the Databricks time unit) as aware UTC; None for missing or 0 (not ended)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        return None
    return datetime.fromtimestamp(value / 1000, tz=UTC)


def parse_id(value: Any) -> int | None:
    """A numeric Databricks id given as a number or as digits in a string; None otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def required_id(holder: Mapping[str, Any], name: str, what: str) -> int:
    value = parse_id(holder.get(name))
    if value is None:
        found = holder.get(name)
        got = f" (got {found!r:.40})" if found is not None else ""
        raise ExtractError(f"{what} has no numeric {name}{got}")
    return value


def text(holder: Mapping[str, Any], name: str) -> str:
    value = holder.get(name)
    if value is None or isinstance(value, Mapping | list):
        return ""
    return (value if isinstance(value, str) else str(value)).strip()


def mapping_at(holder: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = holder.get(name) if name else None
    return value if isinstance(value, Mapping) else {}


def as_mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ExtractError(f"{what} must be a JSON object, not {type(value).__name__}")
    return value


def clean_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata without empty values (None, "", [], {}); False and 0 stay."""
    return {name: value for name, value in metadata.items() if not _empty(value)}


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict | tuple) and len(value) == 0)
