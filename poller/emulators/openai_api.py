"""A local stand-in for the OpenAI and Azure OpenAI chat-completions API, over a real socket.

It serves what the `openai` package (3.x) sends:

- OpenAI: ``POST /v1/chat/completions`` with ``Authorization: Bearer <key>``
  (client: ``openai.OpenAI(api_key=..., base_url=emu.url + "/v1")``).
- Azure OpenAI: ``POST /openai/deployments/{deployment}/chat/completions?api-version=V`` with
  ``api-key: <key>`` or ``Authorization: Bearer <Entra token>`` (client:
  ``openai.AzureOpenAI(azure_endpoint=emu.url, api_version=V, api_key=... | azure_ad_token_provider=...)``).

Answers come from a FIFO script (`OpenAIEmulator.script`), then from `OpenAIEmulator.responder`;
faults are `Reply` values (the wire format — error bodies, validation, the completion body — is in
``openai_wire``). Run alone: ``python -m poller.emulators.openai_api [--port N] [--tls]``.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from poller.emulators.http_base import Answer, AnswerHandler
from poller.emulators.openai_wire import (
    INVALID,
    Reply,
    completion,
    default_answer,
    error,
    error_body,
    scripted_error,
    validate_chat,
)
from poller.emulators.serving import RequestLog, ScriptQueue, ServedEmulator
from poller.emulators.tls import ThrowawayCA, TlsThreadingServer

DEFAULT_API_KEY = "sk-emulator-0123456789"
DEFAULT_AD_TOKEN = "emulator-entra-token"
DEFAULT_DEPLOYMENT = "gpt-4o-mini"

_AZURE_CHAT = re.compile(r"^/openai/deployments/(?P<deployment>[^/]+)/chat/completions$")
_MODELS_PATHS = ("/v1/models", "/openai/models")
_AUTH_HEADERS = ("authorization", "api-key")

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
            return error_body(404, INVALID, None, None, f"Invalid URL ({method} {path})")
        if flavour == "azure" and "api-version" not in query:
            return error("azure_no_api_version")
        denied = self._check_auth(headers, flavour)
        if denied is not None:
            return denied
        if not chat:
            models = [{"id": name, "object": "model", "created": 0, "owned_by": "system"}
                      for name in sorted(self.deployments)]
            return Answer(200, {"object": "list", "data": models})
        if deployment is not None and deployment not in self.deployments:
            return error("azure_no_deployment")
        invalid = validate_chat(body, flavour)
        if invalid is not None:
            return invalid
        return self._answer(self._next_reply(body), body, flavour, deployment)

    def _check_auth(self, headers: Mapping[str, str], flavour: str) -> Answer | None:
        authorization = headers.get("authorization")
        if flavour == "openai":
            if authorization == f"Bearer {self.api_key}":
                return None
            return error("openai_bad_key" if authorization else "openai_no_key")
        if "api-key" in headers:
            return None if headers["api-key"] == self.api_key else error("azure_bad_key")
        if authorization == f"Bearer {self.ad_token}":
            return None
        return error("azure_bad_token" if authorization else "azure_no_key")

    def _answer(self, reply: Reply, body: dict[str, Any], flavour: str, deployment: str | None) -> Answer:
        if reply.status >= 400:
            outcome = scripted_error(reply, flavour)
        else:
            outcome = Answer(reply.status, completion(reply, body, flavour, deployment))
        outcome.headers = {"x-request-id": f"req_{uuid.uuid4().hex}", **reply.headers}
        if reply.retry_after is not None:
            outcome.headers["retry-after"] = str(reply.retry_after)
        outcome.delay, outcome.disconnect = reply.delay, reply.disconnect
        return outcome

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
