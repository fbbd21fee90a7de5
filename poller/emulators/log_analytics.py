"""Log Analytics query API emulator: real HTTPS, the documented wire format, KQL run on DuckDB.

Stands in for ``https://api.loganalytics.io`` in the tests and in ``rca-poller demo`` (DESIGN.md §6).
It answers ``POST /v1/workspaces/{id}/query`` (reference/azure-log-analytics.md §5.8) by running the
query through duckdb-kql over tables loaded from JSON rows. Each row has a hidden ingestion time:
a row is invisible until the emulator's clock passes it, which is how late delivery is played, and
``ingestion_time()`` in a query reads it. Faults (429, 5xx, 204, partial errors, slow answers) are
queued with `inject` and consumed one per query request.

Standalone: ``python -m poller.emulators.log_analytics --data DIR [--port N] [--rebase]``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import re
import signal
import sys
import tempfile
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as time_of_day
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

import duckdb_kql
from duckdb_kql.errors import KqlSyntaxError
from duckdb_kql.types import kusto_type

from poller.emulators.schemas import (
    DATETIME,
    DEFAULT_INGESTION_DELAY,
    DUCKDB_TYPES,
    INGESTION_COLUMN,
    STRING,
    TABLE_SCHEMAS,
    Row,
    Schema,
    format_datetime,
    parse_datetime,
    prepare_rows,
    read_data_dir,
    rebase_rows,
)
from poller.emulators.serving import ServedEmulator
from poller.emulators.tls import ThrowawayCA

DEFAULT_WORKSPACE_ID = "00000000-0000-0000-0000-000000000001"
#: The query API's documented record cap (reference §5.7).
DEFAULT_ROW_LIMIT = 500_000

Clock = Callable[[], datetime]
Window = tuple[datetime, datetime]
Headers = tuple[tuple[str, str], ...]


def _utc_now() -> datetime:
    return datetime.now(UTC)


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


# --- KQL rewrites -------------------------------------------------------------------------------

_INGESTION_TIME_CALL = re.compile(r"\bingestion_time\s*\(\s*\)")
_COLUMN_IFEXISTS_CALL = re.compile(
    r"\bcolumn_ifexists\s*\(\s*(?P<quote>[\"'])(?P<name>[^\"']+)(?P=quote)\s*,\s*"
    r"(?P<default>\"[^\"]*\"|'[^']*'|[^(),]*(?:\([^()]*\))?)\s*\)"
)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def rewrite_query(query: str, schemas: Mapping[str, Schema]) -> str:
    """The query with the two functions duckdb-kql lacks spelled in what it runs.

    ``ingestion_time()`` becomes the hidden column; ``column_ifexists("C", d)`` becomes ``C`` when a
    table the query names has that column, else ``d``.
    """
    query = _INGESTION_TIME_CALL.sub(INGESTION_COLUMN, query)
    known = _columns_of_named_tables(query, schemas)
    return _COLUMN_IFEXISTS_CALL.sub(lambda m: _column_or_default(m, known), query)


def _columns_of_named_tables(query: str, schemas: Mapping[str, Schema]) -> set[str]:
    # Only the tables the query mentions: `ErrorMessage` exists on ADFActivityRun, and a Synapse
    # query asking column_ifexists("ErrorMessage", "") must still get the default.
    named = [s for t, s in schemas.items() if re.search(rf"\b{re.escape(t)}\b", query)]
    return {column for schema in named or schemas.values() for column in schema}


def _column_or_default(match: re.Match[str], known: set[str]) -> str:
    name = match["name"]
    if name not in known:
        return match["default"].strip()
    return name if _IDENTIFIER.match(name) else f"['{name}']"


# --- tables on DuckDB ---------------------------------------------------------------------------


class QueryFailed(Exception):
    """The query could not be run; carries the Log Analytics error body's codes."""

    def __init__(self, kind: str, code: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # SyntaxError | SemanticError | InvalidTimespan
        self.code = code  # the innermost code (SYN0002, SEM0100, ...)
        self.message = message


@dataclass(frozen=True)
class QueryResult:
    """A result table in wire shape: Log Analytics column types and JSON-ready cells."""

    columns: list[tuple[str, str]]
    rows: list[Sequence[object]]
    truncated: bool


_HIDDEN = re.compile(rf"^{INGESTION_COLUMN}\d*$")  # `join` renames the right side's copy to ..1
_GETSCHEMA_COLUMNS = ["ColumnName", "ColumnOrdinal", "DataType", "ColumnType"]
_MISSING_TABLE = re.compile(r"Table with name (\S+) does not exist")
_MISSING_COLUMN = re.compile(r'Referenced column "?([^"\s]+)"? not found')


class _Tables:
    """The loaded tables: schemas in Python, rows in DuckDB's `raw` catalog, one connection + lock.

    A query runs against views in the main catalog that show only what is visible now and inside
    the request's timespan; DuckDB views are shared by every cursor, hence one query at a time.
    """

    def __init__(self, scratch: Path) -> None:
        self._con = duckdb_kql.connect()
        self._con.execute("ATTACH ':memory:' AS raw")
        self._schemas: dict[str, Schema] = {}
        self._scratch = scratch
        self._batch = itertools.count()
        self._lock = threading.Lock()

    def schemas(self) -> dict[str, Schema]:
        with self._lock:
            return {table: dict(schema) for table, schema in self._schemas.items()}

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {t: self._count(t) for t in self._schemas}

    def create(self, table: str, schema: Schema) -> None:
        with self._lock:
            self._shape_table(table, schema)

    def insert(self, table: str, schema: Schema, rows: list[Row]) -> None:
        with self._lock:
            self._shape_table(table, schema)
            self._load(table, schema, rows)

    def run(self, query: str, now: datetime, window: Window | None, limit: int) -> QueryResult:
        with self._lock:
            self._create_views(now, window)
            try:
                relation = duckdb_kql.kql(self._con, query, query_now=now)
                columns = [(n, str(t)) for n, t in zip(relation.columns, relation.types, strict=True)
                           if not _HIDDEN.match(n)]
                # Cells are put in wire shape by DuckDB: per-cell Python made 100k rows take seconds.
                wire = relation.project(", ".join(_wire_expression(n, t) for n, t in columns))
                rows = wire.limit(limit + 1).fetchall()
            except Exception as exc:  # the pre-alpha translator can fail in any way; the body says how
                raise _as_query_failed(exc) from exc
            return _wire_result(columns, rows, limit)

    def close(self) -> None:
        with self._lock:
            self._con.close()

    def _count(self, table: str) -> int:
        return int(self._con.sql(f"SELECT count(*) FROM raw.{_quote(table)}").fetchall()[0][0])

    def _shape_table(self, table: str, schema: Schema) -> None:
        old = self._schemas.get(table)
        columns = ", ".join(f"{_quote(c)} {DUCKDB_TYPES[t]}" for c, t in schema.items())
        if old is None:
            self._con.execute(f"CREATE TABLE raw.{_quote(table)} ({columns}, {INGESTION_COLUMN} TIMESTAMPTZ)")
        elif old != schema:
            # New columns go before the hidden one so `getschema` ordinals stay contiguous.
            selects = [_quote(c) if c in old else _empty_value(c, t) for c, t in schema.items()]
            self._con.execute(
                f"CREATE OR REPLACE TABLE raw.{_quote(table)} AS "
                f"SELECT {', '.join(selects)}, {INGESTION_COLUMN} FROM raw.{_quote(table)}"
            )
        self._schemas[table] = dict(schema)

    def _load(self, table: str, schema: Schema, rows: list[Row]) -> None:
        # Newline-delimited JSON read by DuckDB is ~3x faster than binding 100k Python rows.
        path = self._scratch / f"batch-{next(self._batch)}.ndjson"
        with path.open("w", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(row, default=_json_default))
                out.write("\n")
        types = {**schema, INGESTION_COLUMN: DATETIME}
        read_columns = "{" + ", ".join(f"{_sql_string(c)}: 'VARCHAR'" for c in types) + "}"
        casts = ", ".join(f"CAST({_quote(c)} AS {DUCKDB_TYPES[t]})" for c, t in types.items())
        self._con.execute(
            f"INSERT INTO raw.{_quote(table)} SELECT {casts} FROM "
            f"read_json({_sql_string(str(path))}, format='newline_delimited', columns={read_columns})"
        )
        path.unlink()

    def _create_views(self, now: datetime, window: Window | None) -> None:
        for table, schema in self._schemas.items():
            where = f"{INGESTION_COLUMN} <= {_sql_time(now)}"
            if window and "TimeGenerated" in schema:
                where += f" AND TimeGenerated BETWEEN {_sql_time(window[0])} AND {_sql_time(window[1])}"
            self._con.execute(
                f"CREATE OR REPLACE VIEW main.{_quote(table)} AS "
                f"SELECT * FROM raw.{_quote(table)} WHERE {where}"
            )


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _sql_time(moment: datetime) -> str:
    return f"TIMESTAMPTZ {_sql_string(moment.astimezone(UTC).isoformat())}"


def _empty_value(column: str, column_type: str) -> str:
    empty = "''" if column_type == STRING else "NULL"
    return f"CAST({empty} AS {DUCKDB_TYPES[column_type]}) AS {_quote(column)}"


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return format_datetime(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _as_query_failed(exc: Exception) -> QueryFailed:
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, KqlSyntaxError):
        return QueryFailed("SyntaxError", "SYN0002", f"Query could not be parsed: {text}")
    if table := _MISSING_TABLE.search(str(exc)):
        return QueryFailed("SemanticError", "SEM0100",
                           f"Failed to resolve table expression named '{table[1]}' ({text})")
    if column := _MISSING_COLUMN.search(str(exc)):
        return QueryFailed("SemanticError", "SEM0100",
                           f"Failed to resolve scalar expression named '{column[1]}' ({text})")
    return QueryFailed("SemanticError", "SEM0001", f"The query could not be run by duckdb-kql: {text}")


def _wire_expression(name: str, duck_type: str) -> str:
    """SQL giving a cell as the query API writes it: strings never null, datetimes ISO 8601 with Z,
    dynamic and guid as text."""
    column, kind = _quote(name), duck_type.upper()
    if kind == "VARCHAR":
        value = f"coalesce({column}, '')"
    elif kind.startswith("TIMESTAMP") or kind == "DATE":
        moment = f"CAST({column} AS TIMESTAMPTZ)"
        value = (f"CASE WHEN epoch_us({moment}) % 1000000 = 0 THEN strftime({moment}, '%Y-%m-%dT%H:%M:%SZ') "
                 f"ELSE strftime({moment}, '%Y-%m-%dT%H:%M:%S.%fZ') END")
    elif kind in ("JSON", "UUID"):
        value = f"CAST({column} AS VARCHAR)"
    elif kusto_type(duck_type) == "dynamic":
        value = f"CAST(to_json({column}) AS VARCHAR)"
    elif kind.startswith("DECIMAL"):
        value = f"CAST({column} AS DOUBLE)"
    else:
        return column
    return f"{value} AS {column}"


def _wire_result(columns: list[tuple[str, str]], rows: list[tuple[Any, ...]], limit: int) -> QueryResult:
    if [name for name, _ in columns] == _GETSCHEMA_COLUMNS:
        rows = [row for row in rows if not _HIDDEN.match(str(row[0]))]
    named = [(name, kusto_type(duck_type)) for name, duck_type in columns]
    python_side = [i for i, (_, duck_type) in enumerate(columns) if duck_type.upper() in _PYTHON_SIDE_TYPES]
    cells: list[Sequence[object]] = list(rows[:limit])
    if python_side:
        cells = [[_wire_value(v) if i in python_side else v for i, v in enumerate(row)] for row in cells]
    return QueryResult(named, cells, len(rows) > limit)


_PYTHON_SIDE_TYPES = {"INTERVAL", "TIME", "BLOB"}


def _wire_value(value: object) -> object:
    """The few cell types DuckDB does not turn into JSON values itself."""
    if isinstance(value, timedelta):
        return _kusto_timespan(value)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, time_of_day):
        return value.isoformat()
    return value


