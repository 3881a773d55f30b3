"""Issue 4 through the CLI: the measurement flows from `run` to `log`, repeats and the
adaptive default, verdicts and `log --status auto`, refused keeps and recorded
overrides, guardrails, the holdout, `rebaseline`, the target and wall-clock budgets,
the environment of each result, and benchmark integrity.

Noisy benchmarks are deterministic here: `autotune.sh` prints the next number of a
sequence file (state/seq, a counter in state/count; state/ is git-ignored), so every
run of these tests sees the same samples."""

import json
import os
import sys

import pytest

from conftest import ROOT, make_project
from support.refusals import clear_error

sys.path.insert(0, os.path.join(ROOT, "bench"))

import autotune  # noqa: E402  (constants only; the tests drive the CLI)

PROBE = autotune.DEFAULT_PROBE   # baseline samples of the adaptive default (3 or more)

SEQ_BENCH = """#!/usr/bin/env bash
# noisy test benchmark: the next number of state/seq (a counter in state/count)
n=$(cat state/count 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > state/count
v=$(sed -n "${n}p" state/seq)
if [ -z "$v" ]; then echo "sequence exhausted at sample $n"; exit 7; fi
echo "METRIC time_ms=$v"
echo "METRIC mem_mb=50"
"""

WORK_BENCH = """#!/usr/bin/env bash
# deterministic test benchmark: the numbers in work.py; CRASH makes it fail
get() { sed -n "s/^$1 = //p" work.py; }
d=$(get DELAY_MS)
if [ "$d" = CRASH ]; then echo "benchmark exploded"; exit 3; fi
echo "METRIC time_ms=$d"
echo "METRIC mem_mb=$(get MEM_MB)"
echo "METRIC errors=$(get ERRORS)"
"""

CHECKS = """#!/usr/bin/env bash
if grep -q '^BROKEN' work.py; then echo "checks: work.py is broken"; exit 1; fi
echo "checks ok"
"""

HOLDOUT = """#!/usr/bin/env bash
h=$(sed -n 's/^HOLDOUT_MS = //p' work.py)
if [ "$h" = CRASH ]; then echo "holdout exploded"; exit 4; fi
echo "METRIC time_ms=$h"
"""

BASELINE = [100.0, 101.0, 99.0, 100.5, 99.5]          # noisy: 3 differ, so 5 samples
BETTER = [90.0, 89.0, 91.0, 90.5, 89.5]               # all below the baseline: p = 1/252
WORSE = [110.0, 111.0, 109.0, 110.5, 109.5]
AMBIGUOUS = [99.9, 99.8, 100.1, 99.7, 100.2, 99.6, 100.3, 99.8, 100.0, 100.1,
             99.4, 100.5, 99.3, 99.95, 99.85]         # a hair ahead of the baseline, never significant
NOT_AHEAD = [100.2, 99.8, 100.1, 99.9, 100.4]         # median above the baseline's: no point sampling on


def init(project):
    return project.ok("init", "--name", "speed up work()", "--metric", "time_ms", "--unit", "ms",
                      "--direction", "lower")


def commit_setup(project, files):
    project.git("add", *files)
    project.git("commit", "-q", "-m", "setup")


def seq_project(tmp_path, config=None):
    """A sequence benchmark judged by the present rule (evaluator.mode "reference"): a
    sequence of numbers cannot tell the kept code from the candidate, so the interleaved
    default is driven by tests/test_interleaved.py instead."""
    config = dict(config or {})
    config["evaluator"] = dict(config.get("evaluator") or {}, mode="reference")
    project = make_project(tmp_path / "repo", benchmark=SEQ_BENCH, init=False, config=config)
    project.write(".gitignore", "state/\n")
    commit_setup(project, [".gitignore"])
    project.write("state/seq", "")
    init(project)
    return project


def feed(project, values):
    with open(os.path.join(str(project.path), "state", "seq"), "a") as handle:
        for value in values:
            handle.write("%r\n" % float(value))


def consumed(project):
    return int(project.read("state/count").strip())


