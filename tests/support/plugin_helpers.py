"""Helpers for the plugin tests (issue 3): the reference's sample hook payloads, a
runner that calls the hooks exactly as hooks/hooks.json does (through the one-line
wrappers, with the hook environment Claude Code 2.1.197 sets), a fake `claude`
for headless resumes, and process helpers.

The payloads are the 2.1.197 shapes of shared/reference/claude-code-plugins.md,
section 6, copied verbatim; only `/home/user/proj` and the ids are replaced.
"""

import json
import os
import subprocess
import sys
import time

from conftest import ROOT, CLIResult, clean_env

HOOK_WRAPPERS = {"stop": "stop.sh", "pre-tool-use": "pre-tool-use.sh", "session-start": "session-start.sh"}
REFERENCE_PROJ = "/home/user/proj"

# --- section 6 of the reference, verbatim -------------------------------------------------
SAMPLES = {
    "SessionStart": r'''{"session_id":"dc361425-8a4c-4544-988e-f0e1e4df690b","transcript_path":"/home/user/.claude/projects/-home-user-proj/dc361425-8a4c-4544-988e-f0e1e4df690b.jsonl","cwd":"/home/user/proj","hook_event_name":"SessionStart","source":"startup"}''',
    "PreToolUse.Bash": r'''{"session_id":"bd5318c6-a909-4886-a139-5ff5afd59296","transcript_path":"/home/user/.claude/projects/-home-user-proj/bd5318c6-a909-4886-a139-5ff5afd59296.jsonl","cwd":"/home/user/proj","prompt_id":"c0b47761-7e8f-44ad-8d46-90413eade143","permission_mode":"default","effort":{"level":"high"},"hook_event_name":"PreToolUse","tool_name":"Bash","tool_input":{"command":"git status --short","description":"Show working tree status"},"tool_use_id":"toolu_01A"}''',
    "PreToolUse.Write": r'''{"session_id":"467eafb1-ceae-4485-9b45-50d66738b62a","transcript_path":"/home/user/.claude/projects/-home-user-proj/467eafb1-ceae-4485-9b45-50d66738b62a.jsonl","cwd":"/home/user/proj","prompt_id":"4364321f-276f-459f-99e5-5d5e453b5486","permission_mode":"default","effort":{"level":"high"},"hook_event_name":"PreToolUse","tool_name":"Write","tool_input":{"file_path":"/home/user/proj/notes.txt","content":"alpha\nbeta\n"},"tool_use_id":"toolu_01B"}''',
    "PreToolUse.Edit": r'''{"session_id":"467eafb1-ceae-4485-9b45-50d66738b62a","transcript_path":"/home/user/.claude/projects/-home-user-proj/467eafb1-ceae-4485-9b45-50d66738b62a.jsonl","cwd":"/home/user/proj","prompt_id":"4364321f-276f-459f-99e5-5d5e453b5486","permission_mode":"default","effort":{"level":"high"},"hook_event_name":"PreToolUse","tool_name":"Edit","tool_input":{"file_path":"/home/user/proj/notes.txt","old_string":"beta","new_string":"gamma","replace_all":false},"tool_use_id":"toolu_01C"}''',
    "PostToolUse.Bash": r'''{"session_id":"bd5318c6-a909-4886-a139-5ff5afd59296","transcript_path":"/home/user/.claude/projects/-home-user-proj/bd5318c6-a909-4886-a139-5ff5afd59296.jsonl","cwd":"/home/user/proj","prompt_id":"c0b47761-7e8f-44ad-8d46-90413eade143","permission_mode":"default","effort":{"level":"high"},"hook_event_name":"PostToolUse","tool_name":"Bash","tool_input":{"command":"echo hello","description":"echo"},"tool_response":{"stdout":"hello","stderr":"","interrupted":false,"isImage":false,"noOutputExpected":false},"tool_use_id":"toolu_01A","duration_ms":63}''',
    "Stop.first": r'''{"session_id":"bd5318c6-a909-4886-a139-5ff5afd59296","transcript_path":"/home/user/.claude/projects/-home-user-proj/bd5318c6-a909-4886-a139-5ff5afd59296.jsonl","cwd":"/home/user/proj","prompt_id":"c0b47761-7e8f-44ad-8d46-90413eade143","permission_mode":"default","effort":{"level":"high"},"hook_event_name":"Stop","stop_hook_active":false,"last_assistant_message":"All done.","background_tasks":[],"session_crons":[]}''',
    "Stop.again": r'''{"session_id":"bd5318c6-a909-4886-a139-5ff5afd59296","transcript_path":"/home/user/.claude/projects/-home-user-proj/bd5318c6-a909-4886-a139-5ff5afd59296.jsonl","cwd":"/home/user/proj","prompt_id":"c0b47761-7e8f-44ad-8d46-90413eade143","permission_mode":"default","effort":{"level":"high"},"hook_event_name":"Stop","stop_hook_active":true,"last_assistant_message":"All done.","background_tasks":[],"session_crons":[]}''',
    "SessionEnd": r'''{"session_id":"dc361425-8a4c-4544-988e-f0e1e4df690b","transcript_path":"/home/user/.claude/projects/-home-user-proj/dc361425-8a4c-4544-988e-f0e1e4df690b.jsonl","cwd":"/home/user/proj","prompt_id":"0e9dff0f-6925-473e-a23e-f06c9a25ceb3","hook_event_name":"SessionEnd","reason":"other"}''',
    "statusLine": r'''{"session_id":"c4d3cd84-4f1d-41ee-a152-cfedf00d3d19","transcript_path":"/home/user/.claude/projects/-home-user-proj/c4d3cd84-4f1d-41ee-a152-cfedf00d3d19.jsonl","cwd":"/home/user/proj","prompt_id":"7d00d259-4c25-4e14-8e08-e6d5dd65fc74","effort":{"level":"high"},"model":{"id":"claude-opus-4-8[1m]","display_name":"Opus 4.8 (1M context)"},"workspace":{"current_dir":"/home/user/proj","project_dir":"/home/user/proj","added_dirs":[]},"version":"2.1.197","output_style":{"name":"default"},"cost":{"total_cost_usd":0.002,"total_duration_ms":7668,"total_api_duration_ms":76,"total_lines_added":0,"total_lines_removed":0},"context_window":{"total_input_tokens":100,"total_output_tokens":20,"context_window_size":1000000,"current_usage":{"input_tokens":100,"output_tokens":20,"cache_creation_input_tokens":0,"cache_read_input_tokens":0},"used_percentage":0,"remaining_percentage":100},"exceeds_200k_tokens":false,"fast_mode":false,"thinking":{"enabled":true}}''',
}


