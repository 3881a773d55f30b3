"""Issue 9 (SPEC amendment "issue 7"), points 9 and 10: a deterministic benchmark decides
like one (`unchanged`, no rebaseline on a plateau, confidence without failed values),
and simpler is better (an equal result that removes more lines than it adds is kept,
without moving the best)."""

import os

import pytest

import autotune
from conftest import make_project

EXTRA = "".join("def helper_%d():\n    return %d\n\n\n" % (i, i) for i in range(5))


def project_with_extra(tmp_path, benchmark=None, config=None):
    """The deterministic test project plus extra.py, a file of dead code to remove."""
    kwargs = {"benchmark": benchmark} if benchmark else {}
    p = make_project(tmp_path / "repo", init=False, config=config, **kwargs)
    p.write("extra.py", EXTRA)
    p.git("add", "extra.py")
    p.git("commit", "-q", "-m", "extra")
    p.ok("init", "--name", "t", "--metric", "time_ms", "--unit", "ms", "--direction", "lower")
    return p


# ------------------------------------------------------------- point 10 --------


@pytest.mark.parametrize("verdict, added, removed, status, rule", [
    ("unchanged", 1, 5, "keep", "simpler"),
    ("within_noise", 0, 1, "keep", "simpler"),
    ("unchanged", 5, 1, "discard", "not_simpler"),
    ("within_noise", 3, 3, "discard", "not_simpler"),
    ("unchanged", 0, 0, "discard", "not_simpler"),
    ("unchanged", None, None, "discard", "not_simpler"),
    ("improved", 90, 0, "keep", "verdict"),
    ("baseline", None, None, "keep", "verdict"),
    ("worse", 0, 50, "discard", "verdict"),        # simpler never rescues a worse result
    ("guardrail_failed", 0, 50, "discard", "verdict"),
    ("holdout_failed", 0, 50, "discard", "verdict"),
    ("crash", 0, 50, "crash", "verdict"),
    ("timeout", 0, 50, "crash", "verdict"),
    ("checks_failed", 0, 50, "checks_failed", "verdict"),
])
def test_suggested_status_rules(verdict, added, removed, status, rule):
    got, why = autotune.suggested_status(verdict, added, removed)
    assert (got, why["rule"]) == (status, rule)
    assert why["why"] and (why["lines_added"], why["lines_removed"]) == (added, removed)
    if rule == "simpler":
        assert "removes %d line" % removed in why["why"] and "kept" in why["why"]


@pytest.mark.slow
def test_an_equal_result_that_removes_code_is_kept_without_moving_the_best(tmp_path):
    p = project_with_extra(tmp_path)
    p.loop(100, description="baseline")
    _, win = p.loop(90, description="win")
    best_commit = win["commit"]
    p.write("extra.py", EXTRA.split("\n\n\n", 1)[1] + "# one new line\n")   # -4 +1 lines, same metric
    ran = p.ok("run")
    assert ran["verdict"] == "unchanged" and ran["suggested_status"] == "keep"
    rule = ran["status_rule"]
    assert (rule["rule"], rule["lines_added"], rule["lines_removed"]) == ("simpler", 1, 4)
    assert "simpler is better" in rule["why"]
    logged = p.ok("log", "--status", "auto", "--description", "drop helper_0")
    assert logged["status"] == "keep" and logged["git"]["action"] == "commit"
    assert logged["improved"] is False and logged["rule"] == "simpler"
    assert logged["best"] == 90 and logged["reason"] == "kept_no_degrade"
    last = p.results()[-1]
    assert last["rule"] == "simpler" and last["improved"] is False and last["verdict"] == "unchanged"
    data = p.cli("explain", "--json").json
    assert data["best"] == 90 and data["best_commit"] == best_commit       # the best stays comparable
    assert p.head() != best_commit                                          # the simpler code is kept
    assert "simpler is better" in data["why"] and "the best stays 90" in data["why"]
    # the next experiment is judged against the same best value
    ran = p.ok("run")
    assert ran["evidence"]["reference"]["median"] == 90


def test_an_equal_result_that_adds_code_is_discarded_and_says_why(tmp_path):
    p = project_with_extra(tmp_path)
    p.loop(100, description="baseline")
    p.write("extra.py", EXTRA + "def more():\n    return 0\n")
    ran = p.ok("run")
    assert ran["verdict"] == "unchanged" and ran["suggested_status"] == "discard"
    assert ran["status_rule"]["rule"] == "not_simpler" and ran["status_rule"]["lines_added"] == 2
    assert "does not pay for more code" in ran["status_rule"]["why"]
    logged = p.ok("log", "--status", "auto", "--description", "adds code")
    assert logged["status"] == "discard" and logged["git"]["action"] == "revert"
    assert p.read("extra.py") == EXTRA


def test_session_files_and_binary_files_count_as_no_lines(tmp_path):
    p = project_with_extra(tmp_path)
    p.loop(100, description="baseline")
    with open(os.path.join(str(p.path), "blob.bin"), "wb") as handle:
        handle.write(b"\0\1\2" * 100)
    p.git("add", "blob.bin")
    p.git("commit", "-q", "-m", "blob")
    p.cli("doctor", "--fix")
    with open(os.path.join(str(p.path), "blob.bin"), "wb") as handle:
        handle.write(b"\0\3")                                      # a binary edit: neither added nor removed
    with open(os.path.join(str(p.path), "autotune.md"), "a") as handle:   # notes: not the experiment
        handle.write("\n".join("note %d" % i for i in range(50)) + "\n")
    p.write("extra.py", EXTRA.split("\n\n\n", 1)[1])              # -4 lines
    rule = p.ok("run")["status_rule"]
    assert (rule["rule"], rule["lines_added"], rule["lines_removed"]) == ("simpler", 0, 4), rule


