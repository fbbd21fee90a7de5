"""The Failure value type and the one JSON writer every stored and printed object goes through."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from poller.models import Failure, dumps, loads

AT = datetime(2026, 11, 1, 8, 30, 15, 123456, tzinfo=UTC)


def sample() -> Failure:
    return Failure(key="adf:activity:1", service="adf", kind="activity_run", resource="pl", error_message="boom",
                   occurred_at=AT, resource_id="/subscriptions/s", run_id="r", error_code="E", failure_type="UserError",
                   metadata={"activity_name": "Copy"}, raw={"TimeGenerated": AT, "n": 1})


def test_stamped_keeps_every_other_field() -> None:
    failure = sample()
    stamped = failure.stamped("adf-prod", AT + timedelta(minutes=5))
    assert stamped == dataclasses.replace(failure, source="adf-prod", detected_at=AT + timedelta(minutes=5))
    assert failure.source == "" and failure.detected_at is None  # the original is untouched


@pytest.mark.parametrize("value", [
    {"a": 1, "b": [1.5, -0.0, 1e20, 0.1 + 0.2], "c": None, "d": True, "e": "é — \n \"q\" \\ \u2028"},
    {"nested": {"list": [{"x": "y"}], "tuple": (1, 2)}, "empty": {}, "unicode": "日本語"},
    ["plain", 1, 2],
])
def test_dumps_writes_what_the_standard_library_would(value: Any) -> None:
    assert dumps(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def test_dumps_tolerates_odd_values() -> None:
    east = timezone(timedelta(hours=2))
    assert dumps({"t": AT, "naive": datetime(2026, 1, 1), "east": datetime(2026, 1, 1, 2, tzinfo=east)}) == (
        '{"t":"2026-11-01T08:30:15.123456Z","naive":"2026-01-01T00:00:00Z","east":"2026-01-01T02:00:00+02:00"}')
    assert dumps({"d": date(2026, 1, 1), "s": {1}, 1: "int key"}) == '{"d":"2026-01-01","s":"{1}","1":"int key"}'
    # Beyond what orjson writes: the standard library takes over.
    assert dumps({"big": 2**70}) == '{"big":1180591620717411303424}'
    assert dumps({"s": "\ud800"}) == json.dumps({"s": "\ud800"}, ensure_ascii=False, separators=(",", ":"))


@pytest.mark.parametrize("text", [
    '{"errorCode": "2200", "message": "Failure happened on \'Source\' side", "details": [], "n": null}',
    '{"runDate": "2026-11-01", "flags": [true, false], "é": "日本語 \\u2028"}',
    ' [1, -0.0, 1.5e3, 0.1, 18446744073709551615] ',
    '{"big": 123456789012345678901234567890, "neg": -9223372036854775809}',  # orjson would make these floats
    '{"a": NaN, "b": -Infinity, "c": "\\ud800"}',  # orjson refuses these
    '{"a": 1, "a": 2}',
])
def test_loads_reads_what_the_standard_library_would(text: str) -> None:
    assert repr(loads(text)) == repr(json.loads(text))


@pytest.mark.parametrize("text", ["", "{", '{"a": 1} x', '["\x01"]'])
def test_loads_refuses_what_the_standard_library_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        loads(text)


def test_failure_json_cache_follows_the_value() -> None:
    failure = sample()
    assert failure.raw_json() == dumps(failure.raw) and failure.metadata_json() == dumps(failure.metadata)
    assert failure.raw_json() is failure.raw_json()  # dumped once
    other = dataclasses.replace(failure, raw={"n": 2})
    assert other.raw_json() == '{"n":2}'
