"""A ServiceNow instance's Table API for incidents (and its OAuth token endpoint), with state and faults.

Serves ``GET/POST /api/now/table/incident`` (``sysparm_query`` of ``field=value`` terms joined by ``^``,
``sysparm_fields``, ``sysparm_limit``), ``GET/PATCH /api/now/table/incident/{sys_id}`` (``work_notes`` go to
the journal), and ``POST /oauth_token.do`` (client credentials). Basic auth or the issued bearer token.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any
from urllib.parse import parse_qsl

from poller.emulators.http_base import Answer, HttpEmulator, LoggedRequest, json_body

DEFAULT_USER, DEFAULT_PASSWORD = "rca.poller", "sn-emulator-password"
DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET = "rca-poller-client", "sn-emulator-client-secret"
TABLE = "/api/now/table/incident"
_UNAUTHENTICATED = {"error": {"message": "User Not Authenticated", "detail": "Required to provide Auth information"},
                    "status": "failure"}
_NOT_FOUND = {"error": {"message": "No Record found", "detail": "Record doesn't exist or ACL restricts the record "
                        "retrieval"}, "status": "failure"}


class ServiceNowEmulator(HttpEmulator):
    thread_name = "servicenow-emulator"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.users = {DEFAULT_USER: DEFAULT_PASSWORD}
        self.clients = {DEFAULT_CLIENT_ID: DEFAULT_CLIENT_SECRET}
        self.incidents: dict[str, dict[str, Any]] = {}
        self.journal: dict[str, list[str]] = {}
        self._tokens: set[str] = set()

    def route(self, request: LoggedRequest) -> Answer:
        if request.path == "/oauth_token.do" and request.method == "POST":
            return self._token(request)
        if not self._authorised(request.headers.get("authorization", "")):
            return Answer(401, _UNAUTHENTICATED)
        if request.path == TABLE:
            return self._list(request) if request.method == "GET" else self._create(request)
        if request.path.startswith(TABLE + "/"):
            sys_id = request.path.removeprefix(TABLE + "/")
            record = self.incidents.get(sys_id)
            if record is None:
                return Answer(404, _NOT_FOUND)
            return self._patch(record, request) if request.method in ("PATCH", "PUT") else Answer(
                200, {"result": _fields(record, request.query)})
        return Answer(400, {"error": {"message": "Invalid table"}, "status": "failure"})

    def _authorised(self, header: str) -> bool:
        kind, _, value = header.partition(" ")
        if kind == "Bearer":
            return value in self._tokens
        if kind != "Basic":
            return False
        user, _, password = base64.b64decode(value).decode(errors="replace").partition(":")
        return self.users.get(user) == password and bool(password)

    def _token(self, request: LoggedRequest) -> Answer:
        form = dict(parse_qsl(request.body))
        if form.get("grant_type") != "client_credentials" or self.clients.get(form.get("client_id", "")) != \
                form.get("client_secret"):
            return Answer(401, {"error_description": "access_denied", "error": "server_error"})
        token = secrets.token_hex(16)
        self._tokens.add(token)
        return Answer(200, {"access_token": token, "token_type": "Bearer", "expires_in": 1799, "scope": "useraccount"})

    def _list(self, request: LoggedRequest) -> Answer:
        terms = [t.partition("=") for t in request.query.get("sysparm_query", "").split("^") if t]
        rows = [r for r in self.incidents.values() if all(str(r.get(k, "")) == v for k, _, v in terms)]
        limit = int(request.query.get("sysparm_limit", "10000"))
        return Answer(200, {"result": [_fields(r, request.query) for r in rows[:limit]]})

    def _create(self, request: LoggedRequest) -> Answer:
        body = json_body(request)
        if not isinstance(body, dict):
            return Answer(400, {"error": {"message": "Exception while reading request", "detail": "not JSON"},
                                "status": "failure"})
        sys_id = secrets.token_hex(16)
        record = {k: str(v) for k, v in body.items() if k != "work_notes"}
        record |= {"sys_id": sys_id, "number": f"INC{10001 + len(self.incidents):07d}", "state": "1"}
        self.incidents[sys_id] = record
        self.journal[sys_id] = [str(body["work_notes"])] if body.get("work_notes") else []
        return Answer(201, {"result": record})

    def _patch(self, record: dict[str, Any], request: LoggedRequest) -> Answer:
        body = json_body(request)
        if not isinstance(body, dict):
            return Answer(400, {"error": {"message": "Exception while reading request"}, "status": "failure"})
        if body.get("work_notes"):
            self.journal[record["sys_id"]].append(str(body["work_notes"]))
        record.update({k: str(v) for k, v in body.items() if k != "work_notes"})
        return Answer(200, {"result": record})


def _fields(record: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
    wanted = [f for f in query.get("sysparm_fields", "").split(",") if f]
    return {k: record.get(k, "") for k in wanted} if wanted else dict(record)
