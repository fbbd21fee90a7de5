"""Microsoft Teams through a Workflows webhook: an Adaptive Card 1.4 (later versions are rejected).

A Workflows webhook answers 202 when it accepted the request; the flow may still fail to post the card
(``InvalidBotAdaptiveCard``), so the delivery is recorded as accepted, not as shown.
"""

from __future__ import annotations

from typing import Any

from poller.config import TeamsSinkConfig
from poller.sinks.base import SinkPolicy
from poller.sinks.content import TicketContent
from poller.sinks.webhook import HEADLINE, NotificationSink, url_from_env


class TeamsSink(NotificationSink):
    def __init__(self, name: str, config: TeamsSinkConfig, policy: SinkPolicy) -> None:
        url, missing = url_from_env(config.webhook_url_env)
        super().__init__(name, url, config.timeout.total_seconds(), policy, missing)

    def body(self, action: str, content: TicketContent) -> dict[str, Any]:
        facts = [{"title": k, "value": v} for k, v in (
            ("Severity", content.severity), ("Service", content.service), ("Resource", content.resource),
            ("Run", content.run_id or "-"), ("Occurrences", str(content.occurrences)))]
        body: list[dict[str, Any]] = [
            {"type": "TextBlock", "size": "Large", "weight": "Bolder", "wrap": True,
             "text": f"{HEADLINE[action]}: {content.title}"},
            {"type": "FactSet", "facts": facts},
            {"type": "TextBlock", "wrap": True, "fontType": "Monospace", "text": content.error[:2000]},
        ]
        if content.summary:
            body.append({"type": "TextBlock", "wrap": True,
                         "text": f"**RCA:** {content.summary}\n\n**Cause:** {content.probable_cause}"})
            body += [{"type": "TextBlock", "wrap": True, "text": f"- {a}"} for a in content.actions]
        card = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
                "version": "1.4", "body": body, "msteams": {"width": "full"},
                "actions": [{"type": "Action.OpenUrl", "title": label, "url": url} for label, url in content.links]}
        return {"type": "message", "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}]}

    def accepted(self, status: int, text: str) -> str:
        return "accepted by the workflow (202), not confirmed as shown" if status == 202 else ""
