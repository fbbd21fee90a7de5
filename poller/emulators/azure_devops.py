"""An Azure DevOps project's work items: JSON Patch create/update, WIQL by tag (ids only), PAT auth."""

from __future__ import annotations

import base64
import re
from typing import Any

from poller.emulators.http_base import Answer, HttpEmulator, LoggedRequest, json_body

ORG, PROJECT, PAT = "contoso", "DataPlatform", "ado-emulator-pat"
_CREATE = re.compile(r"^/(?P<org>[^/]+)/(?P<project>[^/]+)/_apis/wit/workitems/\$(?P<type>[^/]+)$")
_ITEM = re.compile(r"^/(?P<org>[^/]+)/(?P<project>[^/]+)/_apis/wit/workitems/(?P<id>\d+)$")
_TAG = re.compile(r"\[System\.Tags\]\s+CONTAINS\s+'([^']+)'")


class AzureDevOpsEmulator(HttpEmulator):
    thread_name = "azure-devops-emulator"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.items: dict[int, dict[str, Any]] = {}
        self.history: dict[int, list[str]] = {}

    @property
    def organization_url(self) -> str:
        return f"{self.url}/{ORG}"

    def route(self, request: LoggedRequest) -> Answer:
        header = request.headers.get("authorization", "")
        if header != "Basic " + base64.b64encode(f":{PAT}".encode()).decode():
            return Answer(401, "Access Denied: The Personal Access Token used has expired or is not valid.")
        if request.query.get("api-version") is None:
            return Answer(400, {"message": "No api-version was supplied for the request."})
        if request.path == f"/{ORG}/_apis/projects/{PROJECT}":
            return Answer(200, {"id": "p-1", "name": PROJECT})
        if request.path == f"/{ORG}/{PROJECT}/_apis/wit/wiql" and request.method == "POST":
            return self._wiql(json_body(request))
        ops = json_body(request)
        if request.headers.get("content-type") != "application/json-patch+json" or not isinstance(ops, list):
            return Answer(400, {"message": "You must pass a valid patch document in the body of the request."})
        if (match := _CREATE.match(request.path)) and request.method == "POST":
            item_id = len(self.items) + 1
            self.items[item_id] = {"System.WorkItemType": match["type"], "System.State": "New"}
            self.history[item_id] = []
            return self._apply(item_id, ops, created=True)
        if (match := _ITEM.match(request.path)) and request.method == "PATCH":
            if int(match["id"]) not in self.items:
                return Answer(404, {"message": f"TF401232: Work item {match['id']} does not exist."})
            return self._apply(int(match["id"]), ops)
        return Answer(404, {"message": "The resource cannot be found."})

    def _apply(self, item_id: int, ops: list[dict[str, Any]], created: bool = False) -> Answer:
        fields = self.items[item_id]
        for op in ops:
            name = str(op.get("path", "")).removeprefix("/fields/")
            if name == "System.History":
                self.history[item_id].append(str(op.get("value")))
            else:
                fields[name] = op.get("value")
        return Answer(200, {"id": item_id, "rev": len(self.history[item_id]) + 1, "fields": fields})

    def _wiql(self, body: Any) -> Answer:
        query = str((body or {}).get("query", ""))
        tags = _TAG.findall(query)
        ids = [i for i, f in self.items.items()
               if all(t in [x.strip() for x in str(f.get("System.Tags", "")).split(";")] for t in tags)]
        return Answer(200, {"queryType": "flat", "workItems": [{"id": i, "url": f"/_apis/wit/workItems/{i}"}
                                                               for i in ids]})