def test_within_noise_removal_is_kept_by_the_simplicity_rule(tmp_path):
    # noisy but with no real change: the values follow the sample number (101, 102, 100, ...)
    bench = "#!/usr/bin/env bash\necho \"METRIC time_ms=$((100 + ${AUTOTUNE_SAMPLE:-1} % 3))\"\n"
    p = project_with_extra(tmp_path, benchmark=bench)
    p.ok("run")
    p.ok("log", "--status", "keep", "--description", "baseline")
    p.write("extra.py", EXTRA.split("\n\n\n", 2)[2])              # -8 lines
    ran = p.ok("run")
    assert ran["verdict"] == "within_noise" and ran["suggested_status"] == "keep"
    assert ran["status_rule"]["rule"] == "simpler" and ran["status_rule"]["lines_removed"] == 8
    logged = p.ok("log", "--status", "auto", "--description", "drop two helpers")
    assert logged["status"] == "keep" and logged["improved"] is False


@pytest.mark.slow
def test_a_simpler_keep_still_has_to_pass_the_holdout(tmp_path):
    p = project_with_extra(tmp_path)
    p.write("hold.txt", "100\n")
    p.write("autotune.holdout.sh", "#!/usr/bin/env bash\necho \"METRIC time_ms=$(cat hold.txt)\"\n", mode=0o755)
    p.git("add", "hold.txt")
    p.git("commit", "-q", "-m", "holdout data")
    p.cli("doctor", "--fix")
    p.loop(100, description="baseline")
    p.write("hold.txt", "200\n")                                  # +1 -1: the holdout gets 2x slower
    p.write("extra.py", EXTRA.split("\n\n\n", 1)[1])              # -4
    ran = p.ok("run")
    assert ran["holdout"] is not None and ran["holdout"]["ok"] is False
    assert ran["verdict"] == "holdout_failed" and ran["suggested_status"] == "discard"
    assert ran["status_rule"]["rule"] == "verdict"


# -------------------------------------------------------------- point 9 --------


@pytest.mark.slow
def test_deterministic_plateau_skips_rebaseline(tmp_path):
    p = project_with_extra(tmp_path, config={"health": {"maxNoImprovementRuns": 2}})
    p.loop(100, description="baseline")
    _, first = p.loop(100, description="nothing")
    assert first["status"] == "discard" and p.results()[-1]["verdict"] == "unchanged"
    _, second = p.loop(120, description="worse")
    assert second["failure"] == "plateau" and second["recovery"] == "shrink_scope"
    assert second["next"] == "shrink_scope"
    data = p.cli("explain", "--json").json
    assert data["next"] == "shrink_scope" and "rebaseline" not in data["next_text"]
    _, third = p.loop(130, description="worse again")
    assert third["recovery"] == "diagnose" and "profile" in third["next_text"]


def test_choose_playbook_and_advance_skip_rebaseline_only_for_a_deterministic_plateau():
    settings = autotune.Settings()
    plateau = [autotune.choose_playbook("plateau", k, settings, deterministic=True) for k in (1, 2, 3)]
    assert plateau == ["shrink_scope", "diagnose", "pause"]
    assert autotune.choose_playbook("plateau", 1, settings) == "rebaseline"
    # a crash still re-measures the best (does the kept code still run?)
    assert autotune.choose_playbook("benchmark_crash", 1, settings, deterministic=True) == "rebaseline"
    prev = autotune.health_fields(autotune.State(no_improve=4, active=True))
    assert autotune.advance(prev, "discard", False, settings, deterministic=True)["recovery"] == "shrink_scope"
    assert autotune.advance(prev, "discard", False, settings)["recovery"] == "rebaseline"


def test_identical_values_are_unchanged_not_within_noise():
    verdict, evidence = autotune.assess([100.0], [100.0] * 4, "lower", 0.05)
    assert verdict == "unchanged" and evidence["method"] == "exact" and evidence["noise"]["sigma"] == 0
    assert autotune.assess([100.0], [100.0], "lower", 0.05, deterministic=True)[0] == "unchanged"
    # noisy samples that happen to have equal medians are still within the noise
    assert autotune.assess([99.0, 100.0, 101.0], [99.5, 100.0, 100.5], "lower", 0.05)[0] == "within_noise"


@pytest.mark.slow
def test_confidence_excludes_checks_failed_values(tmp_path):
    p = project_with_extra(tmp_path)
    p.write("autotune.checks.sh", "#!/usr/bin/env bash\n! grep -q BROKEN work.py\n", mode=0o755)
    p.loop(100, description="baseline")
    p.loop(90, description="win")
    _, logged = p.loop(95, description="discarded")
    assert logged["confidence"]["n"] == 3
    p.write("work.py", "DELAY_MS = 5000\nBROKEN = 1\n")
    p.ok("run")
    failed = p.ok("log", "--status", "auto", "--description", "fails the checks")
    assert failed["status"] == "checks_failed" and failed["metric"] == 5000
    assert failed["confidence"]["n"] == 3 and failed["confidence"]["noise_mad"] == 5
    # the state rebuilt from the log agrees
    os.unlink(os.path.join(str(p.path), ".autotune.state"))
    assert p.cli("explain", "--json").json["confidence"]["n"] == 3
    assert p.state()["metric_points"] == 3
