"""The plugin's hooks (issue 3, point 4), driven as Claude Code drives them: the
one-line wrappers of hooks/hooks.json, the reference's 2.1.197 sample payloads on
stdin, the hook environment (CLAUDE_PLUGIN_ROOT, CLAUDE_CODE_SESSION_ID...).

Every hook exits 0 and is silent with no session or malformed stdin; Stop is tested
in each autoResume mode (with a fake `claude` on PATH for headless), and the three
well-known stop-hook failures each have a test named after them; PreToolUse is a
table of allowed and denied commands and edits; SessionStart briefs a new session.
"""

import json
import os
import re
import shutil
import uuid

import pytest

from conftest import Project, clean_env, make_project
from support.plugin_helpers import (install_fake_claude, kill_and_reap, log_lines, proc_state,
                                    read_jsonl, run_hook, run_hook_batch, sample,
                                    set_child_subreaper, wait_for)

OWNER = "0b5e55ed-0000-4000-8000-00000000000a"
OTHER = "0b5e55ed-0000-4000-8000-00000000000b"
EVENTS = ("stop", "pre-tool-use", "session-start")


def build_loop(path, config=None, owner=OWNER, runs=1, name="speed up work()", start=100, step=10):
    """A session initialized (and its experiments logged) by the Claude session `owner`."""
    project = make_project(path, init=False, config=config)
    env = clean_env(CLAUDE_CODE_SESSION_ID=owner) if owner else clean_env()
    project.ok("init", "--name", name, "--metric", "time_ms", "--unit", "ms", "--direction", "lower",
               env=env)
    for i in range(runs):
        log_run(project, start - step * i, "step %d" % i, env=env)
    return project


_TEMPLATES = {}


@pytest.fixture(scope="module", autouse=True)
def _templates(tmp_path_factory):
    _TEMPLATES.clear()
    _TEMPLATES["dir"] = tmp_path_factory.mktemp("templates")
    yield
    _TEMPLATES.clear()


def make_loop(path, config=None, owner=OWNER, runs=1):
    """Like build_loop, but copies a loop built once per (owner, runs): a copied repository
    is an independent session (autotune keeps no absolute path in its files; its private
    cache is keyed by the directory). `config` is written afterwards: the settings these
    tests vary (autoResume, resume.*, budgets) are read on every call."""
    key = (owner, runs)
    if key not in _TEMPLATES:
        _TEMPLATES[key] = build_loop(_TEMPLATES["dir"] / ("%s-%d" % (owner, runs)), owner=owner, runs=runs).path
    shutil.copytree(str(_TEMPLATES[key]), str(path), symlinks=True)
    project = Project(path)
    if config is not None:
        config_file(project, config)
    return project


def log_run(project, delay, description, env=None, status="auto", asi=None):
    project.set_delay(delay)
    project.ok("run", env=env or clean_env())
    asi = asi or {"hypothesis": "hypothesis of %s" % description, "observation": "observed %s" % delay}
    return project.ok("log", "--status", status, "--description", description, "--asi", json.dumps(asi),
                      env=env or clean_env())


def config_file(project, config):
    project.write("autotune.config.json", json.dumps(config))


def hook(event, payload, cwd, **kwargs):
    result = run_hook(event, payload, cwd, **kwargs)
    assert result.rc == 0, result
    assert "Traceback" not in result.err, result
    if not result.silent:
        assert result.json is not None, "a hook answer must be one JSON object: %r" % result
    return result


def stop(project, session_id, again=False, **kwargs):
    payload = sample("Stop.again" if again else "Stop.first", project.path, session_id=session_id)
    return hook("stop", payload, project.path, **kwargs)


def blocks(project):
    return [e for e in log_lines(project.path) if e.get("type") == "hook" and e.get("action") == "block"]


def log_bytes(project):
    with open(os.path.join(str(project.path), "autotune.jsonl"), "rb") as handle:
        return handle.read()


# ------------------------------------------------------------------- silence ----

MALFORMED = {
    "garbage": b"this is not json {{{",
    "empty": b"",
    "json-array": b'[{"session_id": "x", "cwd": "/tmp"}]',
    "json-null": b"null",
    "json-string": b'"Stop"',
    "deep-nesting": b"[" * 100000 + b"]" * 100000,
    "huge-garbage": b"x" * (6 << 20),
}

# JSON objects with odd fields: the hook falls back to its working directory (Claude Code
# runs hooks in the session's cwd), so it may answer, but never crashes or writes.
ODD = {
    "not-utf8": b'{"cwd": "\xff\xfe\xfd", "session_id": "other"}',
    "wrong-types": json.dumps({"cwd": 5, "session_id": [], "tool_name": {}, "tool_input": "rm -rf /",
                               "stop_hook_active": "yes", "source": None}).encode(),
    "missing-cwd-dir": json.dumps({"cwd": "/nonexistent/dir", "session_id": OTHER,
                                   "tool_name": "Bash", "tool_input": {"command": "git status"}}).encode(),
    "wrong-tool-input": json.dumps({"session_id": OTHER, "tool_name": "Edit",
                                    "tool_input": {"file_path": ["autotune.sh"]}}).encode(),
    "empty-object": b"{}",
    "huge-valid": json.dumps({"hook_event_name": "Stop", "session_id": OTHER,
                              "last_assistant_message": "y" * (6 << 20)}).encode(),
}


