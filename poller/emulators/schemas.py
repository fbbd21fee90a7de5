"""Schemas of the Log Analytics tables the emulator knows, and how JSON rows are fitted to them.

Types use Log Analytics names (``string``, ``datetime``, ``int``, ``long``, ``real``, ``bool``,
``dynamic``, ``guid``). Schemas follow reference/azure-log-analytics.md §1-3. A known table always
has every documented column, even when a row omits it — that is what a real workspace returns.
Each row also gets a hidden ingestion time (`INGESTION_COLUMN`), from which the emulator plays
late delivery and answers ``ingestion_time()``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

STRING = "string"
DATETIME = "datetime"
INT = "int"
LONG = "long"
REAL = "real"
BOOL = "bool"
DYNAMIC = "dynamic"
GUID = "guid"

Schema = dict[str, str]
Row = dict[str, object]
Coercer = Callable[[object], object]

#: Resource logs land 3-15 minutes late (reference §6); 3 is the common case.
DEFAULT_INGESTION_DELAY = timedelta(minutes=3)
#: The hidden per-row ingestion time that stands in for `ingestion_time()`.
INGESTION_COLUMN = "_IngestionTime"
#: Row keys that steer ingestion instead of becoming columns.
_DELAY_KEY = "_IngestionDelaySeconds"
#: ADF writes this as `End` while a run is in flight (reference §1.4); it is not a real time.
_SENTINEL_YEAR = 1601
_STEERING_KEYS = (INGESTION_COLUMN, _DELAY_KEY)

#: Log Analytics type -> DuckDB column type. `dynamic` is DuckDB JSON, so `parse_json`,
#: `mv-expand` and `x.y` paths work on it; datetimes carry a zone so nothing drifts off UTC.
DUCKDB_TYPES: dict[str, str] = {
    STRING: "VARCHAR",
    DATETIME: "TIMESTAMPTZ",
    INT: "INTEGER",
    LONG: "BIGINT",
    REAL: "DOUBLE",
    BOOL: "BOOLEAN",
    DYNAMIC: "JSON",
    GUID: "UUID",
}

#: Columns every Log Analytics table carries, whatever the resource.
_STANDARD = "TenantId SourceSystem Type _ResourceId _SubscriptionId _BilledSize _IsBillable"


def _schema(names: str, **typed: str) -> Schema:
    """The columns named in order, each ``string`` unless `typed` says otherwise."""
    columns = names.split()
    columns += [c for c in _STANDARD.split() if c not in columns]
    schema = {column: typed.get(column, STRING) for column in columns}
    schema["_BilledSize"] = REAL
    return schema


ADF_PIPELINE_RUN = _schema(
    "Annotations Category CorrelationId End ErrorCode ErrorMessage EventMessage FailureType Input "
    "Level Location OperationName Output Parameters PipelineName Predecessors ResourceId RunId Start "
    "Status SystemParameters Tags TimeGenerated UserProperties",
    End=DATETIME, Start=DATETIME, TimeGenerated=DATETIME,
)

ADF_ACTIVITY_RUN = _schema(
    "ActivityIterationCount ActivityName ActivityRunId ActivityType Annotations Category CorrelationId "
    "EffectiveIntegrationRuntime End Error ErrorCode ErrorMessage EventMessage FailureType Input Level "
    "LinkedServiceName Location OperationName Output PipelineName PipelineRunId ResourceId Start Status "
    "Tags TimeGenerated UserProperties",
    ActivityIterationCount=INT, End=DATETIME, Start=DATETIME, TimeGenerated=DATETIME,
)

ADF_TRIGGER_RUN = _schema(
    "Annotations Category CorrelationId ErrorCode ErrorMessage EventMessage Input Level Location "
    "OperationName Output Parameters ResourceId Start Status SystemParameters Tags TimeGenerated "
    "TriggerEvent TriggerFailureType TriggerId TriggerName TriggerType UserProperties",
    Start=DATETIME, TimeGenerated=DATETIME,
)

#: Legacy mode: a fixed core plus one typed column per flattened property (`status_s`, `runId_g`,
#: ...), which the emulator adds from the rows it is given (see `infer_type`).
AZURE_DIAGNOSTICS = _schema(
    "TimeGenerated ResourceProvider ResourceType Resource ResourceGroup SubscriptionId Category "
    "OperationName Level CorrelationId ResourceId AdditionalFields",
    TimeGenerated=DATETIME, AdditionalFields=DYNAMIC,
)

SYNAPSE_PIPELINE_RUNS = _schema(
    "Annotations Category CorrelationId End Level Location OperationName Parameters PipelineName "
    "PipelineTenantId Predecessors RunId Start Status SystemParameters Tags TimeGenerated UserProperties",
    Annotations=DYNAMIC, End=DATETIME, Parameters=DYNAMIC, Predecessors=DYNAMIC, Start=DATETIME,
    SystemParameters=DYNAMIC, Tags=DYNAMIC, TimeGenerated=DATETIME, UserProperties=DYNAMIC,
)

#: The documented schema has no error columns (reference §2.2); rows may add them, which is
#: how tests exercise the `column_ifexists` fallbacks.
SYNAPSE_ACTIVITY_RUNS = _schema(
    "ActivityName ActivityRunId ActivityType Annotations Category CorrelationId "
    "EffectiveIntegrationRuntime End Level Location OperationName PipelineName PipelineRunId Start "
    "Status Tags TimeGenerated UserProperties",
    Annotations=DYNAMIC, End=DATETIME, Start=DATETIME, Tags=DYNAMIC, TimeGenerated=DATETIME,
    UserProperties=DYNAMIC,
)

APP_EXCEPTIONS = _schema(
    "AppRoleInstance AppRoleName AppVersion Assembly ClientBrowser ClientCity ClientCountryOrRegion "
    "ClientIP ClientModel ClientOS ClientStateOrProvince ClientType Details ExceptionType HandledAt IKey "
    "InnermostAssembly InnermostMessage InnermostMethod InnermostType ItemCount Measurements Message "
    "Method OperationId OperationName OuterAssembly OuterMessage OuterMethod OuterType ParentId ProblemId "
    "Properties ResourceGUID SDKVersion SessionId SeverityLevel SyntheticSource TimeGenerated "
    "UserAccountId UserAuthenticatedId UserId _ItemId",
    Details=DYNAMIC, ItemCount=INT, Measurements=DYNAMIC, Properties=DYNAMIC, SeverityLevel=INT,
    TimeGenerated=DATETIME,
)

FUNCTION_APP_LOGS = _schema(
    "ActivityId AppName Category EventId EventName ExceptionDetails ExceptionMessage ExceptionType "
    "FunctionInvocationId FunctionName HostInstanceId HostVersion Level LevelId Location Message "
    "ProcessId RoleInstance TimeGenerated",
    EventId=INT, LevelId=INT, ProcessId=INT, TimeGenerated=DATETIME,
)

TABLE_SCHEMAS: dict[str, Schema] = {
    "ADFPipelineRun": ADF_PIPELINE_RUN,
    "ADFActivityRun": ADF_ACTIVITY_RUN,
    "ADFTriggerRun": ADF_TRIGGER_RUN,
    "AzureDiagnostics": AZURE_DIAGNOSTICS,
    "SynapseIntegrationPipelineRuns": SYNAPSE_PIPELINE_RUNS,
    "SynapseIntegrationActivityRuns": SYNAPSE_ACTIVITY_RUNS,
    "AppExceptions": APP_EXCEPTIONS,
    "FunctionAppLogs": FUNCTION_APP_LOGS,
}

#: AzureDiagnostics (and custom `_CL` tables) type a flattened property by its name's suffix.
_SUFFIX_TYPES = {"_s": STRING, "_d": REAL, "_t": DATETIME, "_b": BOOL, "_g": GUID}

_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")


def infer_type(name: str, values: Iterable[object]) -> str:
    """The Log Analytics type of a column no schema names, from its name and its values."""
    present = [v for v in values if v is not None and v != ""]
    if name == "TimeGenerated":
        return DATETIME
    suffix_type = _SUFFIX_TYPES.get(name[-2:])
    if suffix_type == GUID:
        return GUID if all(_is_uuid(v) for v in present) else STRING
    if suffix_type is not None:
        return suffix_type
    return _type_of_values(present)


def _type_of_values(values: list[object]) -> str:
    if not values:
        return STRING
    if all(isinstance(v, bool) for v in values):
        return BOOL
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return LONG
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return REAL
    if all(isinstance(v, dict | list) for v in values):
        return DYNAMIC
    if all(isinstance(v, datetime) or (isinstance(v, str) and _ISO_DATETIME.match(v)) for v in values):
        return DATETIME
    return STRING


def _is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def parse_datetime(value: object) -> datetime:
    """An aware UTC datetime from an ISO 8601 string or a datetime; naive means UTC."""
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).strip())
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def coerce(value: object, column_type: str) -> object:
    """A row value in the Python shape of its column type; None for an absent non-string value.

    Strings are never null in Log Analytics, so an absent string is ``""``. JSON-text columns
    (`Error`, `Parameters`, ...) are kept verbatim; a dict given for one is encoded, for fixtures'
    convenience. A `dynamic` value is stored as JSON text.
    """
    return coercer(column_type)(value)


def coercer(column_type: str) -> Callable[[object], object]:
    """`coerce` for one column type, looked up once per batch rather than once per cell."""
    if column_type == STRING:
        return _coerce_string
    convert = _CONVERTERS[column_type]
    return lambda value: None if value is None or value == "" else convert(value)


def _coerce_int(value: object) -> int:
    return value if isinstance(value, int) else int(str(value))


def _coerce_bool(value: object) -> bool:
    return value if isinstance(value, bool) else str(value).lower() == "true"


def _coerce_string(value: object) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value)
    if isinstance(value, datetime):
        return format_datetime(value)
    return str(value)


def _coerce_dynamic(value: object) -> str:
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            return json.dumps(value)  # a bare string is a valid dynamic scalar
        return value
    return json.dumps(value)


def format_datetime(value: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, as the query API writes datetimes."""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