def set_work(project, delay, mem=50, errors=0, holdout=100, broken=False):
    project.write("work.py", "DELAY_MS = %s\nMEM_MB = %s\nERRORS = %s\nHOLDOUT_MS = %s\n%s" % (
        delay, mem, errors, holdout, "BROKEN = 1\n" if broken else ""))


def work_project(tmp_path, config=None, checks=False, holdout=False):
    project = make_project(tmp_path / "repo", benchmark=WORK_BENCH, init=False, config=config)
    set_work(project, 100)
    files = ["work.py"]
    if checks:
        project.write("autotune.checks.sh", CHECKS, mode=0o755)
        files.append("autotune.checks.sh")
    if holdout:
        project.write("autotune.holdout.sh", HOLDOUT, mode=0o755)
        files.append("autotune.holdout.sh")
    commit_setup(project, files)
    init(project)
    return project


def log(project, status="auto", description="experiment", *extra):
    return project.cli("log", "--status", status, "--description", description, *extra)


def refused(result, code):
    return clear_error(result, code)


# ---------------------------------------------------- 1. run -> log flow ----


def test_log_without_metric_logs_the_measured_value(project):
    ran = project.ok("run")
    assert ran["primary"] == 100 and ran["samples"] == [100] * PROBE
    logged = project.ok("log", "--status", "keep", "--description", "baseline")
    assert logged["metric"] == 100 and logged["measured"] is True
    result = project.results()[-1]
    assert result["metric"] == 100 and result["measured"] is True and result["samples"] == [100] * PROBE
    project.set_delay(90)
    project.ok("run")
    project.ok("log", "--status", "keep", "--description", "faster")
    assert project.results()[-1]["metric"] == 90 and project.results()[-1]["samples"] == [90]


def test_log_refuses_a_metric_that_differs_from_the_measurement(project):
    project.loop(100)
    project.set_delay(90)
    project.ok("run")
    before = project.snapshot_bytes()
    message = refused(log(project, "keep", "faster", "--metric", "85"), "metric_mismatch")
    assert "85" in message and "90" in message
    assert project.snapshot_bytes() == before and project.read("work.py") == "DELAY_MS = 90\n"
    logged = project.ok("log", "--status", "keep", "--description", "faster", "--metric", "90")
    assert logged["metric"] == 90 and logged["measured"] is True


@pytest.mark.slow
def test_forced_metric_is_logged_as_not_measured(project):
    project.loop(100)
    project.set_delay(90)
    project.ok("run")
    logged = project.ok("log", "--status", "keep", "--description", "faster", "--metric", "85", "--force")
    assert logged["metric"] == 85 and logged["measured"] is False
    assert project.results()[-1]["measured"] is False


def test_log_without_a_run_is_refused(project):
    before = project.snapshot_bytes()
    refused(log(project, "keep", "invented"), "missing_metric")
    assert project.snapshot_bytes() == before


def test_a_measurement_is_logged_once(project):
    project.loop(100)
    refused(log(project, "discard", "again"), "missing_metric")
    refused(log(project, "auto", "again"), "no_measurement")


@pytest.mark.slow
def test_secondary_metrics_flow_from_run(project):
    project.ok("run")
    project.ok("log", "--status", "keep", "--description", "baseline")
    assert project.results()[-1]["metrics"] == {"mem_mb": 50}
    project.set_delay(90)
    project.ok("run")
    message = refused(log(project, "keep", "faster", "--metrics", '{"mem_mb": 12}'), "metric_mismatch")
    assert "mem_mb" in message
    project.ok("log", "--status", "keep", "--description", "faster", "--metrics", '{"mem_mb": 49}')
    assert project.results()[-1]["metrics"] == {"mem_mb": 49}
    project.set_delay(80)
    project.ok("run")
    project.ok("log", "--status", "keep", "--description", "x", "--metrics", '{"mem_mb": 12}', "--force")
    assert project.results()[-1]["metrics"] == {"mem_mb": 12}


