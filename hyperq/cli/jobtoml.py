"""TOML for job definition files: a fast path for their usual shape, tomllib for the rest.

Why: `tomllib` (pure Python) spends ~2.7 s on a generated file of 100,000 tasks, more than
the whole submit may take. Such files are regular: `[[task]]`-style headers and one-line
`key = value` statements with strings, integers, floats, booleans, one-line arrays of
those and inline tables. `loads` reads that shape a section at a time (the text between
two headers), remembering sections and lines it has already seen, and gives the same
data `tomllib.loads` would. Anything outside that shape (multi-line strings or arrays,
dotted keys, dates, `\\u` escapes, tables opened twice, duplicate keys, stray bytes…) makes
it hand the whole text to `tomllib.loads`, so every error, with its line and column, is
tomllib's own.

Every line must be one whole statement of the subset, so the line-wise reading is the
statement-wise reading tomllib does; the tests compare both on generated files.
"""

from __future__ import annotations

import functools
import re
import tomllib
from typing import Any

__all__ = ["fast_loads", "loads"]

# Pieces of the grammar (TOML 1.0 as tomllib reads it), kept to the one-line subset.
_WS = r"[ \t]*"
_BARE = r"[A-Za-z0-9_-]+"
# Control characters are illegal in strings and comments, except the tab.
_BASIC = r'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[btnfr"\\])*"'
_LITERAL = r"'[^'\x00-\x08\x0a-\x1f\x7f]*'"
_KEY = rf"(?:{_BARE}|{_BASIC}|{_LITERAL})"
_INT = r"[+-]?(?:0|[1-9](?:_?[0-9])*)"
_EXP = r"[eE][+-]?[0-9](?:_?[0-9])*"
_FLOAT = rf"{_INT}(?:\.[0-9](?:_?[0-9])*(?:{_EXP})?|{_EXP})"
# What may follow a value: anything else (`1979-05-27`, `12:00:00`, `0x1f`, `truex`) is
# not in the subset, or not TOML at all.
_END = r"(?=[ \t,\]}#]|$)"
_SCALAR = rf"(?:{_BASIC}|{_LITERAL}|(?:true|false|{_FLOAT}|{_INT}){_END})"
# Possessive: a long array (`deps` of a fan-in) must not leave a backtracking point per
# item (0.13 s and 140 MiB for 100,000 items).
_ARRAY = rf"\[{_WS}(?:{_SCALAR}{_WS},{_WS})*+(?:{_SCALAR}{_WS})?\]"
_INNER = rf"(?:{_SCALAR}|{_ARRAY})"
_PAIR = rf"{_KEY}{_WS}={_WS}{_INNER}"
_INLINE = rf"\{{{_WS}(?:{_PAIR}(?:{_WS},{_WS}{_PAIR})*{_WS})?\}}"
_COMMENT = r"(?:#[^\x00-\x08\x0a-\x1f\x7f]*)?"

_LINE = rf"{_WS}(?:({_KEY}){_WS}={_WS}({_SCALAR}|{_ARRAY}|{_INLINE}))?{_WS}{_COMMENT}"
# The commonest lines that differ from task to task (`id = 12`), matched much faster.
_SIMPLE_INT = re.compile(r"([A-Za-z0-9_-]+) = (0|[1-9][0-9]{0,17})")
# Plain strings and arrays of them (`command = ["x", "y"]`, `stdout = "none"`): with the
# two patterns around it, the full grammar is not even compiled for a file of such lines.
_SIMPLE_STRS = re.compile(
    r'([A-Za-z0-9_-]+) = (?:"([^"\\\x00-\x1f\x7f]*)"|\[((?:"[^"\\\x00-\x1f\x7f]*", )*+'
    r'(?:"[^"\\\x00-\x1f\x7f]*")?)\])'
)
# A long `deps` line written the usual way is checked 10× faster than by `_LINE`.
_SIMPLE_INTS = re.compile(r"([A-Za-z0-9_-]+) = \[((?:(?:0|[1-9][0-9]*), )*+(?:0|[1-9][0-9]*)?)\]")
_HEADER = re.compile(
    rf"\[(\[)?{_WS}({_BARE})(?:{_WS}\.{_WS}({_BARE}))?{_WS}\](?(1)\]){_WS}{_COMMENT}"
)
_TOKEN = rf"{_BASIC}|{_LITERAL}|(?:true|false|{_FLOAT}|{_INT})(?={_WS}[,\]])"
_PAIR_PARTS = rf"({_KEY}){_WS}={_WS}({_INNER})"
_INT_ARRAY = re.compile(r"\[[0-9_+, \t-]*\]")
_INT_ITEM = re.compile(r"[+-]?[0-9_]+")
_ESCAPE = re.compile(r"\\(.)")
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}


