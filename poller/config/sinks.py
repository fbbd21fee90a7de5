"""``sinks``: one model per sink type, chosen by ``type``, over the filters and pacing every sink shares."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from poller.config.base import _ENV_NAME, _Model, _tls_url
from poller.durations import Duration

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


class _TicketSinkBase(_SinkBase):
    """A sink that keeps one ticket per incident: a recurrence updates that ticket, by default at most hourly."""

    repeat_interval: Duration = timedelta(hours=1)


class ServiceNowSinkConfig(_TicketSinkBase):
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

    @model_validator(mode="after")
    def _auth_fields(self) -> ServiceNowSinkConfig:
        if self.auth == "basic" and not self.username:
            raise ValueError("username is required when auth is basic")
        if self.auth == "oauth" and not self.client_id:
            raise ValueError("client_id is required when auth is oauth")
        return self


class JiraSinkConfig(_TicketSinkBase):
    type: Literal["jira"]
    url: str
    deployment: Literal["cloud", "datacenter"] = "cloud"
    project: str = Field(min_length=1)
    issue_type: str = "Bug"
    email: str | None = None  # Cloud: the account's email, with an API token; Data Center: a personal access token
    token_env: str = "JIRA_API_TOKEN"
    resolve_transition: str = "Done"

    @model_validator(mode="after")
    def _cloud_email(self) -> JiraSinkConfig:
        if self.deployment == "cloud" and not self.email:
            raise ValueError("email is required for Jira Cloud (it signs in with email + API token)")
        return self


class AzureDevOpsSinkConfig(_TicketSinkBase):
    type: Literal["azure_devops"]
    organization_url: str
    project: str = Field(min_length=1)
    work_item_type: str = "Bug"
    pat_env: str = "AZURE_DEVOPS_PAT"
    area_path: str | None = None
    resolved_state: str = "Resolved"


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
