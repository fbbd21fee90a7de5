"""Sources: one module per source type, chosen by ``type:`` in config (STYLE 4: an explicit registry)."""

from __future__ import annotations

from azure.core.credentials import TokenCredential

from poller.config import Config
from poller.sources.base import Poll, Source, Window
from poller.sources.log_analytics import LogAnalyticsSource

SOURCES = {"log_analytics": LogAnalyticsSource}

__all__ = ["SOURCES", "Poll", "Source", "Window", "build_sources"]


def build_sources(config: Config, credential: TokenCredential | None, only: str | None = None) -> list[Source]:
    """Source objects for the enabled sources (or just ``only``); no network call happens here."""
    built: list[Source] = []
    for name, cfg in config.sources.items():
        if (only and name != only) or (not only and not cfg.enabled):
            continue
        assert credential is not None
        built.append(SOURCES[cfg.type](name, cfg, credential))
    return built
