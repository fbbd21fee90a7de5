"""What a Log Analytics tick queries: which tables hold each service's logs, and the KQL built for them.

A workspace may hold ADF logs in ``ADFActivityRun``/``ADFPipelineRun`` (resource-specific mode), in
``AzureDiagnostics`` (legacy mode), or in both while a diagnostic setting migrates (reference §1.5-1.6); Synapse
and Functions logs in some of their tables only. A cheap probe — one ``take 1`` per table over the TimeGenerated
range the queries scan — tells which tables hold rows (:func:`probe_query`); :class:`TablePresence` keeps the
answer for ``table_probe_interval`` and asks again sooner while a configured service has no table yet.

Each query (:data:`QUERIES`) is a template under ``kql/`` with slots (``{adf_failed_activities}``) filled from
fragments ``kql/<slot>.<Table>.kql``, one per table that holds rows — as a ``union`` when several do, so that a
run logged in two tables is one row — or from ``kql/<slot>.none.kql`` (an empty table of the right columns) when
none does. A query runs only when one of its ``requires`` tables holds rows: there is nothing to find otherwise,
and a table a workspace has never received would fail the query.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any

from poller.sources.base import Window

AZURE_DIAGNOSTICS = "AzureDiagnostics"
RESOURCE_SPECIFIC_ADF = ("ADFActivityRun", "ADFPipelineRun")

#: Each table the probe asks about, as the expression whose rows count (AzureDiagnostics holds every resource's).
TABLE_PROBES: dict[str, str] = {
    "ADFActivityRun": "ADFActivityRun",
    "ADFPipelineRun": "ADFPipelineRun",
    AZURE_DIAGNOSTICS: 'AzureDiagnostics | where ResourceProvider == "MICROSOFT.DATAFACTORY"',
    "SynapseIntegrationActivityRuns": "SynapseIntegrationActivityRuns",
    "SynapseIntegrationPipelineRuns": "SynapseIntegrationPipelineRuns",
    "AppExceptions": "AppExceptions",
    "FunctionAppLogs": "FunctionAppLogs",
}

#: ``adf_mode`` → the tables ADF logs are read from.
ADF_MODE_TABLES: dict[str, tuple[str, ...]] = {
    "auto": (*RESOURCE_SPECIFIC_ADF, AZURE_DIAGNOSTICS),
    "resource_specific": RESOURCE_SPECIFIC_ADF,
    "azure_diagnostics": (AZURE_DIAGNOSTICS,),
}

SERVICE_TABLES: dict[str, tuple[str, ...]] = {
    "adf": ADF_MODE_TABLES["auto"],
    "synapse": ("SynapseIntegrationActivityRuns", "SynapseIntegrationPipelineRuns"),
    "functions": ("AppExceptions", "FunctionAppLogs"),
}


@dataclass(frozen=True, slots=True)
class QuerySpec:
    """One query: its template, the tables it needs one of, and the tables each of its slots may read."""

    name: str
    service: str
    requires: tuple[str, ...]
    slots: tuple[tuple[str, tuple[str, ...]], ...] = ()


_ADF_ACTIVITY = ("ADFActivityRun", AZURE_DIAGNOSTICS)
_ADF_PIPELINE = ("ADFPipelineRun", AZURE_DIAGNOSTICS)
_SYNAPSE_ACTIVITY = ("SynapseIntegrationActivityRuns",)
_SYNAPSE_PIPELINE = ("SynapseIntegrationPipelineRuns",)
_FUNCTIONS = ("AppExceptions", "FunctionAppLogs")

#: Every query, in the order a tick runs them.
QUERIES: tuple[QuerySpec, ...] = (
    QuerySpec("adf_activity_failures", "adf", _ADF_ACTIVITY,
              (("adf_failed_activities", _ADF_ACTIVITY), ("adf_pipeline_runs", _ADF_PIPELINE))),
    QuerySpec("adf_pipeline_failures", "adf", _ADF_PIPELINE,
              (("adf_failed_pipelines", _ADF_PIPELINE), ("adf_failed_activity_runs", _ADF_ACTIVITY))),
    QuerySpec("synapse_activity_failures", "synapse", _SYNAPSE_ACTIVITY,
              (("synapse_pipeline_runs", _SYNAPSE_PIPELINE),)),
    QuerySpec("synapse_pipeline_failures", "synapse", _SYNAPSE_PIPELINE,
              (("synapse_failed_activity_runs", _SYNAPSE_ACTIVITY),)),
    QuerySpec("functions_failures", "functions", _FUNCTIONS, (("functions_exceptions", _FUNCTIONS),)),
)
SERVICE_QUERIES: dict[str, tuple[str, ...]] = {
    service: tuple(spec.name for spec in QUERIES if spec.service == service) for service in SERVICE_TABLES
}


@cache
def load_query(name: str) -> str:
    """The text of ``kql/<name>.kql``."""
    return resources.files("poller.sources").joinpath(f"kql/{name}.kql").read_text(encoding="utf-8")


def wanted_tables(services: Iterable[str], adf_mode: str) -> tuple[str, ...]:
    """The tables the configured services may read, in probe order."""
    allowed = {*ADF_MODE_TABLES[adf_mode], *(t for s in services if s != "adf" for t in SERVICE_TABLES[s])}
    chosen = {t for s in services for t in SERVICE_TABLES[s]} & allowed
    return tuple(table for table in TABLE_PROBES if table in chosen)


def probe_query(tables: Iterable[str]) -> str:
    """KQL naming the tables (of those given) that hold rows at or after ``{ingest_from}`` - 2 days."""
    branches = [
        f'    ({TABLE_PROBES[table]} | where TimeGenerated >= tgFloor | take 1 | project SourceTable = "{table}"),'
        for table in tables
    ]
    return "\n".join([
        "// Which tables hold rows in the range the failure queries scan (isfuzzy: a table may not exist).",
        "let tgFloor = datetime({ingest_from}) - 2d;",
        "union isfuzzy=true",
        *branches,
        '    (print SourceTable = "" | where 1 == 0)',
        "| distinct SourceTable",
    ])


def tables_found(rows: Iterable[Mapping[str, Any]]) -> frozenset[str]:
    return frozenset(str(row.get("SourceTable")) for row in rows if row.get("SourceTable") in TABLE_PROBES)


def build_queries(services: Iterable[str], present: frozenset[str]) -> dict[str, str]:
    """Query name → KQL (placeholders for the window still in) for the services' queries that have data."""
    chosen = set(services)
    return {
        spec.name: build_query(spec, present)
        for spec in QUERIES
        if spec.service in chosen and present.intersection(spec.requires)
    }


