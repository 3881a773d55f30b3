"""Helpers for the core-engine tests (issue 2): independent statistics, process
scanning, nested-session projects and the seed session of the first implementation.

Nothing here imports autotune: the numbers the tests expect are computed by this
module's own, deliberately naive code, so a test cannot pass by mirroring the
implementation under test.
"""

import json
import os
import shutil
import subprocess
import time

from conftest import BENCHMARK, Project, clean_env

# a copy of /work/shared/fixtures/seed-session (byte for byte), so the tests never skip
SEED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures",
                        "seed-session")

SESSION_FILES = ("autotune.jsonl", ".autotune.state", "autotune.md", "autotune.ideas.md",
                 "autotune.sh", "autotune.checks.sh", "autotune.config.json")

RESULT_FIELDS = ("type", "index", "commit", "metric", "status", "description", "timestamp",
                 "segment", "metrics", "asi", "failure", "health", "recovery", "reason",
                 "files", "mode")
STATE_FIELDS = ("active", "mode", "health", "failure", "reason", "recovery", "heals",
                "no_improve", "crash_streak", "keep_streak", "n_exp", "resume_count",
                "resume_at", "exp_at", "progress_at")


# ------------------------------------------------------------- statistics ----

def naive_median(values):
    ordered = sorted(values)
    n = len(ordered)
    if n % 2:
        return float(ordered[n // 2])
    return (ordered[n // 2 - 1] + ordered[n // 2]) / 2.0


def naive_mad(values):
    center = naive_median(values)
    return naive_median([abs(v - center) for v in values])


# ---------------------------------------------------------------- processes ----

def processes_matching(marker):
    """Live (non-zombie) processes whose command line contains `marker`."""
    found = []
    needle = marker.encode()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % name, "rb") as handle:
                cmdline = handle.read()
            with open("/proc/%s/stat" % name, "rb") as handle:
                stat = handle.read()
        except (IOError, OSError):
            continue
        state = stat.rsplit(b")", 1)[-1].split()[0:1]
        if state == [b"Z"] or state == [b"X"]:
            continue
        if needle in cmdline:
            found.append((int(name), cmdline.replace(b"\0", b" ").decode("utf-8", "replace")))
    return found


def wait_no_processes(marker, timeout=3.0):
    """Gives the kernel a moment to reap; returns what is still alive after it."""
    deadline = time.monotonic() + timeout
    left = processes_matching(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = processes_matching(marker)
    return left


def kill_leftovers(marker):
    """Cleanup for a failing test: no sleeper may outlive the test run."""
    import signal
    for pid, _ in processes_matching(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def unique_marker():
    """A number no other process on the machine has in its command line."""
    return "1000.%d%03d" % (os.getpid(), int(time.time() * 1000) % 1000)


# ---------------------------------------------------------------- projects ----

def git_init(path):
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True, env=clean_env(),
                   stdout=subprocess.DEVNULL)


def make_nested_project(tmp_path, subdir="sub", init=True, config=None):
    """A repository whose autotune session lives in `subdir`; root files exist outside.

    Returns (root Project, session Project)."""
    root = tmp_path / "repo"
    git_init(root)
    top = Project(root)
    top.write("outside.txt", "outside v1\n")
    top.write("lib/shared.py", "SHARED = 1\n")
    session = Project(root / subdir)
    session.set_delay(100)
    session.write("autotune.sh", BENCHMARK, mode=0o755)
    if config is not None:
        session.write("autotune.config.json", json.dumps(config))
    top.git("add", "-A")
    top.git("commit", "-q", "-m", "initial")
    if init:
        session.ok("init", "--name", "nested", "--metric", "time_ms", "--unit", "ms",
                   "--direction", "lower")
    return top, session


def seed_project(tmp_path):
    """A git repository holding the seed session of the first implementation.

    The project mirrors the one described in the seed README (work.py with DELAY_MS,
    a benchmark printing time_ms, mem_mb and ops); the seed's two files are copied
    byte for byte and left untracked, as the first implementation left them."""
    path = tmp_path / "seed"
    git_init(path)
    project = Project(path)
    project.set_delay(70)
    project.write("autotune.sh", SEED_BENCHMARK, mode=0o755)
    project.git("add", "work.py", "autotune.sh")
    project.git("commit", "-q", "-m", "initial")
    for name in ("autotune.jsonl", ".autotune.state"):
        shutil.copyfile(os.path.join(SEED_DIR, name), os.path.join(str(path), name))
        os.chmod(os.path.join(str(path), name), 0o644)
    return project


SEED_BENCHMARK = """#!/usr/bin/env bash
d=$(sed -n 's/^DELAY_MS = //p' work.py)
if [ "$d" = CRASH ]; then echo "benchmark exploded"; exit 3; fi
echo "METRIC time_ms=$d"
echo "METRIC mem_mb=$((40 + d / 10))"
echo "METRIC ops=$((100000 / d))"
"""


def seed_bytes(name):
    with open(os.path.join(SEED_DIR, name), "rb") as handle:
        return handle.read()


def write_config(project, config):
    project.write("autotune.config.json", json.dumps(config))


def tracked_files(project, rev="HEAD"):
    return project.git("ls-tree", "-r", "--name-only", rev).split()


def commit_files(project, rev="HEAD"):
    """Paths changed by one commit (relative to the repository root)."""
    out = project.git("show", "--name-only", "--format=", rev)
    return [line for line in out.splitlines() if line.strip()]


def racy_edit(p, name, text):
    """Edits a tracked file within "the same clock tick" as the last index write.

    The index records the file's stat; the edit keeps its size and mtime (and
    core.trustctime=false makes git ignore ctime), so only git's racy-git rule (an
    entry whose mtime is not older than the index file's must be re-read) tells the
    edit apart. That is the everyday situation of an edit made in the same second as
    a commit on a git without sub-second timestamps; here it is made deterministic."""
    full = os.path.join(str(p.path), name)
    index = os.path.join(str(p.path), ".git", "index")
    past = int((time.time() - 100) * 1e9)
    p.git("config", "core.trustctime", "false")
    os.utime(full, ns=(past, past))
    p.git("update-index", "--refresh")              # the index records mtime = past
    assert len(text.encode()) == os.path.getsize(full)
    p.write(name, text)                              # the user's uncommitted edit
    os.utime(full, ns=(past, past))
    os.utime(index, ns=(past, past))                 # index written in the same tick
    assert name in p.git("diff-files", "--name-only").split(), "git itself must see the edit"


def baseline_beside_user_files(project, env):
    """A project with what an interleaved or duet run must leave alone (an ignored venv,
    an untracked file of the user's, a tracked module), initialized and with its baseline
    logged; returns the baseline run's JSON."""
    project.write(".gitignore", "venv/\n")
    project.write("venv/lib.txt", "the user's environment\n")
    project.write("notes.txt", "the user's own untracked file\n")
    project.write("old_module.py", "x = 1\n")
    project.git("add", ".gitignore", "old_module.py")
    project.git("commit", "-q", "-m", "setup")
    project.ok("init", "--name", "speed", "--metric", "time_ms", "--unit", "ms", "--direction", "lower")
    base = project.ok("run", env=env)
    assert base["verdict"] == "baseline", base
    project.ok("log", "--status", "keep", "--description", "baseline")
    return base
