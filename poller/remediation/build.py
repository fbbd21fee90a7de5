"""Wires the remediation engine from config: the actions registry and the SDK clients behind it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from poller.errors import ConfigError
from poller.remediation.actions.base import Action
from poller.remediation.actions.databricks import (
    ClusterStartAction,
    LibraryReinstallAction,
    RepairAction,
    RunNowAction,
)
from poller.remediation.engine import RemediationEngine

if TYPE_CHECKING:  # databricks-sdk costs ~1 s to import; only a process that acts on Databricks pays for it
    from databricks.sdk import WorkspaceClient

AZURE_ACTIONS = ("adf_rerun", "synapse_rerun")


class DatabricksClients:
    """One WorkspaceClient per Databricks source, built on first use with that source's auth."""

    def __init__(self, sources: dict[str, Any]) -> None:
        self._sources = sources
        self._clients: dict[str, WorkspaceClient] = {}

    def __call__(self, source: str) -> WorkspaceClient:
        if source not in self._clients:
            from poller.sources.databricks_client import DatabricksApi

            config = self._sources.get(source)
            if config is None or getattr(config, "type", None) != "databricks":
                raise ConfigError(f"sources.{source}", "is not a Databricks source: cannot remediate its failures")
            self._clients[source] = DatabricksApi(source, config).client
        return self._clients[source]


def databricks_actions(client_for: Any) -> dict[str, Action]:
    actions: list[Action] = [RepairAction(client_for), RunNowAction(client_for), ClusterStartAction(client_for),
                             LibraryReinstallAction(client_for)]
    return {action.name: action for action in actions}


def build_remediation(config: Any, credential: Any = None) -> RemediationEngine | None:
    """The engine for `config.remediation`, or None when remediation is off. No network call here."""
    settings = config.remediation
    if not settings.active:
        return None
    engine = RemediationEngine(settings, databricks_actions(DatabricksClients(config.sources)))
    if any(policy.action in AZURE_ACTIONS for policy in engine.policies):
        from poller.azure_auth import build_credential
        from poller.remediation.actions.adf import adf_actions

        engine.actions = {**engine.actions, **adf_actions(settings, credential or build_credential(config.azure))}
    return engine
