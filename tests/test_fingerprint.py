"""poller.fingerprint: message templates, fingerprints, and the golden grouping set."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from poller.fingerprint import (
    ELISION,
    FINGERPRINT_VERSION,
    MAX_INPUT_CHARS,
    MAX_TEMPLATE_CHARS,
    PLACEHOLDERS,
    REDACTED,
    RESOURCE_RULES,
    RULES,
    canonical_key,
    fingerprint,
    resource_template,
    scope_of,
    template,
)
from poller.models import Failure

GOLDEN = Path(__file__).parent / "testdata" / "fingerprint" / "golden.json"
OCCURRED = datetime(2026, 11, 29, 10, 15, 30, tzinfo=UTC)


def _golden_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = json.loads(GOLDEN.read_text(encoding="utf-8"))["groups"]
    return groups


GROUPS = _golden_groups()


def _failure(item: dict[str, Any], key: str = "k") -> Failure:
    return Failure(
        key=key,
        service=item["service"],
        kind=item.get("kind", "activity_run"),
        resource=item["resource"],
        error_message=item["message"],
        occurred_at=OCCURRED,
        error_code=item["error_code"],
        metadata=item.get("metadata", {}),
    )


def _golden_items(field: str) -> Iterator[Any]:
    for group in GROUPS:
        for index, item in enumerate(group["failures"]):
            if field in item:
                yield pytest.param(item, id=f"{group['name']}[{index}]")


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def test_golden_set_is_big_enough() -> None:
    messages = sum(len(group["failures"]) for group in GROUPS)
    assert len(GROUPS) >= 20
    assert messages >= 45


# (a) every pair within a group shares one fingerprint.
@pytest.mark.parametrize("group", GROUPS, ids=[group["name"] for group in GROUPS])
def test_group_members_share_one_fingerprint(group: dict[str, Any]) -> None:
    prints = [fingerprint(_failure(item)) for item in group["failures"]]
    first = prints[0]
    for index, other in enumerate(prints[1:], start=1):
        assert other.value == first.value, (
            f"{group['name']}: member {index} does not group with member 0 ({group['why']})\n"
            f"  resource 0: {first.resource!r}  {index}: {other.resource!r}\n"
            f"  template 0: {first.template.text!r}\n"
            f"  template {index}: {other.template.text!r}"
        )


# (b) no two groups share a fingerprint, whichever members are compared.
def test_groups_never_share_a_fingerprint() -> None:
    owner: dict[str, tuple[str, int, str]] = {}
    collisions: list[str] = []
    for group in GROUPS:
        for index, item in enumerate(group["failures"]):
            value = fingerprint(_failure(item)).value
            seen = owner.setdefault(value, (group["name"], index, item["message"]))
            if seen[0] != group["name"]:
                collisions.append(
                    f"{seen[0]}[{seen[1]}] and {group['name']}[{index}] share {value[:12]} "
                    f"(template {template(item['message']).text!r})\n"
                    f"    {_short(seen[2])!r}\n    {_short(item['message'])!r}"
                )
    assert not collisions, "different causes grouped together:\n" + "\n".join(collisions)


# (c) exact templates: the golden set's hand-checked entries, then short cases that pin each decision.
@pytest.mark.parametrize("item", list(_golden_items("template")))
def test_golden_template_text(item: dict[str, Any]) -> None:
    assert template(item["message"]).text == item["template"]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        # Names that tell causes apart stay: columns, tables, backticked identifiers, modules, users, types.
        ("Invalid column name 'discount_pct'.", "Invalid column name 'discount_pct'."),
        ("Msg 208, Level 16, State 1, Line 3 Invalid object name 'dbo.Sales2024'.",
         "Msg 208, Level 16, State 1, Line <num> Invalid object name 'dbo.Sales2024'."),
        ("ModuleNotFoundError: No module named 'great_expectations'",
         "ModuleNotFoundError: No module named 'great_expectations'"),
        ("Login failed for user 'etl_svc_01'.", "Login failed for user 'etl_svc_01'."),
        # Data values go, their column stays.
        ("[CAST_INVALID_INPUT] The value 'N/A' of the type \"STRING\" cannot be cast to \"INT\".",
         "[CAST_INVALID_INPUT] The value '<value>' of the type \"STRING\" cannot be cast to \"INT\"."),
        ("ValueError: invalid literal for int() with base 10: 'abc'",
         "ValueError: invalid literal for int() with base <num>: '<value>'"),
        ("Cannot insert duplicate key in object 'dbo.Customers'. "
         "The duplicate key value is (jane@contoso.com).",
         "Cannot insert duplicate key in object 'dbo.Customers'. The duplicate key value is (<value>)."),
        # Codes stay: HTTP statuses, exit codes, versions; identifiers with digits glued in stay.
        ("System.Net.Http.HttpRequestException: Response status code does not indicate success: 429 "
         "(Too Many Requests).",
         "System.Net.Http.HttpRequestException: Response status code does not indicate success: 429 "
         "(Too Many Requests)."),
        ("HTTP/1.1 503 Service Unavailable", "HTTP/1.1 503 Service Unavailable"),
        ("Process exited with code 137 after 00:10:00", "Process exited with code 137 after <duration>"),
        ("Installing alembic===1.13.1 into data1 failed", "Installing alembic===1.13.1 into data1 failed"),
        # Ids, times and durations go.
        ("Run 89018493834650 of job 625234784902960 failed", "Run <num> of job <num> failed"),
        ("Job run timed out after PT2H at 2026-11-29T10:15:30.1234567Z",
         "Job run timed out after <duration> at <ts>"),
        ("Sun, 29 Nov 2026 10:15:30 GMT: request rejected", "<ts>: request rejected"),
        ("Lost executor 3 on 10.139.64.5: Remote RPC client disassociated.",
         "Lost executor <num> on <ip>: Remote RPC client disassociated."),
        ("Executed 'Functions.ProcessOrders' "
         "(Failed, Id=6f0e2a8c-1b3d-4e5f-8a9b-0c1d2e3f4a5b, Duration=1532ms)",
         "Executed 'Functions.ProcessOrders' (Failed, Id=<guid>, Duration=<duration>)"),
        ("Spark application application_1732871234567_0042 failed", "Spark application <id> failed"),
        ("Cluster 0923-164208-meows279 is unreachable", "Cluster <cluster_id> is unreachable"),
        # URLs keep their host; storage paths keep account, container and folders; scratch paths go.
        ("GET https://api.contoso.com/v1/orders?page=7 failed", "GET https://api.contoso.com/<url> failed"),
        ("Could not read abfss://raw@stlake01.dfs.core.windows.net/sales/orders/2026/11/29/"
         "part-00000-1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d-c000.snappy.parquet",
         "Could not read abfss://raw@stlake01.dfs.core.windows.net/sales/orders/<date>/"
         "part-<num>-<guid>-c000.snappy.parquet"),
        ("No such file: dbfs:/mnt/landing/orders/2026/11/orders_20261129.csv",
         "No such file: dbfs:/mnt/landing/orders/<date>/orders_<date>.csv"),
        ("Cannot write /local_disk0/tmp/spark-1d0c4e2a/blockmgr-7/shuffle_3.data",
         "Cannot write <path>"),
        # Notebook paths stay whole, the user's address in them too; addresses elsewhere go.
        ("Notebook path: /Users/jane.doe@contoso.com/etl/load_orders failed; owner bob@contoso.com",
         "Notebook path: /Users/jane.doe@contoso.com/etl/load_orders failed; owner <email>"),
    ],
)
def test_template_text(message: str, expected: str) -> None:
    assert template(message).text == expected


# (d) what was replaced is recorded, in text order, with secrets redacted.
@pytest.mark.parametrize("item", list(_golden_items("replaced")))
def test_golden_replacements(item: dict[str, Any]) -> None:
    assert template(item["message"]).replaced == [tuple(pair) for pair in item["replaced"]]


@pytest.mark.parametrize(
    ("message", "replaced"),
    [
        # The date is replaced before the value (earlier rule) but listed after it (later in the text).
        ("converting value 'data' for column name 'LastPurchaseDate' on 2026-11-29",
         [("value", "data"), ("date", "2026-11-29")]),
        # A scratch path that swallowed a GUID records the path's original text.
        ("Cannot write /tmp/spark-1d0c4e2a-7b3f-4c55-9a1e-2f6b8d9c0e11/blockmgr",
         [("path", "/tmp/spark-1d0c4e2a-7b3f-4c55-9a1e-2f6b8d9c0e11/blockmgr")]),
        # A kept name whose stamp was templated: the name stays, the stamp is listed.
        ("Invalid object name 'staging.orders_20261129'.", [("date", "20261129")]),
        ("GET https://fn-orders.azurewebsites.net/api/ProcessOrders?code=abc123XYZ&day=3 failed",
         [("url", f"api/ProcessOrders?code={REDACTED}&day=3")]),
        ("https://etl:hunter2@files.contoso.com/drop/x.csv?sv=2022-11-02&sig=abc%3D",
         [("secret", REDACTED), ("url", f"drop/x.csv?sv=2022-11-02&sig={REDACTED}")]),
    ],
)
def test_replacements_in_text_order(message: str, replaced: list[tuple[str, str]]) -> None:
    assert template(message).replaced == replaced


def test_template_keeps_raw_text_and_counts() -> None:
    message = "Run 12 failed at 2026-11-29T10:15:30Z, then run 13 at 2026-11-29T11:15:30Z"
    result = template(message)
    assert result.raw == message
    assert result.counts() == {"num": 2, "ts": 2}
    assert not result.truncated


# (e) the hashed serialisation is unambiguous.
@pytest.mark.parametrize(
    ("left", "right"),
    [
        (("ab", "c", "", "E", "t"), ("a", "bc", "", "E", "t")),
        (("adf", "pl", "", "2200x", "y"), ("adf", "pl2200", "", "x", "y")),
        (("adf", "pl", "", "E", "t"), ("adf", "p", "l", "E", "t")),
        (("adf", 'pl","error_code":"E', "", "", "t"), ("adf", "pl", "", "E", "t")),
        (("adf", "pl", "", "E\\", "t"), ("adf", "pl", "", "E", "\\t")),
    ],
)
def test_canonical_key_has_no_concatenation_collisions(
    left: tuple[str, str, str, str, str], right: tuple[str, str, str, str, str]
) -> None:
    assert canonical_key(*left) != canonical_key(*right)


def test_canonical_key_round_trips_to_its_fields() -> None:
    parts = json.loads(canonical_key("adf", 'odd "name", really', "", "2200", "line\nbreak <num>"))
    assert parts == {
        "version": FINGERPRINT_VERSION,
        "service": "adf",
        "resource": 'odd "name", really',
        "scope": "",
        "error_code": "2200",
        "template": "line\nbreak <num>",
    }


def test_fingerprints_differ_when_fields_split_differently() -> None:
    item = {"service": "ab", "resource": "c", "error_code": "E", "message": "boom"}
    shifted = {"service": "a", "resource": "bc", "error_code": "E", "message": "boom"}
    assert fingerprint(_failure(item)).value != fingerprint(_failure(shifted)).value


def test_fingerprint_value_is_sha256_of_the_canonical_key() -> None:
    failure = _failure({"service": "ADF ", "resource": "pl_sales", "error_code": " 2200",
                        "message": "Row 17 failed"})
    result = fingerprint(failure)
    key = canonical_key("adf", "pl_sales", "", "2200", "Row <num> failed")
    assert result.value == hashlib.sha256(key.encode("utf-8")).hexdigest()
    assert result.template.text == "Row <num> failed"
    assert result.version == FINGERPRINT_VERSION


# (f) secrets never reach the template text, nor the recorded replacements.
@pytest.mark.parametrize(
    ("message", "secret"),
    [
        ("Blob read failed: https://stsales.blob.core.windows.net/landing/x.csv?sv=2022-11-02&ss=b&srt=co"
         "&sp=rl&se=2026-11-30T00:00:00Z&sig=k3J9%2BzQ0aB1cD2eF3gH4iJ5kL6mN7oP8%3D",
         "k3J9%2BzQ0aB1cD2eF3gH4iJ5kL6mN7oP8"),
        ("SAS token sv=2022-11-02&ss=b&sp=rl&se=2026-11-30&sig=Zz9Yy8Xx7Ww6Vv5Uu4%3D expired",
         "Zz9Yy8Xx7Ww6Vv5Uu4"),
        ("Invalid access token dapi0123456789abcdef0123456789abcdef-2",
         "dapi0123456789abcdef0123456789abcdef"),
        ("GET https://etl_user:Hunter2Secret@files.contoso.com/drop/x.csv failed", "Hunter2Secret"),
        ("jdbc:sqlserver://sql01.database.windows.net:1433;database=sales;user=etl;password=S3cr3t!Pass;",
         "S3cr3t!Pass"),
        ("DefaultEndpointsProtocol=https;AccountName=stsales;AccountKey=q1w2e3r4t5y6u7i8o9p0==;"
         "EndpointSuffix=core.windows.net", "q1w2e3r4t5y6u7i8o9p0"),
        ("Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJldGwiLCJleHAiOjE3NjQ0MTEzMzB9.c2lnbmF0dXJl",
         "eyJzdWIiOiJldGwiLCJleHAiOjE3NjQ0MTEzMzB9"),
        ('Request body {"client_secret": "xyzSecret987", "client_id": "etl"} rejected', "xyzSecret987"),
        ("Call to https://fn-orders.azurewebsites.net/api/ProcessOrders?code=FunctionKey123%3D%3D failed",
         "FunctionKey123"),
    ],
)
def test_secrets_never_survive(message: str, secret: str) -> None:
    result = template(message)
    assert secret not in result.text
    assert all(secret not in original for _, original in result.replaced)
    failure = _failure({"service": "adf", "resource": "pl", "error_code": "E", "message": message})
    assert secret not in fingerprint(failure).template.text


# Input handling.
def test_whitespace_and_terminal_escapes_do_not_split_groups() -> None:
    plain = template("ZeroDivisionError: division by zero\nFile <command-17>, line 3")
    noisy = template(
        "\x1b[0;31mZeroDivisionError\x1b[0m:  division by zero\r\n\r\n  File <command-99>,\tline 5  "
    )
    assert plain.text == noisy.text == "ZeroDivisionError: division by zero\nFile <command-<num>>, line <num>"


def test_long_messages_keep_head_and_tail() -> None:
    frames = "".join(
        f"  File /databricks/python/lib/module_{n}.py, line {n * 7}, in call_{n}\n" for n in range(120)
    )
    message = f"Traceback (most recent call last):\n{frames}KeyError: 'customer_id'"
    result = template(message)
    assert len(message) > MAX_TEMPLATE_CHARS
    assert result.truncated and result.raw == message
    assert result.text.startswith("Traceback (most recent call last):")
    assert result.text.endswith("KeyError: 'customer_id'")
    assert ELISION in result.text


def test_long_messages_of_one_cause_group_together() -> None:
    def trace(run_id: int) -> str:
        frames = "".join(f"at stage {n} task {run_id + n} on 10.139.64.{n % 250}\n" for n in range(200))
        return f"Run {run_id} failed\n{frames}java.lang.OutOfMemoryError: Java heap space"

    first, second = template(trace(7)), template(trace(123456789))
    assert first.truncated and second.truncated
    assert first.text == second.text


def test_huge_messages_keep_whole_first_and_last_lines() -> None:
    def trace(run_id: int) -> str:
        frames = "".join(
            f"at com.contoso.etl.Step{n}.run(Step{n}.java:{n}) task {run_id * n}\n" for n in range(600)
        )
        return f"Run {run_id} failed\n{frames}java.lang.IllegalStateException: ledger out of balance"

    first, second = template(trace(7)), template(trace(987654321987))
    assert len(trace(7)) > MAX_INPUT_CHARS
    assert first.truncated and second.truncated
    assert first.text == second.text
    assert first.text.endswith("java.lang.IllegalStateException: ledger out of balance")


def test_one_giant_line_is_cut() -> None:
    result = template("x" * 100_000 + " row 5")
    assert result.truncated
    assert len(result.text) < MAX_TEMPLATE_CHARS + 100


def test_private_use_characters_in_input_are_defused() -> None:
    result = template("odd \U000f0000 char and run 12")
    assert result.text == "odd \ufffd char and run <num>"
    assert result.replaced == [("num", "12")]


def test_empty_message() -> None:
    assert template("").text == ""
    assert template("").replaced == []


def test_every_rule_kind_has_a_placeholder() -> None:
    kinds = {rule.kind for rule in RULES + RESOURCE_RULES} - {"", "keep"}
    for rule in RULES + RESOURCE_RULES:
        kinds.update(name.partition("__")[0] for name in rule.pattern.groupindex if "__" in name)
    assert kinds <= PLACEHOLDERS.keys()


def test_placeholders_in_the_input_are_left_alone() -> None:
    text = "x " + " ".join(sorted(PLACEHOLDERS.values()))
    assert template(text).text == text
    assert template(text).replaced == []


# Resource and scope.
@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        ("pl_daily_load", "pl_daily_load"),
        ("Sales2024 load", "Sales2024 load"),
        ("job-625234784902960-run-89018493834650", "job-625234784902960-run-<num>"),
        ("job-625234784902960-run-90112233445566", "job-625234784902960-run-<num>"),
        ("ADF_adf-prod_pl_sales_Notebook1_5f1c3c8e-001e-0046-1a2b-3c4d5e000000",
         "ADF_adf-prod_pl_sales_Notebook1_<guid>"),
        ("pl_backfill_20261129", "pl_backfill_<date>"),
        ("  shared  etl ", "shared etl"),
    ],
)
def test_resource_template(resource: str, expected: str) -> None:
    assert resource_template(resource) == expected


@pytest.mark.parametrize(
    ("service", "metadata", "expected"),
    [
        ("databricks", {"task_key": "load_orders"}, "load_orders"),
        ("databricks", {}, ""),
        ("databricks", {"task_key": 7}, ""),
        ("adf", {"task_key": "load_orders", "activity_name": "Copy_Sales"}, ""),
    ],
)
def test_scope(service: str, metadata: dict[str, Any], expected: str) -> None:
    item = {"service": service, "resource": "r", "error_code": "E", "message": "m", "metadata": metadata}
    assert scope_of(_failure(item)) == expected
