"""Configuration: pydantic models of config.yaml, ``${VAR}`` interpolation, errors that name the key path."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from poller.durations import Duration
from poller.errors import ConfigError
from poller.remediation.config import RemediationConfig

DEFAULT_CONFIG_PATH = "config.yaml"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")




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
    services: list[Literal["adf", "synapse", "functions"]] = Field(
        default_factory=lambda: ["adf"], min_length=1  # type: ignore[arg-type]
    )
    # Where ADF logs are read: auto probes the workspace (resource-specific tables, AzureDiagnostics, or both).
    adf_mode: Literal["auto", "resource_specific", "azure_diagnostics"] = "auto"
    table_probe_interval: Duration = timedelta(hours=1)
    # Synapse workspace name → its dev endpoint, asked for error text the logs lack.
    synapse_endpoints: dict[str, str] = Field(default_factory=dict)
    synapse_timeout: Duration = timedelta(seconds=30)
    synapse_retries: int = Field(default=2, ge=0, le=10)
    synapse_pending_max_age: Duration = timedelta(hours=24)
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

    @field_validator("synapse_endpoints")
    @classmethod
    def _synapse_https(cls, endpoints: dict[str, str]) -> dict[str, str]:
        for workspace, endpoint in endpoints.items():
            if not endpoint.startswith("https://"):
                raise ValueError(f"{workspace}: must be an https:// URL such as https://{workspace}.dev.azuresynapse.net")
        return {workspace: endpoint.rstrip("/") for workspace, endpoint in endpoints.items()}

    @model_validator(mode="after")
    def _settle_within_overlap(self) -> LogAnalyticsSourceConfig:
        if self.settle > self.overlap:
            raise ValueError("settle must not be longer than overlap")
        return self


#: databricks-sdk unified-auth methods a daemon can use (``databricks.sdk`` ``DefaultCredentials``); ``default``
#: lets the SDK pick from its environment, as the Databricks CLI does.
DATABRICKS_AUTH_TYPES = (
    "pat", "default", "oauth-m2m", "azure-client-secret", "azure-cli", "github-oidc-azure", "databricks-cli",
    "github-oidc", "azure-devops-oidc", "env-oidc", "file-oidc", "metadata-service", "google-credentials",
    "google-id",
)
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class DatabricksSourceConfig(_Model):
    """One Databricks workspace; secrets are named by environment variable, never written here."""

    type: Literal["databricks"]
    host: str | None = None
    auth_type: str | None = None
    token_env: str = "DATABRICKS_TOKEN"
    profile: str | None = None
    config_file: str | None = None
    client_id: str | None = None
    client_secret_env: str = "DATABRICKS_CLIENT_SECRET"
    azure_workspace_resource_id: str | None = None
    azure_tenant_id: str | None = None
    azure_client_id: str | None = None
    azure_client_secret_env: str = "ARM_CLIENT_SECRET"
    watch: list[Literal["jobs", "clusters", "libraries"]] = Field(
        default_factory=lambda: ["jobs", "clusters", "libraries"], min_length=1  # type: ignore[arg-type]
    )
    interval: Duration = timedelta(seconds=120)
    # The cluster and library sweep (clusters/list, all-cluster-statuses) runs on its own, slower cadence.
    cluster_interval: Duration = timedelta(minutes=5)
    overlap: Duration = timedelta(minutes=10)
    max_run_duration: Duration = timedelta(hours=24)
    initial_lookback: Duration = timedelta(hours=24)
    requests_per_second: float = Field(default=10.0, gt=0, le=1000)
    max_retries: int = Field(default=3, ge=0, le=20)
    retry_timeout: Duration = timedelta(seconds=60)
    http_timeout: Duration = timedelta(seconds=30)
    enabled: bool = True

    @field_validator("host")
    @classmethod
    def _workspace_url(cls, host: str | None) -> str | None:
        if host is None:
            return None
        url = host.strip().rstrip("/")
        url = url if "://" in url else f"https://{url}"  # as the SDK does for a bare host name
        parts = urlsplit(url)
        local = parts.scheme == "http" and parts.hostname in _LOCAL_HOSTS
        if not parts.hostname or not (parts.scheme == "https" or local):
            raise ValueError("must be the workspace URL, https://… (TLS is always verified; http:// only for "
                             "localhost)")
        if parts.path or parts.query or parts.fragment:
            raise ValueError(f"must be the workspace URL alone, such as {parts.scheme}://{parts.netloc}")
        return url

    @field_validator("auth_type")
    @classmethod
    def _known_auth_type(cls, auth_type: str | None) -> str | None:
        if auth_type is not None and auth_type not in DATABRICKS_AUTH_TYPES:
            raise ValueError(f"unknown auth_type {auth_type!r} (known: {', '.join(DATABRICKS_AUTH_TYPES)})")
        return auth_type

    @field_validator("token_env", "client_secret_env", "azure_client_secret_env")
    @classmethod
    def _env_name(cls, name: str) -> str:
        # Personal access tokens start with "dapi": one pasted here would end up in the file and in logs.
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or name.startswith("dapi"):
            raise ValueError("must name the environment variable that holds the secret, not the secret itself")
        return name

    @field_validator("watch")
    @classmethod
    def _each_once(cls, watch: list[str]) -> list[str]:
        if len(set(watch)) != len(watch):
            raise ValueError("lists an item twice")
        return watch

    @field_validator("retry_timeout")
    @classmethod
    def _whole_seconds(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=1):
            raise ValueError("must be at least 1s (the SDK counts its retry budget in whole seconds)")
        return value

    @field_validator("http_timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be longer than 0s")
        return value

    @field_validator("cluster_interval")
    @classmethod
    def _not_before_interval(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        interval = info.data.get("interval")  # absent when interval itself is invalid: that error is reported
        if isinstance(interval, timedelta) and value < interval:
            raise ValueError(f"must not be shorter than interval ({interval.total_seconds():g}s): the sweep runs "
                             "at most once a tick")
        return value

    @model_validator(mode="after")
    def _workspace_named(self) -> DatabricksSourceConfig:
        if self.host is None and self.profile is None:
            raise ValueError("host is required (or a profile that names the workspace)")
        return self

    @property
    def effective_auth_type(self) -> str:
        """``pat`` (from ``token_env``) unless told otherwise; a profile alone brings its own method."""
        if self.auth_type is not None:
            return self.auth_type
        return "default" if self.profile else "pat"


SourceConfig = Annotated[LogAnalyticsSourceConfig | DatabricksSourceConfig, Field(discriminator="type")]


RCA_DEFAULT_KEY_ENV = {"openai": "OPENAI_API_KEY", "azure_openai": "AZURE_OPENAI_API_KEY"}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LOOPBACK = re.compile(r"^http://(?:localhost|127\.\d+\.\d+\.\d+|\[::1\])(?::\d+)?(?:/|$)")


def _tls_url(url: str | None) -> str | None:
    """https:// only; plain http:// is allowed for a server on this machine (a local model server, an emulator)."""
    if url is None:
        return None
    if not (url.startswith("https://") or _LOOPBACK.match(url)):
        raise ValueError("must be an https:// URL (TLS is always verified; http:// only for localhost)")
    return url.rstrip("/")


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


