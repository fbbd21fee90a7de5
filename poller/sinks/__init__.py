"""External sinks: ticket systems and notification channels, fed by the outbox (``poller.sinks.outbox``).

Adding a sink means one module, one entry in `SINKS`, one config model in ``poller.config`` and the contract
tests in ``tests/sinks``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from poller.sinks.azure_devops import AzureDevOpsSink
from poller.sinks.base import Delivered, Delivery, RemoteRef, Sink, SinkPolicy, TicketAction, is_retryable
from poller.sinks.email import EmailSink
from poller.sinks.jira import JiraSink
from poller.sinks.servicenow import ServiceNowSink
from poller.sinks.slack import SlackSink
from poller.sinks.teams import TeamsSink
from poller.sinks.webhook import WebhookSink

__all__ = ["SINKS", "Delivered", "Delivery", "RemoteRef", "Sink", "SinkPolicy", "TicketAction", "build_sinks",
           "is_retryable"]


SINKS: dict[str, Callable[[str, Any, SinkPolicy], Sink]] = {
    "servicenow": ServiceNowSink, "jira": JiraSink, "azure_devops": AzureDevOpsSink, "slack": SlackSink,
    "teams": TeamsSink, "email": EmailSink, "webhook": WebhookSink,
}


def policy_of(config: Any) -> SinkPolicy:
    return SinkPolicy(min_severity=config.min_severity, services=tuple(config.services),
                      resources=tuple(config.resources), repeat_interval=config.repeat_interval,
                      rate_limit=config.rate_limit)


def build_sinks(config: Any, only: str | None = None) -> list[Sink]:
    """The enabled sinks of a config, built without any network call."""
    return [SINKS[cfg.type](name, cfg, policy_of(cfg)) for name, cfg in config.sinks.items()
            if cfg.enabled and (only is None or name == only)]
