"""Issue 2, point 1: a full loop in a throwaway git repository, driven only through the
CLI: init, baseline, an improving keep (committed with the trailer, no session files),
a worse change (reverted), a crashing benchmark and failing checks, each answering
with the JSON of SPEC section 5."""

import json
import re

import pytest

from conftest import make_project
from support.core_helpers import (RESULT_FIELDS, SESSION_FILES, STATE_FIELDS, commit_files,
                                  naive_mad, tracked_files)
from support.refusals import clear_error

CHECKS = """#!/usr/bin/env bash
# correctness checks: work.py must not be marked BROKEN
if grep -q BROKEN work.py; then echo "check failed: work.py is BROKEN"; exit 1; fi
echo "checks ok"
"""

INIT_KEYS = ("status", "name", "unit", "direction", "segment", "reinit", "path", "max_exp", "mode")
RUN_KEYS = ("exit", "dur", "passed", "crashed", "timeout", "metrics", "primary", "pname",
            "output", "checks", "chk_out")
LOG_KEYS = ("status", "index", "commit", "metric", "name", "baseline", "delta", "d_pct", "desc",
            "confidence", "git", "limit", "health", "failure", "recovery", "reason", "mode")
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$")


def _has_keys(obj, keys):
    missing = [k for k in keys if k not in obj]
    assert not missing, "missing %s in %s" % (missing, obj)


@pytest.mark.slow
def test_full_loop_through_the_cli(tmp_path):
    p = make_project(tmp_path / "repo", init=False)
    p.write("autotune.checks.sh", CHECKS, mode=0o755)
    p.write("autotune.md", "# notes\n")
    first_head = p.head()

    # init
    init = p.ok("init", "--name", "speed up work()", "--metric", "time_ms", "--unit", "ms",
                "--direction", "lower")
    _has_keys(init, INIT_KEYS)
    assert init["status"] == "initialized" and init["segment"] == 1 and init["reinit"] is False
    assert init["name"] == "speed up work()" and init["unit"] == "ms" and init["direction"] == "lower"
    assert init["mode"] == "optimize" and init["max_exp"] is None
    assert p.exists("autotune.jsonl") and p.exists(".autotune.state")
    config = p.log_lines()[0]
    assert config["type"] == "config" and config["metric_name"] == "time_ms"
    assert config["objective"] == {"primaryMetric": "time_ms", "direction": "lower"}

    # baseline: run + log keep
    ran = p.ok("run")
    _has_keys(ran, RUN_KEYS)
    assert ran["exit"] == 0 and ran["passed"] is True and ran["crashed"] is False
    assert ran["timeout"] is False and ran["primary"] == 100 and ran["pname"] == "time_ms"
    assert ran["metrics"] == {"mem_mb": 50} and ran["checks"] is True
    assert "METRIC time_ms=100" in ran["output"] and "checks ok" in ran["chk_out"]
    base = p.ok("log", "--status", "keep", "--description", "baseline")
    _has_keys(base, LOG_KEYS)
    assert base["status"] == "keep" and base["index"] == 1 and base["metric"] == 100
    assert base["baseline"] == 100 and base["health"] == "improving" and base["reason"] == "improved"
    assert p.head() == first_head, "a baseline with no change must not create a commit"

    # an improving change: committed with the trailer, without session files
    p.set_delay(80)
    p.write("autotune.md", "# notes\n- trying 80\n")  # the agent edits its notes meanwhile
    ran = p.ok("run")
    assert ran["primary"] == 80 and ran["passed"] is True
    kept = p.ok("log", "--status", "keep", "--description", "cache the lookup")
    assert kept["status"] == "keep" and kept["index"] == 2 and kept["metric"] == 80
    assert kept["baseline"] == 100 and kept["delta"] == -20 and kept["d_pct"] == -20
    assert kept["git"]["action"] == "commit" and kept["health"] == "improving"
    head = p.head()
    assert head != first_head and kept["commit"] == head
    message = p.git("log", "-1", "--format=%B")
    assert message.startswith("autotune: cache the lookup\n\n")
    assert "Autotune-Metric: time_ms=80 ms" in message.splitlines()
    assert commit_files(p) == ["work.py"]
    in_tree = tracked_files(p)
    assert not [f for f in SESSION_FILES if f in in_tree and f != "autotune.sh"]
    assert p.git("status", "--porcelain", "--", "work.py") == ""

    # a worse change: reverted, HEAD unchanged
    p.set_delay(130)
    ran = p.ok("run")
    assert ran["primary"] == 130
    worse = p.ok("log", "--status", "discard", "--description", "inline the helper")
    assert worse["status"] == "discard" and worse["index"] == 3 and worse["metric"] == 130
    assert worse["git"]["action"] == "revert" and worse["health"] == "running"
    assert worse["reason"] == "no_improve" and worse["delta"] == 30
    assert p.head() == head and p.read("work.py") == "DELAY_MS = 80\n"
    # 3 points now: |best - baseline| / MAD, computed independently
    expected = abs(80 - 100) / naive_mad([100, 80, 130])
    assert worse["confidence"]["score"] == round(expected, 3)
    assert worse["confidence"]["label"] == "marginal"

    # a crashing benchmark: run reports it (exit 0 of `run` itself), log reverts
    p.set_delay("CRASH")
    crash_run = p.cli("run")
    assert crash_run.rc == 0, crash_run
    ran = crash_run.json
    assert ran["exit"] == 3 and ran["passed"] is False and ran["crashed"] is True
    assert ran["primary"] is None and "benchmark exploded" in ran["output"]
    assert ran["checks"] is None, "checks run only after a passing benchmark"
    crashed = p.ok("log", "--status", "crash", "--description", "switch to mmap")
    assert crashed["status"] == "crash" and crashed["metric"] is None
    assert crashed["health"] == "crashing" and crashed["failure"] == "benchmark_crash"
    assert crashed["reason"] == "crash" and crashed["git"]["action"] == "revert"
    assert p.read("work.py") == "DELAY_MS = 80\n" and p.head() == head

    # failing checks: the benchmark passes, the checks do not
    p.write("work.py", "DELAY_MS = 70\n# BROKEN\n")
    ran = p.ok("run")
    assert ran["passed"] is True and ran["primary"] == 70
    assert ran["checks"] is False and "work.py is BROKEN" in ran["chk_out"]
    assert ran["suggested_status"] == "checks_failed"
    failed = p.ok("log", "--status", "auto", "--description", "skip validation")
    assert failed["status"] == "checks_failed" and failed["failure"] == "checks_failed"
    # second consecutive failure (crash, then checks): recovery starts, checks order
    assert failed["health"] == "healing" and failed["recovery"] == "diagnose"
    assert failed["reason"] == "heal:diagnose" and failed["mode"] == "repair"
    assert p.read("work.py") == "DELAY_MS = 80\n" and p.head() == head

    # the log: one config line, five results with the SPEC's fields
    lines = [line for line in p.log_lines() if line["type"] != "measurement"]  # run's records
    assert [l["type"] for l in lines] == ["config"] + ["result"] * 5
    results = lines[1:]
    for row in results:
        _has_keys(row, RESULT_FIELDS)
        assert ISO_UTC.match(row["timestamp"]), row["timestamp"]
        assert row["segment"] == 1
    assert [r["index"] for r in results] == [1, 2, 3, 4, 5]
    assert [r["status"] for r in results] == ["keep", "keep", "discard", "crash", "checks_failed"]
    assert [r["metric"] for r in results] == [100, 80, 130, None, 70]
    assert results[0]["metrics"] == {"mem_mb": 50}
    assert results[1]["commit"] == head
    assert "work.py" in results[2]["files"]

    state = p.state()
    _has_keys(state, STATE_FIELDS)
    assert state["n_exp"] == 5 and state["active"] is True and state["heals"] == 1
    assert state["crash_streak"] == 2 and state["no_improve"] == 3 and state["keep_streak"] == 0
    assert state["health"] == "healing" and state["progress_at"] == results[1]["timestamp"]