Severity = Literal["low", "medium", "high", "critical"]


def _env_var(name: str) -> str:
    if not _ENV_NAME.match(name):
        raise ValueError("must name the environment variable that holds the secret, not the secret itself")
    return name


class _SinkBase(_Model):
    """What every sink shares: filters (all must match), how often to repeat, how fast to send."""

    min_severity: Severity = "low"
    services: list[str] = Field(default_factory=list)
    resources: list[str] = Field(default_factory=list)  # glob patterns: "pl_*"
    repeat_interval: Duration = timedelta(hours=4)
    rate_limit: int = Field(default=0, ge=0)  # deliveries per minute; 0 = unlimited
    timeout: Duration = timedelta(seconds=30)
    enabled: bool = True

    @field_validator("*", mode="after")
    @classmethod
    def _secrets_and_urls(cls, value: Any, info: ValidationInfo) -> Any:
        name = info.field_name or ""
        if name.endswith("_env"):
            return _env_var(value)
        return _tls_url(value) if name in ("instance_url", "url", "organization_url") else value


class ServiceNowSinkConfig(_SinkBase):
    type: Literal["servicenow"]
    instance_url: str
    auth: Literal["basic", "oauth"] = "basic"
    username: str | None = None
    password_env: str = "SERVICENOW_PASSWORD"
    client_id: str | None = None
    client_secret_env: str = "SERVICENOW_CLIENT_SECRET"
    assignment_group: str | None = None
    caller_id: str | None = None
    close_code: str = "Solution provided"
    repeat_interval: Duration = timedelta(hours=1)


    @model_validator(mode="after")
    def _auth_fields(self) -> ServiceNowSinkConfig:
        if self.auth == "basic" and not self.username:
            raise ValueError("username is required when auth is basic")
        if self.auth == "oauth" and not self.client_id:
            raise ValueError("client_id is required when auth is oauth")
        return self


class JiraSinkConfig(_SinkBase):
    type: Literal["jira"]
    url: str
    deployment: Literal["cloud", "datacenter"] = "cloud"
    project: str = Field(min_length=1)
    issue_type: str = "Bug"
    email: str | None = None  # Cloud: the account's email, with an API token; Data Center: a personal access token
    token_env: str = "JIRA_API_TOKEN"
    resolve_transition: str = "Done"
    repeat_interval: Duration = timedelta(hours=1)


    @model_validator(mode="after")
    def _cloud_email(self) -> JiraSinkConfig:
        if self.deployment == "cloud" and not self.email:
            raise ValueError("email is required for Jira Cloud (it signs in with email + API token)")
        return self


class AzureDevOpsSinkConfig(_SinkBase):
    type: Literal["azure_devops"]
    organization_url: str
    project: str = Field(min_length=1)
    work_item_type: str = "Bug"
    pat_env: str = "AZURE_DEVOPS_PAT"
    area_path: str | None = None
    resolved_state: str = "Resolved"
    repeat_interval: Duration = timedelta(hours=1)



class SlackSinkConfig(_SinkBase):
    type: Literal["slack"]
    webhook_url_env: str = "SLACK_WEBHOOK_URL"


class TeamsSinkConfig(_SinkBase):
    type: Literal["teams"]
    webhook_url_env: str = "TEAMS_WEBHOOK_URL"


class WebhookSinkConfig(_SinkBase):
    type: Literal["webhook"]
    url: str
    secret_env: str = "RCA_POLLER_WEBHOOK_SECRET"



class EmailSinkConfig(_SinkBase):
    type: Literal["email"]
    host: str = Field(min_length=1)
    port: int = Field(default=587, ge=1, le=65535)
    starttls: bool = True
    username: str | None = None
    password_env: str = "SMTP_PASSWORD"
    sender: str = Field(min_length=3)
    recipients: list[str] = Field(min_length=1)


SinkConfig = Annotated[
    ServiceNowSinkConfig | JiraSinkConfig | AzureDevOpsSinkConfig | SlackSinkConfig | TeamsSinkConfig
    | WebhookSinkConfig | EmailSinkConfig,
    Field(discriminator="type"),
]
SINK_TYPES = ("servicenow", "jira", "azure_devops", "slack", "teams", "email", "webhook")


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


SOURCE_TYPES = ("log_analytics", "databricks")


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
