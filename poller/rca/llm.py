"""The model call: an ``openai`` client (OpenAI, compatible servers, Azure OpenAI), structured output, strict parse.

``LlmClient.ask`` sends the messages once (the SDK's own retries, ``rca.max_retries``, apply to 408/429/5xx and
connection errors, honouring ``retry-after``) and returns a `ModelReply`: the validated `LlmAnswer`, or the
reason there is none (timeout, rate_limited, error, refused, invalid). SDK exceptions are translated here,
once. Building the client makes no network call; a missing key raises `MissingCredential`.
"""

from __future__ import annotations

import os
import ssl
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, ClientAuthenticationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from poller.config import RcaConfig
from poller.errors import RcaError
from poller.rca.result import CallStatus, Category

if TYPE_CHECKING:  # openai costs ~0.35 s to import: only processes that call a model pay for it
    import openai

__all__ = ["AZURE_SCOPE", "LlmAnswer", "LlmClient", "MissingCredential", "ModelReply", "response_format"]

AZURE_SCOPE = "https://cognitiveservices.azure.com/.default"
MAX_SUMMARY = 800
MAX_CAUSE = 1500
MAX_ITEMS = 5
MAX_ITEM_CHARS = 500
#: JSON-schema keywords that strict structured outputs (OpenAI, Azure api versions) may refuse; the same
#: limits are enforced when the answer is parsed.
_UNSUPPORTED = frozenset({"title", "default", "minimum", "maximum", "maxLength", "minLength", "maxItems",
                          "minItems", "description", "$defs"})


class MissingCredential(RcaError):
    """No API key or Entra credential to call the model with; the rules answer and the reason is recorded."""


class LlmAnswer(BaseModel):
    """The part of `RcaResult` the model writes; anything else in its answer makes the answer invalid."""

    model_config = ConfigDict(extra="forbid")

    summary: str
    probable_cause: str
    category: Category
    confidence: float = Field(ge=0.0, le=1.0)
    evidence_quotes: list[str]
    recommended_actions: list[str]
    retry_safe: bool
    inconclusive: bool

    @field_validator("summary")
    @classmethod
    def _summary(cls, value: str) -> str:
        return value.strip()[:MAX_SUMMARY]

    @field_validator("probable_cause")
    @classmethod
    def _cause(cls, value: str) -> str:
        return value.strip()[:MAX_CAUSE]

    @field_validator("evidence_quotes", "recommended_actions")
    @classmethod
    def _items(cls, values: list[str]) -> list[str]:
        # Cut rather than refuse: a sixth action is no reason to throw the analysis away.
        return [value.strip()[:MAX_ITEM_CHARS] for value in values if value.strip()][:MAX_ITEMS]


