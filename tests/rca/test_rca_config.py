"""The ``rca`` config section: defaults, the example file, and an exact message naming the key for each bad value."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from poller.config import RcaConfig, parse_config
from poller.errors import ConfigError
from poller.rca import EvidenceLimits

ROOT = Path(__file__).resolve().parents[2]
AZURE = {"provider": "azure_openai", "azure_endpoint": "https://contoso.openai.azure.com",
         "azure_deployment": "gpt-4o-mini"}


def test_defaults_are_the_offline_rules_provider() -> None:
    config = RcaConfig()
    assert config.provider == "rules" and config.api_key_env == "OPENAI_API_KEY"
    assert config.timeout == timedelta(seconds=60) and config.max_retries == 2
    assert config.daily_token_budget == 200_000 and config.cache_ttl == timedelta(days=7)
    assert EvidenceLimits(**config.evidence.model_dump()) == EvidenceLimits()


def test_the_key_variable_defaults_by_provider() -> None:
    assert parse_config({"rca": {"provider": "openai"}}).rca.api_key_env == "OPENAI_API_KEY"
    assert parse_config({"rca": AZURE}).rca.api_key_env == "AZURE_OPENAI_API_KEY"
    assert parse_config({"rca": {**AZURE, "api_key_env": "MY_KEY"}}).rca.api_key_env == "MY_KEY"


def test_the_example_config_documents_every_rca_key() -> None:
    text = (ROOT / "config.yaml").read_text(encoding="utf-8")
    assert text == (ROOT / "poller" / "config.example.yaml").read_text(encoding="utf-8")
    config = parse_config(yaml.safe_load(text), {"LA_WORKSPACE_ID": "ws"})
    assert config.rca == RcaConfig()  # the example shows the defaults
    documented = set(yaml.safe_load(text)["rca"]) | {
        line.strip().lstrip("#").split(":")[0].strip() for line in text.split("\nrca:", 1)[1].split("\n\n", 1)[0]
        .splitlines() if line.strip().startswith("#")}
    assert set(RcaConfig.model_fields) <= documented


def test_local_http_servers_and_durations_are_accepted() -> None:
    config = parse_config({"rca": {"provider": "openai", "base_url": "http://localhost:11434/v1/", "timeout": "90s",
                                   "cache_ttl": "1d", "evidence": {"max_item_chars": 1000}}}).rca
    assert config.base_url == "http://localhost:11434/v1" and config.timeout == timedelta(seconds=90)
    assert config.cache_ttl == timedelta(days=1) and config.evidence.max_item_chars == 1000


@pytest.mark.parametrize(
    ("rca", "message"),
    [
        ({"provider": "gemini"}, "rca.provider: Input should be 'rules', 'openai' or 'azure_openai'"),
        ({"provder": "openai"}, "rca.provder: unknown key"),
        ({"provider": "azure_openai", "azure_deployment": "d"},
         "rca.azure_endpoint: required when provider is azure_openai"),
        ({"provider": "azure_openai", "azure_endpoint": "https://x.openai.azure.com"},
         "rca.azure_deployment: required when provider is azure_openai"),
        ({**AZURE, "azure_endpoint": "http://contoso.openai.azure.com"},
         "rca.azure_endpoint: must be an https:// URL (TLS is always verified; http:// only for localhost)"),
        ({**AZURE, "base_url": "https://api.openai.com/v1"},
         "rca.base_url: only for provider openai (azure_openai uses azure_endpoint)"),
        ({"provider": "openai", "azure_deployment": "d"}, "rca.azure_deployment: only for provider azure_openai"),
        ({"provider": "openai", "base_url": "http://llm.contoso.com/v1"},
         "rca.base_url: must be an https:// URL (TLS is always verified; http:// only for localhost)"),
        ({"provider": "openai", "api_key_env": "sk-proj-abc123"},
         "rca.api_key_env: must name an environment variable that holds the key, not the key itself"),
        ({**AZURE, "azure_auth": "msi"}, "rca.azure_auth: Input should be 'key' or 'entra'"),
        ({"timeout": "0s"}, "rca.timeout: must be more than 0s and at most 10m"),
        ({"timeout": "1h"}, "rca.timeout: must be more than 0s and at most 10m"),
        ({"timeout": "soon"}, "rca.timeout: expected a duration such as 60s, 20m, 24h or 7d, got 'soon'"),
        ({"max_retries": -1}, "rca.max_retries: Input should be greater than or equal to 0"),
        ({"daily_token_budget": -5}, "rca.daily_token_budget: Input should be greater than or equal to 0"),
        ({"price_per_1k_prompt_tokens": -0.1},
         "rca.price_per_1k_prompt_tokens: Input should be greater than or equal to 0"),
        ({"model": ""}, "rca.model: String should have at least 1 character"),
        ({"evidence": {"max_item_chars": 50}},
         "rca.evidence.max_item_chars: Input should be greater than or equal to 200"),
        ({"evidence": {"occurences": 3}}, "rca.evidence.occurences: unknown key"),
        ({"cache_ttl": "forever"}, "rca.cache_ttl: expected a duration such as 60s, 20m, 24h or 7d, got 'forever'"),
    ],
)
def test_bad_rca_config_names_the_key(rca: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"rca": rca})
    assert str(caught.value).split(" (and ")[0] == message
