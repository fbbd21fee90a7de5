"""Templating rules: what varies between repeats of one cause, and what tells causes apart.

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
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

KEEP = "keep"

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

#: A token is one private-use character; its offset from ``TOKEN_BASE`` indexes ``Tokens.entries``.
TOKEN_BASE = 0xF0000
TOKEN = re.compile("[\U000f0000-\U000ffffd]")
_STORAGE_SCHEMES = frozenset({"abfs", "abfss", "wasb", "wasbs", "adl", "s3", "s3a", "gs"})
_STORAGE_HOST = re.compile(
    r"\.(?:blob|dfs|file|queue|table)\.core\.(?:windows\.net|chinacloudapi\.cn)$", re.I
)
_IPV4_HOST = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?", re.ASCII)
_SAS_QUERY = re.compile(r"(?:^|[?&])(?:sig|sv|se)=", re.I)


class Tokens:
    """Replaced and protected spans of one message, each standing in the text as one private-use char."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: list[tuple[str, str]] = []

    def token(self, kind: str, original: str) -> str:
        self.entries.append((kind, original))
        return chr(TOKEN_BASE + len(self.entries) - 1)


Handler = Callable[[Tokens, re.Match[str]], str]


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


def _url(tokens: Tokens, match: re.Match[str]) -> str:
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


def _quoted_name(tokens: Tokens, match: re.Match[str]) -> str:
    """Protect a quoted name that follows a naming word (``column name 'x'``); leave other quotes alone."""
    start = match.start()
    head = match.string[max(0, start - 40):start].rstrip(" :=").lower()
    return tokens.token(KEEP, match.group()) if head.endswith(_NAME_SUFFIXES) else match.group()


def _hex_or_num(tokens: Tokens, match: re.Match[str]) -> str:
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


def _job_cluster(tokens: Tokens, match: re.Match[str]) -> str:
    """``job-<job id>-run-<run id>``: the job id says which job, the run id changes every run."""
    return f"job-{tokens.token(KEEP, match.group('job'))}-run-{tokens.token('num', match.group('run'))}"


def _digit_form(tokens: Tokens, match: re.Match[str]) -> str:
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
