"""End to end with the real client (issue 3, point 7).

The real `claude -p --plugin-dir <repo>` (2.1.197, pinned) talks to a scripted stand-in
for the Messages API on loopback (tests/support/fake_anthropic.py; a dummy key, no
account, no other network). The scripted "model" of the first session:

  1. calls the plugin's own commands with the Bash tool, bare (`autotune ...`: the client
     appends the plugin's bin/ to PATH): init, run, log (baseline); Read + Edit of work.py;
     run, log (a kept improvement);
  2. tries a run of a command that is not the benchmark (denied by PreToolUse, with the
     reason);
  3. Reads autotune.sh (the client refuses a Write of an unread file before any hook runs),
     then tries to Edit it and to Write it (both denied, with the reason);
  4. ends its turn. `autoResume: continue` makes the Stop hook feed the resume prompt back
     to this session; `resume.maxConsecutiveBlocks: 2` lets it do so twice, then the turn
     ends (stop_hook_active honoured with the real client).

A second `claude -p` in the same directory then receives the SessionStart summary (the
first session's SessionStart fired before its own `init`, so it saw nothing) and is NOT
blocked by the Stop hook: it does not own the loop.

Checked from what reached the stand-in, from `--output-format json` (permission_denials),
from autotune.jsonl and from git. Bounded: every CLI run has a timeout and is killed with
all its descendants when it overruns.
"""

import json
import os

from conftest import BENCHMARK, ROOT, make_project, run_cli
from support.plugin_helpers import require_claude

RUN_TIMEOUT = 120


def settings(project):
    """setup-permissions (as the skill does), plus Edit and Write allowed outright, so a
    denied Edit/Write of the benchmark can only come from autotune's PreToolUse hook."""
    result = run_cli(["setup-permissions", "--json", str(project.path)], project.path)
    assert result.rc == 0 and result.json["added"], result
    path = result.json["path"]
    with open(path) as handle:
        data = json.load(handle)
    data["permissions"]["allow"] += ["Edit", "Write", "Read"]
    with open(path, "w") as handle:
        json.dump(data, handle, indent=2)
    # personal settings stay out of the experiments (see findings: setup-permissions
    # does not git-ignore the file it writes)
    with open(os.path.join(str(project.path), ".git", "info", "exclude"), "a") as handle:
        handle.write(".claude/\n")


def bash(command, description="autotune"):
    from support.fake_anthropic import tool_use
    return tool_use("Bash", {"command": command, "description": description})