def _kusto_timespan(value: timedelta) -> str:
    """Kusto's `[-][d.]hh:mm:ss[.fffffff]`."""
    sign, value = ("-", -value) if value < timedelta(0) else ("", value)
    hours, rest = divmod(value.seconds, 3600)
    text = f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    if value.microseconds:
        text += f".{value.microseconds:06d}0"
    return f"{sign}{value.days}.{text}" if value.days else sign + text


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
class _Reply:
    status: int
    body: bytes = b""
    headers: Headers = ()
    rows: int = 0


def _json_reply(status: int, payload: object, rows: int = 0, headers: Headers = ()) -> _Reply:
    body = json.dumps(payload, separators=(",", ":"), default=_json_default).encode()
    return _Reply(status, body, (("Content-Type", "application/json; charset=utf-8"), *headers), rows)


def _error_reply(status: int, message: str | None = None, headers: Headers = ()) -> _Reply:
    code, default_message = _STATUS_ERRORS.get(status, ("Error", f"HTTP {status}"))
    error = {"code": code, "message": message or default_message, "correlationId": str(uuid.uuid4())}
    return _json_reply(status, {"error": error}, headers=headers)


def _query_failed_reply(failure: QueryFailed) -> _Reply:
    inner = {"code": failure.code, "message": failure.message}
    error = {
        "message": _STATUS_ERRORS[400][1],
        "code": "BadArgumentError",
        "correlationId": str(uuid.uuid4()),
        "innererror": {"code": failure.kind, "message": _INNER_SUMMARIES[failure.kind], "innererror": inner},
    }
    return _json_reply(400, {"error": error})


