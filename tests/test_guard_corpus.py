"""The PreToolUse guard against a corpus of Bash commands as agents type them (issue 11,
points 5-7): tests/data/guard_corpus.jsonl, each labelled allow or deny, is run through
the real hook entry point against a loop whose baseline is logged, with `protect` globs
(data/**, tests/**), a benchmark that calls `npm test` and `make check` (so package.json's
test script and the Makefile are protected by indirection), a symlink and a hard link to
the log, and commands typed from the loop, from its parent and from a subdirectory.

Zero wrong decisions: every false alarm and every miss is listed on failure.
"""

import json
import os

import pytest

from conftest import clean_env, make_project
from support.plugin_helpers import run_hook_batch, sample

OWNER = "0b5e55ed-0000-4000-8000-0000000000c1"
CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "guard_corpus.jsonl")

BENCHMARK = """#!/usr/bin/env bash
# the loop's benchmark: its metric is DELAY_MS; it also runs the project's checks
if [ -n "${RUN_CHECKS:-}" ]; then npm test; make check; fi
d=$(sed -n 's/^DELAY_MS = //p' work.py)
echo "METRIC time_ms=$d"
"""

FILES = {
    "package.json": json.dumps({"name": "demo", "scripts": {"test": "node tests/run.js",
                                                           "build": "sh scripts/build.sh",
                                                           "lint": "eslint ."},
                                "dependencies": {"left-pad": "1.0.0"}}, indent=2) + "\n",
    "Makefile": "check:\n\tnode tests/run.js\n",
    "data/input.csv": "a,1\nb,2\nc,3\n",
    "tests/test_app.py": "def test_app():\n    assert 1 + 1 == 2\n",
    "tests/run.js": "console.log('ok')\n",
    "src/app.py": "x = 1\n",
    "scripts/build.sh": "#!/bin/sh\necho build\n",
    "sub/.keep": "",
    "README.md": "Run `autotune run`.\n",
    "fix-src.diff": "--- a/src/app.py\n+++ b/src/app.py\n@@ -1 +1 @@\n-x = 1\n+x = 2\n",
    "evil.diff": "--- a/autotune.config.json\n+++ b/autotune.config.json\n@@ -1 +1 @@\n-{}\n+{}\n",
}


def load_corpus():
    with open(CORPUS, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    parent = tmp_path_factory.mktemp("corpus") / "parent"
    parent.mkdir()
    project = make_project(parent / "loop", benchmark=BENCHMARK, init=False,
                           config={"protect": ["data/**", "tests/**"]})
    for name, text in FILES.items():
        project.write(name, text)
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "the project")
    env = clean_env(CLAUDE_CODE_SESSION_ID=OWNER)
    init = project.ok("init", "--name", "corpus", "--metric", "time_ms", "--direction", "lower", env=env)
    assert {"Makefile", "package.json#scripts.test", "data/input.csv", "tests/test_app.py"} <= set(init["protected"])
    project.ok("run", env=env)
    project.ok("log", "--status", "auto", "--description", "baseline", env=env)
    os.symlink("autotune.jsonl", os.path.join(str(project.path), "notes-link.json"))
    os.link(os.path.join(str(project.path), "autotune.jsonl"), os.path.join(str(project.path), "hard.json"))
    return project


def test_the_corpus_is_large_and_balanced():
    rows = load_corpus()
    assert len(rows) >= 200
    assert sum(r["expect"] == "deny" for r in rows) >= 80 and sum(r["expect"] == "allow" for r in rows) >= 80
    assert len(set((r["command"], r.get("cwd")) for r in rows)) == len(rows), "duplicates"


@pytest.mark.slow
def test_the_guard_makes_no_wrong_decision(loop, tmp_path):
    rows = load_corpus()
    root = str(loop.path)
    dirs = {None: root, "parent": os.path.dirname(root), "sub": os.path.join(root, "sub")}
    payloads = [sample("PreToolUse.Bash", dirs[row.get("cwd")], session_id=OWNER,
                       tool_input={"command": row["command"], "description": row["note"]})
                for row in rows]
    before = open(os.path.join(root, "autotune.jsonl"), "rb").read()
    answers = run_hook_batch("pre-tool-use", payloads, root, tmp_path)
    wrong, counts = [], {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
    for row, answer in zip(rows, answers):
        assert answer.rc == 0 and "Traceback" not in answer.err, answer
        out = json.loads(answer.out) if answer.out.strip() else {}
        denied = out.get("hookSpecificOutput", {}).get("permissionDecision") == "deny"
        if denied:
            assert out["hookSpecificOutput"]["permissionDecisionReason"].startswith("autotune: ")
        expected = row["expect"] == "deny"
        counts[("t" if denied == expected else "f") + ("p" if denied else "n")] += 1
        if denied != expected:
            wrong.append("%s (cwd %s): expected %s, got %s" % (
                json.dumps(row["command"]), row.get("cwd") or "loop", row["expect"],
                "deny" if denied else "allow"))
    precision = counts["tp"] / float(counts["tp"] + counts["fp"] or 1)
    recall = counts["tp"] / float(counts["tp"] + counts["fn"] or 1)
    print("guard corpus: %d commands, %s, precision %.3f, recall %.3f" % (len(rows), counts, precision, recall))
    assert not wrong, "%d wrong decisions:\n%s" % (len(wrong), "\n".join(wrong))
    assert open(os.path.join(root, "autotune.jsonl"), "rb").read() == before
