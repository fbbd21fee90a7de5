"""A Jira project for the Jira sink: Cloud (REST v3, email + API token) and Data Center (REST v2, PAT).

Search (``POST /rest/api/3/search/jql``, ``GET /rest/api/2/search``, JQL ``labels = "X"`` terms only) is
eventually consistent like Jira's: an issue is found only `search_lag` seconds after its creation.
"""

from __future__ import annotations

import base64
import re
import time
from typing import Any

from poller.emulators.http_base import Answer, HttpEmulator, LoggedRequest, json_body

EMAIL, API_TOKEN, PAT = "rca@example.com", "jira-emulator-api-token", "jira-emulator-pat"
TRANSITIONS = [{"id": "11", "name": "To Do"}, {"id": "21", "name": "In Progress"}, {"id": "31", "name": "Done"}]
_ISSUE = re.compile(r"^/rest/api/[23]/issue/(?P<key>[^/]+)/(?P<what>comment|transitions)$")
_LABEL = re.compile(r'labels\s*=\s*"([^"]+)"')


class JiraEmulator(HttpEmulator):
    thread_name = "jira-emulator"

    def __init__(self, project: str = "OPS", search_lag: float = 0.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.project, self.search_lag = project, search_lag
        self.issues: dict[str, dict[str, Any]] = {}

    def route(self, request: LoggedRequest) -> Answer:
        if not self._authorised(request.headers.get("authorization", "")):
            return Answer(401, {"errorMessages": ["You are not authenticated."], "errors": {}})
        path, body = request.path, json_body(request)
        if path.endswith("/myself"):
            return Answer(200, {"emailAddress": EMAIL, "displayName": "rca-poller"})
        if path in ("/rest/api/3/issue", "/rest/api/2/issue") and request.method == "POST":
            return self._create(body, v3=path.startswith("/rest/api/3"))
        if path in ("/rest/api/3/search/jql", "/rest/api/2/search"):
            jql = (body or {}).get("jql", "") if request.method == "POST" else request.query.get("jql", "")
            return self._search(str(jql))
        match = _ISSUE.match(path)
        if match is None or match["key"] not in self.issues:
            return Answer(404, {"errorMessages": ["Issue does not exist or you do not have permission to see it."]})
        issue = self.issues[match["key"]]
        if match["what"] == "comment":
            issue["comments"].append((body or {}).get("body"))
            return Answer(201, {"id": str(len(issue["comments"]))})
        if request.method == "GET":
            return Answer(200, {"transitions": TRANSITIONS})
        chosen = [t for t in TRANSITIONS if t["id"] == str(((body or {}).get("transition") or {}).get("id"))]
        if not chosen:
            return Answer(400, {"errorMessages": ["Transition id is not valid for this issue."]})
        issue["status"] = chosen[0]["name"]
        return Answer(204)

    def _authorised(self, header: str) -> bool:
        kind, _, value = header.partition(" ")
        if kind == "Bearer":
            return value == PAT
        return kind == "Basic" and base64.b64decode(value).decode(errors="replace") == f"{EMAIL}:{API_TOKEN}"

    def _create(self, body: Any, *, v3: bool) -> Answer:
        fields = (body or {}).get("fields") if isinstance(body, dict) else None
        if not isinstance(fields, dict) or not fields.get("summary"):
            return Answer(400, {"errorMessages": [], "errors": {"summary": "You must specify a summary of the issue."}})
        if (fields.get("project") or {}).get("key") != self.project:
            return Answer(400, {"errorMessages": [], "errors": {"project": "valid project is required"}})
        if v3 and isinstance(fields.get("description"), str):
            return Answer(400, {"errorMessages": [], "errors": {"description": "Operation value must be an "
                                                                               "Atlassian Document"}})
        key = f"{self.project}-{len(self.issues) + 1}"
        self.issues[key] = {"key": key, "id": str(10000 + len(self.issues)), "fields": fields, "comments": [],
                            "status": "To Do", "created": time.monotonic()}
        return Answer(201, {"id": self.issues[key]["id"], "key": key, "self": f"/rest/api/3/issue/{key}"})

    def _search(self, jql: str) -> Answer:
        if not jql.strip():
            return Answer(400, {"errorMessages": ["JQL query is required."]})
        labels = _LABEL.findall(jql)
        visible = time.monotonic() - self.search_lag
        found = [i for i in self.issues.values() if i["created"] <= visible
                 and all(label in i["fields"].get("labels", []) for label in labels)]
        return Answer(200, {"issues": [{"id": i["id"], "key": i["key"], "fields": {"status": {"name": i["status"]}}}
                                       for i in found]})
