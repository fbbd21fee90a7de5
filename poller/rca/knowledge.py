"""The offline knowledge base (``knowledge.yaml``) and its matcher: a failure → the entry that explains it.

Precedence, first level that matches wins; inside a level, the order of the file:

1. code + condition — the entry's codes hold one of the failure's codes and its conditions all hold;
2. code — codes only; the failure's ``error_code`` is tried before its secondary codes;
3. condition — no codes; exception names, message regex and field regexes all hold;
4. wrapper — entries for codes or exceptions that only say "something inside failed" (ADF 2200, Databricks
   RUN_EXECUTION_ERROR, SparkException …): they answer only when nothing more specific does;
5. service default — the service's defaults, those with conditions (termination type) first;
6. fallback — the ``"*"`` default.

A failure's codes, in order: ``error_code``; ``metadata`` ``adf_error_code``, ``synapse_error_code``,
``message_error_code``, ``databricks_error_code``, ``error_class`` (and its head before the first dot); then
codes named in the message (``ErrorCode=Name``, ``[SPARK_ERROR_CLASS]``, ``Error Code: NAME``). Exception names
are the short class names (``System.TimeoutException`` → ``TimeoutException``) from ``metadata`` ``exception_type`` /
``outer_type`` / ``innermost_type``, from ``error_code``, and named in the message or in the tail of
``metadata`` ``error_trace`` / ``stack``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from enum import IntEnum
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from poller.errors import RcaError
from poller.models import Failure, Service
from poller.rca.result import Category

__all__ = ["KnowledgeBase", "KnowledgeEntry", "KnowledgeMatch", "MatchLevel", "default_knowledge", "load_knowledge"]

SERVICES = frozenset({*(s.value for s in Service), "*"})
FAILURE_FIELDS = frozenset(f.name for f in fields(Failure) if f.init) - {"metadata", "raw"}
SECONDARY_CODE_KEYS = ("adf_error_code", "synapse_error_code", "message_error_code", "databricks_error_code",
                       "error_class")
#: Metadata holding a trace or stack: read (its tail) for message regexes and exception names.
TRACE_KEYS = ("error_trace", "stack")
EXCEPTION_KEYS = ("exception_type", "outer_type", "innermost_type")
#: How much of the message and of the trace the regexes read (the trace's tail: it ends with the cause).
SCAN_MESSAGE_CHARS = 16384
SCAN_TRACE_CHARS = 8192
QUOTE_CHARS = 240

_MESSAGE_CODES = re.compile(
    r"ErrorCode=([A-Za-z]\w+)|\[([A-Z][A-Z0-9_]{2,}(?:\.[A-Z0-9_]+)*)\]|Error Code:\s*([A-Z][A-Z0-9_]{2,})"
)
_EXCEPTION_NAME = re.compile(r"\b([A-Z][A-Za-z0-9]*(?:Exception|Error))\b")
_QUALIFIED = re.compile(r"[.$+]")


class MatchLevel(IntEnum):
    CODE_AND_CONDITION = 1
    CODE = 2
    CONDITION = 3
    WRAPPER = 4
    SERVICE_DEFAULT = 5
    FALLBACK = 6

    @property
    def label(self) -> str:
        return _LABELS[self]

    @property
    def specific(self) -> bool:
        """Whether the entry says what this error is (levels 1-3), rather than what failures of its kind are."""
        return self <= MatchLevel.CONDITION


_LABELS = {
    MatchLevel.CODE_AND_CONDITION: "code+condition", MatchLevel.CODE: "code", MatchLevel.CONDITION: "condition",
    MatchLevel.WRAPPER: "wrapper", MatchLevel.SERVICE_DEFAULT: "service-default", MatchLevel.FALLBACK: "fallback",
}


def _strings(value: Any) -> Any:
    # YAML reads 2200 as an int; codes are compared as text.
    return [str(item) for item in value] if isinstance(value, list | tuple) else value


class KnowledgeEntry(BaseModel):
    """One known error: how to recognise it and what it means."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)*$")
    services: tuple[str, ...] = Field(min_length=1)
    codes: Annotated[tuple[str, ...], BeforeValidator(_strings)] = ()
    exceptions: tuple[str, ...] = ()
    message: re.Pattern[str] | None = None
    fields: dict[str, re.Pattern[str]] = Field(default_factory=dict)
    wrapper: bool = False
    default: bool = False
    category: Category
    transient: bool
    title: str = Field(min_length=1)
    cause: str = Field(min_length=1)
    actions: tuple[str, ...] = Field(min_length=1)

    @property
    def conditional(self) -> bool:
        return bool(self.exceptions or self.message or self.fields)

    @model_validator(mode="after")
    def _consistent(self) -> KnowledgeEntry:
        unknown = set(self.services) - SERVICES
        if unknown:
            raise ValueError(f"unknown services {sorted(unknown)} (known: {sorted(SERVICES)})")
        bad_fields = [k for k in self.fields if k not in FAILURE_FIELDS and not k.startswith("metadata.")]
        if bad_fields:
            raise ValueError(f"fields {bad_fields}: use a Failure field or metadata.<key>")
        if self.default and (self.codes or self.exceptions or self.message or self.wrapper):
            raise ValueError("a default entry may only have fields conditions")
        if not self.default and not (self.codes or self.conditional):
            raise ValueError("needs codes, exceptions, message or fields (or default: true)")
        if self.wrapper and self.codes and self.conditional:
            raise ValueError("a wrapper entry has codes or conditions, not both")
        return self


