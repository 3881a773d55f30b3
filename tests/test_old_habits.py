"""Issue 13, point 5: the first implementation's habits keep working.

dashboard --watch started before the session, dashboard --dir, COLUMNS, a timed-out
benchmark's exit 124, --version / -v / help, and the permission rules the old skill's
commands need. (statusline --chain through the shell and its default colour are in
test_statusline_permissions.py.)"""

import json
import os
import re
import select
import subprocess
import time

import pytest

from conftest import ROOT, cli_argv, clean_env, make_project, run_cli

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def read_until(proc, needle, deadline):
    """Reads the process's stdout until `needle` shows up (or the deadline passes)."""
    seen = b""
    while needle.encode() not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            seen += chunk
    return seen.decode("utf-8", "replace")


def test_dashboard_watch_waits_for_a_session_and_shows_it(tmp_path):
    p = make_project(tmp_path / "repo", init=False)
    proc = subprocess.Popen(cli_argv(["dashboard", "--watch", "--interval", "0.2"]), cwd=str(p.path),
                            env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        waiting = read_until(proc, "waiting for a session", time.monotonic() + 60)
        assert "waiting for a session" in waiting and proc.poll() is None, waiting
        p.ok("init", "--name", "late start", "--metric", "time_ms", "--direction", "lower")
        shown = read_until(proc, "late start", time.monotonic() + 60)
        assert "late start" in shown and proc.poll() is None, shown
    finally:
        proc.kill()
        proc.communicate()


def test_dashboard_dir(tmp_path):
    p = make_project(tmp_path / "repo")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shown = run_cli(["dashboard", "--dir", str(p.path)], elsewhere)
    assert shown.rc == 0 and "speed up work()" in shown.out, shown
    as_json = run_cli(["dashboard", "--dir", str(p.path), "--json"], elsewhere)
    assert as_json.json["name"] == "speed up work()"
    missing = run_cli(["dashboard", "--dir", str(tmp_path / "nope")], elsewhere)
    assert missing.rc != 0 and "--dir" in missing.err and missing.out == ""


@pytest.mark.slow
@pytest.mark.parametrize("columns, width", [(None, 80), ("120", 120), ("60", 60), ("junk", 80)])
def test_dashboard_honours_columns(tmp_path, columns, width):
    p = make_project(tmp_path / "repo")
    p.loop(100, description="baseline " + "with a long description " * 8)
    env = clean_env(**({"COLUMNS": columns} if columns else {}))
    shown = p.cli("dashboard", env=env)
    lines = ANSI.sub("", shown.out).splitlines()
    assert shown.rc == 0 and max(len(line) for line in lines) == width, (width, lines)


def test_a_timed_out_benchmark_reports_exit_124(tmp_path):
    p = make_project(tmp_path / "repo", benchmark="#!/usr/bin/env bash\nsleep 30\n")
    ran = p.ok("run", "--timeout", "0.5")
    assert ran["timeout"] is True and ran["exit"] == 124 and ran["crashed"] is True


@pytest.mark.parametrize("args", [["--version"], ["-v"], ["version"]])
def test_version_answers(tmp_path, args):
    result = run_cli(args, tmp_path)
    assert result.rc == 0 and re.match(r"^autotune \d+\.\d+\.\d+\n$", result.out), result


def test_help_answers(tmp_path):
    whole = run_cli(["help"], tmp_path)
    assert whole.rc == 0 and "COMMAND" in whole.out and "dashboard" in whole.out
    one = run_cli(["help", "log"], tmp_path)
    assert one.rc == 0 and one.out.startswith("usage: autotune log") and "--status" in one.out


def test_setup_permissions_allows_the_old_skills_commands(tmp_path):
    target = tmp_path / "proj"
    target.mkdir()
    result = run_cli(["setup-permissions", "--json", str(target)], tmp_path)
    allow = json.load(open(result.json["path"]))["permissions"]["allow"]
    for rule in ("Bash(bash %s/bin/init-experiment.sh*)" % ROOT, "Bash(bash %s/bin/run-experiment.sh*)" % ROOT,
                 "Bash(bash %s/bin/log-experiment.sh*)" % ROOT, "Bash(python3 autotune.py run*)",
                 "Bash(python3 autotune.py log*)", "Bash(python3 %s/autotune.py explain*)" % ROOT,
                 "Bash(./autotune.holdout.sh)", "Bash(git checkout -b autotune/*)"):
        assert rule in allow, rule
    # still not the person's commands, whichever way they are spelled
    assert not [r for r in allow if re.search(r"(clear|resume|repair)\*\)$", r)], allow
    assert not [r for r in allow if "bin/autotune*" in r or "bin/*" in r], allow
