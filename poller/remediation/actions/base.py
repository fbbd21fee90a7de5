"""The action contract and its small value types."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from poller.models import Failure
from poller.remediation.config import PolicyConfig, RemediationConfig

Json = dict[str, Any]
Verdict = Literal["running", "succeeded", "failed"]


class NotApplicable(Exception):
    """The failure lacks what the action needs (no task key, no fallback version…): decide 'skipped'."""


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    message: str = ""


class Action(Protocol):
    name: str

    def plan(self, failure: Failure, policy: PolicyConfig, config: RemediationConfig) -> Json:
        """Parameters from the extracted failure and the policy alone; no I/O."""
        ...

    def prepare(self, params: Json, now: datetime) -> Json:
        """Read-only calls whose answers the intent must record (e.g. the latest repair id); `now` is the pass's."""
        ...

    def perform(self, params: Json, key: str) -> str:
        """The one mutating call; returns the external id (new run, repair or cluster id)."""
        ...

    def reconcile(self, params: Json, key: str) -> str | None:
        """After a crash between intent and result: the external id if the call landed, else None."""
        ...

    def verify(self, params: Json, external_id: str) -> Outcome:
        ...
