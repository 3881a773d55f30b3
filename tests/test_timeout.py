"""Issue 2, point 6: a timed-out benchmark is killed together with its children and the
run reports `timeout: true`; a benchmark that exits but leaves a background child
behind does not leave it running either. Processes are found by a unique number in
their command line (`sleep 1000.<unique>`), scanning /proc."""

import os
import random
import time

import pytest

from conftest import make_project
from support.core_helpers import kill_leftovers, processes_matching, wait_no_processes

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc (Linux)")


@pytest.fixture
def marker():
    """A unique `sleep` argument; whatever still carries it is killed after the test."""
    value = "1000.%d%06d" % (os.getpid() % 1000, random.randint(0, 999999))
    assert not processes_matching(value)
    yield value
    kill_leftovers(value)


def bench(body):
    return "#!/usr/bin/env bash\n" + body


def test_timeout_kills_the_benchmark_and_its_background_children(tmp_path, marker):
    script = bench("echo started\nsleep %s1 &\nsleep %s2\necho 'METRIC time_ms=1'\n" % (marker, marker))
    p = make_project(tmp_path / "repo", benchmark=script)
    started = time.monotonic()
    result = p.cli("run", "--timeout", "1")
    elapsed = time.monotonic() - started
    assert result.rc == 0, result  # a timeout is a result, not an error of `run`
    ran = result.json
    assert ran["timeout"] is True and ran["passed"] is False and ran["crashed"] is True
    assert ran["primary"] is None and "started" in ran["output"]
    assert 0.9 <= ran["dur"] < 10 and elapsed < 15
    assert "time" in (ran.get("reason") or "").lower()
    assert wait_no_processes(marker) == []
    logged = p.ok("log", "--status", "auto", "--description", "hangs")
    assert logged["status"] == "crash" and logged["failure"] == "benchmark_crash"


def test_timeout_kills_children_that_ignore_sigterm(tmp_path, marker):
    script = bench("(trap '' TERM; exec sleep %s1) &\nsleep %s2\n" % (marker, marker))
    p = make_project(tmp_path / "repo", benchmark=script)
    result = p.cli("run", "--timeout", "1")
    assert result.rc == 0, result
    assert result.json["timeout"] is True
    assert wait_no_processes(marker) == []


def test_exit_zero_with_a_background_child_leaves_nothing_behind(tmp_path, marker):
    script = bench("sleep %s1 &\nsleep %s2 >/dev/null 2>&1 &\necho 'METRIC time_ms=5'\n" % (marker, marker))
    p = make_project(tmp_path / "repo", benchmark=script)
    started = time.monotonic()
    result = p.cli("run", "--repeat", "1")
    assert result.rc == 0, result
    assert time.monotonic() - started < 10, "run waited for the background child"
    ran = result.json
    assert ran["passed"] is True and ran["timeout"] is False and ran["primary"] == 5
    assert wait_no_processes(marker) == []


@pytest.mark.slow
def test_exit_zero_with_a_child_ignoring_sigterm_leaves_nothing_behind(tmp_path, marker):
    """The child outlives SIGTERM, so it needs the KILL; meanwhile the benchmark's own
    output (its METRIC line) must not be lost. Three samples, because whether the
    line was read before the exit was noticed is a race."""
    script = bench("(trap '' TERM; exec sleep %s) >/dev/null 2>&1 &\necho 'METRIC time_ms=5'\n" % marker)
    p = make_project(tmp_path / "repo", benchmark=script)
    result = p.cli("run", "--repeat", "3")
    assert result.rc == 0, result
    assert result.json["passed"] is True and result.json["samples"] == [5, 5, 5], result
    assert wait_no_processes(marker) == []


def test_checks_timeout_kills_the_checks(tmp_path, marker):
    p = make_project(tmp_path / "repo", init=False)
    p.write("autotune.checks.sh", bench("sleep %s1 &\nsleep %s2\n" % (marker, marker)), mode=0o755)
    p.ok("init", "--name", "x", "--metric", "time_ms", "--direction", "lower")
    result = p.cli("run", "--repeat", "1", "--checks-timeout", "1")
    assert result.rc == 0, result
    ran = result.json
    assert ran["passed"] is True and ran["checks"] is False
    assert "time" in ran["chk_out"].lower()
    assert wait_no_processes(marker) == []


def test_timeout_also_kills_a_child_in_a_new_session(tmp_path, marker):
    """A child that calls setsid (a daemonizing server) left its process group; it is
    still the benchmark's child and must not outlive the run."""
    script = bench("setsid sleep %s1 >/dev/null 2>&1 < /dev/null &\nsleep %s2\n" % (marker, marker))
    p = make_project(tmp_path / "repo", benchmark=script)
    result = p.cli("run", "--timeout", "1")
    assert result.rc == 0, result
    assert result.json["timeout"] is True
    assert wait_no_processes(marker) == [], "a setsid child of the benchmark survived the run"


def test_fast_benchmark_is_not_slowed_down(tmp_path):
    """Reaping the process group must not add a fixed delay to every sample."""
    p = make_project(tmp_path / "repo")
    started = time.monotonic()
    result = p.cli("run", "--repeat", "3")
    assert result.rc == 0 and result.json["passed"] is True, result
    assert time.monotonic() - started < 3.0
