"""Crash safety (issue 6, point 2): a `log` killed with SIGKILL at any point leaves a log
that every command reads, loses or rewrites no result, and a truncated last line is
reported (explain/status), refused (log) and repaired (doctor --fix), never silently
dropped. The state cache deleted or corrupt is rebuilt from the log.

The kill points are deterministic: tests/support/crashpoint.py runs autotune in its own
process and SIGKILLs it just before its N-th I/O event (file open/write/rename/unlink,
lock, subprocess start), for N = 1 .. the number of events of an unkilled run, each
time from the same copy of the session; and once at the log write after writing half
of the line (a torn write)."""

import glob
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import AUTOTUNE, clean_env, make_project
from support.reliability import (FAST, assert_clean_exit, assert_state_matches_log, complete_lines,
                                 expected_confidence, read_bytes, session_bytes)
from support.reliability import run_fast as run_cli
from support.refusals import clear_error

CRASHPOINT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "support", "crashpoint.py")
LOG = "autotune.jsonl"
STATE = ".autotune.state"


def build_session(path):
    """A session with two results and an experiment in the working tree."""
    project = make_project(path, config={"health": {"maxNoImprovementRuns": 1000}})
    project.ok("log", "--status", "keep", "--metric", "100", "--description", "baseline")
    project.ok("log", "--status", "discard", "--metric", "104", "--description", "worse")
    project.set_delay(90)           # the experiment the killed `log` records
    project.write("new_file.txt", "created by the experiment\n")
    return project


def git_out(path, *args):
    return subprocess.run(["git"] + list(args), cwd=str(path), env=clean_env(), check=True,
                          stdout=subprocess.PIPE).stdout.decode("utf-8", "replace")


def kill_run(path, kill_at, mode, args, trace):
    proc = subprocess.run(FAST + [CRASHPOINT, AUTOTUNE, str(kill_at), mode, trace] + args,
                          cwd=str(path), env=clean_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=60)
    return proc


def check_after_kill(path, before_log, n_before, description, torn_expected, what):
    """Every invariant a killed `log` must leave behind; returns the recovery steps seen."""
    seen = []
    after = read_bytes(os.path.join(str(path), LOG))
    assert after.startswith(before_log), "%s: the log's earlier bytes were rewritten" % what
    lines, torn = complete_lines(after)
    results = [line for line in lines if line.get("type") == "result"]
    extra = results[n_before:]
    assert len(extra) <= 1, "%s: more than one result appended" % what
    if extra:
        assert extra[0]["description"] == description and extra[0]["index"] == n_before + 1, what
    if torn:
        assert torn_expected, "%s: a torn tail without a torn write: %r" % (what, torn[:80])
        assert dumps_prefix(torn, description), "%s: the torn tail is not the cut line" % what

    # the commands still read the log (status and explain share one reading path, so
    # explain runs where the log was cut; `log` below is the writing path)
    status = run_cli(["status", "--json"], path)
    assert_clean_exit(status, False, what + ": status")
    assert status.rc == 0 and status.json["runs"] == len(results), status
    if torn:
        explained = run_cli(["explain"], path)
        assert_clean_exit(explained, False, what + ": explain")
        assert explained.rc == 0, explained
        assert "truncated" in explained.out and any("truncated" in w for w in status.json["warnings"])
        seen.append("torn")
        frozen = session_bytes(path)
        refused = run_cli(["log", "--status", "discard", "--metric", "150", "--description", "after"], path)
        assert_clean_exit(refused, True, what + ": log after a torn tail")
        clear_error(refused, "torn_log")
        assert session_bytes(path) == frozen, "%s: a refused log changed the files" % what
        doctor = run_cli(["doctor", "--json"], path)
        assert_clean_exit(doctor, False, what + ": doctor", report=True)
        codes = {p["code"]: p for p in doctor.json["problems"]}
        assert doctor.rc != 0 and codes["torn_tail"]["fixable"], doctor
        fixed = run_cli(["doctor", "--fix", "--json"], path)
        assert_clean_exit(fixed, False, what + ": doctor --fix", report=True)
        assert {p["code"]: p for p in fixed.json["problems"]}["torn_tail"]["fixed"], fixed
        backups = glob.glob(os.path.join(str(path), LOG + ".torn-*"))
        assert len(backups) == 1 and read_bytes(backups[0]) == torn, "%s: torn tail not kept aside" % what
        repaired = read_bytes(os.path.join(str(path), LOG))
        assert repaired.startswith(after[:len(after) - len(torn)]), "%s: doctor --fix rewrote the log" % what
        added, rest = complete_lines(repaired[len(after) - len(torn):])
        # the only line doctor may add: a new snapshot when HEAD moved (a commit was made)
        assert rest == b"" and all(e.get("action") == "snapshot" for e in added), added
        if added:
            seen.append("head_moved")
        assert_state_matches_log(path)
    leftovers = glob.glob(os.path.join(str(path), STATE + ".*.tmp"))
    if leftovers:
        seen.append("temp")
        doctor = run_cli(["doctor", "--json"], path)
        assert "temp_files" in [p["code"] for p in doctor.json["problems"]], doctor
        run_cli(["doctor", "--fix", "--json"], path)
        assert not glob.glob(os.path.join(str(path), STATE + ".*.tmp")), "doctor --fix left temp files"

    # the loop goes on: the next log gets the next index, nothing lost or doubled
    follow = run_cli(["log", "--status", "discard", "--metric", "150", "--description", "after"], path)
    assert_clean_exit(follow, True, what + ": next log")
    recorded = False
    if follow.rc != 0:
        # killed between autotune's own commit and its log line: HEAD moved
        assert follow.json["error"] == "head_moved", follow
        assert git_out(path, "log", "-1", "--format=%s").strip() == "autotune: " + description
        seen.append("head_moved")
        advice = follow.json["message"].partition("Record it with: ")[2]
        if advice:  # autotune recognises its own commit and says how to record it
            argv = shlex.split(advice)
            assert argv[0] == "autotune", advice
            recovered = run_cli(argv[1:], path)
            assert_clean_exit(recovered, True, what + ": " + advice)
            assert recovered.rc == 0 and recovered.json["index"] == n_before + 1, recovered
            recorded = True
        else:
            fixed = run_cli(["doctor", "--fix", "--json"], path)
            assert_clean_exit(fixed, False, what + ": doctor --fix (head_moved)", report=True)
        follow = run_cli(["log", "--status", "discard", "--metric", "150", "--description", "after"], path)
        assert follow.rc == 0, follow
    final = read_bytes(os.path.join(str(path), LOG))
    lines, torn = complete_lines(final)
    assert torn == b""
    results = [line for line in lines if line.get("type") == "result"]
    assert [r["index"] for r in results] == list(range(1, len(results) + 1)), "%s: gap or duplicate" % what
    descriptions = [r["description"] for r in results]
    assert descriptions[:n_before] == ["baseline", "worse"]
    assert descriptions.count(description) <= 1 and descriptions[-1] == "after"
    if recorded:
        kept = results[n_before]
        assert kept["description"] == description and kept["status"] == "keep"
        assert kept["commit"] == git_out(path, "rev-parse", "--short=7", "HEAD").strip()
    assert_state_matches_log(path)
    assert results[-1]["confidence"] == expected_confidence(path), "%s: values.bin out of step" % what
    return seen


