"""The sink protocol, the actions a sink performs, and the one classifier of HTTP answers into SinkError.

A sink is given one `Delivery` (an incident's state change: open, update or resolve, with its content and the
remote ticket recorded so far, if any) and answers with what it did (`Delivered`). Ticket sinks look up their
marker before creating, so a delivery repeated after a crash updates the ticket it already made.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any, ClassVar, Protocol
from urllib.parse import urlsplit

import httpx

from poller.errors import SinkError
from poller.rca.redact import redact_text
from poller.sinks.content import SEVERITIES, TicketContent

log = logging.getLogger("poller.sinks")

#: Statuses worth retrying: the request may succeed later as it is (throttled, server trouble, timeouts).
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Bodies that mark a 403 as throttling rather than a refusal (some APIs answer rate limits with 403).
_THROTTLE_WORDS = ("rate limit", "ratelimit", "throttl", "too many requests")


class TicketAction(StrEnum):
    """What a sink did with a delivery; every sink log line carries one."""

    CREATE = "create"
    UPDATE = "update"
    REOPEN = "reopen"
    RESOLVE = "resolve"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class RemoteRef:
    """A ticket in a remote system: its id and a link people can open."""

    remote_id: str
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """One outbox row handed to a sink: ``action`` is the incident's change (open | update | resolve)."""

    action: str
    content: TicketContent
    remote: RemoteRef | None = None


@dataclass(frozen=True, slots=True)
class Delivered:
    """What the sink did; ``remote`` is the ticket it created or touched (None for notifications)."""

    action: TicketAction
    remote: RemoteRef | None = None
    note: str = ""


@dataclass(frozen=True, slots=True)
class SinkPolicy:
    """Which incidents a sink hears about, and how often: filters, repeat interval, rate limit."""

    min_severity: str = "low"
    services: tuple[str, ...] = ()
    resources: tuple[str, ...] = field(default=())  # glob patterns
    repeat_interval: timedelta = timedelta(hours=4)
    rate_limit: int = 0  # deliveries per minute; 0 = unlimited

    def accepts(self, content: TicketContent) -> bool:
        if SEVERITIES.index(content.severity) < SEVERITIES.index(self.min_severity):
            return False
        if self.services and content.service not in self.services:
            return False
        return not self.resources or any(fnmatch.fnmatchcase(content.resource, p) for p in self.resources)


class Sink(Protocol):
    """A ticket system or a notification channel."""

    name: str
    policy: SinkPolicy
    kind: ClassVar[str]  # "ticket" (a remote record with a marker) | "notification" (a message)

    def deliver(self, delivery: Delivery) -> Delivered: ...

    def check(self) -> str: ...

    def close(self) -> None: ...


def is_retryable(status: int, body: str = "") -> bool:
    """The one decision: may this HTTP answer succeed if sent again unchanged?"""
    if status in RETRYABLE_STATUSES or status >= 500:
        return True
    return status == 403 and any(word in body.lower() for word in _THROTTLE_WORDS)


def status_error(sink: str, what: str, status: int, body: str) -> SinkError:
    """An HTTP error answer as a SinkError: the status, a redacted clip of the body, and what to fix."""
    hint = _HINTS.get(status, "")
    detail = redact_text(" ".join(body.split()))[:300]
    message = f"{what}: HTTP {status}" + (f" {detail}" if detail else "") + (f" — {hint}" if hint else "")
    return SinkError(sink, message, retryable=is_retryable(status, body))


_HINTS = {
    400: "the sink refused the payload; check the sink's field settings (project, type, close code)",
    401: "the credential was refused; check the user and the secret's environment variable",
    403: "the account lacks permission for this call; grant it the role the sink's README section names",
    404: "check the instance URL, project or webhook address",
}


class HttpSink:
    """Shared HTTP plumbing: one httpx client, network errors and error statuses mapped once to SinkError."""

    name: str
    kind: ClassVar[str] = "ticket"

    def __init__(self, name: str, timeout: float, policy: SinkPolicy, auth: httpx.Auth | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.name = name
        self.policy = policy
        self._client = httpx.Client(timeout=timeout, auth=auth, headers=headers or {}, follow_redirects=False)

    def __repr__(self) -> str:  # never the URL (webhook URLs are secrets) nor the credential
        return f"{type(self).__name__}(name={self.name!r})"

    def close(self) -> None:
        self._client.close()

    def request(self, method: str, url: str, what: str, **kwargs: Any) -> httpx.Response:
        """Send; a network error or an error status becomes a SinkError that names neither URL path nor secret."""
        try:
            response = self._client.request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            raise SinkError(self.name, f"{what}: timed out talking to {_host(url)}", retryable=True) from exc
        except httpx.HTTPError as exc:
            raise SinkError(self.name, f"{what}: cannot reach {_host(url)} ({type(exc).__name__})",
                            retryable=True) from exc
        if response.status_code >= 400 or (300 <= response.status_code < 400):
            raise status_error(self.name, what, response.status_code, response.text)
        return response

    def json(self, method: str, url: str, what: str, **kwargs: Any) -> Any:
        response = self.request(method, url, what, **kwargs)
        if not response.content:
            return {}
        try:
            return response.json()
        except ValueError as exc:
            raise SinkError(self.name, f"{what}: the answer is not JSON (HTTP {response.status_code})",
                            retryable=True) from exc


class _UrlPathFilter(logging.Filter):
    """httpx logs every request's full URL at INFO; a webhook URL's path is its secret, so only the origin stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_origin(a) if isinstance(a, httpx.URL) else a for a in record.args)
        return True


def _origin(url: httpx.URL) -> str:
    return f"{url.scheme}://{url.netloc.decode()}/…"


logging.getLogger("httpx").addFilter(_UrlPathFilter())


def _host(url: str) -> str:
    return urlsplit(url).hostname or "the server"
