"""The lifecycle every emulator gets from ServedEmulator, checked on each of them over a real socket."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from poller.emulators.adf_management import AdfManagementEmulator
from poller.emulators.itsm import ServiceNowEmulator
from poller.emulators.log_analytics import LogAnalyticsEmulator
from poller.emulators.openai_api import OpenAIEmulator
from poller.emulators.serving import ServedEmulator
from poller.emulators.synapse import SynapseEmulator

EMULATORS: dict[str, tuple[Callable[[Path], ServedEmulator], str]] = {
    "log_analytics": (lambda _: LogAnalyticsEmulator(), "https"),
    "synapse": (lambda _: SynapseEmulator(), "https"),
    "adf_management": (AdfManagementEmulator, "https"),
    "openai": (lambda _: OpenAIEmulator(), "http"),
    "openai_tls": (lambda _: OpenAIEmulator(tls=True), "https"),
    "servicenow": (lambda _: ServiceNowEmulator(), "http"),
}


def accepts(url: str) -> bool:
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=2).close()
    except OSError:
        return False
    return True


@pytest.mark.parametrize("name", EMULATORS)
def test_start_serves_in_a_named_daemon_thread_and_stop_ends_it(name: str, tmp_path: Path) -> None:
    make, scheme = EMULATORS[name]
    emulator = make(tmp_path)
    with emulator as started:
        assert started is emulator
        assert emulator.start() is emulator  # idempotent: same server, same port
        url = emulator.url
        assert url.startswith(f"{scheme}://127.0.0.1:") and accepts(url)
        serving = [t for t in threading.enumerate() if t.name == emulator.thread_name]
        assert len(serving) == 1 and serving[0].daemon
    assert not serving[0].is_alive()
    assert not accepts(url)
    emulator.stop()  # a second stop is harmless


@pytest.mark.parametrize("name", ["log_analytics", "adf_management", "openai", "servicenow"])
def test_url_needs_a_started_emulator(name: str, tmp_path: Path) -> None:
    emulator = EMULATORS[name][0](tmp_path)
    with pytest.raises(RuntimeError, match="is not started"):
        _ = emulator.url
    emulator.close()
