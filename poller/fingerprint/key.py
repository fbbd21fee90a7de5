"""The incident grouping key: service, stable resource, scope, error code and message template, hashed."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from poller.fingerprint.templating import Template, resource_template, template
from poller.models import Failure

#: Bump when a rule change regroups incidents; it is part of every hash.
FINGERPRINT_VERSION = "fp1"

_CANONICAL_JSON = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """The incident grouping key of a failure: ``value`` is the hex SHA-256 of ``canonical_key(...)``."""

    value: str
    template: Template
    resource: str
    scope: str = ""
    version: str = FINGERPRINT_VERSION


def canonical_key(service: str, resource: str, scope: str, error_code: str, template_text: str) -> str:
    """What is hashed: JSON with explicit keys, so no two ways of splitting the same characters collide."""
    parts = {
        "version": FINGERPRINT_VERSION,
        "service": service,
        "resource": resource,
        "scope": scope,
        "error_code": error_code,
        "template": template_text,
    }
    return _CANONICAL_JSON.encode(parts)


def fingerprint(failure: Failure) -> Fingerprint:
    """Service, stable resource, scope (a Databricks task key), error code and message template, hashed."""
    tmpl = template(failure.error_message)
    resource = resource_template(failure.resource)
    scope = scope_of(failure)
    service = failure.service.strip().lower()
    key = canonical_key(service, resource, scope, failure.error_code.strip(), tmpl.text)
    return Fingerprint(hashlib.sha256(key.encode("utf-8")).hexdigest(), tmpl, resource, scope)


def scope_of(failure: Failure) -> str:
    """The part of a resource that runs its own code: a Databricks task (``metadata["task_key"]``).

    ADF activities are no scope: a pipeline-run row and its activity-run row carry the same cleaned
    message and belong in one incident.
    """
    if failure.service.strip().lower() != "databricks":
        return ""
    task_key = failure.metadata.get("task_key")
    return task_key.strip() if isinstance(task_key, str) else ""
