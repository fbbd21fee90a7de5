"""Redaction: canary secrets of every kind, wherever they hide, never survive; clean text passes fast and untouched."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from poller.models import Failure, dumps
from poller.rca.redact import needs_redaction, redact_text, redact_tree, redacted

CANARY = "CANARY7f3a"

# (kind, text holding a canary secret, text that must survive around it)
SECRETS: list[tuple[str, str, str]] = [
    ("sas", f"GET https://acct.blob.core.windows.net/raw/f.csv?sp=r&st=2026-01-01T00:00:00Z&se=2026-01-02T00:00:00Z"
            f"&spr=https&sv=2022-11-02&sr=b&sig={CANARY}%2Bx%3D failed", "https://acct.blob.core.windows.net/raw/f.csv?"),
    ("sas", f"sv=2021-08-06&ss=b&srt=co&sp=rl&se=2030-01-01T00:00:00Z&spr=https&sig={CANARY}", ""),
    ("sas", f"BlobEndpoint=https://a.blob.core.windows.net/;SharedAccessSignature=sv=2020-08-04&ss=b&sig={CANARY}",
     "BlobEndpoint=https://a.blob.core.windows.net/;"),
    ("key", f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={CANARY}+abc/def==;EndpointSuffix=core."
            "windows.net", "AccountName=acct;"),
    ("password", f"Server=tcp:sql.database.windows.net,1433;User ID=etl;Password={CANARY} with space;Encrypt=True",
     "User ID=etl;"),
    ("password", f"Data Source=x;Uid=etl;Pwd={CANARY};", "Uid=etl;"),
    ("password", f"Password='{CANARY};still secret';Server=x", "Server=x"),
    ("key", f"Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=Root;SharedAccessKey={CANARY}=",
     "SharedAccessKeyName=Root;"),
    ("token", f"Authorization: Bearer {CANARY}0123456789abcdef", "Authorization: "),
    ("jwt", f"token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.{CANARY}sig expired", "expired"),
    ("password", f"cannot fetch https://svc_user:{CANARY}@repo.contoso.com/simple/pkg", "svc_user:"),
    ("databricks_token", "Invalid access token dapi0123456789abcdef0123456789abcdef-2 for workspace",
     "Invalid access token"),
    ("secret", f"POST /oauth2/token grant_type=client_credentials&client_id=abc&client_secret={CANARY}&scope=x",
     "client_id=abc&"),
    ("function_key", f"x-functions-key: {CANARY}", "x-functions-key: "),
    ("function_key", f"POST https://func-orders.azurewebsites.net/api/Ingest?code={CANARY}==&clientId=default",
     "https://func-orders.azurewebsites.net/api/Ingest?"),
    ("password", f'{{"user": "etl", "password": "{CANARY}"}}', '"user": "etl"'),
    ("secret", f'"{{\\"client_secret\\": \\"{CANARY}\\"}}"', "client_secret"),
    ("private_key", f"-----BEGIN RSA PRIVATE KEY-----\nMIIE{CANARY}\n-----END RSA PRIVATE KEY-----", ""),
    ("key", f"api-key: {CANARY}", "api-key: "),
    ("password", f"jdbc url user=etl dbPassword={CANARY}, next", ", next"),
]


@pytest.mark.parametrize(("kind", "text", "kept"), SECRETS, ids=[f"{i}-{s[0]}" for i, s in enumerate(SECRETS)])
def test_every_kind_of_secret_is_replaced_and_the_context_kept(kind: str, text: str, kept: str) -> None:
    out = redact_text(text)
    assert CANARY not in out and "dapi0123456789abcdef" not in out
    assert f"[REDACTED:{kind}]" in out
    assert kept in out
    assert redact_text(out) == out  # idempotent


@pytest.mark.parametrize(
    "text",
    [
        "ErrorCode=SqlFailedToConnect,'Type=System.Data.SqlClient.SqlException,Message=Login failed for user 'etl'.'",
        "The Databricks access token has expired. Error 403.",
        "Password must be at least 12 characters: password: too short",
        "Task key 'ingest' failed; max_tokens=5; PasswordExpired=true",
        "Response status code: '401'. ErrorCode=2108, StatusCode=401",
        "Bearer authentication failed",
        "https://adb-1234.azuredatabricks.net/?o=1234#job/5/run/6",
    ],
)
def test_text_without_secrets_is_left_alone(text: str) -> None:
    assert redact_text(text) == text


def test_sensitive_keys_are_replaced_whole_and_the_rest_of_the_tree_kept() -> None:
    tree = {
        "task_key": "ingest", "code": "DRIVER_UNREACHABLE", "tokens": 5,
        "password": CANARY, "Pwd": CANARY, "x-functions-key": CANARY, "Authorization": f"Basic {CANARY}",
        "nested": [{"client_secret": CANARY, "sas_token": CANARY}, ("sig", f"sig={CANARY}")],
        "empty_password": "", "api_key": None,
    }
    out = redact_tree(tree)
    assert CANARY not in json.dumps(out)
    assert out["task_key"] == "ingest" and out["code"] == "DRIVER_UNREACHABLE" and out["tokens"] == 5
    assert out["password"] == "[REDACTED:password]" and out["x-functions-key"] == "[REDACTED:function_key]"
    assert out["empty_password"] == "" and out["api_key"] is None
    assert tree["password"] == CANARY  # the input is not changed


def canary_failure() -> Failure:
    """A failure with a canary of every kind in message, URLs, metadata (nested) and the raw row."""
    from datetime import UTC, datetime

    secrets = [text for _, text, _ in SECRETS]
    return Failure(
        key="adf:activity:1",
        service="adf",
        kind="activity_run",
        resource="pl_sales",
        resource_id=f"https://etl:{CANARY}@adf.contoso.com/factories/f",
        error_message=" | ".join(secrets[:7]),
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        error_code="SqlFailedToConnect",
        metadata={
            "parameters": {"conn": secrets[3], "sas_url": secrets[0], "clientSecret": CANARY},
            "linked_service": {"type": "AzureSqlDatabase", "connectionString": secrets[4]},
            "messages": secrets[7:],
            "headers": {"x-functions-key": CANARY, "Authorization": f"Bearer {CANARY}0123456789"},
        },
        raw={"Error": json.dumps({"message": secrets[9], "password": CANARY}), "Parameters": secrets[14],
             "rows": [[secrets[11], secrets[12]]]},
    )


def test_no_canary_survives_anywhere_in_a_failure() -> None:
    failure = canary_failure()
    out = redacted(failure)
    text = json.dumps(out.to_json(include_raw=True), default=str)
    assert CANARY not in text and "dapi0123456789abcdef" not in text
    assert CANARY in dumps(failure.to_json(include_raw=True))  # the original is untouched
    assert out.error_code == "SqlFailedToConnect" and out.key == failure.key


def test_the_stored_json_of_a_redacted_failure_is_the_redacted_one() -> None:
    """The redaction check and the store share one dump of raw and metadata; a redacted copy must not inherit it."""
    failure = canary_failure()
    assert CANARY in failure.raw_json() and CANARY in failure.metadata_json()  # the original's dumps are cached
    out = redacted(failure)
    assert CANARY not in out.raw_json() and CANARY not in out.metadata_json()
    assert out.raw_json() == dumps(out.raw) and out.metadata_json() == dumps(out.metadata)
    assert out == dataclasses.replace(out)  # the cache is not part of a failure's value


def test_a_clean_failure_is_returned_as_the_same_object() -> None:
    from datetime import UTC, datetime

    clean = Failure(key="k", service="databricks", kind="task_run", resource="job", occurred_at=datetime.now(UTC),
                    error_message="ZeroDivisionError: division by zero",
                    metadata={"task_key": "t", "libraries": ["pypi:pandas==2.2.0"], "code": "X"},
                    raw={"run_id": 5, "state": {"result_state": "FAILED"}})
    assert redacted(clean) is clean
    tree: dict[str, Any] = {"a": [1, "two", {"b": "c"}]}
    assert redact_tree(tree) is tree
    assert not needs_redaction(clean.error_message)


MESSAGES = [
    "Failure happened on 'Source' side. ErrorCode=SqlOperationFailed,'Type=Microsoft.DataTransfer.Common.Shared."
    "HybridDeliveryException,Message=A database operation failed with the following error: 'Invalid column name "
    "'value'.',Source=,''Type=System.Data.SqlClient.SqlException,Message=Invalid column name 'value'.,SqlErrorNumber"
    "=207,Class=16,ErrorCode=-2146232060,State=1'",
    "org.apache.spark.SparkException: Job aborted due to stage failure: Task 3 in stage 12.0 failed 4 times, most "
    "recent failure: Lost task 3.3 in stage 12.0 (TID 345) (10.139.64.5 executor 2): java.lang.OutOfMemoryError",
    "Operation on target Copy data1 failed: The required Blob is missing. ContainerName: landing, path: landing/"
    "orders/2026/01/02/orders.csv.",
    "Exception while executing function: Functions.ProcessOrders Result: Failure Exception: System.TimeoutException:"
    " The operation has timed out.",
]


def test_clean_messages_come_back_as_the_same_object() -> None:
    """The common case costs one pre-check and no copy (its speed is measured in bench/redact.py)."""
    for message in MESSAGES:
        assert redact_text(message) is message
