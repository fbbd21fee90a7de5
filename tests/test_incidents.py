"""Incidents: grouping by fingerprint, once-per-incident RCA, local tickets, quiet-period resolution."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from poller.config import RcaConfig
from poller.emulators.openai_api import OpenAIEmulator
from poller.emulators.openai_wire import Reply
from poller.incidents import Processor
from poller.rca import RcaEngine
from poller.store import FailureRow, IncidentRow, RcaCallRow, Store, TicketRow
from tests.storm import START, storm


def fill(store: Store, failures: list, batch: int = 5000) -> None:
    for i in range(0, len(failures), batch):
        with store.tick("storm", START) as tx:
            tx.add_failures(failures[i : i + batch])


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path}/state.db")


def rules_processor(**kw: object) -> Processor:
    return Processor(engine=RcaEngine(RcaConfig()), **kw)  # type: ignore[arg-type]


@pytest.fixture
def llm(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator() as emulator:
        monkeypatch.setenv("OPENAI_API_KEY", emulator.api_key)
        yield emulator


def llm_processor(emulator: OpenAIEmulator) -> Processor:
    config = RcaConfig(provider="openai", base_url=emulator.url + "/v1", model="gpt-4o-mini", max_retries=0)
    return Processor(engine=RcaEngine(config))


def test_storm_of_10000_from_40_causes_makes_40_incidents_and_40_llm_calls(
    store: Store, llm: OpenAIEmulator
) -> None:
    fill(store, list(storm(10_000, 40)))
    stats = llm_processor(llm).run(store, START + timedelta(hours=3))
    assert stats.grouped == 10_000
    assert store.count(IncidentRow) == 40
    assert llm.count() == 40
    assert store.count(RcaCallRow) == 40
    assert store.count(TicketRow) == 40
    assert {i.occurrences for i in store.incidents()} == {250}
    assert store.backlog() == 0
    # A second run has nothing to do: no new call, no new ticket.
    llm_processor(llm).run(store, START + timedelta(hours=3))
    assert llm.count() == 40


def test_recurrence_joins_open_incident_and_updates_ticket(store: Store) -> None:
    failures = list(storm(6, 2))
    fill(store, failures[:2])
    processor = rules_processor()
    processor.run(store, START)
    (ticket_a, _) = store.tickets()
    assert ticket_a.occurrences == 1
    fill(store, failures[2:])
    processor.run(store, START + timedelta(minutes=5))
    tickets = store.tickets()
    assert len(tickets) == 2 and {t.occurrences for t in tickets} == {3}
    assert store.count(IncidentRow) == 2


def test_quiet_incident_resolves_and_recurrence_opens_linked_incident(store: Store) -> None:
    failures = list(storm(3, 1))
    fill(store, failures[:1])
    processor = rules_processor(quiet_period=timedelta(hours=1))
    processor.run(store, START)
    processor.run(store, START + timedelta(hours=2))
    (resolved,) = store.incidents()
    assert resolved.status == "resolved" and resolved.resolution == "quiet"
    assert store.tickets()[0].status == "resolved"
    late = replace(failures[1], occurred_at=START + timedelta(hours=3))
    fill(store, [late])
    processor.run(store, START + timedelta(hours=3))
    newest, oldest = store.incidents()
    assert newest.status == "open" and newest.previous_id == oldest.id
    assert newest.fingerprint == oldest.fingerprint


def test_rules_rca_is_stored_once_per_incident(store: Store) -> None:
    fill(store, list(storm(80, 40)))
    rules_processor().run(store, START)
    incidents = store.incidents()
    assert len(incidents) == 40
    assert all(i.rca_status == "done" and i.rca() for i in incidents)
    assert store.count(RcaCallRow) == 0  # the rules provider makes no call


def test_cached_rca_serves_a_recurrence(store: Store, llm: OpenAIEmulator) -> None:
    failures = list(storm(3, 1))
    processor = replace(llm_processor(llm), quiet_period=timedelta(hours=1))
    fill(store, failures[:1])
    processor.run(store, START)
    processor.run(store, START + timedelta(hours=2))
    fill(store, [replace(failures[1], occurred_at=START + timedelta(hours=3))])
    processor.run(store, START + timedelta(hours=3))
    assert store.count(IncidentRow) == 2
    assert llm.count() == 1  # the second incident reused the analysis of its fingerprint


def test_llm_failure_falls_back_to_rules_and_records_why(store: Store, llm: OpenAIEmulator) -> None:
    llm.script(Reply.rate_limited())
    fill(store, list(storm(1, 1)))
    llm_processor(llm).run(store, START)
    (incident,) = store.incidents()
    rca = incident.rca()
    assert rca is not None and rca["provider"] == "rules" and rca["fallback_reason"]
    found = store.incident(incident.id or 0)
    assert found is not None
    (call,) = found[3]
    assert call.status == "rate_limited"


def test_crash_between_stages_repeats_nothing_visible(store: Store, llm: OpenAIEmulator) -> None:
    fill(store, list(storm(100, 5)))
    processor = llm_processor(llm)
    from poller.incidents import ProcessContext, group_stage

    ctx = ProcessContext(START, processor.quiet_period, processor.cache_ttl, processor.limits)
    group_stage(store, ctx)  # "crash" after grouping: no RCA, no ticket yet
    assert store.count(TicketRow) == 0 and store.count(FailureRow) == 100
    processor.run(store, START)
    processor.run(store, START)
    assert llm.count() == 5 and store.count(TicketRow) == 5
