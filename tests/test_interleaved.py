"""Issue 9: drift-proof decisions through the CLI. `run` measures the kept code beside
the candidate (interleaved, the order of each pair at random) by swapping exactly the
experiment's files in place, and judges the pairs.

The benchmark is real (a bash script run by autotune) but its numbers are the test's:
value = DELAY_MS (the code under test, work.py) x the machine's speed factor x (1 + a
seeded noise of +-0.2%), where the factor lives in a directory OUTSIDE the repository
that the test changes between runs (a step change) or that the benchmark derives from
its execution count (gradual drift, load that comes and goes). AUTOTUNE_PAIR_SEED fixes
the order of the pairs, so every run of these tests sees the same numbers."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import AUTOTUNE, ROOT, clean_env, make_project, run_cli
from support.refusals import clear_error
from support.core_helpers import baseline_beside_user_files

MACHINE_BENCH = r"""#!/usr/bin/env bash
# the code under test is work.py; the machine is %(machine)s (outside the repository)
d=$(sed -n 's/^DELAY_MS = //p' work.py)
if [ "$d" = CRASH ]; then echo "benchmark exploded"; exit 3; fi
M=%(machine)s
n=$(( $(cat "$M/count" 2>/dev/null || echo 0) + 1 )); echo "$n" > "$M/count"
echo "$AUTOTUNE_SIDE" >> "$M/sides"
extra=$( [ -f new_module.py ] && echo 1 || echo 0 )
awk -v d="$d" -v n="$n" -v f="$(cat "$M/factor")" -v drift="$(cat "$M/drift" 2>/dev/null || echo 0)" \
    -v bursts="$(cat "$M/bursts" 2>/dev/null || echo 0)" -v extra="$extra" \
    -v spread="$(cat "$M/noise" 2>/dev/null || echo 0.004)" 'BEGIN {
  srand(n * 7919 + 13); rand(); rand(); noise = (rand() - 0.5) * spread
  load = (bursts == 1 && int(n / 3) %% 3 == 0) ? 1.8 : 1
  printf "METRIC time_ms=%%.6f\n", d * f * (1 + drift * n) * load * (1 + noise)
  printf "METRIC has_new_module=%%d\n", extra
  printf "METRIC mem_mb=%%.3f\n", 50 * f * load
}'
"""
HOLDOUT = r"""#!/usr/bin/env bash
# the holdout: another workload of the same code, on the same machine
d=$(sed -n 's/^DELAY_MS = //p' work.py)
h=$(sed -n 's/^HOLDOUT_FACTOR = //p' work.py)
awk -v d="$d" -v h="${h:-2}" -v f="$(cat %(machine)s/factor)" 'BEGIN { printf "METRIC time_ms=%%.6f\n", h * d * f }'
"""


class Machine(object):
    def __init__(self, path):
        self.path = str(path)
        os.makedirs(self.path, exist_ok=True)
        self.set(factor=1.0)

    def set(self, **values):
        for name, value in values.items():
            with open(os.path.join(self.path, name), "w") as handle:
                handle.write("%r\n" % value)

    def executions(self):
        try:
            with open(os.path.join(self.path, "count")) as handle:
                return int(handle.read())
        except OSError:
            return 0

    def sides(self):
        try:
            with open(os.path.join(self.path, "sides")) as handle:
                return [line.strip() for line in handle]
        finally:
            try:
                os.unlink(os.path.join(self.path, "sides"))
            except OSError:
                pass


ENV = clean_env(AUTOTUNE_PAIR_SEED="3")


def noisy_project(tmp_path, config=None, checks=None):
    machine = Machine(tmp_path / "machine")
    project = make_project(tmp_path / "repo", benchmark=MACHINE_BENCH % {"machine": machine.path},
                           init=False, config=config)
    if checks:
        project.write("autotune.checks.sh", checks, mode=0o755)
    baseline_beside_user_files(project, ENV)
    return project, machine


def run(project):
    return project.ok("run", env=ENV)


def noop_edit(project, marker="1"):
    project.write("work.py", "DELAY_MS = 100\n# a comment only (%s)\n" % marker)


@pytest.mark.slow
def test_noop_not_kept_when_the_machine_gets_25_percent_faster(tmp_path):
    project, machine = noisy_project(tmp_path)
    machine.set(factor=0.75)
    noop_edit(project)
    before = machine.executions()
    ran = run(project)
    assert ran["verdict"] != "improved" and ran["suggested_status"] == "discard", ran
    assert ran["evidence"]["method"] == "interleaved-signed-rank"
    assert ran["executions"] == machine.executions() - before == 2 * ran["n"]
    assert ran["interleaved"]["best"] and abs(ran["evidence"]["delta_pct"]) < 1, ran
    assert set(ran["interleaved"]["order"]) <= {"B", "C"}
    assert project.read("work.py").endswith("(1)\n")           # the candidate is back
    piped = project.cli("run", env=ENV)
    assert piped.rc == 0 and piped.err == "" and piped.out.count("\n") == 1   # no progress when piped
    logged = project.ok("log", "--status", "auto", "--description", "no-op")
    assert project.log_lines()[-1]["env"]["load_run"]["before"]["cpus"] >= 1


@pytest.mark.slow
def test_the_present_rule_would_have_kept_it(tmp_path):
    """The contrast that motivates the default (evaluator.mode "reference")."""
    project, machine = noisy_project(tmp_path, config={"evaluator": {"mode": "reference"}})
    machine.set(factor=0.75)
    noop_edit(project)
    ran = run(project)
    assert ran["verdict"] == "improved" and ran["interleaved"] is None, ran


@pytest.mark.slow
def test_real_10_percent_win_found_when_the_machine_gets_30_percent_slower(tmp_path):
    project, machine = noisy_project(tmp_path)
    machine.set(factor=1.3)
    project.write("work.py", "DELAY_MS = 90\n")
    ran = run(project)
    assert ran["verdict"] == "improved" and ran["suggested_status"] == "keep", ran
    assert abs(ran["evidence"]["delta_pct"] + 10) < 0.5, ran["evidence"]
    assert ran["n"] == 5                                     # decided at the first look
    logged = project.ok("log", "--status", "auto", "--description", "10% faster")
    assert logged["status"] == "keep"
    assert project.git("show", "HEAD:work.py") == "DELAY_MS = 90\n"


@pytest.mark.slow
def test_noop_not_kept_under_gradual_drift(tmp_path):
    project, machine = noisy_project(tmp_path)
    machine.set(drift=0.005)
    for marker in "123":
        noop_edit(project, marker)
        ran = run(project)
        assert ran["verdict"] != "improved", ran
        project.ok("log", "--status", "auto", "--description", "no-op %s" % marker)


@pytest.mark.cost(5)
@pytest.mark.slow
def test_noop_not_kept_under_load_that_comes_and_goes(tmp_path):
    project, machine = noisy_project(tmp_path)
    machine.set(bursts=1)
    for marker in "123":
        noop_edit(project, marker)
        ran = run(project)
        assert ran["verdict"] != "improved", json.dumps([ran["samples"], ran["interleaved"], ran["evidence"]])
        project.ok("log", "--status", "auto", "--description", "no-op %s" % marker)
    project.write("work.py", "DELAY_MS = 90\n")
    ran = run(project)
    assert ran["verdict"] == "improved", json.dumps(ran)  # and a real win still is


@pytest.mark.slow
def test_deterministic_benchmark_still_one_execution_per_run(project):
    project.loop(100)
    ran, _ = project.loop(90)
    assert ran["n"] == 1 and ran["verdict"] == "improved" and ran["interleaved"] is None
    assert ran["executions"] == 1
    ran, _ = project.loop(95)
    assert ran["n"] == 1 and ran["verdict"] == "worse"


@pytest.mark.slow
def test_the_swap_touches_only_the_experiments_files(tmp_path):
    """Both sides see the same ignored environment (venv/) and the user's untracked
    file; the best's side does not see the module the experiment creates."""
    project, machine = noisy_project(tmp_path)
    venv_stat = os.stat(str(tmp_path / "repo" / "venv" / "lib.txt"))
    notes_stat = os.stat(str(tmp_path / "repo" / "notes.txt"))
    project.write("new_module.py", "y = 2\n")
    os.unlink(str(tmp_path / "repo" / "old_module.py"))
    project.write("work.py", "DELAY_MS = 100\n# candidate\n")
    machine.sides()
    ran = run(project)
    sides = machine.sides()
    assert set(sides) == {"best", "candidate"} and len(sides) == 2 * ran["n"]
    assert ran["metrics"]["has_new_module"] == 1
    assert ran["interleaved"]["best_metrics"]["has_new_module"] == 0
    assert sorted(ran["interleaved"]["swapped"]) == ["new_module.py", "old_module.py", "work.py"]
    assert project.read("new_module.py") == "y = 2\n" and not project.exists("old_module.py")
    assert project.read("work.py") == "DELAY_MS = 100\n# candidate\n"
    for path, before in ((tmp_path / "repo" / "venv" / "lib.txt", venv_stat),
                         (tmp_path / "repo" / "notes.txt", notes_stat)):
        after = os.stat(str(path))
        assert (after.st_mtime_ns, after.st_ino, after.st_size) == (
            before.st_mtime_ns, before.st_ino, before.st_size)


