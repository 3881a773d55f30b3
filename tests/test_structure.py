"""The shape of autotune.py: sections are layers that read top to bottom.

These checks keep the file's promises to a reader: the docstring lists the banners, each
section uses only what is above it (at most three exceptions), no section runs past 700
lines and no function past 80.
"""
import ast
import os
import re

import pytest

SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "autotune.py")
BANNER = re.compile(r"^# -+ ([A-Za-z][^-\n]*?) -+$")
LAYER = re.compile(r"^# =+ ([A-Z][A-Z ]*?) =+$")


@pytest.fixture(scope="module")
def source():
    with open(SOURCE, encoding="utf-8") as handle:
        text = handle.read()
    return text, ast.parse(text)


def banners(text):
    return [(number, match.group(1)) for number, match in
            ((i + 1, BANNER.match(line)) for i, line in enumerate(text.split("\n"))) if match]


def section_of(line, marks):
    current = None
    for number, name in marks:
        if number <= line:
            current = name
    return current


def defined(node):
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return [node.name]
    targets = node.targets if isinstance(node, ast.Assign) else (
        [node.target] if isinstance(node, ast.AnnAssign) else [])
    names = []
    for target in targets:
        for sub in ast.walk(target):
            if isinstance(sub, ast.Name):
                names.append(sub.id)
    return names


def free_names(node):
    """Module-level names a top-level definition reads (names bound inside it excluded)."""
    bound = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.arg):
            bound.add(sub.arg)
        elif isinstance(sub, ast.Name) and isinstance(sub.ctx, (ast.Store, ast.Del)):
            bound.add(sub.id)
        elif isinstance(sub, (ast.Import, ast.ImportFrom)):
            bound.update((alias.asname or alias.name).split(".")[0] for alias in sub.names)
        elif isinstance(sub, (ast.FunctionDef, ast.ClassDef)) and sub is not node:
            bound.add(sub.name)
    if not isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        bound = set()
    return {sub.id for sub in ast.walk(node)
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load) and sub.id not in bound}


def test_docstring_lists_the_banners_in_order(source):
    text, tree = source
    doc = ast.get_docstring(tree)
    listed = re.search(r"\nSections: (.+?)\.\n", doc, re.S).group(1)
    assert [s.strip() for s in " ".join(listed.split()).split(",")] == [name for _, name in banners(text)]


def test_every_section_sits_under_a_layer_banner(source):
    text, _ = source
    lines = text.split("\n")
    layers = [(i + 1, LAYER.match(line).group(1)) for i, line in enumerate(lines) if LAYER.match(line)]
    assert [name for _, name in layers] == ["FOUNDATIONS", "PURE CORE", "SHELL", "EDGES"]
    assert layers[0][0] < banners(text)[0][0]


def test_no_section_runs_past_700_lines(source):
    text, _ = source
    marks = banners(text)
    ends = [number for number, _ in marks[1:]] + [len(text.split("\n")) + 1]
    long = [(name, end - start) for (start, name), end in zip(marks, ends) if end - start > 700]
    assert long == []


def test_no_function_runs_past_80_lines(source):
    _, tree = source
    long = [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno + 1 > 80]
    assert long == []


def test_sections_use_what_is_above_them(source):
    text, tree = source
    marks = banners(text)
    order = {name: index for index, (_, name) in enumerate(marks)}
    home = {}
    for node in tree.body:
        for name in defined(node):
            home.setdefault(name, section_of(node.lineno, marks))
    forward = []
    for node in tree.body:
        here = section_of(node.lineno, marks)
        if here is None:
            continue
        later = sorted(name for name in free_names(node) - set(defined(node))
                       if name in home and home[name] is not None and order[home[name]] > order[here])
        if later:
            forward.append((getattr(node, "name", defined(node)), later))
    assert len(forward) <= 3, forward


def test_the_checks_see_a_violation():
    """The layering check is not vacuous: a definition that reads a later section counts."""
    text = "\n".join(["# ---- first ----", "def a():", "    return b()", "# ---- second ----",
                      "def b():", "    return 1", ""])
    tree = ast.parse(text)
    marks = banners(text)
    homes = {node.name: section_of(node.lineno, marks) for node in tree.body}
    assert homes == {"a": "first", "b": "second"}
    assert free_names(tree.body[0]) == {"b"}
