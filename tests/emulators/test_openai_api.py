"""The OpenAI emulator, driven by the real `openai` clients (OpenAI and AzureOpenAI) over its socket."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from poller.emulators.openai_api import DEFAULT_API_KEY, DEFAULT_DEPLOYMENT, OpenAIEmulator
from poller.emulators.openai_wire import DEFAULT_RCA, Reply, estimate_tokens

ROOT = Path(__file__).resolve().parents[2]
API_VERSION = "2024-10-21"
MODEL = "gpt-4o-mini"
PROMPT = [
    {"role": "system", "content": "You explain data-platform failures. Answer in JSON."},
    {"role": "user", "content": "ADF activity Copy1 failed: ErrorCode=SqlFailedToConnect"},
]
RCA_SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "rca",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"summary": {"type": "string"}, "confidence": {"type": "number"}},
            "required": ["summary", "confidence"],
            "additionalProperties": False,
        },
    },
}


class Cause(BaseModel):
    kind: str
    transient: bool


class Rca(BaseModel):
    summary: str
    confidence: float
    causes: list[str]
    cause: Cause
    owner: str | None


@pytest.fixture
def emu() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator() as emulator:
        yield emulator


def openai_client(emu: OpenAIEmulator, **options: Any) -> openai.OpenAI:
    options = {"api_key": emu.api_key, "max_retries": 0, **options}
    return openai.OpenAI(base_url=emu.url + "/v1", **options)


def azure_client(emu: OpenAIEmulator, **options: Any) -> openai.AzureOpenAI:
    if "azure_ad_token_provider" not in options:
        options.setdefault("api_key", emu.api_key)
    return openai.AzureOpenAI(azure_endpoint=emu.url, api_version=API_VERSION, max_retries=0, **options)


def ask(client: openai.OpenAI, **options: Any) -> Any:
    return client.chat.completions.create(model=MODEL, messages=PROMPT, **options)  # type: ignore[arg-type]


def test_scripted_answer_round_trip_with_usage(emu: OpenAIEmulator) -> None:
    emu.script("first answer", "second")
    with openai_client(emu) as client:
        first, second = ask(client), ask(client)
    assert first.choices[0].message.content == "first answer"
    assert first.choices[0].message.refusal is None
    assert first.choices[0].finish_reason == "stop"
    assert first.object == "chat.completion" and first.model == MODEL and first.id.startswith("chatcmpl-")
    prompt_tokens = sum(estimate_tokens(m["content"]) for m in PROMPT)
    completion_tokens = estimate_tokens("first answer")
    assert first.usage is not None
    assert (first.usage.prompt_tokens, first.usage.completion_tokens) == (prompt_tokens, completion_tokens)
    assert first.usage.total_tokens == prompt_tokens + completion_tokens
    assert second.choices[0].message.content == "second"


def test_default_responder_answers_json_and_custom_responder_sees_the_request(emu: OpenAIEmulator) -> None:
    with openai_client(emu) as client:
        assert json.loads(ask(client).choices[0].message.content) == DEFAULT_RCA
        emu.responder = lambda request: f"{len(request['messages'])} messages"
        assert ask(client).choices[0].message.content == "2 messages"
        emu.script("scripted wins")
        assert ask(client).choices[0].message.content == "scripted wins"


def test_json_schema_response_format_echoes_scripted_content(emu: OpenAIEmulator) -> None:
    emu.script('{"summary": "firewall", "confidence": 0.9}')
    with openai_client(emu) as client:
        answer = ask(client, response_format=RCA_SCHEMA)
    assert json.loads(answer.choices[0].message.content) == {"summary": "firewall", "confidence": 0.9}
    assert emu.requests[-1].body["response_format"] == RCA_SCHEMA


def test_parse_with_a_pydantic_model_gets_a_valid_default_instance(emu: OpenAIEmulator) -> None:
    with openai_client(emu) as client:
        parsed = client.chat.completions.parse(
            model=MODEL, messages=PROMPT, response_format=Rca  # type: ignore[arg-type]
        )
    cause = Cause(kind="emulated", transient=False)
    expected = Rca(summary="emulated", confidence=0.0, causes=[], cause=cause, owner="emulated")
    assert parsed.choices[0].message.parsed == expected
    assert emu.requests[-1].body["response_format"]["json_schema"]["name"] == "Rca"


def test_json_object_mode_needs_the_word_json_in_the_prompt(emu: OpenAIEmulator) -> None:
    with openai_client(emu) as client:
        assert ask(client, response_format={"type": "json_object"}).choices[0].message.content
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "explain"}],
                response_format={"type": "json_object"},
            )
    assert caught.value.param == "messages"


def test_refusal_surfaces_as_message_refusal(emu: OpenAIEmulator) -> None:
    emu.script(Reply.refused("I can't help with that."))
    with openai_client(emu) as client:
        message = ask(client).choices[0].message
    assert message.refusal == "I can't help with that." and message.content is None


@pytest.mark.parametrize(
    ("reply", "content", "finish_reason"),
    [
        (Reply(content='{"summary": "trunc'), '{"summary": "trunc', "stop"),
        (Reply.truncated('{"summary": "abcdef"}', keep=0.5), '{"summary"', "length"),
        (Reply(content="not json", finish_reason="content_filter"), "not json", "content_filter"),
    ],
)
def test_malformed_content_is_returned_verbatim(
    emu: OpenAIEmulator, reply: Reply, content: str, finish_reason: str
) -> None:
    emu.script(reply)
    with openai_client(emu) as client:
        choice = ask(client).choices[0]
    assert (choice.message.content, choice.finish_reason) == (content, finish_reason)


def test_max_tokens_cuts_the_answer_with_finish_reason_length(emu: OpenAIEmulator) -> None:
    emu.script("x" * 100)
    with openai_client(emu) as client:
        answer = ask(client, max_completion_tokens=5)
    assert answer.choices[0].message.content == "x" * 20
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 5


@pytest.mark.parametrize("retry_after", [None, 7])
def test_429_raises_rate_limit_error_without_retries(emu: OpenAIEmulator, retry_after: int | None) -> None:
    emu.script(Reply.rate_limited(retry_after=retry_after))
    with openai_client(emu) as client, pytest.raises(openai.RateLimitError) as caught:
        ask(client)
    assert caught.value.code == "rate_limit_exceeded"
    assert isinstance(caught.value.body, dict)
    assert set(caught.value.body) == {"message", "type", "param", "code"}
    assert caught.value.response.headers.get("retry-after") == (None if retry_after is None else "7")
    assert emu.count() == 1


def test_429_with_retry_after_zero_is_retried_then_succeeds(emu: OpenAIEmulator) -> None:
    emu.script(Reply.rate_limited(retry_after=0), "after the retry")
    with openai_client(emu, max_retries=2) as client:
        answer = ask(client)
    assert answer.choices[0].message.content == "after the retry"
    assert [r.status for r in emu.requests] == [429, 200]
    assert emu.requests[1].headers["x-stainless-retry-count"] == "1"


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_raise_internal_server_error(emu: OpenAIEmulator, status: int) -> None:
    emu.script(Reply(status=status))
    with openai_client(emu) as client, pytest.raises(openai.InternalServerError) as caught:
        ask(client)
    assert caught.value.status_code == status
    assert caught.value.type == "server_error"


def test_times_repeats_a_reply_until_the_client_runs_out_of_retries(emu: OpenAIEmulator) -> None:
    emu.script(Reply(status=503, times=2, headers={"retry-after-ms": "1"}), "recovered")
    with openai_client(emu, max_retries=1) as client:
        with pytest.raises(openai.InternalServerError):
            ask(client)
        assert ask(client).choices[0].message.content == "recovered"
    assert [r.status for r in emu.requests] == [503, 503, 200]


def test_delay_past_the_client_timeout_raises_api_timeout_error(emu: OpenAIEmulator) -> None:
    emu.script(Reply(content="too late", delay=2))
    started = time.monotonic()
    with openai_client(emu, timeout=0.5) as client, pytest.raises(openai.APITimeoutError):
        ask(client)
    assert time.monotonic() - started < 1.5
    assert emu.count() == 1


def test_disconnect_raises_api_connection_error(emu: OpenAIEmulator) -> None:
    emu.script(Reply(disconnect=True))
    with openai_client(emu) as client, pytest.raises(openai.APIConnectionError):
        ask(client)
    assert emu.requests[0].status == 0


def test_wrong_key_is_401_and_does_not_consume_the_script(emu: OpenAIEmulator) -> None:
    emu.script("kept")
    with (
        openai_client(emu, api_key="sk-wrong") as client,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        ask(client)
    assert caught.value.code == "invalid_api_key"
    assert "sk-wrong" not in json.dumps(caught.value.body)
    with openai_client(emu) as client:
        assert ask(client).choices[0].message.content == "kept"


def test_azure_with_api_key_uses_the_deployment_url(emu: OpenAIEmulator) -> None:
    emu.script("from azure")
    with azure_client(emu) as client:
        answer = ask(client)
    assert answer.choices[0].message.content == "from azure"
    logged = emu.requests[0]
    assert logged.path == f"/openai/deployments/{DEFAULT_DEPLOYMENT}/chat/completions"
    assert logged.query == {"api-version": API_VERSION}
    assert (logged.flavour, logged.deployment, logged.had_auth) == ("azure", DEFAULT_DEPLOYMENT, True)
    assert logged.headers["api-key"] == "***" and "authorization" not in logged.headers


def test_azure_with_an_entra_token_provider_sends_bearer(emu: OpenAIEmulator) -> None:
    calls: list[int] = []

    def token() -> str:
        calls.append(1)
        return emu.ad_token

    with azure_client(emu, azure_ad_token_provider=token) as client:
        assert ask(client).choices[0].message.content
    assert calls and emu.requests[0].headers["authorization"] == "Bearer ***"
    assert "api-key" not in emu.requests[0].headers


@pytest.mark.parametrize(
    ("options", "error", "code"),
    [
        ({"api_key": "wrong"}, openai.AuthenticationError, "401"),
        ({"azure_ad_token_provider": lambda: "expired"}, openai.AuthenticationError, "401"),
        ({"azure_deployment": "gpt-5-nope"}, openai.NotFoundError, "DeploymentNotFound"),
    ],
)
def test_azure_rejections(
    emu: OpenAIEmulator, options: dict[str, Any], error: type[openai.APIStatusError], code: str
) -> None:
    with azure_client(emu, **options) as client, pytest.raises(error) as caught:
        ask(client)
    assert caught.value.code == code


def test_azure_429_has_azure_body(emu: OpenAIEmulator) -> None:
    emu.script(Reply.rate_limited(retry_after=1))
    with azure_client(emu) as client, pytest.raises(openai.RateLimitError) as caught:
        ask(client)
    assert caught.value.code == "429"


def test_request_log_keeps_bodies_and_masks_keys(emu: OpenAIEmulator) -> None:
    canary = "CANARY-7f3a9c"
    with openai_client(emu) as client:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"pw={canary} ü"}])
    with azure_client(emu) as client:
        ask(client)
    first, second = emu.requests
    assert first.messages[0]["content"] == f"pw={canary} ü" and canary in first.body_text
    assert (first.method, first.path, first.status) == ("POST", "/v1/chat/completions", 200)
    assert first.had_auth
    assert first.headers["authorization"] == "Bearer ***"
    assert emu.api_key not in repr(emu.requests)
    assert second.messages == PROMPT and first.time <= second.time
    assert emu.count() == 2
    emu.script("forgotten")
    emu.responder = lambda _: "custom"
    emu.reset()
    assert emu.count() == 0 and emu.requests == []
    with openai_client(emu) as client:
        assert json.loads(ask(client).choices[0].message.content) == DEFAULT_RCA


def test_concurrent_requests_each_take_one_scripted_answer(emu: OpenAIEmulator) -> None:
    answers = [f"answer {i}" for i in range(8)]
    emu.script(*answers)
    got: list[str] = []
    with openai_client(emu) as client:

        def call() -> None:
            got.append(ask(client).choices[0].message.content)

        threads = [threading.Thread(target=call) for _ in answers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(got) == answers and emu.count() == 8


def test_unknown_url_is_404_and_models_list_works(emu: OpenAIEmulator) -> None:
    with openai_client(emu) as client:
        assert [m.id for m in client.models.list()] == [DEFAULT_DEPLOYMENT]
        with pytest.raises(openai.NotFoundError, match="Invalid URL"):
            client.embeddings.create(model="text-embedding-3-small", input="x")


def test_tls_with_the_throwaway_ca(monkeypatch: pytest.MonkeyPatch) -> None:
    with OpenAIEmulator(tls=True) as emu:
        assert emu.url.startswith("https://127.0.0.1:") and emu.ca_path is not None
        verify = ssl.create_default_context(cafile=str(emu.ca_path))
        with openai_client(emu, http_client=openai.DefaultHttpxClient(verify=verify)) as client:
            assert ask(client).choices[0].message.content
        # openai 3.x's HTTP client honours SSL_CERT_FILE (not REQUESTS_CA_BUNDLE).
        monkeypatch.setenv("SSL_CERT_FILE", str(emu.ca_path))
        with azure_client(emu) as client:
            assert ask(client).choices[0].message.content
        ca_path = emu.ca_path
    assert not ca_path.exists()


def test_runs_alone_with_python_m() -> None:
    command = [sys.executable, "-m", "poller.emulators.openai_api", "--port", "0"]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            url = process.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")
            with openai.OpenAI(api_key=DEFAULT_API_KEY, base_url=url + "/v1", max_retries=0) as client:
                assert json.loads(ask(client).choices[0].message.content) == DEFAULT_RCA
        finally:
            process.terminate()
