"""The contract every sink keeps (STYLE 17): retryability by status, no secret anywhere, a second send for an
incident updates rather than creates, network errors become SinkError, and a crash after the remote create
leaves one ticket."""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Callable

import pytest

from poller.emulators.http_base import Fault
from poller.errors import SinkError
from poller.sinks import Delivery, TicketAction
from tests.sinks.conftest import ALL_SINKS, HTTP_SINKS, TICKET_SINKS, Rig, content

CREATE_PATH = {"servicenow": "table/incident", "jira": "/issue", "jira_dc": "/issue", "azure_devops": "/$"}
STATUS_MATRIX = [(400, False), (401, False), (403, False), (404, False), (408, True), (429, True), (500, True),
                 (502, True), (503, True), (504, True)]


@pytest.mark.parametrize("kind", HTTP_SINKS)
@pytest.mark.parametrize(("status", "retryable"), STATUS_MATRIX)
def test_status_decides_retryable(make_rig: Callable[..., Rig], kind: str, status: int, retryable: bool) -> None:
    rig = make_rig(kind)
    rig.server.fail(Fault(status=status, body={"error": "emulated"}))
    with pytest.raises(SinkError) as caught:
        rig.sink.deliver(Delivery("open", content()))
    assert caught.value.retryable is retryable
    assert caught.value.sink == f"{kind}-test"
    assert f"HTTP {status}" in str(caught.value)


@pytest.mark.parametrize(("code", "retryable"), [(421, True), (451, True), (550, False), (554, False)])
def test_email_smtp_code_decides_retryable(make_rig: Callable[..., Rig], code: int, retryable: bool) -> None:
    rig = make_rig("email")

    async def refuse(server: object, session: object, envelope: object) -> str:
        return f"{code} emulated refusal"

    rig.server.inbox.handle_DATA = refuse
    with pytest.raises(SinkError) as caught:
        rig.sink.deliver(Delivery("open", content()))
    assert caught.value.retryable is retryable


@pytest.mark.parametrize("kind", ALL_SINKS)
def test_network_errors_become_retryable_sink_errors(make_rig: Callable[..., Rig], kind: str) -> None:
    rig = make_rig(kind)
    rig.stop_server()
    with pytest.raises(SinkError) as caught:
        rig.sink.deliver(Delivery("open", content()))
    assert caught.value.retryable
    assert isinstance(caught.value.__cause__, Exception)


@pytest.mark.parametrize("kind", ALL_SINKS)
def test_no_secret_in_errors_logs_or_repr(make_rig: Callable[..., Rig], kind: str,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    rig = make_rig(kind)
    messages = [repr(rig.sink)]
    for fault in (Fault(status=401), Fault(status=503), Fault(disconnect=True)):
        if hasattr(rig.server, "fail"):
            rig.server.fail(fault)
        try:
            rig.sink.deliver(Delivery("open", content()))
        except SinkError as exc:
            messages += [str(exc), repr(exc), str(exc.__cause__)]
    rig.stop_server()
    with pytest.raises(SinkError) as caught:
        rig.sink.deliver(Delivery("open", content()))
    messages += [str(caught.value), caplog.text]
    for secret in rig.secrets:
        assert all(secret not in text for text in messages), secret


@pytest.mark.parametrize("kind", ALL_SINKS)
def test_second_send_for_an_incident_updates(make_rig: Callable[..., Rig], kind: str) -> None:
    rig = make_rig(kind)
    first = rig.sink.deliver(Delivery("open", content()))
    assert first.action is TicketAction.CREATE
    # No local mapping is passed: the ticket sinks must find their own marker.
    second = rig.sink.deliver(Delivery("update", content(occurrences=9)))
    assert second.action is TicketAction.UPDATE
    if kind in TICKET_SINKS:
        assert rig.count() == 1
        assert second.remote == first.remote
    else:
        assert rig.count() == 2  # a message per state change


@pytest.mark.parametrize("kind", TICKET_SINKS)
def test_answer_lost_after_remote_create_still_one_ticket(make_rig: Callable[..., Rig], kind: str) -> None:
    rig = make_rig(kind)
    # The create happens, then the answer is lost: the sink cannot know the ticket exists.
    rig.server.fail(Fault(after=True, disconnect=True, method="POST", path=CREATE_PATH[kind]))
    with pytest.raises(SinkError) as caught:
        rig.sink.deliver(Delivery("open", content()))
    assert caught.value.retryable and rig.count() == 1
    again = rig.sink.deliver(Delivery("open", content()))
    assert again.action is TicketAction.UPDATE
    assert rig.count() == 1


@pytest.mark.parametrize("kind", TICKET_SINKS)
def test_resolve_then_recurrence(make_rig: Callable[..., Rig], kind: str) -> None:
    rig = make_rig(kind)
    created = rig.sink.deliver(Delivery("open", content()))
    resolved = rig.sink.deliver(Delivery("resolve", content(status="resolved"), created.remote))
    assert resolved.action is TicketAction.RESOLVE
    assert rig.sink.deliver(Delivery("resolve", content(incident_id=2))).action is TicketAction.SKIP
    assert rig.count() == 1


@pytest.mark.parametrize("kind", ALL_SINKS)
def test_check_reports_authentication(make_rig: Callable[..., Rig], kind: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    rig = make_rig(kind)
    assert rig.sink.check()
    if kind in ("slack", "teams"):
        return  # a check must not post; only the URL's presence is checked
    if kind == "email":
        rig.sink._password = "wrong"  # type: ignore[attr-defined]
        rig.sink._config = rig.sink._config.model_copy(update={"username": "mailer"})  # type: ignore[attr-defined]
    else:
        rig.server.fail(Fault(status=401, body={"error": "not authenticated"}))
    if kind == "webhook":
        return  # the webhook check does not call the receiver
    with pytest.raises(SinkError) as caught:
        rig.sink.check()
    assert not caught.value.retryable
    assert isinstance(smtplib.SMTP, type)