def _fault_reply(fault: Fault) -> _Reply:
    assert fault.status is not None
    headers = (("Retry-After", str(fault.retry_after)),) if fault.retry_after is not None else ()
    if fault.status == 204:
        return _Reply(204, b"", headers)  # "workspace has no data": no body at all (reference §5.5)
    return _error_reply(fault.status, headers=headers)


def _partial_error(message: str, inner_code: str = "-2133196788") -> dict[str, object]:
    """The 200-with-error block of a partially failed query (reference §5.8 recording)."""
    detail = {
        "code": "EngineError",
        "message": "Something went wrong processing your query on the server.",
        "innererror": {"code": inner_code, "message": message, "severity": 2, "severityName": "Error"},
    }
    return {"code": "PartialError", "message": "There were some errors when processing your query.",
            "details": [detail]}


def _success_payload(result: QueryResult, fault: Fault | None, row_limit: int) -> dict[str, object]:
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
class _HttpRequest:
    method: str
    url: SplitResult
    headers: dict[str, str]
    body: bytes


@dataclass
class _QueryRequest:
    """What a query request asked for; `problem` is the reply when it cannot be served."""

    workspace: str | None = None
    query: str | None = None
    timespan: str | None = None
    problem: _Reply | None = field(default=None, repr=False)


