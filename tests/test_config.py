"""Config loading: interpolation, defaults, and an exact one-line message naming the key for each bad config."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from poller.config import load_config, parse_config
from poller.durations import parse_duration
from poller.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
LA = {"type": "log_analytics", "workspace_id": "ws"}


def test_example_config_loads_and_matches_packaged_copy() -> None:
    assert (ROOT / "config.yaml").read_text() == (ROOT / "poller" / "config.example.yaml").read_text()
    config = parse_config(yaml.safe_load((ROOT / "config.yaml").read_text()), {"LA_WORKSPACE_ID": "abc"})
    source = config.sources["adf-prod"]
    assert source.workspace_id == "abc"
    assert source.overlap == timedelta(minutes=20)
    assert source.initial_lookback == timedelta(hours=24)
    assert config.state.url == "sqlite:///./rca-poller.db"


def test_a_dumped_config_loads_back_the_same() -> None:
    """`model_dump_json` writes durations as ISO 8601 (P1D, PT20M); every duration key must read them back."""
    config = parse_config(yaml.safe_load((ROOT / "config.yaml").read_text()), {"LA_WORKSPACE_ID": "abc"})
    assert parse_config(yaml.safe_load(config.model_dump_json())) == config


def test_interpolation_with_default_and_value() -> None:
    data = {"state": {"url": "sqlite:///${DIR:-/var/lib/rca}/s.db"}, "sources": {"a": {**LA, "workspace_id": "${WS}"}}}
    config = parse_config(data, {"WS": "w-1"})
    assert config.state.url == "sqlite:////var/lib/rca/s.db"
    assert config.sources["a"].workspace_id == "w-1"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"sources": {"a": {"type": "log_analytics"}}}, "sources.a.workspace_id: required key is missing"),
        ({"sources": {"a": {**LA, "intervall": "5s"}}}, "sources.a.intervall: unknown key"),
        ({"statee": {}}, "statee: unknown key"),
        (
            {"sources": {"a": {"type": "hdinsight"}}},
            "sources.a: unknown source type 'hdinsight' (known: log_analytics, databricks)",
        ),
        (
            {"sources": {"a": {"workspace_id": "x"}}},
            "sources.a: each source needs a 'type' (known: log_analytics, databricks)",
        ),
        (
            {"sources": {"a": {**LA, "interval": "soon"}}},
            "sources.a.interval: expected a duration such as 60s, 20m, 24h or 7d, got 'soon'",
        ),
        (
            {"sources": {"a": {**LA, "endpoint": "http://la.local"}}},
            "sources.a.endpoint: must be an https:// URL (TLS is always verified)",
        ),
        (
            {"sources": {"a": {**LA, "workspace_id": "${NOPE}"}}},
            "sources.a.workspace_id: environment variable NOPE is not set (use ${NOPE:-default} for a default)",
        ),
        ({"sources": {"a": {**LA, "settle": "30m"}}}, "sources.a: settle must not be longer than overlap"),
        ({"sources": {"a b": LA}}, "sources: source name 'a b' may hold only letters, digits, '.', '_' and '-'"),
        (
            {"azure": {"credential": "password"}},
            "azure.credential: Input should be 'default', 'cli', 'managed_identity', 'environment' or "
            "'access_token_env'",
        ),
        ({"state": {"url": "mysql://x"}}, "state.url: expected sqlite:///PATH or postgresql+psycopg://…"),
        ([1, 2], "the config file must hold a mapping of sections (state, azure, sources, …)"),
    ],
)
def test_bad_config_names_the_key(data: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data, {})
    assert str(info.value) == message
    assert "\n" not in str(info.value)


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config file .*missing.yaml"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources:\n  a: [unclosed\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML at line \d+, column \d+"):
        load_config(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90", 90), (90, 90), ("20m", 1200), ("24h", 86400), ("7d", 604800), ("1.5s", 1.5), ("500ms", 0.5)],
)
def test_durations(text: object, expected: float) -> None:
    assert parse_duration(text).total_seconds() == expected
