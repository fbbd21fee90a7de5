"""The one error tree of rca-poller.

    PollerError
    ├── ConfigError          bad or missing configuration (CLI exit 2); carries the key path
    ├── SourceError          a source could not be read this tick (cursor stays); .retryable
    │   └── ThrottledError   the service asked us to slow down; .retry_after seconds
    ├── ExtractError         a record could not be read; the record is quarantined, the tick goes on
    ├── StoreError           the state store refused a write
    ├── SinkError            a ticket/notification could not be delivered; .retryable
    └── RcaError             root-cause analysis failed; the rules provider answers instead

SDK and HTTP exceptions are translated once, where the client is called, with ``raise ... from exc``.
"""

from __future__ import annotations


class PollerError(Exception):
    """Base of every error rca-poller raises on purpose."""


class ConfigError(PollerError):
    """The configuration is invalid; ``path`` names the key (``sources.adf-prod.interval``)."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path else problem)


class SourceError(PollerError):
    """A source failed this tick; nothing was committed and the cursor did not move."""

    def __init__(self, source: str, message: str, *, retryable: bool = True) -> None:
        self.source = source
        self.retryable = retryable
        super().__init__(f"source {source!r}: {message}")


class ThrottledError(SourceError):
    """The service throttled us (HTTP 429) beyond what our own backoff could absorb."""

    def __init__(self, source: str, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(source, message, retryable=True)


class ExtractError(PollerError):
    """A raw record could not be turned into a failure; the reason is stored with the quarantined record."""


class StoreError(PollerError):
    """The state store could not be opened or written."""


class SinkError(PollerError):
    """A sink could not deliver; ``retryable`` decides between the outbox retry and a recorded permanent error."""

    def __init__(self, sink: str, message: str, *, retryable: bool) -> None:
        self.sink = sink
        self.retryable = retryable
        super().__init__(f"sink {sink!r}: {message}")


class RcaError(PollerError):
    """The RCA provider failed; callers fall back to the rules provider and record why."""