_QUERY_PATH = re.compile(r"^/v1/workspaces/(?P<workspace>[^/]+)/query/?$")


def _parse_query_request(http: _HttpRequest) -> _QueryRequest:
    match = _QUERY_PATH.match(http.url.path)
    if not match:
        return _QueryRequest(problem=_error_reply(404))
    request = _QueryRequest(workspace=unquote(match["workspace"]))
    fields = _request_fields(http)
    if fields is None:
        request.problem = _error_reply(400, "The request body is not valid JSON.")
        return request
    query, timespan = fields.get("query"), fields.get("timespan")
    request.query = query if isinstance(query, str) else None
    request.timespan = timespan if isinstance(timespan, str) else None
    if not request.query:
        request.problem = _error_reply(400, "The 'query' property is required.")
    return request


def _request_fields(http: _HttpRequest) -> dict[str, object] | None:
    if http.method == "GET":
        return {key: values[-1] for key, values in parse_qs(http.url.query).items()}
    try:
        fields = json.loads(http.body or b"{}")
    except ValueError:
        return None
    return fields if isinstance(fields, dict) else None


def _bearer_token(headers: Mapping[str, str]) -> str:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class _FaultQueue:
    """Injected faults, first in first out, each used `times` times."""

    def __init__(self) -> None:
        self._queue: deque[list[Any]] = deque()
        self._lock = threading.Lock()

    def push(self, fault: Fault) -> None:
        with self._lock:
            self._queue.append([fault, fault.times])

    def take(self) -> Fault | None:
        with self._lock:
            if not self._queue:
                return None
            entry = self._queue[0]
            entry[1] -= 1
            if entry[1] == 0:
                self._queue.popleft()
            fault: Fault = entry[0]
            return fault

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()

    def pending(self) -> int:
        with self._lock:
            return sum(int(remaining) for _, remaining in self._queue)


# --- the emulator -------------------------------------------------------------------------------


