"""Configuration: pydantic models of config.yaml, ``${VAR}`` interpolation, errors that name the key path."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from poller.errors import ConfigError

DEFAULT_CONFIG_PATH = "config.yaml"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def parse_duration(value: Any) -> timedelta:
    """``90``, ``"90s"``, ``"20m"``, ``"24h"``, ``"7d"`` → timedelta (a bare number means seconds)."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 60s, 20m, 24h or 7d, got {value!r}")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"expected a duration such as 60s, 20m, 24h or 7d, got {value!r}")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2) or "s"])


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StateConfig(_Model):
    url: str = "sqlite:///./rca-poller.db"

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        if not url.startswith(("sqlite:///", "postgresql")):
            raise ValueError("expected sqlite:///PATH or postgresql+psycopg://…")
        return url


class AzureConfig(_Model):
    credential: Literal["default", "cli", "managed_identity", "environment", "access_token_env"] = "default"
    access_token_env: str = "AZURE_ACCESS_TOKEN"
    managed_identity_client_id: str | None = None
    tenant_id: str | None = None


class LogAnalyticsSourceConfig(_Model):
    type: Literal["log_analytics"]
    workspace_id: str = Field(min_length=1)
    endpoint: str = "https://api.loganalytics.io"
    audience: str | None = None
    services: list[Literal["adf"]] = Field(default_factory=lambda: ["adf"], min_length=1)  # type: ignore[arg-type]
    interval: Duration = timedelta(seconds=60)
    overlap: Duration = timedelta(minutes=20)
    initial_lookback: Duration = timedelta(hours=24)
    settle: Duration = timedelta(minutes=15)
    query_timeout: Duration = timedelta(minutes=3)
    max_rows: int = Field(default=500_000, ge=1)
    min_split: Duration = timedelta(minutes=1)
    max_retries: int = Field(default=5, ge=0)
    enabled: bool = True

    @field_validator("endpoint")
    @classmethod
    def _https_only(cls, endpoint: str) -> str:
        if not endpoint.startswith("https://"):
            raise ValueError("must be an https:// URL (TLS is always verified)")
        return endpoint.rstrip("/")

    @model_validator(mode="after")
    def _settle_within_overlap(self) -> LogAnalyticsSourceConfig:
        if self.settle > self.overlap:
            raise ValueError("settle must not be longer than overlap")
        return self


SourceConfig = Annotated[LogAnalyticsSourceConfig, Field(discriminator="type")]


class RcaConfig(_Model):
    provider: Literal["rules"] = "rules"


class RemediationConfig(_Model):
    enabled: bool = False
    dry_run: bool = True
    policies: list[dict[str, Any]] = Field(default_factory=list)


class LoggingConfig(_Model):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class Config(_Model):
    state: StateConfig = StateConfig()
    azure: AzureConfig = AzureConfig()
    sources: dict[str, SourceConfig] = Field(default_factory=dict)
    rca: RcaConfig = RcaConfig()
    sinks: dict[str, dict[str, Any]] = Field(default_factory=dict)
    remediation: RemediationConfig = RemediationConfig()
    logging: LoggingConfig = LoggingConfig()

    @field_validator("sources")
    @classmethod
    def _source_names(cls, sources: dict[str, Any]) -> dict[str, Any]:
        for name in sources:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
                raise ValueError(f"source name {name!r} may hold only letters, digits, '.', '_' and '-'")
        return sources

    @field_validator("sinks")
    @classmethod
    def _no_sinks_yet(cls, sinks: dict[str, Any]) -> dict[str, Any]:
        # Only the local ticket table exists so far; refuse rather than silently drop a configured sink.
        for name in sinks:
            raise ValueError(f"sink {name!r}: external sinks are not available in this version (local tickets only)")
        return sinks


def load_config(path: str | Path, environ: dict[str, str] | None = None) -> Config:
    """Read, interpolate and validate a config file; every problem is a ConfigError naming the key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read config file {path}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError("", f"{path} is not valid YAML{where}") from exc
    return parse_config(data if data is not None else {}, environ)


def parse_config(data: Any, environ: dict[str, str] | None = None) -> Config:
    if not isinstance(data, dict):
        raise ConfigError("", "the config file must hold a mapping of sections (state, azure, sources, …)")
    data = interpolate(data, os.environ if environ is None else environ)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc) from None


def interpolate(value: Any, environ: Any, path: str = "") -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of the tree; an unset VAR names its key."""
    if isinstance(value, dict):
        return {k: interpolate(v, environ, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, environ, f"{path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return str(environ[name])
        if default is not None:
            return default
        raise ConfigError(path, f"environment variable {name} is not set (use ${{{name}:-default}} for a default)")

    return _ENV_REF.sub(substitute, value)


def _first_error(exc: ValidationError) -> ConfigError:
    errors = exc.errors()
    first = errors[0]
    loc = [str(part) for part in first["loc"]]
    # A discriminated union adds the tag ('log_analytics') to the location; it is not a key the user wrote.
    if len(loc) >= 3 and loc[0] == "sources" and loc[2] in ("log_analytics",):
        del loc[2]
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] == "missing":
        message = "required key is missing"
    elif first["type"] == "union_tag_invalid":
        tag = first.get("ctx", {}).get("tag")
        message = f"unknown source type {tag!r} (known: log_analytics)"
    elif first["type"] == "union_tag_not_found":
        message = "each source needs a 'type' (known: log_analytics)"
    elif message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return ConfigError(".".join(loc), message + more)


def mask(secret: SecretStr | str | None) -> str:
    """How a secret is shown anywhere: never its value."""
    return "**********" if secret else ""