@dataclass(frozen=True)
class KnowledgeMatch:
    """The entry that explains a failure, how it matched, and the failure text it matched on."""

    entry: KnowledgeEntry
    level: MatchLevel
    code: str | None = None
    quote: str | None = None


@dataclass(frozen=True)
class _Signals:
    """What the matcher reads from a failure, computed once per match."""

    failure: Failure
    codes: tuple[str, ...]
    exceptions: frozenset[str]
    text: str


class KnowledgeBase:
    """The entries of a knowledge file, indexed by code and service."""

    def __init__(self, entries: Iterable[KnowledgeEntry]) -> None:
        self.entries = tuple(entries)
        ids = [entry.id for entry in self.entries]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise RcaError(f"knowledge base: duplicate entry ids {duplicates}")
        fallbacks = [e for e in self.entries if e.default and "*" in e.services and not e.conditional]
        if len(fallbacks) != 1:
            raise RcaError("knowledge base: needs exactly one unconditioned default entry for services ['*']")
        self.fallback = fallbacks[0]
        self._by_code: dict[str, list[KnowledgeEntry]] = {}
        for entry in self.entries:
            for code in entry.codes:
                self._by_code.setdefault(code, []).append(entry)

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, entry_id: str) -> KnowledgeEntry | None:
        return next((entry for entry in self.entries if entry.id == entry_id), None)

    def match(self, failure: Failure) -> KnowledgeMatch:
        """The entry that explains `failure`, by the precedence in the module docstring."""
        signals = _signals(failure)
        for level in (MatchLevel.CODE_AND_CONDITION, MatchLevel.CODE, MatchLevel.CONDITION, MatchLevel.WRAPPER):
            found = next(self._candidates(level, signals), None)
            if found is not None:
                return found
        defaults = [e for e in self.entries if e.default and failure.service in e.services]
        for entry in sorted(defaults, key=lambda e: not e.conditional):
            quote = _conditions(entry, signals)
            if quote is not None:
                return KnowledgeMatch(entry, MatchLevel.SERVICE_DEFAULT, quote=quote or None)
        return KnowledgeMatch(self.fallback, MatchLevel.FALLBACK)

    def _candidates(self, level: MatchLevel, signals: _Signals) -> Iterator[KnowledgeMatch]:
        if level in (MatchLevel.CODE_AND_CONDITION, MatchLevel.CODE):
            yield from self._by_codes(level, signals)
            return
        wrapper = level is MatchLevel.WRAPPER
        for entry in self.entries:  # file order, for conditions and (wrappers) codes alike
            if entry.wrapper != wrapper or (entry.codes and not wrapper) or not _serves(entry, signals.failure):
                continue
            code = next((c for c in signals.codes if c in entry.codes), None)
            if code is not None:
                yield KnowledgeMatch(entry, level, code, _quote(signals.text, code) or None)
            elif not entry.codes:
                quote = _conditions(entry, signals)
                if quote is not None:
                    yield KnowledgeMatch(entry, level, None, quote or None)

    def _by_codes(self, level: MatchLevel, signals: _Signals) -> Iterator[KnowledgeMatch]:
        for code in signals.codes:
            for entry in self._by_code.get(code, ()):
                if entry.wrapper or not _serves(entry, signals.failure):
                    continue
                if level is MatchLevel.CODE and not entry.conditional:
                    yield KnowledgeMatch(entry, level, code, _quote(signals.text, code) or None)
                elif level is MatchLevel.CODE_AND_CONDITION and entry.conditional:
                    quote = _conditions(entry, signals)
                    if quote is not None:
                        yield KnowledgeMatch(entry, level, code, quote or _quote(signals.text, code) or None)


def _serves(entry: KnowledgeEntry, failure: Failure) -> bool:
    return not entry.default and (failure.service in entry.services or "*" in entry.services)