@pytest.mark.slow
@pytest.mark.parametrize("event", EVENTS)
def test_hooks_are_silent_without_a_session(tmp_path, event):
    repo = make_project(tmp_path / "repo", init=False)
    plain = tmp_path / "not-a-repo"
    plain.mkdir()
    payloads = {
        "stop": [sample("Stop.first", repo.path), sample("Stop.again", repo.path)],
        "pre-tool-use": [sample("PreToolUse.Bash", repo.path, tool_input={"command": "autotune run; evil"}),
                         sample("PreToolUse.Write", repo.path,
                                tool_input={"file_path": str(repo.path / "autotune.sh"), "content": "x"}),
                         sample("PreToolUse.Edit", repo.path)],
        "session-start": [sample("SessionStart", repo.path, source=s)
                          for s in ("startup", "resume", "clear", "compact")],
    }[event]
    for cwd in (repo.path, plain):
        before = sorted(os.listdir(str(cwd)))
        for payload in payloads:
            payload = dict(payload, cwd=str(cwd))
            result = hook(event, payload, cwd)
            assert result.silent and result.err == "", (payload, result)
        assert sorted(os.listdir(str(cwd))) == before, "a silent hook must not create files"


@pytest.fixture(scope="module")
def active_loop(tmp_path_factory):
    """One active session (autoResume continue, so a Stop could answer) for read-only tests."""
    return make_loop(tmp_path_factory.mktemp("active") / "repo", config={"autoResume": "continue"})


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(MALFORMED))
@pytest.mark.parametrize("event", EVENTS)
def test_hooks_survive_malformed_stdin(active_loop, event, kind):
    before = log_bytes(active_loop)
    result = run_hook(event, None, active_loop.path, session_id=OWNER, raw=MALFORMED[kind])
    assert result.rc == 0, result
    assert "Traceback" not in result.err
    assert result.silent, result
    assert log_bytes(active_loop) == before


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(ODD))
@pytest.mark.parametrize("event", EVENTS)
def test_hooks_survive_odd_payloads(active_loop, event, kind):
    before = log_bytes(active_loop)
    result = run_hook(event, None, active_loop.path, session_id=OWNER, raw=ODD[kind])
    assert result.rc == 0, result
    assert result.err == "", result
    if not result.silent:
        answer = result.json
        assert answer is not None and "decision" not in answer, result
        if event == "session-start":
            assert answer["hookSpecificOutput"]["hookEventName"] == "SessionStart"
    assert log_bytes(active_loop) == before


@pytest.mark.slow
def test_a_broken_config_means_defaults_and_a_warning_never_a_silent_guard(tmp_path):
    project = make_loop(tmp_path / "repo", config={"autoResume": "continue"})
    config_file(project, {"autoResume": "sometimes"})
    answer = stop(project, OWNER)  # defaults: `prompt`, never a block
    assert answer.rc == 0 and "decision" not in (answer.json or {})
    assert "autoResume" in answer.json["systemMessage"] and "doctor" in answer.json["systemMessage"]
    project.write("autotune.config.json", "{not json")
    context = hook("session-start", sample("SessionStart", project.path, session_id=OWNER), project.path)
    assert "invalid JSON" in context.json["hookSpecificOutput"]["additionalContext"]
    assert hook("pre-tool-use", sample("PreToolUse.Bash", project.path, session_id=OWNER), project.path).silent
    denied = hook("pre-tool-use", edit_payload(project, "Write", str(project.path / "autotune.jsonl")),
                  project.path)
    assert decision(denied) == "deny"  # the guard stays on
    os.unlink(str(project.path / "autotune.config.json"))
    project.write("autotune.jsonl", "\x00garbage\n{\"type\": 1}\n")
    os.unlink(str(project.path / ".autotune.state"))
    for event, name in (("stop", "Stop.first"), ("session-start", "SessionStart")):
        assert hook(event, sample(name, project.path, session_id=OWNER), project.path).silent


def test_hooks_ignore_events_they_are_not_for(active_loop):
    """A payload of another event (SessionEnd, PostToolUse) fed to our hooks changes nothing."""
    before = log_bytes(active_loop)
    for name in ("SessionEnd", "PostToolUse.Bash"):
        assert hook("pre-tool-use", sample(name, active_loop.path, session_id=OWNER), active_loop.path).silent
    assert log_bytes(active_loop) == before


# ---------------------------------------------------------- Stop: prompt, off ----

def test_stop_prompt_mode_is_the_default_and_reminds_the_owner(tmp_path):
    project = make_loop(tmp_path / "repo")
    answer = stop(project, OWNER).json
    assert set(answer) == {"systemMessage"}, answer
    assert "autotune" in answer["systemMessage"] and str(project.path) in answer["systemMessage"]
    assert stop(project, OTHER).silent
    assert blocks(project) == []


@pytest.mark.slow
def test_stop_prompt_mode_without_a_recorded_owner_reminds_any_session(tmp_path):
    project = make_loop(tmp_path / "repo", owner=None)
    for sid in (OWNER, OTHER):
        answer = stop(project, sid).json
        assert "systemMessage" in answer and "decision" not in answer


def test_stop_off_mode_is_silent(tmp_path):
    project = make_loop(tmp_path / "repo", config={"autoResume": "off"})
    before = log_bytes(project)
    assert stop(project, OWNER).silent and stop(project, OWNER, again=True).silent
    assert log_bytes(project) == before


# ---------------------------------------------------------------- Stop: continue ----

def test_stop_continue_blocks_the_owning_session_with_the_resume_prompt(tmp_path):
    project = make_loop(tmp_path / "repo", config={"autoResume": "continue"})
    answer = stop(project, OWNER).json
    assert answer["decision"] == "block", answer
    reason = answer["reason"]
    assert str(project.path) in reason
    for needle in ("autotune.md", "autotune explain", "autotune run", "autotune log"):
        assert needle in reason, (needle, reason)
    (entry,) = blocks(project)
    assert entry["session_id"] == OWNER and entry.get("event") == "stop"