_MUTABLE = (list, dict)


@functools.cache
def _grammar() -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """The full one-line grammar, compiled on first need (~15 ms)."""
    return re.compile(_LINE), re.compile(_TOKEN), re.compile(_PAIR_PARTS)


class _Fallback(Exception):
    """The text leaves the subset: tomllib reads it."""


def loads(text: str, *, shared: bool = False) -> dict[str, Any]:
    """`tomllib.loads(text)`, faster for the usual shape of job files; raises what
    tomllib raises.

    `shared`: arrays and inline tables read from equal lines may be one object in
    several places (equal data, less copying: 100,000 tasks with `command = ["x"]`);
    only for a caller that does not change them.
    """
    data = fast_loads(text, shared=shared)
    return tomllib.loads(text) if data is None else data


def fast_loads(text: str, *, shared: bool = False) -> dict[str, Any] | None:
    """tomllib's result for a text in the subset, None for any other text."""
    try:
        return _Reader(shared).read(text)
    except (_Fallback, ValueError):
        # ValueError: an integer too long for int() (tomllib raises it too).
        return None


def _string(token: str) -> str:
    body = token[1:-1]
    if token[0] == '"' and "\\" in body:
        return _ESCAPE.sub(lambda match: _ESCAPES[match[1]], body)
    return body


def _scalar(token: str) -> Any:
    first = token[0]
    if first == '"' or first == "'":
        return _string(token)
    if token == "true":
        return True
    if token == "false":
        return False
    if "." in token or "e" in token or "E" in token:
        return float(token.replace("_", ""))
    # The grammar already refused leading zeros, which int() would accept.
    return int(token)


def _array(token: str) -> list[Any]:
    if _INT_ARRAY.fullmatch(token):
        # Digits, signs, underscores, commas and blanks only: integers (a long `deps`).
        return list(map(int, _INT_ITEM.findall(token)))
    return [_scalar(item) for item in _grammar()[1].findall(token)]


def _value(token: str) -> Any:
    first = token[0]
    if first == "[":
        return _array(token)
    if first == "{":
        table: dict[str, Any] = {}
        for key, value in _grammar()[2].findall(token):
            key = _key(key)
            if key in table:
                raise _Fallback
            table[key] = _value(value)
        return table
    return _scalar(token)


def _key(token: str) -> str:
    return _string(token) if token[0] in "\"'" else token


def _copy(value: Any) -> Any:
    """A fresh copy of a remembered value, as tomllib makes a new one each time."""
    if type(value) is list:
        return list(value)
    if type(value) is dict:
        return {key: _copy(item) for key, item in value.items()}
    return value


class _Template:
    """A section body read once: its pairs, and which values need a fresh copy."""

    __slots__ = ("lists", "pairs", "tables")

    def __init__(self, pairs: dict[str, Any]) -> None:
        self.pairs = pairs
        # Arrays of the subset hold scalars only: a shallow copy is a fresh one.
        self.lists = tuple(key for key, value in pairs.items() if type(value) is list)
        self.tables = tuple(key for key, value in pairs.items() if type(value) is dict)


