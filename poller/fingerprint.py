"""Incident fingerprints: an error message reduced to a template, hashed with service, resource and code.

``template(message)`` replaces what varies between repeats of one cause with placeholders (Sentry's
parameterisation, DESIGN §3, field-anchors §5) and keeps what tells causes apart:

* replaced — ``<guid> <ts> <date> <time> <duration> <cluster_id> <id> <ip> <email> <hex> <num>`` (``<id>``:
  Spark and YARN application ids); a URL's path and query (``https://api.contoso.com/<url>``: the host
  stays, it says which API); SAS query strings (``<sas>``); tokens, passwords, keys and URL credentials
  (``<secret>``); throw-away local paths such as ``/tmp/...`` and ``/local_disk0/...`` (``<path>``); quoted
  data values in value contexts (``converting value '<value>'``, ``Truncated value: '<value>'``,
  ``duplicate key value is (<value>)``).
* kept — storage paths (``abfss://``, ``wasbs://``, ``dbfs:/``, ``/mnt``, blob and dfs URLs): account,
  container, folders and file names say which feed failed, so only their dates, numbers and ids go
  (``landing/orders/<date>/orders_<date>.csv``); host names; quoted, bracketed and backticked names after a
  naming word (tables, columns, objects, constraints, linked services, activities, parameters, modules,
  types); notebook paths; SQL error numbers, states and classes; HTTP status, exit and error codes;
  exception types and error codes; numbers glued into identifiers (``Sales2024``, ``data1``) and versions
  (``1.13.1``).

The rules are module-level data, run in order, one ``re.sub`` pass each, skipped when a cheap substring
test says they cannot match. Patterns open with a character class (a lookbehind after the first
character) so that the regex engine skips ahead to candidates. A replaced or protected span becomes one
private-use character, so later rules never see into it; the last pass renders the placeholders and lists
the replacements in text order. Secrets are listed as ``[redacted]``, never with their value.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache, partial

from poller.models import Failure

__all__ = [
    "FINGERPRINT_VERSION",
    "PLACEHOLDERS",
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

#: Bump when a rule change regroups incidents; it is part of every hash.
FINGERPRINT_VERSION = "fp1"
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
KEEP = "keep"
SECRET_KINDS = frozenset({"secret", "sas"})

#: A quoted or bracketed name is kept when one of these words (optionally + " name") stands before it.
NAME_CONTEXT_WORDS = (
    "column", "columns", "table", "view", "object", "schema", "database", "catalog", "constraint", "index",
    "procedure", "function", "parameter", "field", "property", "attribute", "linked service",
    "linkedservice", "dataset", "data flow", "dataflow", "activity", "pipeline", "notebook", "task",
    "trigger", "module", "package", "library", "container", "file system", "filesystem", "variable", "key",
    "sheet", "collection", "topic", "queue", "scope", "type", "name", "alias", "role", "user", "login",
    "server", "keyerror",
)
_NAME_SUFFIXES = tuple(
    word + tail for word in NAME_CONTEXT_WORDS for tail in ("", " name", " names", " named")
)
#: A number is kept as a code when its text ends (lower-cased) with one of these ...
CODE_CONTEXT_EXACT = (
    "number=", "class=", "state=", "errno=", "hresult=", "msg ", "level ", "state ", "error ", "error: ",
    "errno ",
)
#: ... or, once quotes, blanks, ``=``, ``:`` and ``-`` are stripped, with one of these.
CODE_CONTEXT_LOOSE = (
    "code", "status", "http", "http/1.0", "http/1.1", "http/2", "errornumber", "error number", "sqlstate",
)
#: A time of day after one of these words is a duration ("Timeout value of 00:05:00", "after 00:10:00").
DURATION_WORDS = (
    "after", "timeout", "timeout value of", "timeout of", "elapsed", "duration", "exceeded", "within",
    "waited",
)
#: A three-digit number followed by one of these is an HTTP status.
HTTP_REASONS = (
    "Bad Request", "Unauthorized", "Forbidden", "Not Found", "Method Not Allowed", "Conflict", "Gone",
    "Too Many Requests", "Internal Server Error", "Not Implemented", "Bad Gateway", "Service Unavailable",
    "Gateway Timeout", "Server Unavailable",
)

_CANONICAL_JSON = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"))
_TOKEN_BASE = 0xF0000
_TOKEN = re.compile("[\U000f0000-\U000ffffd]")
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_DIGIT = re.compile(r"\d", re.ASCII)
_STORAGE_SCHEMES = frozenset({"abfs", "abfss", "wasb", "wasbs", "adl", "s3", "s3a", "gs"})
_STORAGE_HOST = re.compile(
    r"\.(?:blob|dfs|file|queue|table)\.core\.(?:windows\.net|chinacloudapi\.cn)$", re.I
)
_IPV4_HOST = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?", re.ASCII)
_SAS_QUERY = re.compile(r"(?:^|[?&])(?:sig|sv|se)=", re.I)
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


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """The incident grouping key of a failure: ``value`` is the hex SHA-256 of ``canonical_key(...)``."""

    value: str
    template: Template
    resource: str
    scope: str = ""
    version: str = FINGERPRINT_VERSION


class _Tokens:
    """Replaced and protected spans of one message, each standing in the text as one private-use char."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: list[tuple[str, str]] = []

    def token(self, kind: str, original: str) -> str:
        self.entries.append((kind, original))
        return chr(_TOKEN_BASE + len(self.entries) - 1)


