"""Turning an ADF error message into the exact error: strip terminal noise and forwarding, keep the content.

ADF repeats a child's error up the tree: a pipeline says ``Operation on target <activity> failed: <child
message>`` (nested once per ExecutePipeline level), a ForEach/Until/If/Switch says ``Activity failed because
an inner activity failed; Inner activity name: <activity>, Error: <child message>``. Cleaning peels those
wrappers off, remembers the targets (outermost first), strips ANSI escapes (Databricks and Spark output),
and collapses whitespace. Everything else — including the ``'Type=...,Message=...,Source=...'`` tail — stays.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
OPERATION_ON_TARGET = re.compile(r"Operation on target (.+?) failed:\s*")
INNER_ACTIVITY_FAILED = re.compile(
    r"Activity failed because an inner activity failed(?:; Inner activity name: (.+?), Error:\s*)?"
)
# Only a name counts: the .NET/SQL numeric ErrorCode=-2146232060 later in the text is not the cause.
NAMED_ERROR_CODE = re.compile(r"ErrorCode=([A-Za-z][A-Za-z0-9_]*)")
SQL_ERROR_NUMBER = re.compile(r"(?:SqlErrorNumber=|Sql error number: )(-?\d+)")
FAILURE_SIDE = re.compile(r"Failure happened on '(\w+)' side")

_OPERATION_PREFIX = "Operation on target "
_INNER_PREFIX = "Activity failed because an inner activity failed"


@dataclass(frozen=True, slots=True)
class CleanMessage:
    """A cleaned message, the activities it was forwarded through, and whether it was only a forwarding."""

    text: str
    targets: tuple[str, ...] = ()
    forwarded: bool = False


def clean_message(raw: str) -> CleanMessage:
    """Strip ANSI escapes and forwarding wrappers, collapse whitespace; the rest of the text is kept as is."""
    if "\x1b" in raw:
        raw = ANSI_ESCAPE.sub("", raw)
    text = " ".join(raw.split())
    if not (text.startswith(_OPERATION_PREFIX) or text.startswith(_INNER_PREFIX)):
        return CleanMessage(text)
    return _unwrap(text)


def _unwrap(text: str) -> CleanMessage:
    targets: list[str] = []
    while True:
        match = OPERATION_ON_TARGET.match(text) or INNER_ACTIVITY_FAILED.match(text)
        if match is None:
            break
        rest = text[match.end():]
        if match.group(1) is None or not rest:
            # A bare "inner activity failed" (or a prefix with nothing after it) is all there is to say.
            if match.group(1):
                targets.append(match.group(1))
            break
        targets.append(match.group(1))
        text = rest
    return CleanMessage(text, tuple(targets), forwarded=True)


def named_error_code(text: str) -> str:
    """The first ``ErrorCode=<Name>`` in a message, or ""."""
    if "ErrorCode=" not in text:
        return ""
    match = NAMED_ERROR_CODE.search(text)
    return match.group(1) if match else ""


def sql_error_number(text: str) -> int | None:
    """The SQL Server error number quoted in a message (``SqlErrorNumber=207``), if any."""
    match = SQL_ERROR_NUMBER.search(text)
    return int(match.group(1)) if match else None


def failure_side(text: str) -> str:
    """``Source`` or ``Sink`` from a Copy activity's "Failure happened on 'X' side", or ""."""
    match = FAILURE_SIDE.search(text) if "Failure happened on" in text else None
    return match.group(1) if match else ""
