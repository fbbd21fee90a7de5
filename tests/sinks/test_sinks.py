"""What each sink sends: ServiceNow fields and OAuth, Jira's local-mapping-first and ADF, Azure DevOps Repro
Steps and tags, Slack blocks, a Teams 1.4 card, a signed webhook, a multipart email; and redacted content."""

from __future__ import annotations

import base64
from collections.abc import Callable
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from poller.emulators import itsm
from poller.errors import SinkError
from poller.schema import FailureRow, IncidentRow
from poller.sinks import Delivery, TicketAction
from poller.sinks.content import build_content, severity
from poller.sinks.webhook import verify
from poller.store import Store
from tests.sinks.conftest import Rig, content
from tests.storm import START


def test_servicenow_fields_and_reopen(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig("servicenow", assignment_group="data-platform")
    created = rig.sink.deliver(Delivery("open", content()))
    record = rig.server.incidents[created.remote.remote_id]  # type: ignore[union-attr]
    assert record["correlation_id"] == content().marker and record["correlation_display"] == "rca-poller"
    assert (record["impact"], record["urgency"], record["assignment_group"]) == ("1", "2", "data-platform")
    assert "UserErrorFileNotFound" in record["description"] and "Check the upstream export." in record["description"]
    rig.sink.deliver(Delivery("resolve", content(status="resolved"), created.remote))
    again = rig.sink.deliver(Delivery("update", content(occurrences=7), created.remote))
    assert again.action is TicketAction.REOPEN and record["state"] == "2"


def test_servicenow_oauth_client_credentials(make_rig: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SN_SECRET", itsm.DEFAULT_CLIENT_SECRET)
    rig = make_rig("servicenow", auth="oauth", client_id=itsm.DEFAULT_CLIENT_ID, client_secret_env="SN_SECRET",
                   username=None)
    rig.sink.deliver(Delivery("open", content()))
    rig.sink.deliver(Delivery("update", content()))
    assert [r.path for r in rig.server.requests].count("/oauth_token.do") == 1  # the token is reused
    assert rig.count() == 1


def test_jira_trusts_the_local_mapping_because_search_lags(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig("jira")
    rig.server.search_lag = 60.0
    created = rig.sink.deliver(Delivery("open", content()))
    updated = rig.sink.deliver(Delivery("update", content(), created.remote))
    assert updated.action is TicketAction.UPDATE and rig.count() == 1
    assert not [r for r in rig.server.requests if "search" in r.path][1:]  # only the lookup before the create
    issue = rig.server.issues[created.remote.remote_id]  # type: ignore[union-attr]
    assert issue["fields"]["description"]["type"] == "doc" and content().marker in issue["fields"]["labels"]
    rig.sink.deliver(Delivery("resolve", content(), created.remote))
    assert issue["status"] == "Done"


def test_jira_unknown_transition_is_a_permanent_error(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig("jira_dc", resolve_transition="Closed")
    created = rig.sink.deliver(Delivery("open", content()))
    issue = rig.server.issues[created.remote.remote_id]  # type: ignore[union-attr]
    assert isinstance(issue["fields"]["description"], str)  # Data Center: REST v2 takes plain text
    with pytest.raises(SinkError, match=r"no transition 'Closed'.*available: To Do, In Progress, Done") as caught:
        rig.sink.deliver(Delivery("resolve", content(), created.remote))
    assert not caught.value.retryable


def test_azure_devops_bug_body_in_repro_steps(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig("azure_devops", area_path="DataPlatform\\Ops")
    created = rig.sink.deliver(Delivery("open", content()))
    fields = rig.server.items[int(created.remote.remote_id)]  # type: ignore[union-attr]
    assert "UserErrorFileNotFound" in fields["Microsoft.VSTS.TCM.ReproSteps"] and "System.Description" not in fields
    assert content().marker in fields["System.Tags"] and fields["System.AreaPath"] == "DataPlatform\\Ops"
    rig.sink.deliver(Delivery("resolve", content(), created.remote))
    assert fields["System.State"] == "Resolved"


def test_slack_block_kit(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig("slack")
    rig.sink.deliver(Delivery("open", content(error="x" * 5000)))
    (message,) = rig.server.messages["slack"]
    assert message["blocks"][0]["type"] == "header"
    assert all(len(b.get("text", {}).get("text", "")) <= 3000 for b in message["blocks"])
    assert "adf.azure.com" in message["blocks"][-1]["elements"][0]["text"]


def test_teams_adaptive_card_1_4_accepted_not_shown(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig("teams")
    done = rig.sink.deliver(Delivery("resolve", content(status="resolved")))
    card = rig.server.messages["teams"][0]["attachments"][0]["content"]
    assert card["version"] == "1.4" and card["body"][0]["text"].startswith("Incident resolved")
    assert done.action is TicketAction.RESOLVE and "202" in done.note


def test_webhook_is_signed(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig("webhook")
    rig.sink.deliver(Delivery("open", content()))
    (request,) = rig.server.requests
    assert verify(rig.server.webhook_key, request.headers["x-rca-poller-timestamp"], request.body.encode(),
                  request.headers["x-rca-poller-signature"])
    assert not verify(b"another key", request.headers["x-rca-poller-timestamp"], request.body.encode(),
                      request.headers["x-rca-poller-signature"])
    assert request.json()["event"] == "incident.open"


def test_email_plain_and_html_over_starttls(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig("email")
    rig.sink.deliver(Delivery("open", content()))
    (envelope,) = rig.server.inbox.messages
    message = message_from_bytes(envelope.content, policy=policy.default)
    assert str(message["Subject"]).strip().startswith("[rca-poller] New incident:")
    assert [p.get_content_type() for p in message.walk()][1:] == ["text/plain", "text/html"]
    assert envelope.rcpt_tos == ["oncall@example.com"]


def test_content_is_redacted_and_severity_derived(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/state.db")
    secret = "AccountKey=" + base64.b64encode(b"k" * 48).decode()
    with store.session() as session:
        incident = IncidentRow(fingerprint="f" * 40, service="adf", resource="pl", error_code="2200", kind="activity",
                               title="t", template="x", first_seen=START, last_seen=START, created_at=START,
                               updated_at=START, occurrences=60, rca_json='{"category": "transient", "summary": '
                               f'"uses {secret}", "probable_cause": "c", "recommended_actions": ["rotate {secret}"]}}')
        session.add(incident)
        session.flush()
        session.add(FailureRow(key="k", source="s", service="adf", kind="activity", resource="pl", resource_id="r",
                               run_id="run", error_code="2200", error_message=f"failed with {secret}",
                               failure_type="UserError", occurred_at=START, detected_at=START, metadata_json="{}",
                               raw_json="{}", incident_id=incident.id))
        session.flush()
        built = build_content(session, incident, "sn")
    assert secret not in built.text() and "AccountKey" in built.error
    assert built.severity == "medium"  # transient (low), seen 60 times: one step up
    assert severity("permission", 1) == "high" and severity("code", 500) == "critical"
