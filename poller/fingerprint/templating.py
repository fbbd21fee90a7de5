"""Message templates: ``template(message)`` runs the rules over a message and renders the placeholders.

The rules are module-level data, run in order, one ``re.sub`` pass each, skipped when a cheap substring
test says they cannot match. Patterns open with a character class (a lookbehind after the first
character) so that the regex engine skips ahead to candidates. A replaced or protected span becomes one
private-use character, so later rules never see into it; the last pass renders the placeholders and lists
the replacements in text order. Secrets are listed as ``[redacted]``, never with their value.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache, partial

from poller.fingerprint.rules import KEEP, PLACEHOLDERS, RESOURCE_RULES, RULES, TOKEN, TOKEN_BASE, Rule, Tokens

#: A longer message keeps its first and last lines (by count, so repeats cut alike), then a hard cut.
MAX_INPUT_CHARS = 16384
HEAD_LINES = 100
TAIL_LINES = 30
#: A longer template keeps its head and tail: a Python traceback ends with its exception. Cutting the
#: template rather than the raw text cuts every repeat of one cause at the same place.
MAX_TEMPLATE_CHARS = 4096
HEAD_CHARS = 3072
ELISION = "\n[…]\n"
REDACTED = "[redacted]"
SECRET_KINDS = frozenset({"secret", "sas"})

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_DIGIT = re.compile(r"\d", re.ASCII)
_SECRET_QUERY = re.compile(
    r"((?:^|[?&#])(?:code|sig|key|token|access_token|api[_-]?key|password|pwd|secret|client_secret)=)[^&#]*",
    re.I,
)


@dataclass(frozen=True, slots=True)
class Template:
    """A message with its variable parts replaced; ``replaced`` lists (kind, original) in text order."""

    text: str
    replaced: list[tuple[str, str]] = field(default_factory=list, hash=False)
    raw: str = ""
    truncated: bool = False

    def counts(self) -> dict[str, int]:
        """How many of each placeholder kind were replaced (Sentry emits these as metrics)."""
        return dict(Counter(kind for kind, _ in self.replaced))


def template(message: str) -> Template:
    """The message with GUIDs, times, ids, numbers, URLs, secrets and data values replaced by placeholders."""
    text, truncated = _cap_input(message)
    text, entries = _tokenise(_normalise(text), RULES)
    if len(text) > MAX_TEMPLATE_CHARS:
        text, truncated = _head_and_tail(text, HEAD_CHARS, MAX_TEMPLATE_CHARS - HEAD_CHARS), True
    replaced: list[tuple[str, str]] = []
    return Template(_render(text, entries, replaced), replaced, raw=message, truncated=truncated)


@lru_cache(maxsize=4096)
def resource_template(resource: str) -> str:
    """A resource name stable across runs: GUIDs, stamps and run numbers (``job-7-run-<num>``) templated."""
    name = " ".join(resource.split())
    if _DIGIT.search(name) is None:
        return name
    text, entries = _tokenise(name, RESOURCE_RULES)
    return _render(text, entries, [])


def _cap_input(text: str) -> tuple[str, bool]:
    """An over-long message's first and last lines; if still too long, its head and tail characters."""
    if len(text) <= MAX_INPUT_CHARS:
        return text, False
    lines = text.splitlines()
    if len(lines) > HEAD_LINES + TAIL_LINES:
        text = "\n".join(lines[:HEAD_LINES]) + ELISION + "\n".join(lines[-TAIL_LINES:])
    if len(text) > MAX_INPUT_CHARS:
        text = _head_and_tail(text, MAX_INPUT_CHARS * 3 // 4, MAX_INPUT_CHARS // 4)
    return text, True


def _head_and_tail(text: str, head: int, tail: int) -> str:
    """The first ``head`` and last ``tail`` characters, cut back to line (else word) ends."""
    return _cut_end(text[:head]) + ELISION + _cut_start(text[-tail:])


def _cut_end(head: str) -> str:
    for separator in ("\n", " "):
        cut = head.rfind(separator)
        if cut > len(head) // 2:
            return head[:cut]
    return head


def _cut_start(tail: str) -> str:
    for separator in ("\n", " "):
        cut = tail.find(separator)
        if 0 <= cut < len(tail) // 2:
            return tail[cut + 1:]
    return tail


def _normalise(text: str) -> str:
    """Terminal escapes out, runs of blanks to one space, blank lines dropped; stray token chars defused."""
    if "\x1b" in text:
        text = _ANSI_ESCAPE.sub("", text)
    if TOKEN.search(text):
        text = TOKEN.sub("\ufffd", text)
    if "\n" not in text and "\r" not in text:
        return " ".join(text.split())
    return "\n".join(joined for line in text.splitlines() if (joined := " ".join(line.split())))


def _tokenise(text: str, rules: tuple[Rule, ...]) -> tuple[str, list[tuple[str, str]]]:
    """The text with every replaced or protected span turned into a token, and the tokens' entries."""
    lowered = f" {text.lower()} "
    has_digit = _DIGIT.search(text) is not None
    tokens = Tokens()
    for rule in rules:
        if rule.digits and not has_digit:
            continue
        if rule.needs:
            for needle in rule.needs:
                if needle in lowered:
                    break
            else:
                continue
        if rule.gate is not None and rule.gate.search(text) is None:
            continue
        text = rule.pattern.sub(_replacer(rule, tokens), text)
    return text, tokens.entries


def _replacer(rule: Rule, tokens: Tokens) -> Callable[[re.Match[str]], str]:
    # partial() binds without an extra Python frame per match.
    if rule.handler is not None:
        return partial(rule.handler, tokens)
    if not rule.kind:
        return partial(_by_group_name, tokens)
    if rule.groups:
        return partial(_replace_group, tokens, rule.kind, rule.groups)
    return partial(_replace_whole, tokens, rule.kind)


def _replace_whole(tokens: Tokens, kind: str, match: re.Match[str]) -> str:
    return tokens.token(kind, match.group())


def _by_group_name(tokens: Tokens, match: re.Match[str]) -> str:
    return tokens.token(str(match.lastgroup).partition("__")[0], match.group())


def _replace_group(tokens: Tokens, kind: str, groups: tuple[str, ...], match: re.Match[str]) -> str:
    """Only the ``v`` (or ``w``) group of the match is replaced; the context around it stays."""
    name = next((name for name in groups if match.start(name) >= 0), None)
    whole = match.group()
    if name is None:
        return tokens.token(kind, whole)
    start, end = match.start(name) - match.start(), match.end(name) - match.start()
    return whole[:start] + tokens.token(kind, match.group(name)) + whole[end:]


def _render(text: str, entries: list[tuple[str, str]], replaced: list[tuple[str, str]]) -> str:
    """Placeholders for replaced tokens, the original for protected ones; ``replaced`` in text order."""
    return TOKEN.sub(partial(_render_token, entries, replaced), text)


def _render_token(
    entries: list[tuple[str, str]], replaced: list[tuple[str, str]], match: re.Match[str]
) -> str:
    kind, original = entries[ord(match.group()) - TOKEN_BASE]
    if kind == KEEP:
        return _render(original, entries, replaced) if TOKEN.search(original) else original
    replaced.append((kind, _recorded(kind, _expand(original, entries))))
    return PLACEHOLDERS[kind]


def _expand(text: str, entries: list[tuple[str, str]]) -> str:
    """The original text of a span that swallowed earlier tokens."""
    if not TOKEN.search(text):
        return text
    return TOKEN.sub(lambda match: _expand(entries[ord(match.group()) - TOKEN_BASE][1], entries), text)


def _recorded(kind: str, original: str) -> str:
    if kind in SECRET_KINDS:
        return REDACTED
    if kind == "url":
        return _SECRET_QUERY.sub(lambda match: match.group(1) + REDACTED, original)
    return original