@pytest.mark.slow
def test_stop_hook_never_hijacks_another_session(tmp_path):
    """Failure 1 of stop-hook loops: blocking a session that does not run the loop."""
    project = make_loop(tmp_path / "repo", config={"autoResume": "continue"})
    before = log_bytes(project)
    for again in (False, True):
        assert stop(project, OTHER, again=again).silent
    no_id = sample("Stop.first", project.path)
    del no_id["session_id"]
    assert hook("stop", no_id, project.path).silent
    assert hook("stop", dict(no_id, session_id=None), project.path).silent
    assert log_bytes(project) == before, "a refused session must leave no trace in the log"
    # a loop started outside Claude (no CLAUDE_CODE_SESSION_ID) has no owner to keep going
    orphan = make_loop(tmp_path / "orphan", config={"autoResume": "continue"}, owner=None)
    assert stop(orphan, OWNER).silent and stop(orphan, OTHER).silent


@pytest.mark.slow
def test_stop_continue_follows_the_latest_writer(tmp_path):
    """`log` from another Claude session makes it the owner; the first one is let go."""
    project = make_loop(tmp_path / "repo", config={"autoResume": "continue"})
    log_run(project, 80, "by the other session", env=clean_env(CLAUDE_CODE_SESSION_ID=OTHER))
    assert stop(project, OWNER).silent
    assert stop(project, OTHER).json["decision"] == "block"
    # a log with no session id (a person in a terminal) does not take ownership away
    log_run(project, 70, "by a person")
    assert stop(project, OTHER).json["decision"] == "block"


@pytest.mark.slow
def test_stop_hook_respects_stop_hook_active(tmp_path):
    """Failure 2: ignoring stop_hook_active. Consecutive blocks within one turn are capped
    (resume.maxConsecutiveBlocks, default 6: below Claude Code's own cap of 8, so the hook,
    not the client, ends the turn); a new turn may block again."""
    project = make_loop(tmp_path / "repo", config={"autoResume": "continue"})
    turn = [stop(project, OWNER)]
    while is_block(turn[-1]) and len(turn) < 20:
        turn.append(stop(project, OWNER, again=True))
    assert len(turn) == 7, [r.out for r in turn]  # 6 blocks, then the stop goes through
    assert all(r.json["decision"] == "block" for r in turn[:6])
    # its last message says once why it stopped resuming
    assert "reached its cap of 6 automatic resumes in a row" in turn[6].json["systemMessage"]
    assert [e["streak"] for e in blocks(project)] == [1, 2, 3, 4, 5, 6]
    assert stop(project, OWNER, again=True).silent, "stays quiet for the rest of the turn"
    assert stop(project, OWNER).json["decision"] == "block", "a new turn (stop_hook_active false)"
    config_file(project, {"autoResume": "continue", "resume": {"maxConsecutiveBlocks": 2}})
    assert stop(project, OWNER).json["decision"] == "block"
    assert stop(project, OWNER, again=True).json["decision"] == "block"
    capped = stop(project, OWNER, again=True)
    assert not is_block(capped) and "cap of 2" in capped.json["systemMessage"]
    assert stop(project, OWNER, again=True).silent


def is_block(result):
    return result.json is not None and result.json.get("decision") == "block"


@pytest.mark.slow
def test_stop_hook_does_not_loop_forever(tmp_path):
    """Failure 3: looping forever. Simulates the client over many turns: every turn the
    model stops, the hook blocks while it may, the model stops again. resume.maxBlocks
    bounds the total, whatever the turns; afterwards every stop goes through."""
    project = make_loop(tmp_path / "repo", config={
        "autoResume": "continue", "resume": {"maxBlocks": 5, "maxConsecutiveBlocks": 2}})
    answers = []
    for _ in range(12):  # turns
        result = stop(project, OWNER)
        answers.append(result)
        while is_block(result) and len(answers) < 100:
            result = stop(project, OWNER, again=True)
            answers.append(result)
    blocked = [r for r in answers if is_block(r)]
    assert len(blocked) == 5 and len(blocks(project)) == 5
    said = [r.json["systemMessage"] for r in answers if not is_block(r) and not r.silent]
    # each cap is said once, in the last message: two turns end on the consecutive cap,
    # then the total cap is said once and every later stop goes through silently
    assert len(said) == 3 and "5 automatic resumes in this segment" in said[-1], said
    assert all(r.silent for r in answers[-9:])
    # progress (a logged result) resets the streak but never the total
    log_run(project, 50, "more progress")
    assert stop(project, OWNER).silent


@pytest.mark.slow
@pytest.mark.parametrize("how", ["paused", "completed", "no_experiments", "budget_target"])
def test_stop_continue_is_silent_when_the_loop_is_not_running(tmp_path, how):
    config = {"autoResume": "continue"}
    if how == "completed":
        config["maxIterations"] = 2
    if how == "budget_target":
        config["budget"] = {"target": 95}
    project = make_loop(tmp_path / "repo", config=config, runs=0 if how == "no_experiments" else 1)
    if how == "paused":
        project.ok("stop", "--json", "--reason", "lunch")
    elif how in ("completed", "budget_target"):
        result = log_run(project, 90, "second", env=clean_env(CLAUDE_CODE_SESSION_ID=OWNER))
        assert result["active"] is False, result
    before = log_bytes(project)
    for sid in (OWNER, OTHER):
        for again in (False, True):
            assert stop(project, sid, again=again).silent, (how, sid, again)
    assert log_bytes(project) == before
    if how == "paused":  # and resuming it makes the owner keep going again
        project.ok("resume", "--json")
        assert stop(project, OWNER).json["decision"] == "block"


# ---------------------------------------------------------------- Stop: headless ----