def dumps_prefix(torn, description):
    return torn.startswith(b'{"type": "result"') and b"\n" not in torn


def is_change(event):
    return not event.startswith(("open:r:", "os.open:r:", "flock"))


def sweep(tmp_path, lane, status, description):
    """Kills `log --status STATUS` at every I/O event, each time from a fresh copy."""
    work = tmp_path / ("work%d" % lane)
    base = tmp_path / ("base%d" % lane)
    build_session(work)
    shutil.copytree(str(work), str(base), symlinks=True)
    before_log = read_bytes(os.path.join(str(base), LOG))
    args = ["log", "--status", status, "--metric", "90", "--description", description]
    trace = str(tmp_path / ("trace%d" % lane))
    done = kill_run(work, 0, "before", args, trace)     # a complete run: count the events
    assert done.returncode == 0, done.stderr
    with open(trace) as handle:
        count = int(handle.readline())
        names = handle.read().splitlines()
    assert count == len(names)
    # killing before a read leaves the same files as killing before the next change
    plan = [(n, "before") for n, name in enumerate(names, 1) if is_change(name)]
    plan += [(n, "torn") for n, name in enumerate(names, 1) if name == "write:" + LOG]
    assert any(mode == "torn" for _, mode in plan), "no write to the log among %s" % names
    outcomes = {}
    for n, mode in plan:
        shutil.rmtree(str(work))
        shutil.copytree(str(base), str(work), symlinks=True)
        proc = kill_run(work, n, mode, args, trace)
        assert proc.returncode == -signal.SIGKILL, (n, mode, proc.returncode, proc.stderr[-2000:])
        what = "%s killed %s event %d (%s)" % (status, mode, n, names[n - 1])
        outcomes[(n, mode)] = check_after_kill(work, before_log, 2, description, mode == "torn", what)
    return names, outcomes


