"""rca-poller: pulls data-platform failures, pins down the exact error, and tracks them."""

from poller.config import Config, load_config
from poller.errors import ConfigError, PollerError, SourceError
from poller.models import Failure
from poller.pipeline import process, tick
from poller.store import Store

__all__ = [
    "Config",
    "ConfigError",
    "Failure",
    "PollerError",
    "SourceError",
    "Store",
    "load_config",
    "process",
    "tick",
]