# ------------------------------------------------------------ 2. repeats ----


def test_repeat_flag_takes_n_samples_and_logs_them(tmp_path):
    project = seq_project(tmp_path)
    feed(project, [103, 101, 102, 150])
    ran = project.ok("run", "--repeat", "3")
    assert ran["n"] == 3 and ran["samples"] == [103, 101, 102] and ran["primary"] == 102
    assert "repeat=3" in ran["sampling"] and consumed(project) == 3
    project.ok("log", "--status", "keep", "--description", "baseline")
    result = project.results()[-1]
    assert result["samples"] == [103, 101, 102] and result["metric"] == 102


@pytest.mark.slow
@pytest.mark.parametrize("config", [{"repeat": 4}, {"evaluator": {"repeat": 4}}])
def test_config_repeat_is_used_by_every_run(tmp_path, config):
    project = make_project(tmp_path / "repo", config=config)
    ran, _ = project.loop(100)
    assert ran["n"] == 4
    ran, _ = project.loop(90)
    assert ran["n"] == 4 and project.results()[-1]["samples"] == [90, 90, 90, 90]
    assert project.ok("run", "--repeat", "2")["n"] == 2     # the flag wins over the config


def test_auto_default_costs_one_run_for_a_deterministic_benchmark(project):
    ran, _ = project.loop(100)
    assert ran["n"] == PROBE >= 3 and "deterministic" in ran["sampling"]
    ran, _ = project.loop(90)
    assert ran["n"] == 1 and ran["verdict"] == "improved" and ran["evidence"]["method"] == "exact"
    assert "1 sample" in ran["sampling"]


def test_auto_default_measures_the_noise_of_a_noisy_baseline(tmp_path):
    project = seq_project(tmp_path)
    feed(project, BASELINE)
    ran = project.ok("run")
    assert ran["n"] == 5 and ran["samples"] == BASELINE and ran["verdict"] == "baseline"
    assert "differ" in ran["sampling"]
    project.ok("log", "--status", "auto", "--description", "baseline")
    assert project.results()[-1]["samples"] == BASELINE


def test_baseline_sampling_text_states_the_configured_cap(tmp_path):
    project = seq_project(tmp_path, config={"evaluator": {"maxSamples": 10}})
    feed(project, BASELINE)
    ran = project.ok("run")
    assert ran["n"] == 5 and "5-10 samples" in ran["sampling"], ran["sampling"]


def noisy_baseline(tmp_path, config=None):
    project = seq_project(tmp_path, config)
    feed(project, BASELINE)
    project.ok("run")
    project.ok("log", "--status", "auto", "--description", "baseline")
    return project


@pytest.mark.slow
def test_clear_noisy_improvement_decides_after_one_batch(tmp_path):
    project = noisy_baseline(tmp_path)
    feed(project, BETTER + [50.0] * 10)
    project.set_delay(90)
    ran = project.ok("run")
    assert ran["n"] == 5 and consumed(project) == 10
    assert ran["verdict"] == "improved" and ran["suggested_status"] == "keep"
    ev = ran["evidence"]
    assert ev["method"] == "mann-whitney" and ev["p_value"] == pytest.approx(1 / 252.0, abs=1e-6)
    assert ev["reference"]["n"] == 5 and ev["candidate"]["n"] == 5
    assert "5 samples" in ran["sampling"]
    logged = project.ok("log", "--status", "auto", "--description", "faster")
    assert logged["status"] == "keep" and logged["git"]["action"] == "commit"


@pytest.mark.slow
def test_ambiguous_noisy_result_samples_up_to_the_cap(tmp_path):
    project = noisy_baseline(tmp_path)
    feed(project, AMBIGUOUS)
    project.set_delay(99)
    ran = project.ok("run")
    assert ran["n"] == 15 and ran["verdict"] == "within_noise"
    assert ran["suggested_status"] == "discard"
    assert "ambiguous" in ran["sampling"] and "cap of 15" in ran["sampling"]
    logged = project.ok("log", "--status", "auto", "--description", "same")
    assert logged["status"] == "discard" and len(project.results()[-1]["samples"]) == 15


