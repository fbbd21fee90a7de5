"""Log Analytics query API emulator: real HTTPS, the documented wire format, KQL run on DuckDB.

Stands in for ``https://api.loganalytics.io`` in the tests and in ``rca-poller demo`` (DESIGN.md §6).
It answers ``POST /v1/workspaces/{id}/query`` (reference/azure-log-analytics.md §5.8) by running the
query through duckdb-kql over tables loaded from JSON rows. Each row has a hidden ingestion time:
a row is invisible until the emulator's clock passes it, which is how late delivery is played, and
``ingestion_time()`` in a query reads it. Faults (429, 5xx, 204, partial errors, slow answers) are
queued with `inject` and consumed one per query request. The tables and query execution are in
`log_analytics_tables`; request parsing, reply bodies and the fault queue in `log_analytics_protocol`.

Standalone: ``python -m poller.emulators.log_analytics --data DIR [--port N] [--rebase]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from poller.emulators.log_analytics_protocol import (
    Fault,
    HttpRequest,
    QueryRequest,
    Reply,
    RequestRecord,
    bearer_token,
    error_reply,
    fault_reply,
    json_reply,
    parse_duration,
    parse_query_request,
    parse_timespan,
    query_failed_reply,
    request_window,
    success_payload,
)
from poller.emulators.log_analytics_tables import QueryFailed, QueryResult, Tables, rewrite_query
from poller.emulators.schemas import DEFAULT_INGESTION_DELAY, TABLE_SCHEMAS, prepare_rows, read_data_dir, rebase_rows
from poller.emulators.serving import RequestLog, ScriptQueue, ServedEmulator
from poller.emulators.tls import EmulatorHandler, ThrowawayCA, TlsThreadingServer

__all__ = ["DEFAULT_ROW_LIMIT", "DEFAULT_WORKSPACE_ID", "Fault", "LogAnalyticsEmulator", "QueryFailed", "QueryResult",
           "RequestRecord", "main", "parse_duration", "parse_timespan", "rewrite_query"]

DEFAULT_WORKSPACE_ID = "00000000-0000-0000-0000-000000000001"
#: The query API's documented record cap (reference §5.7).
DEFAULT_ROW_LIMIT = 500_000

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


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
        self._tables = Tables(Path(self._scratch.name))
        self._faults = ScriptQueue[Fault]()
        self._requests = RequestLog[RequestRecord]()
        for table in empty_tables:
            # A workspace whose diagnostic setting targets a table knows it before the first row lands.
            self._tables.create(table, TABLE_SCHEMAS[table])
        if data_dir is not None:
            self._load_data_dir(data_dir, rebase)

    # lifecycle (start, stop, `with`, `url`: ServedEmulator)

    def _make_server(self) -> TlsThreadingServer[LogAnalyticsEmulator]:
        return TlsThreadingServer(self._address, _Handler, self, self._ca.server_context())

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
        self._faults.push(fault, fault.times)

    def clear_faults(self) -> None:
        self._faults.clear()

    @property
    def pending_faults(self) -> int:
        return self._faults.pending()

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of the requests answered so far, oldest first."""
        return self._requests.snapshot()

    def reset_requests(self) -> None:
        self._requests.clear()

    # serving (called from the HTTP threads)

    def serve_request(self, http: HttpRequest) -> Reply:
        """The reply to one HTTP request."""
        if http.url.path.startswith("/_emulator/"):
            return self._serve_control(http)
        request = parse_query_request(http)
        rejection = request.problem or self._reject(http, request)
        fault = None if rejection else self._faults.take()
        reply = rejection or self._answer(request, fault)
        self._record(http, request, reply, fault)
        return reply

    def _reject(self, http: HttpRequest, request: QueryRequest) -> Reply | None:
        token = bearer_token(http.headers)
        if not token:
            return error_reply(401)
        if self.expected_token is not None and token != self.expected_token:
            return error_reply(403)
        if (request.workspace or "").lower() != self.workspace_id.lower():
            return error_reply(404, f"The workspace '{request.workspace}' could not be found.")
        return None

    def _answer(self, request: QueryRequest, fault: Fault | None) -> Reply:
        if fault is not None and fault.delay_seconds:
            self._stopping.wait(fault.delay_seconds)
        if fault is not None and fault.status is not None:
            return fault_reply(fault)
        now = self.clock()
        assert request.query is not None
        try:
            window = request_window(request.timespan, now)
            query = rewrite_query(request.query, self._tables.schemas())
            result = self._tables.run(query, now, window, self.row_limit)
        except QueryFailed as failure:
            return query_failed_reply(failure)
        return json_reply(200, success_payload(result, fault, self.row_limit), rows=len(result.rows))

    def _record(self, http: HttpRequest, request: QueryRequest, reply: Reply, fault: Fault | None) -> None:
        record = RequestRecord(
            time=self.clock(), method=http.method, path=http.url.path, workspace=request.workspace,
            query=request.query, timespan=request.timespan, status=reply.status, rows=reply.rows,
            authorization=bool(bearer_token(http.headers)), prefer=http.headers.get("prefer") or None,
            fault=fault,
        )
        self._requests.append(record)
        if self.verbose:
            print(f"{record.method} {record.path} -> {record.status} ({record.rows} rows)", file=sys.stderr)

    def _serve_control(self, http: HttpRequest) -> Reply:
        """A small unauthenticated API for standalone use: faults, rows, the request log."""
        path, method = http.url.path.rstrip("/"), http.method
        try:
            if path == "/_emulator/faults" and method == "POST":
                self.inject(Fault(**json.loads(http.body)))
                return json_reply(201, {"pending": self.pending_faults})
            if path == "/_emulator/faults" and method == "DELETE":
                self.clear_faults()
                return json_reply(200, {"pending": 0})
            if (rows_path := re.match(r"^/_emulator/tables/([^/]+)/rows$", path)) and method == "POST":
                rows = json.loads(http.body)
                self.add_rows(unquote(rows_path[1]), rows)
                return json_reply(201, {"rows": len(rows)})
            if path == "/_emulator/requests" and method == "GET":
                return json_reply(200, [asdict(r) for r in self.requests])
        except (TypeError, ValueError) as exc:
            return error_reply(400, str(exc))
        return error_reply(404)


class _Handler(EmulatorHandler):
    server: TlsThreadingServer[LogAnalyticsEmulator]

    def _dispatch(self) -> None:
        headers, body = self.read_request()
        reply = self.server.emulator.serve_request(HttpRequest(self.command, urlsplit(self.path), headers, body))
        self.send_reply(reply.status, reply.headers, reply.body, content_length=reply.status != 204)

    do_GET = do_POST = do_DELETE = _dispatch


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
