"""`rca-poller check`: can this config reach everything it names? One row per check, with the fix on a ✗.

Rows say what was seen and, when something is wrong, what to do: the role to grant, the diagnostic setting
to enable, the variable to set. Log Analytics sources are checked here; a source or sink object with a
``check()`` method answers for itself (see `from_hook`): that is how Databricks sources plug in.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from azure.core.credentials import AccessToken, TokenCredential
from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError, ServiceRequestError
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from poller.config import AzureConfig, Config, LogAnalyticsSourceConfig
from poller.errors import ConfigError, PollerError
from poller.lock import holder, lock_path
from poller.store import SCHEMA_VERSION

#: How far back the table probe counts rows: long enough for a quiet factory, short enough to stay cheap.
PROBE_LOOKBACK = timedelta(days=7)
SERVICE_TABLES: dict[str, tuple[str, ...]] = {
    "adf": ("ADFActivityRun", "ADFPipelineRun"),
    "synapse": ("SynapseIntegrationActivityRuns", "SynapseIntegrationPipelineRuns"),
    "functions": ("AppExceptions", "FunctionAppLogs"),
}
TABLE_HINTS = {
    "adf": "in each data factory add a diagnostic setting that sends ActivityRuns and PipelineRuns to this "
           "workspace with destination table 'Resource specific'",
    "synapse": "in the Synapse workspace add a diagnostic setting that sends IntegrationActivityRuns and "
               "IntegrationPipelineRuns to this workspace with destination table 'Resource specific'",
    "functions": "make the function app's Application Insights workspace-based on this workspace (AppExceptions) "
                 "and add a diagnostic setting that sends FunctionAppLogs to it",
}
# ADF rows in the legacy single table; the probe counts them under this name.
LEGACY_ADF = ('AzureDiagnostics | where ResourceProvider == "MICROSOFT.DATAFACTORY" '
              'and Category in ("ActivityRuns", "PipelineRuns")')
CREDENTIAL_HINTS = {
    "access_token_env": "export {env}=$(az account get-access-token --resource {audience} --query accessToken -o tsv), "
                        "or use azure.credential: default",
    "default": "sign in with `az login`, or set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET, or run where "
               "a managed identity is assigned",
    "cli": "run `az login` as the user rca-poller runs as (the az CLI must be on its PATH)",
    "managed_identity": "assign a managed identity to this VM, App Service or container; for a user-assigned one set "
                        "azure.managed_identity_client_id",
    "environment": "set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (or AZURE_CLIENT_CERTIFICATE_PATH)",
}
STATE_HINT = "point state.url (or RCA_POLLER_STATE) at a file whose directory the rca-poller user can write"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One line of `rca-poller check`: ``component`` (``source adf-prod``), ``item`` (``credential``), the
    verdict, what was seen, and the fix."""

    component: str
    item: str
    ok: bool
    detail: str
    hint: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def run_checks(config: Config, config_path: str) -> list[CheckResult]:
    """Every check of a loaded config: the state store, each enabled source, each sink."""
    sinks = len(config.sinks)
    results = [CheckResult("config", config_path, True, f"{len(config.sources)} source(s), {sinks} sink(s)")]
    results += check_state(config.state.url)
    results += check_sources(config, credential_for(config.azure))
    results += check_sinks(config)
    return results


def config_error(config_path: str, exc: ConfigError) -> CheckResult:
    hint = "fix the key named above; `rca-poller init --path new.yaml` writes an annotated example to compare with"
    return CheckResult("config", config_path, False, str(exc), hint)


# --- sources ----------------------------------------------------------------------------------------------