def _signals(failure: Failure) -> _Signals:
    metadata = failure.metadata if isinstance(failure.metadata, dict) else {}
    text = failure.error_message[:SCAN_MESSAGE_CHARS]
    for key in TRACE_KEYS:
        trace = metadata.get(key)
        if isinstance(trace, str) and trace:
            text += "\n" + trace[-SCAN_TRACE_CHARS:]
    return _Signals(failure, _codes(failure, metadata, text), _exceptions(failure, metadata, text), text)


def _codes(failure: Failure, metadata: dict[str, Any], text: str) -> tuple[str, ...]:
    codes: list[str] = [failure.error_code] if failure.error_code else []
    for key in SECONDARY_CODE_KEYS:
        value = metadata.get(key)
        if value not in (None, ""):
            codes.append(str(value))
            if key == "error_class" and "." in str(value):
                codes.append(str(value).split(".", 1)[0])
    for match in _MESSAGE_CODES.finditer(text):
        name = next(group for group in match.groups() if group)
        codes.extend((name, name.split(".", 1)[0]) if "." in name else (name,))
    return tuple(dict.fromkeys(codes))


def _exceptions(failure: Failure, metadata: dict[str, Any], text: str) -> frozenset[str]:
    names = {_short(str(metadata[key])) for key in EXCEPTION_KEYS if metadata.get(key)}
    if failure.error_code and (failure.error_code.endswith(("Exception", "Error")) or "." in failure.error_code):
        names.add(_short(failure.error_code))
    names.update(_EXCEPTION_NAME.findall(text))
    return frozenset(names)


def _short(name: str) -> str:
    return _QUALIFIED.split(name.strip())[-1]


def _conditions(entry: KnowledgeEntry, signals: _Signals) -> str | None:
    """None when a condition fails; else the text the message regex matched on ('' when there is none)."""
    if entry.exceptions and not signals.exceptions.intersection(entry.exceptions):
        return None
    for name, pattern in entry.fields.items():
        value = _field(signals.failure, name)
        if value is None or not pattern.search(str(value)):
            return None
    if entry.message is None:
        found = next((name for name in entry.exceptions if name in signals.exceptions), None)
        return _quote(signals.text, found) if found else ""
    match = entry.message.search(signals.text)
    if match is None:
        return None
    return _quote(signals.text, match.group(0), match.start()) or ""


def _field(failure: Failure, name: str) -> Any:
    if name.startswith("metadata."):
        metadata = failure.metadata if isinstance(failure.metadata, dict) else {}
        return metadata.get(name.removeprefix("metadata."))
    return getattr(failure, name, None)


def _quote(text: str, needle: str, start: int | None = None) -> str:
    """The line of `text` holding `needle`, cut to QUOTE_CHARS around it: a verbatim piece of the evidence."""
    if not needle:
        return ""
    at = text.find(needle) if start is None else start
    if at < 0:
        return ""
    line_start = text.rfind("\n", 0, at) + 1
    line_end = text.find("\n", at)
    line_end = len(text) if line_end < 0 else line_end
    if line_end - line_start <= QUOTE_CHARS:
        return text[line_start:line_end].strip()
    begin = max(line_start, min(at - QUOTE_CHARS // 3, line_end - QUOTE_CHARS))
    space = text.find(" ", begin, at)
    begin = space + 1 if begin > line_start and space >= 0 else begin  # start on a word
    return text[begin:begin + QUOTE_CHARS].strip()


def load_knowledge(path: str | Path | None = None) -> KnowledgeBase:
    """Read and check a knowledge file (default: the packaged ``knowledge.yaml``); errors name the entry."""
    if path is None:
        source = resources.files("poller.rca").joinpath("knowledge.yaml").read_text(encoding="utf-8")
        where = "knowledge.yaml"
    else:
        source, where = Path(path).read_text(encoding="utf-8"), str(path)
    data = yaml.safe_load(source)
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise RcaError(f"{where}: expected a mapping with a list 'entries'")
    entries = []
    for index, raw in enumerate(data["entries"]):
        name = raw.get("id", f"#{index}") if isinstance(raw, dict) else f"#{index}"
        try:
            entries.append(KnowledgeEntry.model_validate(raw))
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(part) for part in first["loc"])
            problem = first["msg"].removeprefix("Value error, ")
            raise RcaError(f"{where}: entry {name}: {loc + ': ' if loc else ''}{problem}") from None
    return KnowledgeBase(entries)


@lru_cache(maxsize=1)
def default_knowledge() -> KnowledgeBase:
    """The packaged knowledge base, loaded once (it is immutable)."""
    return load_knowledge()
