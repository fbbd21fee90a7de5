"""``rca``: which provider explains incidents, how it is reached, and how much evidence it is shown."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from poller.config.base import _ENV_NAME, _Model, _tls_url
from poller.durations import Duration

RCA_DEFAULT_KEY_ENV = {"openai": "OPENAI_API_KEY", "azure_openai": "AZURE_OPENAI_API_KEY"}


class RcaEvidenceConfig(_Model):
    """How much of an incident is shown to the model: every item is cut to `max_item_chars`."""

    max_item_chars: int = Field(default=4000, ge=200, le=100_000)
    occurrences: int = Field(default=5, ge=0, le=50)
    past_incidents: int = Field(default=3, ge=0, le=20)


class RcaConfig(_Model):
    """``rca``: which provider explains incidents; the rules knowledge base is always the fallback."""

    provider: Literal["rules", "openai", "azure_openai"] = "rules"
    model: str = Field(default="gpt-4o-mini", min_length=1)
    base_url: str | None = None
    api_key_env: str | None = None
    azure_endpoint: str | None = Field(default=None, validate_default=True)
    azure_deployment: str | None = Field(default=None, validate_default=True)
    api_version: str = Field(default="2024-10-21", min_length=1)
    azure_auth: Literal["key", "entra"] = "key"
    timeout: Duration = timedelta(seconds=60)
    max_retries: int = Field(default=2, ge=0, le=10)
    max_output_tokens: int = Field(default=1000, ge=100, le=32_000)
    daily_token_budget: int = Field(default=200_000, ge=0)
    price_per_1k_prompt_tokens: float = Field(default=0.0, ge=0)
    price_per_1k_completion_tokens: float = Field(default=0.0, ge=0)
    cache_ttl: Duration = timedelta(days=7)
    evidence: RcaEvidenceConfig = RcaEvidenceConfig()

    @model_validator(mode="before")
    @classmethod
    def _default_key_env(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("api_key_env") is None:
            data = {**data, "api_key_env": RCA_DEFAULT_KEY_ENV.get(data.get("provider", ""), "OPENAI_API_KEY")}
        return data

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, name: str | None) -> str | None:
        if name is not None and not _ENV_NAME.match(name):
            raise ValueError("must name an environment variable that holds the key, not the key itself")
        return name

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, url: str | None, info: ValidationInfo) -> str | None:
        if url is not None and info.data.get("provider") == "azure_openai":
            raise ValueError("only for provider openai (azure_openai uses azure_endpoint)")
        return _tls_url(url)

    @field_validator("azure_endpoint", "azure_deployment")
    @classmethod
    def _azure_only(cls, value: str | None, info: ValidationInfo) -> str | None:
        provider = info.data.get("provider")
        if provider == "azure_openai" and not value:
            raise ValueError("required when provider is azure_openai")
        if provider == "openai" and value:
            raise ValueError("only for provider azure_openai")
        return _tls_url(value) if info.field_name == "azure_endpoint" else value

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, timeout: timedelta) -> timedelta:
        if not timedelta(0) < timeout <= timedelta(minutes=10):
            raise ValueError("must be more than 0s and at most 10m")
        return timeout