Handler = Callable[[_Tokens, re.Match[str]], str]


@dataclass(frozen=True, slots=True)
class Rule:
    """Replace each match (or only its ``v`` group) by a ``kind`` token; ``kind == KEEP`` protects it.

    An empty ``kind`` takes it from the matching alternative's group name (``ts__iso`` → ``ts``).
    The rule runs only if one of ``needs`` (lower-case substrings) occurs, if the message holds a digit when
    ``digits`` is set, and if ``gate`` (a regex cheaper than the rule) finds something. ``handler``, when
    given, decides per match what it becomes.
    """

    kind: str
    pattern: re.Pattern[str]
    needs: tuple[str, ...] = ()
    digits: bool = False
    handler: Handler | None = None
    gate: re.Pattern[str] | None = None
    groups: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        groups = tuple(name for name in ("v", "w") if name in self.pattern.groupindex)
        object.__setattr__(self, "groups", groups)


def _rule(kind: str, regex: str, *needs: str, digits: bool = False, flags: int = 0,
          handler: Handler | None = None, gate: str = "") -> Rule:
    compiled_gate = re.compile(gate, re.ASCII) if gate else None
    return Rule(kind, re.compile(regex, flags | re.ASCII), tuple(needs), digits, handler, compiled_gate)


def _forms(*forms: tuple[str, str]) -> str:
    """Alternatives named ``<kind>__<n>``, so a match says which kind it is."""
    return "|".join(f"(?P<{kind}__{n}>{regex})" for n, (kind, regex) in enumerate(forms))


def _url(tokens: _Tokens, match: re.Match[str]) -> str:
    """Scheme and host stay; credentials go; a storage path stays (templated later); other paths go."""
    scheme, userinfo, host, rest = match.group("scheme", "userinfo", "host", "rest")
    storage = scheme[:-3].lower() in _STORAGE_SCHEMES or _STORAGE_HOST.search(host) is not None
    out = scheme
    if userinfo:
        # In abfss://container@account... the user part is the container, a name; elsewhere a credential.
        out += (userinfo if storage else tokens.token("secret", userinfo)) + "@"
    out += tokens.token("ip", host) if _IPV4_HOST.fullmatch(host) else tokens.token(KEEP, host)
    rest = rest or ""
    stripped = rest.rstrip(".,;:!)]}")
    path, _, query = stripped.partition("?")
    if storage:
        out += path
        if query:
            out += "?" + tokens.token("sas" if _SAS_QUERY.search(query) else "url", query)
    elif len(stripped) > 1:
        out += stripped[0] + tokens.token("url", stripped[1:])
    else:
        out += stripped
    return out + rest[len(stripped):]


def _quoted_name(tokens: _Tokens, match: re.Match[str]) -> str:
    """Protect a quoted name that follows a naming word (``column name 'x'``); leave other quotes alone."""
    start = match.start()
    head = match.string[max(0, start - 40):start].rstrip(" :=").lower()
    return tokens.token(KEEP, match.group()) if head.endswith(_NAME_SUFFIXES) else match.group()


