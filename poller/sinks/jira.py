"""Jira Cloud (REST v3, ADF descriptions, API token) and Data Center (REST v2, personal access token).

The marker is a label. Jira's search is eventually consistent, so the local mapping is trusted first and the
label search is only the fallback (after a crash between the create and the local commit). Updates are
comments; resolve runs the transition named ``resolve_transition``.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import httpx

from poller.config import JiraSinkConfig
from poller.errors import SinkError
from poller.sinks.base import Delivered, Delivery, HttpSink, RemoteRef, SinkPolicy, TicketAction
from poller.sinks.content import TicketContent

DONE = "done"  # Jira's status category key of finished issues


class JiraSink(HttpSink):
    kind: ClassVar[str] = "ticket"

    def __init__(self, name: str, config: JiraSinkConfig, policy: SinkPolicy) -> None:
        token = os.environ.get(config.token_env, "")
        cloud = config.deployment == "cloud"
        auth = httpx.BasicAuth(config.email or "", token) if cloud else None
        headers = {"Accept": "application/json"} | ({} if cloud else {"Authorization": f"Bearer {token}"})
        super().__init__(name, config.timeout.total_seconds(), policy, auth=auth, headers=headers)
        self._config, self._token_set, self._cloud = config, bool(token), cloud
        self._api = f"{config.url}/rest/api/{3 if cloud else 2}"

    def deliver(self, delivery: Delivery) -> Delivered:
        self._require_token()
        remote = delivery.remote or self._find(delivery.content.marker)
        if remote is None:
            if delivery.action == "resolve":
                return Delivered(TicketAction.SKIP, note="no issue to resolve")
            return Delivered(TicketAction.CREATE, self._create(delivery.content))
        if delivery.action == "resolve":
            self._comment(remote, f"Resolved by rca-poller: no recurrence since {delivery.content.last_seen}.")
            self._transition(remote, self._config.resolve_transition)
            return Delivered(TicketAction.RESOLVE, remote)
        self._comment(remote, f"Seen again: {delivery.content.occurrences} occurrence(s), last "
                              f"{delivery.content.last_seen}.\n{delivery.content.error[:1000]}")
        return Delivered(TicketAction.UPDATE, remote)

    def check(self) -> str:
        self._require_token()
        me = self.json("GET", f"{self._api}/myself", "read the signed-in user")
        return str(me.get("emailAddress") or me.get("displayName") or me.get("name") or "a Jira user")

    def _require_token(self) -> None:
        if not self._token_set:
            raise SinkError(self.name, f"environment variable {self._config.token_env} is not set — set it to the "
                            "Jira API token (Cloud) or personal access token (Data Center)", retryable=False)

    def _find(self, marker: str) -> RemoteRef | None:
        jql = f'project = "{self._config.project}" AND labels = "{marker}"'
        if self._cloud:
            body = self.json("POST", f"{self._api}/search/jql", "search the marker label",
                             json={"jql": jql, "fields": ["status"], "maxResults": 1})
        else:
            body = self.json("GET", f"{self._api}/search", "search the marker label",
                             params={"jql": jql, "fields": "status", "maxResults": "1"})
        issues = body.get("issues") or []
        return self._ref(issues[0]) if issues else None

    def _create(self, content: TicketContent) -> RemoteRef:
        text = content.text()
        fields = {"project": {"key": self._config.project}, "summary": content.title[:250],
                  "issuetype": {"name": self._config.issue_type}, "labels": [content.marker, "rca-poller"],
                  "description": _adf(text) if self._cloud else text}
        return self._ref(self.json("POST", f"{self._api}/issue", "create the issue", json={"fields": fields}))

    def _comment(self, remote: RemoteRef, text: str) -> None:
        self.json("POST", f"{self._api}/issue/{remote.remote_id}/comment", "comment on the issue",
                  json={"body": _adf(text) if self._cloud else text})

    def _transition(self, remote: RemoteRef, name: str) -> None:
        url = f"{self._api}/issue/{remote.remote_id}/transitions"
        available = self.json("GET", url, "list transitions").get("transitions") or []
        match = [t for t in available if str(t.get("name", "")).lower() == name.lower()]
        if not match:
            names = ", ".join(str(t.get("name")) for t in available) or "none"
            raise SinkError(self.name, f"no transition {name!r} from the issue's status (available: {names}) — "
                            "set resolve_transition", retryable=False)
        self.json("POST", url, "transition the issue", json={"transition": {"id": match[0]["id"]}})

    def _ref(self, issue: dict[str, Any]) -> RemoteRef:
        key = str(issue.get("key") or issue.get("id") or "")
        if not key:
            raise SinkError(self.name, "Jira answered without an issue key", retryable=True)
        return RemoteRef(key, f"{self._config.url}/browse/{key}")


def _adf(text: str) -> dict[str, Any]:
    """Atlassian Document Format (required by REST v3): a paragraph per line."""
    paragraphs = [{"type": "paragraph", "content": [{"type": "text", "text": line}] if line else []}
                  for line in text.split("\n")]
    return {"type": "doc", "version": 1, "content": paragraphs}
