"""Raw Databricks REST access for the databricks source: SDK auth, a client-side rate, paging, one error classifier.

Everything is read as raw JSON through ``WorkspaceClient.api_client.do``: the SDK's dataclasses turn an enum
value they do not know into None (reference §0.3), and the poller keeps vendor strings verbatim. Paging is
ours too (§1.5): runs/list and clusters/list follow ``next_page_token``, runs/get merges its array pages,
clusters/events follows ``next_page`` (the old offset style the service and the SDK use, §0.4).

Retries are split by who can do them well. The SDK retries 429 and 503 itself, sleeping for ``Retry-After``,
and connection errors, until ``retry_timeout`` has passed; it does not retry 500, 502 or 504, so this module
backs those off (``max_retries`` times). ``classify`` is the one place that decides what an error means.

databricks-sdk is imported when the first client is built, not with this module: its package imports every
service (~1 s), which every command would pay, Databricks source or not.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import requests

from poller.config import DatabricksSourceConfig
from poller.errors import SourceError, ThrottledError

if TYPE_CHECKING:
    from databricks.sdk import WorkspaceClient

log = logging.getLogger("poller.sources.databricks")

Json = dict[str, Any]
JOBS, CLUSTERS, LIBRARIES = "/api/2.2/jobs", "/api/2.1/clusters", "/api/2.0/libraries"
RUNS_PAGE = 25  # runs/list: "> 0 and <= 25"
CLUSTERS_PAGE = 100
EVENTS_PAGE = 500  # clusters/events: limit at most 500
RUN_ARRAYS = ("tasks", "job_clusters", "job_parameters", "repair_history", "iterations")
#: HTTP status of the SDK's error classes (``databricks.sdk.errors.platform``; its errors keep no status), found
#: along an error's class hierarchy: RequestLimitExceeded is a TooManyRequests, ResourceDoesNotExist a NotFound.
STATUS_OF_CLASS = {
    "TooManyRequests": 429, "Unauthenticated": 401, "PermissionDenied": 403, "NotFound": 404, "BadRequest": 400,
    "ResourceConflict": 409, "TemporarilyUnavailable": 503, "DeadlineExceeded": 504, "InternalError": 500,
}
#: ``error_code`` of answers the SDK maps to no class, e.g. a gateway's 502.
STATUS_OF_CODE = {"BAD_GATEWAY": 502, "SERVICE_UNAVAILABLE": 503, "GATEWAY_TIMEOUT": 504}
MESSAGE_CAP = 300


class RateLimiter:
    """A token bucket: ``rate`` requests a second on average, bursts of up to ``burst``. The default burst of 1
    spaces requests evenly, so no second ever sees more than ``rate`` + 1 of them."""

    def __init__(self, rate: float, burst: float = 1.0, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._stamp = clock()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Take one token, sleeping until there is one."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= 1
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What an error means: its message, whether a later tick may succeed, and whether this module retries it."""

    message: str
    retryable: bool = True
    retry_here: bool = False
    throttled: bool = False
    retry_after: float | None = None
    status: int = 0

    def error(self, source: str) -> SourceError:
        if self.throttled:
            return ThrottledError(source, self.message, self.retry_after)
        return SourceError(source, self.message, retryable=self.retryable)


def classify(config: DatabricksSourceConfig, path: str, exc: BaseException) -> Verdict:
    """The one classifier of Databricks errors: HTTP status and kind → message, retryability, who retries."""
    host = config.host or f"profile {config.profile}"
    if isinstance(exc, TimeoutError):  # the SDK's retry budget ran out; the last error is its cause
        budget = f"after retrying for {int(config.retry_timeout.total_seconds())}s (retry_timeout)"
        if exc.__cause__ is None:
            return Verdict(f"{path} timed out {budget}")
        inner = classify(config, path, exc.__cause__)
        advice = "; lower requests_per_second or raise retry_timeout" if inner.throttled else ""
        return Verdict(f"{inner.message} {budget}{advice}", inner.retryable, False, inner.throttled,
                       inner.retry_after)
    if isinstance(exc, requests.JSONDecodeError):
        return Verdict(f"{host} answered {path} with something that is not JSON — is host the workspace URL?",
                       retryable=False)
    if isinstance(exc, requests.RequestException):
        return Verdict(f"cannot reach {host}: {_short(exc)}")
    if _is_api_error(exc):
        return _classify_api(config, host, path, exc)
    if isinstance(exc, ValueError):  # Config(): missing or conflicting auth settings
        return Verdict(f"cannot authenticate to {host}: {_short(exc)}", retryable=False)
    return Verdict(f"{type(exc).__name__} calling {path}: {_short(exc)}")


