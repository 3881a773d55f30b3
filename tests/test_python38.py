"""autotune runs on Python 3.8+: the product's Python files parse as 3.8 grammar and use
nothing newer (tests/support/py38.py finds what `ast.parse(feature_version=(3, 8))`
lets through: builtin generics, `X | Y` annotations, dict union, 3.9+ library)."""

import ast
import glob
import os

import pytest

from support import py38

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# what runs on a user's machine (autotune.py, the demo, the benches) and the tests' helpers
# that do too (report_check_demo is run by `make report-check`)
PRODUCT = ["autotune.py", "examples/demo.py", "tests/support/report_check_demo.py", "tests/test_demo.py"] + sorted(
    os.path.relpath(path, ROOT) for path in glob.glob(os.path.join(ROOT, "bench", "*.py")))


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
        return handle.read()


@pytest.mark.parametrize("path", PRODUCT)
def test_python38_syntax(path):
    ast.parse(read(path), path, feature_version=(3, 8))


@pytest.mark.parametrize("path", PRODUCT)
def test_python38_library_and_runtime_constructs(path):
    assert py38.problems(read(path), path) == [], path


# each of these fails on Python 3.8, and (but GRAMMAR_SOME_PYTHONS_KNOW) passes
# `ast.parse(feature_version=(3, 8))`
NEWER = {
    "builtin generic": "def f(x: list[int]) -> None:\n    pass\n",
    "builtin generic at run time": "Pair = tuple[int, int]\n",
    "union annotation": "def f(x: int | None):\n    pass\n",
    "removeprefix": "name = 'v1'.removeprefix('v')\n",
    "dict union": "merged = {'a': 1} | dict(b=2)\n",
    "dict union assignment": "d = {}\nd |= {'a': 1}\n",
    "math.lcm": "import math\nprint(math.lcm(2, 3))\n",
    "functools.cache": "import functools\n@functools.cache\ndef f():\n    return 1\n",
    "from-import": "from itertools import pairwise\n",
    "new module": "import zoneinfo\n",
    "zip strict": "pairs = list(zip([1], [2], strict=True))\n",
    "process_group": "import subprocess\nsubprocess.run(['true'], process_group=0)\n",
    "decorator expression": "buttons = [lambda f: f]\n@buttons[0]\ndef f():\n    pass\n",
    "parenthesized with": "with (open('a') as a, open('b') as b):\n    pass\n",
    "possessive regex": "import re\nre.compile(r'a*+b')\n",
    "aliased module": "import os as system\nsystem.waitstatus_to_exitcode(0)\n",
}


# some Pythons' grammar check refuses these itself (3.11's feature_version does for
# parenthesized with; Python 3.8 itself for both)
GRAMMAR_SOME_PYTHONS_KNOW = {"parenthesized with", "decorator expression"}


@pytest.mark.parametrize("name", sorted(NEWER))
def test_the_checker_finds_what_python38_cannot_run(name):
    try:
        found = py38.problems(NEWER[name], name)
    except SyntaxError:  # this Python's grammar check already knows the construct
        assert name in GRAMMAR_SOME_PYTHONS_KNOW, name
        return
    assert found, name


def test_parenthesized_context_managers_are_found_by_their_tokens():
    """Where this Python's grammar check refuses them, the token reader still must not
    rely on it: it finds `as` or a comma inside the parentheses after `with`."""
    assert py38._parenthesized_with(NEWER["parenthesized with"]) == [1]
    assert py38._parenthesized_with("with (a, b):\n    pass\n") == [1]
    assert py38._parenthesized_with("with (open('a')) as a, (open('b')) as b:\n    pass\n") == []


def test_the_checker_lets_python38_code_through():
    source = ("from __future__ import annotations\nimport os, re, typing\n"
              "def f(x: list[int] | None) -> dict[str, int]:\n    return {}\n"
              "y: typing.List[int] = []\nflags = 1 | 2\nos.readlink\n"
              "with (open('a')) as a:\n    pass\nre.compile(r'a+\\+')\n"
              "@property\ndef g():\n    pass\n")
    assert py38.problems(source) == []


def test_the_grammar_check_refuses_newer_grammar():
    with pytest.raises(SyntaxError):
        ast.parse("match x:\n    case 1:\n        pass\n", "m", feature_version=(3, 8))
