"""The fast TOML path of job files gives tomllib's data, or steps aside for tomllib."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hyperq.cli.jobtoml import fast_loads, loads


def same(a: Any, b: Any) -> bool:
    """Equal, with the same types (1, 1.0 and True are == in Python) and the same order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and a != a:
        return b != b
    return bool(a == b)


def check(text: str) -> dict[str, Any] | None:
    """The property: the fast path agrees with tomllib or declines."""
    fast = fast_loads(text)
    fast_shared = fast_loads(text, shared=True)
    assert (fast is None) == (fast_shared is None)
    if fast is not None:
        assert same(fast, fast_shared)
    try:
        slow = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        assert fast is None, f"fast path accepted what tomllib refuses: {text!r}"
        return None
    except ValueError:  # an integer too long for int(): tomllib raises it too
        assert fast is None
        return None
    if fast is not None:
        assert same(fast, slow), f"{text!r}: {fast!r} != {slow!r}"
    return fast


# Inputs the fast path must read itself (the subset), and agree on.
FAST = [
    "",
    "\n\n# only a comment\n",
    'name = "x"\n[[task]]\nid = 1\ncommand = ["a", "b"]\n',
    '[[task]]\ncommand = ["true"]\nstdout = "none"\nstderr = "none"',  # no final newline
    '[[task]]\r\nid = 2\r\ncommand = ["x"]\r\n',  # CRLF, as tomllib reads it
    r"[[task]]" '\ncommand = ["a\\"b", "tab\\there", "back\\\\slash", "\\b\\f\\n\\r"]\n',
    "[[task]]\ncommand = ['C:\\path\\with\\backslash', 'x\"y']\n",
    "[[task]]\ncommand = [\"#not a comment\", '#nor this']  # but this is\n",
    '[[task]]\ncommand = ["x",]\ndeps = [1, 2, 3, ]\nid = 7\n',  # trailing commas
    "[[task]]\ncommand = []\npriority = -5\nid = 1_000\ncrash_limit = +3\n",
    "[[task]]\ncommand = ['x']\npriority = -0\nid = 0\n",
    '[[task]]\ncommand = ["ünïcödé", "日本語", "emoji 🎉", "\u2028sep\x85"]\n',
    "[[task]]\ncommand = ['x']\n[[task.request]]\nresources = { cpus = 4, \"gpus\" = 1.5, "
    "'mem' = \"2 compact!\" }\nweight = 0.5\n[[task.request]]\nresources = {}\nn_nodes = 1\n"
    "[task.env]\nA = 'b'\n\"C D\" = \"e\"\n[[task]]\ncommand = ['y']\n[task.env]\nA = 'c'\n",
    '[array]\nids = "1-3"\ncommand = ["x"]\n[[array.request]]\nresources = {cpus = 1}\n',
    "  x = 1\n",  # indented statement
    "[[ task ]]  # spaced header\nid = 1",
    "a = 1e3\nb = 1.5E-2\nc = -0.0\nd = 3_1.4_1\ne = true\nf = false\ng = [true, 1, 'x', 2.5]",
    'stdout = {path = "out", on_close = "rm-if-finished"}\nx = {a = [1, 2], b = []}\n',
    "[x]\ny = 1\n[x.z]\nw = 2\n[[x.v]]\n[[x.v]]\nq = 3\n",
    "[[task]]\n[task.env]\nA = '1'\n[[task]]\n[task.env]\nA = '2'\n[[task]]\n[[task]]\n[task.env]\n"
    "[[x]]\n[[task]]\n[[task.request]]\n[[task.request]]\n[[task]]\n[[task.request]]\n",
    "k = 1 # comment with \t tab and ünïcödé\n\t\n",
    "[[task]]\ndeps = [" + ", ".join(map(str, range(5000))) + "]\ncommand = ['x']\n",
    'a = ""\nb = [""]\nc = ["x", "", "y z"]\nd = []\ne = ["tab\there"]\n',
]

