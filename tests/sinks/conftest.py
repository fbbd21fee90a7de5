"""Every sink against its emulator, built from config as the daemon builds it: the rigs the contract tests share."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from poller.config import parse_config
from poller.emulators import azure_devops as ado
from poller.emulators import chat, itsm
from poller.emulators import jira as jira_emu
from poller.emulators.azure_devops import AzureDevOpsEmulator
from poller.emulators.chat import ChatEmulator
from poller.emulators.http_base import HttpEmulator
from poller.emulators.itsm import ServiceNowEmulator
from poller.emulators.jira import JiraEmulator
from poller.emulators.tls import ThrowawayCA
from poller.sinks import Sink, build_sinks
from poller.sinks.content import TicketContent

SMTP_USER, SMTP_PASSWORD = "mailer", "smtp-emulator-password"
HTTP_SINKS = ("servicenow", "jira", "jira_dc", "azure_devops", "slack", "teams", "webhook")
TICKET_SINKS = ("servicenow", "jira", "jira_dc", "azure_devops")
ALL_SINKS = (*HTTP_SINKS, "email")


@dataclass
class Rig:
    """A sink, the server it talks to, how many tickets or messages that server holds, and the secrets."""

    kind: str
    sink: Sink
    server: Any
    count: Callable[[], int]
    secrets: tuple[str, ...]
    config: dict[str, Any] = field(default_factory=dict)

    def stop_server(self) -> None:
        self.server.stop()


def content(incident_id: int = 1, **kw: Any) -> TicketContent:
    base = dict(incident_id=incident_id, marker=f"rcapoller-0123456789abcdef-{incident_id}",
                title=f"[adf] pl_sales: Copy_Sales failed (2200) #{incident_id}", status="open", severity="high",
                service="adf", resource="pl_sales", run_id="run-1", error_code="2200",
                error="ErrorCode=UserErrorFileNotFound,'The file raw/sales.csv does not exist.'",
                summary="The source file is missing.", probable_cause="Upstream export did not run.",
                category="data", actions=("Check the upstream export.",), occurrences=3,
                first_seen="2026-11-29T08:00:00+00:00", last_seen="2026-11-29T08:05:00+00:00",
                links=(("Monitoring page", "https://adf.azure.com/en/monitoring/pipelineruns/run-1"),))
    return TicketContent(**{**base, **kw})


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 Message accepted for delivery"


class SmtpServer:
    """aiosmtpd with STARTTLS (our throwaway CA) and AUTH; `fail_with` makes DATA answer that code."""

    def __init__(self, ca: ThrowawayCA) -> None:
        self.inbox = _Inbox()
        self.port = _free_port()
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port, tls_context=ca.server_context(),
                                     require_starttls=True, authenticator=self._auth, auth_require_tls=True)

    @staticmethod
    def _auth(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.login == SMTP_USER.encode() and \
            data.password == SMTP_PASSWORD.encode()
        return AuthResult(success=ok, handled=False)

    def start(self) -> SmtpServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller.server is not None:
            self.controller.stop()



def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sink_config(kind: str, server: Any) -> dict[str, Any]:
    if kind == "servicenow":
        return {"type": "servicenow", "instance_url": server.url, "username": itsm.DEFAULT_USER,
                "password_env": "SN_PASSWORD"}
    if kind in ("jira", "jira_dc"):
        cloud = kind == "jira"
        return {"type": "jira", "url": server.url, "project": "OPS", "deployment": "cloud" if cloud else "datacenter",
                **({"email": jira_emu.EMAIL} if cloud else {}), "token_env": "JIRA_TOKEN"}
    if kind == "azure_devops":
        return {"type": "azure_devops", "organization_url": server.organization_url, "project": ado.PROJECT,
                "pat_env": "ADO_PAT"}
    if kind in ("slack", "teams"):
        return {"type": kind, "webhook_url_env": f"{kind.upper()}_URL"}
    if kind == "webhook":
        return {"type": "webhook", "url": server.webhook_url, "secret_env": "HOOK_KEY"}
    return {"type": "email", "host": "127.0.0.1", "port": server.port, "username": SMTP_USER,
            "password_env": "SMTP_PW", "sender": "rca@example.com", "recipients": ["oncall@example.com"]}


def start_server(kind: str, ca: ThrowawayCA) -> tuple[Any, Callable[[], int], dict[str, str]]:
    """The server for a sink kind, how to count what it holds, and the environment (secrets) the sink reads."""
    if kind == "servicenow":
        sn = ServiceNowEmulator().start()
        return sn, lambda: len(sn.incidents), {"SN_PASSWORD": itsm.DEFAULT_PASSWORD}
    if kind in ("jira", "jira_dc"):
        j = JiraEmulator().start()
        return j, lambda: len(j.issues), {"JIRA_TOKEN": jira_emu.API_TOKEN if kind == "jira" else jira_emu.PAT}
    if kind == "azure_devops":
        a = AzureDevOpsEmulator().start()
        return a, lambda: len(a.items), {"ADO_PAT": ado.PAT}
    if kind in ("slack", "teams", "webhook"):
        c = ChatEmulator().start()
        return c, lambda: len(c.messages[kind]), {"SLACK_URL": c.slack_url, "TEAMS_URL": c.teams_url,
                                                  "HOOK_KEY": chat.WEBHOOK_KEY}
    smtp = SmtpServer(ca).start()
    return smtp, lambda: len(smtp.inbox.messages), {"SMTP_PW": SMTP_PASSWORD}


def build_rig(kind: str, ca: ThrowawayCA, monkeypatch: pytest.MonkeyPatch, **options: Any) -> Rig:
    server, count, env = start_server(kind, ca)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cfg = sink_config(kind, server) | options
    (sink,) = build_sinks(parse_config({"sinks": {f"{kind}-test": cfg}}, {}))
    if kind == "email":
        sink.tls_context = ssl.create_default_context(cafile=str(ca.ca_path))  # type: ignore[attr-defined]
    secrets = tuple(v for k, v in env.items() if k in {"SN_PASSWORD", "JIRA_TOKEN", "ADO_PAT", "HOOK_KEY", "SMTP_PW"})
    secrets += (chat.SLACK_TOKEN, chat.TEAMS_TOKEN)
    return Rig(kind, sink, server, count, secrets, cfg)


@pytest.fixture(scope="session")
def ca(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayCA:
    return ThrowawayCA(Path(tmp_path_factory.mktemp("ca")))


@pytest.fixture
def make_rig(ca: ThrowawayCA, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(kind: str, **options: Any) -> Rig:
        rigs.append(build_rig(kind, ca, monkeypatch, **options))
        return rigs[-1]

    yield make
    for rig in rigs:
        rig.sink.close()
        rig.stop_server()


def is_http(server: Any) -> bool:
    return isinstance(server, HttpEmulator)
