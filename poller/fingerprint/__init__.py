"""Incident fingerprints: an error message reduced to a template, hashed with service, resource and code.

``rules`` holds what is replaced and what is kept, ``templating`` runs the rules over a message, and
``key`` builds the hashed grouping key.
"""

from __future__ import annotations

from poller.fingerprint.key import FINGERPRINT_VERSION, Fingerprint, canonical_key, fingerprint, scope_of
from poller.fingerprint.rules import PLACEHOLDERS, RESOURCE_RULES, RULES, Rule
from poller.fingerprint.templating import (
    ELISION,
    MAX_INPUT_CHARS,
    MAX_TEMPLATE_CHARS,
    REDACTED,
    Template,
    resource_template,
    template,
)

__all__ = [
    "ELISION",
    "FINGERPRINT_VERSION",
    "MAX_INPUT_CHARS",
    "MAX_TEMPLATE_CHARS",
    "PLACEHOLDERS",
    "REDACTED",
    "RESOURCE_RULES",
    "RULES",
    "Fingerprint",
    "Rule",
    "Template",
    "canonical_key",
    "fingerprint",
    "resource_template",
    "scope_of",
    "template",
]