# Inputs it must leave to tomllib (outside the subset, or errors).
SLOW = [
    'a = """multi\nline"""\n',
    "a = '''x'''\n",
    "a.b = 1\n",  # dotted key
    "a = 1979-05-27\n",
    "a = 07:32:00\n",
    "a = 0x1f\n",
    "a = inf\n",
    'a = "\\u00e9"\n',  # \u escapes are left to tomllib
    "a = [\n  1,\n]\n",  # multi-line array
    "a = [[1], [2]]\n",
    "a = {b = {c = 1}}\n",
    "a = 1\na = 2\n",  # duplicate key: tomllib's error
    "[[task]]\nid = 1\nid = 2\n",  # duplicate on the first line of a section
    "[[task]]\ncommand = ['x']\ncommand = ['y']\n",
    "[a]\n[a]\n",  # table declared twice
    "[a]\nb = 1\n[a.b]\n",
    "[[a]]\n[a]\n",
    "a = 1\n[a]\n",
    "[[task]]\nenv = {A = 'b'}\n[task.env]\nC = 'd'\n",
    "[[task]]\n[task.request]\n[[task.request]]\n",
    "[[task]]\n[task.env]\n[[task]]\n[[task]]\n[task.env]\n[task.env]\n",
    "[task.env]\n",  # parent never declared
    "a = {b = 1, b = 2}\n",
    "a = {b = 1,}\n",
    "a = 01\n",
    "a = 1__0\n",
    "a = 'x\n",
    'a = "x\\q"\n',
    'a = "tab\x01"\n',
    "a = 1\rb = 2\n",  # a lone CR
    "\ufeffa = 1\n",
    "  [[task]]\n",  # indented header
    "[[task]] x\n",
    "[[task]\n",
    "[[a.b.c]]\n",
    "a = " + "9" * 5000 + "\n",  # longer than int() takes
    "a = truex\n",
    "a = [1 2]\n",
    "a = [,]\n",
    "= 1\n",
    'a = ["x", "y", ]\nb = ["x" , "y"]\nc = ["x",\n',
]


@pytest.mark.parametrize("text", FAST)
def test_fast_path_reads_the_usual_shape(text: str) -> None:
    assert check(text) is not None, f"fell back on {text!r}"


@pytest.mark.parametrize("text", SLOW)
def test_other_texts_go_to_tomllib(text: str) -> None:
    assert fast_loads(text) is None
    check(text)


@pytest.mark.parametrize("text", SLOW)
def test_errors_are_tomllibs(text: str) -> None:
    try:
        expected: Any = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as error:
        with pytest.raises(type(error)) as caught:
            loads(text)
        assert str(caught.value) == str(error)
    else:
        assert same(loads(text), expected)


def test_values_are_fresh_objects() -> None:
    data = loads("[[task]]\ncommand = ['x']\n[[task]]\ncommand = ['x']\n")
    first, second = data["task"]
    assert first["command"] == second["command"] and first["command"] is not second["command"]
    text = "[[task]]\nid = 1\nc = [1]\ne = {a = [2]}\n"
    data = loads(text + text.replace("id = 1", "id = 2"))
    first, second = data["task"]
    assert first["c"] is not second["c"] and first["e"]["a"] is not second["e"]["a"]
    # Unless the caller takes shared values.
    first, second = loads(text + text.replace("id = 1", "id = 2"), shared=True)["task"]
    assert first["c"] is second["c"]


# --- generated job files -----------------------------------------------------------------

KEYS = ["id", "deps", "command", "env", "stdout", "name", "A", "x-y", "1", "true"]
HEADERS = [
    "[[task]]", "[[task.request]]", "[task.env]", "[array]", "[[array.request]]",
    "[task]", "[[ task ]]", "[x.y]", "[[x.y]]", "[x]", "[[x]]", "[a.b.c]", '["task"]',
]  # fmt: skip

text_chars = st.characters(codec="utf-8", exclude_categories=("Cs",))
plain_text = st.text(
    st.sampled_from([*"ab #=[]{},.'\"\\\t_-1é🎉", "\x01", "\u2028"]) | text_chars,
    max_size=8,
)