def test_a_candidate_that_is_not_even_ahead_stops_after_one_batch(tmp_path):
    project = noisy_baseline(tmp_path)
    feed(project, NOT_AHEAD + [50.0] * 10)
    project.set_delay(99)
    ran = project.ok("run")
    assert ran["n"] == 5 and ran["verdict"] == "within_noise"
    assert consumed(project) == len(BASELINE) + 5


@pytest.mark.slow
def test_noisy_worse_result(tmp_path):
    project = noisy_baseline(tmp_path)
    feed(project, WORSE)
    project.set_delay(110)
    ran = project.ok("run")
    assert ran["n"] == 5 and ran["verdict"] == "worse" and ran["suggested_status"] == "discard"
    assert ran["evidence"]["p_worse"] <= 0.05


@pytest.mark.slow
def test_the_bench_simulation_decides_exactly_like_run(tmp_path):
    """bench/decisions.py replays `cmd_run`'s sampling loop; this keeps the two in step.
    Runs without a log all compare with the same reference (the baseline)."""
    import decisions
    project = noisy_baseline(tmp_path)
    project.set_delay(98)
    late = [95.0, 99.8, 92.0, 100.2, 94.0, 93.0, 96.0, 92.5, 94.5, 95.5]   # decided at 10
    for candidate in (BETTER, WORSE, AMBIGUOUS, late):
        values = candidate + [100.0] * (15 - len(candidate))
        project.write("state/seq", "".join("%r\n" % v for v in values))
        project.write("state/count", "0\n")
        ran = project.ok("run")
        replay = iter(values)
        samples, verdict, status, evidence, _ = decisions.measure(lambda: next(replay), BASELINE,
                                                               autotune.Settings())
        assert ran["samples"] == samples and ran["verdict"] == verdict, candidate
        assert ran["suggested_status"] == status
        assert ran["evidence"]["p_value"] == evidence["p_value"]
    assert ran["n"] == 10 and ran["verdict"] == "improved"


# ------------------------------------------------------------ 3. verdicts ----


@pytest.mark.slow
def test_deterministic_verdicts_and_auto_status(project):
    expected = [(100, "baseline", "keep"), (90, "improved", "keep"), (90, "unchanged", "discard"),
                (95, "worse", "discard"), (80, "improved", "keep")]
    for delay, verdict, status in expected:
        ran, logged = project.loop(delay)
        assert ran["verdict"] == verdict and ran["suggested_status"] == status, (delay, ran)
        assert logged["status"] == status and project.results()[-1]["verdict"] == verdict


@pytest.mark.slow
def test_crash_verdict_and_crashes_stay_out_of_the_confidence(project):
    project.loop(100)
    project.loop(90)
    ran, logged = project.loop("CRASH")
    assert ran["verdict"] == "crash" and ran["suggested_status"] == "crash" and ran["crashed"]
    assert logged["status"] == "crash"
    result = project.results()[-1]
    assert result["metric"] is None and result["confidence"]["n"] == 2
    project.loop(95)
    assert project.results()[-1]["confidence"]["n"] == 3


@pytest.mark.slow
def test_checks_failed_verdict(tmp_path):
    project = work_project(tmp_path, checks=True)
    project.ok("run")
    log(project)
    set_work(project, 90, broken=True)
    ran = project.ok("run")
    assert ran["verdict"] == "checks_failed" and ran["checks"] is False
    assert ran["suggested_status"] == "checks_failed"
    assert project.ok("log", "--status", "auto", "--description", "x")["status"] == "checks_failed"


def test_log_auto_needs_a_measurement(project):
    refused(log(project, "auto", "nothing measured"), "no_measurement")


