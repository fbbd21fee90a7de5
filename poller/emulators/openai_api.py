"""A local stand-in for the OpenAI and Azure OpenAI chat-completions API, over a real socket.

It serves what the `openai` package (3.x) sends:

- OpenAI: ``POST /v1/chat/completions`` with ``Authorization: Bearer <key>``
  (client: ``openai.OpenAI(api_key=..., base_url=emu.url + "/v1")``).
- Azure OpenAI: ``POST /openai/deployments/{deployment}/chat/completions?api-version=V`` with
  ``api-key: <key>`` or ``Authorization: Bearer <Entra token>`` (client:
  ``openai.AzureOpenAI(azure_endpoint=emu.url, api_version=V, api_key=... | azure_ad_token_provider=...)``).

Answers come from a FIFO script (`OpenAIEmulator.script`), then from `OpenAIEmulator.responder`;
faults are `Reply` values. Run alone: ``python -m poller.emulators.openai_api [--port N] [--tls]``.
"""

from __future__ import annotations

import argparse
import json
import re
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from poller.emulators.http_base import Answer, AnswerHandler
from poller.emulators.serving import RequestLog, ScriptQueue, ServedEmulator
from poller.emulators.tls import ThrowawayCA, TlsThreadingServer

DEFAULT_API_KEY = "sk-emulator-0123456789"
DEFAULT_AD_TOKEN = "emulator-entra-token"
DEFAULT_DEPLOYMENT = "gpt-4o-mini"

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