class _Reader:
    def __init__(self, shared: bool) -> None:
        self.shared = shared
        self.lines: dict[str, tuple[str, Any] | None] = {}
        self.bodies: dict[str, _Template] = {}
        self.headers: dict[str, tuple[bool, str, str | None]] = {}

    def line(self, line: str) -> tuple[str, Any] | None:
        """(key, value) of a statement line, None for a blank or comment line."""
        found = self.lines.get(line, False)
        if found is not False:
            return found  # type: ignore[return-value]
        result: tuple[str, Any] | None
        match = _SIMPLE_INTS.fullmatch(line)
        if match is not None:
            items = match[2].rstrip(", ")  # a trailing comma
            result = match[1], list(map(int, items.split(", "))) if items else []
        elif (match := _SIMPLE_STRS.fullmatch(line)) is not None:
            if match[2] is not None:
                result = match[1], match[2]
            else:
                items = match[3]
                result = match[1], items[1:-1].split('", "') if items else []
        else:
            match = _grammar()[0].fullmatch(line)
            if match is None:
                raise _Fallback
            key = match[1]
            result = None if key is None else (_key(key), _value(match[2]))
        self.lines[line] = result
        return result

    def body(self, text: str) -> _Template:
        template = self.bodies.get(text)
        if template is None:
            pairs: dict[str, Any] = {}
            for line in text.split("\n"):
                pair = self.line(line)
                if pair is not None:
                    if pair[0] in pairs:
                        raise _Fallback
                    pairs[pair[0]] = pair[1]
            template = self.bodies[text] = _Template(pairs)
        return template

    def header(self, rest: str) -> tuple[bool, str, str | None]:
        """(array of tables?, name, sub-name) of a header line without its first `[`."""
        match = _HEADER.fullmatch("[" + rest)
        if match is None:
            raise _Fallback
        found = self.headers[rest] = (match[1] is not None, match[2], match[3])
        return found

    def read(self, text: str) -> dict[str, Any]:
        if "\r" in text:
            # tomllib reads CRLF as LF; a lone CR is an error for it to report.
            text = text.replace("\r\n", "\n")
            if "\r" in text:
                raise _Fallback
        # A line starting with `[` is a header (no statement of the subset spans lines);
        # an indented header stays in a body, where it is not a statement: fallback.
        sections = ("\n" + text).split("\n[")
        sections[0] = "]\n" + sections[0][1:]
        root: dict[str, Any] = {}
        # Which root keys headers made, and which keys they made in those tables (for an
        # array of tables, in its last element): only those may be reopened or extended.
        made: dict[str, bool] = {}
        made_inside: dict[str, dict[str, bool]] = {}
        lines_get = self.lines.get
        simple_int = _SIMPLE_INT.fullmatch
        bodies_get = self.bodies.get
        headers_get = self.headers.get
        shared = self.shared
        first_section = True
        last_head: str | None = None
        last_name = ""
        last_list: list[Any] = []
        for section in sections:
            # A section's first line is often the one that differs between sections (a
            # task's `id`): the rest is remembered without it.
            parts = section.split("\n", 2)
            if len(parts) == 3:
                head, first, rest = parts
            else:
                head, first, rest = parts[0], parts[1] if len(parts) == 2 else "", ""
            if first_section:
                # The statements before the first header.
                first_section = False
                table = root
            elif head == last_head:
                # The last `[[name]]` header again (`[[task]]`): its list only grows.
                table = {}
                last_list.append(table)
                if made_inside:
                    made_inside.pop(last_name, None)
            else:
                found = headers_get(head)
                is_array, name, sub = found if found is not None else self.header(head)
                table = {}
                if sub is None:
                    kind = made.get(name)
                    if kind is None:
                        if name in root:
                            raise _Fallback
                        root[name] = [table] if is_array else table
                        made[name] = is_array
                    elif is_array and kind:
                        root[name].append(table)
                    else:
                        raise _Fallback
                    if made_inside:
                        made_inside.pop(name, None)
                    if is_array:
                        last_head, last_name, last_list = head, name, root[name]
                else:
                    kind = made.get(name)
                    if kind is None:
                        raise _Fallback
                    parent = root[name][-1] if kind else root[name]
                    inside = made_inside.setdefault(name, {})
                    sub_kind = inside.get(sub)
                    if sub_kind is None:
                        if sub in parent:
                            raise _Fallback
                        parent[sub] = [table] if is_array else table
                        inside[sub] = is_array
                    elif is_array and sub_kind:
                        parent[sub].append(table)
                    else:
                        raise _Fallback
            template = bodies_get(rest)
            if template is None:
                template = self.body(rest)
            simple = simple_int(first)
            if simple is not None:
                key = simple[1]
                if key in template.pairs:
                    raise _Fallback
                table[key] = int(simple[2])
            else:
                pair = lines_get(first, False)
                if pair is False:
                    pair = self.line(first)
                if pair is not None:
                    key, value = pair
                    if key in template.pairs:
                        raise _Fallback
                    fresh = not shared and type(value) in _MUTABLE
                    table[key] = _copy(value) if fresh else value
            # The table is new: only the first line's key can collide, checked above.
            table.update(template.pairs)
            if not shared:
                for key in template.lists:
                    table[key] = table[key][:]
                for key in template.tables:
                    table[key] = _copy(table[key])
        return root
