"""Issue 9 point 11: duet mode (evaluator.mode "duet"). The kept code runs from a
private copy of the tree (outside the user's files) AT THE SAME TIME as the candidate;
the pairs are judged by the same paired test as interleaved mode.

The benchmark is real (a bash script) but its numbers are the test's: value = DELAY_MS
(work.py) x (1 + a small noise seeded by the side and the sample number). It records the
directory each side ran in, in a directory outside the repository. AUTOTUNE_DUET_FORCE=1
skips the spare-core rule (this test machine is busy), never the rest."""

import glob
import hashlib
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import cli_argv, clean_env, make_project
from support.core_helpers import baseline_beside_user_files

import autotune

BENCH = r"""#!/usr/bin/env bash
d=$(sed -n 's/^DELAY_MS = //p' work.py)
M=%(machine)s
[ -f "$M/require_git" ] && { [ -d .git ] || { echo "needs the real tree"; exit 4; }; }
pwd > "$M/pwd.$AUTOTUNE_SIDE.$AUTOTUNE_SAMPLE"
cat venv/lib.txt > "$M/venv.$AUTOTUNE_SIDE" 2>/dev/null
[ -f "$M/slow" ] && { touch "$M/started.$AUTOTUNE_SIDE"; sleep 2; }
s=$(printf '%%s' "$AUTOTUNE_SIDE" | cksum | cut -d' ' -f1)
awk -v d="$d" -v n="${AUTOTUNE_SAMPLE:-0}" -v s="$s" 'BEGIN {
  srand(n * 7919 + s %% 1000); rand(); noise = (rand() - 0.5) * 0.004
  printf "METRIC time_ms=%%.6f\n", d * (1 + noise)
}'
"""

ENV = clean_env(AUTOTUNE_PAIR_SEED="3", AUTOTUNE_DUET_FORCE="1")


def duet_project(tmp_path, mode="duet", bench_extra=""):
    machine = tmp_path / "machine"
    machine.mkdir()
    project = make_project(tmp_path / "repo", benchmark=BENCH % {"machine": str(machine)} + bench_extra, init=False,
                           config={"evaluator": {"mode": mode}})
    baseline_beside_user_files(project, run_env(tmp_path))
    return project, machine


def tree_bytes(project):
    """Every file of the user's tree (not .git; not the log and state `run` appends to),
    byte for byte, and git's status."""
    root = str(project.path)
    files = {}
    for here, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not (here == root and d == ".git")]
        for name in names:
            if here == root and name in ("autotune.jsonl", ".autotune.state"):
                continue
            full = os.path.join(here, name)
            with open(full, "rb") as handle:
                files[os.path.relpath(full, root)] = hashlib.sha256(handle.read()).hexdigest()
    return files, project.git("status", "--porcelain", "--ignored")


