"""The model's answer checked against the evidence and the knowledge base before anyone sees it.

The model's text is advice; these checks decide what is kept. Confidence starts at the model's own value and:

* each quote not found in the evidence halves it (× 0.5 per dropped quote). A quote is found when, with runs
  of whitespace collapsed to one space and wrapping quote marks or ellipses removed, it is a substring of the
  evidence text (case-sensitive) and at least 8 characters long;
* with no grounded quote left, it is capped at 0.3 and the answer is marked inconclusive;
* ``retry_safe`` is AND-ed with the knowledge base's ``transient`` verdict, so the model never makes anything
  retry-safe by itself; claiming it for an error the knowledge base knows as not transient costs × 0.7;
* a category other than that of a specific knowledge-base match (by code, or by exception or message) costs
  × 0.7; the knowledge base's category is kept and the model's is recorded as ``model_category``;
* recommended actions that download-and-run, pipe into a shell or delete recursively are removed (nothing
  executes actions, but people copy them), × 0.7; the knowledge base's actions stand in if none is left;
* instruction-like text in the evidence (a prompt-injection sign) costs × 0.8.

The result is rounded to two decimals. The model's text is redacted again, in case it echoed a secret.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from poller.rca.evidence import Evidence
from poller.rca.knowledge import KnowledgeMatch
from poller.rca.llm import LlmAnswer
from poller.rca.redact import redact_text
from poller.rca.result import Category, RcaResult

__all__ = ["DROPPED_QUOTE_FACTOR", "check_quotes", "ground"]

DROPPED_QUOTE_FACTOR = 0.5
UNGROUNDED_CAP = 0.3
CONTRADICTION_FACTOR = 0.7
INSTRUCTIONS_FACTOR = 0.8
MIN_QUOTE_CHARS = 8
_WRAPPING = "\"'“”‘’`…. "
#: Actions that look like commands to fetch and run code, or to destroy: an injected "fix" being relayed.
_UNSAFE_ACTION = re.compile(
    r"\b(?:curl|wget|Invoke-WebRequest|iwr|Invoke-Expression|iex|certutil)\b|\|\s*(?:ba|z|pwsh|power)?sh\b"
    r"|\brm\s+-[a-z]*r[a-z]*f|\bpowershell(?:\.exe)?\s+-e(?:nc|ncodedcommand)?\b|\bchmod\s+\+x\b|base64\s+-d",
    re.IGNORECASE,
)


def normalise(text: str) -> str:
    return " ".join(text.split())


def check_quotes(quotes: Sequence[str], evidence_text: str) -> tuple[list[str], list[str]]:
    """(found, not found): the quotes that are verbatim in the evidence, up to whitespace, and the others."""
    haystack = normalise(evidence_text)
    found: list[str] = []
    dropped: list[str] = []
    for quote in quotes:
        needle = normalise(quote).strip(_WRAPPING)
        if len(needle) >= MIN_QUOTE_CHARS and needle in haystack:
            found.append(quote)
        else:
            dropped.append(quote)
    return found, dropped


def ground(answer: LlmAnswer, evidence: Evidence, match: KnowledgeMatch, *, provider: str,
           model: str | None) -> RcaResult:
    """The validated result: quotes checked, retry_safe bounded, category and confidence held to the facts."""
    entry = match.entry
    kept, dropped = check_quotes(answer.evidence_quotes, evidence.text())
    confidence = answer.confidence * DROPPED_QUOTE_FACTOR ** len(dropped)
    warnings = [f"{len(dropped)} quote(s) not found in the evidence were dropped"] if dropped else []
    inconclusive = answer.inconclusive
    if not kept:
        confidence = min(confidence, UNGROUNDED_CAP)
        inconclusive = True
        warnings.append("no quote of the answer is in the evidence: marked inconclusive")
    if answer.retry_safe and not entry.transient and match.level.specific:
        confidence *= CONTRADICTION_FACTOR
        warnings.append(f"the model called it retry-safe; rule {entry.id} says a plain rerun does not help")
    category, model_category = answer.category, None
    if match.level.specific and entry.category is not Category.UNKNOWN and answer.category is not entry.category:
        category, model_category = entry.category, answer.category
        confidence *= CONTRADICTION_FACTOR
        warnings.append(f"the model said {answer.category.value}; rule {entry.id} knows this error as "
                        f"{entry.category.value}")
    actions = [action for action in answer.recommended_actions if not _UNSAFE_ACTION.search(action)]
    if len(actions) < len(answer.recommended_actions):
        confidence *= CONTRADICTION_FACTOR
        warnings.append(f"{len(answer.recommended_actions) - len(actions)} action(s) that run downloaded code or "
                        f"delete data were removed")
    if evidence.suspicious:
        confidence *= INSTRUCTIONS_FACTOR
        warnings.append("the evidence contains instruction-like text (treated as data): "
                        + "; ".join(repr(phrase) for phrase in evidence.suspicious))
    return RcaResult(
        summary=redact_text(answer.summary),
        probable_cause=redact_text(answer.probable_cause),
        category=category,
        confidence=round(min(max(confidence, 0.0), 1.0), 2),
        evidence_quotes=[redact_text(quote) for quote in kept],
        recommended_actions=[redact_text(action) for action in actions] or list(entry.actions),
        retry_safe=answer.retry_safe and entry.transient,
        inconclusive=inconclusive,
        provider=provider,
        model=model,
        dropped_quotes=[redact_text(quote) for quote in dropped],
        rule_id=entry.id,
        rule_match=match.level.label,
        model_category=model_category,
        warnings=warnings,
    )
