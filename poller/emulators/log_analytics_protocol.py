"""The Log Analytics query API on the wire: the `Fault` type, requests parsed, replies and error bodies built.

Bodies follow reference/azure-log-analytics.md §5 (the query request, the result tables, the error shapes).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import SplitResult, parse_qs, unquote

from poller.emulators.log_analytics_tables import QueryFailed, QueryResult, Window, json_default
from poller.emulators.schemas import parse_datetime

Headers = tuple[tuple[str, str], ...]


# --- public types -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """A misbehaviour for the next `times` query requests, in the order injected.

    `status` answers with that HTTP status instead of the result (429 ThrottledError, 500, 503,
    504 GatewayTimeout, 204 with an empty body, ...); `retry_after` adds a ``Retry-After`` header
    (None leaves it out, which azure-core does not retry for a POST). `partial_error` answers 200
    with the real tables plus a ``PartialError`` carrying that text. `delay_seconds` sleeps first.
    """

    status: int | None = None
    retry_after: int | None = None
    partial_error: str | None = None
    delay_seconds: float = 0.0
    times: int = 1

    def __post_init__(self) -> None:
        if self.times < 1:
            raise ValueError("Fault.times must be at least 1")
        if self.status is not None and self.partial_error is not None:
            raise ValueError("a Fault answers either with a status or with a partial error, not both")


@dataclass(frozen=True)
class RequestRecord:
    """One request the emulator answered (control API calls excluded)."""

    time: datetime
    method: str
    path: str
    workspace: str | None
    query: str | None
    timespan: str | None
    status: int
    rows: int
    authorization: bool
    prefer: str | None = None
    fault: Fault | None = None


# --- timespan -----------------------------------------------------------------------------------

_DURATION = re.compile(
    r"^P(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(text: str) -> timedelta:
    """An ISO 8601 day-time duration: ``PT3600.0S`` (what the SDK sends), ``P1D``, ``PT1H30M``."""
    match = _DURATION.match(text.strip())
    if not match or text.strip() in ("P", "PT"):
        raise ValueError(f"not an ISO 8601 duration: {text!r}")
    parts = {name: float(value) for name, value in match.groupdict().items() if value}
    return timedelta(**parts)


def parse_timespan(text: str | None, now: datetime) -> Window | None:
    """The request `timespan` as (start, end): a duration back from now, start/end, or start/duration."""
    if not text:
        return None
    first, _, second = text.partition("/")
    if not second:
        return now - parse_duration(first), now
    if first.startswith("P"):
        end = parse_datetime(second)
        return end - parse_duration(first), end
    start = parse_datetime(first)
    if second.startswith("P"):
        return start, start + parse_duration(second)
    return start, parse_datetime(second)


def request_window(timespan: str | None, now: datetime) -> Window | None:
    """`parse_timespan`, with a bad timespan raised as the query failure the service answers 400 with."""
    try:
        return parse_timespan(timespan, now)
    except ValueError as exc:
        message = f"Invalid timespan {timespan!r}: {exc}"
        raise QueryFailed("InvalidTimespan", "InvalidTimespan", message) from exc


# --- responses ----------------------------------------------------------------------------------

_STATUS_ERRORS: dict[int, tuple[str, str]] = {
    400: ("BadArgumentError", "The request had some invalid properties"),
    401: ("AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing or empty."),
    403: ("InvalidAuthenticationToken", "The access token is invalid."),
    404: ("PathNotFoundError", "The requested path does not exist"),
    408: ("RequestTimeout", "The request timed out."),
    429: ("ThrottledError", "Your request was throttled. Please retry after some time."),
    500: ("InternalServerError", "An internal server error occurred."),
    502: ("BadGateway", "Bad gateway"),
    503: ("ServiceUnavailableError", "The service is temporarily unavailable."),
    504: ("GatewayTimeout", "Gateway timeout"),
}

_INNER_SUMMARIES = {
    "SyntaxError": "A recognition error occurred in the query.",
    "SemanticError": "A semantic error occurred.",
    "InvalidTimespan": "The timespan is not valid.",
}


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    headers: Headers = ()
    rows: int = 0


def json_reply(status: int, payload: object, rows: int = 0, headers: Headers = ()) -> Reply:
    body = json.dumps(payload, separators=(",", ":"), default=json_default).encode()
    return Reply(status, body, (("Content-Type", "application/json; charset=utf-8"), *headers), rows)


def error_reply(status: int, message: str | None = None, headers: Headers = ()) -> Reply:
    code, default_message = _STATUS_ERRORS.get(status, ("Error", f"HTTP {status}"))
    error = {"code": code, "message": message or default_message, "correlationId": str(uuid.uuid4())}
    return json_reply(status, {"error": error}, headers=headers)


def query_failed_reply(failure: QueryFailed) -> Reply:
    inner = {"code": failure.code, "message": failure.message}
    error = {
        "message": _STATUS_ERRORS[400][1],
        "code": "BadArgumentError",
        "correlationId": str(uuid.uuid4()),
        "innererror": {"code": failure.kind, "message": _INNER_SUMMARIES[failure.kind], "innererror": inner},
    }
    return json_reply(400, {"error": error})


def fault_reply(fault: Fault) -> Reply:
    assert fault.status is not None
    headers = (("Retry-After", str(fault.retry_after)),) if fault.retry_after is not None else ()
    if fault.status == 204:
        return Reply(204, b"", headers)  # "workspace has no data": no body at all (reference §5.5)
    return error_reply(fault.status, headers=headers)


def _partial_error(message: str, inner_code: str = "-2133196788") -> dict[str, object]:
    """The 200-with-error block of a partially failed query (reference §5.8 recording)."""
    detail = {
        "code": "EngineError",
        "message": "Something went wrong processing your query on the server.",
        "innererror": {"code": inner_code, "message": message, "severity": 2, "severityName": "Error"},
    }
    return {"code": "PartialError", "message": "There were some errors when processing your query.",
            "details": [detail]}


def success_payload(result: QueryResult, fault: Fault | None, row_limit: int) -> dict[str, object]:
    table = {
        "name": "PrimaryResult",
        "columns": [{"name": name, "type": column_type} for name, column_type in result.columns],
        "rows": result.rows,
    }
    payload: dict[str, object] = {"tables": [table]}
    if result.truncated:
        payload["error"] = _partial_error(
            f"Query result set has exceeded the internal record count limit {row_limit} "
            "(E_QUERY_RESULT_SET_TOO_LARGE; see https://aka.ms/kustoquerylimits)", "-2133196347")
    elif fault is not None and fault.partial_error is not None:
        payload["error"] = _partial_error(fault.partial_error)
    return payload


# --- requests in --------------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpRequest:
    method: str
    url: SplitResult
    headers: dict[str, str]
    body: bytes


@dataclass
class QueryRequest:
    """What a query request asked for; `problem` is the reply when it cannot be served."""

    workspace: str | None = None
    query: str | None = None
    timespan: str | None = None
    problem: Reply | None = field(default=None, repr=False)


_QUERY_PATH = re.compile(r"^/v1/workspaces/(?P<workspace>[^/]+)/query/?$")


def parse_query_request(http: HttpRequest) -> QueryRequest:
    match = _QUERY_PATH.match(http.url.path)
    if not match:
        return QueryRequest(problem=error_reply(404))
    request = QueryRequest(workspace=unquote(match["workspace"]))
    fields = _request_fields(http)
    if fields is None:
        request.problem = error_reply(400, "The request body is not valid JSON.")
        return request
    query, timespan = fields.get("query"), fields.get("timespan")
    request.query = query if isinstance(query, str) else None
    request.timespan = timespan if isinstance(timespan, str) else None
    if not request.query:
        request.problem = error_reply(400, "The 'query' property is required.")
    return request


def _request_fields(http: HttpRequest) -> dict[str, object] | None:
    if http.method == "GET":
        return {key: values[-1] for key, values in parse_qs(http.url.query).items()}
    try:
        fields = json.loads(http.body or b"{}")
    except ValueError:
        return None
    return fields if isinstance(fields, dict) else None


def bearer_token(headers: Mapping[str, str]) -> str:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""

