"""Chat and generic webhooks share one shape: POST a JSON body per incident state change to a secret URL.

The generic webhook signs ``{timestamp}.{body}`` with HMAC-SHA256: headers ``X-RCA-Poller-Timestamp`` and
``X-RCA-Poller-Signature: sha256=<hex>``; receivers recompute it and reject old timestamps.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from typing import Any, ClassVar

from poller.config import WebhookSinkConfig, _tls_url
from poller.errors import SinkError
from poller.sinks.base import Delivered, Delivery, HttpSink, SinkPolicy, TicketAction
from poller.sinks.content import TicketContent

ACTION = {"open": TicketAction.CREATE, "update": TicketAction.UPDATE, "resolve": TicketAction.RESOLVE}
HEADLINE = {"open": "New incident", "update": "Incident updated", "resolve": "Incident resolved"}


class NotificationSink(HttpSink):
    """A message per state change to a webhook URL; subclasses shape the body. No marker: at-least-once."""

    kind: ClassVar[str] = "notification"
    url_env: str = ""

    def __init__(self, name: str, url: str, timeout: float, policy: SinkPolicy, missing: str = "") -> None:
        super().__init__(name, timeout, policy, headers={"Content-Type": "application/json"})
        self._url, self._missing = url, missing

    def deliver(self, delivery: Delivery) -> Delivered:
        url = self._target()
        body = json.dumps(self.body(delivery.action, delivery.content)).encode()
        response = self.request("POST", url, "post the message", content=body, headers=self.sign(body))
        return Delivered(ACTION[delivery.action], note=self.accepted(response.status_code, response.text))

    def check(self) -> str:
        # Posting would show a message to people; the check confirms the URL is set and well-formed only.
        self._target()
        return "webhook URL set (not posted to: a check must not notify anyone)"

    def body(self, action: str, content: TicketContent) -> dict[str, Any]:
        raise NotImplementedError

    def sign(self, body: bytes) -> dict[str, str]:
        return {}

    def accepted(self, status: int, text: str) -> str:
        return ""

    def _target(self) -> str:
        if self._missing:
            raise SinkError(self.name, self._missing, retryable=False)
        return self._url


def url_from_env(env: str) -> tuple[str, str]:
    """The webhook URL (a secret) from its variable, or why it cannot be used."""
    url = os.environ.get(env, "")
    if not url:
        return "", f"environment variable {env} is not set — set it to the webhook URL"
    try:
        return str(_tls_url(url)), ""
    except ValueError as exc:
        return "", f"environment variable {env}: {exc}"


class WebhookSink(NotificationSink):
    def __init__(self, name: str, config: WebhookSinkConfig, policy: SinkPolicy) -> None:
        secret = os.environ.get(config.secret_env, "")
        missing = "" if secret else f"environment variable {config.secret_env} is not set — set it to the HMAC key"
        super().__init__(name, config.url, config.timeout.total_seconds(), policy, missing)
        self._key = secret.encode()

    def body(self, action: str, content: TicketContent) -> dict[str, Any]:
        return {"event": f"incident.{action}", "incident": content.to_json()}

    def sign(self, body: bytes) -> dict[str, str]:
        stamp = str(int(time.time()))
        digest = hmac.new(self._key, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        return {"X-RCA-Poller-Timestamp": stamp, "X-RCA-Poller-Signature": f"sha256={digest}"}


def verify(key: bytes, stamp: str, body: bytes, signature: str) -> bool:
    """What a receiver does: recompute the signature and compare in constant time."""
    expected = "sha256=" + hmac.new(key, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)
