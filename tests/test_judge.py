"""A judge that cannot be moved or fooled (issue 11): `log` records what `run` measured
of the tree it measured; one benchmark at a time; the judge's settings and the protected
inputs are fixed by the baseline; the PreToolUse guard resolves targets against the loop
(symlinks, hard links, other directories); SessionStart speaks to the loop's owner.

Every refusal is checked to leave the log, the state and the tree byte-identical."""

import glob
import json
import os
import shlex
import signal
import subprocess
import time

import pytest

from conftest import clean_env, cli_argv, make_project
from support.plugin_helpers import run_hook, sample
from support.refusals import clear_error

OWNER = "0b5e55ed-0000-4000-8000-0000000000d1"
OTHER = "0b5e55ed-0000-4000-8000-0000000000d2"


def snap(project):
    """Everything a refused command must leave as it was."""
    files = project.snapshot_bytes()
    files["work.py"] = project.read("work.py")
    files["status"] = project.git("status", "--porcelain", "--untracked-files=all")
    files["head"] = project.git("rev-parse", "HEAD")
    return files


def refused(result, code, *needles):
    message = clear_error(result, code, *needles)
    assert set(result.json) == {"error", "message"}, result
    return message


def run_cache(project):
    (path,) = glob.glob(os.path.join(str(project.path), ".git", "autotune", "*", "run.json"))
    return path


# ------------------------------------------------- 1. log records what run measured ----

@pytest.mark.slow
def test_log_after_the_tree_changed_since_run_is_refused_whatever_the_status(project):
    project.loop(100, description="baseline")
    project.set_delay(90)
    project.ok("run")
    project.set_delay(95)  # edited after the measurement
    before = snap(project)
    for status in ("auto", "keep", "discard", "crash", "checks_failed"):
        result = project.cli("log", "--status", status, "--description", "never measured")
        refused(result, "stale_run", "work.py", "autotune run")
        assert snap(project) == before
    project.ok("run")
    logged = project.ok("log", "--status", "auto", "--description", "measured")
    assert logged["metric"] == 95 and logged["measured"] is True


@pytest.mark.slow
def test_a_forged_run_cache_cannot_turn_a_measured_regression_into_a_keep(project):
    project.loop(100, description="baseline")
    project.set_delay(150)
    ran = project.ok("run")
    assert ran["primary"] == 150 and ran["suggested_status"] == "discard"
    path = run_cache(project)
    with open(path) as handle:
        forged = json.load(handle)
    forged.update(primary=1, samples=[1.0], verdict="improved", suggested_status="keep")
    with open(path, "w") as handle:
        json.dump(forged, handle)
    logged = project.ok("log", "--status", "auto", "--description", "forged")
    assert logged["status"] == "discard" and logged["metric"] == 150 and logged["best"] == 100
    assert project.git("log", "--format=%s").count("autotune:") == 0
    # the result names the measurement line it records, by offset and hash
    import hashlib
    result = project.results()[-1]
    ref = result["measurement"]
    with open(os.path.join(str(project.path), "autotune.jsonl"), "rb") as handle:
        handle.seek(ref["offset"])
        line = handle.readline()
    assert json.loads(line)["type"] == "measurement" and json.loads(line)["primary"] == 150
    assert hashlib.sha256(line).hexdigest() == ref["sha256"]
    # a measurement is recorded once: a second log has nothing to record
    project.set_delay(150)
    refused(project.cli("log", "--status", "auto", "--description", "again"), "no_measurement")