def _classify_api(config: DatabricksSourceConfig, host: str, path: str, exc: Any) -> Verdict:
    status = next((STATUS_OF_CLASS[k.__name__] for k in type(exc).__mro__ if k.__name__ in STATUS_OF_CLASS), 0)
    status = status or STATUS_OF_CODE.get(exc.error_code or "", 0)
    # The SDK appends its (masked) config to 401/403 messages; the host is named here already.
    message = _short(exc).split(". Config: ", 1)[0]
    if status == 429:  # already retried by the SDK, honouring Retry-After
        return Verdict(f"throttled by {host} (HTTP 429): {message}", throttled=True,
                       retry_after=exc.retry_after_secs, status=status)
    if status == 401:
        how = (f"the token in ${config.token_env}" if config.effective_auth_type == "pat"
               else f"auth_type {config.effective_auth_type}")
        return Verdict(f"authentication failed at {host} (HTTP 401): {message} — check {how}", retryable=False,
                       status=status)
    if status == 403:
        return Verdict(f"permission denied on {path} (HTTP 403): {message} — the identity needs to view job runs, "
                       "clusters and libraries (README, 'Databricks')", retryable=False, status=status)
    if status == 404:
        return Verdict(f"{path} not found at {host} (HTTP 404): {message} — is host the workspace URL?",
                       retryable=False, status=status)
    if 400 <= status < 500:
        return Verdict(f"{path} rejected (HTTP {status}): {message}", retryable=False, status=status)
    shown = f"HTTP {status}" if status else f"error {exc.error_code or type(exc).__name__}"
    # 503 was already retried by the SDK; 500, 502, 504 and unknown answers were not.
    return Verdict(f"{host} failed on {path} ({shown}): {message}", retry_here=status != 503, status=status)


class GoneError(SourceError):
    """HTTP 400 or 404 on a call: for a call about one run or cluster, the object is gone."""


