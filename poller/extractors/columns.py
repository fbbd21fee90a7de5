"""Reading Log Analytics row values the way every extractor needs them: text, times, JSON columns, GUIDs.

A row comes from the SDK (``datetime`` objects, dynamic columns as JSON text) or from saved JSON (ISO strings,
dynamic columns as objects); these helpers accept both, and treat ``""``, ``None`` and the literal ``"null"``
as missing, as Log Analytics writes them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from poller.errors import ExtractError
from poller.models import loads

NULL_TEXTS = frozenset({"null", "NULL", "Null"})
_GUID = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")


def text(row: Mapping[str, Any], *columns: str) -> str:
    """The first of ``columns`` that holds a non-empty value other than the literal "null", as text."""
    for column in columns:
        value = row.get(column)
        if value is None or value == "":
            continue
        found = (value if type(value) is str else str(value)).strip()
        if found and found not in NULL_TEXTS:
            return found
    return ""


def run_id(value: str) -> str:
    """A run id as keys use it: GUIDs lower-case (``runId_g`` and ``RunId`` spell them differently)."""
    return value.lower() if _GUID.match(value) else value


def parse_time(value: Any, column: str) -> datetime | None:
    """A Log Analytics time (``datetime`` or ISO text, 7-digit fractions allowed) in UTC; None if empty."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ExtractError(f"{column} is not an ISO 8601 time: {value[:60]!r}") from None
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    raise ExtractError(f"{column} is not a time: {type(value).__name__}")


def json_object(value: Any) -> Mapping[str, Any]:
    """A JSON-object column (``Error``, ``Properties`` …) as a dict; text that is not JSON is ``{"_text": ...}``."""
    if type(value) is not str:
        return value if isinstance(value, Mapping) else {}
    if not value or value in NULL_TEXTS:
        return {}
    if value.lstrip().startswith("{"):
        try:
            parsed = loads(value)
        except ValueError:
            return {"_text": value}
        if isinstance(parsed, dict):
            return parsed
    return {"_text": value}


def json_value(value: Any) -> Any:
    """A dynamic column as its JSON value: text that parses as a JSON array or object is parsed, else kept."""
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        try:
            return loads(value)
        except ValueError:
            return value
    return value


def as_int(value: Any) -> int | None:
    """An integer column (int, integral float, digits); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def mapping(row: Any, what: str) -> Mapping[str, Any]:
    if type(row) is not dict and not isinstance(row, Mapping):
        raise ExtractError(f"{what} row must be a JSON object, not {type(row).__name__}")
    return row
