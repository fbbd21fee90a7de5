"""Azure Functions rules: an ``AppExceptions`` / ``FunctionAppLogs`` row (or the source's one row per invocation)
→ one ``exception`` Failure, or None.

Rows read:

* ``AppExceptions`` (workspace-based Application Insights) and the classic ``exceptions`` table's names
  (alerts, the App Insights API), mapped by :data:`CLASSIC_COLUMNS` (reference §3.3);
* ``FunctionAppLogs`` rows at level Error/Critical or carrying an exception; other rows are no failure (None);
* the rows of ``poller/sources/kql/functions_failures.kql``: one of the above per invocation, with
  ``InvocationKey``, ``ExceptionRows`` (how many exception rows the invocation logged) and ``Weight``.

Key: ``functions:invocation:<id>``, one failure per invocation. The id is the Functions host's invocation id
(``FunctionInvocationId``, or ``Properties.InvocationId`` on exceptions): both tables carry it, and an
invocation that throws logs its exception several times (the function's logger, ``Host.Results``, the
``Executed … (Failed …)`` line), all under that id. Exceptions tracked outside an invocation have only the
Application Insights ``OperationId``, which then stands in (it names one request, so one invocation).

Fields: ``error_message`` is the innermost exception's message (the root cause; the outer
``FunctionInvocationException`` only says which function threw), ``error_code`` its type; ``resource`` the
function name, ``resource_id`` the row's ``_ResourceId``, ``run_id`` the invocation id. The innermost exception
comes from ``InnermostType``/``InnermostMessage``, else from the `` ---> `` chain of ``ExceptionDetails``; an
out-of-process worker's ``RpcException`` (``Result: Failure Exception: ValueError: … Stack: …``) is unwrapped to
the worker's exception. ``metadata``: function app and name, invocation and operation ids, problem id, outer type
and message, stack (``Details`` / ``ExceptionDetails``), ``item_count`` and ``sampled`` when a row stands for
several sampled ones (``ItemCount`` > 1).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from poller.errors import ExtractError
from poller.extractors import alerts
from poller.extractors.cleaning import clean_message
from poller.extractors.columns import as_int, json_object, json_value, mapping, parse_time, text
from poller.models import Failure, Kind, Service

APP_EXCEPTIONS = "AppExceptions"
FUNCTION_APP_LOGS = "FunctionAppLogs"
CLASSIC_EXCEPTIONS = "exceptions"
FUNCTIONS_TABLES = frozenset({APP_EXCEPTIONS, FUNCTION_APP_LOGS, CLASSIC_EXCEPTIONS})
SITES_TYPE = "microsoft.web/sites"

#: Classic Application Insights ``exceptions`` column → its ``AppExceptions`` name (reference §3.3).
CLASSIC_COLUMNS: dict[str, str] = {
    "cloud_RoleName": "AppRoleName",
    "cloud_RoleInstance": "AppRoleInstance",
    "operation_Name": "OperationName",
    "operation_Id": "OperationId",
    "operation_ParentId": "ParentId",
    "problemId": "ProblemId",
    "type": "ExceptionType",
    "outerType": "OuterType",
    "outerMessage": "OuterMessage",
    "innermostType": "InnermostType",
    "innermostMessage": "InnermostMessage",
    "message": "Message",
    "details": "Details",
    "itemCount": "ItemCount",
    "customDimensions": "Properties",
    "severityLevel": "SeverityLevel",
    "timestamp": "TimeGenerated",
    "appName": "_ResourceId",
}
#: FunctionAppLogs levels that make a row a failure even without an exception.
FAILURE_LEVELS = frozenset({"Error", "Critical"})
#: Columns any Functions row may carry its time in, in order.
TIME_COLUMNS = ("TimeGenerated", "timestamp")
FALLBACK_MESSAGE = "Function failed"
MAX_STACK = 8000

#: Exceptions that only carry another: the exception they wrap is the error (out-of-process workers).
#: Each pattern gives the wrapped exception's type (may be empty) and message.
WRAPPED_EXCEPTIONS: tuple[re.Pattern[str], ...] = (
    re.compile(r"Exception: (?:(?P<type>(?:[A-Za-z_][\w.]*)?(?:Error|Exception|Warning|Exit|Interrupt)): )?"
               r"(?P<message>.*?)(?:\s*\r?\n\s*Stack:|\Z)", re.S),
)
_WRAPPERS = ("RpcException",)
# .NET Exception.ToString(): "Type: message" (SqlException adds its HResult: "Type (0x80131904): message"),
# inner exceptions after " ---> ", stack frames on "   at " lines.
_CHAIN_LINK = re.compile(
    r"(?:^|--->\s*)(?P<type>[A-Za-z_][\w.`+]*)(?: \(0x[0-9A-Fa-f]+\))?\s?: "
    r"(?P<message>.*?)(?=\r?\n\s+at |\s*--->|\r?\n\s*--- End of|\Z)",
    re.S,
)
_FUNCTION_CATEGORY = re.compile(r"^Function\.([^.]+)")


@dataclass(frozen=True, slots=True)
class ExceptionView:
    """What one row says about an exception, in the same terms whichever table it came from."""

    app: str
    function: str
    invocation_id: str
    operation_id: str
    outer_type: str
    outer_message: str
    innermost_type: str
    innermost_message: str
    problem_id: str
    stack: str
    item_count: int | None
    table: str


def extract_row(row: Any, *, fallback_message: str = "") -> Failure | None:
    """One row → the failure of its invocation, or None for a FunctionAppLogs row that reports none."""
    given = _classic_renamed(mapping(row, "a Functions"))
    if not is_failure_row(given):
        return None
    view = read_view(given)
    key_id = text(given, "InvocationKey") or view.invocation_id or view.operation_id
    if not key_id:
        raise ExtractError("Functions row has no FunctionInvocationId, InvocationId or OperationId")
    return _failure(given, view, f"functions:invocation:{key_id}", fallback_message, raw=row)


def extract_unkeyed(row: Mapping[str, Any], key: str, fallback_message: str = "") -> Failure | None:
    """A failure under a key the caller chose (an alert event without any invocation or operation id)."""
    given = _classic_renamed(row)
    return _failure(given, read_view(given), key, fallback_message, raw=row)


def is_failure_row(row: Mapping[str, Any]) -> bool:
    """Exceptions always are; a FunctionAppLogs row when it is an error or carries an exception."""
    if (row.get("Type") or row.get("$table")) != FUNCTION_APP_LOGS:
        return True
    return text(row, "Level") in FAILURE_LEVELS or bool(text(row, "ExceptionType"))


def is_functions_row(row: Mapping[str, Any]) -> bool:
    """Whether a row is an exception or a Functions log row (by table, or by exception columns)."""
    table = row.get("Type") or row.get("$table")
    if isinstance(table, str) and table in FUNCTIONS_TABLES:
        return True
    markers = ("OuterMessage", "outerMessage", "InnermostMessage", "innermostMessage", "ProblemId", "problemId",
               "FunctionInvocationId", "ExceptionMessage")
    return any(column in row for column in markers)


def read_view(row: Mapping[str, Any]) -> ExceptionView:
    """The exception a row describes (see the module docstring for where each part comes from)."""
    properties = json_object(json_value(row.get("Properties")))
    if _is_log_row(row):
        outer_type, outer_message = text(row, "ExceptionType"), text(row, "ExceptionMessage")
        inner_type, inner_message = _innermost_of_chain(text(row, "ExceptionDetails"), outer_type, outer_message)
        if not (inner_type or inner_message):
            inner_message = text(row, "Message")
        stack, app = text(row, "ExceptionDetails"), text(row, "AppName", "AppRoleName")
        invocation = text(row, "FunctionInvocationId", "InvocationId")
    else:
        outer_type = text(row, "OuterType", "ExceptionType")
        outer_message = text(row, "OuterMessage", "Message")
        inner_message = text(row, "InnermostMessage") or outer_message
        # Without InnermostType, the outer type names the innermost exception only if the messages agree.
        inner_type = text(row, "InnermostType") or (outer_type if inner_message == outer_message else "")
        stack, app = _stack_text(row.get("Details")), text(row, "AppRoleName")
        invocation = text(row, "InvocationId") or text(properties, "InvocationId")
    inner_type, inner_message = _unwrapped(inner_type, inner_message)
    return ExceptionView(
        app=app,
        function=_function_name(row, properties),
        invocation_id=invocation,
        operation_id=text(row, "OperationId"),
        outer_type=outer_type,
        outer_message=outer_message,
        innermost_type=inner_type,
        innermost_message=inner_message,
        problem_id=text(row, "ProblemId"),
        stack=stack[:MAX_STACK],
        item_count=as_int(row.get("Weight")) or as_int(row.get("ItemCount")),
        table=text(row, "Type", "$table"),
    )


def is_functions_alert(alert: alerts.Alert) -> bool:
    """Whether an alert is about function apps though it carries no Functions row."""
    return alert.target_type == SITES_TYPE or any(
        re.search(rf"\b{table}\b", alert.search_query) for table in FUNCTIONS_TABLES
    )


def extract_alert(payload: Any) -> list[Failure]:
    """The Functions failures an alert reports: App Insights / Log Analytics log alerts, Simple Log Alert events."""
    return alerts.extract_alert_with(payload, FUNCTIONS_ALERTS)


def _failure(
    row: Mapping[str, Any], view: ExceptionView, key: str, fallback_message: str, *, raw: Any
) -> Failure:
    message = clean_message(view.innermost_message or fallback_message or FALLBACK_MESSAGE).text
    metadata: dict[str, Any] = {
        "function_app": view.app,
        "function_name": view.function,
        "invocation_id": view.invocation_id,
        "operation_id": view.operation_id,
        "problem_id": view.problem_id,
        "exception_type": view.innermost_type,
        "outer_type": view.outer_type,
        "outer_message": clean_message(view.outer_message).text if view.outer_message else "",
        "stack": view.stack,
        "item_count": view.item_count,
        "sampled": bool(view.item_count and view.item_count > 1),
        "exception_rows": as_int(row.get("ExceptionRows")),
        "table": view.table,
    }
    return Failure(
        key=key,
        service=Service.FUNCTIONS.value,
        kind=Kind.EXCEPTION.value,
        resource=view.function or view.app,
        error_message=message,
        occurred_at=_occurred_at(row),
        resource_id=text(row, "_ResourceId", "ResourceId").lower(),
        run_id=view.invocation_id or view.operation_id,
        error_code=view.innermost_type,
        metadata={name: value for name, value in metadata.items() if value},
        raw=raw,
    )


def _is_log_row(row: Mapping[str, Any]) -> bool:
    table = text(row, "Type", "$table")
    if table in (APP_EXCEPTIONS, CLASSIC_EXCEPTIONS):
        return False
    return table == FUNCTION_APP_LOGS or bool(text(row, "FunctionInvocationId", "ExceptionDetails", "AppName"))


def _innermost_of_chain(details: str, outer_type: str, outer_message: str) -> tuple[str, str]:
    """The last exception of a .NET ``ToString()`` chain; the outer exception when there is no chain."""
    links = list(_CHAIN_LINK.finditer(details)) if details else []
    if links:
        return links[-1]["type"], links[-1]["message"].strip()
    return outer_type, outer_message


def _unwrapped(kind: str, message: str) -> tuple[str, str]:
    if not kind.endswith(_WRAPPERS):
        return kind, message
    for pattern in WRAPPED_EXCEPTIONS:
        match = pattern.search(message)
        if match and match["message"].strip():
            return match["type"] or kind, match["message"].strip()
    return kind, message


def _function_name(row: Mapping[str, Any], properties: Mapping[str, Any]) -> str:
    name = text(row, "FunctionName") or text(properties, "FunctionName", "prop__functionName")
    if not name:
        category = text(row, "Category") or text(properties, "Category")
        match = _FUNCTION_CATEGORY.match(category)
        name = match.group(1) if match else text(row, "OperationName")
    return name.removeprefix("Functions.")


def _stack_text(details: Any) -> str:
    """``Details`` (a list of exceptions with parsed stacks) as text, outermost first; text is kept as is."""
    value = json_value(details)
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        return ""
    lines: list[str] = []
    for item in value:
        if not isinstance(item, Mapping):
            continue
        lines.append(f"{text(item, 'type', 'typeName')}: {text(item, 'message')}")
        raw_stack = text(item, "rawStack", "stack")
        frames = item.get("parsedStack")
        if raw_stack:
            lines.append(raw_stack)
        elif isinstance(frames, list):
            lines.extend(_frame(frame) for frame in frames if isinstance(frame, Mapping))
    return "\n".join(lines)


def _frame(frame: Mapping[str, Any]) -> str:
    where = f" in {text(frame, 'fileName')}:line {text(frame, 'line')}" if text(frame, "fileName") else ""
    return f"   at {text(frame, 'method')}{where}"


def _classic_renamed(row: Mapping[str, Any]) -> Mapping[str, Any]:
    """A classic ``exceptions`` row under its AppExceptions names; other rows as they are."""
    if not any(column in row for column in ("outerMessage", "problemId", "operation_Id", "innermostMessage")):
        return row
    renamed = {CLASSIC_COLUMNS.get(column, column): value for column, value in row.items()}
    renamed.setdefault("Type", CLASSIC_EXCEPTIONS)
    return renamed


def _occurred_at(row: Mapping[str, Any]) -> datetime:
    for column in TIME_COLUMNS:
        value = parse_time(row.get(column), column)
        if value is not None:
            return value
    raise ExtractError("Functions row has no TimeGenerated or timestamp")


FUNCTIONS_ALERTS = alerts.AlertRules(
    service=Service.FUNCTIONS.value,
    label="Functions",
    target_type=SITES_TYPE,
    target_noun="a function app",
    segment="/providers/",  # any target: the function app, or the Application Insights resource
    is_row=is_functions_row,
    is_service_alert=is_functions_alert,
    run_id_columns=("InvocationId", "FunctionInvocationId", "OperationId", "operation_Id", "InvocationKey"),
    extract_row=lambda row, fallback: extract_row(row, fallback_message=fallback),
    extract_unkeyed=extract_unkeyed,
    time_columns=TIME_COLUMNS,
    unkeyed_rows="each",
)