@pytest.mark.slow
def test_a_forged_state_cannot_point_log_at_an_old_measurement(project):
    project.loop(100, description="baseline")
    first_offset = project.results()[0]["measurement"]["offset"]
    project.set_delay(150)
    project.ok("run")
    state_path = os.path.join(str(project.path), ".autotune.state")
    state = json.load(open(state_path))
    state["pending"] = first_offset  # the baseline's measurement (100), already recorded
    import zlib
    state.pop("checksum")
    text = json.dumps(state, indent=2, ensure_ascii=False, allow_nan=False, sort_keys=True)
    state["checksum"] = "%08x" % zlib.crc32(text.encode("utf-8"))
    with open(state_path, "w") as handle:
        handle.write(json.dumps(state, indent=2, sort_keys=True) + "\n")
    logged = project.ok("log", "--status", "auto", "--description", "after forging the state")
    assert logged["metric"] == 150 and logged["status"] == "discard"


# ----------------------------------------------------- 2. one benchmark at a time ----

WAITING = """#!/usr/bin/env bash
touch {started}
for i in $(seq 600); do [ -e {go} ] && break; sleep 0.05; done
echo "METRIC time_ms=100"
"""


def wait_for(path, seconds=60):
    deadline = time.time() + seconds
    while not os.path.exists(path):
        assert time.time() < deadline, "timed out waiting for %s" % path
        time.sleep(0.02)


