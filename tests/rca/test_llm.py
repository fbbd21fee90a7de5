"""The LLM path end to end: the real `openai` clients against the OpenAI emulator over a real socket.

Every way the model path can fail falls back to the rules answer with a reason and a call record; what the
model says is grounded; what leaves the process is redacted and delimited; injected instructions stay data.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken

from poller.config import RcaConfig
from poller.emulators.openai_api import DEFAULT_DEPLOYMENT, OpenAIEmulator
from poller.emulators.openai_wire import Reply
from poller.models import Failure
from poller.rca import CallRecord, Category, Evidence, EvidenceLimits, RcaEngine, RcaResult, build_evidence
from poller.rca.llm import AZURE_SCOPE

FailureFactory = Callable[..., Failure]
INJECTION = Path(__file__).resolve().parents[1] / "testdata" / "rca" / "injection"
API_VERSION = "2024-10-21"
CANARY = "CANARY9d2e"
MESSAGE = ("ErrorCode=SqlFailedToConnect,'Type=System.Data.SqlClient.SqlException,Message=Cannot connect to SQL "
           "Database: 'sqlprod.database.windows.net', Database: 'sales', User: 'etl'. Client with IP address "
           "'20.1.2.3' is not allowed to access the server.,Source=.Net SqlClient Data Provider,'")
GROUNDED_QUOTE = "Client with IP address '20.1.2.3' is not allowed to access the server."
ANSWER: dict[str, Any] = {
    "summary": "The SQL server firewall blocks the integration runtime.",
    "probable_cause": "The Azure SQL firewall has no rule for the integration runtime's address 20.1.2.3.",
    "category": "dependency",
    "confidence": 0.8,
    "evidence_quotes": [GROUNDED_QUOTE],
    "recommended_actions": ["Add a firewall rule for 20.1.2.3 or use a private endpoint."],
    "retry_safe": False,
    "inconclusive": False,
}


def answer(**changes: Any) -> str:
    return json.dumps({**ANSWER, **changes})


def openai_config(emu: OpenAIEmulator, **options: Any) -> RcaConfig:
    return RcaConfig.model_validate({"provider": "openai", "base_url": emu.url + "/v1", "max_retries": 0,
                                     "timeout": 5, **options})


def azure_config(emu: OpenAIEmulator, **options: Any) -> RcaConfig:
    return RcaConfig.model_validate({"provider": "azure_openai", "azure_endpoint": emu.url,
                                     "azure_deployment": DEFAULT_DEPLOYMENT, "api_version": API_VERSION,
                                     "max_retries": 0, "timeout": 5, **options})


def analyse(config: RcaConfig, evidence: Evidence, *, used: int = 0, credential: Any = None,
            ) -> tuple[RcaResult, CallRecord | None]:
    engine = RcaEngine(config, credential)
    try:
        return engine.analyse(evidence, tokens_used_today=used)
    finally:
        engine.close()


@pytest.fixture
def evidence(failure: FailureFactory) -> Evidence:
    sql = failure(error_code="SqlFailedToConnect", error_message=MESSAGE, metadata={"adf_error_code": "2200"})
    return build_evidence(sql, [], [], EvidenceLimits())


class FakeCredential:
    """A TokenCredential that hands out the emulator's Entra token and remembers the scopes asked for."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)


def test_rules_provider_answers_offline_without_a_call_record(evidence: Evidence) -> None:
    result, record = analyse(RcaConfig(), evidence)
    assert record is None
    assert (result.provider, result.rule_id, result.rule_match) == ("rules", "adf.sql_connect_failed", "code")
    assert result.evidence_quotes and all(q in evidence.text() for q in result.evidence_quotes)


def test_a_good_answer_through_the_openai_url_shape(emu: OpenAIEmulator, openai_key: str,
                                                    evidence: Evidence) -> None:
    emu.script(Reply(content=answer(), prompt_tokens=1000, completion_tokens=200))
    config = openai_config(emu, price_per_1k_prompt_tokens=0.15, price_per_1k_completion_tokens=0.6)
    result, record = analyse(config, evidence)
    assert result.model_dump(include={"summary", "category", "confidence", "evidence_quotes", "retry_safe",
                                      "inconclusive", "dropped_quotes", "warnings", "fallback_reason"}) == {
        "summary": ANSWER["summary"], "category": Category.DEPENDENCY, "confidence": 0.8,
        "evidence_quotes": [GROUNDED_QUOTE], "retry_safe": False, "inconclusive": False, "dropped_quotes": [],
        "warnings": [], "fallback_reason": None}
    assert (result.provider, result.model, result.rule_id) == ("openai", "gpt-4o-mini", "adf.sql_connect_failed")
    assert record == CallRecord(provider="openai", model="gpt-4o-mini", prompt_tokens=1000, completion_tokens=200,
                                cost=0.27, status="ok", error=None, seconds=record.seconds)
    (request,) = emu.requests
    assert (request.path, request.headers["authorization"], request.flavour) == (
        "/v1/chat/completions", "Bearer ***", "openai")
    body = request.body
    assert body["model"] == "gpt-4o-mini" and body["max_completion_tokens"] == config.max_output_tokens
    schema_format = body["response_format"]
    assert schema_format["type"] == "json_schema" and schema_format["json_schema"]["strict"] is True
    schema = schema_format["json_schema"]["schema"]
    assert schema["required"] == list(ANSWER) and schema["additionalProperties"] is False
    assert schema["properties"]["category"]["enum"] == [c.value for c in Category]
    assert [m["role"] for m in request.messages] == ["system", "user"]
    assert evidence.text() in request.messages[1]["content"]


