"""What the Databricks source remembers between ticks of one process: a cost saving and a way to see changes,
never what the cursor relies on."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from poller.extractors.databricks import LIBRARY_STATUS_IS_FAILURE
from poller.sources.base import Window
from poller.sources.databricks_client import Json

#: Library statuses after which a new FAILED is a new failure, not the same one still showing.
LIBRARY_INSTALLED = frozenset({"INSTALLED", "RESTORED"})


@dataclass(frozen=True, slots=True)
class RunMemory:
    """Runs active at ``as_of``, and runs seen ending since, for a window starting in [covered_from, as_of]."""

    covered_from: datetime
    as_of: datetime
    active: frozenset[int]  # run ids
    finished: dict[int, Json]  # run id → a failed run that ended after the window start, until the start passes it

    def covers(self, window: Window) -> bool:
        return self.covered_from <= window.start <= self.as_of <= window.end


@dataclass(frozen=True, slots=True)
class LibraryEpisode:
    """One library on one cluster as last seen: the stamp of its current (or last) failure."""

    status: str
    base: int  # the cluster's last (re)start (ms) when seen
    stamp: str = ""
    observed_ms: int = 0
    installed_since: bool = False  # INSTALLED seen after the failure that `stamp` names


def library_failed(status: str) -> bool:
    return LIBRARY_STATUS_IS_FAILURE.get(status, "FAIL" in status)


def next_episode(previous: LibraryEpisode | None, status: str, base: int, now_ms: int) -> LibraryEpisode:
    """How the occurrence stamp moves: the same failure keeps it, a failure after INSTALLED gets a new one."""
    failed = library_failed(status)
    same_life = previous is not None and previous.base == base
    if not failed:
        if previous is None:
            return LibraryEpisode(status, base)
        seen_installed = previous.installed_since or (bool(previous.stamp) and status in LIBRARY_INSTALLED)
        return replace(previous, status=status, base=base, installed_since=seen_installed)
    if previous is not None and same_life and previous.stamp and not previous.installed_since:
        return replace(previous, status=status)  # still the failure already stamped
    again = previous is not None and same_life and previous.installed_since
    return LibraryEpisode(status, base, f"{base}+{now_ms}" if again else str(base), now_ms)


@dataclass(frozen=True, slots=True)
class Sweep:
    """A cluster and library sweep under way: it selects what changed since ``began.start``, and once done the
    cursor may move to ``began.end``."""

    began: Window  # the window of the tick the sweep began in
    token: str | None = None  # the next clusters/list page
    listed: bool = False  # every clusters/list page is read
    clusters: tuple[Json, ...] = ()  # what the pages read so far listed


@dataclass(frozen=True, slots=True)
class Memory:
    runs: RunMemory | None = None
    clusters: dict[str, tuple[tuple[str, str], int]] = field(default_factory=dict)  # id → (state, message), changed
    libraries: dict[tuple[str, str], LibraryEpisode] = field(default_factory=dict)
    outputs: dict[int, Json] = field(default_factory=dict)  # task run id → get-output
    swept: bool = False  # a live tick of this process has finished a sweep
    sweep: Sweep | None = None  # a sweep spread over ticks, still under way