def sample(name, cwd, session_id=None, **fields):
    """A reference payload with the project directory replaced by `cwd` (also inside
    transcript_path, workspace and file paths), optionally another session_id, and
    `fields` merged on top (tool_input replaces the whole dict)."""
    cwd = os.path.abspath(str(cwd))
    text = SAMPLES[name].replace(REFERENCE_PROJ, json.dumps(cwd)[1:-1])
    data = json.loads(text)
    if session_id is not None:
        old = data.get("session_id")
        data["session_id"] = session_id
        if old and isinstance(data.get("transcript_path"), str):
            data["transcript_path"] = data["transcript_path"].replace(old, session_id)
    data.update(fields)
    return data


def hook_env(cwd=None, session_id=None, extra=None):
    """The environment Claude Code gives a plugin hook (reference section 2 and the
    harness notes), on top of the test's clean environment."""
    env = clean_env()
    env["CLAUDE_PLUGIN_ROOT"] = ROOT
    env["CLAUDECODE"] = "1"
    env["CLAUDE_CODE_ENTRYPOINT"] = "sdk-cli"
    if cwd is not None:
        env["CLAUDE_PROJECT_DIR"] = str(cwd)
    if session_id is not None:
        env["CLAUDE_CODE_SESSION_ID"] = session_id
    if extra:
        for key, value in extra.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
    return env


