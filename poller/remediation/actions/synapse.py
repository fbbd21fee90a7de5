"""Synapse pipeline rerun through azure-synapse-artifacts: a recovery run from the failed activity.

The Synapse data plane (2020-12-01) has no startFromFailure: the failed activity is passed as
``start_activity_name`` with ``is_recovery=True`` (reference/azure-log-analytics.md §8.4).
"""

from __future__ import annotations

from typing import Any

from poller.models import Failure
from poller.remediation.actions.adf import RecoveryRerun, group_filter
from poller.remediation.actions.base import Json, NotApplicable
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


class SynapseRerunAction(RecoveryRerun):
    name = "synapse_rerun"

    def plan(self, failure: Failure, policy: PolicyConfig, config: RemediationConfig) -> Json:
        workspace = failure.metadata.get("workspace") or failure.resource_id.rstrip("/").rsplit("/", 1)[-1]
        if not failure.run_id or not workspace:
            raise NotApplicable("the failure has no pipeline run id or workspace")
        return {"workspace": str(workspace), "pipeline": str(failure.metadata.get("pipeline_name") or failure.resource),
                "reference_run_id": failure.run_id, "start_activity": failure.metadata.get("activity_name")}

    def perform(self, params: Json, key: str) -> str:
        response = self._client(params).pipeline.create_pipeline_run(
            params["pipeline"], reference_pipeline_run_id=params["reference_run_id"], is_recovery=True,
            start_activity_name=params.get("start_activity"),
        )
        return str(response.run_id)

    def _client(self, params: Json) -> Any:
        return self._client_for(str(params["workspace"]))

    def _run(self, params: Json, run_id: str) -> Any:
        return self._client(params).pipeline_run.get_pipeline_run(run_id)

    def _group(self, params: Json, group: str) -> set[str]:
        from azure.synapse.artifacts import models

        answer = self._client(params).pipeline_run.query_pipeline_runs_by_workspace(group_filter(group, models))
        return {str(run.run_id) for run in answer.value or []}
