"""Issue 2, point 5: a session written by the first implementation
(tests/fixtures/seed-session, a copy of /work/shared/fixtures/seed-session; see its
README.txt) is read without error by
`explain`, `status` and a further `log`, and the numbers agree with that README."""

import json
import os
import re

import autotune
from support.core_helpers import naive_mad, racy_edit, seed_bytes

# The README's numbers, typed in from tests/fixtures/seed-session/README.txt.
SEG2 = {"runs": 7, "kept": 2, "discarded": 5, "crashed": 0, "baseline": 1265, "best": 1428,
        "best_commit": "d23004d", "best_pct": 12.9, "health": "healing", "failure": "plateau",
        "recovery": "rebaseline", "reason": "heal:rebaseline", "mode": "repair", "active": True,
        "heals": 1, "no_improve": 5, "crash_streak": 0, "keep_streak": 0, "last_metric": 1369,
        "last_status": "discard", "next": "rebaseline", "confidence": 4.528,
        "best_delta": 163, "noise_mad": 36}
SEG1 = {"runs": 8, "kept": 4, "discarded": 1, "crashed": 2, "checks_failed": 1, "baseline": 100,
        "best": 79, "best_commit": "bb8c6ca", "best_pct": -21.0, "health": "improving",
        "mode": "optimize", "keep_streak": 1, "no_improve": 0, "crash_streak": 0, "heals": 0}


def test_the_readme_numbers_are_self_consistent():
    """Guards the expectations above: confidence from the raw segment-2 metrics."""
    lines = [json.loads(l) for l in seed_bytes("autotune.jsonl").decode().splitlines()]
    seg2 = [l["metric"] for l in lines if l.get("type") == "result" and l["segment"] == 2]
    assert len(seg2) == SEG2["runs"]
    assert naive_mad(seg2) == SEG2["noise_mad"]
    assert round((max(seg2) - seg2[0]) / naive_mad(seg2), 3) == SEG2["confidence"]


def check_segment2(data):
    for key in ("runs", "kept", "discarded", "crashed", "baseline", "best", "best_commit",
                "health", "failure", "recovery", "reason", "mode", "active", "heals",
                "no_improve", "crash_streak", "keep_streak", "last_metric", "last_status", "next"):
        assert data[key] == SEG2[key], (key, data[key], SEG2[key])
    assert data["segment"] == 2 and data["segments"] == 2
    assert round(data["best_pct"], 1) == SEG2["best_pct"]
    assert data["metric"] == "ops" and data["direction"] == "higher" and data["unit"] == "ops/s"
    conf = data["confidence"]
    assert conf["score"] == SEG2["confidence"] and conf["label"] == "high"
    assert conf["best_delta"] == SEG2["best_delta"] and conf["noise_mad"] == SEG2["noise_mad"]


def test_explain_json_reads_the_seed(seed):
    result = seed.cli("explain", "--json")
    assert result.rc == 0 and result.err == "", result
    check_segment2(result.json)
    assert not result.json["warnings"]


def test_status_json_reads_the_seed(seed):
    data = seed.ok("status", "--json")
    check_segment2(data)


def test_text_commands_read_the_seed(seed):
    explain = seed.cli("explain")
    assert explain.rc == 0 and explain.err == "", explain
    text = explain.out
    assert "HEALING" in text and "repair" in text and "rebaseline" in text
    assert "1428" in text and "1265" in text and "d23004d" in text and "+12.9%" in text
    assert "5 experiments in a row" in text or "5 in a row" in text
    status = seed.cli("status")
    assert status.rc == 0 and status.err == "", status
    for needle in ("healing", "repair", "5 no-improvement", "0 crash streak", "2 of 2"):
        assert needle in status.out, needle
    runs_lines = [l for l in status.out.splitlines() if "runs" in l.lower()]
    assert any(re.search(r"\b7\b", l) for l in runs_lines), status.out


def test_readers_leave_the_seed_log_byte_for_byte(seed):
    seed.ok("explain", "--json")
    seed.ok("status", "--json")
    seed.cli("explain")
    assert open(os.path.join(str(seed.path), "autotune.jsonl"), "rb").read() == seed_bytes("autotune.jsonl")


def test_a_further_log_continues_the_seed_session(seed):
    """The first implementation's agent logged with --metric and --metrics; so can we.

    A sixth discard in a row escalates the plateau recovery: heal 2 -> shrink_scope."""
    seed.set_delay(72)
    seed.write("untracked_notes.txt", "the user's notes\n")
    logged = seed.ok("log", "--status", "discard", "--metric", "1388",
                     "--metrics", json.dumps({"time_ms": 72}), "--description", "unroll again")
    assert logged["index"] == 8 and logged["status"] == "discard" and logged["baseline"] == 1265
    assert logged["health"] == "healing" and logged["failure"] == "plateau"
    assert logged["recovery"] == "shrink_scope" and logged["reason"] == "heal:shrink_scope"
    state = seed.state()
    assert state["heals"] == 2 and state["no_improve"] == 6 and state["n_exp"] == 8
    # the old lines are untouched: the log only grew
    data = open(os.path.join(str(seed.path), "autotune.jsonl"), "rb").read()
    assert data.startswith(seed_bytes("autotune.jsonl"))
    new = [json.loads(l) for l in data[len(seed_bytes("autotune.jsonl")):].decode().splitlines()]
    assert len(new) == 1 and new[0]["segment"] == 2 and new[0]["index"] == 8
    assert new[0]["metrics"] == {"time_ms": 72}
    # without a snapshot only tracked files are reverted; untracked ones are never touched
    assert seed.read("work.py") == "DELAY_MS = 70\n"
    assert seed.read("untracked_notes.txt") == "the user's notes\n"
    again = seed.ok("explain", "--json")
    assert again["runs"] == 8 and again["heals"] == 2 and again["recovery"] == "shrink_scope"