class LogAnalyticsEmulator(ServedEmulator):
    """An HTTPS Log Analytics query endpoint over in-memory tables; `with` starts and stops it."""

    thread_name = "log-analytics-emulator"

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        workspace_id: str = DEFAULT_WORKSPACE_ID,
        clock: Clock = _utc_now,
        rebase: bool = False,
        expected_token: str | None = None,
        row_limit: int = DEFAULT_ROW_LIMIT,
        host: str = "127.0.0.1",
        port: int = 0,
        ca: ThrowawayCA | None = None,
        verbose: bool = False,
        empty_tables: Sequence[str] = (),
    ) -> None:
        self.workspace_id = workspace_id
        self.clock = clock
        self.row_limit = row_limit
        self.expected_token = expected_token
        self.verbose = verbose
        self._address = (host, port)
        self._scratch = tempfile.TemporaryDirectory(prefix="la-emulator-")
        self._ca = ca or ThrowawayCA(Path(self._scratch.name))
        self._tables = _Tables(Path(self._scratch.name))
        self._faults = _FaultQueue()
        self._requests: list[RequestRecord] = []
        self._requests_lock = threading.Lock()
        for table in empty_tables:
            # A workspace whose diagnostic setting targets a table knows it before the first row lands.
            self._tables.create(table, TABLE_SCHEMAS[table])
        if data_dir is not None:
            self._load_data_dir(data_dir, rebase)

    # lifecycle (start, stop, `with`, `url`: ServedEmulator)

    def _make_server(self) -> _Server:
        return _Server(self._address, self, self._ca)

    def close(self) -> None:
        """Stop, then release the tables and the scratch directory (CA file included); `stop` alone keeps them."""
        super().close()
        self._tables.close()
        self._scratch.cleanup()

    @property
    def ca_path(self) -> Path:
        """PEM of the CA that signed the server certificate (`connection_verify=str(ca_path)`)."""
        return self._ca.ca_path

    # data

    def add_rows(
        self,
        table: str,
        rows: list[dict[str, Any]],
        *,
        ingested_at: datetime | None = None,
        ingestion_delay: timedelta = DEFAULT_INGESTION_DELAY,
    ) -> None:
        """Append rows; each becomes visible at its `_IngestionTime` key, else `ingested_at`,
        else TimeGenerated + `_IngestionDelaySeconds` or `ingestion_delay`."""
        if not rows:
            return
        schema, prepared = prepare_rows(
            table, self._tables.schemas().get(table, {}), rows, ingested_at, ingestion_delay, self.clock()
        )
        self._tables.insert(table, schema, prepared)

    def tables(self) -> dict[str, int]:
        """Row count per loaded table, visible or not."""
        return self._tables.counts()

    def _load_data_dir(self, data_dir: Path, rebase: bool) -> None:
        now = self.clock()
        batches = {
            table: prepare_rows(table, {}, rows, None, DEFAULT_INGESTION_DELAY, now)
            for table, rows in read_data_dir(data_dir).items() if rows
        }
        if rebase:
            rebase_rows(batches, now - timedelta(minutes=1))
        for table, (schema, rows) in batches.items():
            self._tables.insert(table, schema, rows)

    # faults and the request log

    def inject(self, fault: Fault) -> None:
        """Queue a fault for the next query requests (first in, first out)."""
        self._faults.push(fault)

    def clear_faults(self) -> None:
        self._faults.clear()

    @property
    def pending_faults(self) -> int:
        return self._faults.pending()

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of the requests answered so far, oldest first."""
        with self._requests_lock:
            return list(self._requests)

    def reset_requests(self) -> None:
        with self._requests_lock:
            self._requests.clear()

    # serving (called from the HTTP threads)

    def serve_request(self, http: _HttpRequest) -> _Reply:
        """The reply to one HTTP request."""
        if http.url.path.startswith("/_emulator/"):
            return self._serve_control(http)
        request = _parse_query_request(http)
        rejection = request.problem or self._reject(http, request)
        fault = None if rejection else self._faults.take()
        reply = rejection or self._answer(request, fault)
        self._record(http, request, reply, fault)
        return reply

    def _reject(self, http: _HttpRequest, request: _QueryRequest) -> _Reply | None:
        token = _bearer_token(http.headers)
        if not token:
            return _error_reply(401)
        if self.expected_token is not None and token != self.expected_token:
            return _error_reply(403)
        if (request.workspace or "").lower() != self.workspace_id.lower():
            return _error_reply(404, f"The workspace '{request.workspace}' could not be found.")
        return None

    def _answer(self, request: _QueryRequest, fault: Fault | None) -> _Reply:
        if fault is not None and fault.delay_seconds:
            self._stopping.wait(fault.delay_seconds)
        if fault is not None and fault.status is not None:
            return _fault_reply(fault)
        now = self.clock()
        assert request.query is not None
        try:
            window = _window(request.timespan, now)
            query = rewrite_query(request.query, self._tables.schemas())
            result = self._tables.run(query, now, window, self.row_limit)
        except QueryFailed as failure:
            return _query_failed_reply(failure)
        return _json_reply(200, _success_payload(result, fault, self.row_limit), rows=len(result.rows))

    def _record(self, http: _HttpRequest, request: _QueryRequest, reply: _Reply, fault: Fault | None) -> None:
        record = RequestRecord(
            time=self.clock(), method=http.method, path=http.url.path, workspace=request.workspace,
            query=request.query, timespan=request.timespan, status=reply.status, rows=reply.rows,
            authorization=bool(_bearer_token(http.headers)), prefer=http.headers.get("prefer") or None,
            fault=fault,
        )
        with self._requests_lock:
            self._requests.append(record)
        if self.verbose:
            print(f"{record.method} {record.path} -> {record.status} ({record.rows} rows)", file=sys.stderr)

    def _serve_control(self, http: _HttpRequest) -> _Reply:
        """A small unauthenticated API for standalone use: faults, rows, the request log."""
        path, method = http.url.path.rstrip("/"), http.method
        try:
            if path == "/_emulator/faults" and method == "POST":
                self.inject(Fault(**json.loads(http.body)))
                return _json_reply(201, {"pending": self.pending_faults})
            if path == "/_emulator/faults" and method == "DELETE":
                self.clear_faults()
                return _json_reply(200, {"pending": 0})
            if (rows_path := re.match(r"^/_emulator/tables/([^/]+)/rows$", path)) and method == "POST":
                rows = json.loads(http.body)
                self.add_rows(unquote(rows_path[1]), rows)
                return _json_reply(201, {"rows": len(rows)})
            if path == "/_emulator/requests" and method == "GET":
                return _json_reply(200, [asdict(r) for r in self.requests])
        except (TypeError, ValueError) as exc:
            return _error_reply(400, str(exc))
        return _error_reply(404)


def _window(timespan: str | None, now: datetime) -> Window | None:
    try:
        return parse_timespan(timespan, now)
    except ValueError as exc:
        message = f"Invalid timespan {timespan!r}: {exc}"
        raise QueryFailed("InvalidTimespan", "InvalidTimespan", message) from exc


# --- HTTP plumbing ------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a request stuck in an injected delay must not hold up stop()

    def __init__(self, address: tuple[str, int], emulator: LogAnalyticsEmulator, ca: ThrowawayCA) -> None:
        super().__init__(address, _Handler)
        self.emulator = emulator
        # The handshake happens in the request thread, so a silent client cannot stall accept().
        context = ca.server_context()
        self.socket = context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that give up (read timeouts, refused certificates) are expected here.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {key.lower(): value for key, value in self.headers.items()}
        request = _HttpRequest(self.command, urlsplit(self.path), headers, body)
        self._write(self.server.emulator.serve_request(request))

    def _write(self, reply: _Reply) -> None:
        try:
            self.send_response(reply.status)
            for name, value in reply.headers:
                self.send_header(name, value)
            if reply.status != 204:
                self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:
            self.close_connection = True  # the client left (e.g. its read timeout fired)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log is `emulator.requests`; stderr noise helps nobody in tests


# --- standalone ---------------------------------------------------------------------------------


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m poller.emulators.log_analytics",
        description="Serve a local HTTPS Log Analytics query API over JSON tables.",
    )
    parser.add_argument("--data", type=Path, help="directory of <TableName>.json files (JSON arrays of rows)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--workspace-id", default=DEFAULT_WORKSPACE_ID)
    parser.add_argument("--rebase", action="store_true", help="shift the data to end 1 minute ago")
    parser.add_argument("--row-limit", type=int, default=DEFAULT_ROW_LIMIT)
    parser.add_argument("--verbose", action="store_true", help="print one line per request to stderr")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the emulator until Ctrl-C or SIGTERM."""
    args = _arguments(argv)
    emulator = LogAnalyticsEmulator(
        args.data, workspace_id=args.workspace_id, rebase=args.rebase, row_limit=args.row_limit,
        host=args.host, port=args.port, verbose=args.verbose,
    )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with emulator:
        for line in _banner(emulator):
            print(line, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            done.wait()
    return 0


def _banner(emulator: LogAnalyticsEmulator) -> Iterator[str]:
    yield f"url: {emulator.url}"
    yield f"workspace_id: {emulator.workspace_id}"
    yield f"ca_file: {emulator.ca_path}"
    for table, count in emulator.tables().items():
        yield f"table: {table} ({count} rows)"
    yield f"# trust it with: SSL_CERT_FILE={emulator.ca_path} (or REQUESTS_CA_BUNDLE); Ctrl-C stops"


if __name__ == "__main__":
    sys.exit(main())
