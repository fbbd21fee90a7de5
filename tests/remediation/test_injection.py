"""The RCA issue's injection fixtures, through the whole processor with every default policy on, act nothing."""

from __future__ import annotations

import json
from pathlib import Path

from sqlmodel import select

from poller.models import Failure
from poller.schema import RemediationAttemptRow, RemediationAuditRow
from tests.remediation.helpers import NOW, commit, make_store, processor, settings

INJECTION = Path(__file__).resolve().parents[1] / "testdata" / "rca" / "injection"


def test_injection_fixtures_trigger_no_action(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    failures = []
    for path in sorted(INJECTION.glob("*.json")):
        data = json.loads(path.read_text())["failure"]
        failures.append(Failure(key=f"inj:{path.stem}", occurred_at=NOW, **data))
    commit(store, failures)
    processor(settings(use_defaults=True, policies=[]), {}).run(store, NOW)
    with store.session() as session:
        assert session.scalars(select(RemediationAttemptRow)).all() == []
        outcomes = [json.loads(r.detail_json)["outcome"] for r in session.scalars(select(RemediationAuditRow))]
    assert outcomes == ["no_match"] * len(failures)
    store.close()