def blocked_keep(tmp_path, verdict):
    """A project whose last run's verdict is `verdict` (after a kept baseline)."""
    config = {"guardrails": {"mem_mb": {"maxRegressionPct": 5}}} if verdict == "guardrail_failed" else None
    project = work_project(tmp_path, config=config, checks=verdict == "checks_failed",
                           holdout=verdict == "holdout_failed")
    project.ok("run")
    assert project.ok("log", "--status", "auto", "--description", "baseline")["status"] == "keep"
    if verdict == "crash":
        set_work(project, "CRASH")
    elif verdict == "checks_failed":
        set_work(project, 90, broken=True)
    elif verdict == "guardrail_failed":
        set_work(project, 90, mem=60)
    else:
        set_work(project, 90, holdout=130)
    ran = project.ok("run")
    assert ran["verdict"] == verdict, ran
    return project


@pytest.mark.slow
@pytest.mark.parametrize("verdict", ["checks_failed", "guardrail_failed", "holdout_failed"])
def test_keep_is_refused_after_a_failed_run_unless_forced_with_a_reason(tmp_path, verdict):
    project = blocked_keep(tmp_path, verdict)
    before = project.snapshot_bytes()
    refused(log(project, "keep", "keep it anyway"), "keep_refused")
    refused(log(project, "keep", "keep it anyway", "--force"), "keep_refused")
    assert project.snapshot_bytes() == before
    logged = project.ok("log", "--status", "keep", "--description", "keep it anyway", "--force",
                        "--reason", "the failure is a known flake")
    assert logged["status"] == "keep"
    result = project.results()[-1]
    assert result["forced"] is True and result["override_reason"] == "the failure is a known flake"
    assert result["verdict"] == verdict


@pytest.mark.slow
def test_keep_after_a_crash_is_refused_unless_forced_with_a_reason(tmp_path):
    """A crash measured nothing, so a keep needs an invented --metric; that is an override
    of a failed run like any other: --force alone is not enough, and it is recorded."""
    project = blocked_keep(tmp_path, "crash")
    before = project.snapshot_bytes()
    refused(log(project, "keep", "keep it anyway"), "missing_metric")
    result = log(project, "keep", "keep it anyway", "--metric", "90", "--force")
    assert result.rc != 0 and (result.json or {}).get("error") == "keep_refused", result
    assert project.snapshot_bytes() == before
    project.ok("log", "--status", "keep", "--description", "keep it anyway", "--metric", "90",
               "--force", "--reason", "the crash is a harness flake")
    entry = project.results()[-1]
    assert entry["forced"] is True and entry["override_reason"] == "the crash is a harness flake"
    assert entry["verdict"] == "crash"


# ---------------------------------------------------------- 4. guardrails ----


@pytest.mark.slow
def test_guardrail_regression_is_measured_against_the_segment_baseline(tmp_path):
    project = work_project(tmp_path, config={"guardrails": {"mem_mb": {"maxRegressionPct": 5}}})
    project.ok("run")
    log(project)
    set_work(project, 90, mem=52)                       # +4%: allowed
    ran = project.ok("run")
    assert ran["verdict"] == "improved" and ran["guardrails"]["ok"] is True
    assert project.ok("log", "--status", "auto", "--description", "x")["status"] == "keep"
    set_work(project, 80, mem=53)                       # +6% on the baseline, +2% on the best
    ran = project.ok("run")
    assert ran["verdict"] == "guardrail_failed" and ran["suggested_status"] == "discard"
    breach = ran["guardrails"]["breaches"][0]
    assert breach["metric"] == "mem_mb" and "mem_mb" in breach["message"]
    assert breach["baseline"] == 50


@pytest.mark.slow
def test_guardrail_max_names_the_metric(tmp_path):
    project = work_project(tmp_path, config={"guardrails": {"errors": {"max": 0}}})
    project.ok("run")
    log(project)
    set_work(project, 90, errors=2)
    ran = project.ok("run")
    assert ran["verdict"] == "guardrail_failed"
    assert [b["metric"] for b in ran["guardrails"]["breaches"]] == ["errors"]
    assert project.ok("log", "--status", "auto", "--description", "x")["status"] == "discard"


# ------------------------------------------------------------- 7. holdout ----


