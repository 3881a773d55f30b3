"""`make demo`: the bundled example loop runs end to end and does what the README says.

The demo (examples/demo.py) is run once, into a temporary directory, and judged by the
files it leaves: the session log, the git history of the copied project, the report,
and the repository itself, which must be untouched.
"""

import json
import os
import re
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "examples", "demo.py")
STATUSES = ("keep", "discard", "crash", "checks_failed")


def _env():
    return {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "AUTOTUNE", "CLAUDE"))}


def _repo_status():
    """git status of the repository (None when it is not a git checkout), and the files
    under examples/ including ignored ones (a stray __pycache__ or log would show)."""
    proc = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    if proc.returncode != 0:
        return None
    files = sorted(os.path.relpath(os.path.join(d, f), ROOT)
                   for d, _, names in os.walk(os.path.join(ROOT, "examples")) for f in names)
    return proc.stdout.decode("utf-8", "replace"), files


pytestmark = pytest.mark.together  # the demo runs once, in one shard


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    workspace = str(tmp_path_factory.mktemp("demo") / "ws")
    before = _repo_status()
    started = time.monotonic()
    proc = subprocess.run([sys.executable, DEMO, "--keep", workspace, "--quiet"], cwd=ROOT, env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=180)
    seconds = time.monotonic() - started
    after = _repo_status()
    project = os.path.join(workspace, "project")
    entries = []
    log = os.path.join(project, "autotune.jsonl")
    if os.path.exists(log):
        with open(log, encoding="utf-8") as handle:
            entries = [json.loads(line) for line in handle if line.strip()]
    return {"proc": proc, "out": proc.stdout.decode("utf-8", "replace"),
            "err": proc.stderr.decode("utf-8", "replace"), "seconds": seconds,
            "workspace": workspace, "project": project, "entries": entries,
            "results": [e for e in entries if e.get("type") == "result"],
            "before": before, "after": after}


@pytest.mark.slow
def test_demo_succeeds_and_says_how_long_it_took(demo):
    """Not a timing assertion (the machine's load decides the time): the demo prints it."""
    assert demo["proc"].returncode == 0, demo["out"] + demo["err"]
    assert re.search(r"^demo: \d+ experiments in [\d.]+ s", demo["out"], re.M), demo["out"]


@pytest.mark.slow
def test_every_status_is_shown(demo):
    statuses = [r["status"] for r in demo["results"]]
    for status in STATUSES:
        assert status in statuses, statuses
    assert statuses[0] == "keep" and demo["results"][0]["verdict"] == "baseline"
    assert statuses[-2] == "keep" and demo["results"][-2]["verdict"] == "improved"
    # the last edit removes dead code: an unchanged result kept because it is simpler
    last = demo["results"][-1]
    assert (last["status"], last["verdict"], last["rule"], last["improved"]) == ("keep", "unchanged", "simpler", False)
    assert last["metric"] == demo["results"][-2]["metric"]


@pytest.mark.slow
def test_the_loop_plateaus_and_heals_with_escalation(demo):
    heals = [r["reason"] for r in demo["results"] if (r.get("reason") or "").startswith("heal:")]
    # the benchmark is deterministic: re-measuring teaches nothing, so the plateau skips rebaseline
    assert heals == ["heal:shrink_scope", "heal:diagnose"], heals
    assert not any(e.get("type") == "rebaseline" for e in demo["entries"])
    assert any(r.get("failure") == "plateau" for r in demo["results"])
    last = demo["results"][-1]
    assert last["health"] == "running" and last["reason"] == "kept_no_degrade" and last["mode"] == "optimize"
    notes = open(os.path.join(demo["project"], "autotune.md"), encoding="utf-8").read()
    assert "shrink_scope" in notes


@pytest.mark.slow
def test_keeps_are_commits_and_the_rest_reverted(demo):
    log = subprocess.run(["git", "log", "--format=%s"], cwd=demo["project"], env=_env(),
                         stdout=subprocess.PIPE, check=True).stdout.decode().splitlines()
    committed = [r for r in demo["results"] if (r.get("git") or {}).get("action") == "commit"]
    assert len(committed) >= 3
    assert log[:len(committed)] == ["autotune: " + r["description"] for r in reversed(committed)]
    reverted = [r for r in demo["results"] if r["status"] != "keep"]
    assert all((r.get("git") or {}).get("action") == "revert" for r in reverted), reverted
    status = subprocess.run(["git", "status", "--porcelain", "--", "wordfreq.py"], cwd=demo["project"],
                            env=_env(), stdout=subprocess.PIPE, check=True).stdout.decode()
    assert status == "", "the worktree holds an unlogged change: %r" % status
    first, best = demo["results"][0]["metric"], demo["results"][-1]["metric"]
    assert best < first


@pytest.mark.slow
def test_report_has_one_point_per_experiment(demo):
    path = os.path.join(demo["workspace"], "report.html")
    assert os.path.isfile(path)
    html = open(path, encoding="utf-8").read()
    assert '<svg class="chart"' in html
    assert len(re.findall(r'<circle class="point ', html)) == len(demo["results"])
    assert not re.search(r'(src|href)="https?:', html), "the report must not load anything from the network"


@pytest.mark.slow
def test_repository_untouched(demo):
    if demo["before"] is None:
        pytest.skip("not a git checkout")
    assert demo["after"] == demo["before"]


def test_keep_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "something").write_text("x")
    proc = subprocess.run([sys.executable, DEMO, "--keep", str(tmp_path), "--quiet"], env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert proc.returncode == 2
    assert b"not an empty directory" in proc.stderr
    assert sorted(os.listdir(str(tmp_path))) == ["something"]


@pytest.mark.slow
def test_the_demo_shows_autotunes_own_diagnosis(demo):
    """The crash and the checks failure are diagnosed by autotune (the demo quotes it)."""
    crash = next(r for r in demo["results"] if r["status"] == "crash")
    assert crash["diagnosis"]["origin"] == "edit" and crash["diagnosis"]["file"] == "wordfreq.py"
    assert "NameError" in crash["diagnosis"]["line"]
    checks = next(r for r in demo["results"] if r["status"] == "checks_failed")
    assert checks["diagnosis"]["kind"] == "checks_failed" and checks["diagnosis"]["line"].startswith("FAILED")