@pytest.fixture
def headless(tmp_path):
    """A fake `claude` on PATH; detached processes the hook starts are re-parented to this
    test process (child subreaper), so the test can end and reap them by pid."""
    if not set_child_subreaper(True):
        pytest.skip("prctl(PR_SET_CHILD_SUBREAPER) is not available here")
    fakebin = tmp_path / "fakebin"
    install_fake_claude(fakebin)
    record = str(tmp_path / "claude-calls.jsonl")

    class Headless(object):
        log = record

        def env(self, session_id, **extra):
            from support.plugin_helpers import hook_env
            values = {"PATH": str(fakebin) + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
                      "FAKE_CLAUDE_LOG": record, "FAKE_CLAUDE_SLEEP": "0"}
            values.update(extra)
            return hook_env(None, session_id, values)

        def calls(self):
            return read_jsonl(record)

        def wait_calls(self, count, timeout=10.0):
            return wait_for(lambda: len(self.calls()) >= count, timeout) and self.calls()

    helper = Headless()
    yield helper
    for call in helper.calls():
        kill_and_reap(call["pid"])
    set_child_subreaper(False)


def headless_stop(project, helper, session_id, again=False, **extra):
    payload = sample("Stop.again" if again else "Stop.first", project.path, session_id=session_id)
    return hook("stop", payload, project.path, env=helper.env(session_id, **extra))


def resumes(project):
    return [e for e in log_lines(project.path) if e.get("type") == "resume"]


@pytest.mark.slow
def test_stop_headless_launches_once_and_never_while_it_lives(tmp_path, headless):
    project = make_loop(tmp_path / "repo", config={"autoResume": "headless",
                                                   "resume": {"minMinutesBetween": 0}})
    first = headless_stop(project, headless, OWNER, FAKE_CLAUDE_SLEEP="60")
    assert "systemMessage" in first.json and "decision" not in first.json, first
    (call,) = headless.wait_calls(1)
    assert proc_state(call["pid"]) not in (None, "Z"), "the session runs detached, after the hook returned"
    argv = call["argv"]
    assert argv[0] == "-p" and argv[2:5] == ["--agent", "autotune", "--session-id"] and len(argv) == 6, argv
    new_id = argv[5]
    assert str(uuid.UUID(new_id)) == new_id
    assert "autotune" in argv[1] and str(project.path) in argv[1]
    assert os.path.realpath(call["cwd"]) == os.path.realpath(str(project.path))
    (entry,) = resumes(project)
    assert entry["via"] == "headless" and entry["pid"] == call["pid"] and entry["session_id"] == new_id
    assert project.state()["session_id"] == new_id, "the resumed session owns the loop"
    # while it lives: the first session takes the loop back (it logs a result) and stops:
    # no second headless session is started next to the live one
    log_run(project, 90, "back in the first session", env=clean_env(CLAUDE_CODE_SESSION_ID=OWNER))
    for sid in (OWNER, OTHER):
        headless_stop(project, headless, sid)
    assert len(headless.calls()) == 1 and len(resumes(project)) == 1
    # once it is gone, the owner's next stop resumes again
    assert kill_and_reap(call["pid"])
    headless_stop(project, headless, OWNER)
    calls = headless.wait_calls(2)
    assert calls and len(calls) == 2 and len(resumes(project)) == 2


def test_stop_headless_never_launches_for_another_session(tmp_path, headless):
    project = make_loop(tmp_path / "repo", config={"autoResume": "headless"})
    for sid in (OTHER, None):
        assert headless_stop(project, headless, sid).silent
    assert headless.calls() == [] and resumes(project) == []


def rewrite_log(project, change):
    """Edits autotune.jsonl's entries (the record the fold reads) and drops the state cache."""
    path = os.path.join(str(project.path), "autotune.jsonl")
    entries = [change(e) for e in log_lines(project.path)]
    with open(path, "w") as handle:
        handle.write("".join(json.dumps(e) + "\n" for e in entries))
    state = os.path.join(str(project.path), ".autotune.state")
    if os.path.exists(state):
        os.unlink(state)


