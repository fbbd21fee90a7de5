"""``sources``: one model per source type, chosen by ``type``; secrets are named by environment variable."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from poller.config.base import _Model
from poller.durations import Duration


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
    # After the first sweep of a process, a sweep reads what this many requests a tick leave after the jobs reads
    # (at least one); null reads a due sweep whole in one tick.
    quiet_tick_requests: int | None = Field(default=5, ge=1, le=1000)
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
SOURCE_TYPES = ("log_analytics", "databricks")