@pytest.mark.slow
def test_holdout_guards_a_keep(tmp_path):
    project = work_project(tmp_path, holdout=True)
    ran = project.ok("run")
    assert ran["holdout"]["value"] == 100
    log(project)
    assert project.results()[-1]["holdout"] == 100
    set_work(project, 90, holdout=104)                  # within the default 5%
    ran = project.ok("run")
    assert ran["verdict"] == "improved" and ran["holdout"]["ok"] is True
    log(project)
    set_work(project, 80, holdout=130)
    ran = project.ok("run")
    assert ran["verdict"] == "holdout_failed" and ran["holdout"]["ok"] is False
    assert ran["holdout"]["regression_pct"] == pytest.approx(30.0)
    assert ran["suggested_status"] == "discard"
    set_work(project, 80, holdout="CRASH")
    ran = project.ok("run")
    assert ran["verdict"] == "holdout_failed" and "holdout" in ran["holdout"]["reason"]


def test_holdout_does_not_run_for_a_result_that_is_not_kept(tmp_path):
    project = work_project(tmp_path, holdout=True)
    project.ok("run")
    log(project)
    set_work(project, 120, holdout="CRASH")
    ran = project.ok("run")
    assert ran["verdict"] == "worse" and ran["holdout"] is None


# ---------------------------------------------------------- 5. rebaseline ----


def test_rebaseline_records_samples_and_refreshes_the_reference(tmp_path):
    project = noisy_baseline(tmp_path)
    feed(project, [100.2, 99.7, 100.1, 99.9])
    out = project.ok("rebaseline", "--repeat", "4")
    assert out["status"] == "rebaselined" and out["n"] == 4 and out["samples"] == [100.2, 99.7, 100.1, 99.9]
    assert out["previous"]["n"] == 5
    line = project.log_lines()[-1]
    assert line["type"] == "rebaseline" and line["samples"] == [100.2, 99.7, 100.1, 99.9]
    assert len(project.results()) == 1                  # not an experiment
    feed(project, BETTER + [50.0] * 10)
    project.set_delay(90)
    ran = project.ok("run")
    assert ran["evidence"]["reference"]["n"] == 4
    assert ran["evidence"]["reference"]["source"] == "rebaseline"


def test_rebaseline_default_takes_five_samples(project):
    project.loop(100)
    out = project.ok("rebaseline")
    assert out["n"] == 5 and out["deterministic"] is True


def test_rebaseline_is_refused_with_uncommitted_experiment_changes(project):
    project.loop(100)
    project.set_delay(90)
    before = project.snapshot_bytes()
    message = refused(project.cli("rebaseline"), "dirty_worktree")
    assert "work.py" in message
    assert project.snapshot_bytes() == before


def test_plateau_playbook_points_to_rebaseline(tmp_path):
    # one sample per run: whether the benchmark is deterministic is not known, so rebaseline stays
    project = make_project(tmp_path / "repo", config={"health": {"maxNoImprovementRuns": 1}, "repeat": 1})
    project.loop(100)
    project.loop(100)
    data = project.cli("explain", "--json").json
    assert data["next"] == "rebaseline" and "autotune rebaseline" in data["next_text"]


# ------------------------------------------------------ 6. stop conditions ----


@pytest.mark.slow
def test_target_value_completes_the_loop(tmp_path):
    project = make_project(tmp_path / "repo", config={"budget": {"target": 95}})
    _, logged = project.loop(100)
    assert logged["health"] != "completed"
    _, logged = project.loop(90)
    assert logged["health"] == "completed" and logged["active"] is False
    assert "target" in logged["reason"]
    refused(project.cli("run"), "inactive")


