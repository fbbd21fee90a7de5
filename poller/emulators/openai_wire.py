"""The chat-completions API on the wire, as the OpenAI emulator speaks it: the services' error bodies, request
validation, scripted replies and the completion body. Pure values and functions; the server is in
``openai_api``."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from poller.emulators.http_base import Answer

#: What the default responder answers when the request names no json_schema. It echoes nothing
#: from the request, so a secret found in a later answer cannot have come from here.
DEFAULT_RCA: dict[str, Any] = {
    "summary": "Emulated analysis of the failure.",
    "probable_cause": "unknown",
    "category": "unknown",
    "confidence": 0.5,
    "suggested_fix": "Read the exact error message.",
    "evidence": [],
}

INVALID = "invalid_request_error"
#: Error bodies the services send, by name: (status, type, param, code, message). Azure fills only
#: `code` and `message`; the others stay null, in the same OpenAI shape.
_ERRORS: dict[str, tuple[int, str | None, str | None, str | None, str]] = {
    "openai_no_key": (401, INVALID, None, None, "You didn't provide an API key. You need to provide your "
                      "API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer "
                      "YOUR_KEY)."),
    "openai_bad_key": (401, INVALID, None, "invalid_api_key", "Incorrect API key provided. You can find "
                       "your API key at https://platform.openai.com/account/api-keys."),
    "azure_no_key": (401, None, None, "401", "Access denied due to missing subscription key. Make sure to "
                     "include subscription key when making requests to an API."),
    "azure_bad_key": (401, None, None, "401", "Access denied due to invalid subscription key or wrong API "
                      "endpoint. Make sure to provide a valid key for an active subscription and use a "
                      "correct regional API endpoint for your resource."),
    "azure_bad_token": (401, None, None, "401", "Unauthorized. Access token is missing, invalid, audience is "
                        "incorrect (https://cognitiveservices.azure.com), or have expired."),
    "azure_no_api_version": (404, None, None, "404", "Resource not found"),
    "azure_no_deployment": (404, None, None, "DeploymentNotFound", "The API deployment for this resource "
                            "does not exist. If you created the deployment within the last 5 minutes, please "
                            "wait a moment and try again."),
    "bad_json": (400, INVALID, None, None, "We could not parse the JSON body of your request."),
    "no_model": (400, INVALID, None, None, "you must provide a model parameter"),
    "no_messages": (400, INVALID, "messages", "missing_required_parameter",
                    "Missing required parameter: 'messages'."),
    "stream": (400, INVALID, "stream", None, "The emulator does not stream; call without stream=True."),
    "bad_response_format": (400, INVALID, "response_format.type", "invalid_value", "Invalid value for "
                            "'response_format.type': supported values are 'text', 'json_object' and "
                            "'json_schema'."),
    # A real quirk: json_object mode is refused unless the prompt mentions JSON.
    "json_word": (400, INVALID, "messages", None, "'messages' must contain the word 'json' in some form, to "
                  "use 'response_format' of type 'json_object'."),
    "no_schema_name": (400, INVALID, "response_format.json_schema.name", "missing_required_parameter",
                       "Missing required parameter: 'response_format.json_schema.name'."),
    "openai_429": (429, "requests", None, "rate_limit_exceeded",
                   "Rate limit reached for requests. Please try again in 1s."),
    # Azure puts the status in `code`, where OpenAI puts `rate_limit_exceeded`.
    "azure_429": (429, None, None, "429", "Requests to the ChatCompletions_Create Operation under Azure "
                  "OpenAI API have exceeded token rate limit of your current pricing tier. Please retry "
                  "after 1 second."),
    "500": (500, "server_error", None, None,
            "The server had an error while processing your request. Sorry about that!"),
    "503": (503, "server_error", None, None, "The engine is currently overloaded, please try again later."),
}
_NO_CONTENT_FILTER = {
    name: {"filtered": False, "severity": "safe"} for name in ("hate", "self_harm", "sexual", "violence")
}


def estimate_tokens(text: str) -> int:
    """The emulator's token count of `text`: one token per four characters, rounded up."""
    return (len(text) + 3) // 4


