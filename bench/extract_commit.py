"""Failures/s through extract + commit for N ADF rows, beside a bare SQLite bulk insert of the same rows.

Run:  python bench/extract_commit.py --rows 100000      (each mode in its own process, so peak RSS is its own)
Rows are generated lazily and committed in chunks, as a tick streams them; peak memory must not grow with N.
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from poller.extractors.adf import extract_row  # noqa: E402
from poller.pipeline import TickContext, extract_stage  # noqa: E402
from poller.sources.base import Window  # noqa: E402
from poller.store import Store  # noqa: E402

CHUNK = 5000
BASE = datetime(2026, 11, 1, tzinfo=UTC)
RID = "/SUBSCRIPTIONS/8A3C2F4E/RESOURCEGROUPS/RG-DATA/PROVIDERS/MICROSOFT.DATAFACTORY/FACTORIES/ADF-BENCH"
MESSAGES = [
    ("2200", "Failure happened on 'Source' side. ErrorCode=SqlOperationFailed,'Type=Microsoft.DataTransfer.Common."
     "Shared.HybridDeliveryException,Message=A database operation failed with the following error: 'Invalid column "
     "name 'col_{n}'.',Source=,''Type=System.Data.SqlClient.SqlException,Message=Invalid column name 'col_{n}'.,"
     "Source=.Net SqlClient Data Provider,SqlErrorNumber=207,Class=16,ErrorCode=-2146232060,State=1,'"),
    ("2200", "ErrorCode=UserErrorSourceBlobNotExist,'Type=Microsoft.DataTransfer.Common.Shared.HybridDeliveryException,"
     "Message=The required Blob is missing. ContainerName: https://st.blob.core.windows.net/landing, path: "
     "landing/orders_{n}.csv.,Source=Microsoft.DataTransfer.ClientLibrary,'"),
    ("2108", "Error calling the endpoint 'https://api.example.com/v2/items/{n}'. Response status code: '503'."),
    ("3208", "An error occurred while sending the request."),
]


def rows(n: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        code, message = MESSAGES[i % len(MESSAGES)]
        text = message.format(n=i % 97)
        t = BASE + timedelta(seconds=i)
        yield {
            "TimeGenerated": t, "Type": "ADFActivityRun", "ResourceId": RID, "_ResourceId": RID.lower(),
            "OperationName": "Copy_Orders - Failed", "PipelineName": f"pl_load_{i % 50}",
            "PipelineRunId": str(uuid.UUID(int=i * 2 + 1)), "ActivityName": "Copy_Orders", "ActivityType": "Copy",
            "ActivityRunId": str(uuid.UUID(int=i * 2)), "ActivityIterationCount": 1, "Status": "Failed",
            "FailureType": "UserError", "ErrorCode": code, "ErrorMessage": text,
            "Error": json.dumps({"errorCode": code, "message": text, "failureType": "UserError",
                                 "target": "Copy_Orders", "details": []}),
            "Start": t - timedelta(minutes=3), "End": t, "LinkedServiceName": "ls_sql",
            "EffectiveIntegrationRuntime": "AutoResolveIntegrationRuntime (West Europe)",
            "PipelineParameters": '{"runDate":"2026-11-01"}',
        }


def chunks(n: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows(n):
        batch.append(row)
        if len(batch) == CHUNK:
            yield batch
            batch = []
    if batch:
        yield batch


class RowsSource:
    """Just the extractor of the Log Analytics source: the rows are already in hand."""

    name = "bench"

    def extract(self, raw: Any) -> Any:
        return extract_row(raw)


def run_poller(n: int, db: Path) -> int:
    store = Store(f"sqlite:///{db}")
    now = datetime.now(UTC)
    ctx = TickContext(now=now, source="bench", window=Window(now, now))
    added = 0
    for batch in chunks(n):
        out = extract_stage(ctx, RowsSource(), batch)  # type: ignore[arg-type]  # the tick's own stage: rules + redaction
        with store.tick("bench", now) as tx:
            added += tx.add_failures(list(out.failures.values()))
            tx.advance(now, len(batch))
    return added


def run_bare(n: int, db: Path) -> int:
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("CREATE TABLE f (key TEXT UNIQUE, resource TEXT, code TEXT, message TEXT, at TEXT, raw TEXT)")
    for batch in chunks(n):
        con.executemany(
            "INSERT OR IGNORE INTO f VALUES (?,?,?,?,?,?)",
            [(r["ActivityRunId"], r["PipelineName"], r["ErrorCode"], r["ErrorMessage"], r["End"].isoformat(),
              json.dumps(r, default=str)) for r in batch],
        )
        con.commit()
    return int(con.execute("SELECT count(*) FROM f").fetchone()[0])


def measure(mode: str, n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        count = (run_poller if mode == "poller" else run_bare)(n, Path(tmp) / "bench.db")
        seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mode": mode, "rows": n, "stored": count, "seconds": round(seconds, 2),
            "per_second": round(n / seconds), "peak_rss_mb": round(peak_mb, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--mode", choices=["poller", "bare"])
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(measure(args.mode, args.rows)))
        return
    results = {}
    for mode, n in [("poller", 10_000), ("poller", args.rows), ("bare", args.rows)]:
        out = subprocess.run([sys.executable, __file__, "--mode", mode, "--rows", str(n)],
                             capture_output=True, text=True, check=True).stdout
        results[(mode, n)] = json.loads(out)
        print(out.strip())
    poller, bare = results[("poller", args.rows)], results[("bare", args.rows)]
    small = results[("poller", 10_000)]
    print(f"poller/bare throughput ratio: {poller['per_second'] / bare['per_second']:.2f}")
    print(f"peak RSS {args.rows} rows / 10000 rows: {poller['peak_rss_mb'] / small['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
