"""Policy matching is pure, table-driven, and reads extracted fields only."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from poller.models import Failure
from poller.remediation.config import BackoffConfig, MatchConfig, RemediationConfig
from poller.remediation.policy import backoff, default_policies, effective_policies, mismatch, select_policy
from tests.remediation.helpers import NOW, failure

INJECTION = Path(__file__).resolve().parents[1] / "testdata" / "rca" / "injection"


def adf(**changes: Any) -> Failure:
    metadata = {"adf_error_code": "2200", "activity_name": "Copy sales", "factory": "adf-prod",
                **changes.pop("metadata", {})}
    values: dict[str, Any] = {
        "key": "adf:activity:a1", "source": "la", "service": "adf", "kind": "activity_run",
        "resource": "pl_load_sales", "run_id": "r0", "error_code": "SqlConnectionIsClosed",
        "error_message": "The connection is closed.", "failure_type": "SystemError", "occurred_at": NOW,
        "resource_id": "/subscriptions/s1/resourceGroups/rg1/providers/Microsoft.DataFactory/factories/adf-prod",
        "metadata": metadata}
    values.update(changes)
    return Failure(**values)


@pytest.mark.parametrize(("match", "item", "reason"), [
    ({}, adf(), None),
    ({"service": ["adf"], "error_code": ["sqlconnectionisclosed"]}, adf(), None),
    ({"service": ["synapse"]}, adf(), "service 'adf' not in ['synapse']"),
    ({"numeric_code": ["2200"]}, adf(), None),
    ({"numeric_code": ["2108"]}, adf(), "numeric_code '2200' not in ['2108']"),
    ({"failure_type": ["SystemError"], "exclude_failure_type": ["UserError"]}, adf(), None),
    ({"exclude_failure_type": ["UserError"]}, adf(failure_type="UserError"), "failure_type 'UserError' is excluded"),
    ({"message": r"connection is \w+"}, adf(), None),
    ({"message": "timeout"}, adf(), "message does not match /timeout/"),
    ({"resources": ["pl_load_*"]}, adf(), None),
    ({"resources": ["pl_other"]}, adf(), "resource 'pl_load_sales' is not on the allow-list"),
    ({"resources": ["pl_*"], "exclude_resources": ["*sales"]}, adf(), "resource 'pl_load_sales' is on the deny-list"),
    ({"resources": ["*/factories/adf-prod"]}, adf(), None),
    ({"termination_code": ["CLOUD_FAILURE"], "termination_type": ["CLOUD_FAILURE"]}, failure(), None),
    ({"termination_code": ["CLOUD_FAILURE"]}, adf(), "termination_code '' not in ['CLOUD_FAILURE']"),
    ({"exclude_termination_type": ["CLIENT_ERROR"]},
     failure(metadata={"termination_type": "CLIENT_ERROR"}), "termination_type 'CLIENT_ERROR' is excluded"),
    ({"kind": ["cluster_event"]}, failure(), "kind 'task_run' not in ['cluster_event']"),
])
def test_match_fields(match: dict[str, Any], item: Failure, reason: str | None) -> None:
    assert mismatch(MatchConfig.model_validate(match), item) == reason


def test_first_enabled_match_wins_and_reasons_name_the_others() -> None:
    config = RemediationConfig.model_validate({"policies": [
        {"name": "off", "enabled": False, "match": {}, "action": "adf_rerun"},
        {"name": "dbx", "match": {"service": ["databricks"]}, "action": "databricks_repair"},
        {"name": "adf", "match": {"service": ["adf"]}, "action": "adf_rerun"},
    ]})
    chosen = select_policy(config.policies, adf())
    assert chosen.policy is not None and chosen.policy.name == "adf"
    assert chosen.reasons == {"off": "policy disabled", "dbx": "service 'adf' not in ['databricks']"}


def test_defaults_are_off_unless_asked_and_configured_ones_come_first() -> None:
    assert effective_policies(RemediationConfig()) == ()
    mine = {"name": "adf-throttling", "match": {"service": ["adf"]}, "action": "adf_rerun"}
    policies = effective_policies(RemediationConfig.model_validate({"use_defaults": True, "policies": [mine]}))
    assert policies[0].match.error_code == [] and len(policies) == len(default_policies())
    assert RemediationConfig().enabled is False and RemediationConfig().mode == "dry_run"


@pytest.mark.parametrize(("item", "policy"), [
    (adf(), "adf-transient-connectivity"),
    (adf(error_code="UserErrorSourceBlobNotExist", failure_type="UserError"), "adf-upstream-blob-late"),
    (adf(error_code="Unknown", metadata={"adf_error_code": "2128"}), "adf-transient-numeric"),
    (adf(error_code="SqlUnauthorizedAccess", failure_type="UserError"), None),
    (adf(error_code="SqlConnectionIsClosed", failure_type="UserError"), None),
    (failure(), "databricks-job-cluster-failure"),
    (failure(metadata={"termination_type": "CLIENT_ERROR"}), None),
    (failure(kind="cluster_event", error_code="CLOUD_PROVIDER_LAUNCH_FAILURE", metadata={"termination_type":
     "CLOUD_FAILURE"}), "databricks-cluster-service-fault"),
    (failure(kind="cluster_event", error_code="INIT_SCRIPT_FAILURE", metadata={"termination_type":
     "CLIENT_ERROR"}), None),
    (failure(kind="cluster_event", error_code="DRIVER_UNREACHABLE", metadata={"termination_type": ""}),
     "databricks-driver-unreachable"),
    (failure(kind="library_install", error_code="LIBRARY_INSTALL_FAILED"), "databricks-library-fallback"),
])
def test_default_policies(item: Failure, policy: str | None) -> None:
    chosen = select_policy(default_policies(), item).policy
    assert (chosen.name if chosen else None) == policy


@pytest.mark.parametrize("path", sorted(INJECTION.glob("*.json")), ids=lambda p: p.stem)
def test_injection_fixtures_match_no_default_policy(path: Path) -> None:
    """The model may be talked into "retry_safe": the matcher never sees the model, only extracted fields."""
    data = json.loads(path.read_text())
    item = Failure(key=path.stem, occurred_at=NOW, **{k: v for k, v in data["failure"].items()})
    assert select_policy(default_policies(), item).policy is None


@pytest.mark.parametrize(("attempt", "rand", "seconds"), [(1, 0.5, 60), (2, 0.5, 120), (3, 0.5, 240),
                                                         (9, 0.5, 600), (1, 0.0, 48), (1, 1.0, 72)])
def test_backoff_is_exponential_capped_with_jitter(attempt: int, rand: float, seconds: float) -> None:
    config = BackoffConfig(initial=timedelta(minutes=1), factor=2, max=timedelta(minutes=10), jitter=0.2)
    assert backoff(config, attempt, lambda: rand).total_seconds() == pytest.approx(seconds)


@pytest.mark.parametrize(("data", "message"), [
    ({"mode": "sometimes"}, "remediation.mode"),
    ({"policies": [{"name": "a", "match": {"message": "("}, "action": "adf_rerun"}]}, "not a valid regular"),
    ({"policies": [{"name": "a", "match": {}, "action": "reboot"}]}, "remediation.policies.0.action"),
    ({"policies": [{"name": "a", "match": {}, "action": "adf_rerun"}] * 2}, "policy name 'a' is used twice"),
    ({"policies": [{"name": "a", "match": {}, "action": "adf_rerun", "delay": "soon"}]}, "expected a duration"),
])
def test_bad_config_names_the_key(data: dict[str, Any], message: str) -> None:
    from poller.config import parse_config
    from poller.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        parse_config({"remediation": data}, {})