_CONVERTERS: dict[str, Callable[[object], object]] = {
    DATETIME: parse_datetime,
    DYNAMIC: _coerce_dynamic,
    INT: _coerce_int,
    LONG: _coerce_int,
    REAL: lambda value: float(str(value)),
    BOOL: _coerce_bool,
    GUID: lambda value: str(uuid.UUID(str(value))),
}


# --- rows in ------------------------------------------------------------------------------------


def prepare_rows(
    table: str,
    schema: Schema,
    rows: list[Row],
    ingested_at: datetime | None,
    ingestion_delay: timedelta,
    now: datetime,
) -> tuple[Schema, list[Row]]:
    """The table's schema grown by the rows' new columns, and the rows coerced to it with ingestion times."""
    schema = {**TABLE_SCHEMAS.get(table, {}), **schema}
    for row in rows:
        if not isinstance(row, dict):
            raise TypeError(f"{table}: each row must be a JSON object, got {type(row).__name__}")
    new = dict.fromkeys(k for row in rows for k in row if k not in schema and k not in _STEERING_KEYS)
    for column in new:
        schema[column] = infer_type(column, [row.get(column) for row in rows])
    coercers = [(column, coercer(column_type)) for column, column_type in schema.items()]
    return schema, [_prepare_row(table, coercers, row, ingested_at, ingestion_delay, now) for row in rows]