@dataclass(frozen=True)
class Reply:
    """One scripted answer. Fields left at their defaults mean a normal, successful answer.

    `content` None (and no `refusal`) means the default answer for the request. `status` >= 400
    sends the OpenAI error JSON instead (`error_code`/`error_message` override its defaults).
    `retry_after` becomes the ``retry-after`` header. `delay` seconds pass before anything is sent;
    `disconnect` closes the connection without a response. The reply is served `times` times.
    """

    content: str | None = None
    refusal: str | None = None
    finish_reason: str = "stop"
    status: int = 200
    retry_after: float | str | None = None
    error_code: str | None = None
    error_message: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    disconnect: bool = False
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    times: int = 1

    @classmethod
    def rate_limited(cls, retry_after: float | str | None = None, times: int = 1) -> Reply:
        """A 429 with the service's rate-limit body, and a ``retry-after`` header when given."""
        return cls(status=429, retry_after=retry_after, times=times)

    @classmethod
    def refused(cls, text: str = "I'm sorry, but I can't help with that request.") -> Reply:
        """A refusal: ``message.refusal`` set, ``message.content`` null."""
        return cls(refusal=text)

    @classmethod
    def truncated(cls, content: str, keep: float = 0.5) -> Reply:
        """The first `keep` share of `content` with ``finish_reason="length"``, as when output runs out."""
        return cls(content=content[: int(len(content) * keep)], finish_reason="length")


def error_body(status: int, type_: str | None, param: str | None, code: str | None,
                message: str) -> Answer:
    return Answer(status, {"error": {"message": message, "type": type_, "param": param, "code": code}})


def error(name: str) -> Answer:
    return error_body(*_ERRORS[name])


def scripted_error(reply: Reply, flavour: str) -> Answer:
    """The service's error body for a scripted status, with the reply's message and code when it has them."""
    name = f"{flavour}_429" if reply.status == 429 else str(reply.status)
    kind = "server_error" if reply.status >= 500 else INVALID
    status, type_, param, code, message = _ERRORS.get(
        name, (reply.status, kind, None, None, HTTPStatus(reply.status).phrase))
    return error_body(status, type_, param, reply.error_code or code, reply.error_message or message)


def instance_of(schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """A minimal value valid against a JSON schema as pydantic and strict structured outputs write them."""
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        return instance_of(root.get("$defs", root.get("definitions", {}))[name], root)
    if "enum" in schema or "const" in schema:
        return schema["enum"][0] if "enum" in schema else schema["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return instance_of(schema[key][0], root)
    kind = schema.get("type", "object")
    kind = next((k for k in kind if k != "null"), "null") if isinstance(kind, list) else kind
    if kind == "object":
        return {name: instance_of(sub, root) for name, sub in schema.get("properties", {}).items()}
    defaults = {"array": [], "string": "emulated", "integer": 0, "number": 0.0, "boolean": False}
    return defaults.get(kind)


def default_answer(request: dict[str, Any]) -> str:
    """Valid JSON: a minimal instance of the requested json_schema, else `DEFAULT_RCA`."""
    response_format = request.get("response_format") or {}
    schema = (response_format.get("json_schema") or {}).get("schema")
    return json.dumps(instance_of(schema, schema) if isinstance(schema, dict) else DEFAULT_RCA)


def message_text(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


def validate_chat(body: Any, flavour: str) -> Answer | None:
    """The 400 the service gives a malformed chat request, or None."""
    if not isinstance(body, dict):
        return error("bad_json")
    if flavour == "openai" and not body.get("model"):
        return error("no_model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return error("no_messages")
    if body.get("stream"):
        return error("stream")
    response_format = body.get("response_format")
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind not in ("text", "json_object", "json_schema"):
        return error("bad_response_format")
    if kind == "json_object" and not any("json" in message_text(m).lower() for m in messages):
        return error("json_word")
    if kind == "json_schema" and not (response_format.get("json_schema") or {}).get("name"):
        return error("no_schema_name")
    return None



def completion(reply: Reply, body: dict[str, Any], flavour: str, deployment: str | None) -> dict[str, Any]:
    """The chat.completion body for a successful reply (Azure adds its content-filter results)."""
    content, finish_reason = reply.content, reply.finish_reason
    if content is None and reply.refusal is None:
        content = default_answer(body)
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if content is not None and isinstance(limit, int) and estimate_tokens(content) > limit:
        content, finish_reason = content[: limit * 4], "length"
    prompt = reply.prompt_tokens
    if prompt is None:
        prompt = sum(estimate_tokens(message_text(m)) for m in body["messages"])
    completion = reply.completion_tokens
    if completion is None:
        completion = estimate_tokens(content if content is not None else reply.refusal or "")
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": content, "refusal": reply.refusal, "annotations": []},
        "logprobs": None,
        "finish_reason": finish_reason,
    }
    result: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": deployment or body["model"],
        "choices": [choice],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion},
        "system_fingerprint": "fp_emulator",
    }
    if flavour == "azure":
        choice["content_filter_results"] = _NO_CONTENT_FILTER
        result["prompt_filter_results"] = [
            {"prompt_index": 0, "content_filter_results": _NO_CONTENT_FILTER}
        ]
    return result