def age_segment(project, minutes):
    """Moves the config line's timestamp back (same length) and drops the state cache."""
    import datetime
    path = os.path.join(str(project.path), "autotune.jsonl")
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines(True)
    config = json.loads(lines[0])
    now = datetime.datetime.now(datetime.timezone.utc)
    old = (now - datetime.timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert len(old) == len(config["timestamp"])
    lines[0] = lines[0].replace(config["timestamp"], old)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("".join(lines))
    os.remove(os.path.join(str(project.path), ".autotune.state"))


@pytest.mark.slow
def test_time_budget_completes_the_loop_at_the_next_log(tmp_path):
    project = make_project(tmp_path / "repo", config={"budget": {"maxMinutes": 30}})
    project.loop(100)
    project.set_delay(90)
    project.ok("run")
    age_segment(project, 45)
    logged = project.ok("log", "--status", "auto", "--description", "faster")
    assert logged["health"] == "completed" and logged["active"] is False
    assert "time budget" in logged["reason"]
    refused(project.cli("run"), "inactive")


def test_time_budget_spent_between_runs_shows_the_loop_completed(tmp_path):
    project = make_project(tmp_path / "repo", config={"budget": {"maxMinutes": 30}})
    project.loop(100)
    age_segment(project, 45)
    before = project.snapshot_bytes()
    message = refused(project.cli("run"), "budget_spent")
    assert "time budget" in message
    assert project.snapshot_bytes() == before
    data = project.cli("explain", "--json").json
    assert data["health"] == "completed" and data["active"] is False, data
    assert "time budget" in data["reason"]


# --------------------------------------------------------- 8. environment ----


@pytest.mark.slow
def test_every_result_records_its_environment(project):
    head = project.head()
    ran, _ = project.loop(100)
    env = project.results()[-1]["env"]
    for key in ("python", "os", "cpus", "load", "commit", "cpu"):
        assert key in env, env
    assert env["python"].count(".") == 2 and env["cpus"] >= 1 and env["commit"] == head
    assert isinstance(env["load"], list) and len(env["load"]) == 3
    assert ran["env"] == env
    project.loop("CRASH")
    assert project.results()[-1]["env"]["python"] == env["python"]
    project.ok("rebaseline", "--repeat", "1")
    assert project.log_lines()[-1]["env"]["commit"] == head


# --------------------------------------------------- 9. benchmark integrity ----


def test_changed_benchmark_refuses_run_until_reinit(project):
    project.loop(100)
    project.write("autotune.sh", project.read("autotune.sh") + "echo 'METRIC time_ms=1'\n")
    before = project.snapshot_bytes()
    message = refused(project.cli("run"), "benchmark_changed")
    assert "autotune.sh" in message and "init" in message
    refused(project.cli("rebaseline"), "benchmark_changed")
    assert project.snapshot_bytes() == before
    init(project)
    assert project.ok("run")["verdict"] == "baseline"


def test_benchmark_may_change_until_the_baseline_then_is_fixed(project):
    project.write("autotune.checks.sh", CHECKS, mode=0o755)  # still setting up: allowed
    assert project.ok("run")["checks"] is True
    project.ok("log", "--status", "keep", "--description", "baseline")
    project.write("autotune.checks.sh", CHECKS + "# weaker now\n", mode=0o755)
    message = refused(project.cli("run"), "benchmark_changed")
    assert "autotune.checks.sh" in message
    assert "autotune init --name 'speed up work()' --metric time_ms --unit ms --direction lower" in message


def test_benchmark_edited_between_the_baseline_run_and_its_log_is_caught(project):
    project.ok("run")
    project.write("autotune.sh", project.read("autotune.sh") + "# edited after measuring\n")
    project.ok("log", "--status", "keep", "--description", "baseline")
    refused(project.cli("run"), "benchmark_changed")


# ----------------------------------------------- fixed repeat of one sample ----


@pytest.mark.slow
def test_repeat_one_on_a_deterministic_benchmark_keeps_real_improvements(tmp_path):
    """With `repeat: 1` the reference has one sample, so the threshold borrows the MAD of
    the segment's results -- which is the loop's own progress, not noise."""
    project = make_project(tmp_path / "repo", config={"repeat": 1})
    for delay in (100, 90, 85, 84):
        ran, logged = project.loop(delay)
    assert ran["verdict"] == "improved", ran