def build_query(spec: QuerySpec, present: frozenset[str]) -> str:
    query = load_query(spec.name)
    for slot, tables in spec.slots:
        branches = [_fragment(slot, table) for table in tables if table in present]
        if not branches:
            filled = f"({_fragment(slot, 'none')})"
        elif len(branches) == 1:
            filled = f"(\n{branches[0]}\n)"
        else:
            filled = "union\n" + ",\n".join(f"(\n{branch}\n)" for branch in branches)
        query = query.replace("{" + slot + "}", filled)
    return query


def _fragment(slot: str, table: str) -> str:
    return load_query(f"{slot}.{table}").strip()


class TablePresence:
    """Which wanted tables hold rows: all re-probed every ``every``; in between only those not found yet.

    A table found stays in the answer until the next full probe. A table not found is asked about again on
    every poll — a diagnostic setting can start writing to it any time, and the pipeline-only queries must
    know every table a run's failed activity may be logged in.
    """

    def __init__(self, services: Iterable[str], adf_mode: str, every: timedelta) -> None:
        self.wanted = wanted_tables(services, adf_mode)
        self.every = every
        self._found: frozenset[str] = frozenset()
        self._full: Window | None = None
        self._last: Window | None = None

    @property
    def found(self) -> frozenset[str]:
        return self._found

    def to_probe(self, window: Window) -> tuple[str, ...]:
        """The tables this poll must ask about: all of them when the last full probe is stale or for later
        history than this window, else those not found yet (possibly none)."""
        full = self._full
        if full is None or window.start < full.start or window.end - full.end >= self.every:
            return self.wanted
        return tuple(table for table in self.wanted if table not in self._found)

    def record(self, window: Window, asked: tuple[str, ...], found: frozenset[str]) -> datetime:
        """Keep a probe's answer; returns where this poll must start reading.

        A table that holds rows now but was not found by the previous probe may have received them any time
        since: this poll then reads back to the previous poll's window, and natural keys drop what is read twice.
        """
        before = self._found
        if set(asked) == set(self.wanted):
            self._found, self._full = found, window
        else:
            self._found = before | found
        start = window.start
        if self._last is not None and self._found - before:
            start = min(start, self._last.start)
        self._last = window
        return start

    def skip(self, window: Window) -> None:
        """A poll that asked nothing (every table found, last full probe fresh)."""
        self._last = window
