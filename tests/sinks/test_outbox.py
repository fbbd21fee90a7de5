"""The outbox through the real processor and the ServiceNow emulator: one ticket per incident, updates on
recurrence, resolve, filters, a sink down for five ticks, permanent errors, and the state-change notifications."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from poller.config import RcaConfig
from poller.emulators.http_base import Fault
from poller.incidents import Processor
from poller.rca import RcaEngine
from poller.schema import OutboxRow, SinkTicketRow
from poller.sinks import Sink
from poller.sinks.outbox import outbox_rows, sink_tickets
from poller.store import IncidentRow, Store
from tests.sinks.conftest import Rig
from tests.storm import START, storm

NOW = START + timedelta(hours=1)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path}/state.db")


def add(store: Store, total: int, causes: int, offset: int = 0) -> None:
    failures = [replace(f, key=f"{f.key}:{offset}") for f in storm(total, causes)]
    with store.tick("storm", START) as tx:
        tx.add_failures(failures)


def processor(*sinks: Sink) -> Processor:
    return Processor(engine=RcaEngine(RcaConfig()), quiet_period=timedelta(hours=6), sinks=sinks)


def outbox(store: Store) -> list[OutboxRow]:
    return outbox_rows(store)


def links(store: Store) -> list[SinkTicketRow]:
    return sink_tickets(store)


def creates(rig: Rig) -> list[str]:
    return [r.json()["correlation_id"] for r in rig.server.requests if r.method == "POST"]


def test_one_ticket_per_incident_then_nothing_new(store: Store, make_rig: Callable[..., Rig]) -> None:
    rig = make_rig("servicenow")
    add(store, 300, 6)
    stats = processor(rig.sink).run(store, NOW)
    assert stats.enqueued == stats.delivered == 6
    assert rig.count() == 6 and len(links(store)) == 6
    assert {link.remote_id for link in links(store)} == set(rig.server.incidents)
    before = len(rig.server.requests)
    processor(rig.sink).run(store, NOW + timedelta(minutes=1))
    assert len(rig.server.requests) == before


def test_recurrence_waits_for_repeat_interval_and_coalesces(store: Store, make_rig: Callable[..., Rig]) -> None:
    rig = make_rig("servicenow", repeat_interval="30m")
    add(store, 10, 1)
    processor(rig.sink).run(store, NOW)
    for n in range(3):  # three recurrences inside the repeat interval: no note yet
        add(store, 10, 1, offset=n + 1)
        processor(rig.sink).run(store, NOW + timedelta(minutes=n + 1))
    (sys_id,) = rig.server.incidents
    assert rig.server.journal[sys_id] == []
    processor(rig.sink).run(store, NOW + timedelta(minutes=40))
    assert len(rig.server.journal[sys_id]) == 1 and "40 occurrence(s)" in rig.server.journal[sys_id][0]
    assert [r.action for r in outbox(store)] == ["open", "update"]


def test_quiet_incident_resolves_the_ticket(store: Store, make_rig: Callable[..., Rig]) -> None:
    rig = make_rig("servicenow")
    add(store, 10, 1)
    processor(rig.sink).run(store, NOW)
    processor(rig.sink).run(store, NOW + timedelta(hours=7))
    (record,) = rig.server.incidents.values()
    assert record["state"] == "6" and record["close_code"] == "Solution provided"
    assert [(r.action, r.result) for r in outbox(store)] == [("open", "create"), ("resolve", "resolve")]


def test_down_for_five_ticks_then_everything_in_order(store: Store, make_rig: Callable[..., Rig]) -> None:
    rig = make_rig("servicenow")
    rig.server.down = True
    for tick in range(5):  # a new cause each tick; none can be delivered
        add(store, 2 * (tick + 1), tick + 1, offset=tick)
        processor(rig.sink).run(store, NOW + timedelta(minutes=tick))
    pending = [r for r in outbox(store) if r.status == "pending"]
    assert len(pending) == 5 and rig.count() == 0
    assert pending[0].attempts >= 1 and pending[0].last_error and "HTTP 503" in pending[0].last_error
    assert all(r.attempts == 0 for r in pending[1:])  # the queue stopped at its head: nothing overtook it
    rig.server.down = False
    processor(rig.sink).run(store, NOW + timedelta(hours=1))
    assert rig.count() == 5
    markers = [f"rcapoller-{i.fingerprint[:16]}-{i.id}" for i in sorted(store.incidents(), key=lambda i: i.id or 0)]
    assert creates(rig) == markers  # in the order the incidents were opened
    assert all(r.status == "sent" for r in outbox(store) if r.action == "open")


def test_backoff_holds_the_queue_until_the_next_attempt(store: Store, make_rig: Callable[..., Rig]) -> None:
    rig = make_rig("servicenow")
    add(store, 2, 1)
    rig.server.fail(Fault(status=429))
    processor(rig.sink).run(store, NOW)
    (row,) = outbox(store)
    assert row.next_attempt_at is not None and row.next_attempt_at >= NOW + timedelta(seconds=30)
    processor(rig.sink).run(store, NOW + timedelta(seconds=5))
    assert rig.count() == 0
    processor(rig.sink).run(store, NOW + timedelta(minutes=5))
    assert rig.count() == 1


def test_permanent_error_is_recorded_and_the_queue_moves_on(store: Store, make_rig: Callable[..., Rig]) -> None:
    rig = make_rig("servicenow")
    add(store, 2, 2)
    rig.server.fail(Fault(status=400, body={"error": {"message": "Invalid field"}}, method="POST"))
    processor(rig.sink).run(store, NOW)
    first, second = outbox(store)
    assert first.status == "failed_permanent" and first.last_error and "HTTP 400" in first.last_error
    assert second.status == "sent" and rig.count() == 1


@pytest.mark.parametrize(("options", "expected"), [
    ({"min_severity": "critical"}, 0),
    ({"services": ["nothing-like-this"]}, 0),
    ({"resources": ["zz-*"]}, 0),
    ({"min_severity": "low", "resources": ["*"]}, 3),
])
def test_filters(store: Store, make_rig: Callable[..., Rig], options: dict[str, Any], expected: int) -> None:
    rig = make_rig("servicenow", **options)
    add(store, 3, 3)
    processor(rig.sink).run(store, NOW)
    assert rig.count() == expected
    assert all(r.status == ("skipped" if expected == 0 else "sent") for r in outbox(store))


def test_notifications_per_state_change_not_per_occurrence(store: Store, make_rig: Callable[..., Rig]) -> None:
    slack = make_rig("slack")
    add(store, 5, 1)
    processor(slack.sink).run(store, NOW)
    for n in range(4):
        add(store, 5, 1, offset=n + 1)
        processor(slack.sink).run(store, NOW + timedelta(minutes=n + 1))
    processor(slack.sink).run(store, NOW + timedelta(hours=8))
    texts = [m["text"] for m in slack.server.messages["slack"]]
    assert [t.split(":")[0] for t in texts] == ["New incident", "Incident resolved"]


def test_rate_limit_spreads_deliveries(store: Store, make_rig: Callable[..., Rig]) -> None:
    rig = make_rig("servicenow", rate_limit=2)
    add(store, 5, 5)
    processor(rig.sink).run(store, NOW)
    assert rig.count() == 2
    processor(rig.sink).run(store, NOW + timedelta(seconds=61))
    assert rig.count() == 4


def test_tickets_cross_link(store: Store, make_rig: Callable[..., Rig]) -> None:
    sn, teams = make_rig("servicenow"), make_rig("teams")
    add(store, 1, 1)
    processor(sn.sink, teams.sink).run(store, NOW)
    card = teams.server.messages["teams"][0]["attachments"][0]["content"]
    assert any(a["title"] == "Ticket in servicenow-test" for a in card["actions"])
    assert store.count(IncidentRow) == 1
