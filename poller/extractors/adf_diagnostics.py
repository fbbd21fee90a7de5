"""ADF in legacy ``AzureDiagnostics`` mode: a flattened row → the ``ADFActivityRun`` / ``ADFPipelineRun`` row it
stands for, so that ``poller.extractors.adf`` gives the same Failure whichever table a run was read from.

AzureDiagnostics writes each property of a diagnostic record as a column whose suffix is its type (``_s``
string, ``_d`` number, ``_t`` time, ``_g`` GUID, ``_b`` bool), nested objects flattened with ``_``
(``Error_message_s``, ``Parameters_RunDate_s``), and, once the table has 500 columns, the rest into the
``AdditionalFields`` bag (reference §1.5). Microsoft publishes no list of ADF's flattened names; the candidates
below are the ones seen in workspaces, tried in order, each also looked up in ``AdditionalFields``.

Two kinds of input are read:

* raw rows (``AzureDiagnostics | where ResourceProvider == "MICROSOFT.DATAFACTORY"`` saved to a file, or the
  rows of an alert): every column below is mapped;
* rows the source's KQL already put in the resource-specific shape (``poller/sources/kql/adf_*``): columns that
  hold a value are kept, and only the pipeline parameters — which KQL cannot gather from columns it cannot
  name — are built here from the ``Parameters_<name>_<suffix>`` columns.

GUIDs are lower-cased by the ADF rules (``runId_g`` is a guid column, ``RunId`` a string), resource ids by the
ADF rules too. A parameter whose value is empty is left out: AzureDiagnostics cannot tell it from a parameter
another pipeline defines, as every pipeline's rows share one set of columns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from poller.errors import ExtractError
from poller.extractors.columns import as_int, json_object, text

TABLE = "AzureDiagnostics"
PROVIDER = "MICROSOFT.DATAFACTORY"

#: Diagnostic category → the resource-specific table that holds the same records.
CATEGORY_TABLES: dict[str, str] = {"ActivityRuns": "ADFActivityRun", "PipelineRuns": "ADFPipelineRun"}

#: Resource-specific column → the flattened AzureDiagnostics columns that may hold it, most likely first.
COLUMN_CANDIDATES: dict[str, tuple[str, ...]] = {
    "ActivityRunId": ("activityRunId_g", "activityRunId_s"),
    "PipelineRunId": ("pipelineRunId_g", "pipelineRunId_s"),
    "RunId": ("runId_g", "runId_s"),
    "PipelineName": ("pipelineName_s",),
    "ActivityName": ("activityName_s", "Error_target_s"),
    "ActivityType": ("activityType_s",),
    "Status": ("status_s",),
    "Start": ("start_t",),
    "End": ("end_t",),
    "FailureType": ("Error_failureType_s", "failureType_s"),
    "ErrorCode": ("Error_errorCode_s", "errorCode_s"),
    "ErrorMessage": ("Error_message_s", "errorMessage_s"),
    "EffectiveIntegrationRuntime": ("effectiveIntegrationRuntime_s",),
    "LinkedServiceName": ("linkedServiceName_s",),
    "ActivityIterationCount": ("activityIterationCount_d",),
}
#: Where the flattened pipeline parameters go: the pipeline row's own column, or the joined one on activity rows.
PARAMETER_COLUMNS: dict[str, str] = {"ADFPipelineRun": "Parameters", "ADFActivityRun": "PipelineParameters"}
PARAMETER_PREFIX = "Parameters_"
_ID_COLUMNS = {"ADFActivityRun": "ActivityRunId", "ADFPipelineRun": "RunId"}
_SUFFIXES = ("_s", "_d", "_t", "_g", "_b")


def is_adf(row: Mapping[str, Any]) -> bool:
    """Whether an AzureDiagnostics row was written by a data factory."""
    if text(row, "ResourceProvider").upper() == PROVIDER:
        return True
    return "/microsoft.datafactory/" in text(row, "_ResourceId", "ResourceId").lower()


def to_resource_specific(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row in the ``ADFActivityRun`` / ``ADFPipelineRun`` shape (``Type`` set accordingly)."""
    if not is_adf(row):
        provider = text(row, "ResourceProvider") or "none"
        raise ExtractError(f"AzureDiagnostics row is not from a data factory (ResourceProvider {provider})")
    category = text(row, "Category")
    table = CATEGORY_TABLES.get(category)
    if table is None:
        raise ExtractError(f"AzureDiagnostics row of category {category or 'none'!r} is not an ADF pipeline or "
                           "activity run")
    extra = json_object(row.get("AdditionalFields"))
    shaped = dict(row)
    # A row the source's KQL shaped already names its run id column; its raw columns may be the joined
    # pipeline run's (status_s, Error_message_s), which must not fill the activity's gaps.
    if _ID_COLUMNS[table] not in row:
        for column, candidates in COLUMN_CANDIDATES.items():
            if _missing(shaped.get(column)):
                value = _first(row, extra, candidates)
                if value is not None:
                    shaped[column] = value
    iteration = as_int(shaped.get("ActivityIterationCount"))
    if iteration is not None:
        shaped["ActivityIterationCount"] = iteration
    target = PARAMETER_COLUMNS[table]
    if _missing(shaped.get(target)):
        parameters = flattened_parameters(row, extra)
        if parameters:
            shaped[target] = parameters
    shaped["Type"] = table
    return shaped


def flattened_parameters(row: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``Parameters_<name>_<suffix>`` columns (and bag keys) → ``{name: value}``, empty values left out."""
    found: dict[str, Any] = {}
    for source in (extra, row):  # columns win over the overflow bag
        for column, value in source.items():
            if not column.startswith(PARAMETER_PREFIX) or _missing(value):
                continue
            name = column[len(PARAMETER_PREFIX):]
            if name.endswith(_SUFFIXES):
                name = name[:-2]
            found[name] = _plain(value)
    return found


def _first(row: Mapping[str, Any], extra: Mapping[str, Any], candidates: tuple[str, ...]) -> Any:
    for candidate in candidates:
        for source, name in ((row, candidate), (extra, candidate), (extra, candidate[:-2])):
            value = source.get(name)
            if not _missing(value):
                return value
    return None


def _plain(value: Any) -> Any:
    """A number column's integral values as ints: ``BatchSize_d`` 500.0 is the parameter 500."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _missing(value: Any) -> bool:
    # azure-monitor-query renders a null guid cell as the text "None" (str(None) in its row conversion).
    return value is None or (isinstance(value, str) and value.strip() in ("", "None"))
