"""Slack incoming webhook with Block Kit: header, fields, the error, the RCA, links."""

from __future__ import annotations

from typing import Any

from poller.config import SlackSinkConfig
from poller.sinks.base import SinkPolicy
from poller.sinks.content import TicketContent
from poller.sinks.webhook import HEADLINE, NotificationSink, url_from_env

SECTION_CHARS = 2800  # Slack truncates section text near 3000 characters


class SlackSink(NotificationSink):
    def __init__(self, name: str, config: SlackSinkConfig, policy: SinkPolicy) -> None:
        url, missing = url_from_env(config.webhook_url_env)
        super().__init__(name, url, config.timeout.total_seconds(), policy, missing)

    def body(self, action: str, content: TicketContent) -> dict[str, Any]:
        fields = [f"*Severity:* {content.severity}", f"*Service:* {content.service}",
                  f"*Resource:* {content.resource}", f"*Occurrences:* {content.occurrences}"]
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": f"{HEADLINE[action]}: {content.title}"[:150]}},
            {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
            {"type": "section", "text": {"type": "mrkdwn",
                                         "text": f"*Error* ({content.error_code or 'no code'})\n```{content.error}```"
                                         [:SECTION_CHARS]}},
        ]
        if content.summary:
            actions = "\n".join(f"• {a}" for a in content.actions)
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": (
                f"*RCA:* {content.summary}\n*Cause:* {content.probable_cause}\n{actions}")[:SECTION_CHARS]}})
        context = [f"<{url}|{label}>" for label, url in content.links] + [f"incident {content.incident_id}"]
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]})
        return {"text": f"{HEADLINE[action]}: {content.title}", "blocks": blocks}
