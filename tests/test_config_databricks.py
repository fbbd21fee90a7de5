"""The databricks source's config: defaults, the host and auth rules, and an exact message for each bad config."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from poller.cli import main
from poller.config import DatabricksSourceConfig, parse_config
from poller.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
DBX = {"type": "databricks", "host": "https://adb-1234567890123456.7.azuredatabricks.net"}


def source(**settings: Any) -> DatabricksSourceConfig:
    config = parse_config({"sources": {"d": {**DBX, **settings}}}, {})
    found = config.sources["d"]
    assert isinstance(found, DatabricksSourceConfig)
    return found


def test_defaults() -> None:
    cfg = source()
    assert cfg.watch == ["jobs", "clusters", "libraries"]
    assert (cfg.interval, cfg.overlap, cfg.max_run_duration) == (
        timedelta(seconds=120), timedelta(minutes=10), timedelta(hours=24))
    assert (cfg.requests_per_second, cfg.max_retries, cfg.retry_timeout) == (10.0, 3, timedelta(seconds=60))
    assert cfg.cluster_interval == timedelta(minutes=5)
    assert (cfg.effective_auth_type, cfg.token_env) == ("pat", "DATABRICKS_TOKEN")


@pytest.mark.parametrize(("host", "expected"), [
    ("adb-1.7.azuredatabricks.net", "https://adb-1.7.azuredatabricks.net"),  # as the SDK, https:// for a bare name
    ("https://dbc-a1b2c3.cloud.databricks.com/", "https://dbc-a1b2c3.cloud.databricks.com"),
    ("http://127.0.0.1:8765", "http://127.0.0.1:8765"),  # a local emulator
    ("http://localhost:8765", "http://localhost:8765"),
])
def test_host_is_normalised(host: str, expected: str) -> None:
    assert source(host=host).host == expected


def test_a_profile_may_name_the_workspace_and_brings_its_own_auth() -> None:
    config = parse_config({"sources": {"d": {"type": "databricks", "profile": "prod"}}}, {})
    cfg = config.sources["d"]
    assert isinstance(cfg, DatabricksSourceConfig)
    assert cfg.host is None and cfg.effective_auth_type == "default"
    assert source(profile="prod", auth_type="azure-cli").effective_auth_type == "azure-cli"


def test_a_longer_interval_with_the_default_cluster_interval_sweeps_every_tick() -> None:
    # The 5m default is not checked against interval (pydantic leaves defaults alone): the source then sweeps
    # every tick, as cluster_interval = interval does.
    assert source(interval="10m").cluster_interval == timedelta(minutes=5)
    assert source(interval="10m", cluster_interval="10m").cluster_interval == timedelta(minutes=10)


def test_the_example_config_documents_a_databricks_source() -> None:
    config = parse_config(yaml.safe_load((ROOT / "config.yaml").read_text()), {"LA_WORKSPACE_ID": "abc"})
    example = config.sources["dbx-prod"]
    assert isinstance(example, DatabricksSourceConfig)
    documented = set((ROOT / "config.yaml").read_text().split("dbx-prod:")[1].split("\n\n")[0].replace("#", " ")
                     .split())
    missing = [name for name in DatabricksSourceConfig.model_fields if f"{name}:" not in documented]
    assert missing == []


@pytest.mark.parametrize(("settings", "message"), [
    ({"host": None}, "sources.d: host is required (or a profile that names the workspace)"),
    ({"host": "http://adb-1.7.azuredatabricks.net"},
     "sources.d.host: must be the workspace URL, https://… (TLS is always verified; http:// only for localhost)"),
    ({"host": "https://adb-1.7.azuredatabricks.net/?o=1#job/5"},
     "sources.d.host: must be the workspace URL alone, such as https://adb-1.7.azuredatabricks.net"),
    ({"token": "dapi0123456789abcdef"}, "sources.d.token: unknown key"),
    ({"token_env": "dapi0123456789abcdef"},
     "sources.d.token_env: must name the environment variable that holds the secret, not the secret itself"),
    ({"azure_client_secret_env": "s3cr3t~value"},
     "sources.d.azure_client_secret_env: must name the environment variable that holds the secret, not the "
     "secret itself"),
    ({"auth_type": "azure-msi"},
     "sources.d.auth_type: unknown auth_type 'azure-msi' (known: pat, default, oauth-m2m, azure-client-secret, "
     "azure-cli, github-oidc-azure, databricks-cli, github-oidc, azure-devops-oidc, env-oidc, file-oidc, "
     "metadata-service, google-credentials, google-id)"),
    ({"watch": ["jobs", "pools"]}, "sources.d.watch.1: Input should be 'jobs', 'clusters' or 'libraries'"),
    ({"watch": []}, "sources.d.watch: List should have at least 1 item after validation, not 0"),
    ({"watch": ["jobs", "jobs"]}, "sources.d.watch: lists an item twice"),
    ({"requests_per_second": 0}, "sources.d.requests_per_second: Input should be greater than 0"),
    ({"retry_timeout": "500ms"},
     "sources.d.retry_timeout: must be at least 1s (the SDK counts its retry budget in whole seconds)"),
    ({"http_timeout": 0}, "sources.d.http_timeout: must be longer than 0s"),
    ({"cluster_interval": "60s"},
     "sources.d.cluster_interval: must not be shorter than interval (120s): the sweep runs at most once a tick"),
    ({"interval": "10m", "cluster_interval": "5m"},
     "sources.d.cluster_interval: must not be shorter than interval (600s): the sweep runs at most once a tick"),
    ({"max_run_duration": "a day"},
     "sources.d.max_run_duration: expected a duration such as 60s, 20m, 24h or 7d, got 'a day'"),
    ({"workspace_id": "x"}, "sources.d.workspace_id: unknown key"),
])
def test_bad_databricks_config_names_the_key(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"sources": {"d": {k: v for k, v in {**DBX, **settings}.items() if v is not None}}}, {})
    assert str(info.value) == message


def test_a_cluster_interval_shorter_than_interval_exits_2_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"state": {"url": f"sqlite:///{tmp_path}/s.db"},
                                    "sources": {"d": {**DBX, "interval": "5m", "cluster_interval": "2m"}}}))
    result = CliRunner().invoke(main, ["once", "--config", str(path)])
    assert result.exit_code == 2
    assert "sources.d.cluster_interval: must not be shorter than interval (300s)" in result.output


@pytest.mark.parametrize(("data", "message"), [
    ({"sources": {"a": {"type": "hdinsight"}}}, "sources.a: unknown source type 'hdinsight' (known: log_analytics, "
                                                "databricks)"),
    ({"sources": {"a": {"host": "x"}}}, "sources.a: each source needs a 'type' (known: log_analytics, databricks)"),
])
def test_source_type_errors_name_databricks(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data, {})
    assert str(info.value) == message
