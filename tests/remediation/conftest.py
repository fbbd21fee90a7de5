"""Fixtures the remediation test modules share (a module may override them): a Databricks workspace with one
failed run, and an empty store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from poller.emulators.databricks import DatabricksEmulator
from poller.store import Store
from tests.remediation.helpers import failed_run, make_store


@pytest.fixture
def emu() -> Iterator[DatabricksEmulator]:
    with DatabricksEmulator() as emulator:
        failed_run(emulator)
        yield emulator


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = make_store(tmp_path)
    yield store
    store.close()
