"""Azure Functions rules, from tests/testdata/functions/: one failure per invocation, the innermost exception."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from poller.errors import ExtractError
from poller.extractors import EXTRACTORS, detect_service, extract, extract_functions
from poller.extractors.functions import extract_row, read_view

FIXTURES = sorted((Path(__file__).parent.parent / "testdata" / "functions").glob("*.json"))


def load(name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES[0].parent / f"{name}.json").read_text(encoding="utf-8")))


def test_there_are_at_least_10_fixtures() -> None:
    assert len(FIXTURES) >= 10


@pytest.mark.parametrize("path", FIXTURES, ids=[path.stem for path in FIXTURES])
def test_fixture(path: Path) -> None:
    case = load(path.stem)
    if "error" in case:
        with pytest.raises(ExtractError) as caught:
            extract(case["input"])
        assert str(caught.value) == case["error"]
        return
    assert detect_service(case["input"]) == "functions"
    got = [failure.to_json() for failure in extract(case["input"])]
    for failure in got:
        assert failure.pop("source") is None and failure.pop("detected_at") is None
    assert got == case["expected"]


def test_registry() -> None:
    assert EXTRACTORS["functions"] is extract_functions


def test_the_same_invocation_from_either_table_is_the_same_failure() -> None:
    exception = extract_row(load("appexceptions_dotnet_http_503")["input"])
    log_line = extract_row(load("functionapplogs_executed_failed_chain")["input"])
    grouped = extract_row(load("kql_row_one_per_invocation")["input"])
    assert exception is not None and log_line is not None and grouped is not None
    assert exception.key == log_line.key == grouped.key
    for failure in (log_line, grouped):
        assert (failure.error_code, failure.error_message, failure.resource, failure.run_id) == (
            exception.error_code, exception.error_message, exception.resource, exception.run_id)
    assert grouped.metadata["exception_rows"] == 3


def test_sampled_rows_keep_their_weight() -> None:
    failure = extract_row(load("appexceptions_python_rpc_keyerror_sampled")["input"])
    assert failure is not None
    assert (failure.metadata["item_count"], failure.metadata["sampled"]) == (5, True)
    assert (failure.error_code, failure.error_message) == ("KeyError", "'batch_id'")
    assert failure.metadata["outer_type"] == "Microsoft.Azure.WebJobs.Host.FunctionInvocationException"


@pytest.mark.parametrize(
    ("details", "inner"),
    [
        ("System.Exception: outer\n ---> System.IO.IOException: disk full\n   at X.Y()\n   --- End of inner exception"
         " stack trace ---", ("System.IO.IOException", "disk full")),
        ("A.BException : a ---> C.DException : c ---> E.FException : multi\nline\n   at G.H()",
         ("E.FException", "multi\nline")),
        ("System.InvalidOperationException: nothing inner\n   at X.Y()",
         ("System.InvalidOperationException", "nothing inner")),
        ("", ("System.Exception", "outer")),
    ],
)
def test_innermost_exception_of_a_dotnet_chain(details: str, inner: tuple[str, str]) -> None:
    view = read_view({"Type": "FunctionAppLogs", "ExceptionType": "System.Exception", "ExceptionMessage": "outer",
                      "ExceptionDetails": details})
    assert (view.innermost_type, view.innermost_message) == inner


def test_log_rows_that_report_no_failure_are_skipped() -> None:
    assert extract({"Type": "FunctionAppLogs", "Level": "Warning", "FunctionInvocationId": "i",
                    "TimeGenerated": "2024-07-11T08:00:00Z", "Message": "Host lock lease acquired"}) == []
