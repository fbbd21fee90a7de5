"""The Log Analytics emulator, driven by the real azure-monitor-query client over HTTPS."""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError, ServiceResponseError
from azure.monitor.query import LogsQueryClient, LogsQueryPartialResult, LogsQueryResult, LogsQueryStatus

from poller.emulators.log_analytics import (
    DEFAULT_WORKSPACE_ID,
    Fault,
    LogAnalyticsEmulator,
    parse_timespan,
    rewrite_query,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]

PIPELINE_RUN_ID = "3f6c2a91-7d4e-4b8a-9e21-5c0d7f1a2b34"
COPY_ERROR = {
    "errorCode": "2200",
    "message": "Failure happened on 'Source' side. ErrorCode=SqlOperationFailed,'Type=Microsoft.DataTransfer."
    "Common.Shared.HybridDeliveryException,Message=A database operation failed.,Source=,'",
    "failureType": "UserError",
    "target": "Copy_SalesOrders",
    "details": [],
}

# The poller's activity query (reference §4.2 A), trimmed to what the assertions read.
ACTIVITY_FAILURES = """
let ingestFrom = datetime({ingest_from});
let ingestTo   = datetime({ingest_to});
let tgFloor    = ingestFrom - 1d;
ADFActivityRun
| where TimeGenerated >= tgFloor
| where ingestion_time() > ingestFrom and ingestion_time() <= ingestTo
| where Status == "Failed"
| extend IngestedAt = ingestion_time()
| summarize arg_max(TimeGenerated, *) by ActivityRunId
| extend E = parse_json(Error)
| extend ErrCode   = coalesce(ErrorCode, tostring(E.errorCode)),
         ErrMsg    = coalesce(ErrorMessage, tostring(E.message)),
         ErrTarget = tostring(E.target),
         InnerCode = extract(@"ErrorCode=([A-Za-z0-9_]+)", 1, coalesce(ErrorMessage, tostring(E.message)))
| join kind=leftouter (
    ADFPipelineRun
    | where TimeGenerated >= tgFloor
    | summarize arg_max(TimeGenerated, Status, Parameters) by RunId
    | project PipelineRunId = RunId, PipelineStatus = Status, PipelineParameters = Parameters
  ) on PipelineRunId
| project ActivityRunId, IngestedAt, PipelineRunId, ActivityName, ErrCode, InnerCode, ErrMsg, ErrTarget,
          PipelineStatus, PipelineParameters, End
| order by ActivityRunId asc
"""


