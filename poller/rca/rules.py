"""A small offline table of well-known ADF error codes → a one-line probable cause (provisional)."""

from __future__ import annotations

from poller.models import Failure

# Keyed by the most specific code (the inner ErrorCode=Name when there is one), else the numeric ADF code.
PROBABLE_CAUSES: dict[str, str] = {
    "2108": "The endpoint an activity called failed or timed out (network, DNS, certificate or HTTP error).",
    "2128": "No response from the endpoint: network connectivity, DNS, certificate validation or timeout.",
    "3200": "The Databricks access token used by the linked service has expired.",
    "3201": "The Databricks activity is misconfigured (notebook path, cluster id or parameters).",
    "3202": "Databricks job-creation rate limit hit (1000 jobs per hour); retry later.",
    "3203": "The Databricks cluster was terminated when the job was sent; retry or fix the cluster.",
    "3208": "Transient error sending the request to Databricks; a retry usually works.",
    "3608": "The called Azure Function failed; see its status code and message.",
    "2011": "The child pipeline of an Execute Pipeline activity failed.",
    "UserErrorSourceBlobNotExist": "The source blob does not exist (yet): upstream data is late or the path is wrong.",
    "SqlFailedToConnect": "Cannot connect to the SQL database: firewall, credentials or a transient network issue.",
    "SqlOperationFailed": "A SQL statement failed: see the inner SQL error (invalid column, timeout, constraint).",
    "SqlOpenConnectionTimeout": "Opening the SQL connection timed out; usually transient — add a retry policy.",
    "SqlBatchWriteTimeout": "Writing a batch to SQL timed out; usually transient — retry the operation.",
    "SqlConnectionIsClosed": "SQL closed the connection under high concurrency; retry the connection.",
    "SqlUnauthorizedAccess": "The SQL login or managed identity lacks permission on the database.",
    "DelimitedTextMoreColumnsThanDefined": "A delimited-text row has more columns than the schema: bad input data.",
    "TypeConversionFailure": "A value could not be converted to the sink column's type: bad input data.",
    "AzureBlobOperationFailed": "A blob storage operation failed: see the blob service error (permissions, path).",
    "AdlsGen2OperationFailed": "An ADLS Gen2 operation failed: often a permission (ACL/RBAC) mismatch.",
    "UserErrorFailedFileOperation": "A file operation in the copy failed: check path and permissions.",
    "InvalidTemplate": "A pipeline expression or parameter could not be evaluated (validation error).",
    "BadRequest": "The pipeline definition or its parameters were rejected before any activity ran.",
}
DEFAULT_CAUSE = "No known cause for this error code yet; read the exact error message."


def probable_cause(failure: Failure) -> str:
    """The table's answer for the failure's code, then for its numeric ADF code, else a neutral default."""
    for code in (failure.error_code, str(failure.metadata.get("adf_error_code", ""))):
        if code in PROBABLE_CAUSES:
            return PROBABLE_CAUSES[code]
    return DEFAULT_CAUSE