_AZURE_CHAT = re.compile(r"^/openai/deployments/(?P<deployment>[^/]+)/chat/completions$")
_MODELS_PATHS = ("/v1/models", "/openai/models")
_AUTH_HEADERS = ("authorization", "api-key")
_INVALID = "invalid_request_error"
#: Error bodies the services send, by name: (status, type, param, code, message). Azure fills only
#: `code` and `message`; the others stay null, in the same OpenAI shape.
_ERRORS: dict[str, tuple[int, str | None, str | None, str | None, str]] = {
    "openai_no_key": (401, _INVALID, None, None, "You didn't provide an API key. You need to provide your "
                      "API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer "
                      "YOUR_KEY)."),
    "openai_bad_key": (401, _INVALID, None, "invalid_api_key", "Incorrect API key provided. You can find "
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
    "bad_json": (400, _INVALID, None, None, "We could not parse the JSON body of your request."),
    "no_model": (400, _INVALID, None, None, "you must provide a model parameter"),
    "no_messages": (400, _INVALID, "messages", "missing_required_parameter",
                    "Missing required parameter: 'messages'."),
    "stream": (400, _INVALID, "stream", None, "The emulator does not stream; call without stream=True."),
    "bad_response_format": (400, _INVALID, "response_format.type", "invalid_value", "Invalid value for "
                            "'response_format.type': supported values are 'text', 'json_object' and "
                            "'json_schema'."),
    # A real quirk: json_object mode is refused unless the prompt mentions JSON.
    "json_word": (400, _INVALID, "messages", None, "'messages' must contain the word 'json' in some form, to "
                  "use 'response_format' of type 'json_object'."),
    "no_schema_name": (400, _INVALID, "response_format.json_schema.name", "missing_required_parameter",
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


Responder = Callable[[dict[str, Any]], "str | Reply"]


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the emulator saw it; auth header values are masked, bodies kept in full.

    `status` 0 means no response was sent (a `Reply.disconnect`). `flavour` is ``openai`` or ``azure``.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    had_auth: bool
    body: Any
    body_text: str
    time: float
    status: int
    flavour: str
    deployment: str | None

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The chat messages of the body, or [] when there are none."""
        messages = self.body.get("messages") if isinstance(self.body, dict) else None
        return messages if isinstance(messages, list) else []


def _error_body(status: int, type_: str | None, param: str | None, code: str | None,
                message: str) -> Answer:
    return Answer(status, {"error": {"message": message, "type": type_, "param": param, "code": code}})


def _error(name: str) -> Answer:
    return _error_body(*_ERRORS[name])


def _scripted_error(reply: Reply, flavour: str) -> Answer:
    """The service's error body for a scripted status, with the reply's message and code when it has them."""
    name = f"{flavour}_429" if reply.status == 429 else str(reply.status)
    kind = "server_error" if reply.status >= 500 else _INVALID
    status, type_, param, code, message = _ERRORS.get(
        name, (reply.status, kind, None, None, HTTPStatus(reply.status).phrase))
    return _error_body(status, type_, param, reply.error_code or code, reply.error_message or message)


def _instance_of(schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """A minimal value valid against a JSON schema as pydantic and strict structured outputs write them."""
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        return _instance_of(root.get("$defs", root.get("definitions", {}))[name], root)
    if "enum" in schema or "const" in schema:
        return schema["enum"][0] if "enum" in schema else schema["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return _instance_of(schema[key][0], root)
    kind = schema.get("type", "object")
    kind = next((k for k in kind if k != "null"), "null") if isinstance(kind, list) else kind
    if kind == "object":
        return {name: _instance_of(sub, root) for name, sub in schema.get("properties", {}).items()}
    defaults = {"array": [], "string": "emulated", "integer": 0, "number": 0.0, "boolean": False}
    return defaults.get(kind)


def default_answer(request: dict[str, Any]) -> str:
    """Valid JSON: a minimal instance of the requested json_schema, else `DEFAULT_RCA`."""
    response_format = request.get("response_format") or {}
    schema = (response_format.get("json_schema") or {}).get("schema")
    return json.dumps(_instance_of(schema, schema) if isinstance(schema, dict) else DEFAULT_RCA)


def _message_text(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


def _validate_chat(body: Any, flavour: str) -> Answer | None:
    """The 400 the service gives a malformed chat request, or None."""
    if not isinstance(body, dict):
        return _error("bad_json")
    if flavour == "openai" and not body.get("model"):
        return _error("no_model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _error("no_messages")
    if body.get("stream"):
        return _error("stream")
    response_format = body.get("response_format")
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind not in ("text", "json_object", "json_schema"):
        return _error("bad_response_format")
    if kind == "json_object" and not any("json" in _message_text(m).lower() for m in messages):
        return _error("json_word")
    if kind == "json_schema" and not (response_format.get("json_schema") or {}).get("name"):
        return _error("no_schema_name")
    return None


class OpenAIEmulator(ServedEmulator):
    """An OpenAI + Azure OpenAI chat-completions server on 127.0.0.1, in a background thread."""

    thread_name = "openai-emulator"

    def __init__(self, *, api_key: str = DEFAULT_API_KEY, ad_token: str = DEFAULT_AD_TOKEN,
                 deployments: Iterable[str] = (DEFAULT_DEPLOYMENT,), port: int = 0, tls: bool = False,
                 ca: ThrowawayCA | None = None) -> None:
        self.api_key = api_key
        self.ad_token = ad_token
        self.deployments = frozenset(deployments)
        self.responder: Responder = default_answer
        self.ca_path: Path | None = ca.ca_path if ca else None
        self._port = port
        self._tls = tls
        self._ca = ca
        self._lock = threading.Lock()
        self._script = ScriptQueue[Reply]()
        self._log = RequestLog[LoggedRequest]()
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None

    def _make_server(self) -> TlsThreadingServer[OpenAIEmulator]:
        return TlsThreadingServer(("127.0.0.1", self._port), _Handler, self, self._tls_context() if self._tls else None)

    def stop(self) -> None:
        """Stop serving; delayed replies still pending are abandoned. Safe to call twice."""
        super().stop()
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = self._ca = self.ca_path = None

    def script(self, *answers: str | Reply) -> None:
        """Queue answers, served first in, first out, before the responder is asked."""
        for answer in answers:
            reply = answer if isinstance(answer, Reply) else Reply(content=answer)
            self._script.push(reply, reply.times)

    @property
    def requests(self) -> list[LoggedRequest]:
        """A snapshot of the request log, oldest first."""
        return self._log.snapshot()

    def count(self) -> int:
        """How many requests arrived (rejected ones included)."""
        return len(self._log.snapshot())

    def reset(self) -> None:
        """Forget the log and the script, and restore the default responder."""
        with self._lock:
            self._log.clear()
            self._script.clear()
            self.responder = default_answer

    def _tls_context(self) -> ssl.SSLContext:
        if self._ca is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="openai-emulator-")
            self._ca = ThrowawayCA(Path(self._tempdir.name))
            self.ca_path = self._ca.ca_path
        return self._ca.server_context()

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        scripted = self._script.take()
        if scripted is not None:
            return scripted
        with self._lock:
            responder = self.responder
        try:
            answer = responder(body)
        except Exception as exc:  # a broken test responder should show as an answer, not a hang-up
            return Reply(status=500, error_message=f"emulator responder failed: {exc!r}")
        return answer if isinstance(answer, Reply) else Reply(content=answer)

    def handle(self, method: str, target: str, headers: Mapping[str, str], body_text: str) -> Answer:
        """Answer one request and log it; used by the HTTP handler."""
        parts = urlsplit(target)
        path, query = unquote(parts.path), dict(parse_qsl(parts.query))
        match = _AZURE_CHAT.match(path)
        flavour = "azure" if path.startswith("/openai/") else "openai"
        deployment = match["deployment"] if match else None
        try:
            body = json.loads(body_text) if body_text else None
        except ValueError:
            body = body_text
        outcome = self._route(method, path, query, headers, body, flavour, deployment)
        status = 0 if outcome.disconnect else outcome.status
        masked = {k: ("Bearer ***" if v.startswith("Bearer ") else "***") if k in _AUTH_HEADERS else v
                  for k, v in headers.items()}
        entry = LoggedRequest(method, path, query, masked, any(k in headers for k in _AUTH_HEADERS), body,
                              body_text, time.time(), status, flavour, deployment)
        self._log.append(entry)
        return outcome

    def _route(self, method: str, path: str, query: dict[str, str], headers: Mapping[str, str], body: Any,
               flavour: str, deployment: str | None) -> Answer:
        chat = path == "/v1/chat/completions" or deployment is not None
        if not ((method == "POST" and chat) or (method == "GET" and path in _MODELS_PATHS)):
            return _error_body(404, _INVALID, None, None, f"Invalid URL ({method} {path})")
        if flavour == "azure" and "api-version" not in query:
            return _error("azure_no_api_version")
        denied = self._check_auth(headers, flavour)
        if denied is not None:
            return denied
        if not chat:
            models = [{"id": name, "object": "model", "created": 0, "owned_by": "system"}
                      for name in sorted(self.deployments)]
            return Answer(200, {"object": "list", "data": models})
        if deployment is not None and deployment not in self.deployments:
            return _error("azure_no_deployment")
        invalid = _validate_chat(body, flavour)
        if invalid is not None:
            return invalid
        return self._answer(self._next_reply(body), body, flavour, deployment)

    def _check_auth(self, headers: Mapping[str, str], flavour: str) -> Answer | None:
        authorization = headers.get("authorization")
        if flavour == "openai":
            if authorization == f"Bearer {self.api_key}":
                return None
            return _error("openai_bad_key" if authorization else "openai_no_key")
        if "api-key" in headers:
            return None if headers["api-key"] == self.api_key else _error("azure_bad_key")
        if authorization == f"Bearer {self.ad_token}":
            return None
        return _error("azure_bad_token" if authorization else "azure_no_key")

    def _answer(self, reply: Reply, body: dict[str, Any], flavour: str, deployment: str | None) -> Answer:
        if reply.status >= 400:
            outcome = _scripted_error(reply, flavour)
        else:
            outcome = Answer(reply.status, self._completion(reply, body, flavour, deployment))
        outcome.headers = {"x-request-id": f"req_{uuid.uuid4().hex}", **reply.headers}
        if reply.retry_after is not None:
            outcome.headers["retry-after"] = str(reply.retry_after)
        outcome.delay, outcome.disconnect = reply.delay, reply.disconnect
        return outcome

    def _completion(self, reply: Reply, body: dict[str, Any], flavour: str,
                    deployment: str | None) -> dict[str, Any]:
        content, finish_reason = reply.content, reply.finish_reason
        if content is None and reply.refusal is None:
            content = default_answer(body)
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if content is not None and isinstance(limit, int) and estimate_tokens(content) > limit:
            content, finish_reason = content[: limit * 4], "length"
        prompt = reply.prompt_tokens
        if prompt is None:
            prompt = sum(estimate_tokens(_message_text(m)) for m in body["messages"])
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


class _Handler(AnswerHandler):
    do_GET = do_POST = AnswerHandler.serve


def main(argv: Sequence[str] | None = None) -> None:
    """Serve until interrupted, printing the base URL first."""
    parser = argparse.ArgumentParser(prog="python -m poller.emulators.openai_api", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free port)")
    parser.add_argument("--tls", action="store_true", help="serve HTTPS with a throwaway CA")
    args = parser.parse_args(argv)
    with OpenAIEmulator(port=args.port, tls=args.tls) as emulator:
        print(emulator.url, flush=True)
        print(f"OpenAI: base_url={emulator.url}/v1 api_key={emulator.api_key}", flush=True)
        print(f"Azure:  azure_endpoint={emulator.url} api_key={emulator.api_key} "
              f"deployments={','.join(sorted(emulator.deployments))}", flush=True)
        if emulator.ca_path is not None:
            print(f"CA:     SSL_CERT_FILE={emulator.ca_path}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
