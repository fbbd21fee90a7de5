"""Run by test_crash.py in a child process: one processor pass whose action is SIGKILLed right after its call.

Usage: python crash_child.py STATE_DB EMULATOR_URL TOKEN ACTION
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from databricks.sdk import WorkspaceClient
from databricks.sdk.core import Config as SdkConfig

from poller.remediation.actions.base import Action, Json
from poller.remediation.build import databricks_actions
from poller.store import Store
from tests.remediation.helpers import LIBRARY_FALLBACKS, NOW, processor, settings


class KilledAfterCall:
    """The real action, except that the process dies the instant its mutating call has returned."""

    def __init__(self, inner: Action) -> None:
        self.inner, self.name = inner, inner.name

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def perform(self, params: Json, key: str) -> str:
        self.inner.perform(params, key)
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")


def main(db: str, url: str, token: str, action: str) -> None:
    client = WorkspaceClient(config=SdkConfig(host=url, token=token, auth_type="pat", retry_timeout_seconds=2))
    actions = databricks_actions(lambda source: client)
    actions[action] = KilledAfterCall(actions[action])  # type: ignore[assignment]
    policy = {"name": "crash", "action": action, "match": {"service": ["databricks"]}}
    config = settings(policies=[policy], library_fallbacks=LIBRARY_FALLBACKS)
    processor(config, actions).run(Store(f"sqlite:///{db}"), NOW)


if __name__ == "__main__":
    main(*sys.argv[1:5])
