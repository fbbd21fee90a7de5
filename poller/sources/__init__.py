"""Sources: one module per source type, chosen by ``type:`` in config (STYLE 4: an explicit registry)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from azure.core.credentials import TokenCredential

from poller.config import Config
from poller.sources.base import Poll, Source, Window
from poller.sources.databricks import DatabricksSource
from poller.sources.log_analytics import LogAnalyticsSource

SourceBuilder = Callable[[str, Any, TokenCredential | None], Source]


def _log_analytics(name: str, config: Any, credential: TokenCredential | None) -> Source:
    assert credential is not None, "a Log Analytics source reads with the Azure credential"
    return LogAnalyticsSource(name, config, credential)


def _databricks(name: str, config: Any, credential: TokenCredential | None) -> Source:
    return DatabricksSource(name, config)  # databricks-sdk's own unified auth, per workspace; no Azure credential


SOURCES: dict[str, SourceBuilder] = {"log_analytics": _log_analytics, "databricks": _databricks}

__all__ = ["SOURCES", "Poll", "Source", "Window", "build_sources"]


def build_sources(config: Config, credential: TokenCredential | None, only: str | None = None) -> list[Source]:
    """Source objects for the enabled sources (or just ``only``); no network call happens here."""
    built: list[Source] = []
    for name, cfg in config.sources.items():
        if (only and name != only) or (not only and not cfg.enabled):
            continue
        built.append(SOURCES[cfg.type](name, cfg, credential))
    return built
