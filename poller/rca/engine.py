"""`RcaEngine`: one incident's evidence → an `RcaResult`, from the model when one is configured and usable,
from the knowledge base otherwise — and a `CallRecord` of what happened to the model call.

The rules answer is computed first, always: it is the fallback for every failure of the model path (no key,
budget spent, timeout, 429, refusal, invalid output) and the facts the model's answer is grounded against.
"""

from __future__ import annotations

import time

from azure.core.credentials import TokenCredential

from poller.config import RcaConfig
from poller.models import Failure
from poller.rca.evidence import Evidence
from poller.rca.grounding import check_quotes, ground
from poller.rca.knowledge import KnowledgeBase, KnowledgeMatch, default_knowledge
from poller.rca.llm import LlmClient, MissingCredential, ModelReply, response_format
from poller.rca.prompt import build_messages
from poller.rca.redact import redacted
from poller.rca.result import CallRecord, RcaResult
from poller.rca.rules import rules_result

__all__ = ["RcaEngine"]


class RcaEngine:
    """Explains incidents; built from ``rca`` config (no network here). Safe to share between threads."""

    def __init__(self, config: RcaConfig, credential: TokenCredential | None = None, *,
                 knowledge: KnowledgeBase | None = None) -> None:
        self.config = config
        self.knowledge = knowledge or default_knowledge()
        self._llm = LlmClient(config, credential) if config.provider != "rules" else None
        self._schema = response_format()

    def rules(self, failure: Failure) -> RcaResult:
        """The knowledge base's answer for one failure (redacted first)."""
        clean = redacted(failure)
        return rules_result(clean, self.knowledge.match(clean))

    def analyse(self, evidence: Evidence, *, tokens_used_today: int) -> tuple[RcaResult, CallRecord | None]:
        """The incident's analysis and the record of the model call (None for the rules provider)."""
        match = self.knowledge.match(evidence.failure)
        fallback = self._rules_for(evidence, match)
        if self._llm is None:
            return fallback, None
        budget = self.config.daily_token_budget
        if tokens_used_today >= budget:
            reason = f"daily token budget exhausted: {tokens_used_today} of {budget} tokens used today"
            return _fell_back(fallback, reason), self._record(ModelReply(None, "skipped_budget", reason), 0.0)
        started = time.monotonic()
        messages = build_messages(evidence.text(), evidence.nonce, match)
        try:
            reply = self._llm.ask(messages, self._schema)
        except MissingCredential as exc:
            reply = ModelReply(None, "no_key", str(exc))
        record = self._record(reply, time.monotonic() - started)
        if reply.answer is None:
            return _fell_back(fallback, f"{reply.status}: {reply.error}"), record
        return ground(reply.answer, evidence, match, provider=self.config.provider, model=record.model), record

    def close(self) -> None:
        """Close the model client's connections."""
        if self._llm is not None:
            self._llm.close()

    def _rules_for(self, evidence: Evidence, match: KnowledgeMatch) -> RcaResult:
        result = rules_result(evidence.failure, match)
        # The rules quote comes from the whole message; keep it only if the (trimmed) evidence shows it too.
        kept, _ = check_quotes(result.evidence_quotes, evidence.text())
        return result if kept == result.evidence_quotes else result.model_copy(update={"evidence_quotes": kept})

    def _record(self, reply: ModelReply, seconds: float) -> CallRecord:
        prices = self.config
        cost = (reply.prompt_tokens * prices.price_per_1k_prompt_tokens
                + reply.completion_tokens * prices.price_per_1k_completion_tokens) / 1000
        return CallRecord(
            provider=self.config.provider, model=reply.model or (self._llm.model if self._llm else None),
            prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens, cost=round(cost, 6),
            status=reply.status, error=reply.error, seconds=round(seconds, 3),
        )


def _fell_back(result: RcaResult, reason: str) -> RcaResult:
    return result.model_copy(update={"fallback_reason": reason})

