"""`autotune statusline` (SPEC 10) from the reference's real 2.1.197 status-line payload,
`--chain CMD` through the shell (the user's own command; the payload stays data), and
`setup-permissions DIR` (idempotent merge that keeps every existing setting, refuses a
broken settings file untouched)."""

import json
import os
import re
import subprocess
import sys
import time

import pytest

from conftest import AUTOTUNE, ROOT, clean_env, make_project, run_cli
from support.plugin_helpers import sample

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def statusline(cwd, payload=None, args=(), raw=None, env=None, via_wrapper=False):
    data = raw if raw is not None else json.dumps(payload).encode("utf-8")
    argv = ([os.path.join(ROOT, "bin", "statusline.sh")] if via_wrapper
            else [sys.executable, AUTOTUNE, "statusline"]) + list(args)
    start = time.time()
    proc = subprocess.run(argv, cwd=str(cwd), env=env or clean_env(), input=data,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    proc.duration = time.time() - start
    proc.text = proc.stdout.decode("utf-8", "replace")
    return proc


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("sl") / "repo", init=True)
    for delay, description in ((100, "baseline"), (90, "faster"), (80, "faster still")):
        project.loop(delay, description=description)
    os.makedirs(str(project.path / "sub"), exist_ok=True)
    return project


# ------------------------------------------------------------------ status line ----

@pytest.mark.slow
@pytest.mark.parametrize("via_wrapper", [False, True])
def test_statusline_with_a_session_renders_the_spec_line(loop, via_wrapper):
    proc = statusline(loop.path, sample("statusLine", loop.path), via_wrapper=via_wrapper)
    assert proc.returncode == 0, proc.stderr
    assert proc.text.endswith("\n") and proc.text.count("\n") == 1, repr(proc.text)
    line = proc.text.rstrip("\n")
    assert ANSI.search(line), "colour by default, as the first implementation's line (issue 13)"
    line = ANSI.sub("", line)
    loop_part, _, claude_part = line.partition(" │ ")
    # health icon and name, experiment count, streaks, heals, best
    assert re.search(r"autotune \S improving", loop_part), line
    assert re.search(r"#3\b", loop_part), line
    assert re.search(r"keep 3\b", loop_part) and re.search(r"no-imp 0\b", loop_part) \
        and re.search(r"crash 0\b", loop_part), line
    assert re.search(r"heals 0/\d+", loop_part), line
    assert "80" in loop_part and "-20" in loop_part, line
    # then the session's minutes, cost and context use
    assert claude_part == "0m · $0.00 · ctx 0%", line


def test_statusline_without_a_session(tmp_path):
    empty = tmp_path / "nothing"
    empty.mkdir()
    proc = statusline(empty, sample("statusLine", empty))
    assert proc.returncode == 0 and proc.text.count("\n") == 1, proc
    # a status line set user-wide says nothing about autotune where there is no loop
    assert "autotune" not in proc.text and "#" not in proc.text
    assert proc.text == "0m · $0.00 · ctx 0%\n"


@pytest.mark.slow
def test_statusline_finds_the_loop_from_the_workspace_dir(loop, tmp_path):
    payload = sample("statusLine", loop.path / "sub")
    assert "improving" in statusline(loop.path / "sub", payload).text
    elsewhere = sample("statusLine", tmp_path)
    elsewhere["workspace"]["current_dir"] = str(loop.path)
    assert "improving" in statusline(tmp_path, elsewhere).text, "workspace.current_dir is the project"


@pytest.mark.slow
def test_statusline_before_the_first_reply_and_with_odd_payloads(loop):
    early = sample("statusLine", loop.path)
    del early["prompt_id"]
    early["context_window"].update(current_usage=None, used_percentage=None, remaining_percentage=None)
    early["cost"] = {"total_cost_usd": 0, "total_duration_ms": 61000}
    text = statusline(loop.path, early).text
    assert "improving" in text and "ctx" not in text and "1m" in text and "$0.00" in text
    for raw in (b"", b"garbage", b"[1, 2]", b"null", b'{"cost": "x", "workspace": 5, "context_window": []}',
                b"x" * (5 << 20)):
        proc = statusline(loop.path, raw=raw)
        assert proc.returncode == 0 and proc.text.count("\n") == 1 and "Traceback" not in proc.stderr.decode(), raw[:40]


@pytest.mark.slow
def test_statusline_color(loop):
    """Colour by default (issue 13); --color is still accepted; NO_COLOR and --no-color turn it off."""
    colored = statusline(loop.path, sample("statusLine", loop.path), args=["--color"]).text
    default = statusline(loop.path, sample("statusLine", loop.path)).text
    plain = statusline(loop.path, sample("statusLine", loop.path), args=["--no-color"]).text
    assert ANSI.search(colored) and colored == default
    assert not ANSI.search(plain) and ANSI.sub("", colored) == plain
    env = clean_env(NO_COLOR="1")
    assert not ANSI.search(statusline(loop.path, sample("statusLine", loop.path), args=["--color"], env=env).text)