def backdate_resumes(project, minutes):
    import calendar
    import time

    def change(entry):
        if entry.get("type") == "resume":
            stamp = calendar.timegm(time.strptime(entry["timestamp"], "%Y-%m-%dT%H:%M:%SZ")) - minutes * 60
            entry["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))
        return entry
    rewrite_log(project, change)


@pytest.mark.slow
def test_stop_headless_keeps_its_spacing(tmp_path, headless):
    project = make_loop(tmp_path / "repo", config={"autoResume": "headless"})  # 5 minutes
    headless_stop(project, headless, OWNER)
    (call,) = headless.wait_calls(1)
    assert kill_and_reap(call["pid"])
    owner = call["argv"][5]
    headless_stop(project, headless, owner)
    assert len(resumes(project)) == 1, "a second resume within 5 minutes"
    backdate_resumes(project, 4)
    headless_stop(project, headless, owner)
    assert len(resumes(project)) == 1, "a second resume 4 minutes later"
    backdate_resumes(project, 1.2)
    headless_stop(project, headless, owner)
    assert len(resumes(project)) == 2, "no resume 5.2 minutes later"
    assert len(headless.wait_calls(2)) == 2
    # the spacing is configurable: resume.minMinutesBetween
    config_file(project, {"autoResume": "headless", "resume": {"minMinutesBetween": 30}})
    calls = headless.calls()
    assert kill_and_reap(calls[-1]["pid"])
    backdate_resumes(project, 20)
    headless_stop(project, headless, calls[-1]["argv"][5])
    assert len(resumes(project)) == 2


@pytest.mark.slow
def test_stop_headless_stops_at_20_resumes(tmp_path, headless):
    """19 earlier resumes recorded in the log (as the hook records them), then the 20th is
    launched and the 21st refused with a message; a configured cap works the same way."""
    project = make_loop(tmp_path / "repo", config={"autoResume": "headless"})
    old = {"type": "resume", "via": "headless", "pid": 0, "session_id": OWNER,
           "timestamp": "2026-01-01T00:00:00Z"}
    rewrite_log(project, lambda e: e)
    with open(os.path.join(str(project.path), "autotune.jsonl"), "a") as handle:
        handle.write("".join(json.dumps(dict(old, pid=10 + i)) + "\n" for i in range(19)))
    headless_stop(project, headless, OWNER)
    (call,) = headless.wait_calls(1)
    assert len(resumes(project)) == 20
    assert kill_and_reap(call["pid"])
    last = headless_stop(project, headless, call["argv"][5])
    assert "systemMessage" in last.json and "20" in last.json["systemMessage"], last
    assert len(headless.calls()) == 1 and len(resumes(project)) == 20

    small = make_loop(tmp_path / "small", config={"autoResume": "headless",
                                                  "resume": {"minMinutesBetween": 0, "maxResumes": 2}})
    owner = OWNER
    for n in (2, 3):
        headless_stop(small, headless, owner)
        calls = headless.wait_calls(n)
        assert calls and len(calls) == n
        assert kill_and_reap(calls[-1]["pid"])
        owner = calls[-1]["argv"][5]
    refused = headless_stop(small, headless, owner)
    assert "systemMessage" in refused.json and len(resumes(small)) == 2 and len(headless.calls()) == 3


def test_stop_headless_without_claude_on_path_says_so(tmp_path):
    project = make_loop(tmp_path / "repo", config={"autoResume": "headless"})
    env_path = "/nonexistent-bin"
    payload = sample("Stop.first", project.path, session_id=OWNER)
    from support.plugin_helpers import hook_env
    env = hook_env(project.path, OWNER, {"PATH": env_path + os.pathsep + "/usr/bin:/bin"})
    if any(os.path.exists(os.path.join(d, "claude")) for d in ("/usr/bin", "/bin")):
        pytest.skip("a real claude is installed in /usr/bin or /bin")
    answer = hook("stop", payload, project.path, env=env).json
    assert "claude" in answer["systemMessage"] and resumes(project) == []


def test_stop_headless_a_finished_session_left_as_a_zombie_does_not_block(tmp_path, headless):
    """Where PID 1 does not reap orphans (containers without an init), the finished headless
    session stays a zombie. `kill(pid, 0)` succeeds on a zombie, so it must not count as live."""
    project = make_loop(tmp_path / "repo", config={"autoResume": "headless",
                                                   "resume": {"minMinutesBetween": 0}})
    headless_stop(project, headless, OWNER)
    (call,) = headless.wait_calls(1)
    assert wait_for(lambda: proc_state(call["pid"]) == "Z", 10), "the fake should have exited"
    headless_stop(project, headless, call["argv"][5])
    assert len(resumes(project)) == 2, "a zombie blocked the next headless resume"
    assert len(headless.wait_calls(2)) == 2


def test_stop_headless_the_resumed_session_continues_the_chain(tmp_path, headless):
    """The resumed session's own Stop hook runs while that session (the pid the hook last
    started) is still alive: it is the caller, not another live session, so the chain must
    go on (spacing and cap still apply): 3 resumes with maxResumes 3."""
    project = make_loop(tmp_path / "repo", config={"autoResume": "headless",
                                                   "resume": {"minMinutesBetween": 0, "maxResumes": 3}})
    headless_stop(project, headless, OWNER, FAKE_CLAUDE_STOP_HOOK="1")
    # quiet once every started session has run its Stop hook (each resume line is written
    # by the hook that starts the session, before that hook returns)
    wait_for(lambda: len(read_jsonl(headless.log + ".hook")) >= max(1, len(resumes(project))), timeout=20)
    calls = headless.calls()
    hooks = read_jsonl(headless.log + ".hook")
    assert len(calls) == 3, "chain stopped after %d resume(s); the resumed session's Stop said %r" % (
        len(calls), [h["out"] for h in hooks])


# ------------------------------------------------------------------ PreToolUse ----

@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """An active segment with a benchmark, checks and holdout script."""
    path = tmp_path_factory.mktemp("guarded") / "repo"
    project = make_project(path, init=False)
    project.write("autotune.checks.sh", "#!/bin/sh\nexit 0\n", mode=0o755)
    project.write("notes.txt", "alpha\n")
    project.write("sub/autotune.sh", "echo another project\n")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "checks")
    project.ok("init", "--name", "guarded", "--metric", "time_ms", "--direction", "lower",
               env=clean_env(CLAUDE_CODE_SESSION_ID=OWNER))
    # the benchmark is fixed by the baseline (before it, setting up may still edit it)
    project.ok("run", env=clean_env(CLAUDE_CODE_SESSION_ID=OWNER))
    project.ok("log", "--status", "keep", "--description", "baseline",
               env=clean_env(CLAUDE_CODE_SESSION_ID=OWNER))
    return project


def pre_bash(project, command):
    payload = sample("PreToolUse.Bash", project.path, session_id=OWNER,
                     tool_input={"command": command, "description": "test"})
    return hook("pre-tool-use", payload, project.path)


def decision(result):
    if result.silent:
        return "allow"
    out = result.json["hookSpecificOutput"]
    assert out["hookEventName"] == "PreToolUse"
    assert out["permissionDecision"] == "deny"
    assert isinstance(out.get("permissionDecisionReason"), str) and len(out["permissionDecisionReason"]) > 20
    return "deny"


ALLOWED_RUNS = [
    "autotune run",
    "autotune run --timeout 60",
    "autotune run --repeat 3 --timeout 60",
    "autotune run --checks-timeout 30",
    "autotune run --command ./autotune.sh",
    "autotune run --command=./autotune.sh",
    "autotune run --command './autotune.sh'",
    "autotune  run",
    "bin/autotune run",
    "./bin/autotune run",
    "{root}/bin/autotune run",
    "python3 autotune.py run",
    "python3 {root}/autotune.py run --repeat 2",
    "run-experiment.sh",
    "run-experiment.sh --timeout 30",
    "{root}/bin/run-experiment.sh",
]

