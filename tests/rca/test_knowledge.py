"""The knowledge base: its data, its precedence, and its answers for the real extractor fixtures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from poller.errors import RcaError
from poller.extractors import extract
from poller.models import Failure
from poller.rca import Category, MatchLevel, default_knowledge, load_knowledge
from poller.rca.rules import CONFIDENCE_BY_LEVEL, analyse_with_rules, probable_cause, rules_result

TESTDATA = Path(__file__).resolve().parents[1] / "testdata"
KB = default_knowledge()

REQUIRED_CODES = (
    "2200", "2108", "2128", "3202", "3203", "3208", "SqlFailedToConnect", "UserErrorSourceBlobNotExist",
    "DelimitedTextMoreColumnsThanDefined", "TypeConversionFailure", "AdlsGen2OperationFailed", "InvalidTemplate",
    "BadRequest", "AZURE_QUOTA_EXCEEDED_EXCEPTION", "SPOT_INSTANCE_TERMINATION", "DRIVER_UNREACHABLE",
    "DRIVER_NOT_RESPONDING", "INIT_SCRIPT_FAILURE", "SPARK_STARTUP_FAILURE", "INSTANCE_POOL_CLUSTER_FAILURE",
    "REQUEST_LIMIT_EXCEEDED", "RESOURCE_EXHAUSTED", "RUN_EXECUTION_ERROR", "PYPI_NO_MATCHING_DISTRIBUTION",
    "MAVEN_UNRESOLVED_DEPENDENCY", "CLOUD_PROVIDER_LAUNCH_FAILURE", "TABLE_OR_VIEW_NOT_FOUND",
)
REQUIRED_EXCEPTIONS = (
    "TimeoutException", "FunctionTimeoutException", "HttpRequestException", "SqlException", "StorageException",
    "OutOfMemoryException", "CosmosException", "NullReferenceException", "ZeroDivisionError", "OutOfMemoryError",
    "SparkException", "AnalysisException",
)


def test_the_packaged_knowledge_base_is_large_and_well_formed() -> None:
    assert len(KB) >= 45
    codes = {code for entry in KB.entries for code in entry.codes}
    exceptions = {name for entry in KB.entries for name in entry.exceptions}
    assert set(REQUIRED_CODES) <= codes
    assert set(REQUIRED_EXCEPTIONS) <= exceptions
    for service in ("adf", "synapse", "functions", "databricks"):
        assert [e.id for e in KB.entries if e.default and service in e.services and not e.conditional], service
    assert KB.fallback.id == "fallback"


def test_no_permission_data_or_code_error_is_called_transient() -> None:
    # transient bounds every retry_safe verdict: a permission, data or code error never reruns by itself.
    wrong = [e.id for e in KB.entries if e.transient and e.category in {Category.PERMISSION, Category.DATA,
                                                                          Category.CODE}]
    assert wrong == []


# (fixture file, index of the failure it yields, expected entry, how it matched) — real extractor output.
FIXTURE_CASES = [
    ("adf/copy_sql_failed_to_connect.json", 0, "adf.sql_connect_failed", MatchLevel.CODE),
    ("adf/copy_adls_permission_mismatch.json", 0, "adf.adls_permission", MatchLevel.CODE_AND_CONDITION),
    ("adf/copy_blob_not_exist.json", 0, "adf.source_blob_missing", MatchLevel.CODE),
    ("adf/copy_delimited_more_columns.json", 0, "adf.more_columns_than_defined", MatchLevel.CODE),
    ("adf/copy_type_conversion.json", 0, "adf.type_conversion", MatchLevel.CODE),
    ("adf/copy_sql_invalid_column_error_dict.json", 0, "adf.sql_schema_mismatch", MatchLevel.CODE_AND_CONDITION),
    ("adf/copy_sql_replace_function.json", 0, "adf.sql_syntax", MatchLevel.CODE_AND_CONDITION),
    ("adf/copy_required_property_2103.json", 0, "adf.authoring_error", MatchLevel.CODE),
    ("adf/databricks_notebook_3202.json", 0, "adf.databricks_rate_limit", MatchLevel.CODE),
    ("adf/databricks_notebook_3208.json", 0, "adf.databricks_send_failed", MatchLevel.CODE),
    ("adf/databricks_notebook_ansi_escapes.json", 0, "adf.databricks_job_failed", MatchLevel.WRAPPER),
    ("adf/dataflow_executor_user_error.json", 0, "adf.dataflow_constraint", MatchLevel.CODE_AND_CONDITION),
    ("adf/end_sentinel_failed.json", 0, "adf.parquet_java_memory", MatchLevel.CODE_AND_CONDITION),
    ("adf/error_message_null_literal.json", 0, "adf.copy_wrapper", MatchLevel.WRAPPER),
    ("adf/fail_activity_custom_code.json", 0, "adf.default", MatchLevel.SERVICE_DEFAULT),
    ("adf/ifcondition_own_expression_error.json", 0, "adf.invalid_template", MatchLevel.CODE),
    ("adf/pipeline_parameter_value_invalid.json", 0, "adf.invalid_template", MatchLevel.CODE),
    ("adf/pipeline_error_message_only.json", 0, "adf.sql_query_timeout", MatchLevel.CODE_AND_CONDITION),
    ("adf/pipeline_foreach_inner_wrapper.json", 0, "adf.sql_transient", MatchLevel.CODE),
    ("adf/stored_procedure_sql_error.json", 0, "adf.stored_procedure_raised", MatchLevel.CODE_AND_CONDITION),
    ("adf/web_activity_2108.json", 0, "adf.endpoint_error", MatchLevel.CODE),
    ("adf/web_activity_2128.json", 0, "adf.endpoint_no_response", MatchLevel.CODE),
    ("adf/la_api_response.json", 1, "adf.execute_pipeline_child", MatchLevel.WRAPPER),
    ("databricks/clusters_events_client_error.json", 0, "databricks.driver_out_of_memory", MatchLevel.CODE),
    ("databricks/clusters_events_cloud_failure_failed_start.json", 0, "databricks.cloud_provider_failure",
     MatchLevel.CODE),
    ("databricks/clusters_events_driver_not_responding.json", 0, "databricks.driver_unresponsive", MatchLevel.CODE),
    ("databricks/clusters_events_failed_start_unknown_code.json", 0, "databricks.default",
     MatchLevel.SERVICE_DEFAULT),
    ("databricks/clusters_events_init_script_failure.json", 1, "databricks.init_script", MatchLevel.CODE),
    ("databricks/clusters_events_nodes_lost.json", 0, "databricks.spot_eviction", MatchLevel.CODE),
    ("databricks/clusters_events_service_fault.json", 0, "databricks.driver_unreachable", MatchLevel.CODE),
    ("databricks/clusters_get_terminated_stockout.json", 0, "databricks.capacity_stockout", MatchLevel.CODE),
    ("databricks/jobs_bundle_notebook_zero_division.json", 0, "databricks.python_code_error", MatchLevel.CONDITION),
    ("databricks/jobs_bundle_spark_exception_ansi.json", 0, "databricks.python_code_error", MatchLevel.CONDITION),
    ("databricks/jobs_bundle_retried_task_second_attempt.json", 0, "databricks.table_not_found", MatchLevel.CODE),
    ("databricks/jobs_run_internal_error_no_tasks.json", 0, "databricks.platform_error", MatchLevel.CODE),
    ("databricks/jobs_run_library_installation_error.json", 0, "databricks.library_wrapper", MatchLevel.WRAPPER),
    ("databricks/jobs_run_multitask_library_failures.json", 0, "databricks.library_permission_message",
     MatchLevel.CONDITION),
    ("databricks/jobs_run_platform_canceled.json", 0, "databricks.run_timeout", MatchLevel.CODE),
    ("databricks/jobs_run_task_timedout.json", 0, "databricks.run_timeout", MatchLevel.CODE),
    ("databricks/jobs_run_unknown_codes.json", 0, "databricks.default_client_error", MatchLevel.SERVICE_DEFAULT),
    ("databricks/libraries_all_cluster_statuses.json", 0, "databricks.pypi_no_distribution", MatchLevel.CODE),
    ("databricks/libraries_all_cluster_statuses.json", 1, "databricks.maven_unresolved", MatchLevel.CODE),
]


def fixture_failures(name: str) -> list[Failure]:
    data = json.loads((TESTDATA / name).read_text(encoding="utf-8"))
    payload = data["input"] if isinstance(data, dict) and "input" in data else data
    return extract(payload, "databricks" if name.startswith("databricks/") else None)


@pytest.mark.parametrize(("name", "index", "entry_id", "level"), FIXTURE_CASES,
                         ids=[f"{c[0]}#{c[1]}" for c in FIXTURE_CASES])
def test_real_extractor_output_matches_the_expected_entry(name: str, index: int, entry_id: str,
                                                          level: MatchLevel) -> None:
    match = KB.match(fixture_failures(name)[index])
    assert (match.entry.id, match.level) == (entry_id, level)


def failure_of(service: str, code: str = "", message: str = "x", **metadata: Any) -> Failure:
    return Failure(key="k", service=service, kind="k", resource="r", error_message=message,
                   occurred_at=fixture_failures("adf/copy_blob_not_exist.json")[0].occurred_at,
                   error_code=code, metadata=metadata)


SYNTHETIC_CASES: list[tuple[str, Failure, str, MatchLevel]] = [
    ("code+condition beats code", failure_of("adf", "2108", "Response status code: '503'."),
     "adf.endpoint_throttled_or_down", MatchLevel.CODE_AND_CONDITION),
    ("4xx status", failure_of("adf", "2108", "Response status code: '403'."), "adf.endpoint_denied",
     MatchLevel.CODE_AND_CONDITION),
    ("primary code before the numeric wrapper", failure_of("adf", "SqlFailedToConnect", "x", adf_error_code="2200"),
     "adf.sql_connect_failed", MatchLevel.CODE),
    ("transient connect message", failure_of("adf", "SqlFailedToConnect", "Connection Timeout Expired."),
     "adf.sql_connect_transient", MatchLevel.CODE_AND_CONDITION),
    ("unknown inner code falls to the wrapper", failure_of("adf", "SomethingNew", "x", adf_error_code="2200"),
     "adf.copy_wrapper", MatchLevel.WRAPPER),
    ("synapse shares ADF codes", failure_of("synapse", "UserErrorSourceBlobNotExist"), "adf.source_blob_missing",
     MatchLevel.CODE),
    ("synapse message rule", failure_of("synapse", "", "The SQL pool is warming up. Please try again."),
     "synapse.sql_pool_warming", MatchLevel.CONDITION),
    ("function timeout by type", failure_of("functions", "Microsoft.Azure.WebJobs.Host.FunctionTimeoutException",
                                             "Timeout value of 00:05:00 exceeded by function 'Ingest'"),
     "functions.timeout", MatchLevel.CONDITION),
    ("dependency timeout from metadata", failure_of("functions", "", "The operation has timed out.",
                                                    exception_type="System.TimeoutException"),
     "functions.dependency_timeout", MatchLevel.CONDITION),
    ("cosmos 429 from the message", failure_of(
        "functions", "", "Microsoft.Azure.Cosmos.CosmosException : Response status code does not indicate success: "
        "TooManyRequests (429); Substatus: 3200; Reason: (RequestRateTooLarge)"),
     "functions.cosmos_throttled", MatchLevel.CONDITION),
    ("key vault 403 before storage 403", failure_of(
        "functions", "", "Azure.RequestFailedException: Status: 403 (Forbidden) while reading "
        "https://kv-prod.vault.azure.net/secrets/sql"), "functions.keyvault_denied", MatchLevel.CONDITION),
    ("storage 403", failure_of("functions", "", "StorageException: The remote server returned an error: (403)"),
     "functions.storage_denied", MatchLevel.CONDITION),
    ("inner exception beats the invocation wrapper", failure_of(
        "functions", "", "Microsoft.Azure.WebJobs.Host.FunctionInvocationException: Exception while executing "
        "function ---> System.NullReferenceException: Object reference not set"),
     "functions.null_reference", MatchLevel.CONDITION),
    ("http 503", failure_of("functions", "", "System.Net.Http.HttpRequestException: Response status code does not "
                            "indicate success: 503 (Service Unavailable)."), "functions.http_transient",
     MatchLevel.CONDITION),
    ("sql transient number", failure_of("functions", "", "Microsoft.Data.SqlClient.SqlException (0x80131904): "
                                        "Database 'orders' on server 'x' is not currently available. Error 40613"),
     "functions.sql_transient", MatchLevel.CONDITION),
    ("out of memory", failure_of("functions", "System.OutOfMemoryException"), "functions.out_of_memory",
     MatchLevel.CONDITION),
    ("python worker error under the invocation wrapper", failure_of(
        "functions", "KeyError", "'batch_id'", outer_type="Microsoft.Azure.WebJobs.Host.FunctionInvocationException"),
     "functions.null_reference", MatchLevel.CONDITION),
    ("sql duplicate key", failure_of("functions", "Microsoft.Data.SqlClient.SqlException",
                                     "Cannot insert duplicate key row in object 'sales.OrderLines'"),
     "functions.sql_constraint", MatchLevel.CONDITION),
    ("timeout from a host log line", failure_of("functions", "", "Timeout value of 00:10:00 exceeded by function "
                                                "'Functions.Nightly' (Id: 'x'). Initiating cancellation."),
     "functions.timeout_message", MatchLevel.CONDITION),
    ("the stack names the inner exception", failure_of(
        "functions", "Microsoft.Azure.WebJobs.Host.FunctionInvocationException", "Exception while executing function",
        stack="Microsoft.Azure.WebJobs.Host.FunctionInvocationException: Exception while executing function\n ---> "
              "System.Net.Http.HttpRequestException: No such host is known. (api.contoso.com:443)"),
     "functions.http_transient", MatchLevel.CONDITION),
    ("synapse numeric code", failure_of("synapse", "", "x", synapse_error_code="2108"), "adf.endpoint_error",
     MatchLevel.CODE),
    ("exception beats the run wrapper", failure_of(
        "databricks", "RUN_EXECUTION_ERROR", "py4j.protocol.Py4JJavaError: An error occurred while calling o1.save.\n"
        ": org.apache.spark.SparkException: Job aborted due to stage failure: java.lang.OutOfMemoryError: Java heap "
        "space"), "databricks.out_of_memory", MatchLevel.CONDITION),
    ("spark wrapper alone", failure_of("databricks", "RUN_EXECUTION_ERROR", "org.apache.spark.SparkException: "
                                       "Job aborted."), "databricks.spark_wrapper", MatchLevel.WRAPPER),
    ("error class as a secondary code", failure_of("databricks", "FAILED", "AnalysisException: boom",
                                                   error_class="TABLE_OR_VIEW_NOT_FOUND"),
     "databricks.table_not_found", MatchLevel.CODE),
    ("error class named in the message", failure_of(
        "databricks", "RUN_EXECUTION_ERROR", "[UNRESOLVED_COLUMN.WITH_SUGGESTION] A column `amt` cannot be "
        "resolved."), "databricks.unresolved_column", MatchLevel.CODE),
    ("code beats the termination-type default", failure_of("databricks", "AZURE_QUOTA_EXCEEDED_EXCEPTION",
                                                           termination_type="CLOUD_FAILURE"),
     "databricks.quota_exceeded", MatchLevel.CODE),
    ("request limit", failure_of("databricks", "REQUEST_LIMIT_EXCEEDED"), "databricks.throttled", MatchLevel.CODE),
    ("instance pool", failure_of("databricks", "INSTANCE_POOL_CLUSTER_FAILURE"), "databricks.instance_pool",
     MatchLevel.CODE),
    ("misconfig suffix by field regex", failure_of("databricks", "NETWORK_CHECK_NIC_FAILURE_DUE_TO_MISCONFIG"),
     "databricks.misconfig", MatchLevel.CONDITION),
    ("conditioned default first", failure_of("databricks", "NEW_CODE", termination_type="SERVICE_FAULT"),
     "databricks.default_service_fault", MatchLevel.SERVICE_DEFAULT),
    ("cloud failure default", failure_of("databricks", "NEW_CODE", termination_type="CLOUD_FAILURE"),
     "databricks.default_cloud_failure", MatchLevel.SERVICE_DEFAULT),
    ("plain default", failure_of("databricks", "NEW_CODE"), "databricks.default", MatchLevel.SERVICE_DEFAULT),
    ("codes stay inside their service", failure_of("functions", "SqlFailedToConnect"), "functions.default",
     MatchLevel.SERVICE_DEFAULT),
    ("unknown service", failure_of("hdinsight", "2200"), "fallback", MatchLevel.FALLBACK),
]


@pytest.mark.parametrize(("case", "failure", "entry_id", "level"), SYNTHETIC_CASES,
                         ids=[case[0] for case in SYNTHETIC_CASES])
def test_precedence(case: str, failure: Failure, entry_id: str, level: MatchLevel) -> None:
    match = KB.match(failure)
    assert (match.entry.id, match.level) == (entry_id, level)


def test_rules_result_follows_the_entry_and_the_match_level() -> None:
    failure = fixture_failures("adf/copy_sql_failed_to_connect.json")[0]
    match = KB.match(failure)
    result = rules_result(failure, match)
    assert result.rule_id == "adf.sql_connect_failed" and result.rule_match == "code"
    assert result.category is Category.DEPENDENCY and result.retry_safe is False and not result.inconclusive
    assert result.confidence == CONFIDENCE_BY_LEVEL[MatchLevel.CODE]
    assert result.provider == "rules" and result.model is None and result.fallback_reason is None
    assert result.recommended_actions == list(match.entry.actions)
    assert "SqlFailedToConnect" in result.summary and failure.resource in result.summary
    assert result.evidence_quotes and all(quote in failure.error_message for quote in result.evidence_quotes)


def test_a_default_answer_is_inconclusive_and_a_transient_one_retry_safe() -> None:
    unknown = analyse_with_rules(failure_of("adf", "ORDERS_FILE_LATE", "Orders file did not arrive"))
    assert unknown.inconclusive and unknown.confidence == 0.25 and unknown.category is Category.UNKNOWN
    assert unknown.evidence_quotes == ["Orders file did not arrive"]
    throttled = analyse_with_rules(failure_of("adf", "3202"))
    assert throttled.retry_safe and not throttled.inconclusive


def test_rules_answer_is_computed_from_the_redacted_failure() -> None:
    result = analyse_with_rules(failure_of("adf", "SqlFailedToConnect", "Login failed; Password=Sup3rS3cret!;"))
    assert "Sup3rS3cret" not in result.model_dump_json()


def test_probable_cause_keeps_working_for_the_first_processor() -> None:
    assert probable_cause(failure_of("adf", "SqlOperationFailed", "boom")).startswith("A SQL statement failed")
    assert probable_cause(failure_of("adf", "NOPE")) == KB.get("adf.default").cause  # type: ignore[union-attr]


ENTRY = "{id: x.y, services: [adf], codes: [X], category: data, transient: false, title: t, cause: c, actions: [a]}"
FALLBACK = ("{id: fallback, services: ['*'], default: true, category: unknown, transient: false, title: t, "
            "cause: c, actions: [a]}")


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([ENTRY.replace("codes", "kodes"), FALLBACK], "entry x.y: kodes: Extra inputs are not permitted"),
        ([ENTRY.replace("codes: [X]", "message: '(unclosed'"), FALLBACK], "entry x.y: message:"),
        ([ENTRY.replace("data", "weather"), FALLBACK], "entry x.y: category: Input should be"),
        ([ENTRY.replace("[adf]", "[hdinsight]"), FALLBACK], "entry x.y: unknown services ['hdinsight']"),
        ([ENTRY.replace("codes: [X]", "wrapper: true"), FALLBACK], "entry x.y: needs codes, exceptions"),
        ([ENTRY.replace("transient: false", "default: true, transient: false"), FALLBACK],
         "entry x.y: a default entry may only have fields conditions"),
        ([ENTRY.replace("codes: [X]", "fields: {colour: red}"), FALLBACK], "fields ['colour']"),
        ([ENTRY, ENTRY, FALLBACK], "duplicate entry ids ['x.y']"),
        ([ENTRY], "needs exactly one unconditioned default entry"),
    ],
)
def test_a_bad_knowledge_file_is_refused_naming_the_entry(tmp_path: Path, entries: list[str], message: str) -> None:
    path = tmp_path / "kb.yaml"
    path.write_text("entries:\n" + "".join(f"  - {entry}\n" for entry in entries), encoding="utf-8")
    with pytest.raises(RcaError) as caught:
        load_knowledge(path)
    assert message in str(caught.value)


def test_a_small_custom_file_loads_and_numeric_codes_are_text(tmp_path: Path) -> None:
    path = tmp_path / "kb.yaml"
    path.write_text(f"entries:\n  - {ENTRY.replace('[X]', '[2200]')}\n  - {FALLBACK}\n", encoding="utf-8")
    kb = load_knowledge(path)
    assert kb.match(failure_of("adf", "2200")).entry.id == "x.y"