@pytest.mark.slow
def test_statusline_chain_runs_the_other_command_with_the_payload(loop):
    payload = sample("statusLine", loop.path)
    proc = statusline(loop.path, payload, args=["--chain", "echo CHAINED-LINE"])
    first, second = proc.text.rstrip("\n").split("\n")
    assert "improving" in first and second == "CHAINED-LINE"
    raw = json.dumps(payload).encode()
    proc = statusline(loop.path, raw=raw, args=["--chain", "cat"])
    assert proc.text.split("\n", 1)[1].rstrip("\n") == raw.decode(), "the chained command gets the same stdin"
    proc = statusline(loop.path, payload, args=["--chain", "%s -c 'import sys, json; print(json.load(sys.stdin)[\"model\"][\"display_name\"])'" % sys.executable])
    assert proc.text.split("\n")[1] == "Opus 4.8 (1M context)"


def test_statusline_chain_runs_through_the_shell_and_the_payload_stays_data(loop, tmp_path):
    """--chain is the user's own status-line command from their settings: like the first
    implementation, it runs through the shell (issue 13: `~` and pipes work). The payload
    reaches it on stdin only, so text inside it is never executed."""
    home = tmp_path / "home"
    os.makedirs(str(home / ".claude" / "hud"))
    with open(str(home / ".claude" / "hud" / "hud.py"), "w") as handle:
        handle.write("import json, sys\nprint('HUD', json.load(sys.stdin)['model']['display_name'])\n")
    payload = sample("statusLine", loop.path)
    payload["model"]["display_name"] = "$(touch %s/pwned) `touch %s/pwned`" % (tmp_path, tmp_path)
    env = clean_env(HOME=str(home), NO_COLOR="1")
    proc = statusline(loop.path, payload, env=env,
                      args=["--chain", "%s ~/.claude/hud/hud.py | tr a-z A-Z" % sys.executable])
    assert proc.returncode == 0
    first, second = proc.text.rstrip("\n").split("\n")
    assert "improving" in first and second.startswith("HUD $(TOUCH "), proc.text
    assert not (tmp_path / "pwned").exists(), "the payload was executed"


@pytest.mark.cost(7)
@pytest.mark.slow
def test_statusline_chain_failures_keep_our_line(loop):
    payload = sample("statusLine", loop.path)
    for chain in ("/nonexistent/statusline-command", "'unbalanced", "false"):
        proc = statusline(loop.path, payload, args=["--chain", chain])
        assert proc.returncode == 0 and "improving" in proc.text.split("\n")[0], (chain, proc.text)
    proc = statusline(loop.path, payload, args=["--chain", "sleep 30"])
    assert proc.returncode == 0 and "improving" in proc.text
    print("\n[statusline] a hanging --chain command returned after %.1f s" % proc.duration)
    assert proc.duration < 20, "a hanging chained command must not hang the status line"


# ----------------------------------------------------------- setup-permissions ----

def setup_permissions(target, *args, cwd=None):
    return run_cli(["setup-permissions"] + [str(a) for a in args] + ([str(target)] if target else []),
                   cwd or os.getcwd())


def settings_path(target):
    return os.path.join(str(target), ".claude", "settings.local.json")


def read_bytes(path):
    with open(path, "rb") as handle:
        return handle.read()


def test_setup_permissions_creates_the_rules_and_is_idempotent(tmp_path):
    target = tmp_path / "proj"
    target.mkdir()
    first = setup_permissions(target, "--json")
    assert first.rc == 0 and first.json["added"], first
    path = settings_path(target)
    data = json.loads(read_bytes(path))
    allow = data["permissions"]["allow"]
    for command in ("run", "log", "explain", "rebaseline", "stop"):  # what the agent runs
        assert "Bash(autotune %s*)" % command in allow, allow
    for command in ("clear", "resume", "repair"):  # the person's commands are not pre-allowed
        assert not any(rule.startswith("Bash(autotune %s" % command) for rule in allow), allow
    assert any(rule.startswith("Bash(") and "%s/bin/autotune" % ROOT in rule for rule in allow), allow
    assert all(re.match(r"^Bash\(.+\)$", rule) for rule in allow), allow
    assert len(allow) == len(set(allow))
    before = read_bytes(path)
    mtime = os.stat(path).st_mtime_ns
    second = setup_permissions(target, "--json")
    assert second.rc == 0 and second.json["added"] == [], second
    assert read_bytes(path) == before and os.stat(path).st_mtime_ns == mtime
    text = setup_permissions(target)
    assert text.rc == 0 and read_bytes(path) == before
    # the default directory is the current one
    assert setup_permissions(None, "--json", cwd=str(target)).json["added"] == []


