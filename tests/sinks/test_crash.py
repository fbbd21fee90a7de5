"""SIGKILL between the remote create and the local commit, then a restart: still one ticket per incident."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from poller.emulators import itsm
from poller.emulators.http_base import Fault
from poller.emulators.itsm import ServiceNowEmulator
from poller.schema import SinkTicketRow
from poller.sinks.outbox import outbox_rows
from poller.store import Store
from tests.storm import START, storm

ROOT = Path(__file__).resolve().parents[2]
RCA_POLLER = [sys.executable, "-m", "poller.cli"]


def test_sigkill_after_remote_create_then_restart_makes_no_second_ticket(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/state.db")
    with store.tick("storm", START) as tx:
        tx.add_failures(list(storm(20, 2)))
    store.close()
    with ServiceNowEmulator() as sn:
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump({
            "state": {"url": f"sqlite:///{tmp_path}/state.db"},
            "incidents": {"quiet_period": "3650d"},  # the storm is old; it must stay open
            "sinks": {"sn": {"type": "servicenow", "instance_url": sn.url, "username": itsm.DEFAULT_USER,
                             "password_env": "SN_PASSWORD"}},
        }))
        env = {**os.environ, "SN_PASSWORD": itsm.DEFAULT_PASSWORD}
        # The first create is made, and its answer held back: the process dies before it can record it.
        sn.fail(Fault(after=True, delay=60, method="POST", path="table/incident"))
        proc = subprocess.Popen([*RCA_POLLER, "once", "--config", str(config)], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not sn.incidents and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert len(sn.incidents) == 1
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        store = Store(f"sqlite:///{tmp_path}/state.db")
        assert store.count(SinkTicketRow) == 0  # nothing recorded: the remote answer never arrived
        final = subprocess.run([*RCA_POLLER, "once", "--config", str(config)], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=60)
        assert final.returncode == 0, final.stdout + final.stderr
        markers = [r["correlation_id"] for r in sn.incidents.values()]
        assert len(markers) == len(set(markers)) == 2  # two incidents, one ServiceNow incident each
        assert store.count(SinkTicketRow) == 2
        rows = outbox_rows(store)
        assert [r.status for r in rows] == ["sent", "sent"]
        assert sorted(r.result or "" for r in rows) == ["create", "update"]  # the orphan was found, not recreated
