"""Configuration: pydantic models of config.yaml, ``${VAR}`` interpolation, errors that name the key path.

The top-level ``Config`` and loading live here; each component's models live beside it (``sources``, ``rca``,
``sinks``) and are re-exported, so ``from poller.config import …`` names every model.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator

from poller.config.base import _Model
from poller.config.base import _tls_url as _tls_url
from poller.config.rca import RCA_DEFAULT_KEY_ENV, RcaConfig, RcaEvidenceConfig
from poller.config.sinks import (
    SINK_TYPES,
    AzureDevOpsSinkConfig,
    EmailSinkConfig,
    JiraSinkConfig,
    ServiceNowSinkConfig,
    Severity,
    SinkConfig,
    SlackSinkConfig,
    TeamsSinkConfig,
    WebhookSinkConfig,
)
from poller.config.sources import (
    DATABRICKS_AUTH_TYPES,
    SOURCE_TYPES,
    DatabricksSourceConfig,
    LogAnalyticsSourceConfig,
    SourceConfig,
)
from poller.durations import Duration
from poller.errors import ConfigError
from poller.remediation.config import RemediationConfig

__all__ = [
    "DATABRICKS_AUTH_TYPES", "DEFAULT_CONFIG_PATH", "RCA_DEFAULT_KEY_ENV", "SINK_TYPES", "SOURCE_TYPES",
    "AzureConfig", "AzureDevOpsSinkConfig", "Config", "ConfigError", "DatabricksSourceConfig", "EmailSinkConfig",
    "IncidentsConfig", "JiraSinkConfig", "LogAnalyticsSourceConfig", "LogLevel", "LoggingConfig", "MetricsConfig",
    "RcaConfig", "RcaEvidenceConfig", "RemediationConfig", "ServiceNowSinkConfig", "Severity", "SinkConfig",
    "SlackSinkConfig", "SourceConfig", "StateConfig", "TeamsSinkConfig", "WebhookSinkConfig", "interpolate",
    "load_config", "mask", "parse_config",
]

DEFAULT_CONFIG_PATH = "config.yaml"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


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


class IncidentsConfig(_Model):
    quiet_period: Duration = timedelta(hours=6)


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class LoggingConfig(_Model):
    level: LogLevel = "INFO"
    format: Literal["text", "json"] = "text"
    levels: dict[str, LogLevel] = Field(default_factory=dict)  # per logger: {poller.sources: DEBUG, azure: INFO}


class MetricsConfig(_Model):
    """``metrics``: Prometheus /metrics and /healthz, off unless a port is set; localhost unless told otherwise."""

    port: int | None = Field(default=None, ge=1, le=65535)
    host: str = Field(default="127.0.0.1", min_length=1)
    stale_after: Duration | None = None  # default: 3 x each source's interval, at least 5m


class Config(_Model):
    state: StateConfig = StateConfig()
    azure: AzureConfig = AzureConfig()
    sources: dict[str, SourceConfig] = Field(default_factory=dict)
    rca: RcaConfig = RcaConfig()
    incidents: IncidentsConfig = IncidentsConfig()
    sinks: dict[str, SinkConfig] = Field(default_factory=dict)
    remediation: RemediationConfig = RemediationConfig()
    logging: LoggingConfig = LoggingConfig()
    metrics: MetricsConfig = MetricsConfig()

    @field_validator("sources", "sinks")
    @classmethod
    def _names(cls, items: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        for name in items:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
                raise ValueError(f"{str(info.field_name)[:-1]} name {name!r} may hold only letters, digits, "
                                 "'.', '_' and '-'")
        return items


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
    kind, types = ("sink", SINK_TYPES) if loc and loc[0] == "sinks" else ("source", SOURCE_TYPES)
    if len(loc) >= 3 and loc[0] in ("sources", "sinks") and loc[2] in types:
        del loc[2]
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] == "missing":
        message = "required key is missing"
    elif first["type"] == "union_tag_invalid":
        tag = first.get("ctx", {}).get("tag")
        message = f"unknown {kind} type {tag!r} (known: {', '.join(types)})"
    elif first["type"] == "union_tag_not_found":
        message = f"each {kind} needs a 'type' (known: {', '.join(types)})"
    elif message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return ConfigError(".".join(loc), message + more)


def mask(secret: SecretStr | str | None) -> str:
    """How a secret is shown anywhere: never its value."""
    return "**********" if secret else ""