@pytest.mark.cost(78)
@pytest.mark.slow
def test_log_killed_at_every_io_event(tmp_path):
    """A keep (commit path) and a discard (revert path), swept in two parallel lanes."""
    found, errors = {}, []

    def lane(number, status):
        try:
            found[status] = sweep(tmp_path, number, status, "experiment 90")
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=lane, args=(n, s)) for n, s in enumerate(("keep", "discard"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    for status, (names, outcomes) in sorted(found.items()):
        assert any("torn" in v for v in outcomes.values()), "the torn write was never observed"
        sys.stderr.write("\n[crash] log --status %s: %d events, %d kill points; recoveries: %s" % (
            status, len(names), len(outcomes), sorted(set(s for v in outcomes.values() for s in v))))
        moved = sorted("%d:%s" % (n, names[n - 1]) for (n, _), v in outcomes.items() if "head_moved" in v)
        if moved:
            sys.stderr.write("; head_moved after a kill before %s" % ", ".join(moved))
    sys.stderr.write("\n")


@pytest.mark.cost(6)
@pytest.mark.slow
def test_log_killed_after_random_delays(tmp_path):
    """The same invariants with a real outside SIGKILL (git children keep running)."""
    work = tmp_path / "work"
    base = tmp_path / "base"
    build_session(work)
    shutil.copytree(str(work), str(base), symlinks=True)
    before_log = read_bytes(os.path.join(str(base), LOG))
    for delay_ms in (0, 10, 20, 30, 40, 55, 70):
        shutil.rmtree(str(work))
        shutil.copytree(str(base), str(work), symlinks=True)
        proc = subprocess.Popen(FAST + [AUTOTUNE, "log", "--status", "keep", "--metric", "90",
                                 "--description", "experiment 90"], cwd=str(work), env=clean_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        time.sleep(delay_ms / 1000.0)
        proc.send_signal(signal.SIGKILL)  # autotune only: a git child it started runs on
        proc.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until that orphan has finished
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.01)
        lock = os.path.join(str(work), ".git", "index.lock")
        if os.path.exists(lock):  # git itself killed mid-write is git's business
            os.unlink(lock)
        check_after_kill(work, before_log, 2, "experiment 90", False, "killed after %d ms" % delay_ms)


# --------------------------------------------------- a torn tail written by hand ----

def torn_project(tmp_path):
    project = build_session(tmp_path / "repo")
    project.set_delay(100)
    os.unlink(os.path.join(str(project.path), "new_file.txt"))
    torn = b'{"type": "result", "index": 3, "commit": "abc", "metric": 9'
    with open(os.path.join(str(project.path), LOG), "ab") as handle:
        handle.write(torn)
    return project, torn


@pytest.mark.slow
def test_torn_tail_is_reported_refused_and_moved_aside(tmp_path):
    project, torn = torn_project(tmp_path)
    path = project.path
    before = read_bytes(os.path.join(str(path), LOG))
    for args in (["explain"], ["explain", "--json"], ["status"], ["status", "--json"]):
        result = run_cli(args, path)
        assert_clean_exit(result, False, " ".join(args))
        assert result.rc == 0 and "truncated" in result.out, result
    frozen = session_bytes(path)
    for args in (["log", "--status", "keep", "--metric", "90", "--description", "x"],
                 ["init", "--name", "n", "--metric", "time_ms", "--direction", "lower"],
                 ["stop"], ["repair"], ["stop", "--json"]):
        result = run_cli(args, path)
        assert_clean_exit(result, args[0] in ("log", "init"), " ".join(args))
        assert result.rc != 0 and "truncated" in (result.out + result.err), result
        assert session_bytes(path) == frozen, "%s changed the files" % args
    assert read_bytes(os.path.join(str(path), LOG)) == before, "the torn tail was silently rewritten"
    doctor = run_cli(["doctor"], path)
    assert doctor.rc != 0 and "torn_tail" in doctor.out, doctor
    fixed = run_cli(["doctor", "--fix"], path)
    assert_clean_exit(fixed, False, "doctor --fix", report=True)
    backups = glob.glob(os.path.join(str(path), LOG + ".torn-*"))
    assert len(backups) == 1 and read_bytes(backups[0]) == torn
    assert read_bytes(os.path.join(str(path), LOG)) == before[:-len(torn)]
    assert_state_matches_log(path)
    logged = project.ok("log", "--status", "keep", "--metric", "90", "--description", "after the fix")
    assert logged["index"] == 3
    assert_state_matches_log(path)
    again = run_cli(["doctor", "--json"], path)
    assert "torn_tail" not in [p["code"] for p in again.json["problems"]]


# ------------------------------------------------------- the state cache broken ----

def valid_state(project):
    run_cli(["status"], project.path)
    with open(os.path.join(str(project.path), STATE), "rb") as handle:
        return json.loads(handle.read().decode("utf-8"))


def corruptions(state):
    """(name, bytes) of broken .autotune.state files; some keep the cache key intact."""
    def with_(**fields):
        data = dict(state)
        data.update(fields)
        return json.dumps(data).encode()
    yield "empty", b""
    yield "junk bytes", b"\x00\xff\xfe garbage \x80"
    yield "truncated json", json.dumps(state).encode()[:100]
    yield "a json list", b"[1, 2, 3]"
    yield "deeply nested", b"[" * 100000 + b"]" * 100000
    yield "NaN", b'{"format": NaN}'
    yield "old format", with_(format=1)
    yield "size beyond the log", with_(log_size=state["log_size"] + 1000)
    yield "size as text", with_(log_size="12")
    yield "tail mismatch", with_(log_tail="00" * 32)
    # the cache key still matches: the fields themselves are garbage
    yield "best not an object", with_(best=5)
    yield "n_exp as text", with_(n_exp="x")
    yield "config a list", with_(config=[])
    yield "snapshot a string", with_(snapshot="zz")
    yield "lines null", with_(lines=None)
    yield "heals null", with_(heals=None)
    yield "metric_names a number", with_(metric_names=5)
    yield "segment null", with_(segment=None)
    yield "best without metric", with_(best={"index": 1})


@pytest.mark.slow
def test_state_deleted_is_rebuilt(tmp_path):
    project = build_session(tmp_path / "repo")
    expected = assert_state_matches_log(project.path)
    os.unlink(os.path.join(str(project.path), STATE))
    status = run_cli(["status", "--json"], project.path)
    assert status.rc == 0 and status.json["runs"] == expected["n_exp"]
    assert_state_matches_log(project.path)  # written back by the reader
    os.unlink(os.path.join(str(project.path), STATE))
    logged = project.ok("log", "--status", "keep", "--metric", "90", "--description", "next")
    assert logged["index"] == 3
    assert_state_matches_log(project.path)


@pytest.mark.cost(21)
@pytest.mark.slow
def test_state_corrupt_is_rebuilt(tmp_path):
    project = build_session(tmp_path / "repo")
    project.set_delay(100)
    os.unlink(os.path.join(str(project.path), "new_file.txt"))
    state_path = os.path.join(str(project.path), STATE)
    good = valid_state(project)
    failures = []
    for name, data in corruptions(good):
        with open(state_path, "wb") as handle:
            handle.write(data)
        for args, agent in ((["explain"], False), (["doctor", "--json"], False)):
            result = run_cli(args, project.path)
            try:
                assert_clean_exit(result, agent, " ".join(args), report=args[0] == "doctor")
                if args[0] != "doctor":
                    assert result.rc == 0
            except AssertionError as exc:
                failures.append("%s / %s: %s" % (name, " ".join(args), str(exc).splitlines()[0][:300]))
        with open(state_path, "wb") as handle:
            handle.write(data)
        before = len(project.results())
        result = run_cli(["log", "--status", "discard", "--metric", "101", "--description", "after " + name], project.path)
        try:
            assert_clean_exit(result, True, "log")
            assert result.rc == 0 and result.json["index"] == before + 1
            assert_state_matches_log(project.path)
        except AssertionError as exc:
            failures.append("%s / log: %s" % (name, str(exc).splitlines()[0][:300]))
            with open(state_path, "wb") as handle:   # start the next case from a sound cache
                handle.write(b"")
            run_cli(["status"], project.path)
    assert not failures, "a corrupt state cache was not rebuilt:\n" + "\n".join(failures)


@pytest.mark.slow
def test_state_that_cannot_be_written_never_half_commits(tmp_path):
    """When the state cache cannot be written (here: a directory in its place, as with a
    full disk or a read-only file), a command either refuses before appending, or
    appends and succeeds: never an error after the result was appended (the agent
    would retry and log the experiment twice)."""
    project = build_session(tmp_path / "repo")
    project.set_delay(100)
    os.unlink(os.path.join(str(project.path), "new_file.txt"))
    state_path = os.path.join(str(project.path), STATE)
    os.unlink(state_path)
    os.mkdir(state_path)
    problems = []
    for args, agent in ((["log", "--status", "discard", "--metric", "101", "--description", "x"], True),
                        (["stop"], False), (["resume"], False), (["repair"], False),
                        (["explain"], False), (["status", "--json"], False), (["doctor", "--fix"], False)):
        before = read_bytes(os.path.join(str(project.path), LOG))
        result = run_cli(args, project.path)
        after = read_bytes(os.path.join(str(project.path), LOG))
        try:
            assert_clean_exit(result, agent, " ".join(args), report=args[0] == "doctor")
            assert result.rc == 0 or after == before, "errored after appending to the log"
        except AssertionError as exc:
            problems.append("%s: %s" % (" ".join(args), str(exc).splitlines()[0][:300]))
    assert not problems, "\n".join(problems)
