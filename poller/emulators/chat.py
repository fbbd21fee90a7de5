"""Receivers for the notification sinks: a Slack incoming webhook, a Teams Workflows webhook, a signed webhook.

``POST /slack/{token}`` answers 200 ``ok`` (403 ``invalid_token`` for an unknown token, 400 ``invalid_blocks``
without text or blocks); ``POST /teams/{token}`` answers 202 (accepted, not necessarily shown; 400 for a card
that is not an Adaptive Card ≤ 1.4); ``POST /webhook`` checks the HMAC-SHA256 signature (401 if wrong).
"""

from __future__ import annotations

from typing import Any

from poller.emulators.http_base import Answer, HttpEmulator, LoggedRequest, json_body
from poller.sinks.webhook import verify

SLACK_TOKEN, TEAMS_TOKEN = "T000/B000/emulator-slack-token", "emulator-teams-signature"
WEBHOOK_KEY = "emulator-hmac-key"


class ChatEmulator(HttpEmulator):
    thread_name = "chat-emulator"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.messages: dict[str, list[Any]] = {"slack": [], "teams": [], "webhook": []}
        self.webhook_key = WEBHOOK_KEY.encode()

    @property
    def slack_url(self) -> str:
        return f"{self.url}/slack/{SLACK_TOKEN}"

    @property
    def teams_url(self) -> str:
        return f"{self.url}/teams/{TEAMS_TOKEN}"

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/webhook"

    def route(self, request: LoggedRequest) -> Answer:
        body = json_body(request)
        if request.method != "POST":
            return Answer(405, "method not allowed")
        if request.path.startswith("/slack/"):
            return self._slack(request.path.removeprefix("/slack/"), body)
        if request.path.startswith("/teams/"):
            return self._teams(request.path.removeprefix("/teams/"), body)
        if request.path == "/webhook":
            return self._webhook(request, body)
        return Answer(404, "no_service")

    def _slack(self, token: str, body: Any) -> Answer:
        if token != SLACK_TOKEN:
            return Answer(403, "invalid_token")
        if not isinstance(body, dict) or not (body.get("text") or body.get("blocks")):
            return Answer(400, "invalid_blocks")
        self.messages["slack"].append(body)
        return Answer(200, "ok")

    def _teams(self, token: str, body: Any) -> Answer:
        if token != TEAMS_TOKEN:
            return Answer(401, {"error": {"code": "DirectApiAuthorizationRequired"}})
        cards = [a.get("content", {}) for a in (body or {}).get("attachments", [])] if isinstance(body, dict) else []
        if not cards or any(c.get("type") != "AdaptiveCard" or str(c.get("version")) > "1.4" for c in cards):
            return Answer(400, {"error": {"code": "InvalidRequestContent"}})
        self.messages["teams"].append(body)
        return Answer(202)

    def _webhook(self, request: LoggedRequest, body: Any) -> Answer:
        stamp = request.headers.get("x-rca-poller-timestamp", "")
        signature = request.headers.get("x-rca-poller-signature", "")
        if not verify(self.webhook_key, stamp, request.body.encode(), signature):
            return Answer(401, {"error": "bad signature"})
        self.messages["webhook"].append(body)
        return Answer(200, {"ok": True})