@pytest.mark.slow
def test_checks_see_only_the_candidates_code(tmp_path):
    seen = tmp_path / "checks-saw"
    project, machine = noisy_project(tmp_path, checks="#!/usr/bin/env bash\ncat work.py >> %s\n" % seen)
    seen.write_text("")
    project.write("work.py", "DELAY_MS = 100\n# candidate\n")
    run(project)
    text = seen.read_text()
    assert text and set(text.split("DELAY_MS = 100\n")[1:]) == {"# candidate\n"}, text


# ------------------------------------------------------- interrupted swaps ----

CRASHPOINT = os.path.join(ROOT, "tests", "support", "crashpoint.py")
SLOW_BEST = """#!/usr/bin/env bash
d=$(sed -n 's/^DELAY_MS = //p' work.py)
if [ "$AUTOTUNE_SIDE" = best ] && [ ! -e %(marker)s ]; then echo "$$" > %(marker)s; sleep 30; fi
echo "METRIC time_ms=$d.$RANDOM"
"""


def candidate_files(project):
    return {name: project.read(name) if project.exists(name) else None
            for name in ("work.py", "new_module.py", "old_module.py")}


def make_candidate(project):
    project.write("work.py", "DELAY_MS = 100\n# the candidate\n")
    project.write("new_module.py", "created = True\n")
    os.unlink(os.path.join(str(project.path), "old_module.py"))


