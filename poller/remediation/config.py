"""The ``remediation:`` block of config.yaml: mode, policies, guard rails and per-platform settings.

Self-contained: no import of ``poller.config``, which imports this module.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from poller.durations import Duration

ActionName = Literal[
    "adf_rerun", "synapse_rerun", "databricks_repair", "databricks_run_now", "databricks_cluster_start",
    "databricks_library_reinstall",
]
Mode = Literal["off", "dry_run", "act", "approval"]




class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MatchConfig(_Model):
    """Every given field must match (AND); within a list any value matches (OR). Empty means any."""

    service: list[str] = Field(default_factory=list)
    kind: list[str] = Field(default_factory=list)
    error_code: list[str] = Field(default_factory=list)  # the most specific (inner) code, e.g. SqlConnectionIsClosed
    numeric_code: list[str] = Field(default_factory=list)  # metadata.adf_error_code / synapse_error_code, e.g. 2200
    termination_code: list[str] = Field(default_factory=list)  # Databricks termination reason code (= error_code)
    termination_type: list[str] = Field(default_factory=list)  # metadata.termination_type, e.g. SERVICE_FAULT
    failure_type: list[str] = Field(default_factory=list)  # ADF failureType / Databricks termination type
    message: str | None = None  # a regex searched in error_message
    resources: list[str] = Field(default_factory=list)  # allow-list of globs over resource and resource_id
    exclude_resources: list[str] = Field(default_factory=list)  # deny-list, wins over the allow-list
    exclude_error_code: list[str] = Field(default_factory=list)
    exclude_termination_type: list[str] = Field(default_factory=list)
    exclude_failure_type: list[str] = Field(default_factory=list)

    @field_validator("message")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value


class BackoffConfig(_Model):
    """Wait before attempt n+1: min(initial * factor**(n-1), max), then ± jitter (a fraction)."""

    initial: Duration = timedelta(minutes=2)
    factor: float = Field(default=2.0, ge=1.0, le=10.0)
    max: Duration = timedelta(hours=1)
    jitter: float = Field(default=0.2, ge=0.0, le=1.0)


class PolicyConfig(_Model):
    """One rule: which extracted failures it matches, what it does, and how often it may."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    match: MatchConfig
    action: ActionName
    enabled: bool = True
    delay: Duration = timedelta(0)  # before the first attempt (e.g. an upstream blob that is not there yet)
    backoff: BackoffConfig = BackoffConfig()
    max_attempts: int = Field(default=3, ge=1, le=20)  # per incident
    once_within: Duration = timedelta(0)  # per resource: no new incident's action sooner than this after the last
    params: dict[str, str | int | bool] = Field(default_factory=dict)  # action options, e.g. start_from_failure


class AdfTargetConfig(_Model):
    """Where ADF reruns go; subscription and resource group come from the factory ARM id unless given here."""

    management_endpoint: str = "https://management.azure.com"
    subscription_id: str | None = None
    resource_group: str | None = None


class SynapseTargetConfig(_Model):
    """Synapse workspace name → its dev endpoint (https://<ws>.dev.azuresynapse.net)."""

    endpoints: dict[str, str] = Field(default_factory=dict)


class RemediationConfig(_Model):
    enabled: bool = False
    mode: Mode = "dry_run"
    use_defaults: bool = False  # add the built-in policies (poller/remediation/defaults.yaml) after `policies`
    policies: list[PolicyConfig] = Field(default_factory=list)
    actions_per_hour: int = Field(default=20, ge=0)  # global budget of actions actually sent
    circuit_breaker_after: int = Field(default=5, ge=1)  # consecutive failed attempts that pause everything
    library_fallbacks: dict[str, str] = Field(default_factory=dict)  # package → fallback pin, e.g. {pandas: "2.2.3"}
    approval_ttl: Duration = timedelta(hours=24)  # a pending_approval attempt older than this expires; 0 = never
    verify_timeout: Duration = timedelta(hours=6)  # a sent attempt still running after this has failed; 0 = never
    adf: AdfTargetConfig = AdfTargetConfig()
    synapse: SynapseTargetConfig = SynapseTargetConfig()

    @model_validator(mode="before")
    @classmethod
    def _legacy_dry_run(cls, data: Any) -> Any:
        # The placeholder of DESIGN §5 spelled the mode as `dry_run: true|false`; keep reading it.
        if isinstance(data, dict) and "dry_run" in data:
            data = dict(data)
            dry = data.pop("dry_run")
            if not isinstance(dry, bool):
                raise ValueError("dry_run must be true or false (prefer mode: dry_run|act|approval)")
            data.setdefault("mode", "dry_run" if dry else "act")
        return data

    @field_validator("policies")
    @classmethod
    def _unique_names(cls, policies: list[PolicyConfig]) -> list[PolicyConfig]:
        names = [p.name for p in policies]
        if duplicate := next((n for n in names if names.count(n) > 1), None):
            raise ValueError(f"policy name {duplicate!r} is used twice")
        return policies

    @property
    def active(self) -> bool:
        return self.enabled and self.mode != "off"
