"""RCA test fixtures: the OpenAI emulator over a real socket, an API key in the environment, failures."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from poller.emulators.openai_api import OpenAIEmulator
from poller.models import Failure

WHEN = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
FailureFactory = Callable[..., Failure]


def make_failure(**fields: Any) -> Failure:
    """A failure with test defaults; any Failure field can be given."""
    values: dict[str, Any] = {
        "key": "adf:activity:0001", "service": "adf", "kind": "activity_run", "resource": "pl_sales",
        "error_message": "boom", "occurred_at": WHEN, "error_code": "", "metadata": {},
    }
    values.update(fields)
    return Failure(**values)


@pytest.fixture
def failure() -> FailureFactory:
    return make_failure


@pytest.fixture
def emu() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator() as emulator:
        yield emulator


@pytest.fixture
def openai_key(emu: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> str:
    """The emulator's key in OPENAI_API_KEY and AZURE_OPENAI_API_KEY, as an operator's environment has it."""
    monkeypatch.setenv("OPENAI_API_KEY", emu.api_key)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", emu.api_key)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    return emu.api_key