def run_env(tmp_path):
    """ENV with a TMPDIR of the test's own: the copies of one test are not another's
    (the shards run duet tests at the same time)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    return dict(ENV, TMPDIR=str(tmp))


def copies(tmp_path):
    return set(glob.glob(os.path.join(str(tmp_path / "tmp"), "autotune-duet-*")))


def candidate(project, delay=100):
    project.write("work.py", "DELAY_MS = %s\n# the candidate\n" % delay)
    project.write("new_module.py", "created = True\n")
    os.unlink(os.path.join(str(project.path), "old_module.py"))


def sides_ran_in(machine):
    out = {}
    for path in glob.glob(str(machine / "pwd.*")):
        side = os.path.basename(path).split(".")[1]
        with open(path) as handle:
            out.setdefault(side, set()).add(handle.read().strip())
    return out


def test_duet_obstacle_needs_spare_cores_and_a_benchmark_that_runs_from_a_copy():
    assert autotune.duet_obstacle(8, 0.5, "", "/r") is None
    assert "idle" in autotune.duet_obstacle(2, 0.7, "", "/r")
    assert autotune.duet_obstacle(2, 0.7, "", "/r", force=True) is None
    assert "CPU" in autotune.duet_obstacle(1, 0.0, "", "/r", force=True)
    assert "cannot run from a copy" in autotune.duet_obstacle(8, 0.0, "cd /r/src && make", "/r")
    assert "duet" in autotune.EVAL_MODES


def test_a_noop_is_not_kept_and_the_users_tree_is_untouched(tmp_path):
    project, machine = duet_project(tmp_path)
    candidate(project)
    before, had = tree_bytes(project), copies(tmp_path)
    ran = project.ok("run", env=run_env(tmp_path))
    assert ran["interleaved"]["duet"] is True, ran
    assert ran["verdict"] != "improved" and ran["suggested_status"] == "discard", ran
    assert ran["evidence"]["method"] == "interleaved-signed-rank"
    where = sides_ran_in(machine)
    assert where["candidate"] == {os.path.realpath(str(project.path))}
    assert all(os.path.basename(p).startswith("autotune-duet-") for p in where["best"]), where
    with open(str(machine / "venv.best")) as handle:     # the same ignored environment
        assert handle.read() == "the user's environment\n"
    assert tree_bytes(project) == before
    assert copies(tmp_path) == had                               # the copy is gone
    assert not glob.glob(str(project.path / ".git" / "autotune" / "*" / "duet.json"))


def test_a_clear_win_is_found(tmp_path):
    project, machine = duet_project(tmp_path)
    candidate(project, delay=80)
    ran = project.ok("run", env=run_env(tmp_path))
    assert ran["interleaved"]["duet"] is True and ran["verdict"] == "improved", ran
    assert ran["suggested_status"] == "keep"
    assert ran["executions"] == 2 * ran["n"]
    project.ok("log", "--status", "keep", "--description", "faster")
    assert project.read("work.py").startswith("DELAY_MS = 80")


def test_a_benchmark_naming_the_trees_path_falls_back_to_interleaved_with_a_warning(tmp_path):
    # the benchmark names the tree's absolute path: from a copy it would run the user's tree
    project, machine = duet_project(tmp_path, bench_extra="# lives in %s\n" % (tmp_path / "repo"))
    candidate(project)
    before, had = tree_bytes(project), copies(tmp_path)
    ran = project.ok("run", env=run_env(tmp_path))
    warning = [w for w in ran.get("warnings", []) if "duet mode is off" in w]
    assert warning and "cannot run from a copy" in warning[0], ran
    assert ran["interleaved"]["duet"] is False and set(ran["interleaved"]["order"]) <= {"B", "C"}
    assert ran["verdict"] != "improved"
    assert tree_bytes(project) == before and copies(tmp_path) == had


def test_a_benchmark_that_fails_in_the_copy_falls_back_to_interleaved(tmp_path):
    project, machine = duet_project(tmp_path)
    candidate(project)
    (machine / "require_git").write_text("1")
    before, had = tree_bytes(project), copies(tmp_path)
    ran = project.ok("run", env=run_env(tmp_path))
    assert any("cannot run from a copy" in w for w in ran.get("warnings", [])), ran
    assert ran["interleaved"]["duet"] is False and ran["verdict"] != "improved"
    assert tree_bytes(project) == before and copies(tmp_path) == had


@pytest.mark.slow
def test_sigterm_mid_run_leaves_the_tree_intact_and_no_copy(tmp_path):
    project, machine = duet_project(tmp_path)
    candidate(project)
    before, had = tree_bytes(project), copies(tmp_path)
    (machine / "slow").write_text("1")
    proc = subprocess.Popen(cli_argv(["run"]), cwd=str(project.path), env=run_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while not (machine / "started.best").exists() and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, proc.communicate()
    assert copies(tmp_path) - had                                 # the copy exists while it runs
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert tree_bytes(project) == before
    assert copies(tmp_path) == had
    assert project.ok("doctor", "--json")["ok"] is True