def _hex_or_num(tokens: _Tokens, match: re.Match[str]) -> str:
    """A number (unless glued to a name, a version or a code context) or a long hex id."""
    text, start, end = match.string, match.start(), match.end()
    found = match.group()
    if found.replace(".", "", 1).isdigit():
        # Glued into a name (orders_17, 1.13.1, sql-01.database) it is part of the name, not a number.
        after = text[end:end + 2]
        glued = (
            (start > 0 and text[start - 1] in "_.")
            or (after[:1] == "." and after[1:].isalnum())
            or text[max(0, start - 5):start].lower() == "http/"
        )
        return found if glued or _is_code(text, start, end) else tokens.token("num", found)
    if found[:2] in ("0x", "0X") or (
        len(found) >= 8 and (found.islower() or found.isupper()) and any(c.isdigit() for c in found)
    ):
        return tokens.token("hex", found)
    return found


def _job_cluster(tokens: _Tokens, match: re.Match[str]) -> str:
    """``job-<job id>-run-<run id>``: the job id says which job, the run id changes every run."""
    return f"job-{tokens.token(KEEP, match.group('job'))}-run-{tokens.token('num', match.group('run'))}"


def _digit_form(tokens: _Tokens, match: re.Match[str]) -> str:
    """A token of the kind the matching form names; a time after "timeout", "after", ... is a duration."""
    kind = str(match.lastgroup).partition("__")[0]
    if kind == "time":
        start = match.start()
        if match.string[max(0, start - 24):start].rstrip(" :=").lower().endswith(DURATION_WORDS):
            kind = "duration"
    return tokens.token(kind, match.group())


def _is_code(text: str, start: int, end: int) -> bool:
    head = text[max(0, start - 24):start].lower()
    if head.endswith(CODE_CONTEXT_EXACT) or head.rstrip(" '\"=:-").endswith(CODE_CONTEXT_LOOSE):
        return True
    return end - start == 3 and text[end:end + 26].lstrip(" ()-").startswith(HTTP_REASONS)


_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]{0,6}"
_WEEKDAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]{0,6}"
# Digit forms are written after a run's first digit (``_FIRST_DIGIT``); a lookbehind then checks what it was.
_FIRST_DIGIT = r"\d(?<!\d\d)"
_YEAR = r"(?<=(?:19|20)\d\d)"
_YMD = r"(?<=(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01]))"
_UNITS = r"ms|milliseconds?|seconds?|secs?|minutes?|mins?|hours?|hrs?|days?"
_TIME_FORMS = (
    ("ts", r"\d{3}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2})?(?:[.,]\d+)?(?:\s?(?:Z|UTC|GMT)|[+-]\d{2}:?\d{2})?"),
    # 0_2020_11_09_11_43_32.avro
    ("ts", r"\d{3}" + _YEAR + r"(?P<tsep>[/._-])\d{2}(?P=tsep)\d{2}[T _-]\d{2}[:._-]?\d{2}[:._-]?\d{2}"
           r"(?:[.,]\d+)?Z?"),
    ("ts", r"\d?/\d{1,2}/\d{2,4},?\s\d{1,2}:\d{2}(?::\d{2})?(?:\.\d+)?(?:\s?[AP]M)?"),
    ("ts", r"\d?/" + _MONTH + r"/\d{4}:\d{2}:\d{2}:\d{2}(?:\s[+-]\d{4})?"),
    # Compact stamps only inside names (orders_20261129T101530.csv); a bare 8-digit number is a <num>.
    ("ts", r"(?<=[A-Za-z_]\d)\d{7}" + _YMD + r"T?\d{6}Z?|\d{7}" + _YMD + r"T?\d{6}Z?(?=[A-Za-z_])"),
    ("time", r"(?<![:.]\d)\d?:\d{2}:\d{2}(?:[.,]\d{1,7})?(?:\s?[AP]M)?(?![0-9:])"),
    ("date", r"\d{3}" + _YEAR + r"(?P<dsep>[/._-])\d{1,2}(?P=dsep)\d{1,2}(?!\d)"),
    ("date", r"\d?(?P<dsep2>[/.-])\d{1,2}(?P=dsep2)\d{4}" + _YEAR + r"(?!\d)"),
    ("date", r"(?<=[A-Za-z_]\d)\d{7}" + _YMD + r"(?!\d)|\d{7}" + _YMD + r"(?=[A-Za-z_])"),
    ("date", r"\d?\s" + _MONTH + r"\s\d{4}(?!\d)"),
    # Year and month alone, as in monthly partitions: landing/2026/11/.
    ("date", r"\d{3}" + _YEAR + r"[/-](?:0[1-9]|1[0-2])(?![/.-]?\d)"),
)
_DIGIT_FORMS = (
    ("cluster_id", r"(?<![A-Za-z-]\d)\d{3}-\d{6}-[a-z0-9]{5,12}(?![A-Za-z0-9-])"),
    ("ip", r"(?<!\.\d)\d{0,2}(?:\.\d{1,3}){3}(?::\d{1,5})?(?!\.?\d)"),
    *_TIME_FORMS,
    ("duration", r"(?<![\w.]\d)\d*(?:\.\d+)?(?:\s?(?:" + _UNITS + r")|[smh])(?!\w)"),
)

