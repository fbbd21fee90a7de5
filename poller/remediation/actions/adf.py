"""ADF and Synapse pipeline reruns: recovery runs that join the failed run's group, through the vendor SDKs.

A rerun is recognisable afterwards as a run of the failed run's group that was not there before the call:
the intent records the group's run ids, and reconcile asks for the group again
(reference/azure-log-analytics.md §8.2 "Idempotency hint").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from poller.models import Failure
from poller.remediation.actions.base import Action, Json, NotApplicable, Outcome
from poller.remediation.config import AdfTargetConfig, PolicyConfig, RemediationConfig

ARM_FACTORY = re.compile(r"/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/Microsoft\.DataFactory"
                         r"/factories/([^/]+)", re.I)
DEFAULT_ARM = "https://management.azure.com"
#: How far back a run group is searched: reruns of a run older than this are not found.
GROUP_WINDOW = timedelta(days=30)


def pipeline_outcome(status: str | None, message: str | None) -> Outcome:
    if status == "Succeeded":
        return Outcome("succeeded", status)
    if status in ("Failed", "Cancelled", "Canceling"):
        return Outcome("failed", f"{status}: {message or ''}".strip(": "))
    return Outcome("running", status or "")


def group_filter(group: str, models: Any = None) -> Any:
    """RunFilterParameters for one run group, built from `models` (ADF's by default, or Synapse's)."""
    # Measured: azure-mgmt-datafactory 10.0.0 names the filter's list `values_property` (its models are
    # MutableMappings, where `values` is taken); azure-synapse-artifacts 0.22.0 still calls it `values`.
    values_key = "values" if models is not None else "values_property"
    if models is None:
        from azure.mgmt.datafactory import models
    now = datetime.now(UTC)  # a wide window, not a decision: the run group id alone selects the runs
    condition = models.RunQueryFilter(operand="RunGroupId", operator="Equals", **{values_key: [group]})
    return models.RunFilterParameters(last_updated_after=now - GROUP_WINDOW,
                                      last_updated_before=now + timedelta(days=1), filters=[condition])


class AdfClients:
    """One DataFactoryManagementClient per subscription, on the configured management endpoint."""

    def __init__(self, settings: AdfTargetConfig, credential: Any) -> None:
        self._settings, self._credential = settings, credential
        self._clients: dict[str, Any] = {}

    def __call__(self, subscription_id: str) -> Any:
        if subscription_id not in self._clients:
            from azure.mgmt.datafactory import DataFactoryManagementClient

            endpoint = self._settings.management_endpoint.rstrip("/")
            scopes: dict[str, Any] = {} if endpoint == DEFAULT_ARM else {"credential_scopes": [f"{endpoint}/.default"]}
            self._clients[subscription_id] = DataFactoryManagementClient(
                self._credential, subscription_id, base_url=endpoint, **scopes)
        return self._clients[subscription_id]


class RecoveryRerun:
    """What ADF and Synapse reruns share: the rerun is the run of the failed run's group that was not there before
    the call, and its status is the pipeline run's. A subclass reads one run and one run group of its service."""

    def __init__(self, client_for: Callable[[str], Any]) -> None:
        self._client_for = client_for

    def prepare(self, params: Json, now: datetime) -> Json:
        reference = self._run(params, params["reference_run_id"])
        group = reference.run_group_id or params["reference_run_id"]
        return {**params, "run_group_id": group, "known_runs": sorted(self._group(params, group))}

    def reconcile(self, params: Json, key: str) -> str | None:
        new = self._group(params, params["run_group_id"]) - set(params["known_runs"])
        return min(new) if new else None

    def verify(self, params: Json, external_id: str) -> Outcome:
        run = self._run(params, external_id)
        return pipeline_outcome(run.status, run.message)

    def _run(self, params: Json, run_id: str) -> Any:
        raise NotImplementedError

    def _group(self, params: Json, group: str) -> set[str]:
        raise NotImplementedError


class AdfRerunAction(RecoveryRerun):
    """pipelines.create_run(..., reference_pipeline_run_id=, is_recovery=True, start_from_failure=) — keywords."""

    name = "adf_rerun"

    def plan(self, failure: Failure, policy: PolicyConfig, config: RemediationConfig) -> Json:
        if not failure.run_id:
            raise NotApplicable("the failure has no pipeline run id")
        match = ARM_FACTORY.search(failure.resource_id)
        subscription = config.adf.subscription_id or (match.group(1) if match else None)
        group = config.adf.resource_group or (match.group(2) if match else None)
        factory = failure.metadata.get("factory") or (match.group(3) if match else None)
        if not (subscription and group and factory):
            raise NotApplicable("no factory ARM id in resource_id, and no remediation.adf subscription/group")
        return {"subscription_id": subscription, "resource_group": group, "factory": str(factory),
                "pipeline": str(failure.metadata.get("pipeline_name") or failure.resource),
                "reference_run_id": failure.run_id,
                "start_from_failure": bool(policy.params.get("start_from_failure", True))}

    def perform(self, params: Json, key: str) -> str:
        response = self._client(params).pipelines.create_run(
            params["resource_group"], params["factory"], params["pipeline"],
            reference_pipeline_run_id=params["reference_run_id"], is_recovery=True,
            start_from_failure=params["start_from_failure"],
        )
        return str(response.run_id)

    def _client(self, params: Json) -> Any:
        return self._client_for(str(params["subscription_id"]))

    def _run(self, params: Json, run_id: str) -> Any:
        return self._client(params).pipeline_runs.get(params["resource_group"], params["factory"], run_id)

    def _group(self, params: Json, group: str) -> set[str]:
        answer = self._client(params).pipeline_runs.query_by_factory(params["resource_group"], params["factory"],
                                                                     group_filter(group))
        return {str(run.run_id) for run in answer.value or []}


def adf_actions(settings: RemediationConfig, credential: Any) -> dict[str, Action]:
    from poller.remediation.actions.synapse import SynapseClients, SynapseRerunAction

    actions: list[Action] = [AdfRerunAction(AdfClients(settings.adf, credential)),
                             SynapseRerunAction(SynapseClients(settings.synapse, credential))]
    return {action.name: action for action in actions}
