"""The one way extractor tests compare failures with a fixture's "expected" list."""

from __future__ import annotations

from typing import Any

from poller.models import Failure, iso

FAILURE_FIELDS = (
    "key", "kind", "service", "resource", "resource_id", "run_id", "error_code", "error_message", "failure_type",
)


def assert_matches(failures: list[Failure], expected: list[dict[str, Any]], service: str) -> None:
    """Same failures in the same order; every field and metadata entry the fixture names is exact."""
    assert len(failures) == len(expected), [failure.key for failure in failures]
    for failure, want in zip(failures, expected, strict=True):
        for name in FAILURE_FIELDS:
            if name in want:
                assert getattr(failure, name) == want[name], name
        if "occurred_at" in want:
            assert iso(failure.occurred_at) == want["occurred_at"]
        for name, value in want.get("metadata", {}).items():
            assert failure.metadata.get(name) == value, f"metadata[{name!r}]"
        assert failure.service == service
        assert failure.occurred_at.tzinfo is not None
