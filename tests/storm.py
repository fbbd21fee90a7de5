"""A storm of failures from a known number of distinct causes, built from the golden fingerprint groups."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from poller.models import Failure

GOLDEN = Path(__file__).resolve().parent / "testdata" / "fingerprint" / "golden.json"
START = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)


def causes(count: int = 40) -> list[list[dict[str, Any]]]:
    groups = json.loads(GOLDEN.read_text())["groups"]
    if len(groups) < count:
        raise ValueError(f"only {len(groups)} golden groups")
    return [group["failures"] for group in groups[:count]]


def storm(total: int, cause_count: int = 40, source: str = "storm") -> Iterator[Failure]:
    """`total` failures cycling over `cause_count` causes; each repeat differs by ids and times only."""
    groups = causes(cause_count)
    for n in range(total):
        group = groups[n % cause_count]
        sample = group[(n // cause_count) % len(group)]
        at = START + timedelta(seconds=n)
        run_id = str(uuid.UUID(int=n + 1))
        yield Failure(
            key=f"{sample['service']}:storm:{n}", service=sample["service"], kind=sample.get("kind", "activity_run"),
            resource=sample["resource"], error_code=sample.get("error_code", ""), error_message=sample["message"],
            occurred_at=at, run_id=run_id, metadata=dict(sample.get("metadata") or {}), raw={"n": n},
        ).stamped(source, at)
