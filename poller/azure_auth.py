"""Azure credentials for every Azure client rca-poller builds, chosen by ``azure.credential``."""

from __future__ import annotations

import os
import time
from typing import Any

from azure.core.credentials import AccessToken, TokenCredential

from poller.config import AzureConfig, Config
from poller.errors import ConfigError


class StaticTokenCredential:
    """A bearer token read once from an environment variable — for short jobs, CI and the emulators."""

    def __init__(self, token: str, env_name: str) -> None:
        self._token = token
        self._env_name = env_name

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        # The real expiry is unknown; an hour ahead makes azure-core reuse it without refreshing.
        return AccessToken(self._token, int(time.time()) + 3600)

    def __repr__(self) -> str:
        return f"StaticTokenCredential(env={self._env_name!r}, token='**********')"


def build_credential(config: AzureConfig) -> TokenCredential:
    """The credential object for ``azure.credential``; no network call happens here."""
    kind = config.credential
    if kind == "access_token_env":
        token = os.environ.get(config.access_token_env, "").strip()
        if not token:
            raise ConfigError(
                "azure.access_token_env", f"environment variable {config.access_token_env} is not set or empty"
            )
        return StaticTokenCredential(token, config.access_token_env)
    from azure import identity

    if kind == "cli":
        return identity.AzureCliCredential(tenant_id=config.tenant_id or "")
    if kind == "managed_identity":
        return identity.ManagedIdentityCredential(client_id=config.managed_identity_client_id)
    if kind == "environment":
        return identity.EnvironmentCredential()
    return identity.DefaultAzureCredential(
        managed_identity_client_id=config.managed_identity_client_id,
        additionally_allowed_tenants=[config.tenant_id] if config.tenant_id else [],
    )


def credential_for(config: Config) -> TokenCredential | None:
    """The Azure credential when a component talks to Azure; None for, say, a Databricks-only config."""
    uses_azure = (
        any(source.type == "log_analytics" for source in config.sources.values())
        or (config.rca.provider == "azure_openai" and config.rca.azure_auth == "entra")
        or config.remediation.enabled
    )
    return build_credential(config.azure) if uses_azure else None