class HookResult(CLIResult):
    def __init__(self, proc, duration):
        CLIResult.__init__(self, proc)
        self.duration = duration

    @property
    def silent(self):
        return self.out.strip() == ""


def run_hook(event, payload, cwd, session_id=None, env=None, raw=None, timeout=60):
    """Runs hooks/<event>.sh exactly as hooks.json does ("${CLAUDE_PLUGIN_ROOT}/hooks/x.sh"),
    with `payload` as JSON on stdin (or `raw` bytes as is)."""
    if raw is None:
        raw = json.dumps(payload).encode("utf-8")
    if env is None:
        sid = session_id if session_id is not None else (payload or {}).get("session_id") \
            if isinstance(payload, dict) else None
        env = hook_env(cwd, sid)
    script = os.path.join(env.get("CLAUDE_PLUGIN_ROOT", ROOT), "hooks", HOOK_WRAPPERS[event])
    start = time.time()
    proc = subprocess.run([script], cwd=str(cwd), env=env, input=raw, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout)
    return HookResult(proc, time.time() - start)


def log_lines(path):
    with open(os.path.join(str(path), "autotune.jsonl"), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


# --------------------------------------------------------------- fake `claude` ----

FAKE_CLAUDE = r'''#!/usr/bin/env python3
# A stand-in for `claude` (headless resume tests): records its argv, pid and cwd, then
# sleeps FAKE_CLAUDE_SLEEP seconds; with FAKE_CLAUDE_STOP_HOOK=1 it first runs the
# plugin's Stop hook the way the resumed session would when its turn ends.
import json, os, subprocess, sys, time
record = {"argv": sys.argv[1:], "pid": os.getpid(), "cwd": os.getcwd(), "time": time.time()}
with open(os.environ["FAKE_CLAUDE_LOG"], "a") as handle:
    handle.write(json.dumps(record) + "\n")
if os.environ.get("FAKE_CLAUDE_STOP_HOOK") == "1":
    sid = sys.argv[sys.argv.index("--session-id") + 1]
    payload = {"session_id": sid, "transcript_path": "/dev/null", "cwd": os.getcwd(),
               "hook_event_name": "Stop", "stop_hook_active": False,
               "last_assistant_message": "done", "background_tasks": [], "session_crons": []}
    hook = os.path.join(os.environ["CLAUDE_PLUGIN_ROOT"], "hooks", "stop.sh")
    out = subprocess.run([hook], input=json.dumps(payload).encode(), stdout=subprocess.PIPE).stdout
    with open(os.environ["FAKE_CLAUDE_LOG"] + ".hook", "a") as handle:
        handle.write(json.dumps({"pid": os.getpid(), "out": out.decode()}) + "\n")
time.sleep(float(os.environ.get("FAKE_CLAUDE_SLEEP", "0")))
'''


def install_fake_claude(directory):
    os.makedirs(str(directory), exist_ok=True)
    path = os.path.join(str(directory), "claude")
    with open(path, "w") as handle:
        handle.write(FAKE_CLAUDE)
    os.chmod(path, 0o755)
    return path


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def wait_for(predicate, timeout=10.0, interval=0.05):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value or time.time() > deadline:
            return value
        time.sleep(interval)


def proc_state(pid):
    """'R', 'S', 'Z'... for a live pid, None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            stat = handle.read()
        return stat[stat.rindex(")") + 2:].split()[0]
    except (OSError, ValueError, IndexError):
        return None


def set_child_subreaper(on):
    """prctl(PR_SET_CHILD_SUBREAPER): orphans of our children are re-parented to us,
    so the test can reap the detached processes a hook starts (like systemd would).
    Returns False where unsupported."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1 if on else 0, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def kill_and_reap(pid, timeout=5.0):
    """Ends one process we started (by its id) and reaps it if it is our child."""
    import signal
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return True
        except ChildProcessError:
            return proc_state(pid) in (None, "Z")
        time.sleep(0.02)
    return False


def python_minor():
    return sys.version_info[:2]


# --------------------------------------------------------------- batched hooks ----

_BATCH_DRIVER = r'''
import io, json, os, sys
root, event, path = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, root)
import autotune
with open(path) as handle:
    payloads = json.load(handle)
answers = []
real_in, real_out, real_err = sys.stdin, sys.stdout, sys.stderr
for payload in payloads:
    sys.stdin = io.TextIOWrapper(io.BytesIO(json.dumps(payload).encode("utf-8")))
    sys.stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    sys.stderr = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    try:
        rc = autotune.main(["hook", event])
    except SystemExit as exc:
        rc = exc.code
    sys.stdout.flush(); sys.stderr.flush()
    out = sys.stdout.buffer.getvalue().decode("utf-8", "replace")
    err = sys.stderr.buffer.getvalue().decode("utf-8", "replace")
    sys.stdin, sys.stdout, sys.stderr = real_in, real_out, real_err
    answers.append({"rc": rc, "out": out, "err": err})
print(json.dumps(answers))
'''


class BatchAnswer(object):
    def __init__(self, data):
        self.rc, self.out, self.err = data["rc"], data["out"], data["err"]
        self.json = json.loads(self.out) if self.out.strip().startswith("{") else None

    @property
    def silent(self):
        return self.out.strip() == ""

    def __repr__(self):
        return "BatchAnswer(rc=%r, out=%r, err=%r)" % (self.rc, self.out[-1500:], self.err[-500:])


def run_hook_batch(event, payloads, cwd, tmp_dir, env=None):
    """Runs many payloads through `autotune.main(["hook", event])` in ONE python process
    (the same entry point the wrapper execs; ~0.1 s per process start saved per case).
    The tests that prove the wrappers themselves run them one by one."""
    path = os.path.join(str(tmp_dir), "batch-%s-%d.json" % (event, len(payloads)))
    with open(path, "w") as handle:
        json.dump(payloads, handle)
    proc = subprocess.run([sys.executable, "-c", _BATCH_DRIVER, ROOT, event, path], cwd=str(cwd),
                          env=env or hook_env(cwd), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=120)
    if proc.returncode != 0:
        raise AssertionError("batch driver failed: %s" % proc.stderr.decode("utf-8", "replace")[-3000:])
    return [BatchAnswer(item) for item in json.loads(proc.stdout.decode("utf-8"))]


# ------------------------------------------------------------------ the real CLI ----

def require_claude():
    """The pinned real `claude` (installed into .tools/claude on first use). Skips with the
    reason when it cannot be had, except under `make plugin-check`
    (AUTOTUNE_REQUIRE_CLAUDE=1), where a missing CLI is a failure."""
    import pytest
    from support.claude_cli import ClaudeNotAvailable, find_claude
    try:
        return find_claude()
    except ClaudeNotAvailable as exc:
        message = "the real Claude Code CLI is not available (%s)" % exc
        if os.environ.get("AUTOTUNE_REQUIRE_CLAUDE") == "1":
            pytest.fail(message + "; make plugin-check requires it", pytrace=False)
        pytest.skip(message)


PLUGIN_PARTS = (".claude-plugin", "agents", "skills", "hooks", "bin", "autotune.py")


def copy_plugin(dest):
    """A copy of the plugin's files (what the marketplace would install)."""
    import shutil
    os.makedirs(str(dest), exist_ok=True)
    for part in PLUGIN_PARTS:
        src = os.path.join(ROOT, part)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(str(dest), part), symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, os.path.join(str(dest), part))
    return str(dest)
