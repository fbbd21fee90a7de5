"""Synapse pipeline rerun through azure-synapse-artifacts: a recovery run from the failed activity.

The Synapse data plane (2020-12-01) has no startFromFailure: the failed activity is passed as
``start_activity_name`` with ``is_recovery=True`` (reference/azure-log-analytics.md §8.4).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from poller.models import Failure
from poller.remediation.actions.adf import group_filter, pipeline_outcome
from poller.remediation.actions.base import Json, NotApplicable, Outcome
from poller.remediation.config import PolicyConfig, RemediationConfig, SynapseTargetConfig


class SynapseClients:
    """One ArtifactsClient per Synapse workspace, at the dev endpoint named in `remediation.synapse.endpoints`."""

    def __init__(self, settings: SynapseTargetConfig, credential: Any) -> None:
        self._settings, self._credential = settings, credential
        self._clients: dict[str, Any] = {}

    def __call__(self, workspace: str) -> Any:
        if workspace not in self._clients:
            from azure.synapse.artifacts import ArtifactsClient

            endpoint = self._settings.endpoints.get(workspace) or f"https://{workspace}.dev.azuresynapse.net"
            self._clients[workspace] = ArtifactsClient(self._credential, endpoint)
        return self._clients[workspace]


class SynapseRerunAction:
    name = "synapse_rerun"

    def __init__(self, client_for: Callable[[str], Any]) -> None:
        self._client_for = client_for

    def plan(self, failure: Failure, policy: PolicyConfig, config: RemediationConfig) -> Json:
        workspace = failure.metadata.get("workspace") or failure.resource_id.rstrip("/").rsplit("/", 1)[-1]
        if not failure.run_id or not workspace:
            raise NotApplicable("the failure has no pipeline run id or workspace")
        return {"workspace": str(workspace), "pipeline": str(failure.metadata.get("pipeline_name") or failure.resource),
                "reference_run_id": failure.run_id, "start_activity": failure.metadata.get("activity_name")}

    def prepare(self, params: Json, now: datetime) -> Json:
        reference = self._client(params).pipeline_run.get_pipeline_run(params["reference_run_id"])
        group = reference.run_group_id or params["reference_run_id"]
        return {**params, "run_group_id": group, "known_runs": sorted(self._group(params, group))}

    def perform(self, params: Json, key: str) -> str:
        response = self._client(params).pipeline.create_pipeline_run(
            params["pipeline"], reference_pipeline_run_id=params["reference_run_id"], is_recovery=True,
            start_activity_name=params.get("start_activity"),
        )
        return str(response.run_id)

    def reconcile(self, params: Json, key: str) -> str | None:
        new = self._group(params, params["run_group_id"]) - set(params["known_runs"])
        return min(new) if new else None

    def verify(self, params: Json, external_id: str) -> Outcome:
        run = self._client(params).pipeline_run.get_pipeline_run(external_id)
        return pipeline_outcome(run.status, run.message)

    def _client(self, params: Json) -> Any:
        return self._client_for(str(params["workspace"]))

    def _group(self, params: Json, group: str) -> set[str]:
        from azure.synapse.artifacts import models

        answer = self._client(params).pipeline_run.query_pipeline_runs_by_workspace(group_filter(group, models))
        return {str(run.run_id) for run in answer.value or []}