def test_azure_with_an_api_key_uses_the_deployment_url(emu: OpenAIEmulator, openai_key: str,
                                                        evidence: Evidence) -> None:
    emu.script(answer())
    result, record = analyse(azure_config(emu), evidence)
    assert result.provider == "azure_openai" and result.fallback_reason is None
    assert record is not None and record.status == "ok" and record.model == DEFAULT_DEPLOYMENT
    (request,) = emu.requests
    assert request.path == f"/openai/deployments/{DEFAULT_DEPLOYMENT}/chat/completions"
    assert request.query == {"api-version": API_VERSION}
    assert request.headers["api-key"] == "***" and "authorization" not in request.headers


def test_azure_with_an_entra_token(emu: OpenAIEmulator, evidence: Evidence, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_OPENAI_API_KEY", raising=False)
    credential = FakeCredential(emu.ad_token)
    emu.script(answer())
    result, record = analyse(azure_config(emu, azure_auth="entra"), evidence, credential=credential)
    assert result.fallback_reason is None and record is not None and record.status == "ok"
    assert credential.scopes == [(AZURE_SCOPE,)]
    (request,) = emu.requests
    assert request.headers["authorization"] == "Bearer ***" and "api-key" not in request.headers


@pytest.mark.parametrize(
    ("make_config", "unset", "reason"),
    [
        (openai_config, "OPENAI_API_KEY", "no_key: no API key: environment variable OPENAI_API_KEY is not set"),
        (azure_config, "AZURE_OPENAI_API_KEY",
         "no_key: no API key: environment variable AZURE_OPENAI_API_KEY is not set"),
        (lambda emu: azure_config(emu, azure_auth="entra"), "", "no_key: no Azure credential for azure_auth: entra"),
    ],
)
def test_no_key_falls_back_to_rules_without_a_request(
    emu: OpenAIEmulator, openai_key: str, evidence: Evidence, monkeypatch: pytest.MonkeyPatch,
    make_config: Callable[[OpenAIEmulator], RcaConfig], unset: str, reason: str,
) -> None:
    if unset:
        monkeypatch.delenv(unset)
    result, record = analyse(make_config(emu), evidence)
    assert (result.provider, result.rule_id, result.fallback_reason) == ("rules", "adf.sql_connect_failed", reason)
    assert record is not None and (record.status, record.prompt_tokens, record.cost) == ("no_key", 0, 0.0)
    assert emu.count() == 0


def test_an_entra_token_failure_is_recorded_as_no_key(emu: OpenAIEmulator, evidence: Evidence) -> None:
    from azure.core.exceptions import ClientAuthenticationError

    class Refusing(FakeCredential):
        def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            raise ClientAuthenticationError("no managed identity endpoint")

    result, record = analyse(azure_config(emu, azure_auth="entra"), evidence, credential=Refusing("x"))
    assert result.fallback_reason == "no_key: Entra token: ClientAuthenticationError"
    assert record is not None and record.status == "no_key" and emu.count() == 0


@pytest.mark.parametrize(
    ("reply", "status", "reason"),
    [
        (Reply.rate_limited(), "rate_limited", "rate_limited: HTTP 429 rate_limit_exceeded"),
        (Reply(status=500), "error", "error: HTTP 500 InternalServerError"),
        (Reply(status=400, error_code="context_length_exceeded"), "error", "error: HTTP 400 context_length_exceeded"),
        (Reply(disconnect=True), "error", "error: connection failed"),
        (Reply.refused(), "refused", "refused: the model refused"),
        (Reply(content=answer(), finish_reason="content_filter"), "refused", "refused: content filter"),
        (Reply(content="Sure! The cause is the firewall."), "invalid", "invalid: the answer does not match the "
                                                                        "schema: answer: json_invalid"),
        (Reply(content=answer(extra="x")), "invalid", "invalid: the answer does not match the schema: extra: "
                                                       "extra_forbidden"),
        (Reply(content=answer(confidence=1.5)), "invalid", "invalid: the answer does not match the schema: "
                                                            "confidence: less_than_equal"),
        (Reply(content=answer(category="weather")), "invalid", "invalid: the answer does not match the schema: "
                                                                "category: enum"),
        (Reply(content=json.dumps({k: v for k, v in ANSWER.items() if k != "retry_safe"})), "invalid",
         "invalid: the answer does not match the schema: retry_safe: missing"),
        (Reply.truncated(answer()), "invalid", "invalid: the answer was cut at max_output_tokens"),
        (Reply(content=""), "invalid", "invalid: the answer is empty"),
    ],
    ids=["429", "500", "400", "disconnect", "refusal", "content-filter", "not-json", "extra-key", "confidence>1",
         "bad-category", "missing-field", "truncated", "empty"],
)
def test_every_model_failure_falls_back_to_rules_with_the_reason(
    emu: OpenAIEmulator, openai_key: str, evidence: Evidence, reply: Reply, status: str, reason: str,
) -> None:
    emu.script(reply)
    result, record = analyse(openai_config(emu), evidence)
    assert result.provider == "rules" and result.rule_id == "adf.sql_connect_failed"
    assert result.fallback_reason is not None and result.fallback_reason.startswith(reason)
    assert record is not None and record.status == status and emu.count() == 1


def test_a_timeout_falls_back_in_time(emu: OpenAIEmulator, openai_key: str, evidence: Evidence) -> None:
    emu.script(Reply(content=answer(), delay=3))
    started = time.monotonic()
    result, record = analyse(openai_config(emu, timeout=0.5), evidence)
    assert time.monotonic() - started < 2.5
    assert result.provider == "rules" and result.fallback_reason == "timeout: no answer within 0.5s"
    assert record is not None and record.status == "timeout" and record.seconds < 2.5


def test_max_retries_lets_the_sdk_retry_a_429(emu: OpenAIEmulator, openai_key: str, evidence: Evidence) -> None:
    emu.script(Reply.rate_limited(retry_after=0), answer())
    result, record = analyse(openai_config(emu, max_retries=1), evidence)
    assert result.provider == "openai" and record is not None and record.status == "ok"
    assert [r.status for r in emu.requests] == [429, 200]


def test_tokens_of_an_invalid_answer_are_still_counted(emu: OpenAIEmulator, openai_key: str,
                                                       evidence: Evidence) -> None:
    emu.script(Reply(content="{", prompt_tokens=900, completion_tokens=1))
    _, record = analyse(openai_config(emu, price_per_1k_prompt_tokens=1.0), evidence)
    assert record is not None and (record.status, record.prompt_tokens, record.cost) == ("invalid", 900, 0.9)


def test_quotes_not_in_the_evidence_are_dropped_and_halve_the_confidence(
    emu: OpenAIEmulator, openai_key: str, evidence: Evidence,
) -> None:
    quotes = [GROUNDED_QUOTE, "Login failed for user 'sa'", "short"]
    spaced = "Client  with IP\n address '20.1.2.3' is not allowed"  # whitespace differs: still grounded
    emu.script(answer(evidence_quotes=[*quotes, spaced]))
    result, _ = analyse(openai_config(emu), evidence)
    assert result.evidence_quotes == [GROUNDED_QUOTE, spaced]
    assert result.dropped_quotes == ["Login failed for user 'sa'", "short"]
    assert result.confidence == 0.2 and not result.inconclusive  # 0.8 × 0.5 × 0.5


def test_an_answer_without_any_grounded_quote_is_inconclusive(emu: OpenAIEmulator, openai_key: str,
                                                              evidence: Evidence) -> None:
    emu.script(answer(evidence_quotes=[], confidence=0.9))
    result, _ = analyse(openai_config(emu), evidence)
    assert result.inconclusive and result.confidence == 0.3 and result.evidence_quotes == []


def test_retry_safe_from_the_model_is_bounded_by_the_knowledge_base(
    emu: OpenAIEmulator, openai_key: str, failure: FailureFactory,
) -> None:
    throttled = build_evidence(failure(error_code="3202", error_message="There were already 1000 jobs created in "
                                       "past 3600 seconds, exceeding rate limit"), [], [], EvidenceLimits())
    quote = "There were already 1000 jobs created"
    emu.script(answer(category="capacity", retry_safe=True, evidence_quotes=[quote]),
               answer(category="capacity", retry_safe=False, evidence_quotes=[quote]))
    config = openai_config(emu)
    assert analyse(config, throttled)[0].retry_safe is True  # model and knowledge base agree
    assert analyse(config, throttled)[0].retry_safe is False  # the model may always be more careful


@pytest.mark.parametrize("used", [200_000, 250_000])
def test_an_exhausted_budget_sends_nothing(emu: OpenAIEmulator, openai_key: str, evidence: Evidence,
                                           used: int) -> None:
    result, record = analyse(openai_config(emu, daily_token_budget=200_000), evidence, used=used)
    assert emu.count() == 0
    assert result.provider == "rules" and result.fallback_reason == (
        f"daily token budget exhausted: {used} of 200000 tokens used today")
    assert record is not None and (record.status, record.prompt_tokens, record.completion_tokens) == (
        "skipped_budget", 0, 0)


def test_a_budget_not_yet_spent_allows_the_call(emu: OpenAIEmulator, openai_key: str, evidence: Evidence) -> None:
    emu.script(answer())
    result, _ = analyse(openai_config(emu, daily_token_budget=200_000), evidence, used=199_999)
    assert result.provider == "openai" and emu.count() == 1


def test_no_canary_secret_reaches_the_model(emu: OpenAIEmulator, openai_key: str, failure: FailureFactory) -> None:
    secrets = [
        f"sv=2022-11-02&ss=b&sp=r&se=2026-01-01&sig={CANARY}", f"AccountKey={CANARY}==;",
        f"Server=x;Password={CANARY};", f"Authorization: Bearer {CANARY}123456789012",
        f"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.{CANARY}", f"https://etl:{CANARY}@repo.contoso.com/simple",
        "dapi0123456789abcdef0123456789abcdef", f"client_secret={CANARY}", f"x-functions-key: {CANARY}",
        f"https://f.azurewebsites.net/api/x?code={CANARY}",
    ]
    main = failure(error_code="SqlFailedToConnect", error_message=" ; ".join(secrets),
                   resource_id=f"https://u:{CANARY}@h/x",
                   metadata={"parameters": {"conn": secrets[1], "password": CANARY}, "urls": secrets[4:6],
                             "error_trace": "\n".join(secrets)},
                   raw={"Error": secrets[2]})
    other = failure(key="k2", error_message=secrets[0], metadata={"headers": {"api-key": CANARY}})
    past = [{"status": "resolved", "rca_summary": f"rotated AccountKey={CANARY}", "token": CANARY}]
    emu.script(answer())
    analyse(openai_config(emu), build_evidence(main, [other], past, EvidenceLimits()))
    (request,) = emu.requests
    assert CANARY not in request.body_text and "dapi0123456789abcdef" not in request.body_text
    assert "[REDACTED:sas]" in request.body_text and "[REDACTED:password]" in request.body_text


def test_tls_with_a_private_ca_from_requests_ca_bundle(
    openai_key: str, evidence: Evidence, monkeypatch: pytest.MonkeyPatch,
) -> None:
    with OpenAIEmulator(tls=True) as emu:
        assert emu.ca_path is not None
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(emu.ca_path))
        emu.script(answer())
        result, record = analyse(openai_config(emu), evidence)
    assert result.provider == "openai" and record is not None and record.status == "ok"


