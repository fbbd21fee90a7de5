"""The evidence pack of one incident: redacted, every item cut to size, rendered once as delimited text.

`Evidence.text()` is exactly what the model sees between the delimiters, and what its quotes are checked
against. Items: the failure's fields, its message, its error trace and logs (tails), its metadata, the other
recent occurrences (one line each) and past incidents with the same fingerprint (one line each). An item
longer than ``max_item_chars`` keeps its head and its tail (a trace ends with its exception).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from poller.models import Failure, iso
from poller.rca.prompt import BEGIN, END, neutralise, suspicious_instructions
from poller.rca.redact import redact_text, redact_tree, redacted

__all__ = ["Evidence", "EvidenceLimits", "build_evidence"]

#: Metadata shown in their own sections rather than in the metadata block.
OWN_SECTIONS = ("error_trace", "stack", "logs_tail")
PAST_KEYS_FIRST = ("status", "first_seen", "last_seen", "occurrences", "rca_summary", "resolution")
CUT = "\n…[{count} characters cut]…\n"


@dataclass(frozen=True)
class EvidenceLimits:
    """How much of an incident the model sees (``rca.evidence`` in the config)."""

    max_item_chars: int = 4000
    occurrences: int = 5
    past_incidents: int = 3


@dataclass(frozen=True)
class Evidence:
    """One incident's evidence; build it with `build_evidence` (which redacts and trims)."""

    failure: Failure
    occurrences: list[Failure]
    past_incidents: list[dict[str, Any]]
    limits: EvidenceLimits = field(default_factory=EvidenceLimits)
    total_occurrences: int = 0

    def text(self) -> str:
        """The delimited evidence text given to the model; quotes are checked against it."""
        return self._rendered[1]

    @property
    def nonce(self) -> str:
        """The delimiter id: a hash of the content, so nothing inside the content can predict it."""
        return self._rendered[0]

    @property
    def suspicious(self) -> list[str]:
        """Instruction-like phrases found in the evidence (a warning sign of prompt injection)."""
        return self._rendered[2]

    @cached_property
    def _rendered(self) -> tuple[str, str, list[str]]:
        # Redacted again here: an Evidence built by hand (not by build_evidence) must not leak either.
        items = [(title, neutralise(redact_text(text))) for title, text in _items(self)]
        suspicious = suspicious_instructions("\n".join(text for _, text in items))
        body = "\n".join(_section(title, text, self.limits.max_item_chars) for title, text in items)
        nonce = hashlib.sha256(body.encode("utf-8")).hexdigest()[:16]
        return nonce, f"{BEGIN.format(nonce=nonce)}\n{body}\n{END.format(nonce=nonce)}", suspicious


def build_evidence(
    failure: Failure,
    occurrences: Sequence[Failure],
    past_incidents: Sequence[Mapping[str, Any]],
    limits: EvidenceLimits,
) -> Evidence:
    """The evidence for an incident: its latest failure, recent other occurrences and past incidents, redacted."""
    recent = sorted(occurrences, key=lambda item: iso(item.occurred_at), reverse=True)[: limits.occurrences]
    past = [dict(redact_tree(dict(item))) for item in list(past_incidents)[: limits.past_incidents]]
    return Evidence(
        failure=redacted(failure),
        occurrences=[redacted(item) for item in recent],
        past_incidents=past,
        limits=limits,
        total_occurrences=1 + len(occurrences),
    )


def _items(evidence: Evidence) -> list[tuple[str, str]]:
    failure = evidence.failure
    total = evidence.total_occurrences or 1 + len(evidence.occurrences)
    head = [
        f"{name}: {value}"
        for name, value in (
            ("service", failure.service), ("kind", failure.kind), ("resource", failure.resource),
            ("resource_id", failure.resource_id), ("run_id", failure.run_id), ("error_code", failure.error_code),
            ("failure_type", failure.failure_type), ("occurred_at", iso(failure.occurred_at)),
            ("occurrences in this incident", total),
        )
        if value not in ("", None)
    ]
    items = [("failure", "\n".join(head)), ("error_message", failure.error_message or "(empty)")]
    metadata = failure.metadata if isinstance(failure.metadata, dict) else {}
    items.extend((name, str(metadata[name])) for name in OWN_SECTIONS if metadata.get(name))
    shown = {k: v for k, v in metadata.items() if k not in OWN_SECTIONS and v not in (None, "", [], {})}
    if shown:
        items.append(("metadata", "\n".join(f"{k}: {_json(v)}" for k, v in shown.items())))
    for index, other in enumerate(evidence.occurrences):
        title = f"other occurrence {index + 1} of {len(evidence.occurrences)} shown (most recent first)"
        items.append((title, _occurrence(other, failure)))
    for index, past in enumerate(evidence.past_incidents):
        items.append((f"past incident {index + 1} with the same fingerprint", _past(past)))
    return items


def _occurrence(other: Failure, failure: Failure) -> str:
    message = "(same message as above)" if other.error_message == failure.error_message else other.error_message
    parts = [f"occurred_at: {iso(other.occurred_at)}", f"run_id: {other.run_id}"]
    if other.error_code != failure.error_code:
        parts.append(f"error_code: {other.error_code}")
    return "; ".join(parts) + f"\nmessage: {message}"


def _past(past: Mapping[str, Any]) -> str:
    keys = [k for k in PAST_KEYS_FIRST if k in past] + [k for k in past if k not in PAST_KEYS_FIRST]
    return "\n".join(f"{key}: {_json(past[key])}" for key in keys if past[key] not in (None, ""))


def _json(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str, separators=(", ", ": "))


def _section(title: str, text: str, limit: int) -> str:
    body = _cap(text, limit)
    return f"## {title}\n" + "\n".join(f"  {line}" if line else "" for line in body.splitlines())


def _cap(text: str, limit: int) -> str:
    """`text` within `limit` characters: its head (two thirds) and its tail, with the cut said in between."""
    if len(text) <= limit:
        return text
    marker = CUT.format(count=len(text) - limit)
    keep = max(0, limit - len(marker))
    head = keep * 2 // 3
    return text[:head] + marker + text[len(text) - (keep - head):]
