"""Azure DevOps work items by JSON Patch; a tag carries the marker, found with WIQL (which answers ids only).

Agile, Scrum and CMMI Bug forms show ``Microsoft.VSTS.TCM.ReproSteps``, not ``System.Description``, so Bug
bodies go there (else they are "filed blank"). Updates are ``System.History`` comments; resolve sets the state.
"""

from __future__ import annotations

import html
import os
from typing import Any, ClassVar

import httpx

from poller.config import AzureDevOpsSinkConfig
from poller.errors import SinkError
from poller.sinks.base import Delivered, Delivery, HttpSink, RemoteRef, SinkPolicy, TicketAction
from poller.sinks.content import TicketContent

API = {"api-version": "7.1"}
PATCH = {"Content-Type": "application/json-patch+json"}


class AzureDevOpsSink(HttpSink):
    kind: ClassVar[str] = "ticket"

    def __init__(self, name: str, config: AzureDevOpsSinkConfig, policy: SinkPolicy) -> None:
        pat = os.environ.get(config.pat_env, "")
        super().__init__(name, config.timeout.total_seconds(), policy, auth=httpx.BasicAuth("", pat),
                         headers={"Accept": "application/json"})
        self._config, self._pat_set = config, bool(pat)
        self._project = f"{config.organization_url}/{config.project}"

    def deliver(self, delivery: Delivery) -> Delivered:
        self._require_pat()
        remote = delivery.remote or self._find(delivery.content.marker)
        if remote is None:
            if delivery.action == "resolve":
                return Delivered(TicketAction.SKIP, note="no work item to resolve")
            return Delivered(TicketAction.CREATE, self._create(delivery.content))
        if delivery.action == "resolve":
            self._patch(remote, [_add("System.State", self._config.resolved_state),
                                 _add("System.History", f"Resolved by rca-poller: no recurrence since "
                                                        f"{delivery.content.last_seen}.")])
            return Delivered(TicketAction.RESOLVE, remote)
        self._patch(remote, [_add("System.History", html.escape(
            f"Seen again: {delivery.content.occurrences} occurrence(s). {delivery.content.error[:1000]}"))])
        return Delivered(TicketAction.UPDATE, remote)

    def check(self) -> str:
        self._require_pat()
        body = self.json("GET", f"{self._config.organization_url}/_apis/projects/{self._config.project}",
                         "read the project", params=API)
        return f"PAT with access to project {body.get('name', self._config.project)}"

    def _require_pat(self) -> None:
        if not self._pat_set:
            raise SinkError(self.name, f"environment variable {self._config.pat_env} is not set — set it to a PAT "
                            "with Work Items (Read & write)", retryable=False)

    def _find(self, marker: str) -> RemoteRef | None:
        query = ("SELECT [System.Id] FROM WorkItems WHERE [System.TeamProject] = @project "
                 f"AND [System.Tags] CONTAINS '{marker}'")
        body = self.json("POST", f"{self._project}/_apis/wit/wiql", "query the marker tag", params=API,
                         json={"query": query})
        items = body.get("workItems") or []
        return self._ref(items[0]) if items else None

    def _create(self, content: TicketContent) -> RemoteRef:
        body_field = "Microsoft.VSTS.TCM.ReproSteps" if self._config.work_item_type == "Bug" else "System.Description"
        ops = [_add("System.Title", content.title[:250]), _add(body_field, _html(content.text())),
               _add("System.Tags", f"{content.marker}; rca-poller")]
        if self._config.area_path:
            ops.append(_add("System.AreaPath", self._config.area_path))
        url = f"{self._project}/_apis/wit/workitems/${self._config.work_item_type}"
        return self._ref(self.json("POST", url, "create the work item", params=API, json=ops, headers=PATCH))

    def _patch(self, remote: RemoteRef, ops: list[dict[str, Any]]) -> None:
        self.json("PATCH", f"{self._project}/_apis/wit/workitems/{remote.remote_id}", "update the work item",
                  params=API, json=ops, headers=PATCH)

    def _ref(self, item: dict[str, Any]) -> RemoteRef:
        item_id = str(item.get("id") or "")
        if not item_id:
            raise SinkError(self.name, "Azure DevOps answered without a work item id", retryable=True)
        return RemoteRef(item_id, f"{self._project}/_workitems/edit/{item_id}")


def _add(field: str, value: str) -> dict[str, Any]:
    return {"op": "add", "path": f"/fields/{field}", "value": value}


def _html(text: str) -> str:
    return "<br/>".join(html.escape(line) for line in text.split("\n"))
