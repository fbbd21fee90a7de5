"""ServiceNow incidents through the Table API: ``correlation_id`` carries the marker and is looked up first.

Create: ``POST /api/now/table/incident``; updates add ``work_notes``; a resolved ticket that recurs is reopened
(state 2, In Progress); resolve sets state 6 with ``close_code`` and ``close_notes``. Basic auth, or OAuth
client credentials (``POST /oauth_token.do``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Generator
from typing import Any, ClassVar

import httpx

from poller.config import ServiceNowSinkConfig
from poller.errors import SinkError
from poller.sinks.base import Delivered, Delivery, HttpSink, RemoteRef, SinkPolicy, TicketAction
from poller.sinks.content import TicketContent

TABLE = "/api/now/table/incident"
FIELDS = "sys_id,number,state"
RESOLVED_STATES = frozenset({"6", "7", "8"})  # Resolved, Closed, Canceled
IMPACT = {"critical": "1", "high": "1", "medium": "2", "low": "3"}
URGENCY = {"critical": "1", "high": "2", "medium": "2", "low": "3"}


class _OAuth(httpx.Auth):
    """Client-credentials token from the instance, fetched once and again shortly before it expires."""

    def __init__(self, token_url: str, client_id: str, secret: str) -> None:
        self._token_url, self._client_id, self._secret = token_url, client_id, secret
        self._token, self._expires = "", 0.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "_OAuth(client_id=…)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        with self._lock:
            if not self._token or time.monotonic() > self._expires:
                response = yield httpx.Request("POST", self._token_url, data={
                    "grant_type": "client_credentials", "client_id": self._client_id, "client_secret": self._secret})
                response.read()
                if response.status_code != 200:
                    yield response.request  # surfaces the token endpoint's status as the answer
                    return
                body = response.json()
                self._token = str(body.get("access_token", ""))
                self._expires = time.monotonic() + float(body.get("expires_in", 1800)) - 60
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request


class ServiceNowSink(HttpSink):
    kind: ClassVar[str] = "ticket"

    def __init__(self, name: str, config: ServiceNowSinkConfig, policy: SinkPolicy) -> None:
        env = config.password_env if config.auth == "basic" else config.client_secret_env
        self._secret_env, secret = env, os.environ.get(env, "")
        auth: httpx.Auth = (httpx.BasicAuth(config.username or "", secret) if config.auth == "basic"
                            else _OAuth(f"{config.instance_url}/oauth_token.do", config.client_id or "", secret))
        super().__init__(name, config.timeout.total_seconds(), policy, auth=auth,
                         headers={"Accept": "application/json"})
        self._config, self._has_secret = config, bool(secret)
        self._base = config.instance_url

    def deliver(self, delivery: Delivery) -> Delivered:
        self._require_secret()
        found = self._find(delivery.content.marker) if delivery.remote is None else None
        remote = delivery.remote or (self._ref(found) if found else None)
        if remote is None:
            if delivery.action == "resolve":
                return Delivered(TicketAction.SKIP, note="no ticket to resolve")
            return Delivered(TicketAction.CREATE, self._create(delivery.content))
        if delivery.action == "resolve":
            self._patch(remote, {"state": "6", "close_code": self._config.close_code,
                                 "close_notes": _resolution(delivery.content)})
            return Delivered(TicketAction.RESOLVE, remote)
        state = str((found or self._get(remote)).get("state", ""))
        fields = {"work_notes": _note(delivery.content)}
        if state in RESOLVED_STATES:
            self._patch(remote, {**fields, "state": "2"})
            return Delivered(TicketAction.REOPEN, remote)
        self._patch(remote, fields)
        return Delivered(TicketAction.UPDATE, remote)

    def check(self) -> str:
        self._require_secret()
        self.json("GET", f"{self._base}{TABLE}", "read incidents", params={"sysparm_limit": "1",
                                                                            "sysparm_fields": "sys_id"})
        who = self._config.username if self._config.auth == "basic" else f"OAuth client {self._config.client_id}"
        return f"{who} at {self._base}"

    def _require_secret(self) -> None:
        if not self._has_secret:
            raise SinkError(self.name, f"environment variable {self._secret_env} is not set — set it to the "
                            "ServiceNow password or client secret", retryable=False)

    def _find(self, marker: str) -> dict[str, Any] | None:
        body = self.json("GET", f"{self._base}{TABLE}", "look up the marker", params={
            "sysparm_query": f"correlation_id={marker}", "sysparm_fields": FIELDS, "sysparm_limit": "1"})
        rows = body.get("result") or []
        return dict(rows[0]) if rows else None

    def _get(self, remote: RemoteRef) -> dict[str, Any]:
        body = self.json("GET", f"{self._base}{TABLE}/{remote.remote_id}", "read the incident",
                         params={"sysparm_fields": FIELDS})
        return dict(body.get("result") or {})

    def _create(self, content: TicketContent) -> RemoteRef:
        fields = {"short_description": content.title[:160], "description": content.text(),
                  "correlation_id": content.marker, "correlation_display": "rca-poller",
                  "impact": IMPACT[content.severity], "urgency": URGENCY[content.severity]}
        fields |= {k: v for k, v in (("assignment_group", self._config.assignment_group),
                                     ("caller_id", self._config.caller_id)) if v}
        body = self.json("POST", f"{self._base}{TABLE}", "create the incident", json=fields)
        return self._ref(dict(body.get("result") or {}))

    def _patch(self, remote: RemoteRef, fields: dict[str, str]) -> None:
        self.json("PATCH", f"{self._base}{TABLE}/{remote.remote_id}", "update the incident", json=fields)

    def _ref(self, row: dict[str, Any]) -> RemoteRef:
        sys_id = str(row.get("sys_id", ""))
        if not sys_id:
            raise SinkError(self.name, "the instance answered without a sys_id", retryable=True)
        return RemoteRef(sys_id, f"{self._base}/nav_to.do?uri=incident.do?sys_id={sys_id}")


def _note(content: TicketContent) -> str:
    return (f"Seen again: {content.occurrences} occurrence(s), last {content.last_seen}.\n"
            f"Latest error ({content.error_code or 'no code'}): {content.error[:1000]}\n"
            + (f"RCA: {content.summary}" if content.summary else ""))


def _resolution(content: TicketContent) -> str:
    return (f"No recurrence since {content.last_seen}; rca-poller resolved incident {content.incident_id} after "
            f"{content.occurrences} occurrence(s). Cause: {content.probable_cause or 'see description'}")