DENIED_RUNS = [
    # --command that is not exactly the benchmark
    "autotune run --command 'evil; ./autotune.sh'",
    "autotune run --command='evil; ./autotune.sh'",
    "autotune run --command './autotune.sh && x'",
    "autotune run --command './autotune.sh; x'",
    "autotune run --command './autotune.sh | tee out'",
    "autotune run --command \"bash -c './autotune.sh'\"",
    "autotune run --command '$(./autotune.sh)'",
    "autotune run --command '`./autotune.sh`'",
    "autotune run --command ./other.sh",
    "autotune run --command 'echo METRIC time_ms=1'",
    "autotune run --command './autotune.sh extra'",
    "autotune run --command=./evil.sh",
    "run-experiment.sh --command ./evil.sh",
    "python3 autotune.py run --command=./evil.sh",
    "bin/autotune run --command ./autotune.sh --command ./evil.sh",
    # run not on its own
    "evil; autotune run",
    "autotune run; evil",
    "autotune run && git commit -am x",
    "autotune run || true",
    "autotune run | tee out.txt",
    "autotune run > out.json",
    "autotune run &",
    "bash -c 'autotune run'",
    "sh -c \"autotune run\"",
    "$(autotune run)",
    "echo $(autotune run)",
    "`autotune run`",
    "echo `autotune run`",
    "timeout 5 autotune run",
    "env X=1 autotune run",
    "xargs autotune run < /dev/null",
    "(autotune run)",
    "autotune run\nevil",
    "cd . && autotune run",
    "run-experiment.sh; evil",
    "python3 -c \"import os; os.system('autotune run')\"",
]

BENCH_WRITES = [
    "echo 'echo METRIC time_ms=1' > autotune.sh",
    "cat > ./autotune.sh <<'EOF'\necho METRIC time_ms=1\nEOF",
    "printf x >> autotune.sh",
    "sed -i 's/time_ms/x/' autotune.sh",
    "sed --in-place 's/a/b/' autotune.sh",
    "echo x | tee autotune.sh",
    "cp /tmp/other.sh autotune.sh",
    "mv other.sh autotune.sh",
    "truncate -s 0 autotune.sh",
    "rm autotune.sh",
    "chmod -x autotune.sh",
    "ln -sf /tmp/x autotune.sh",
    "python3 -c \"open('autotune.sh', 'w').write('x')\"",
    "perl -pi -e 's/a/b/' autotune.sh",
    "dd if=/dev/null of=autotune.sh",
    "echo exit 0 > autotune.checks.sh",
    "sed -i 's/exit 1/exit 0/' autotune.checks.sh",
    "echo 'echo METRIC holdout=1' > autotune.holdout.sh",
    "cp /tmp/other.sh autotune.holdout.sh",
    "git checkout HEAD~1 -- autotune.sh",
    "git restore --source=HEAD~1 autotune.sh",
]

ALLOWED_OTHER = [
    "git status --short",
    "ls -la",
    "cat autotune.sh",
    "./autotune.sh",
    "bash autotune.sh",
    "sed -n 1,5p autotune.sh",
    "grep METRIC autotune.sh",
    "git diff autotune.sh",
    "tail -n 15 autotune.jsonl",
    "autotune explain",
    "autotune explain --json",
    "autotune status",
    "autotune log --status auto --description 'cache the parsed config' --asi '{\"hypothesis\": \"x\"}'",
    "autotune log --status keep --description baseline",
    "echo x > work.py",
    "echo x > sub/notes.sh",
    "python3 -m json.tool autotune.config.json",
    "autotune run --help",
    # descriptions and notes that merely mention a run or the benchmark
    "autotune log --status keep --description 'make each run cheaper'",
    "autotune log --status auto --description 'cache' --asi '{\"hypothesis\": \"parse once per run\"}'",
    "autotune log --status discard --description 'install a faster parser (autotune.sh unchanged)'",
    "grep -n 'autotune run' autotune.md",
    "cp autotune.sh /tmp/autotune-backup.sh",
    "autotune run\n",
]


ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _expand(command):
    return command.replace("{root}", ROOT_DIR)


def edit_payload(project, tool, path, content="x"):
    if tool == "Write":
        return sample("PreToolUse.Write", project.path, session_id=OWNER,
                      tool_input={"file_path": path, "content": content})
    if tool == "NotebookEdit":
        return sample("PreToolUse.Edit", project.path, session_id=OWNER, tool_name="NotebookEdit",
                      tool_input={"notebook_path": path, "new_source": "x", "cell_id": "a"})
    if tool == "MultiEdit":
        return sample("PreToolUse.Edit", project.path, session_id=OWNER, tool_name="MultiEdit",
                      tool_input={"file_path": path, "edits": [{"old_string": "a", "new_string": "b"}]})
    return sample("PreToolUse.Edit", project.path, session_id=OWNER,
                  tool_input={"file_path": path, "old_string": "METRIC", "new_string": "METRIC",
                              "replace_all": False})


PROTECTED = ["autotune.sh", "autotune.checks.sh", "autotune.holdout.sh"]
EDIT_TOOLS = ["Edit", "Write", "MultiEdit", "NotebookEdit"]
OTHER_TOOLS = [
    ("Read", {"file_path": "autotune.sh"}),
    ("Glob", {"pattern": "autotune.*"}),
    ("Grep", {"pattern": "autotune run", "path": "."}),
    ("WebFetch", {"url": "http://127.0.0.1/autotune.sh", "prompt": "x"}),
    ("TodoWrite", {"todos": [{"content": "echo x > autotune.sh", "status": "pending"}]}),
    ("Task", {"prompt": "autotune run; evil", "description": "x"}),
]