def test_two_claude_sessions_drive_the_plugin(tmp_path):
    from support.claude_cli import ClaudeSandbox
    from support.fake_anthropic import FakeAnthropic, text, tool_use

    claude = require_claude()
    project = make_project(tmp_path / "proj", init=False, config={
        "autoResume": "continue", "resume": {"maxConsecutiveBlocks": 2}})
    settings(project)
    work = str(project.path / "work.py")
    bench = str(project.path / "autotune.sh")
    not_the_benchmark = "autotune run --command 'echo METRIC time_ms=1'"
    asi_base = json.dumps({"hypothesis": "unchanged code", "observation": "the baseline"})
    asi_keep = json.dumps({"hypothesis": "the delay dominates", "observation": "80 ms"})
    script = [
        bash('autotune init --name "e2e loop" --metric time_ms --unit ms --direction lower'),   # 0
        bash("autotune run"),                                                                   # 1
        bash("autotune log --status keep --description baseline --asi '%s'" % asi_base),        # 2
        tool_use("Read", {"file_path": work}),                                                  # 3
        tool_use("Edit", {"file_path": work, "old_string": "DELAY_MS = 100",
                          "new_string": "DELAY_MS = 80"}),                                      # 4
        bash("autotune run"),                                                                   # 5
        bash("autotune log --status auto --description 'shorter delay' --asi '%s'" % asi_keep), # 6
        bash(not_the_benchmark),                                                                # 7
        tool_use("Read", {"file_path": bench}),                                                 # 8
        tool_use("Edit", {"file_path": bench, "old_string": 'echo "METRIC time_ms=$d"',
                          "new_string": 'echo "METRIC time_ms=1"'}),                            # 9
        tool_use("Write", {"file_path": bench, "content": "#!/bin/sh\necho METRIC time_ms=1\n"}),  # 10
        text("Two experiments logged; ending my turn."),                                       # 11
        text("Resuming as the hook asked (1)."),                                                # 12
        text("Resuming as the hook asked (2)."),                                                # 13
    ]
    sandbox = ClaudeSandbox(tmp_path / "claude-config", claude=claude)
    with FakeAnthropic(script, log_path=str(tmp_path / "fake1.jsonl")) as fake1:
        run1 = sandbox.run("Run the autotune loop.", cwd=project.path, base_url=fake1.base_url,
                           plugin_dirs=[ROOT], timeout=RUN_TIMEOUT)
    print("\n[e2e] session 1: %r, %d requests" % (run1, len(fake1.conversation)))
    assert not run1.timed_out and run1.returncode == 0, run1
    assert fake1.errors == [], fake1.errors
    conv = fake1.conversation

    def result_of(step):
        # the newest tool_result of the next request (the client may add role:"system"
        # reminders after it, so not necessarily its last message)
        results = conv[step + 1].tool_results()
        assert len(results) == step + 1, [r["text"][:80] for r in results]
        return results[-1]

    # SessionStart of session 1 fired before its own init: no loop to brief about
    assert not any("optimization loop is active" in m for m in conv[0].system_messages())

    # the plugin's own commands ran through the Bash tool, bare, on the plugin's bin/
    init = json.loads(result_of(0)["text"])
    assert init["status"] == "initialized" and init["name"] == "e2e loop", init
    baseline = json.loads(result_of(1)["text"])
    assert baseline["verdict"] == "baseline" and baseline["primary"] == 100, baseline
    assert json.loads(result_of(2)["text"])["status"] == "keep"
    assert result_of(4).get("is_error") is not True, result_of(4)
    improved = json.loads(result_of(5)["text"])
    assert improved["verdict"] == "improved" and improved["primary"] == 80, improved
    kept = json.loads(result_of(6)["text"])
    assert kept["status"] == "keep" and kept["git"]["action"] == "commit", kept

    # PreToolUse denials reached the model as error tool_results carrying our reasons
    denied_run, denied_edit, denied_write = result_of(7), result_of(9), result_of(10)
    for block in (denied_run, denied_edit, denied_write):
        assert block["is_error"] is True, block
    assert "is not the benchmark" in denied_run["text"] and "echo METRIC time_ms=1" in denied_run["text"], \
        denied_run
    assert result_of(8).get("is_error") is not True and "METRIC" in result_of(8)["text"]
    for block in (denied_edit, denied_write):
        assert "autotune.sh is part of the benchmark" in block["text"] and "autotune init" in block["text"], block
    denials = run1.permission_denials
    assert [(d["tool_name"], d["tool_input"].get("command") or d["tool_input"].get("file_path"))
            for d in denials] == [("Bash", not_the_benchmark), ("Edit", bench), ("Write", bench)], denials

    # Stop in `continue` mode fed the resume prompt back to this session, twice (the cap
    # while stop_hook_active is true), then let the turn end
    feedback = [t for t in conv[-1].user_texts() if t.startswith("Stop hook feedback:")]
    assert len(feedback) == 2, feedback
    prompt = feedback[0][len("Stop hook feedback:\n"):]
    assert feedback[1] == feedback[0]
    assert prompt.startswith("Continue the autotune loop in %s" % project.path) or \
        str(project.path) in prompt, prompt
    for needle in ("autotune explain", "autotune run", "autotune log"):
        assert needle in prompt, prompt
    assert [t for t in conv[11].user_texts() if t.startswith("Stop hook")] == []
    assert conv[12].user_texts()[-1] == feedback[0] and conv[13].user_texts()[-1] == feedback[1]
    assert len(conv) == 14 and run1.result == "Resuming as the hook asked (2).", (len(conv), run1)

    # the files: the log and git history are what the calls made
    lines = project.log_lines()
    (config,) = [l for l in lines if l["type"] == "config"]
    assert config["session_id"] == run1.session_id, "init recorded the Bash tool's CLAUDE_CODE_SESSION_ID"
    results = [l for l in lines if l["type"] == "result"]
    assert [(r["index"], r["status"], r["metric"], r["description"]) for r in results] == [
        (1, "keep", 100, "baseline"), (2, "keep", 80, "shorter delay")], results
    assert all(r.get("session_id") == run1.session_id for r in results)
    assert results[1]["asi"] == json.loads(asi_keep)
    hooks = [l for l in lines if l["type"] == "hook"]
    assert [(b["action"], b["streak"], b["session_id"]) for b in hooks if b["action"] == "block"] == [
        ("block", 1, run1.session_id), ("block", 2, run1.session_id)], hooks
    # the third Stop reached the cap of consecutive blocks: said once, then silent
    assert [(b["action"], b["cap"]) for b in hooks if b["action"] != "block"] == [("capped", "consecutive")], hooks
    subjects = project.git("log", "--format=%s").splitlines()
    assert subjects[0] == "autotune: shorter delay" and subjects[-1] == "initial", subjects
    assert project.git("show", "--name-only", "--format=", "HEAD").split() == ["work.py"]
    assert "Autotune-Metric: time_ms=80 ms" in project.git("log", "-1", "--format=%B")
    assert project.git("show", "HEAD:work.py") == "DELAY_MS = 80\n"
    assert project.read("autotune.sh") == BENCHMARK, "the denied Edit/Write changed nothing"
    assert project.git("status", "--porcelain", "--", "autotune.sh", "work.py") == ""

    # a second session in the same directory: briefed by SessionStart, never blocked
    with FakeAnthropic(["Second session: I see the loop."], log_path=str(tmp_path / "fake2.jsonl")) as fake2:
        run2 = sandbox.run("What is going on here?", cwd=project.path, base_url=fake2.base_url,
                           plugin_dirs=[ROOT], timeout=RUN_TIMEOUT)
    print("[e2e] session 2: %r, %d requests" % (run2, len(fake2.conversation)))
    assert not run2.timed_out and run2.returncode == 0, run2
    assert run2.session_id and run2.session_id != run1.session_id
    (first,) = fake2.conversation
    context = [m for m in first.system_messages() if m.startswith("SessionStart hook additional context:")]
    assert context, first.system_messages()
    notice = context[0]
    # not the loop's session: one line naming the loop and whose it is, no "continue" briefing
    for needle in ("optimization loop is active in %s" % project.path, "run by session %s" % run1.session_id,
                   "this session is not asked to continue it"):
        assert needle in notice, (needle, notice)
    assert "Next action" not in notice and "shorter delay" not in notice, notice
    assert run2.result == "Second session: I see the loop.", run2
    assert "Stop hook feedback" not in "\n".join(fake2.all_user_text())
    assert fake2.steps_used == 1 and run2.permission_denials == []
    after = project.log_lines()
    assert [l for l in after if l["type"] == "hook"] == hooks, "the second session left no block"
    assert len(after) == len(lines)