def test_a_further_run_and_keep_on_the_seed_session(seed):
    """run + log on the old session: a better throughput is kept and committed."""
    seed.set_delay(50)  # ops = 100000 / 50 = 2000 > 1428
    seed.write("untracked_notes.txt", "the user's notes\n")
    ran = seed.ok("run")
    assert ran["passed"] is True and ran["primary"] == 2000 and ran["pname"] == "ops"
    logged = seed.ok("log", "--status", "keep", "--description", "much faster",
                     "--metrics", json.dumps({"time_ms": 50}))
    assert logged["status"] == "keep" and logged["metric"] == 2000
    assert logged["health"] == "improving" and logged["mode"] == "optimize"
    assert logged["git"]["action"] == "commit"
    committed = seed.git("show", "--name-only", "--format=", "HEAD").split()
    assert committed == ["work.py"], committed
    assert "Autotune-Metric: ops=2000 ops/s" in seed.git("log", "-1", "--format=%B")
    assert seed.read("untracked_notes.txt") == "the user's notes\n"
    state = seed.state()
    assert state["heals"] == 0 and state["no_improve"] == 0 and state["keep_streak"] == 1


def test_a_keep_on_the_seed_session_sees_an_edit_made_right_after_a_commit(seed):
    """Same as above, with the edit inside the clock tick of the last index write
    (deterministic version of a race that makes the keep above flaky)."""
    racy_edit(seed, "work.py", "DELAY_MS = 50\n")
    ran = seed.ok("run")
    assert ran["primary"] == 2000
    logged = seed.ok("log", "--status", "keep", "--description", "much faster",
                     "--metrics", json.dumps({"time_ms": 50}))
    assert logged["git"]["action"] == "commit", logged["git"]
    assert seed.git("show", "HEAD:work.py") == "DELAY_MS = 50\n"


# ------------------------------------------------------- the fold, unit level ----

def fold_seed():
    """Folds the seed log with autotune.fold_entry; returns the state at each line."""
    state = autotune.State()
    trail = []
    for raw in seed_bytes("autotune.jsonl").splitlines():
        autotune.fold_entry(state, json.loads(raw.decode()))
        trail.append(state.copy())
    return trail


def test_fold_segment_one():
    trail = fold_seed()
    end1 = trail[8]  # line 9: result #8 of segment 1 (before the second config line)
    assert end1.segment == 1 and end1.n_exp == SEG1["runs"]
    assert end1.kept == SEG1["kept"] and end1.discarded == SEG1["discarded"]
    assert end1.crashed + end1.checks_failed == SEG1["crashed"] + SEG1["checks_failed"]
    assert end1.crashed == SEG1["crashed"] and end1.checks_failed == SEG1["checks_failed"]
    assert end1.baseline["metric"] == SEG1["baseline"] and end1.best["metric"] == SEG1["best"]
    assert end1.best["commit"] == SEG1["best_commit"]
    pct = (end1.best["metric"] - end1.baseline["metric"]) / end1.baseline["metric"] * 100
    assert round(pct, 1) == SEG1["best_pct"]
    for key in ("health", "mode", "keep_streak", "no_improve", "crash_streak", "heals"):
        assert getattr(end1, key) == SEG1[key], key
    # result #7: the second consecutive failure started recovery
    at7 = trail[7]
    assert (at7.health, at7.failure, at7.recovery, at7.reason, at7.mode) == (
        "healing", "benchmark_crash", "rebaseline", "heal:rebaseline", "repair")
    assert at7.heals == 1 and at7.crash_streak == 2


def test_fold_segment_two():
    end = fold_seed()[-1]
    assert end.segment == 2 and end.segments == 2 and end.n_exp == SEG2["runs"]
    assert end.kept == SEG2["kept"] and end.discarded == SEG2["discarded"] and end.crashed == 0
    assert end.baseline["metric"] == SEG2["baseline"] and end.best["metric"] == SEG2["best"]
    assert end.best["commit"] == SEG2["best_commit"]
    for key in ("health", "failure", "recovery", "reason", "mode", "active", "heals",
                "no_improve", "crash_streak", "keep_streak"):
        assert getattr(end, key) == SEG2[key], key
    assert end.total_results == 15


def test_fold_ignores_unknown_lines_and_fields():
    state = autotune.State()
    lines = [json.loads(l) for l in seed_bytes("autotune.jsonl").decode().splitlines()]
    for entry in lines[:3]:
        autotune.fold_entry(state, entry)
    before = state.to_dict()
    autotune.fold_entry(state, {"type": "some_future_line", "x": 1})
    autotune.fold_entry(state, {"no_type": True})
    assert state.to_dict() == before
    extra = dict(lines[3], future_field={"nested": [1, 2]})
    autotune.fold_entry(state, extra)
    assert state.n_exp == 3 and state.discarded == 1