def _protected_paths(project, name):
    return [str(project.path / name), name, "./" + name, str(project.path / "sub" / ".." / name)]


def _other_paths(project):
    return ["work.py", str(project.path / "notes.txt"), str(project.path / "sub" / "autotune.sh"),
            str(project.path / "autotune.md"), "/tmp/autotune.sh.txt"]


@pytest.fixture(scope="module")
def table(guarded, tmp_path_factory):
    """Every PreToolUse case of this module answered in one batch (see run_hook_batch)."""
    cases = {}
    for command in ALLOWED_RUNS + DENIED_RUNS + BENCH_WRITES + ALLOWED_OTHER:
        cases[("Bash", command)] = sample("PreToolUse.Bash", guarded.path, session_id=OWNER,
                                          tool_input={"command": _expand(command), "description": "t"})
    for tool in EDIT_TOOLS:
        for name in PROTECTED:
            for path in _protected_paths(guarded, name):
                cases[(tool, path)] = edit_payload(guarded, tool, path)
        for path in _other_paths(guarded):
            cases[(tool, path)] = edit_payload(guarded, tool, path)
    for tool, tool_input in OTHER_TOOLS:
        cases[(tool, json.dumps(tool_input))] = sample("PreToolUse.Bash", guarded.path, session_id=OWNER,
                                                       tool_name=tool, tool_input=tool_input)
    keys = list(cases)
    answers = run_hook_batch("pre-tool-use", [cases[k] for k in keys], guarded.path,
                             tmp_path_factory.mktemp("batch"))
    for answer in answers:
        assert answer.rc == 0 and answer.err == "", answer
    return dict(zip(keys, answers))


@pytest.mark.slow
@pytest.mark.parametrize("command", ALLOWED_RUNS)
def test_pre_tool_use_allows_the_plain_benchmark_run(table, command):
    assert decision(table[("Bash", command)]) == "allow"


@pytest.mark.parametrize("command", DENIED_RUNS)
def test_pre_tool_use_denies_a_run_that_is_not_the_plain_benchmark(table, command):
    result = table[("Bash", command)]
    assert decision(result) == "deny", command
    assert "autotune" in result.json["hookSpecificOutput"]["permissionDecisionReason"]


@pytest.mark.parametrize("command", BENCH_WRITES)
def test_pre_tool_use_denies_bash_writes_of_the_benchmark(table, command):
    result = table[("Bash", command)]
    assert decision(result) == "deny", command
    reason = result.json["hookSpecificOutput"]["permissionDecisionReason"]
    assert re.search(r"autotune(\.checks|\.holdout)?\.sh", reason), reason


@pytest.mark.parametrize("command", ALLOWED_OTHER)
def test_pre_tool_use_allows_everything_else(table, command):
    assert decision(table[("Bash", command)]) == "allow", command


@pytest.mark.parametrize("tool", EDIT_TOOLS)
@pytest.mark.parametrize("name", PROTECTED)
def test_pre_tool_use_denies_edits_of_the_benchmark_during_a_segment(guarded, table, tool, name):
    for path in _protected_paths(guarded, name):
        result = table[(tool, path)]
        assert decision(result) == "deny", (tool, path)
        reason = result.json["hookSpecificOutput"]["permissionDecisionReason"]
        assert name in reason and "autotune init" in reason, reason


@pytest.mark.parametrize("tool", EDIT_TOOLS)
def test_pre_tool_use_allows_edits_of_other_files(guarded, table, tool):
    for path in _other_paths(guarded):
        assert decision(table[(tool, path)]) == "allow", path


@pytest.mark.parametrize("tool,tool_input", OTHER_TOOLS)
def test_pre_tool_use_allows_other_tools(table, tool, tool_input):
    assert table[(tool, json.dumps(tool_input))].silent


@pytest.mark.slow
def test_pre_tool_use_wrapper_agrees_with_the_table(guarded, table):
    """The table above runs in one process; a sample of it through the real wrapper
    (hooks/pre-tool-use.sh, as hooks.json calls it) gives the same answers."""
    picks = ALLOWED_RUNS[:3] + DENIED_RUNS[:3] + DENIED_RUNS[-3:] + BENCH_WRITES[:3] + ALLOWED_OTHER[:3]
    for command in picks:
        assert pre_bash(guarded, _expand(command)).out == table[("Bash", command)].out, command
    path = str(guarded.path / "autotune.sh")
    assert hook("pre-tool-use", edit_payload(guarded, "Write", path), guarded.path).out == \
        table[("Write", path)].out


def test_pre_tool_use_denies_an_edit_through_a_symlink_to_the_benchmark(guarded):
    link = guarded.path / "bench-link.sh"
    if not link.exists():
        os.symlink("autotune.sh", str(link))
    result = hook("pre-tool-use", edit_payload(guarded, "Write", str(link)), guarded.path)
    assert decision(result) == "deny", "a Write through a symlink changes autotune.sh"


def test_pre_tool_use_denies_a_huge_write_of_the_benchmark(guarded):
    """A payload over the hook's read limit must not turn into an allow."""
    payload = edit_payload(guarded, "Write", str(guarded.path / "autotune.sh"), content="#" * (5 << 20))
    assert decision(hook("pre-tool-use", payload, guarded.path)) == "deny"