class FakeClock:
    """The emulator's notion of now, moved by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class FakeCredential:
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("test-token", 9999999999)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def emulator(clock: FakeClock) -> Iterator[LogAnalyticsEmulator]:
    with LogAnalyticsEmulator(clock=clock) as emu:
        yield emu


@pytest.fixture
def client(emulator: LogAnalyticsEmulator) -> LogsQueryClient:
    return make_client(emulator)


def make_client(emulator: LogAnalyticsEmulator, **kwargs: Any) -> LogsQueryClient:
    return LogsQueryClient(
        FakeCredential(),
        endpoint=emulator.url,
        connection_verify=str(emulator.ca_path),
        retry_backoff_factor=0.01,
        **kwargs,
    )


def activity(run_id: str, status: str, minutes_ago: float, **columns: Any) -> dict[str, Any]:
    return {
        "TimeGenerated": NOW - timedelta(minutes=minutes_ago),
        "ActivityRunId": run_id,
        "ActivityName": "Copy_SalesOrders",
        "ActivityType": "Copy",
        "PipelineName": "pl_sales_daily_load",
        "PipelineRunId": PIPELINE_RUN_ID,
        "Status": status,
        "ActivityIterationCount": 1,
        "End": "1601-01-01T00:00:00Z",
        **columns,
    }


def pipeline(run_id: str, status: str, minutes_ago: float) -> dict[str, Any]:
    return {
        "TimeGenerated": NOW - timedelta(minutes=minutes_ago),
        "RunId": run_id,
        "PipelineName": "pl_sales_daily_load",
        "Status": status,
        "Parameters": '{"runDate": "2024-05-01"}',
    }


def run(client: LogsQueryClient, query: str, timespan: Any = None) -> list[dict[str, Any]]:
    result = client.query_workspace(DEFAULT_WORKSPACE_ID, query, timespan=timespan)
    assert isinstance(result, LogsQueryResult)
    return records(result.tables[0])


def records(table: Any) -> list[dict[str, Any]]:
    return [dict(zip(table.columns, row, strict=True)) for row in table.rows]


def partial_detail(result: LogsQueryPartialResult) -> str:
    """The engine's message of a partial error. The SDK's `message` is the generic top-level one;
    the specific text sits in `details` (reference §5.8)."""
    error = result.partial_error
    assert error is not None and error.code == "PartialError"
    assert error.message == "There were some errors when processing your query."
    assert error.details is not None
    message: str = error.details[0]["innererror"]["message"]
    return message


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- queries ------------------------------------------------------------------------------------


def test_poller_activity_query_runs_with_ingestion_window_arg_max_parse_json_and_leftouter_join(
    emulator: LogAnalyticsEmulator, client: LogsQueryClient
) -> None:
    emulator.add_rows(
        "ADFActivityRun",
        [
            activity("act-1", "InProgress", 10),
            activity("act-1", "Failed", 5, Error=json.dumps(COPY_ERROR), End=NOW - timedelta(minutes=5)),
            activity("act-1", "Failed", 4, Error=json.dumps(COPY_ERROR)),  # a duplicate end record
            activity(
                "act-2", "Failed", 6, PipelineRunId="no-such-run", ErrorCode="2108", ErrorMessage="boom"
            ),
            activity("act-old", "Failed", 300),  # ingested long before the window
        ],
        ingestion_delay=timedelta(minutes=2),
    )
    emulator.add_rows(
        "ADFPipelineRun",
        [pipeline(PIPELINE_RUN_ID, "InProgress", 11), pipeline(PIPELINE_RUN_ID, "Failed", 3)],
    )

    query = ACTIVITY_FAILURES.format(ingest_from=iso(NOW - timedelta(hours=1)), ingest_to=iso(NOW))
    rows = run(client, query, timespan=timedelta(days=2))

    assert [r["ActivityRunId"] for r in rows] == ["act-1", "act-2"]
    first, second = rows
    assert first["IngestedAt"] == NOW - timedelta(minutes=2)  # TimeGenerated (4 min ago) + 2 min
    assert (first["ErrCode"], first["InnerCode"], first["ErrTarget"]) == (
        "2200",
        "SqlOperationFailed",
        "Copy_SalesOrders",
    )
    assert first["ErrMsg"] == COPY_ERROR["message"]
    assert (first["PipelineStatus"], first["PipelineParameters"]) == ("Failed", '{"runDate": "2024-05-01"}')
    assert first["End"] == datetime(1601, 1, 1, tzinfo=UTC)  # the "not ended" sentinel survives
    # leftouter: no pipeline row, so the right side's strings come back empty, never null
    assert (second["ErrCode"], second["ErrMsg"], second["PipelineStatus"]) == ("2108", "boom", "")


def test_result_columns_carry_log_analytics_types(
    emulator: LogAnalyticsEmulator, client: LogsQueryClient
) -> None:
    emulator.add_rows("ADFActivityRun", [activity("act-1", "Failed", 5, _BilledSize=812.5)])

    result = client.query_workspace(
        DEFAULT_WORKSPACE_ID,
        "ADFActivityRun | project TimeGenerated, ActivityRunId, ActivityIterationCount, _BilledSize, "
        "Retried = ActivityIterationCount > 1, Rows = tolong(42), Bag = parse_json('{\"a\": 1}'), "
        "Missing = ErrorMessage, Type",
        timespan=None,
    )

    assert isinstance(result, LogsQueryResult)
    table = result.tables[0]
    assert table.name == "PrimaryResult"
    assert table.columns_types == [
        "datetime",
        "string",
        "int",
        "real",
        "bool",
        "long",
        "dynamic",
        "string",
        "string",
    ]
    row = records(table)[0]
    assert row["TimeGenerated"] == NOW - timedelta(minutes=5)
    assert (row["ActivityIterationCount"], row["_BilledSize"], row["Retried"], row["Rows"]) == (
        1,
        812.5,
        False,
        42,
    )
    assert json.loads(row["Bag"]) == {"a": 1}  # dynamic travels as JSON text
    # a documented column the row left out exists, empty; `Type` is the table's name, as in a workspace
    assert (row["Missing"], row["Type"]) == ("", "ADFActivityRun")


def test_datetimes_go_out_as_utc_iso_with_z(emulator: LogAnalyticsEmulator) -> None:
    emulator.add_rows(
        "ADFActivityRun", [activity("a", "Failed", 0, Start="2024-05-01T11:59:30.1234567Z")], ingested_at=NOW
    )

    body = post_query(emulator, {"query": "ADFActivityRun | project TimeGenerated, Start", "timespan": None})

    assert body["tables"][0]["rows"] == [["2024-05-01T12:00:00Z", "2024-05-01T11:59:30.123456Z"]]


def test_a_late_row_becomes_visible_only_once_the_clock_passes_its_ingestion(
    emulator: LogAnalyticsEmulator, client: LogsQueryClient, clock: FakeClock
) -> None:
    emulator.add_rows("ADFActivityRun", [activity("on-time", "Failed", 20)])  # ingested 17 min ago
    emulator.add_rows(
        "ADFActivityRun", [activity("late", "Failed", 1)], ingestion_delay=timedelta(minutes=12)
    )
    query = (
        "ADFActivityRun | project ActivityRunId, IngestedAt = ingestion_time() | order by ActivityRunId asc"
    )

    assert [r["ActivityRunId"] for r in run(client, query)] == ["on-time"]
    clock.advance(minutes=11)
    assert [r["ActivityRunId"] for r in run(client, query)] == ["late", "on-time"]
    assert run(client, query)[0]["IngestedAt"] == NOW + timedelta(minutes=11)


@pytest.mark.parametrize(
    ("row_keys", "add_kwargs", "visible_after"),
    [
        ({"_IngestionTime": "2024-05-01T12:05:00Z"}, {}, timedelta(minutes=5)),
        ({"_IngestionDelaySeconds": 600}, {}, timedelta(minutes=9)),  # TimeGenerated is 1 min ago
        ({}, {"ingested_at": NOW + timedelta(minutes=2)}, timedelta(minutes=2)),
    ],
)
def test_ingestion_time_comes_from_the_row_or_the_call(
    emulator: LogAnalyticsEmulator,
    client: LogsQueryClient,
    clock: FakeClock,
    row_keys: dict[str, Any],
    add_kwargs: dict[str, Any],
    visible_after: timedelta,
) -> None:
    emulator.add_rows("ADFActivityRun", [activity("a", "Failed", 1, **row_keys)], **add_kwargs)

    clock.now = NOW + visible_after - timedelta(seconds=1)
    assert run(client, "ADFActivityRun | count")[0]["Count"] == 0
    clock.now = NOW + visible_after
    rows = run(client, "ADFActivityRun | project IngestedAt = ingestion_time()")
    assert rows == [{"IngestedAt": NOW + visible_after}]


def test_hidden_ingestion_column_stays_hidden(
    emulator: LogAnalyticsEmulator, client: LogsQueryClient
) -> None:
    emulator.add_rows("ADFActivityRun", [activity("a", "Failed", 5)])
    emulator.add_rows("ADFPipelineRun", [pipeline(PIPELINE_RUN_ID, "Failed", 5)])

    joined = run(
        client,
        "ADFActivityRun | join kind=inner (ADFPipelineRun | extend PipelineRunId = RunId) on PipelineRunId",
    )
    schema = run(client, "ADFActivityRun | getschema")

    assert not [c for c in joined[0] if c.startswith("_IngestionTime")]
    assert "_IngestionTime" not in [r["ColumnName"] for r in schema]
    assert len(schema) == 35  # reference §1.2


@pytest.mark.parametrize(
    "timespan",
    [
        timedelta(hours=1),
        (NOW - timedelta(hours=1), NOW),
        (NOW - timedelta(hours=1), timedelta(hours=1)),
    ],
    ids=["duration", "start-end", "start-duration"],
)
def test_timespan_filters_on_time_generated(
    emulator: LogAnalyticsEmulator, client: LogsQueryClient, timespan: Any
) -> None:
    emulator.add_rows(
        "ADFActivityRun",
        [activity("recent", "Failed", 30), activity("old", "Failed", 90)],
        ingested_at=NOW - timedelta(minutes=10),
    )

    assert [r["ActivityRunId"] for r in run(client, "ADFActivityRun", timespan=timespan)] == ["recent"]
    assert len(run(client, "ADFActivityRun", timespan=None)) == 2


def test_ago_and_now_follow_the_emulator_clock(
    emulator: LogAnalyticsEmulator, client: LogsQueryClient
) -> None:
    emulator.add_rows("ADFActivityRun", [activity("recent", "Failed", 30), activity("old", "Failed", 90)])

    rows = run(client, "ADFActivityRun | where TimeGenerated > ago(1h) | project ActivityRunId, At = now()")

    assert rows == [{"ActivityRunId": "recent", "At": NOW}]


def test_column_ifexists_uses_the_column_only_where_the_named_table_has_it(
    emulator: LogAnalyticsEmulator, client: LogsQueryClient
) -> None:
    synapse = {"TimeGenerated": NOW - timedelta(minutes=5), "ActivityRunId": "s1", "Status": "Failed"}
    emulator.add_rows("SynapseIntegrationActivityRuns", [synapse])
    emulator.add_rows("ADFActivityRun", [activity("a1", "Failed", 5, ErrorMessage="adf says no")])
    query = (
        '{table} | project Msg = tostring(column_ifexists("ErrorMessage", "")), '
        'Tags = column_ifexists("Tags", dynamic(null))'
    )

    assert run(client, query.format(table="SynapseIntegrationActivityRuns"))[0]["Msg"] == ""
    assert run(client, query.format(table="ADFActivityRun"))[0]["Msg"] == "adf says no"

    # rows may carry the columns the documented Synapse schema lacks (reference §2.2)
    emulator.add_rows(
        "SynapseIntegrationActivityRuns", [{**synapse, "ActivityRunId": "s2", "ErrorMessage": "x"}]
    )
    msgs = run(client, query.format(table="SynapseIntegrationActivityRuns") + " | order by Msg asc")
    assert [r["Msg"] for r in msgs] == ["", "x"]


def test_unknown_and_azure_diagnostics_columns_are_typed_from_the_rows(
    emulator: LogAnalyticsEmulator, client: LogsQueryClient
) -> None:
    emulator.add_rows(
        "AzureDiagnostics",
        [
            {
                "TimeGenerated": NOW - timedelta(minutes=5),
                "ResourceProvider": "MICROSOFT.DATAFACTORY",
                "Category": "ActivityRuns",
                "status_s": "Failed",
                "runId_g": PIPELINE_RUN_ID,
                "Output_rowsCopied_d": 12,
                "start_t": "2024-05-01T11:50:00Z",
                "AdditionalFields": {"x": 1},
            }
        ],
    )
    emulator.add_rows(
        "Custom_CL",
        [{"TimeGenerated": NOW - timedelta(minutes=5), "n": 3, "ok": True, "bag": {"k": [1]}, "name": "z"}],
    )

    diag = client.query_workspace(
        DEFAULT_WORKSPACE_ID,
        "AzureDiagnostics | project status_s, runId_g, Output_rowsCopied_d, start_t, AdditionalFields",
        timespan=None,
    )
    custom = client.query_workspace(
        DEFAULT_WORKSPACE_ID, "Custom_CL | project n, ok, bag, name", timespan=None
    )

    assert isinstance(diag, LogsQueryResult) and isinstance(custom, LogsQueryResult)
    assert diag.tables[0].columns_types == ["string", "guid", "real", "datetime", "dynamic"]
    assert records(diag.tables[0])[0]["runId_g"] == PIPELINE_RUN_ID
    assert custom.tables[0].columns_types == ["long", "bool", "dynamic", "string"]


def test_a_table_without_rows_does_not_exist(emulator: LogAnalyticsEmulator, client: LogsQueryClient) -> None:
    with pytest.raises(HttpResponseError) as raised:
        run(client, "ADFTriggerRun | take 1")

    assert raised.value.status_code == 400
    assert "BadArgumentError" in str(raised.value.message)
    model = raised.value.model
    assert model is not None  # the SDK's LogsQueryError; its message is the innermost one
    assert "Failed to resolve table expression named 'ADFTriggerRun'" in model.message


@pytest.mark.parametrize(
    ("query", "inner_code", "engine_text"),
    [
        ("ADFActivityRun | wherex", "SyntaxError", "KqlSyntaxError: could not parse KQL"),
        ("ADFActivityRun | where NoSuchColumn == 1", "SemanticError", 'column "NoSuchColumn" not found'),
        ("ADFActivityRun | evaluate bag_unpack(x)", "SemanticError", "KqlUnsupportedError"),
    ],
)
def test_bad_kql_is_a_400_with_the_engine_text_innermost(
    emulator: LogAnalyticsEmulator, query: str, inner_code: str, engine_text: str
) -> None:
    emulator.add_rows("ADFActivityRun", [activity("a", "Failed", 5)])

    status, body = post_raw(emulator, {"query": query, "timespan": None})

    assert status == 400
    assert (body["error"]["code"], body["error"]["innererror"]["code"]) == ("BadArgumentError", inner_code)
    assert engine_text in body["error"]["innererror"]["innererror"]["message"]


# --- faults -------------------------------------------------------------------------------------


def test_429_with_retry_after_is_retried_by_the_client(
    emulator: LogAnalyticsEmulator, client: LogsQueryClient
) -> None:
    emulator.add_rows("ADFActivityRun", [activity("a", "Failed", 5)])
    emulator.inject(Fault(status=429, retry_after=1))

    started = time.monotonic()
    rows = run(client, "ADFActivityRun | count")

    assert rows == [{"Count": 1}]
    assert time.monotonic() - started >= 1  # the header was honoured
    assert [r.status for r in emulator.requests] == [429, 200]


def test_429_without_retry_after_raises_at_once(
    emulator: LogAnalyticsEmulator, client: LogsQueryClient
) -> None:
    emulator.add_rows("ADFActivityRun", [activity("a", "Failed", 5)])
    emulator.inject(Fault(status=429))

    with pytest.raises(HttpResponseError) as raised:
        run(client, "ADFActivityRun | count")

    assert raised.value.status_code == 429
    assert raised.value.error is not None and raised.value.error.code == "ThrottledError"
    assert len(emulator.requests) == 1


@pytest.mark.parametrize("status", [500, 503, 504])
def test_5xx_is_retried_by_azure_core(
    emulator: LogAnalyticsEmulator, client: LogsQueryClient, status: int
) -> None:
    emulator.add_rows("ADFActivityRun", [activity("a", "Failed", 5)])
    emulator.inject(Fault(status=status, times=2))

    assert run(client, "ADFActivityRun | count") == [{"Count": 1}]
    assert [r.status for r in emulator.requests] == [status, status, 200]


def test_persistent_503_gives_up_after_three_retries(
    emulator: LogAnalyticsEmulator, client: LogsQueryClient
) -> None:
    emulator.add_rows("ADFActivityRun", [activity("a", "Failed", 5)])
    emulator.inject(Fault(status=503, times=10))

    with pytest.raises(HttpResponseError) as raised:
        run(client, "ADFActivityRun | count")

    assert raised.value.status_code == 503
    assert len(emulator.requests) == 4
    assert emulator.pending_faults == 6


def test_504_carries_the_gateway_timeout_body(emulator: LogAnalyticsEmulator) -> None:
    emulator.inject(Fault(status=504))

    status, body = post_raw(emulator, {"query": "print 1", "timespan": None})

    assert (status, body["error"]["code"]) == (504, "GatewayTimeout")


def test_204_makes_the_sdk_raise_json_decode_error(
    emulator: LogAnalyticsEmulator, client: LogsQueryClient
) -> None:
    emulator.inject(Fault(status=204))

    with pytest.raises(json.JSONDecodeError):  # azure-monitor-query 2.0.0 behaviour (reference §5.5)
        run(client, "print x = 1")


def test_partial_error_comes_back_as_partial_result_with_data(
    emulator: LogAnalyticsEmulator, client: LogsQueryClient
) -> None:
    emulator.add_rows("ADFActivityRun", [activity("a", "Failed", 5), activity("b", "Failed", 5)])
    emulator.inject(Fault(partial_error="Percentiles aggregator has encountered an overflow (E_OVERFLOW)"))

    result = client.query_workspace(
        DEFAULT_WORKSPACE_ID, "ADFActivityRun | project ActivityRunId", timespan=None
    )

    assert isinstance(result, LogsQueryPartialResult)
    assert result.status == LogsQueryStatus.PARTIAL
    assert len(result.partial_data[0].rows) == 2
    assert "E_OVERFLOW" in partial_detail(result)


def test_row_limit_truncates_with_a_partial_error(
    emulator: LogAnalyticsEmulator, client: LogsQueryClient
) -> None:
    emulator.add_rows("ADFActivityRun", [activity(f"a{i}", "Failed", i) for i in range(5)], ingested_at=NOW)
    emulator.row_limit = 3

    result = client.query_workspace(
        DEFAULT_WORKSPACE_ID, "ADFActivityRun | order by ActivityRunId asc", timespan=None
    )

    assert isinstance(result, LogsQueryPartialResult)
    assert [r["ActivityRunId"] for r in records(result.partial_data[0])] == ["a0", "a1", "a2"]
    assert partial_detail(result) == (
        "Query result set has exceeded the internal record count limit 3 "
        "(E_QUERY_RESULT_SET_TOO_LARGE; see https://aka.ms/kustoquerylimits)"
    )
    assert emulator.requests[-1].rows == 3


def test_a_slow_answer_trips_the_client_read_timeout(emulator: LogAnalyticsEmulator) -> None:
    emulator.inject(Fault(delay_seconds=2))
    impatient = make_client(emulator, read_timeout=0.3, retry_total=0)

    with pytest.raises(ServiceResponseError):
        impatient.query_workspace(DEFAULT_WORKSPACE_ID, "print x = 1", timespan=None)


def test_faults_are_consumed_in_order(emulator: LogAnalyticsEmulator) -> None:
    emulator.inject(Fault(status=500))
    emulator.inject(Fault(status=429, times=2))

    statuses = [post_raw(emulator, {"query": "print x = 1"})[0] for _ in range(4)]

    assert statuses == [500, 429, 429, 200]


# --- protocol edges -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "AuthenticationFailed"),
        ({"Authorization": "Bearer "}, 401, "AuthenticationFailed"),
        ({"Authorization": "Bearer wrong"}, 403, "InvalidAuthenticationToken"),
        ({"Authorization": "Bearer test-token"}, 200, None),
    ],
)
def test_bearer_token_is_required(
    clock: FakeClock, headers: dict[str, str], status: int, code: str | None
) -> None:
    with LogAnalyticsEmulator(clock=clock, expected_token="test-token") as emu:
        got, body = post_raw(emu, {"query": "print x = 1", "timespan": None}, headers=headers)

        assert got == status
        assert body.get("error", {}).get("code") == code
        assert emu.requests[0].authorization is (
            "Authorization" in headers and headers["Authorization"] != "Bearer "
        )


def test_unknown_workspace_is_404(emulator: LogAnalyticsEmulator, client: LogsQueryClient) -> None:
    with pytest.raises(HttpResponseError) as raised:
        client.query_workspace("11111111-2222-3333-4444-555555555555", "print x = 1", timespan=None)

    assert raised.value.status_code == 404
    assert raised.value.error is not None and raised.value.error.code == "PathNotFoundError"


def test_request_log_records_what_was_asked_and_answered(
    emulator: LogAnalyticsEmulator, client: LogsQueryClient
) -> None:
    emulator.add_rows("ADFActivityRun", [activity("a", "Failed", 5), activity("b", "Failed", 5)])

    run(client, "ADFActivityRun | project ActivityRunId", timespan=timedelta(hours=1))

    [record] = emulator.requests
    assert (record.workspace, record.query, record.timespan) == (
        DEFAULT_WORKSPACE_ID,
        "ADFActivityRun | project ActivityRunId",
        "PT3600.0S",
    )
    assert (record.status, record.rows, record.authorization, record.time) == (200, 2, True, NOW)
    assert record.path == f"/v1/workspaces/{DEFAULT_WORKSPACE_ID}/query"
    emulator.reset_requests()
    assert emulator.requests == []


def test_control_api_injects_faults_and_rows(emulator: LogAnalyticsEmulator) -> None:
    assert call(emulator, "POST", "/_emulator/faults", {"status": 503, "times": 1})[0] == 201
    rows = [{"TimeGenerated": "2024-05-01T11:00:00Z", "ActivityRunId": "x", "Status": "Failed"}]
    assert call(emulator, "POST", "/_emulator/tables/ADFActivityRun/rows", rows)[0] == 201

    first = post_raw(emulator, {"query": "ADFActivityRun | count"})
    second = post_raw(emulator, {"query": "ADFActivityRun | count"})

    assert first[0] == 503
    assert second == (
        200,
        {
            "tables": [
                {"name": "PrimaryResult", "columns": [{"name": "Count", "type": "long"}], "rows": [[1]]}
            ]
        },
    )
    status, log = call(emulator, "GET", "/_emulator/requests")
    assert status == 200 and [r["status"] for r in log] == [503, 200]


# --- loading data -------------------------------------------------------------------------------


def test_data_dir_loads_tables_and_rebase_moves_them_to_now(tmp_path: Path, clock: FakeClock) -> None:
    old = datetime(2023, 1, 1, 8, 0, tzinfo=UTC)
    (tmp_path / "ADFActivityRun.json").write_text(
        json.dumps(
            [
                {
                    "TimeGenerated": iso(old),
                    "ActivityRunId": "a",
                    "Status": "Failed",
                    "End": "1601-01-01T00:00:00Z",
                    "_IngestionDelaySeconds": 300,
                },
                {
                    "TimeGenerated": iso(old - timedelta(hours=1)),
                    "ActivityRunId": "b",
                    "Status": "Failed",
                    "_IngestionTime": iso(old - timedelta(minutes=50)),
                },
            ]
        )
    )
    (tmp_path / "ADFPipelineRun.json").write_text(json.dumps([{"TimeGenerated": iso(old), "RunId": "r"}]))

    with LogAnalyticsEmulator(tmp_path, clock=clock, rebase=True) as emu:
        rows = run(
            make_client(emu),
            "ADFActivityRun | project ActivityRunId, TimeGenerated, End, "
            "I = ingestion_time() | order by ActivityRunId asc",
        )
        assert emu.tables() == {"ADFActivityRun": 2, "ADFPipelineRun": 1}

    latest = NOW - timedelta(minutes=1)  # the latest ingestion (a's, 5 min after 08:00) lands here
    assert [(r["ActivityRunId"], r["TimeGenerated"], r["I"]) for r in rows] == [
        ("a", latest - timedelta(minutes=5), latest),
        ("b", latest - timedelta(minutes=65), latest - timedelta(minutes=55)),
    ]
    assert rows[0]["End"] == datetime(1601, 1, 1, tzinfo=UTC)


def test_rows_added_later_may_bring_new_columns(
    emulator: LogAnalyticsEmulator, client: LogsQueryClient
) -> None:
    emulator.add_rows("Custom_CL", [{"TimeGenerated": NOW - timedelta(minutes=9), "a": "1"}])
    emulator.add_rows("Custom_CL", [{"TimeGenerated": NOW - timedelta(minutes=8), "a": "2", "b": 5}])

    rows = run(client, "Custom_CL | order by a asc | project a, b")

    assert rows == [{"a": "1", "b": None}, {"a": "2", "b": 5}]


def test_a_100k_row_table_answers_quickly(emulator: LogAnalyticsEmulator, client: LogsQueryClient) -> None:
    emulator.add_rows(
        "ADFActivityRun",
        [
            activity(
                f"a{i}", "Failed" if i % 1000 == 0 else "Succeeded", i / 1000, Error=json.dumps(COPY_ERROR)
            )
            for i in range(100_000)
        ],
        ingested_at=NOW,
    )

    started = time.monotonic()
    rows = run(
        client,
        "ADFActivityRun | where Status == 'Failed' | summarize arg_max(TimeGenerated, *) "
        "by ActivityRunId | extend E = parse_json(Error) | project ActivityRunId, tostring(E.errorCode)",
    )

    assert len(rows) == 100
    assert time.monotonic() - started < 2


# --- pieces -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, None),
        ("PT3600.0S", (NOW - timedelta(hours=1), NOW)),
        ("P1DT2H", (NOW - timedelta(days=1, hours=2), NOW)),
        (
            "2024-05-01T00:00:00.000Z/2024-05-01T01:00:00.000Z",
            (datetime(2024, 5, 1, tzinfo=UTC), datetime(2024, 5, 1, 1, tzinfo=UTC)),
        ),
        (
            "2024-05-01T00:00:00.000Z/PT1800.0S",
            (datetime(2024, 5, 1, tzinfo=UTC), datetime(2024, 5, 1, 0, 30, tzinfo=UTC)),
        ),
    ],
)
def test_parse_timespan(text: str | None, expected: tuple[datetime, datetime] | None) -> None:
    assert parse_timespan(text, NOW) == expected


def test_rewrite_query_spells_what_duckdb_kql_lacks() -> None:
    schemas = {
        "ADFActivityRun": {"ErrorMessage": "string"},
        "SynapseIntegrationActivityRuns": {"Status": "string"},
    }

    assert rewrite_query(
        'ADFActivityRun | extend m = column_ifexists("ErrorMessage", ""), '
        "t = column_ifexists('Nope', datetime(null)), i = ingestion_time()",
        schemas,
    ) == ("ADFActivityRun | extend m = ErrorMessage, t = datetime(null), i = _IngestionTime")
    assert (
        rewrite_query(
            'SynapseIntegrationActivityRuns | extend m = column_ifexists("ErrorMessage", "")', schemas
        )
        == 'SynapseIntegrationActivityRuns | extend m = ""'
    )


# --- standalone ---------------------------------------------------------------------------------


def test_module_runs_standalone_and_prints_where_to_reach_it(tmp_path: Path) -> None:
    (tmp_path / "ADFActivityRun.json").write_text(
        json.dumps([{"TimeGenerated": "2023-01-01T08:00:00Z", "ActivityRunId": "a", "Status": "Failed"}])
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "poller.emulators.log_analytics", "--data", str(tmp_path), "--rebase"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = dict(process.stdout.readline().strip().split(": ", 1) for _ in range(3))
        assert lines["url"].startswith("https://127.0.0.1:")
        assert lines["workspace_id"] == DEFAULT_WORKSPACE_ID
        assert Path(lines["ca_file"]).is_file()
        standalone = LogsQueryClient(
            FakeCredential(), endpoint=lines["url"], connection_verify=lines["ca_file"]
        )
        result = standalone.query_workspace(DEFAULT_WORKSPACE_ID, "ADFActivityRun | count", timespan=None)
        assert isinstance(result, LogsQueryResult) and result.tables[0].rows[0][0] == 1
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


# --- raw HTTP helpers ---------------------------------------------------------------------------


def post_query(emulator: LogAnalyticsEmulator, payload: dict[str, Any]) -> dict[str, Any]:
    status, body = post_raw(emulator, payload)
    assert status == 200, body
    return body


def post_raw(
    emulator: LogAnalyticsEmulator, payload: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    sent = {"Authorization": "Bearer test-token"} if headers is None else headers
    return call(emulator, "POST", f"/v1/workspaces/{DEFAULT_WORKSPACE_ID}/query", payload, sent)


def call(
    emulator: LogAnalyticsEmulator,
    method: str,
    path: str,
    payload: object = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One request over TLS verified against the emulator's CA, without the SDK in the way."""
    host, port = emulator.url.removeprefix("https://").split(":")
    context = ssl.create_default_context(cafile=str(emulator.ca_path))
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
    try:
        body = None if payload is None else json.dumps(payload)
        connection.request(
            method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})}
        )
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else {}
    finally:
        connection.close()
