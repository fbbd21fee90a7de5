"""Clean failure messages redacted per second (the common case: one pre-check, no copy), and secret-bearing ones.

Run:  python bench/redact.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from poller.rca.redact import redact_text
from tests.rca.test_redact import MESSAGES as CLEAN  # the clean samples the tests check stay untouched

SECRET = ("Copy failed: https://st.blob.core.windows.net/landing/x.csv?sv=2022-11-02&ss=b&srt=o&sp=r"
          "&se=2026-12-01T00:00:00Z&sig=AbCdEf0123456789%2Bw%3D Server=tcp:sql;User ID=etl;Password=S3cret!;")


def rate(messages: list[str]) -> float:
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        for message in messages:
            redact_text(message)
        best = max(best, len(messages) / (time.perf_counter() - started))
    return best


def main() -> None:
    clean = [f"{CLEAN[i % len(CLEAN)]} #{i}" for i in range(20_000)]
    secret = [f"{SECRET} #{i}" for i in range(5_000)]
    print(f"clean messages: {rate(clean):,.0f}/s    messages with a SAS URL and a password: {rate(secret):,.0f}/s")


if __name__ == "__main__":
    main()
