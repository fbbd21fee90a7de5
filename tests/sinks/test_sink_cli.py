"""Sink config (exact messages), the documented example, `check` against the emulators, `status` and
`tickets list` showing deliveries and permanent errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from poller.cli import main
from poller.config import parse_config
from poller.emulators import itsm
from poller.emulators import jira as jira_emu
from poller.emulators.http_base import Fault
from poller.emulators.itsm import ServiceNowEmulator
from poller.emulators.jira import JiraEmulator
from poller.errors import ConfigError
from poller.store import Store
from tests.sinks.conftest import Rig
from tests.storm import START, storm

ROOT = Path(__file__).resolve().parents[2]
SN = {"type": "servicenow", "instance_url": "https://x.service-now.com", "username": "u"}


@pytest.mark.parametrize(("sink", "message"), [
    ({"type": "pagerduty"}, "sinks.s: unknown sink type 'pagerduty' (known: servicenow, jira, azure_devops, slack, "
                            "teams, email, webhook)"),
    ({"instance_url": "https://x"}, "sinks.s: each sink needs a 'type' (known: servicenow, jira, azure_devops, "
                                    "slack, teams, email, webhook)"),
    ({**SN, "password": "hunter2"}, "sinks.s.password: unknown key"),
    ({**SN, "password_env": "hunter2!"}, "sinks.s.password_env: must name the environment variable that holds the "
                                         "secret, not the secret itself"),
    ({**SN, "instance_url": "http://x.service-now.com"}, "sinks.s.instance_url: must be an https:// URL (TLS is "
                                                         "always verified; http:// only for localhost)"),
    ({**SN, "username": None}, "sinks.s: username is required when auth is basic"),
    ({**SN, "min_severity": "urgent"}, "sinks.s.min_severity: Input should be 'low', 'medium', 'high' or 'critical'"),
    ({"type": "jira", "url": "https://x.atlassian.net", "project": "OPS"},
     "sinks.s: email is required for Jira Cloud (it signs in with email + API token)"),
    ({"type": "email", "host": "smtp", "sender": "a@b"}, "sinks.s.recipients: required key is missing"),
])
def test_bad_sink_config_names_the_key(sink: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"sinks": {"s": sink}}, {})
    assert str(caught.value) == message


def test_documented_example_of_every_sink_is_valid() -> None:
    text = (ROOT / "config.yaml").read_text()
    section = text[text.index("sinks: {}"):text.index("# Auto-remediation")]
    body = "sinks:\n" + "\n".join(line[1:] for line in section.splitlines()[1:] if line.startswith("#  "))
    config = parse_config(yaml.safe_load(body), {})
    assert sorted(s.type for s in config.sinks.values()) == sorted(
        ["servicenow", "jira", "azure_devops", "slack", "teams", "email", "webhook"])


def write_config(tmp_path: Path, sinks: dict[str, Any]) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"state": {"url": f"sqlite:///{tmp_path}/state.db"},
                                    "incidents": {"quiet_period": "3650d"}, "sinks": sinks}))
    return path


def test_check_reports_each_sinks_authentication(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SN_PASSWORD", itsm.DEFAULT_PASSWORD)
    monkeypatch.setenv("JIRA_TOKEN", "not-the-token")
    with ServiceNowEmulator() as sn, JiraEmulator() as jira:
        path = write_config(tmp_path, {
            "sn": {"type": "servicenow", "instance_url": sn.url, "username": itsm.DEFAULT_USER,
                   "password_env": "SN_PASSWORD"},
            "jira": {"type": "jira", "url": jira.url, "project": "OPS", "email": jira_emu.EMAIL,
                     "token_env": "JIRA_TOKEN"},
        })
        result = CliRunner().invoke(main, ["check", "--config", str(path), "--format", "json"])
    rows = {r["component"]: r for r in json.loads(result.stdout) if r["component"].startswith("sink ")}
    assert result.exit_code == 1
    assert rows["sink sn"]["ok"] and itsm.DEFAULT_USER in rows["sink sn"]["detail"]
    assert not rows["sink jira"]["ok"] and "HTTP 401" in rows["sink jira"]["detail"]
    assert "credential was refused" in rows["sink jira"]["hint"]
    assert "not-the-token" not in result.stdout


def test_status_and_tickets_list_show_deliveries_and_permanent_errors(
        tmp_path: Path, make_rig: Callable[..., Rig]) -> None:
    rig = make_rig("servicenow")
    path = write_config(tmp_path, {"sn": rig.config})
    store = Store(f"sqlite:///{tmp_path}/state.db")
    with store.tick("storm", START) as tx:
        tx.add_failures(list(storm(4, 2)))
    rig.server.fail(Fault(status=403, body={"error": {"message": "Insufficient rights"}}, method="POST"))
    once = CliRunner().invoke(main, ["once", "--config", str(path)])
    assert once.exit_code == 0, once.output
    listed = json.loads(CliRunner().invoke(main, ["tickets", "list", "--config", str(path), "--format",
                                                  "json"]).stdout)
    remote = [t for t in listed if t["sink"] == "sn"]
    assert sorted(t["delivery"] for t in remote) == ["failed_permanent", "ok"]
    failed = next(t for t in remote if t["delivery"] == "failed_permanent")
    assert "HTTP 403" in failed["last_error"] and failed["remote_id"] is None
    status = json.loads(CliRunner().invoke(main, ["status", "--config", str(path), "--format", "json"]).stdout)
    assert status == [{"sink": "sn", "pending": 0, "failed_permanent": 1, "sent": 1, "next_attempt_at": None,
                       "attempts": 0, "last_error": failed["last_error"]}]
    table = CliRunner().invoke(main, ["tickets", "list", "--config", str(path)]).stdout
    assert "failed_permanent" in table and "tickets in external sinks" in table


def test_demo_opens_servicenow_tickets_then_updates_the_recurring_one(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "poller.cli", "demo", "--keep", str(tmp_path / "demo")],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("ServiceNow after")]
    assert len(lines) == 2 and "0 work note(s)" in lines[0] and "1 work note(s)" in lines[1]
    assert "Copy_SalesOrders" in result.stdout.split(lines[1])[1].splitlines()[1]
    listed = json.loads(subprocess.run(
        [sys.executable, "-m", "poller.cli", "tickets", "list", "--config", str(tmp_path / "demo" / "config.yaml"),
         "--format", "json"], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout)
    remote = [t for t in listed if t["sink"] == "servicenow-demo"]
    assert remote and all(t["delivery"] == "ok" and t["remote_id"] for t in remote)
    assert sorted({t["last_action"] for t in remote}) == ["create", "update"]