_URL_RULE = _rule(
    "url",
    r"(?P<scheme>[A-Za-z](?<![\w.+-][A-Za-z])[A-Za-z0-9+.-]{1,15}://)(?:(?P<userinfo>[^\s/@'\"<>?#]+)@)?"
    r"(?P<host>[^\s/?#'\"<>,;)\]]+)(?P<rest>[/?#][^\s'\"<>]*)?",
    "://",
    handler=_url,
)
_GUID_RULE = _rule(
    "guid",
    r"[0-9A-Fa-f](?<![0-9A-Fa-f][0-9A-Fa-f])[0-9A-Fa-f]{7}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-"
    r"[0-9A-Fa-f]{12}(?![0-9A-Fa-f])",
    "-",
    digits=True,
)
_SECRET_KEYS = (
    "password", "pwd", "secret", "accountkey", "account_key", "sharedaccess", "shared_access", "apikey",
    "api_key", "token",
)

#: Before names are protected: what varies wherever it stands, inside names and paths too.
EARLY_RULES: tuple[Rule, ...] = (
    _URL_RULE,
    _rule("sas", r"(?<![\w&=])(?P<v>(?:[a-z][a-z0-9_-]*=[^\s&'\"<>]*&)*sig=[^\s&'\"<>]*"
          r"(?:&[a-z][a-z0-9_-]*=[^\s&'\"<>]*)*)", "sig=", flags=re.I),
    _rule("sas", r"(?<![\w&=])(?P<v>sv=\d{4}-\d{2}-\d{2}(?:&[a-z][a-z0-9_-]*=[^\s&'\"<>]*)*)", "sv=",
          flags=re.I),
    _rule("secret", r"(?<![\w-])(?:account_?key|shared_?access_?key|sharedaccesssignature|password|passwd|pwd"
          r"|client_?secret|api_?key|access_?token|refresh_?token)\s*[=:]\s*['\"]?(?P<v>[^\s;&'\",]+)"
          r"|\"(?:password|pwd|secret|client_?secret|api_?key|access_?token|token)\"\s*:\s*\"(?P<w>[^\"]*)\"",
          *_SECRET_KEYS, flags=re.I),
    _rule("secret", r"d(?<![A-Za-z0-9]d)api[0-9a-f]{32}(?:-\d+)?(?![A-Za-z0-9])", "dapi"),
    _rule("secret", r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.?[A-Za-z0-9_-]*", "eyj"),
    _rule("secret", r"\b(?:bearer|basic)\s+(?P<v>(?=[A-Za-z._~+/=-]*\d)[A-Za-z0-9._~+/=-]{8,})", "bearer ",
          "basic ", flags=re.I),
    _GUID_RULE,
    _rule("ip", r"(?<![\w:])(?=[0-9A-Fa-f:]*::|(?:[0-9A-Fa-f]{1,4}:){7})(?:[0-9A-Fa-f]{0,4}:){2,7}"
          r"[0-9A-Fa-f]{0,4}(?![\w:])", "::"),
    _rule("", _forms(
        ("ts", _WEEKDAY + r",?\s\d{1,2}\s" + _MONTH + r"\s\d{4}\s\d{2}:\d{2}:\d{2}"
               r"(?:\s?(?:GMT|UTC|[+-]\d{4}))?"),
        ("ts", _WEEKDAY + r"\s" + _MONTH + r"\s{1,2}\d{1,2}\s\d{2}:\d{2}:\d{2}(?:\s[A-Z]{3,4})?\s\d{4}"),
        ("date", _MONTH + r"\s\d{1,2},?\s\d{4}"),
    ), digits=True, gate=_MONTH),
    # ISO 8601 durations: PT30M, P1DT2H.
    _rule("duration", r"P(?<![A-Za-z0-9]P)(?=\d|T\d)(?:\d+[YMWD])*(?:T(?:\d+(?:\.\d+)?[HMS])+)?"
          r"(?![A-Za-z0-9])", digits=True),
    _rule("", _FIRST_DIGIT + "(?:" + _forms(*_DIGIT_FORMS) + ")", digits=True, handler=_digit_form),
)

#: Names that tell causes apart: protected from the rules after them.
KEEP_RULES: tuple[Rule, ...] = (
    _rule(KEEP, r"`[^`\n]{1,256}`(?:\.`[^`\n]{1,256}`)*", "`"),
    _rule(KEEP, r"'[^'\s](?:[^'\n]{0,198}[^'\s])?'|\"[^\"\s](?:[^\"\n]{0,198}[^\"\s])?\""
          r"|\[[^\]\n]{1,200}\](?:\.\[[^\]\n]{1,200}\])*", "'", "\"", "[", handler=_quoted_name),
    _rule(KEEP, r"Operation on target (?P<v>.+?) failed|Inner activity name: (?P<w>[^,]+), Error",
          "operation on target", "inner activity"),
    _rule(KEEP, r"/(?<![\w/.:]/)(?:Workspace/)?(?:Repos|Users|Shared)/[^\s'\",;:)\]]+", "/repos/", "/users/",
          "/shared/"),
    _rule(KEEP, r"\bnotebook(?:[ _]?path)?\s*[:=]?\s*(?P<v>/[^\s'\",;:)\]]+)", "notebook", flags=re.I),
)

#: After names are protected: data values and the remaining ids and numbers.
LATE_RULES: tuple[Rule, ...] = (
    _rule("value", r"[Vv](?<![\w][Vv])(?i:alues?)(?::\s*|\s+)'(?P<v>[^'\n]{0,256})'", "value"),
    _rule("value", r"[Vv](?<![\w][Vv])(?i:alues?)(?::\s*|\s+)\"(?P<v>[^\"\n]{0,256})\"", "value"),
    _rule("value", r"\bduplicate key value is \((?P<v>[^)\n]{0,256})\)", "duplicate key", flags=re.I),
    _rule("value", r"(?:invalid literal for \w+\(\) with base \d+|could not convert string to \w+|time data"
          r"|Unknown string format):? '(?P<v>[^'\n]{0,256})'", "literal", "convert string", "time data",
          "unknown string"),
    _rule("value", r"(?:For input string|Unparseable date|Cannot parse):? \"(?P<v>[^\"\n]{0,256})\"",
          "input string", "unparseable", "cannot parse"),
    # Spark and YARN application, attempt and container ids: application_1732871234567_0042.
    _rule("id", r"\b(?:application|appattempt|attempt|container)_(?:e\d+_)?\d{10,}(?:_\d+)+\b"
          r"|\bapp-\d{14}-\d{4,}\b", "application_", "attempt_", "container_", "app-", digits=True),
    _rule("email", r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+", "@"),
    _rule("path", r"/(?<![\w/.]/)(?:local_disk0|tmp|var/tmp|dev/shm)/[^\s'\",;)\]]*", "/local_disk0", "/tmp",
          "/dev/shm"),
    _rule("path", r"\b[A-Z]:\\(?:[^\s'\",;\\]+\\)*?(?:local\\)?Temp\\[^\s'\",;)\]]*", "\\temp\\", flags=re.I),
    _rule("", r"[0-9A-Fa-f](?<![A-Za-z0-9][0-9A-Fa-f])(?:(?<=0)[xX][0-9A-Fa-f]+|[0-9A-Fa-f]{7,127}"
          r"|(?<=\d)\d*(?:\.\d+)?)(?![A-Za-z0-9_])", digits=True, handler=_hex_or_num),
)

RULES: tuple[Rule, ...] = EARLY_RULES + KEEP_RULES + LATE_RULES

#: Resource names keep their words; only run-specific parts go: job-<job id>-run-<num>, GUIDs, stamps.
RESOURCE_RULES: tuple[Rule, ...] = (
    _rule("num", r"\bjob-(?P<job>\d+)-run-(?P<run>\d+)", "job-", digits=True, handler=_job_cluster),
    _GUID_RULE,
    _rule("", _FIRST_DIGIT + "(?:" + _forms(*_TIME_FORMS, ("num", r"\d{7,}(?!\d)")) + ")", digits=True,
          handler=_digit_form),
)

#: Every kind of replacement and the placeholder it leaves in the template.
PLACEHOLDERS = {kind: f"<{kind}>" for kind in (
    "guid", "ts", "date", "time", "duration", "cluster_id", "id", "ip", "email", "hex", "num", "url", "sas",
    "secret", "path", "value",
)}


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
    if _TOKEN.search(text):
        text = _TOKEN.sub("\ufffd", text)
    if "\n" not in text and "\r" not in text:
        return " ".join(text.split())
    return "\n".join(joined for line in text.splitlines() if (joined := " ".join(line.split())))


def _tokenise(text: str, rules: tuple[Rule, ...]) -> tuple[str, list[tuple[str, str]]]:
    """The text with every replaced or protected span turned into a token, and the tokens' entries."""
    lowered = f" {text.lower()} "
    has_digit = _DIGIT.search(text) is not None
    tokens = _Tokens()
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


def _replacer(rule: Rule, tokens: _Tokens) -> Callable[[re.Match[str]], str]:
    # partial() binds without an extra Python frame per match.
    if rule.handler is not None:
        return partial(rule.handler, tokens)
    if not rule.kind:
        return partial(_by_group_name, tokens)
    if rule.groups:
        return partial(_replace_group, tokens, rule.kind, rule.groups)
    return partial(_replace_whole, tokens, rule.kind)


def _replace_whole(tokens: _Tokens, kind: str, match: re.Match[str]) -> str:
    return tokens.token(kind, match.group())


def _by_group_name(tokens: _Tokens, match: re.Match[str]) -> str:
    return tokens.token(str(match.lastgroup).partition("__")[0], match.group())


def _replace_group(tokens: _Tokens, kind: str, groups: tuple[str, ...], match: re.Match[str]) -> str:
    """Only the ``v`` (or ``w``) group of the match is replaced; the context around it stays."""
    name = next((name for name in groups if match.start(name) >= 0), None)
    whole = match.group()
    if name is None:
        return tokens.token(kind, whole)
    start, end = match.start(name) - match.start(), match.end(name) - match.start()
    return whole[:start] + tokens.token(kind, match.group(name)) + whole[end:]


def _render(text: str, entries: list[tuple[str, str]], replaced: list[tuple[str, str]]) -> str:
    """Placeholders for replaced tokens, the original for protected ones; ``replaced`` in text order."""
    return _TOKEN.sub(partial(_render_token, entries, replaced), text)


def _render_token(
    entries: list[tuple[str, str]], replaced: list[tuple[str, str]], match: re.Match[str]
) -> str:
    kind, original = entries[ord(match.group()) - _TOKEN_BASE]
    if kind == KEEP:
        return _render(original, entries, replaced) if _TOKEN.search(original) else original
    replaced.append((kind, _recorded(kind, _expand(original, entries))))
    return PLACEHOLDERS[kind]


def _expand(text: str, entries: list[tuple[str, str]]) -> str:
    """The original text of a span that swallowed earlier tokens."""
    if not _TOKEN.search(text):
        return text
    return _TOKEN.sub(lambda match: _expand(entries[ord(match.group()) - _TOKEN_BASE][1], entries), text)


def _recorded(kind: str, original: str) -> str:
    if kind in SECRET_KINDS:
        return REDACTED
    if kind == "url":
        return _SECRET_QUERY.sub(lambda match: match.group(1) + REDACTED, original)
    return original