EXISTING = {
    "model": "opus",
    "env": {"FOO": "1", "EMPTY": ""},
    "permissions": {
        "allow": ["Bash(npm test)", "Bash(autotune *)", "Read(~/notes/**)"],
        "deny": ["Bash(rm -rf *)", "Bash(git push *)"],
        "ask": ["WebFetch"],
        "defaultMode": "acceptEdits",
        "additionalDirectories": ["../lib"],
    },
    "hooks": {"PostToolUse": [{"matcher": "Edit", "hooks": [{"type": "command", "command": "fmt"}]}]},
    "statusLine": {"type": "command", "command": "~/.claude/my-line.sh", "padding": 1},
    "enabledPlugins": {"other@market": True},
    "unicode": "h\u00e9llo \u2713 \U0001f680",
    "numbers": [1, 2.5, -0.0, 1e100, 12345678901234567890, None, True, False],
}


def test_setup_permissions_keeps_every_existing_setting(tmp_path):
    target = tmp_path / "proj"
    os.makedirs(str(target / ".claude"))
    path = settings_path(target)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(EXISTING, handle, ensure_ascii=False)
    result = setup_permissions(target, "--json")
    assert result.rc == 0, result
    after = json.loads(read_bytes(path).decode("utf-8"))
    for key, value in EXISTING.items():
        if key != "permissions":
            assert after[key] == value, key
    for key, value in EXISTING["permissions"].items():
        if key != "allow":
            assert after["permissions"][key] == value, key
    allow = after["permissions"]["allow"]
    assert allow[:3] == EXISTING["permissions"]["allow"], "existing rules first, in order"
    assert allow.count("Bash(autotune *)") == 1
    assert "Bash(autotune *)" not in result.json["added"]
    assert list(after) == list(EXISTING), "key order kept"
    before = read_bytes(path)
    assert setup_permissions(target, "--json").json["added"] == [] and read_bytes(path) == before


@pytest.mark.parametrize("content", [
    b"{not json",
    b"",
    b"[1, 2, 3]",
    b'"a string"',
    b'{"permissions": []}',
    b'{"permissions": {"allow": "Bash(*)"}}',
    b'{"permissions": {"allow": null}}',
    b'\xff\xfe{"a": 1}',
    b'{"a": 1} trailing',
])
def test_setup_permissions_refuses_an_invalid_settings_file_unchanged(tmp_path, content):
    target = tmp_path / "proj"
    os.makedirs(str(target / ".claude"))
    path = settings_path(target)
    with open(path, "wb") as handle:
        handle.write(content)
    result = setup_permissions(target, "--json")
    assert result.rc != 0, result
    assert result.json and "error" in result.json and "settings.local.json" in result.json["message"], result
    assert read_bytes(path) == content
    assert os.listdir(str(target / ".claude")) == ["settings.local.json"], "no temporary file left behind"


def test_setup_permissions_refuses_a_missing_directory(tmp_path):
    result = setup_permissions(tmp_path / "missing", "--json")
    assert result.rc != 0 and result.json and "error" in result.json
    assert not (tmp_path / "missing").exists()


def test_setup_permissions_statusline(tmp_path, loop):
    target = tmp_path / "proj"
    target.mkdir()
    assert setup_permissions(target, "--statusline", "--json").rc == 0
    path = settings_path(target)
    data = json.loads(read_bytes(path))
    line = data["statusLine"]
    assert line["type"] == "command" and "statusline" in line["command"]
    before = read_bytes(path)
    again = setup_permissions(target, "--statusline", "--json")
    assert again.rc == 0 and again.json["added"] == [] and again.json["statusline"] is False
    assert read_bytes(path) == before
    # the command, run the way Claude Code runs a status line (a shell), renders the loop
    proc = subprocess.run(["sh", "-c", line["command"]], cwd=str(loop.path), env=clean_env(),
                          input=json.dumps(sample("statusLine", loop.path)).encode(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert proc.returncode == 0 and "improving" in proc.stdout.decode(), proc
    # another status line is never replaced silently
    other = tmp_path / "other"
    os.makedirs(str(other / ".claude"))
    with open(settings_path(other), "w") as handle:
        json.dump({"statusLine": {"type": "command", "command": "my-line"}, "model": "x"}, handle)
    before = read_bytes(settings_path(other))
    refused = setup_permissions(other, "--statusline", "--json")
    assert refused.rc != 0 and "--chain" in refused.json["message"], refused
    assert read_bytes(settings_path(other)) == before
    forced = setup_permissions(other, "--statusline", "--force", "--json")
    assert forced.rc == 0
    data = json.loads(read_bytes(settings_path(other)))
    assert data["model"] == "x" and "statusline" in data["statusLine"]["command"]
