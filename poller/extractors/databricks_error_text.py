"""Databricks error text: a failure's one-line message, trace and log tails, and what the message names.

The message is cleaned to one line so that repeats compare equal; traces and logs keep their newlines and only
their tail. From the message (and the trace's last lines) come the exception type, the Spark error class, the
SQLSTATE and any error code Databricks names in it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from poller.extractors.cleaning import ANSI_ESCAPE
from poller.extractors.databricks_json import mapping_at, termination_details, text

#: How the exception type is read from the first line of an error, first match wins.
EXCEPTION_TYPE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    # JVM or Python qualified names: org.apache.spark.SparkException, py4j.protocol.Py4JJavaError,
    # com.databricks.backend.common.rpc.DatabricksExceptions$SQLExecutionException
    ("qualified class", re.compile(r"^((?:[a-z_][\w$]*\.)+[A-Z][\w$]*)(?=:|\s*$)")),
    # Bare names that say what they are: ZeroDivisionError, AnalysisException, Exception, SystemExit
    ("named class", re.compile(r"^(\w*(?:Error|Exception|Exit|Interrupt|Warning|Failure))(?=:|\s*$)")),
    # Python builtins without such a suffix
    ("python builtin", re.compile(r"^(StopIteration|StopAsyncIteration|GeneratorExit)(?=:|\s*$)")),
)
#: Spark error classes (``AnalysisException: [TABLE_OR_VIEW_NOT_FOUND] ...``) and SQLSTATEs.
ERROR_CLASS = re.compile(r"^(?:[\w.$]+:\s*)?\[([A-Z][A-Z0-9_]+(?:\.[A-Z0-9_]+)*)\]")
SQLSTATE = re.compile(r"SQLSTATE:\s*([0-9A-Z]{5})\b")
#: A code Databricks names inside a message: ``Error Code: DRIVER_LIBRARY_INSTALLATION_FAILURE``.
MESSAGE_ERROR_CODE = re.compile(r"Error Code:\s*([A-Z][A-Z0-9_]{2,})")

TRACE_TAIL_CHARS = 8192
LOGS_TAIL_CHARS = 4096
TRUNCATED_MARK = "…[truncated {count} characters]\n"


def error_message(entry: Mapping[str, Any], output: Mapping[str, Any]) -> str:
    """The first non-empty of get-output ``error``, termination message, state message, on one line."""
    for candidate in (
        text(output, "error"),
        text(termination_details(entry), "message"),
        text(mapping_at(entry, "state"), "state_message"),
    ):
        cleaned = one_line(candidate)
        if cleaned:
            return cleaned
    state = mapping_at(entry, "state")
    ended = text(state, "result_state") or text(state, "life_cycle_state") or "failure"
    task_key = text(entry, "task_key")
    return f"Task {task_key} ended {ended}" if task_key else f"Run ended {ended}"


def message_fields(message: str, trace: str) -> dict[str, str | None]:
    """Exception type, Spark error class, SQLSTATE and named error code of a message, as metadata."""
    error_class = ERROR_CLASS.match(message)
    sqlstate = SQLSTATE.search(message)
    named = MESSAGE_ERROR_CODE.search(message)
    return {
        "exception_type": exception_type(message, trace),
        "error_class": error_class.group(1) if error_class else None,
        "sqlstate": sqlstate.group(1) if sqlstate else None,
        "message_error_code": named.group(1) if named else None,
    }


def exception_type(message: str, trace: str = "") -> str:
    """The exception class named by an error (``ZeroDivisionError``, ``org.apache.spark.SparkException``)."""
    trace_lines = [line.strip() for line in reversed(trace.splitlines()) if line.strip()][:5]
    for candidate in (message, *trace_lines):
        for _, pattern in EXCEPTION_TYPE_PATTERNS:
            match = pattern.match(candidate)
            if match:
                return match.group(1)
    return ""


def strip_ansi(value: str) -> str:
    return ANSI_ESCAPE.sub("", value) if "\x1b" in value else value


def one_line(value: str) -> str:
    """ANSI escapes stripped, whitespace (newlines too) collapsed to single spaces, trimmed."""
    return " ".join(strip_ansi(value).split())


def tail(value: str, limit: int) -> tuple[str, bool]:
    """ANSI-stripped text, newlines kept, trailing blanks trimmed; only its last ``limit`` characters."""
    cleaned = "\n".join(line.rstrip() for line in strip_ansi(value).replace("\r\n", "\n").split("\n")).strip()
    if len(cleaned) <= limit:
        return cleaned, False
    cut = len(cleaned) - limit
    return TRUNCATED_MARK.format(count=cut) + cleaned[cut:], True