@pytest.mark.slow
def test_pre_tool_use_edits_allowed_without_a_session_and_once_stopped(tmp_path):
    fresh = make_project(tmp_path / "fresh", init=False)
    for tool in ("Edit", "Write"):
        assert hook("pre-tool-use", edit_payload(fresh, tool, str(fresh.path / "autotune.sh")),
                    fresh.path).silent
    assert pre_bash(fresh, "echo x > autotune.sh").silent
    assert pre_bash(fresh, "autotune run --command 'evil; ./autotune.sh'").silent
    project = make_loop(tmp_path / "repo")
    target = str(project.path / "autotune.sh")
    assert decision(hook("pre-tool-use", edit_payload(project, "Edit", target), project.path)) == "deny"
    project.ok("stop", "--json")
    assert hook("pre-tool-use", edit_payload(project, "Edit", target), project.path).silent
    assert pre_bash(project, "sed -i 's/x/y/' autotune.sh").silent
    # re-init starts a new segment: the benchmark may be set up again until its baseline
    project.ok("init", "--name", "again", "--metric", "time_ms", "--direction", "lower")
    assert hook("pre-tool-use", edit_payload(project, "Write", target), project.path).silent
    project.ok("run")
    project.ok("log", "--status", "keep", "--description", "baseline")
    assert decision(hook("pre-tool-use", edit_payload(project, "Write", target), project.path)) == "deny"


@pytest.mark.slow
def test_pre_tool_use_lets_ordinary_commands_through_and_prints_their_cost(guarded, capsys):
    """Ordinary Bash calls (and the loop's own autotune commands) pass the guard silently.
    Not a timing assertion: it also prints what such a call costs with the hook."""
    import subprocess
    import sys
    import time
    baseline = []
    for _ in range(3):
        start = time.time()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        baseline.append(time.time() - start)
    samples = {}
    for command in ("ls -la", "git status --short", "autotune explain", "autotune run"):
        answers = [pre_bash(guarded, command) for _ in range(3)]
        assert all(answer.silent for answer in answers), (command, answers)
        samples[command] = [answer.duration for answer in answers]
    with capsys.disabled():
        print("\n[hook latency] python3 -c pass: median %.0f ms" % (sorted(baseline)[1] * 1000))
        for command, times in samples.items():
            print("[hook latency] PreToolUse %-22r median %.0f ms, max %.0f ms" % (
                command, sorted(times)[1] * 1000, max(times) * 1000))


# ---------------------------------------------------------------- SessionStart ----

NOTES = """# autotune: speed up work()

## Objective
Make work() return sooner without changing what it returns.

## Scope
work.py only.
"""

IDEAS = """# Ideas
- cache the parsed table
- ~~unroll the inner loop~~ (no gain)
- [x] drop the debug logging
- [ ] try a bytearray buffer
"""


@pytest.fixture(scope="module")
def briefed(tmp_path_factory):
    project = build_loop(tmp_path_factory.mktemp("briefed") / "repo", runs=3)
    project.write("autotune.md", NOTES)
    project.write("autotune.ideas.md", IDEAS)
    return project


@pytest.mark.slow
@pytest.mark.parametrize("source", ["startup", "resume", "clear", "compact"])
def test_session_start_briefs_the_session_that_runs_the_loop(briefed, source):
    before = log_bytes(briefed)
    payload = sample("SessionStart", briefed.path, session_id=OWNER, source=source)
    answer = hook("session-start", payload, briefed.path).json
    out = answer["hookSpecificOutput"]
    assert out["hookEventName"] == "SessionStart"
    context = out["additionalContext"]
    for needle in (
            "speed up work()", "time_ms", "lower",                        # objective
            "Make work() return sooner without changing what it returns",  # from autotune.md
            "improving",                                                   # state
            "Next action", "continue",                                     # next action
            "80",                                                          # best so far
            "step 0", "step 1", "step 2",                                  # recent runs
            "hypothesis of step 2", "observed 80",                         # their ASI
            "cache the parsed table", "try a bytearray buffer"):           # open ideas
        assert needle in context, (needle, context)
    for struck in ("unroll the inner loop", "drop the debug logging"):
        assert struck not in context, (struck, context)
    assert log_bytes(briefed) == before


def test_session_start_summary_stays_compact(tmp_path):
    """Long descriptions, ASI and ideas (each well within autotune's own limits) and many
    runs: the context stays a compact summary, with the newest runs."""
    project = make_loop(tmp_path / "repo", config={"health": {"maxNoImprovementRuns": 1000}})
    long = "x" * 3000
    asi = {"hypothesis": long, "observation": long, "next": long, "extra": long}

    def lengthen(entry):
        if entry.get("type") == "result":
            entry.update(description="experiment 1 " + long, asi=asi)
        return entry
    rewrite_log(project, lengthen)
    (first,) = project.results()
    with open(os.path.join(str(project.path), "autotune.jsonl"), "a") as handle:
        for index in range(2, 9):
            entry = dict(first, index=index, status="discard", metric=100 + index, improved=False,
                         description="experiment %d %s" % (index, long))
            handle.write(json.dumps(entry) + "\n")
    project.write("autotune.ideas.md", "\n".join("- idea %d %s" % (i, long) for i in range(50)))
    project.write("autotune.md", "## Objective\n" + long + "\n")
    context = hook("session-start", sample("SessionStart", project.path, session_id=OWNER),
                   project.path).json["hookSpecificOutput"]["additionalContext"]
    assert "experiment 8" in context and "experiment 3 " in context and "experiment 2 " not in context
    assert len(context) < 6000, "%d characters:\n%s" % (len(context), "\n".join(
        "%6d  %s" % (len(line), line[:100]) for line in context.splitlines()))


@pytest.mark.slow
def test_session_start_is_silent_when_no_loop_runs(tmp_path):
    project = make_loop(tmp_path / "repo")
    project.ok("stop", "--json")
    empty = tmp_path / "empty"
    empty.mkdir()
    for source in ("startup", "resume", "clear", "compact"):
        assert hook("session-start", sample("SessionStart", project.path, source=source), project.path).silent
        assert hook("session-start", sample("SessionStart", empty, source=source), empty).silent
