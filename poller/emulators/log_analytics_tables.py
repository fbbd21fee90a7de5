"""The Log Analytics emulator's tables: rows in DuckDB, KQL run through duckdb-kql, results in wire shape.

Each row carries a hidden ingestion time (`INGESTION_COLUMN`); a query sees only the rows ingested by the
emulator's "now" and, when the request has a timespan, whose TimeGenerated lies in it.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as time_of_day
from pathlib import Path
from typing import Any

import duckdb_kql
from duckdb_kql.errors import KqlSyntaxError
from duckdb_kql.types import kusto_type

from poller.emulators.schemas import DATETIME, DUCKDB_TYPES, INGESTION_COLUMN, STRING, Row, Schema, format_datetime

Window = tuple[datetime, datetime]


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


class Tables:
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
                out.write(json.dumps(row, default=json_default))
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


def json_default(value: object) -> str:
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