@pytest.mark.slow
def test_log_uses_the_measurement_of_run(project):
    """`log` without --metric logs what `run` measured; a different --metric is refused."""
    project.loop(100, description="baseline")
    project.set_delay(90)
    project.ok("run")
    before = project.snapshot_bytes()
    refused = project.cli("log", "--status", "keep", "--description", "x", "--metric", "50")
    clear_error(refused)
    assert "90" in refused.json["message"] and "50" in refused.json["message"]
    assert project.snapshot_bytes() == before
    logged = project.ok("log", "--status", "keep", "--description", "x")
    assert logged["metric"] == 90 and project.results()[-1]["metric"] == 90


@pytest.mark.slow
def test_status_auto_applies_the_suggestion(project):
    project.loop(100, description="baseline")
    ran, logged = project.loop(90)
    assert ran["suggested_status"] == "keep" and logged["status"] == "keep"
    ran, logged = project.loop(95)
    assert ran["suggested_status"] == "discard" and logged["status"] == "discard"
    assert project.read("work.py") == "DELAY_MS = 90\n"


def test_keep_without_a_measurement_is_refused(project):
    before = project.snapshot_bytes()
    result = project.cli("log", "--status", "keep", "--description", "nothing measured")
    clear_error(result)
    assert project.snapshot_bytes() == before


def test_benchmark_without_primary_metric_is_a_failure(tmp_path):
    silent = "#!/usr/bin/env bash\necho 'METRIC other=1'\n"
    p = make_project(tmp_path / "repo", benchmark=silent)
    result = p.cli("run")
    assert result.rc == 0, result
    assert result.json["passed"] is False and result.json["crashed"] is True
    assert "time_ms" in (result.json.get("reason") or "")


@pytest.mark.slow
def test_reinit_starts_a_new_segment(project):
    project.loop(100, description="baseline")
    again = project.ok("init", "--name", "memory", "--metric", "mem_mb", "--direction", "lower")
    assert again["segment"] == 2 and again["reinit"] is True
    ran, logged = project.loop(100, description="baseline 2")
    assert logged["index"] == 1 and logged["metric"] == 50
    configs = [l for l in project.log_lines() if l["type"] == "config"]
    assert [c["segment"] for c in configs] == [1, 2]
    assert project.results()[-1]["segment"] == 2
    assert json.loads(json.dumps(project.state()))["n_exp"] == 1


def test_init_twice_without_results_stays_in_the_same_segment(project):
    again = project.ok("init", "--name", "renamed", "--metric", "time_ms", "--direction", "lower")
    assert again["segment"] == 1 and again["reinit"] is True
    ran, logged = project.loop(100, description="baseline")
    assert logged["index"] == 1 and project.results()[-1]["segment"] == 1
    assert project.ok("explain", "--json")["name"] == "renamed"


@pytest.mark.slow
def test_confidence_with_zero_noise_is_json_safe(project):
    """MAD 0 with an improvement: `high`, an infinite score shown as null plus a flag."""
    project.loop(100, description="baseline")
    project.loop(80)
    project.set_delay(100)
    project.ok("run")
    result = project.cli("log", "--status", "discard", "--description", "back to 100")
    assert result.rc == 0, result
    assert "Infinity" not in result.out and "NaN" not in result.out
    conf = result.json["confidence"]
    assert conf["label"] == "high" and conf["score"] is None and conf["infinite"] is True
    with open(str(project.path / "autotune.jsonl"), "rb") as handle:
        assert b"Infinity" not in handle.read()
