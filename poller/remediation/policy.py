"""Policy matching on extracted Failure fields only (never RCA output), and the built-in default policies."""

from __future__ import annotations

import fnmatch
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from poller.models import Failure
from poller.remediation.config import BackoffConfig, MatchConfig, PolicyConfig, RemediationConfig

DEFAULTS_FILE = Path(__file__).with_name("defaults.yaml")
#: Metadata keys that hold the numeric ADF / Synapse error code (the inner code is `error_code`).
NUMERIC_CODE_KEYS = ("adf_error_code", "synapse_error_code")


@dataclass(frozen=True, slots=True)
class Selection:
    """The first enabled policy that matched, or None with why each policy did not."""

    policy: PolicyConfig | None
    reasons: dict[str, str]


def _upper(values: Sequence[str]) -> set[str]:
    return {v.upper() for v in values}


def _field(failure: Failure, name: str) -> str:
    if name == "numeric_code":
        return next((str(failure.metadata[k]) for k in NUMERIC_CODE_KEYS if failure.metadata.get(k)), "")
    if name == "termination_code":
        return failure.error_code if failure.service == "databricks" else ""
    if name == "termination_type":
        return str(failure.metadata.get("termination_type") or "")
    return str(getattr(failure, name) or "")


_LISTS = ("service", "kind", "error_code", "numeric_code", "termination_code", "termination_type", "failure_type")
_EXCLUDES = {"exclude_error_code": "error_code", "exclude_termination_type": "termination_type",
             "exclude_failure_type": "failure_type"}


def mismatch(match: MatchConfig, failure: Failure) -> str | None:
    """None when `failure` matches; else the first field that did not, as a sentence for the audit."""
    for name in _LISTS:
        wanted: list[str] = getattr(match, name)
        value = _field(failure, name)
        if wanted and value.upper() not in _upper(wanted):
            return f"{name} {value!r} not in {wanted}"
    for name, source in _EXCLUDES.items():
        value = _field(failure, source)
        if value and value.upper() in _upper(getattr(match, name)):
            return f"{source} {value!r} is excluded"
    if match.message is not None and not re.search(match.message, failure.error_message):
        return f"message does not match /{match.message}/"
    names = (failure.resource, failure.resource_id)
    if any(fnmatch.fnmatchcase(n, glob) for n in names for glob in match.exclude_resources):
        return f"resource {failure.resource!r} is on the deny-list"
    if match.resources and not any(fnmatch.fnmatchcase(n, glob) for n in names for glob in match.resources):
        return f"resource {failure.resource!r} is not on the allow-list"
    return None


def select_policy(policies: Sequence[PolicyConfig], failure: Failure) -> Selection:
    """First match wins, in config order (configured policies before the defaults)."""
    reasons: dict[str, str] = {}
    for policy in policies:
        if not policy.enabled:
            reasons[policy.name] = "policy disabled"
            continue
        reason = mismatch(policy.match, failure)
        if reason is None:
            return Selection(policy, reasons)
        reasons[policy.name] = reason
    return Selection(None, reasons)


@cache
def default_policies() -> tuple[PolicyConfig, ...]:
    """The built-in policies for well-known transient failures (used only with `use_defaults: true`)."""
    data: list[dict[str, Any]] = yaml.safe_load(DEFAULTS_FILE.read_text(encoding="utf-8"))["policies"]
    return tuple(PolicyConfig.model_validate(item) for item in data)


def effective_policies(config: RemediationConfig) -> tuple[PolicyConfig, ...]:
    configured = tuple(config.policies)
    if not config.use_defaults:
        return configured
    names = {p.name for p in configured}
    return configured + tuple(p for p in default_policies() if p.name not in names)


def backoff(config: BackoffConfig, attempt: int, rand: Callable[[], float] = random.random) -> timedelta:
    """The wait after failed attempt number `attempt` (1-based): exponential, capped, with ± jitter."""
    base = min(config.initial.total_seconds() * config.factor ** (attempt - 1), config.max.total_seconds())
    return timedelta(seconds=max(0.0, base * (1 + config.jitter * (2 * rand() - 1))))
