"""What an analysis produces: the validated `RcaResult` (stored as JSON on the incident) and the `CallRecord`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Category(StrEnum):
    """What kind of cause; the same words for the knowledge base, the model and the tickets."""

    TRANSIENT = "transient"  # a platform, network or throttling blip: the same run again is likely to pass
    CONFIGURATION = "configuration"  # a setting, definition, path, version or network rule is wrong
    DATA = "data"  # the input is missing, late, malformed or violates a constraint
    CODE = "code"  # a bug in the notebook, function or query
    CAPACITY = "capacity"  # memory, disk, quota, throughput or time limits
    PERMISSION = "permission"  # an identity lacks access, or a credential expired
    DEPENDENCY = "dependency"  # a service the job calls is down, unreachable or failing
    UNKNOWN = "unknown"


CallStatus = Literal["ok", "error", "refused", "invalid", "timeout", "rate_limited", "skipped_budget", "no_key"]


class RcaResult(BaseModel):
    """One incident's explanation: the model's answer after validation and grounding, or the rules' answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    summary: str
    probable_cause: str
    category: Category
    confidence: float = Field(ge=0.0, le=1.0)
    evidence_quotes: list[str] = Field(default_factory=list)
    recommended_actions: list[str] = Field(default_factory=list)
    retry_safe: bool = False
    inconclusive: bool = False
    provider: str = "rules"
    model: str | None = None
    #: Why an LLM provider's answer was not used (the rules answered instead); None when it was.
    fallback_reason: str | None = None
    #: Quotes the model gave that are not in the evidence, removed from `evidence_quotes`.
    dropped_quotes: list[str] = Field(default_factory=list)
    #: The knowledge-base entry that matched (rules answer, or the facts the model's answer was checked against).
    rule_id: str | None = None
    #: How that entry matched: code+condition, code, condition, wrapper, service-default, fallback.
    rule_match: str | None = None
    #: The model's category when an exact knowledge-base match overrode it.
    model_category: Category | None = None
    #: What grounding changed or noticed (quotes dropped, retry_safe overruled, instruction-like evidence).
    warnings: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class CallRecord:
    """One attempt to ask a model, or the reason none was made (budget, key): what the processor records."""

    provider: str
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    cost: float
    status: CallStatus
    error: str | None
    seconds: float