def injection_cases() -> list[Path]:
    return sorted(INJECTION.glob("*.json"))


@pytest.mark.parametrize("path", injection_cases(), ids=lambda p: p.stem)
def test_injected_instructions_stay_data_and_the_result_stays_grounded(
    path: Path, emu: OpenAIEmulator, openai_key: str, failure: FailureFactory,
) -> None:
    case = json.loads(path.read_text(encoding="utf-8"))
    expect = case["expect"]
    evidence = build_evidence(failure(**case["failure"]), [], [], EvidenceLimits())
    emu.script(json.dumps(case["model_answer"]))
    result, record = analyse(openai_config(emu), evidence)

    (request,) = emu.requests
    everything = "\n".join(m["content"] for m in request.messages)
    user = request.messages[1]["content"]
    begin, end = f"<<<EVIDENCE id={evidence.nonce}>>>", f"<<<END EVIDENCE id={evidence.nonce}>>>"
    assert user.count("<<<") == 2 and user.count(">>>") == 2  # the real delimiters and nothing else
    inside = user.split(begin, 1)[1].split(end, 1)[0]
    for text in expect["request_absent"]:
        assert text not in everything
    for text in expect["request_inside"]:
        assert text in inside

    assert record is not None and record.status == "ok"
    assert result.retry_safe is False
    assert (result.rule_id, result.category.value) == (expect["rule_id"], expect["category"])
    assert (result.model_category.value if result.model_category else None) == expect["model_category"]
    assert result.confidence == expect["confidence"]
    assert result.confidence < case["model_answer"]["confidence"]
    assert result.dropped_quotes == expect["dropped_quotes"]
    assert result.inconclusive is expect.get("inconclusive", False)
    if "actions" in expect:
        assert result.recommended_actions == expect["actions"]
    warned = any("instruction-like" in warning for warning in result.warnings)
    assert warned is expect.get("instruction_warning", True)