@pytest.mark.slow
def test_a_signal_while_the_kept_code_is_in_place_restores_the_candidate(tmp_path):
    marker = tmp_path / "best-running"
    project, machine = noisy_project(tmp_path)
    project.write("autotune.sh", SLOW_BEST % {"marker": marker}, mode=0o755)
    project.ok("init", "--name", "speed", "--metric", "time_ms", "--direction", "lower")
    project.ok("run", env=ENV)
    project.ok("log", "--status", "keep", "--description", "baseline")
    make_candidate(project)
    expected = candidate_files(project)
    from conftest import cli_argv
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if marker.exists():
            marker.unlink()
        proc = subprocess.Popen(cli_argv(["run"]), cwd=str(project.path), env=ENV,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        while not marker.exists() and proc.poll() is None:
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()
        assert project.read("work.py") == "DELAY_MS = 100\n"      # the kept code is in place
        proc.send_signal(signum)
        proc.communicate(timeout=60)
        assert proc.returncode != 0, signum
        assert candidate_files(project) == expected, signum
        assert project.ok("doctor", "--json")["ok"] is True


def _swap_window(trace_file):
    with open(trace_file) as handle:
        names = handle.read().split("\n")[1:]
    """The events from anchoring the candidate's tree to dropping the journal that can
    change something (reads, lock calls and pipe writes are skipped: a kill there leaves
    what a kill at the next changing event leaves)."""
    anchors = [i for i, n in enumerate(names) if n.startswith("popen:git update-ref")]
    return [i + 1 for i in range(anchors[0], anchors[-1] + 1)
            if not names[i].startswith(("open:r", "os.open:r", "write:pipe", "flock"))]


@pytest.mark.cost(17)
@pytest.mark.slow
def test_kill_9_at_every_step_of_a_swap_is_restored_by_doctor_fix_or_the_next_run(tmp_path):
    import shutil
    project, machine = noisy_project(tmp_path, config={"repeat": 1, "evaluator": {"alpha": 0.5}})
    make_candidate(project)
    expected = candidate_files(project)
    pristine = tmp_path / "pristine"
    shutil.copytree(str(project.path), str(pristine), symlinks=True)
    trace = str(tmp_path / "trace")
    proc = subprocess.run([sys.executable, CRASHPOINT, AUTOTUNE, "0", "before", trace, "run"],
                          cwd=str(project.path), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.returncode == 0, proc.stderr
    points = _swap_window(trace)
    assert len(points) >= 4
    seen = set()
    for kill_at in points:
        shutil.rmtree(str(project.path))
        shutil.copytree(str(pristine), str(project.path), symlinks=True)
        subprocess.run([sys.executable, CRASHPOINT, AUTOTUNE, str(kill_at), "before", trace, "run"],
                       cwd=str(project.path), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        codes = [p["code"] for p in project.cli("doctor", "--json").json["problems"]]
        if "interrupted_swap" not in codes:
            assert candidate_files(project) == expected, kill_at
            seen.add("intact")
            continue
        if "run" not in seen:     # once: `run` itself first puts the candidate back, and says so
            ran = project.ok("run", env=ENV)
            assert any("restored first" in w for w in ran.get("warnings", [])), ran
            assert candidate_files(project) == expected and project.ok("doctor", "--json")["ok"] is True
            seen.add("run")
            continue
        report = project.cli("doctor", "--fix", "--json").json
        assert report["ok"] is True and [p["code"] for p in report["problems"]] == ["interrupted_swap"], \
            (kill_at, report)
        assert candidate_files(project) == expected, kill_at
        seen.add("restored")
    assert seen == {"intact", "run", "restored"}
    ran = project.ok("run", env=ENV)
    assert ran["interleaved"]["swapped"] and candidate_files(project) == expected


# ------------------------------------------ holdout, guardrails, rebaseline ----


@pytest.mark.slow
def test_holdout_and_guardrails_are_judged_beside_the_kept_code(tmp_path):
    """A real win on a machine that got 30% slower: against the baseline's holdout
    (one number from a faster machine) it would fail; beside the kept code it passes.
    The guardrail on mem_mb (+30% on the slower machine) likewise."""
    machine = Machine(tmp_path / "machine")
    project, machine = noisy_project(tmp_path, config={
        "guardrails": {"mem_mb": {"maxRegressionPct": 5}}})
    project.write("autotune.holdout.sh", HOLDOUT % {"machine": machine.path}, mode=0o755)
    project.ok("init", "--name", "speed", "--metric", "time_ms", "--direction", "lower")
    project.ok("run", env=ENV)
    project.ok("log", "--status", "keep", "--description", "baseline")
    machine.set(factor=1.3)
    project.write("work.py", "DELAY_MS = 90\n")
    ran = run(project)
    assert ran["verdict"] == "improved", ran
    assert ran["holdout"]["ok"] is True and ran["holdout"]["against"] == "the kept code measured beside it"
    assert ran["holdout"]["best_samples"] == [260.0] * 3 and ran["holdout"]["value"] == 234
    assert ran["guardrails"]["ok"] is True
    project.ok("log", "--status", "auto", "--description", "10% faster")
    project.write("work.py", "DELAY_MS = 80\nHOLDOUT_FACTOR = 3\n")   # faster, but not on the holdout
    ran = run(project)
    assert ran["verdict"] == "holdout_failed" and ran["holdout"]["best_samples"] == [234.0] * 3, ran
    assert project.read("work.py") == "DELAY_MS = 80\nHOLDOUT_FACTOR = 3\n"


@pytest.mark.slow
def test_rebaseline_refreshes_every_compared_metric_and_warns_on_drift(tmp_path):
    machine = Machine(tmp_path / "machine")
    project, machine = noisy_project(tmp_path)
    project.write("autotune.holdout.sh", HOLDOUT % {"machine": machine.path}, mode=0o755)
    project.ok("init", "--name", "speed", "--metric", "time_ms", "--direction", "lower")
    project.ok("run", env=ENV)
    project.ok("log", "--status", "keep", "--description", "baseline")
    quiet = project.ok("rebaseline")
    assert "warnings" not in quiet and quiet["holdout"] == 200 and quiet["metrics"]["mem_mb"] == 50
    machine.set(factor=1.5)
    loaded = project.ok("rebaseline")
    assert loaded["holdout"] == 300 and loaded["metrics"]["mem_mb"] == 75
    assert len(loaded["warnings"]) == 1 and "machine changed" in loaded["warnings"][0], loaded
    assert project.log_lines()[-1]["drift"]["delta_pct"] > 40


@pytest.mark.slow
def test_too_noisy_to_decide_is_within_noise_with_the_cause_and_remedies(tmp_path):
    project, machine = noisy_project(tmp_path, config={"evaluator": {"maxSamples": 5}})
    machine.set(noise=0.6)
    project.write("work.py", "DELAY_MS = 99\n")
    ran = run(project)
    assert ran["verdict"] == "within_noise" and ran["n"] == 5, ran
    noisy = ran["evidence"]["too_noisy"]
    assert noisy["resolvable_pct"] > 1
    text = " ".join(ran["warnings"])
    assert "too noisy to decide" in text and "evaluator.maxSamples" in text and "quieter machine" in text
    assert "longer" in text and ran["load"]["before"]["cpus"] >= 1


# ------------------------------------------------------------------ verify ----


@pytest.mark.slow
def test_verify_measures_the_baseline_commit_beside_the_best(tmp_path):
    project, machine = noisy_project(tmp_path)
    project.write("work.py", "DELAY_MS = 90\n")
    project.write("new_module.py", "y = 2\n")
    assert run(project)["verdict"] == "improved"
    project.ok("log", "--status", "keep", "--description", "10% faster")
    machine.set(factor=1.3)                 # the machine changed since: the logged -10% says nothing
    before = project.git("status", "--porcelain", "--ignored")
    lines = len(project.log_lines())
    verified = project.ok("verify", env=ENV)
    assert verified["pairs"] == 10 and verified["low_pct"] <= -10 <= verified["high_pct"] + 0.5, verified
    assert abs(verified["delta_pct"] + 10) < 0.3 and verified["baseline"]["index"] == 1
    assert sorted(verified["swapped"]) == ["new_module.py", "work.py"]
    assert project.git("status", "--porcelain", "--ignored") == before
    assert project.read("work.py") == "DELAY_MS = 90\n" and project.read("venv/lib.txt")
    entry = project.log_lines()[-1]
    assert len(project.log_lines()) == lines + 1 and entry["type"] == "verify"
    headline = "logged %+.1f%%; verified %+.1f%% ±" % (verified["logged_pct"], verified["delta_pct"])
    assert verified["headline"].startswith(headline)
    for command in (("explain",), ("status",), ("report",), ("dashboard",)):
        assert "verified %+.1f%%" % verified["delta_pct"] in project.cli(*command).out, command
    assert project.ok("explain", "--json")["verified"]["delta_pct"] == verified["delta_pct"]


@pytest.mark.slow
def test_verify_refuses_a_best_commit_that_history_no_longer_has(tmp_path):
    project, machine = noisy_project(tmp_path)
    project.write("work.py", "DELAY_MS = 90\n")
    run(project)
    project.ok("log", "--status", "keep", "--description", "10% faster")
    project.git("commit", "-q", "--amend", "-m", "rewritten")
    project.git("reflog", "expire", "--expire=now", "--all")
    project.git("gc", "-q", "--prune=now")
    before = project.snapshot_bytes()
    files = project.git("status", "--porcelain", "--ignored")
    result = project.cli("verify", env=ENV)
    clear_error(result, "commit_missing")
    message = result.json["message"]
    assert "no longer in this repository" in message and "git reflog" in message and "autotune init" in message
    assert project.snapshot_bytes() == before and project.git("status", "--porcelain", "--ignored") == files


@pytest.mark.slow
def test_verify_of_a_deterministic_benchmark_takes_two_pairs_and_next_suggests_it(tmp_path):
    project = make_project(tmp_path / "repo", config={"maxIterations": 2})
    project.loop(100)
    ran, logged = project.loop(80)
    explained = project.ok("explain", "--json")
    assert explained["health"] == "completed" and explained["next"] == "verify", explained
    verified = project.ok("verify")
    assert verified["pairs"] == 2 and verified["delta_pct"] == -20
    assert verified["low_pct"] == verified["high_pct"] == -20
    assert project.ok("explain", "--json")["next"] == "report"


@pytest.mark.slow
def test_identical_samples_of_a_kept_candidate_do_not_make_a_noisy_benchmark_deterministic(tmp_path):
    """The baseline decides determinism: a keep whose samples happen to agree (a coarse timer,
    a quiet minute) leaves a noisy benchmark noisy, so the next run still interleaves."""
    project, machine = noisy_project(tmp_path)      # the baseline's samples differ
    machine.set(noise=0.0)                           # this minute every execution agrees
    project.write("work.py", "DELAY_MS = 50\n")
    won = run(project)
    assert won["verdict"] == "improved" and len(set(won["samples"])) == 1, won
    project.ok("log", "--status", "auto", "--description", "half the delay")
    assert project.log_lines()[-1]["status"] == "keep"
    machine.set(noise=0.004)
    project.write("work.py", "DELAY_MS = 50\n# a comment only\n")
    ran = run(project)
    assert ran["interleaved"] is not None and ran["executions"] > 1, ran
    assert "deterministic" not in ran["sampling"], ran["sampling"]


def test_the_headline_shows_an_off_centre_interval_as_it_is():
    import autotune
    centred = {"delta_pct": -10.2, "low_pct": -11.3, "high_pct": -9.1}
    off_centre = {"delta_pct": -48.127, "low_pct": -55.633, "high_pct": -44.724}
    assert autotune.headline_text(-61.3, centred) == "logged -61.3%; verified -10.2% ± 1.1%"
    assert autotune.headline_text(-61.3, off_centre) == \
        "logged -61.3%; verified -48.1% (95% CI -55.6% to -44.7%)"
    assert autotune.headline_text(-5.0, None) == "logged -5.0%"