safe_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=8)


def basic_string(value: str) -> str:
    escapes = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\b": "\\b", "\r": "\\r"}
    return '"' + "".join(escapes.get(c, c) for c in value) + '"'


@st.composite
def scalars(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["int", "int_", "float", "bool", "basic", "literal", "raw"]))
    if kind == "int":
        return str(draw(st.integers(-(10**20), 10**20)))
    if kind == "int_":
        digits = str(draw(st.integers(0, 10**9)))
        sign = draw(st.sampled_from(["", "+", "-"]))
        cut = draw(st.integers(1, len(digits)))
        return sign + (digits[:cut] + "_" + digits[cut:] if cut < len(digits) else digits)
    if kind == "float":
        return draw(st.sampled_from(["1.5", "-0.0", "1e3", "2.5E-2", "1_0.0_1", "3.", ".5"]))
    if kind == "bool":
        return draw(st.sampled_from(["true", "false"]))
    if kind == "basic":
        return basic_string(draw(plain_text))
    if kind == "literal":
        return "'" + draw(plain_text).replace("'", "") + "'"
    return draw(plain_text)  # whatever it is


@st.composite
def values(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["scalar", "scalar", "array", "ints", "table"]))
    if kind == "scalar":
        return draw(scalars())
    if kind == "ints":
        items = draw(st.lists(st.integers(0, 10**6), max_size=6))
        return "[" + ", ".join(map(str, items)) + "]"
    if kind == "array":
        items = draw(st.lists(scalars(), max_size=4))
        sep = draw(st.sampled_from([", ", ",", " , ", ",\t"]))
        trail = draw(st.sampled_from(["", ",", ", "]))
        return "[" + sep.join(items) + (trail if items else "") + "]"
    pairs = draw(st.lists(st.tuples(st.sampled_from(KEYS), scalars() | values()), max_size=3))
    return "{" + ", ".join(f"{k} = {v}" for k, v in pairs) + "}"


@st.composite
def lines(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["kv", "kv", "kv", "header", "blank", "comment"]))
    if kind == "header":
        return draw(st.sampled_from(HEADERS)) + draw(st.sampled_from(["", "  # c", " "]))
    if kind == "blank":
        return draw(st.sampled_from(["", " ", "\t"]))
    if kind == "comment":
        return "# " + draw(plain_text)
    key = draw(st.sampled_from(KEYS) | st.sampled_from(['"q k"', "'lit'", "a.b", '""']))
    eq = draw(st.sampled_from([" = ", "=", " =\t"]))
    comment = draw(st.sampled_from(["", " # note", "#x"]))
    return draw(st.sampled_from(["", "  "])) + key + eq + draw(values()) + comment


@st.composite
def job_files(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(["\n", "\r\n"])).join(draw(st.lists(lines(), max_size=12)))
    if text and draw(st.booleans()):
        # Slightly broken: one character dropped or one inserted.
        at = draw(st.integers(0, len(text) - 1))
        if draw(st.booleans()):
            text = text[:at] + text[at + 1 :]
        else:
            text = text[:at] + draw(st.sampled_from([*"\"'[]{}=,#\\\n\r .", "\x00"])) + text[at:]
    return text


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(job_files())
@example("[[task]]\nid = 1\n[[task.request]]\n[[task]]\nid = 1\n[task.env]\n")
def test_generated_files_agree_with_tomllib(text: str) -> None:
    check(text)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2**32),
            st.lists(st.integers(0, 10**6), max_size=5),
            st.lists(safe_text, min_size=1, max_size=3),
        ),
        max_size=20,
    )
)
def test_generated_task_lists_take_the_fast_path(tasks: list[Any]) -> None:
    text = "".join(
        f"[[task]]\nid = {task_id}\ndeps = [{', '.join(map(str, deps))}]\n"
        f"command = [{', '.join(basic_string(a) for a in args)}]\n"
        for task_id, deps, args in tasks
    )
    assert check(text) is not None