def _prepare_row(
    table: str, coercers: list[tuple[str, Coercer]], row: Row, ingested_at: datetime | None, delay: timedelta,
    now: datetime,
) -> Row:
    values = {column: convert(row.get(column)) for column, convert in coercers}
    if values.get("Type") == "":
        values["Type"] = table  # the service fills it with the table name
    explicit = row.get(INGESTION_COLUMN)
    ingested = parse_datetime(explicit) if explicit not in (None, "") else None
    if "TimeGenerated" in values and values["TimeGenerated"] is None:
        # Log Analytics stamps a record without TimeGenerated with its arrival time.
        values["TimeGenerated"] = ingested or ingested_at or now
    values[INGESTION_COLUMN] = ingested or _implied_ingestion(row, values, ingested_at, delay, now)
    return values


def _implied_ingestion(
    row: Row, values: Row, ingested_at: datetime | None, delay: timedelta, now: datetime
) -> datetime:
    generated = values.get("TimeGenerated")
    base = generated if isinstance(generated, datetime) else now
    if row.get(_DELAY_KEY) not in (None, ""):
        return base + timedelta(seconds=float(str(row[_DELAY_KEY])))
    if ingested_at is not None:
        return parse_datetime(ingested_at)
    return base + delay


def rebase_rows(batches: dict[str, tuple[Schema, list[Row]]], target: datetime) -> None:
    """Shift every datetime so the latest ingestion time lands on `target` (in place)."""
    ingestions = [row[INGESTION_COLUMN] for _, rows in batches.values() for row in rows]
    latest = max((t for t in ingestions if isinstance(t, datetime)), default=None)
    if latest is None:
        return
    shift = target - latest
    for schema, rows in batches.values():
        moving = [c for c, t in schema.items() if t == DATETIME] + [INGESTION_COLUMN]
        for row in rows:
            for column in moving:
                value = row.get(column)
                if isinstance(value, datetime) and value.year != _SENTINEL_YEAR:
                    row[column] = value + shift


def read_data_dir(data_dir: Path) -> dict[str, list[Row]]:
    """`DIR/<TableName>.json` files, each a JSON array of row objects."""
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: no such data directory")
    tables: dict[str, list[Row]] = {}
    for path in sorted(data_dir.glob("*.json")):
        rows = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(rows, list):
            raise ValueError(f"{path}: expected a JSON array of rows")
        tables[path.stem] = rows
    return tables
