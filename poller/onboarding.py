"""`rca-poller init`: the annotated example config, with the first source's settings filled in.

The answers come from flags (for scripts) or prompts (on a terminal). They are written into the example's
own lines, so every comment stays; the result is validated before it is written.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, fields
from importlib import resources
from typing import Any

import yaml

from poller.config import parse_config

CREDENTIALS = ("default", "cli", "managed_identity", "environment", "access_token_env")


@dataclass(frozen=True, slots=True)
class Answers:
    """What `init` asks; None keeps the example's line as it is."""

    source: str | None = None
    workspace_id: str | None = None
    endpoint: str | None = None
    credential: str | None = None
    interval: str | None = None
    state: str | None = None
    metrics_port: int | None = None

    def given(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))


PROMPTS: dict[str, str] = {
    "source": "Name of the first source",
    "workspace_id": "Log Analytics Workspace ID (a GUID), or ${VAR} to read it from the environment",
    "endpoint": "Log Analytics endpoint",
    "credential": "How to authenticate to Azure (" + " | ".join(CREDENTIALS) + ")",
    "interval": "How often to poll it",
    "state": "State file (SQLite)",
    "metrics_port": "Port for Prometheus /metrics and /healthz on localhost (0 = off)",
}
DEFAULTS = Answers(source="adf-prod", workspace_id="${LA_WORKSPACE_ID}", endpoint="https://api.loganalytics.io",
                   credential="default", interval="60s", state="./rca-poller.db", metrics_port=0)


def example_config() -> str:
    return resources.files("poller").joinpath("config.example.yaml").read_text(encoding="utf-8")


def render_config(answers: Answers, template: str | None = None) -> str:
    """The example with each answered setting written into its line; raises ValueError if the result is invalid."""
    text = template if template is not None else example_config()
    edits: list[tuple[str, str, str]] = [
        ("sources", r"^  adf-prod:", f"  {answers.source}:" if answers.source else ""),
        ("sources", r'^    workspace_id: .*$', f"    workspace_id: {_quote(answers.workspace_id)}"
         if answers.workspace_id else ""),
        ("sources", r"^    endpoint: \S+", f"    endpoint: {answers.endpoint}" if answers.endpoint else ""),
        ("sources", r"^    interval: \S+", f"    interval: {answers.interval}" if answers.interval else ""),
        ("azure", r"^  credential: \S+", f"  credential: {answers.credential}" if answers.credential else ""),
        ("state", r"^  url: .*$", f"  url: {_quote('sqlite:///${RCA_POLLER_STATE:-' + answers.state + '}')}"
         if answers.state else ""),
        ("metrics", r"^  port: \S+", f"  port: {answers.metrics_port or 'null'}"
         if answers.metrics_port is not None else ""),
    ]
    for section, pattern, replacement in edits:
        if replacement:
            text = _replace_in_section(text, section, pattern, replacement)
    _validate(text)
    return text


def _replace_in_section(text: str, section: str, pattern: str, replacement: str) -> str:
    """Replace the first match of `pattern` inside the top-level `section:` block."""
    match = re.search(rf"^{section}:.*?(?=^\S|\Z)", text, flags=re.MULTILINE | re.DOTALL)
    block, count = re.subn(pattern, lambda _m: replacement, match.group(0) if match else "", count=1,
                           flags=re.MULTILINE)
    if match is None or count != 1:
        raise ValueError(f"the example config has no line matching {pattern!r} under {section}:")
    return text[:match.start()] + block + text[match.end():]


def _quote(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid YAML double-quoted scalar


class _AnyEnvironment(dict[str, str]):
    """Every ${VAR} resolves, so validation judges the file's shape, not this shell's environment."""

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> str:
        return str(uuid.UUID(int=1))


def _validate(text: str) -> None:
    from poller.errors import ConfigError

    try:
        parse_config(yaml.safe_load(text), _AnyEnvironment())
    except ConfigError as exc:
        raise ValueError(f"the answers make an invalid config: {exc}") from exc


def looks_like_workspace_id(value: str) -> bool:
    if value.startswith("${"):
        return True
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def ask(prompt: Any, confirm: Any, given: Answers = Answers()) -> Answers:
    """Interactive answers through click's `prompt`/`confirm` (passed in, so this module stays free of click);
    a setting `given` as a flag is the default offered."""
    values: dict[str, Any] = {}
    for name, question in PROMPTS.items():
        default = getattr(given, name) if getattr(given, name) is not None else getattr(DEFAULTS, name)
        while True:
            value = prompt(question, default=default, type=int if name == "metrics_port" else str)
            if name == "workspace_id" and not looks_like_workspace_id(str(value)):
                keep = confirm(f"{value!r} is not a GUID like {uuid.UUID(int=1)}; use it anyway?", default=False)
                if not keep:
                    continue
            if name == "credential" and value not in CREDENTIALS:
                continue
            break
        values[name] = value
    return Answers(**values)
