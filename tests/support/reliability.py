"""Helpers for the reliability tests (concurrency, crash safety, hostile input, big
output): a fresh fold of a log to compare the state cache with, checks that a call
ended cleanly, and a byte snapshot of the session files."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import autotune  # noqa: E402

SESSION_FILES = ("autotune.jsonl", ".autotune.state", "autotune.config.json")
AUTOTUNE = os.path.join(ROOT, "autotune.py")
# `python3 -S`: autotune imports nothing outside the standard library, and the .pth
# files of a machine's site-packages can cost more than autotune itself at every start
# (65 ms here); the stress tests start hundreds of processes.
FAST = [sys.executable, "-S"]


def run_fast(args, cwd, env=None, input=None, timeout=120):
    """conftest.run_cli, with `python3 -S` (see FAST)."""
    from conftest import CLIResult, clean_env
    proc = subprocess.run(FAST + [AUTOTUNE] + list(args), cwd=str(cwd), env=env or clean_env(),
                          input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout)
    return CLIResult(proc)


def fresh_fold(log_bytes):
    """(state dict, loaded) of a log folded from scratch, in a scratch directory."""
    scratch = tempfile.mkdtemp(prefix="fold-")
    try:
        with open(os.path.join(scratch, autotune.LOG_FILE), "wb") as handle:
            handle.write(log_bytes)
        session = autotune.Loop(scratch, None, autotune.Settings())
        loaded = autotune.load_state(session)
        return loaded.state.to_dict(), loaded
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def read_bytes(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except (FileNotFoundError, IsADirectoryError):
        return None


def session_bytes(path):
    """The bytes of the session files (None when absent), to prove nothing changed."""
    return {name: read_bytes(os.path.join(str(path), name)) for name in SESSION_FILES}


def assert_state_matches_log(path):
    """The state cache on disk equals a fresh fold of the log on disk."""
    log = read_bytes(os.path.join(str(path), autotune.LOG_FILE))
    with open(os.path.join(str(path), autotune.STATE_FILE), "rb") as handle:
        cached = json.loads(handle.read().decode("utf-8"))
    fresh, _ = fresh_fold(log)
    differing = sorted(k for k in fresh if fresh[k] != cached.get(k))
    assert not differing, "state cache disagrees with the log on %s:\n%s" % (
        differing, "\n".join("  %s: cache %r, fold %r" % (k, cached.get(k), fresh[k]) for k in differing))
    return fresh


def expected_confidence(path):
    """The confidence a full recomputation gives for the current segment."""
    log = read_bytes(os.path.join(str(path), autotune.LOG_FILE))
    _, loaded = fresh_fold(log)
    return autotune.confidence(sorted(loaded.points), loaded.state)


def complete_lines(log_bytes):
    """The parsed complete lines and the torn tail (bytes after the last newline)."""
    end = log_bytes.rfind(b"\n") + 1
    lines = [json.loads(raw.decode("utf-8")) for raw in log_bytes[:end].splitlines() if raw.strip()]
    return lines, log_bytes[end:]


def assert_clean_exit(result, agent_facing, what="", report=False):
    """A call ended with a correct result or a clear error: never a traceback or an
    internal error; an error is one JSON object (agent-facing) or one stderr line.
    `report`: a command (doctor) whose non-zero exit may be a report on stdout."""
    label = "%s -> %r" % (what, result)
    assert "Traceback" not in result.err and "Traceback" not in result.out, label
    assert '"error": "internal"' not in result.out, label
    assert "internal error" not in result.err, label
    assert result.rc in (0, 1, 2), label
    if result.rc == 0:
        return
    if result.json is not None:
        if report and "error" not in result.json:
            return  # e.g. doctor --json: a report of problems, exit 1
        assert result.json.get("error"), label
        message = result.json.get("message")
        assert isinstance(message, str) and message.strip() and "\n" not in message, label
        assert result.out.strip().count("\n") == 0, label
    else:
        assert not agent_facing, "an agent-facing command failed without a JSON error: " + label
        if report and not result.err.strip():
            assert result.out.strip(), label
        else:
            lines = [line for line in result.err.split("\n") if line.strip()]
            assert len(lines) == 1 and lines[0].startswith("autotune"), label