class DatabricksApi:
    """One workspace's REST API as raw JSON. Every HTTP attempt, the SDK's retries included, takes a token
    from the client-side rate limiter; every error leaves as a SourceError naming the source."""

    def __init__(self, source: str, config: DatabricksSourceConfig, *, environ: Mapping[str, str] | None = None,
                 sleep: Callable[[float], None] = time.sleep, limiter: RateLimiter | None = None) -> None:
        """``sleep`` waits out this module's own backoff; the rate limiter keeps its own clock."""
        self.source = source
        self.config = config
        self.limiter = limiter or RateLimiter(config.requests_per_second)
        self._environ = os.environ if environ is None else environ
        self._sleep = sleep
        self._client: WorkspaceClient | None = None
        self.calls = 0  # API calls made (each of this module's retries counts; the SDK's own do not)

    def __repr__(self) -> str:
        auth = self.config.effective_auth_type
        return f"DatabricksApi(source={self.source!r}, host={self.config.host!r}, auth_type={auth!r})"

    @property
    def host(self) -> str:
        if self.config.host:
            return self.config.host
        return str(self.client.config.host or "")

    @property
    def client(self) -> WorkspaceClient:
        """Built on first use (Config() probes the host and resolves credentials: network, so never in init)."""
        if self._client is None:
            from databricks.sdk import WorkspaceClient
            from databricks.sdk.core import Config as SdkConfig

            try:
                self._client = WorkspaceClient(config=SdkConfig(**self._sdk_settings()))
            except (ValueError, requests.RequestException) as exc:
                raise classify(self.config, "authentication", exc).error(self.source) from exc
        return self._client

    def close(self) -> None:
        self._client = None

    # -- endpoints ------------------------------------------------------------------------------------------

    def list_runs(self, *, active_only: bool = False, completed_only: bool = False,
                  start_time_from: int | None = None, start_time_to: int | None = None) -> Iterator[Json]:
        """runs/list, every page, with tasks inline (≤100 per run; ``has_more`` marks the rest)."""
        params: Json = {"limit": RUNS_PAGE, "expand_tasks": True}
        optional = {"active_only": active_only, "completed_only": completed_only,
                    "start_time_from": start_time_from, "start_time_to": start_time_to}
        params.update({name: value for name, value in optional.items() if value})
        for page in self._pages(f"{JOBS}/runs/list", params):
            yield from page.get("runs") or []

    def get_run(self, run_id: int) -> Json | None:
        """runs/get with every page of its arrays merged (100 elements a page, §3.1); None when it is gone."""
        run = self._call_unless_gone("GET", f"{JOBS}/runs/get", query={"run_id": run_id})
        if run is None:
            return None
        token = run.pop("next_page_token", None)
        while token:
            page = self._call("GET", f"{JOBS}/runs/get", query={"run_id": run_id, "page_token": token})
            for name in RUN_ARRAYS:
                if page.get(name):
                    run[name] = [*run.get(name, []), *page[name]]
            token = page.get("next_page_token")
        return run

    def get_output(self, task_run_id: int) -> Json | None:
        """runs/get-output of one task run (a parent run is refused, §3.3); None when it is gone (60 days)."""
        return self._call_unless_gone("GET", f"{JOBS}/runs/get-output", query={"run_id": task_run_id})

    def clusters_page(self, token: str | None = None) -> tuple[list[Json], str | None]:
        """One clusters/list page and the token of the next (None after the last); a token the service refuses
        (HTTP 400) raises GoneError."""
        query: Json = {"page_size": CLUSTERS_PAGE, **({"page_token": token} if token else {})}
        page = self._call("GET", f"{CLUSTERS}/list", query=query)
        following = page.get("next_page_token")
        if following and following == token:
            raise SourceError(self.source, f"{CLUSTERS}/list handed out the same page token twice; stopped paging")
        return list(page.get("clusters") or []), str(following) if following else None

    def cluster_events(self, cluster_id: str, start_ms: int, end_ms: int | None = None) -> list[Json] | None:
        """clusters/events from ``start_ms`` on, oldest first, following ``next_page`` bodies; None when the
        cluster is gone (deleted, or terminated more than 30 days ago)."""
        body: Json | None = {"cluster_id": cluster_id, "start_time": start_ms, "order": "ASC", "limit": EVENTS_PAGE}
        if end_ms is not None and body is not None:
            body["end_time"] = end_ms
        events: list[Json] = []
        while body:
            page = self._call_unless_gone("POST", f"{CLUSTERS}/events", body=body)
            if page is None:
                return None
            events.extend(page.get("events") or [])
            following = page.get("next_page")
            body = following if isinstance(following, dict) and following != body else None
        return events

    def library_statuses(self) -> list[Json]:
        return list(self._call("GET", f"{LIBRARIES}/all-cluster-statuses").get("statuses") or [])

    def current_user(self) -> str:
        return str(self._call("GET", "/api/2.0/preview/scim/v2/Me").get("userName", ""))

    # -- plumbing ---------------------------------------------------------------------------------------------

    def _pages(self, path: str, query: Json) -> Iterator[Json]:
        seen: set[str] = set()
        while True:
            page = self._call("GET", path, query=query)
            yield page
            token = page.get("next_page_token")
            if not token:
                return
            if token in seen:
                raise SourceError(self.source, f"{path} handed out the same page token twice; stopped paging")
            seen.add(token)
            query = {**query, "page_token": token}

    def _call_unless_gone(self, method: str, path: str, *, query: Json | None = None,
                          body: Json | None = None) -> Json | None:
        """One call about one run or cluster: 400 or 404 means it no longer exists (not a broken workspace)."""
        try:
            return self._call(method, path, query=query, body=body)
        except GoneError:
            return None

    def _call(self, method: str, path: str, *, query: Json | None = None, body: Json | None = None) -> Json:
        client = self.client
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if client.config.workspace_id:
            headers["X-Databricks-Workspace-Id"] = str(client.config.workspace_id)
        for attempt in range(self.config.max_retries + 1):
            self.calls += 1
            # DatabricksError and requests' errors are OSErrors, as is the TimeoutError of a spent retry budget;
            # a ValueError is an answer that is not JSON.
            try:
                reply = client.api_client.do(method, path, query=query, body=body, headers=headers,
                                             auth=self._authenticate)
            except (OSError, ValueError) as exc:
                verdict = classify(self.config, path, exc)
                if verdict.status in (400, 404):
                    raise GoneError(self.source, verdict.message, retryable=False) from exc
                if not verdict.retry_here or attempt == self.config.max_retries:
                    raise verdict.error(self.source) from exc
                delay = min(30.0, 2.0**attempt) * (0.5 + random.random())
                log.warning("databricks.retry", extra={"source": self.source, "path": path,
                                                       "error": verdict.message, "retry_in": round(delay, 2)})
                self._sleep(delay)
                continue
            if not isinstance(reply, dict):
                raise SourceError(self.source, f"{path} answered with a JSON {type(reply).__name__}, not an object")
            return reply
        raise AssertionError("unreachable")

    def _authenticate(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        # Passed as `auth` to ApiClient.do, this runs once per HTTP attempt — the SDK's own retries included —
        # so the rate limit bounds every request the workspace sees. Headers are the SDK's, as it would add them.
        self.limiter.acquire()
        assert self._client is not None
        request.headers.update(self._client.config.authenticate())
        return request

    def _sdk_settings(self) -> Json:
        cfg = self.config
        settings: Json = {
            "retry_timeout_seconds": max(1, int(cfg.retry_timeout.total_seconds())),
            "http_timeout_seconds": cfg.http_timeout.total_seconds(),
            "product": "rca-poller",
            "product_version": _version(),
        }
        optional = {"host": cfg.host, "profile": cfg.profile, "config_file": cfg.config_file,
                    "client_id": cfg.client_id, "azure_workspace_resource_id": cfg.azure_workspace_resource_id,
                    "azure_tenant_id": cfg.azure_tenant_id, "azure_client_id": cfg.azure_client_id}
        settings.update({name: value for name, value in optional.items() if value})
        auth = cfg.effective_auth_type
        if auth != "default":
            settings["auth_type"] = auth
        if auth == "pat":
            settings["token"] = self._secret(cfg.token_env, "a personal access token")
        secrets = {"oauth-m2m": ("client_secret", cfg.client_secret_env),
                   "azure-client-secret": ("azure_client_secret", cfg.azure_client_secret_env)}
        if auth in secrets and self._environ.get(secrets[auth][1]):
            name, env = secrets[auth]
            settings[name] = self._environ[env]
        return settings

    def _secret(self, env: str, what: str) -> str:
        value = self._environ.get(env, "").strip()
        if not value:
            raise SourceError(self.source, f"environment variable {env} is not set: it must hold {what} "
                                           f"(sources.{self.source}.token_env names it)", retryable=False)
        return value


def _is_api_error(exc: BaseException) -> bool:
    from databricks.sdk.core import DatabricksError  # imported already: a client exists when errors arrive

    return isinstance(exc, DatabricksError)


def _short(exc: BaseException) -> str:
    """First line of an error, capped: SDK messages can carry whole debug dumps."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= MESSAGE_CAP else line[:MESSAGE_CAP] + "…"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rca-poller")
    except PackageNotFoundError:
        return "0.0.0"
