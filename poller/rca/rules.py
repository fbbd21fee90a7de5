"""The rules provider: the knowledge base's answer for a failure, as an `RcaResult` (offline, deterministic)."""

from __future__ import annotations

from poller.models import Failure
from poller.rca.knowledge import KnowledgeBase, KnowledgeMatch, MatchLevel, default_knowledge
from poller.rca.redact import redacted
from poller.rca.result import RcaResult

#: How sure a rules answer is, by how specific the match was (a vendor code with its message beats a default).
CONFIDENCE_BY_LEVEL: dict[MatchLevel, float] = {
    MatchLevel.CODE_AND_CONDITION: 0.85,
    MatchLevel.CODE: 0.8,
    MatchLevel.CONDITION: 0.65,
    MatchLevel.WRAPPER: 0.4,
    MatchLevel.SERVICE_DEFAULT: 0.25,
    MatchLevel.FALLBACK: 0.1,
}
QUOTE_CHARS = 240


def rules_result(failure: Failure, match: KnowledgeMatch) -> RcaResult:
    """The answer of the matched entry for this failure (which should already be redacted)."""
    entry = match.entry
    what = failure.kind.replace("_", " ") if failure.kind else failure.service
    code = failure.error_code or "no error code"
    return RcaResult(
        summary=f"{entry.title} — {failure.service} {what} '{failure.resource}' ({code}).",
        probable_cause=entry.cause,
        category=entry.category,
        confidence=CONFIDENCE_BY_LEVEL[match.level],
        evidence_quotes=[quote] if (quote := match.quote or _first_line(failure.error_message)) else [],
        recommended_actions=list(entry.actions),
        retry_safe=entry.transient,
        inconclusive=match.level >= MatchLevel.SERVICE_DEFAULT,
        provider="rules",
        rule_id=entry.id,
        rule_match=match.level.label,
    )


def analyse_with_rules(failure: Failure, knowledge: KnowledgeBase | None = None) -> RcaResult:
    """Redact, match and answer: the whole rules provider for one failure."""
    clean = redacted(failure)
    return rules_result(clean, (knowledge or default_knowledge()).match(clean))


def probable_cause(failure: Failure) -> str:
    """The knowledge base's one-line probable cause for the failure (kept for callers of the first version)."""
    return default_knowledge().match(failure).entry.cause


def _first_line(text: str) -> str:
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line[:QUOTE_CHARS]