class UnavailableCredential:
    """Stands in for a credential that could not be built, so each source's check reports why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        raise ClientAuthenticationError(message=self.reason)


def credential_for(azure: AzureConfig) -> TokenCredential:
    from poller.azure_auth import build_credential

    try:
        return build_credential(azure)
    except ConfigError as exc:
        return UnavailableCredential(str(exc))


def check_sources(config: Config, credential: TokenCredential) -> list[CheckResult]:
    from poller.sources import build_sources

    results: list[CheckResult] = []
    for name, cfg in config.sources.items():
        component = f"source {name}"
        if not cfg.enabled:
            results.append(CheckResult(component, "enabled", True, "disabled (enabled: false): not checked"))
            continue
        try:
            (source,) = build_sources(config, credential, only=name)
        except PollerError as exc:
            results.append(CheckResult(component, "build", False, str(exc)))
            continue
        try:
            hook = getattr(source, "check", None)
            if callable(hook):
                results += from_hook(component, hook)
            elif isinstance(cfg, LogAnalyticsSourceConfig):
                results += check_log_analytics(name, cfg, config.azure, credential)
            else:
                results.append(CheckResult(component, "check", False, f"no check for sources of type {cfg.type!r}"))
        finally:
            source.close()
    return results


def from_hook(component: str, hook: Callable[[], Any]) -> list[CheckResult]:
    """A component's own ``check()``, which may answer with rows, or with who it reads as (a string) and raise
    a PollerError when it cannot: the error's ``… — fix`` tail becomes the hint.

    Databricks sources answer with the user from ``/Me``, sinks with the account they post as."""
    try:
        answer = hook()
    except PollerError as exc:
        detail, _, hint = re.sub(r"^(source|sink) '[^']*': ", "", str(exc)).partition(" — ")
        return [CheckResult(component, "access", False, detail, hint)]
    except Exception as exc:
        return [CheckResult(component, "check", False, f"the check itself failed: {exc.__class__.__name__}: {exc}")]
    if answer is None or isinstance(answer, str):
        return [CheckResult(component, "identity", True, f"authenticated as {answer}" if answer else "reachable")]
    return [row if isinstance(row, CheckResult) else CheckResult(
        str(getattr(row, "component", component)), str(getattr(row, "item", "check")), bool(getattr(row, "ok", False)),
        str(getattr(row, "detail", "")), str(getattr(row, "hint", "") or "")) for row in answer]


def check_log_analytics(
    name: str, cfg: LogAnalyticsSourceConfig, azure: AzureConfig, credential: TokenCredential
) -> list[CheckResult]:
    """Credential → workspace → tables → ADF log mode; stops at the first step that fails."""
    component = f"source {name}"
    audience = (cfg.audience or cfg.endpoint).rstrip("/")
    scope = f"{audience}/.default"
    try:
        credential.get_token(scope)
    except AzureError as exc:
        hint = CREDENTIAL_HINTS[azure.credential].format(env=azure.access_token_env, audience=audience)
        return [CheckResult(component, "credential", False, f"no token for {scope}: {_first_line(exc)}", hint)]
    results = [CheckResult(component, "credential", True, f"token for {scope} ({azure.credential})")]
    tables = [t for service in cfg.services for t in SERVICE_TABLES[service]]
    started = time.monotonic()
    try:
        counts = probe_tables(cfg, credential, tables, legacy_adf="adf" in cfg.services)
    except (AzureError, json.JSONDecodeError) as exc:
        detail, hint = workspace_failure(name, cfg, audience, exc)
        return [*results, CheckResult(component, "workspace", False, detail, hint)]
    seconds = time.monotonic() - started
    results.append(CheckResult(component, "workspace", True, f"{cfg.workspace_id} answered in {seconds:.1f}s"))
    for service in cfg.services:
        results += service_tables(component, service, counts)
    if "adf" in cfg.services:
        # `adf_mode` (auto | resource_specific | azure_diagnostics) says which tables the source reads, where the
        # source has that setting; a source without it reads the resource-specific tables.
        results.append(adf_log_mode(component, counts, getattr(cfg, "adf_mode", None)))
    return results


def service_tables(component: str, service: str, counts: dict[str, int]) -> list[CheckResult]:
    """A row per table of the service; a missing one is a ✗ only when the service has no table at all (for ADF
    the log mode row gives the verdict)."""
    tables = SERVICE_TABLES[service]
    some = service == "adf" or any(t in counts for t in tables)
    days = PROBE_LOOKBACK.days
    rows = []
    for table in tables:
        found = table in counts
        detail = f"{counts[table]} rows in the last {days} days" if found else "not in this workspace"
        rows.append(CheckResult(component, f"table {table}", found or some, detail,
                                "" if found or some else TABLE_HINTS[service]))
    if service == "adf":
        legacy = counts.get("AzureDiagnostics")
        detail = f"{legacy} ADF rows in the last {days} days" if legacy else "no ADF rows"
        rows.append(CheckResult(component, "table AzureDiagnostics", True, detail))
    return rows


def probe_query(tables: Sequence[str], *, legacy_adf: bool) -> str:
    """One fuzzy union counting each table's rows; a missing table just drops out of the answer.

    Each branch names itself in ``SourceTable``: ``withsource`` would name parenthesised branches by position.
    """
    branches = [f'({t} | summarize Rows = count() | extend SourceTable = "{t}")' for t in tables]
    if legacy_adf:
        branches.append(f'({LEGACY_ADF} | summarize Rows = count() | extend SourceTable = "AzureDiagnostics")')
    branches.append("(datatable(Rows: long, SourceTable: string) [])")  # keeps the union valid if none exists
    return "union isfuzzy=true\n    " + ",\n    ".join(branches) + "\n| project SourceTable, Rows"


def probe_tables(
    cfg: LogAnalyticsSourceConfig, credential: TokenCredential, tables: Sequence[str], *, legacy_adf: bool
) -> dict[str, int]:
    """Rows per existing table over PROBE_LOOKBACK; the ADF rows of AzureDiagnostics as ``AzureDiagnostics``."""
    from azure.monitor.query import LogsQueryClient, LogsQueryPartialResult

    extra = {"audience": cfg.audience} if cfg.audience else {}
    # No retries: a check reports what it meets, at once.
    client = LogsQueryClient(credential, endpoint=cfg.endpoint, retry_total=0, connection_timeout=10,
                             read_timeout=90, **extra)
    try:
        response = client.query_workspace(cfg.workspace_id, probe_query(tables, legacy_adf=legacy_adf),
                                          timespan=PROBE_LOOKBACK, server_timeout=60)
    finally:
        client.close()
    data = response.partial_data if isinstance(response, LogsQueryPartialResult) else response.tables
    return {str(row[0]): int(row[1]) for table in data or [] for row in table.rows}


def workspace_failure(
    name: str, cfg: LogAnalyticsSourceConfig, audience: str, exc: BaseException
) -> tuple[str, str]:
    """What a failed probe means, and how to fix it."""
    workspace = cfg.workspace_id
    if isinstance(exc, json.JSONDecodeError):  # azure-monitor-query cannot parse the documented 204
        return "the workspace holds no data at all (HTTP 204)", TABLE_HINTS["adf"]
    if isinstance(exc, ServiceRequestError):
        text = _first_line(exc)
        if "CERTIFICATE_VERIFY_FAILED" in text or "SSL" in text:
            return (f"TLS to {cfg.endpoint} failed: {text}",
                    "the endpoint's certificate is not trusted: put your proxy's CA bundle in REQUESTS_CA_BUNDLE")
        return (f"cannot reach {cfg.endpoint}: {text}",
                f"check sources.{name}.endpoint, DNS, and that outbound HTTPS to it is allowed (behind a proxy set "
                "HTTPS_PROXY)")
    status = exc.status_code if isinstance(exc, HttpResponseError) else None
    message = f"HTTP {status}: {_first_line(exc)}" if status else _first_line(exc)
    hints = {
        401: f"the token was refused: it has expired or was issued for another audience (it must be for {audience})",
        403: f"grant the identity the 'Log Analytics Reader' role on workspace {workspace} (az role assignment create "
             "--role 'Log Analytics Reader' --assignee <principal id> --scope <workspace resource id>)",
        404: f"check sources.{name}.workspace_id: it is the workspace's Workspace ID (a GUID on its Overview page), "
             "not its name or resource id",
        429: "throttled (200 requests per 30 s per identity): another client is using the quota; try again shortly",
    }
    hint = hints.get(status or 0) or (
        "Log Analytics is failing; try again, and see https://azure.status.microsoft" if (status or 0) >= 500
        else f"the probe query was refused; run it in the portal's Logs blade of workspace {workspace}"
    )
    return message, hint


def adf_log_mode(component: str, counts: dict[str, int], setting: str | None) -> CheckResult:
    """Where the factories' diagnostic settings write — resource-specific tables, AzureDiagnostics, both or
    none — against what the source reads (`setting`: its ``adf_mode``, None when it has no such option)."""
    dedicated, legacy = any(t in counts for t in SERVICE_TABLES["adf"]), counts.get("AzureDiagnostics", 0) > 0
    if not dedicated and not legacy:
        return CheckResult(component, "ADF log mode", False, "none: no ADF logs reach this workspace",
                           TABLE_HINTS["adf"])
    found = ("both: resource-specific and AzureDiagnostics" if dedicated and legacy
             else "resource-specific" if dedicated else "AzureDiagnostics (legacy)")
    reads_dedicated, reads_legacy = {"auto": (True, True), "azure_diagnostics": (False, True)}.get(
        setting or "", (True, False))
    unread = [name for name, present, read in (("the resource-specific tables", dedicated, reads_dedicated),
                                               ("AzureDiagnostics", legacy, reads_legacy)) if present and not read]
    if not unread:
        return CheckResult(component, "ADF log mode", True, found)
    fix = ("set adf_mode: auto on this source" if setting is not None else
           "rca-poller reads the resource-specific tables: in each factory's diagnostic setting choose destination "
           "table 'Resource specific' (ARM logAnalyticsDestinationType: Dedicated)")
    still_read = dedicated + legacy > len(unread)
    return CheckResult(component, "ADF log mode", still_read, f"{found}; rows in {unread[0]} are not read", fix)


# --- state and sinks --------------------------------------------------------------------------------------


def check_state(url: str) -> list[CheckResult]:
    """The store opens and takes writes; its schema is one this version can use; who owns it now."""
    lock = lock_path(url)
    path = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None
    if path is not None and not path.exists():
        parent = next(p for p in path.absolute().parents if p.exists())
        ok = os.access(parent, os.W_OK)
        detail = f"{path} will be created on the first run" if ok else f"cannot create {path}: {parent} is read-only"
        return [CheckResult("state", "store", ok, detail, "" if ok else STATE_HINT)]
    results = [_state_writable(url), _state_schema(url)]
    if lock is not None:
        owner = holder(url)
        results.append(CheckResult("state", "owner", True, f"in use by rca-poller pid {owner}" if owner else "free"))
    return results


def _state_writable(url: str) -> CheckResult:
    engine = create_engine(url, connect_args={"timeout": 5} if url.startswith("sqlite") else {})
    try:
        if "schema_version" not in inspect(engine).get_table_names():
            return CheckResult("state", "store", True, f"{_safe_url(url)} opens (no schema yet)")
        with engine.connect() as conn:  # a write that changes nothing, rolled back: fails on a read-only store
            conn.execute(text("DELETE FROM schema_version WHERE version < 0"))
            conn.rollback()
    except OperationalError as exc:
        if "locked" in str(exc):
            return CheckResult("state", "store", True, f"{_safe_url(url)} opens; busy (another process is writing)")
        return CheckResult("state", "store", False, f"{_safe_url(url)}: {_first_line(exc.orig or exc)}", STATE_HINT)
    except SQLAlchemyError as exc:
        return CheckResult("state", "store", False, f"{_safe_url(url)}: {_first_line(exc)}", STATE_HINT)
    finally:
        engine.dispose()
    return CheckResult("state", "store", True, f"{_safe_url(url)} is writable")


def _state_schema(url: str) -> CheckResult:
    engine = create_engine(url, connect_args={"timeout": 5} if url.startswith("sqlite") else {})
    try:
        with engine.connect() as conn:
            has_table = "schema_version" in inspect(conn).get_table_names()
            version = conn.execute(text("SELECT max(version) FROM schema_version")).scalar() if has_table else None
    except SQLAlchemyError as exc:
        return CheckResult("state", "schema", False, _first_line(exc), STATE_HINT)
    finally:
        engine.dispose()
    if version is None:
        return CheckResult("state", "schema", True, f"empty: schema v{SCHEMA_VERSION} is created on the first run")
    if version > SCHEMA_VERSION:
        return CheckResult("state", "schema", False, f"v{version} is newer than this rca-poller (v{SCHEMA_VERSION})",
                           "upgrade rca-poller to the version that wrote this store, or point state.url elsewhere")
    if version < SCHEMA_VERSION:
        return CheckResult("state", "schema", True, f"v{version}: migrated to v{SCHEMA_VERSION} on the next run")
    return CheckResult("state", "schema", True, f"v{version} (current)")


def check_sinks(config: Config) -> list[CheckResult]:
    """The local sink is always on; a configured sink with a ``check()`` answers for itself."""
    import importlib

    results = [CheckResult("sink local", "tickets", True, "always on: tickets live in the state store")]
    if not config.sinks:
        return results
    build = getattr(importlib.import_module("poller.sinks"), "build_sinks", None)
    if build is None:
        return results + [CheckResult(f"sink {name}", "check", False, "this version cannot check sinks")
                          for name in config.sinks]
    try:
        sinks = list(build(config))
    except PollerError as exc:
        return [*results, CheckResult("sinks", "build", False, str(exc), "fix the sink's settings named above")]
    for sink in sinks:
        component = f"sink {getattr(sink, 'name', '?')}"
        hook = getattr(sink, "check", None)
        try:
            results += from_hook(component, hook) if callable(hook) else [
                CheckResult(component, "check", True, "no check available for this sink type")]
        finally:
            getattr(sink, "close", lambda: None)()
    return results


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", "") or exc).strip()
    return text.splitlines()[0][:300] if text else exc.__class__.__name__


def _safe_url(url: str) -> str:
    """The URL without a password."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
