"""Email over SMTP (STARTTLS unless told otherwise): one plain-text + HTML message per state change."""

from __future__ import annotations

import html
import os
import smtplib
import ssl
from collections.abc import Callable
from email.message import EmailMessage
from typing import ClassVar

from poller.config import EmailSinkConfig
from poller.errors import SinkError
from poller.sinks.base import Delivered, Delivery, SinkPolicy, TicketAction
from poller.sinks.webhook import ACTION, HEADLINE

#: SMTP reply codes: 4xx are transient by definition (RFC 5321 §4.2.1); 5xx are permanent.
TRANSIENT_SMTP = range(400, 500)


class EmailSink:
    kind: ClassVar[str] = "notification"

    def __init__(self, name: str, config: EmailSinkConfig, policy: SinkPolicy) -> None:
        self.name, self.policy, self._config = name, policy, config
        self._password = os.environ.get(config.password_env, "")
        self.tls_context = ssl.create_default_context()

    def __repr__(self) -> str:
        return f"EmailSink(name={self.name!r})"

    def deliver(self, delivery: Delivery) -> Delivered:
        content, action = delivery.content, delivery.action
        message = EmailMessage()
        message["Subject"] = f"[rca-poller] {HEADLINE[action]}: {content.title}"[:250]
        message["From"], message["To"] = self._config.sender, ", ".join(self._config.recipients)
        message["X-RCA-Poller-Incident"] = content.marker
        message.set_content(content.text())
        message.add_alternative(f"<html><body><h2>{html.escape(HEADLINE[action])}</h2>"
                                f"<pre>{html.escape(content.text())}</pre></body></html>", subtype="html")
        self._session(lambda smtp: smtp.send_message(message))
        return Delivered(ACTION.get(action, TicketAction.UPDATE))

    def check(self) -> str:
        self._session(lambda smtp: smtp.noop())
        return f"{self._config.username or 'anonymous'} at {self._config.host}:{self._config.port}"

    def close(self) -> None:
        pass

    def _session(self, work: Callable[[smtplib.SMTP], object]) -> None:
        cfg = self._config
        try:
            with smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout.total_seconds()) as smtp:
                if cfg.starttls:
                    smtp.starttls(context=self.tls_context)
                if cfg.username:
                    smtp.login(cfg.username, self._password)
                work(smtp)
        except smtplib.SMTPResponseException as exc:
            hint = " — check the username and the password's environment variable" if exc.smtp_code == 535 else ""
            raise SinkError(self.name, f"SMTP {exc.smtp_code}{hint}",
                            retryable=exc.smtp_code in TRANSIENT_SMTP) from exc
        except smtplib.SMTPRecipientsRefused as exc:
            raise SinkError(self.name, "every recipient was refused", retryable=False) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise SinkError(self.name, f"cannot send through {cfg.host}:{cfg.port} ({type(exc).__name__})",
                            retryable=True) from exc