@pytest.mark.slow
def test_a_second_run_is_refused_at_once_and_a_killed_one_never_blocks(tmp_path):
    started, go = str(tmp_path / "started"), str(tmp_path / "go")
    project = make_project(tmp_path / "repo", benchmark=WAITING.format(
        started=shlex.quote(started), go=shlex.quote(go)))
    first = subprocess.Popen(cli_argv(["run"]), cwd=str(project.path), env=clean_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(started)
        before = snap(project)
        message = refused(project.cli("run"), "benchmark_running", "pid %d" % first.pid, "./autotune.sh")
        assert "started 20" in message
        refused(project.cli("log", "--status", "auto", "--description", "x"), "benchmark_running")
        assert snap(project) == before
        doctor = project.cli("doctor", "--json")
        assert "benchmark_running" in doctor.out
        open(go, "w").close()
        out, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    # kill -9 while the benchmark runs: the lock dies with its holder, and the orphaned
    # benchmark is killed by the next run before it measures (no overlap)
    os.unlink(started)
    os.unlink(go)
    killed = subprocess.Popen(cli_argv(["run"]), cwd=str(project.path), env=clean_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(started)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    orphans = tagged(killed.pid)
    assert orphans, "the killed run's benchmark outlives it"
    os.unlink(started)
    second = subprocess.Popen(cli_argv(["run"]), cwd=str(project.path), env=clean_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(started)
        assert not [pid for pid in orphans if alive(pid)], "two benchmarks overlap"
        open(go, "w").close()
        out, err = second.communicate(timeout=120)
        assert second.returncode == 0 and json.loads(out)["passed"] is True, err
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()


def tagged(pid):
    """The live processes started by autotune process `pid` (their run token says so)."""
    found = []
    for name in os.listdir("/proc"):
        try:
            with open("/proc/%s/environ" % name, "rb") as handle:
                if any(v.startswith(b"AUTOTUNE_RUN_TOKEN=%d-" % pid) for v in handle.read().split(b"\0")):
                    found.append(int(name))
        except (OSError, ValueError):
            pass
    return [p for p in found if alive(p)]


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(") ", 1)[1][0] not in "ZX"
    except OSError:
        return False


# -------------------------------------------- 3. the judge is fixed per segment ----

@pytest.mark.slow
def test_a_changed_judge_is_refused_with_the_init_command_and_budgets_may_change(tmp_path):
    config = {"guardrails": {"mem_mb": {"maxRegressionPct": 10}}, "evaluator": {"alpha": 0.05},
              "maxIterations": 50}
    project = make_project(tmp_path / "repo", config=config, init=False)
    name = "speed 'up' $(work) \"now\""
    project.ok("init", "--name", name, "--metric", "time_ms", "--unit", "m s", "--direction", "lower")
    project.loop(100, description="baseline")
    for changed in ({"guardrails": {"mem_mb": {"maxRegressionPct": 50}}},
                    {"evaluator": {"alpha": 0.1}},
                    {"evaluator": {"alpha": 0.05, "maxSamples": 9}},  # a key not written before
                    {"holdout": {"maxRegressionPct": 50}},
                    {"protect": ["data/**"]},
                    {"repeat": 3}):
        project.write("autotune.config.json", json.dumps(dict(config, **changed)))
        project.set_delay(90)
        before = snap(project)
        message = refused(project.cli("run"), "judge_changed", "autotune init")
        assert snap(project) == before
        command = message.rsplit(": ", 1)[1]
        assert shlex.split(command) == ["autotune", "init", "--name", name, "--metric", "time_ms",
                                        "--unit", "m s", "--direction", "lower"], command
        doctor = project.cli("doctor", "--json")
        assert "judge_changed" in doctor.out, doctor
    # budgets, resume settings and comments may change within the segment
    project.write("autotune.config.json", json.dumps(dict(
        config, maxIterations=7, budget={"maxMinutes": 600}, resume={"maxResumes": 3},
        evaluator={"alpha": 0.05, "_why": "a comment"})))
    project.ok("run")
    project.ok("log", "--status", "auto", "--description", "budget changed")


# ------------------------------------------------------- 4. protected inputs ----

DATA_BENCH = """#!/usr/bin/env bash
# reads its data; checks run through `npm test`
if [ -n "${NEVER:-}" ]; then npm test; fi
n=$(wc -l < data/input.csv)
d=$(sed -n 's/^DELAY_MS = //p' work.py)
echo "METRIC time_ms=$((d * n / 3))"
"""


def data_project(tmp_path):
    project = make_project(tmp_path / "repo", benchmark=DATA_BENCH, init=False,
                           config={"protect": ["data/**", "tests/**"]})
    project.write("data/input.csv", "a\nb\nc\n")
    project.write("tests/test_work.py", "def test_work():\n    assert True\n")
    project.write("package.json", json.dumps({"scripts": {"test": "node t.js", "pretest": "true"},
                                              "dependencies": {"left-pad": "1.0.0"}}))
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "data")
    init = project.ok("init", "--name", "data", "--metric", "time_ms", "--direction", "lower")
    assert init["protected"] == ["data/input.csv", "package.json#scripts.pretest",
                                 "package.json#scripts.test", "tests/test_work.py"]
    project.loop(100, description="baseline")
    return project


@pytest.mark.slow
def test_a_changed_protected_input_refuses_run_naming_it(tmp_path):
    project = data_project(tmp_path)
    project.write("data/input.csv", "a\n")  # truncating the data would be "improved -66%"
    before = snap(project)
    refused(project.cli("run"), "protected_changed", "data/input.csv", "autotune init")
    assert snap(project) == before
    project.git("checkout", "--", "data/input.csv")
    # a new file under a protected glob, a test edited, a script redefined
    for name, text in (("tests/test_new.py", "x = 1\n"), ("tests/test_work.py", "x = 2\n")):
        project.write(name, text)
        refused(project.cli("run"), "protected_changed", name)
        project.git("checkout", "--", ".") if name.endswith("work.py") else os.unlink(
            os.path.join(str(project.path), name))
    package = json.loads(project.read("package.json"))
    package["scripts"]["test"] = "node t.js || true"
    project.write("package.json", json.dumps(package))
    refused(project.cli("run"), "protected_changed", "package.json#scripts.test")
    # a dependency is a fair experiment
    package["scripts"]["test"] = "node t.js"
    package["dependencies"]["left-pad"] = "1.3.0"
    project.write("package.json", json.dumps(package))
    project.set_delay(90)
    project.ok("run")
    assert project.ok("log", "--status", "auto", "--description", "dependency")["status"] == "keep"


@pytest.mark.slow
def test_an_experiment_that_changes_a_protected_input_cannot_be_kept(tmp_path):
    project = data_project(tmp_path)
    project.set_delay(90)
    project.ok("run")
    project.write("data/input.csv", "a\n")
    os.utime(os.path.join(str(project.path), "work.py"))
    before = snap(project)
    for status in ("keep", "auto", "discard"):
        refused(project.cli("log", "--status", status, "--description", "x"), "stale_run", "data/input.csv")
        assert snap(project) == before


def test_a_bad_protect_config_is_a_clear_error(tmp_path):
    project = make_project(tmp_path / "repo", init=False)
    for bad in ("data/**", ["/etc/passwd"], ["../x"], [""], [3]):
        project.write("autotune.config.json", json.dumps({"protect": bad}))
        refused(project.cli("init", "--name", "x", "--metric", "t", "--direction", "lower"), "bad_config", "protect")
        assert not project.exists("autotune.jsonl")


# ------------------------------------------------ 5. the guard guards the target ----

def edit(path, cwd, name="Edit", **fields):
    tool_input = {"file_path": str(path), "old_string": "a", "new_string": "b"}
    if name == "Write":
        tool_input = {"file_path": str(path), "content": fields.pop("content", "x")}
    tool_input.update(fields)
    result = run_hook("pre-tool-use", sample("PreToolUse.Write" if name == "Write" else "PreToolUse.Edit",
                                             cwd, session_id=OWNER, tool_name=name, tool_input=tool_input), cwd)
    assert result.rc == 0 and "Traceback" not in result.err, result
    return "deny" if '"deny"' in result.out else "allow"


@pytest.mark.slow
def test_edits_are_resolved_against_the_loop_through_links_and_directories(tmp_path):
    project = data_project(tmp_path)
    root = project.path
    parent = tmp_path
    assert edit(root / "autotune.sh", parent) == "deny"            # from the parent directory
    assert edit(root / "autotune.config.json", parent, "Write") == "deny"
    assert edit("repo/data/input.csv", parent) == "deny"          # relative to the session's cwd
    assert edit(root / "work.py", parent) == "allow"
    os.symlink("autotune.config.json", str(root / "settings.json"))
    os.link(str(root / "autotune.jsonl"), str(root / "notes.json"))
    assert edit(root / "settings.json", root) == "deny"             # a symlink to the config
    assert edit(root / "notes.json", root) == "deny"                # a hard link to the log
    assert edit(root / "tests" / "new_test.py", root, "Write") == "deny"
    # package.json: its protected scripts, not its dependencies
    assert edit(root / "package.json", root, old_string="node t.js", new_string="true") == "deny"
    assert edit(root / "package.json", root, old_string="1.0.0", new_string="1.3.0") == "allow"


# ---------------------------------------------- 8. SessionStart speaks to the owner ----

@pytest.mark.slow
def test_session_start_continues_the_loop_only_for_its_owner(tmp_path):
    project = make_project(tmp_path / "repo", init=False)
    env = clean_env(CLAUDE_CODE_SESSION_ID=OWNER)
    project.ok("init", "--name", "x", "--metric", "time_ms", "--direction", "lower", env=env)
    project.set_delay(100)
    project.ok("run", env=env)
    project.ok("log", "--status", "auto", "--description", "baseline", env=env)

    def context(session_id, env_extra=None, **fields):
        payload = sample("SessionStart", project.path, session_id=session_id, **fields)
        from support.plugin_helpers import hook_env
        run_env = hook_env(project.path, session_id)
        run_env.update(env_extra or {})
        result = run_hook("session-start", payload, project.path, env=run_env)
        assert result.rc == 0, result
        return json.loads(result.out)["hookSpecificOutput"]["additionalContext"]

    owner = context(OWNER)
    assert "Resume: read autotune.md" in owner and "Next action" in owner
    other = context(OTHER)
    assert "\n" not in other and "not asked to continue" in other and OWNER in other
    assert "Resume:" not in other
    assert "Resume:" in context(OTHER, agent_type="autotune")
    assert "Resume:" in context(OTHER, env_extra={"AUTOTUNE_AGENT": "1"})