def _strict(schema: Any, defs: dict[str, Any]) -> Any:
    """A pydantic JSON schema as strict structured outputs want it: refs inlined, every property required."""
    if isinstance(schema, list):
        return [_strict(item, defs) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        return _strict(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    out = {key: _strict(value, defs) for key, value in schema.items() if key not in _UNSUPPORTED}
    if isinstance(schema.get("properties"), dict):  # property names are names, not keywords: keep them all
        out["properties"] = {name: _strict(value, defs) for name, value in schema["properties"].items()}
    if out.get("type") == "object":
        out["required"] = list(out.get("properties", {}))
        out["additionalProperties"] = False
    return out


def response_format() -> dict[str, Any]:
    """``response_format`` for chat completions: the `LlmAnswer` schema, strict."""
    schema = LlmAnswer.model_json_schema()
    return {"type": "json_schema",
            "json_schema": {"name": "rca_answer", "strict": True, "schema": _strict(schema, schema.get("$defs", {}))}}


@dataclass(frozen=True)
class ModelReply:
    """What one call gave: an answer (status ok) or why there is none, and the tokens it cost."""

    answer: LlmAnswer | None
    status: CallStatus
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str | None = None


class LlmClient:
    """One `openai.OpenAI` / `openai.AzureOpenAI` client, built on first use and reused (connection pool)."""

    def __init__(self, config: RcaConfig, credential: TokenCredential | None = None) -> None:
        self.config = config
        self.credential = credential
        self._client: openai.OpenAI | None = None
        self._lock = threading.Lock()

    @property
    def model(self) -> str:
        """The model (OpenAI) or deployment (Azure) name the requests use."""
        if self.config.provider == "azure_openai":
            return self.config.azure_deployment or self.config.model
        return self.config.model

    def ask(self, messages: list[dict[str, str]], schema: dict[str, Any]) -> ModelReply:
        """Send one chat completion; never raises for what the service or the model did (MissingCredential aside)."""
        import openai
        with self._lock:
            client = self._client or self._build()
        try:
            response = client.chat.completions.create(
                model=self.model, messages=cast(Any, messages), response_format=cast(Any, schema),
                max_completion_tokens=self.config.max_output_tokens,
            )
        except openai.APITimeoutError:
            return ModelReply(None, "timeout", f"no answer within {self.config.timeout.total_seconds():g}s")
        except openai.RateLimitError as exc:
            return ModelReply(None, "rate_limited", f"HTTP 429 {exc.code or ''}".strip())
        except openai.APIStatusError as exc:
            return ModelReply(None, "error", f"HTTP {exc.status_code} {exc.code or type(exc).__name__}")
        except openai.APIConnectionError as exc:
            return ModelReply(None, "error", f"connection failed: {type(exc.__cause__ or exc).__name__}")
        except openai.OpenAIError as exc:
            return ModelReply(None, "error", type(exc).__name__)
        except ClientAuthenticationError as exc:  # the Entra token provider runs inside the SDK call
            return ModelReply(None, "no_key", f"Entra token: {type(exc).__name__}")
        except AzureError as exc:
            return ModelReply(None, "error", f"Entra token: {type(exc).__name__}")
        return _parse(response)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _build(self) -> openai.OpenAI:
        import openai
        config = self.config
        options: dict[str, Any] = {"timeout": config.timeout.total_seconds(), "max_retries": config.max_retries}
        http_client = _http_client()
        if http_client is not None:
            options["http_client"] = http_client
        if config.provider == "azure_openai":
            client: openai.OpenAI = openai.AzureOpenAI(
                azure_endpoint=config.azure_endpoint or "", azure_deployment=config.azure_deployment,
                api_version=config.api_version, **self._azure_auth(), **options,
            )
        else:
            client = openai.OpenAI(api_key=self._key(), base_url=config.base_url, **options)
        self._client = client
        return client

    def _key(self) -> str:
        name = self.config.api_key_env or ""
        key = os.environ.get(name, "").strip()
        if not key:
            raise MissingCredential(f"no API key: environment variable {name} is not set")
        return key

    def _azure_auth(self) -> dict[str, Any]:
        if self.config.azure_auth == "key":
            return {"api_key": self._key()}
        if self.credential is None:
            raise MissingCredential("no Azure credential for azure_auth: entra")
        from azure.identity import get_bearer_token_provider

        return {"azure_ad_token_provider": get_bearer_token_provider(self.credential, AZURE_SCOPE)}


def _http_client() -> openai.DefaultHttpxClient | None:
    import openai
    """A client trusting REQUESTS_CA_BUNDLE (DESIGN: custom CAs); openai itself only reads SSL_CERT_FILE."""
    bundle = os.environ.get("REQUESTS_CA_BUNDLE")
    if not bundle or os.environ.get("SSL_CERT_FILE"):
        return None
    return openai.DefaultHttpxClient(verify=ssl.create_default_context(cafile=bundle))


def _parse(response: Any) -> ModelReply:
    usage = response.usage
    tokens = {"prompt_tokens": usage.prompt_tokens if usage else 0,
              "completion_tokens": usage.completion_tokens if usage else 0, "model": response.model}
    if not response.choices:
        return ModelReply(None, "invalid", "the answer has no choices", **tokens)
    choice = response.choices[0]
    if choice.message.refusal or choice.finish_reason == "content_filter":
        return ModelReply(None, "refused", "the model refused" if choice.message.refusal else "content filter",
                          **tokens)
    if choice.finish_reason == "length":
        return ModelReply(None, "invalid", "the answer was cut at max_output_tokens", **tokens)
    if not choice.message.content:
        return ModelReply(None, "invalid", "the answer is empty", **tokens)
    try:
        answer = LlmAnswer.model_validate_json(choice.message.content)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "answer"
        return ModelReply(None, "invalid", f"the answer does not match the schema: {where}: {first['type']}",
                          **tokens)
    return ModelReply(answer, "ok", None, **tokens)
