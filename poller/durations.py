"""Durations in config: ``90``, ``"90s"``, ``"20m"``, ``"24h"``, ``"7d"``, or ISO 8601 (``PT1H``, as a dumped config
writes them). Its own module so that both ``poller.config`` and ``poller.remediation.config`` use the one parser."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, TypeAdapter

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_ISO_DURATION = TypeAdapter(timedelta)


def parse_duration(value: Any) -> timedelta:
    """``90``, ``"90s"``, ``"20m"``, ``"24h"``, ``"7d"``, ``"PT1H"`` → timedelta (a bare number means seconds)."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 60s, 20m, 24h or 7d, got {value!r}")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if not match and str(value).startswith(("P", "-P")):
        return _ISO_DURATION.validate_python(value)
    if not match:
        raise ValueError(f"expected a duration such as 60s, 20m, 24h or 7d, got {value!r}")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2) or "s"])


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
