"""Issue 2, point 7: `explain` tells a person, in plain words, what state the loop is
in, why, and exactly what to do next (what the current playbook means in practice)."""

import json
import re

import pytest

from conftest import make_project


def session(tmp_path, config=None):
    p = make_project(tmp_path / "repo", config=config)
    p.loop(100, description="baseline")
    return p


def crash(p, n=1):
    for k in range(n):
        p.set_delay("CRASH")
        p.ok("log", "--status", "crash", "--description", "crash %d" % k)


def discard(p, n=1):
    for k in range(n):
        p.set_delay(150 + k)
        p.ok("log", "--status", "discard", "--metric", str(150 + k),
             "--metrics", json.dumps({"mem_mb": 55}), "--description", "slower %d" % k)


def explain(p):
    text = p.cli("explain")
    assert text.rc == 0 and text.err == "", text
    data = p.ok("explain", "--json")
    return text.out, data


def section(text, label):
    """The text of one labelled paragraph (`Why:`, `Next:`), joined to one line."""
    lines = text.splitlines()
    out, inside = [], False
    for line in lines:
        if line.startswith(label):
            inside = True
            out.append(line[len(label):].strip())
        elif inside and line.startswith(" "):
            out.append(line.strip())
        elif inside:
            break
    assert out, "no %r paragraph in:\n%s" % (label, text)
    return " ".join(out)


def has_all(text, *phrases):
    low = text.lower()
    missing = [p for p in phrases if p.lower() not in low]
    assert not missing, "missing %s in: %s" % (missing, text)


def test_fresh_session_says_measure_the_baseline(tmp_path):
    p = make_project(tmp_path / "repo")
    text, data = explain(p)
    assert data["next"] == "baseline" and data["runs"] == 0
    has_all(section(text, "Next:"), "baseline", "autotune run", "autotune log")


@pytest.mark.slow
def test_improving_says_continue_and_shows_the_numbers(tmp_path):
    p = session(tmp_path)
    p.loop(80)
    text, data = explain(p)
    assert data["health"] == "improving" and data["next"] == "continue"
    has_all(text, "IMPROVING")
    has_all(section(text, "Why:"), "beat the best", "kept")
    has_all(section(text, "Next:"), "autotune run", "autotune log")
    has_all(section(text, "Best:"), "80", "-20.0%")
    p.loop(130)
    text, data = explain(p)
    assert data["baseline"] == 100 and data["best"] == 80 and data["last_metric"] == 130
    assert data["last_status"] == "discard" and data["no_improve"] == 1
    assert "speed up work()" in text.splitlines()[0]
    has_all(text, "3 runs", "2 kept", "1 discarded")
    has_all(section(text, "Streaks:"), "no-improvement 1/5", "crash 0/2", "heals 0/3")
    has_all(section(text, "Last:"), "#3", "discard", "130")
    has_all(section(text, "Next:"), "autotune run")


@pytest.mark.slow
def test_plateau_healing_rebaseline_then_shrink_scope(tmp_path):
    p = session(tmp_path, config={"health": {"maxNoImprovementRuns": 2}, "repeat": 1})  # not known deterministic
    discard(p, 2)
    text, data = explain(p)
    assert (data["health"], data["failure"], data["recovery"]) == ("healing", "plateau", "rebaseline")
    assert data["next"] == "rebaseline"
    has_all(text, "HEALING", "repair mode")
    why = section(text, "Why:")
    has_all(why, "in a row", "did not beat the best", "rebaseline")
    assert re.search(r"\b2\b", why), why  # the count, with the configured threshold
    has_all(section(text, "Next:"), "rebaseline", "autotune rebaseline", "without any change")
    assert data["why"] and data["next_text"]
    discard(p)  # still no improvement: the second healing attempt escalates
    text, data = explain(p)
    assert data["recovery"] == "shrink_scope" and data["heals"] == 2
    has_all(section(text, "Why:"), "attempt 2", "shrink_scope")
    has_all(section(text, "Next:"), "smaller changes", "autotune.ideas.md")


@pytest.mark.slow
def test_crashing_diagnose_then_healing_then_the_pause_playbook(tmp_path):
    p = session(tmp_path)
    crash(p)
    text, data = explain(p)
    assert data["health"] == "crashing" and data["next"] == "diagnose"
    has_all(text, "CRASHING")
    has_all(section(text, "Why:"), "crashed", "1 failure in a row")
    has_all(section(text, "Next:"), "diagnose", "find the cause", "./autotune.sh", "output")
    has_all(section(text, "Last:"), "crash")

    crash(p)
    text, data = explain(p)
    assert data["health"] == "healing" and data["failure"] == "benchmark_crash"
    has_all(section(text, "Why:"), "benchmark failed 2 times in a row", "attempt 1")
    has_all(section(text, "Next:"), data["recovery"])

    crash(p, 2)  # attempts 2 and 3: the third available action is the pause playbook
    text, data = explain(p)
    assert data["health"] == "paused" and data["recovery"] == "pause" and data["active"] is False
    has_all(section(text, "Why:"), "pause")
    has_all(section(text, "Next:"), "autotune resume")


@pytest.mark.slow
def test_paused_recovery_exhausted_says_a_person_must_act(tmp_path):
    p = session(tmp_path, config={"recovery": {"maxHealingAttempts": 1}})
    crash(p, 3)
    text, data = explain(p)
    assert data["health"] == "paused" and data["reason"] == "recovery_exhausted"
    assert data["active"] is False and data["next"] == "manual_repair"
    has_all(text, "PAUSED", "not active")
    has_all(section(text, "Why:"), "recovery attempt", "paused itself", "benchmark failed 3 times")
    has_all(section(text, "Next:"), "person", "fix", "autotune resume")


@pytest.mark.slow
def test_completed_says_report(tmp_path):
    p = session(tmp_path, config={"maxIterations": 2})
    p.loop(90)
    text, data = explain(p)
    assert data["health"] == "completed" and data["next"] == "verify"   # issue 9: verify first
    has_all(section(text, "Next:"), "autotune verify", "autotune report")
    p.ok("verify")
    text, data = explain(p)
    assert data["health"] == "completed" and data["next"] == "report"
    has_all(text, "verified -10.0% ± 0%")
    has_all(text, "COMPLETED")
    has_all(section(text, "Next:"), "iteration budget reached", "autotune init")
    has_all(text, "budget 2/2")


def test_stopped_by_a_person_says_how_to_resume(tmp_path):
    p = session(tmp_path)
    stop = p.cli("stop")
    assert stop.rc == 0, stop
    text, data = explain(p)
    assert data["active"] is False and data["health"] == "stopped"  # "paused" is the loop's own
    assert data["next"] == "resume"
    has_all(section(text, "Next:"), "autotune resume")
