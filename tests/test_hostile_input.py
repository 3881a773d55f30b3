"""Hostile input (issue 6, point 3): generated bad inputs to every command end with a
clear error (non-zero exit, one line; one JSON object for agent-facing commands) or a
correct result, never a traceback or an internal error, and an error never changes a
file. Deterministic: every value comes from a seeded RNG.

Which options each command has is read from autotune's own parser, so commands and
flags added later are fuzzed too. Values that would execute or write outside the
scratch repository are never generated (statusline --chain, dashboard --watch,
clear --yes, start with `claude` on PATH, paths outside the repository)."""

import argparse
import json
import os
import random
import shutil
import sys
import threading

import pytest

from conftest import AUTOTUNE, clean_env, make_project
from support.reliability import FAST, assert_clean_exit, autotune, session_bytes
from support.reliability import run_fast as run_cli

SEED = 6
CONFIG = {"health": {"maxNoImprovementRuns": 1000000, "maxCrashStreak": 1000000}, "repeat": 1}
AGENT_FACING = set(autotune.AGENT_COMMANDS)
# options whose value is executed, loops forever or deletes the session: never fuzzed
NEVER = {("statusline", "--chain"), ("dashboard", "--watch"), ("clear", "--yes"),
         ("init", "--scaffold")}
PATH_OPTIONS = {("export", "--output"), ("report", "--html"), ("setup-permissions", "dir")}
JSON_OPTIONS = {("log", "--metrics"), ("log", "--asi")}
NUMBER_OPTIONS = {("log", "--metric"), ("run", "--timeout"), ("run", "--checks-timeout"),
                  ("run", "--repeat"), ("rebaseline", "--repeat"), ("rebaseline", "--timeout"),
                  ("restore", "index"), ("restore", "--segment"), ("export", "--segment"),
                  ("dashboard", "--interval")}
# what a valid call needs, so that one hostile value at a time reaches its validator
VALID = {
    "init": ["--name", "n", "--metric", "time_ms", "--direction", "lower"],
    "log": ["--status", "discard", "--description", "d", "--metric", "100"],
    "hook": ["session-start"],
}

TEXTS = ["", " ", "\n", "\t\r\n ", "'\"`$(touch PWNED)`;|&<>", "--", "-", "-1", "--json",
         "\u2028\u2029", "\ufeff", "\u202e RTL", "\U0001F389" * 10, "x\x01\x1b[31m",
         "e\u0301" * 12000, "a" * 130000, "null", "[]", "{}", "NaN", "autotune.jsonl"]
NUMBERS = ["0", "-0", "1e308", "1e309", "-1e309", "nan", "NaN", "inf", "-inf", "1e-400", "0x1A",
           "1_000", " 5 ", "5,5", "9" * 400, "-" + "9" * 400, "1/0", "\u0661\u0662", "", "-5", "3.5"]
JSONS = ["{", "[]", '"s"', "1", "null", "true", '{"a": "x"}', '{"a": true}', '{"a": 1e400}',
         '{"a": NaN}', '{"a": -Infinity}', '{"__proto__": 1}', '{"a b": 1}', '{"": 1}',
         '{"a": {"b": 1}}', '{"a": 1, "a": 2}', "[" * 60000, '{"a": "\\udc80"}',
         '{"\\ud800": 1}', '{"a":' + "[" * 990 + "]" * 990 + "}", '{"mem_mb": 50}',
         '{"time_ms": 1e308}', '{"x": "' + "y" * 100000 + '"}']
PATHS = ["", ".", "autotune.jsonl", ".autotune.state", "autotune.config.json", "autotune.sh",
         "missing/deeper/out.file", "work.py/x", "out.file", "\u00e9t\u00e9.out", " ", "-"]


def random_bytes(rng, low=1, high=48):
    """A text argument of random bytes (never NUL): often not valid UTF-8."""
    return bytes(rng.randint(1, 255) for _ in range(rng.randint(low, high)))


def random_unicode(rng):
    pools = [(0x20, 0x7e), (0x80, 0x2ff), (0x590, 0x6ff), (0x2000, 0x206f), (0xfff0, 0xffff),
             (0x1f300, 0x1f6ff), (0x1, 0x1f), (0x300, 0x36f)]
    chars = []
    for _ in range(rng.randint(1, 40)):
        low, high = rng.choice(pools)
        chars.append(chr(rng.randint(low, high)))
    return "".join(chars)


def options_of(command):
    """[(flag or dest, kind, choices)] of a subcommand, read from autotune's parser."""
    parser = autotune.build_parser(command)
    sub = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)][0]
    found = []
    for action in sub.choices[command]._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = action.option_strings[0] if action.option_strings else action.dest
        kind = "flag" if action.nargs == 0 else ("positional" if not action.option_strings else "value")
        found.append((name, kind, action.choices, action.nargs))
    return found


def value_for(command, name, choices, rng):
    key = (command, name)
    if key in PATH_OPTIONS:
        pool = PATHS + [random_unicode(rng).replace("/", "_").strip() or "u"]
    elif key in JSON_OPTIONS:
        pool = JSONS + [random_unicode(rng), random_bytes(rng)]
    elif key in NUMBER_OPTIONS:
        pool = NUMBERS + [random_bytes(rng, 1, 8)]
    elif choices:
        pool = [c.upper() for c in choices] + [c + " " for c in choices] + ["", random_bytes(rng)]
    else:
        pool = TEXTS + [random_bytes(rng), random_bytes(rng, 200, 400), random_unicode(rng)]
    return rng.choice(pool)


def calls_for(command, rng, per_option=2):
    """argv lists for one command: each option with hostile values, plus bad shapes."""
    options = options_of(command)
    base = list(VALID.get(command, []))
    calls = [[command, "--no-such-flag"], [command] + base + [random_bytes(rng)],
             [command] + base + ["--" + random_unicode(rng)]]
    for name, kind, choices, nargs in options:
        if (command, name) in NEVER:
            continue
        if kind == "flag":
            calls.append([command] + base + [name, name])  # repeated flag
            continue
        if (command, name) in PATH_OPTIONS:  # every dangerous target, not a sample
            values = PATHS + [random_unicode(rng).replace("/", "_").strip() or "u"]
            if command == "setup-permissions":  # writes DIR/.claude/...: a sample will do
                values = rng.sample(values, 4)
        else:
            values = [value_for(command, name, choices, rng) for _ in range(per_option)]
        for value in values:
            args = strip_option(base, name)
            if kind == "positional":
                calls.append([command] + ([] if command == "hook" else args) + [value])
            else:
                calls.append([command] + args + [name, value])
        if kind == "value":
            calls.append([command] + strip_option(base, name) + [name])  # missing value
    if command not in AGENT_FACING and command != "start":
        calls += [call + ["--json"] for call in rng.sample(calls, min(2, len(calls)))
                  if "--json" not in call and "--no-such-flag" not in call]
    return calls


def strip_option(base, name):
    out, skip = [], False
    for i, arg in enumerate(base):
        if skip:
            skip = False
            continue
        if arg == name:
            skip = True
            continue
        out.append(arg)
    return out


def tree(path):
    """Every file of the repository but .git: {relative path: bytes}."""
    files = {}
    root = str(path)
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in names:
            full = os.path.join(folder, name)
            try:
                with open(full, "rb") as handle:
                    files[os.path.relpath(full, root)] = handle.read()
            except OSError:
                files[os.path.relpath(full, root)] = None
    return files


def restore_tree(path, files):
    root = str(path)
    now = tree(path)
    for rel in now:
        if rel not in files:
            os.unlink(os.path.join(root, rel))
    for rel, data in files.items():
        full = os.path.join(root, rel)
        if data is not None and now.get(rel) != data:
            if os.path.isdir(full):
                shutil.rmtree(full)
            with open(full, "wb") as handle:
                handle.write(data)


def to_argv(call):
    return [a if isinstance(a, bytes) else a.encode("utf-8", "surrogatepass") for a in call]


def stdin_for(command, rng):
    if command not in ("hook", "statusline"):
        return b""
    return rng.choice([b"", b"{", b"[]", b"null", random_bytes(rng, 1, 200), b"\xff" * 100,
                       b'{"cwd": 5, "session_id": [], "tool_input": "x", "stop_hook_active": "yes"}',
                       b'{"tool_name": "Bash", "tool_input": {"command": "./autotune.sh; rm -rf x"}}',
                       b'{"model": 5, "cost": {"total_cost_usd": "x"}, "context_window": []}',
                       b"[" * 100000, b'{"a": "' + b"x" * (5 << 20) + b'"}'])


def run_call(project, call, rng, env):
    command = call[0]
    stdin = stdin_for(command, rng)
    import subprocess
    proc = subprocess.run(FAST + [AUTOTUNE] + to_argv(call), cwd=str(project.path), env=env,
                          input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    from conftest import CLIResult
    return CLIResult(proc)


def check_call(project, call, result, before, after):
    command = call[0]
    shown = repr([a[:60] if isinstance(a, (str, bytes)) else a for a in call])
    assert_clean_exit(result, command in AGENT_FACING, shown, report=command == "doctor")
    # a hook swallows errors to protect the user's session, but says so: no bug hidden there
    assert not any(word in result.err for word in ("Error:", "Exception:")), "%s -> %r" % (shown, result)
    if result.rc != 0 and not (command == "doctor" and "--fix" in call):
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        assert not changed, "%s failed (rc %d) but changed %s" % (shown, result.rc, changed)
    if result.rc == 0 and (command in AGENT_FACING or "--json" in call) and result.out.strip():
        assert result.json is not None, "%s: stdout is not one JSON object: %r" % (shown, result.out[:300])
    protected = ("autotune.jsonl", "autotune.config.json", "autotune.sh")
    for name in protected:
        if before.get(name) is not None and after.get(name) is not None and name != "autotune.jsonl":
            assert before[name] == after[name], "%s rewrote %s" % (shown, name)
    if before.get("autotune.jsonl") and after.get("autotune.jsonl") is not None:
        assert after["autotune.jsonl"].startswith(before["autotune.jsonl"]), \
            "%s rewrote the log instead of appending to it" % shown
    if command == "log" and result.rc == 0 and isinstance(call[call.index("--description") + 1], str):
        last = json.loads(after["autotune.jsonl"].splitlines()[-1].decode("utf-8"))
        assert last["description"] == call[call.index("--description") + 1], "description not verbatim"


def fuzz_lane(project, commands, rng, failures):
    env = clean_env(PATH=os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                                         if p and not os.path.exists(os.path.join(p, "claude"))))
    for command in commands:
        for call in calls_for(command, rng):
            before = tree(project.path)
            assert os.path.exists(os.path.join(str(project.path), "autotune.sh"))
            result = run_call(project, call, rng, env)
            after = tree(project.path)
            try:
                check_call(project, call, result, before, after)
            except AssertionError as exc:
                failures.append(str(exc).splitlines()[0][:400])
                restore_tree(project.path, before)


@pytest.mark.cost(55)
@pytest.mark.slow
def test_every_command_survives_hostile_arguments(tmp_path):
    commands = [name for name in autotune.COMMANDS]
    assert {"init", "run", "log", "explain", "status", "stop", "resume", "repair", "rebaseline",
            "restore", "doctor", "clear", "version"} <= set(commands)
    rng = random.Random(SEED)
    rng.shuffle(commands)
    lanes = [commands[0::2], commands[1::2]]
    failures = [[], []]
    projects = [make_project(tmp_path / ("repo%d" % i), config=CONFIG) for i in range(2)]
    for project in projects:
        project.ok("log", "--status", "keep", "--metric", "100", "--description", "baseline")
    threads = [threading.Thread(target=fuzz_lane, args=(projects[i], lanes[i], random.Random(SEED + i),
                                                        failures[i])) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    problems = failures[0] + failures[1]
    assert not problems, "%d hostile calls misbehaved:\n%s" % (len(problems), "\n".join(problems))


# ----------------------------------------------------- unreadable files ----

@pytest.mark.cost(5)
@pytest.mark.slow
def test_unreadable_session_files(tmp_path):
    """A config, log or state that cannot be read (mode 000, or a directory in its
    place, which blocks even root) is a clear error or ignored, never a traceback."""
    project = make_project(tmp_path / "repo", config=CONFIG)
    project.ok("log", "--status", "keep", "--metric", "100", "--description", "baseline")
    root = str(project.path)
    probe = os.path.join(root, "probe")
    with open(probe, "w") as handle:
        handle.write("x")
    os.chmod(probe, 0)
    try:
        open(probe).close()
        chmod_blocks = False  # running as root: mode 000 does not stop reads
    except OSError:
        chmod_blocks = True
    os.unlink(probe)
    cases = []
    # (.autotune.state in the way: test_crash_safety.test_state_that_cannot_be_written...)
    for name in ("autotune.config.json", "autotune.jsonl"):
        cases.append((name, "directory"))
        if chmod_blocks:
            cases.append((name, "mode 000"))
    problems = []
    commands = [["explain"], ["status", "--json"], ["doctor"], ["stop"], ["resume"],
                ["log", "--status", "discard", "--metric", "101", "--description", "d"],
                ["run"], ["init", "--name", "n", "--metric", "time_ms", "--direction", "lower"]]
    for name, how in cases:
        full = os.path.join(root, name)
        saved = open(full, "rb").read() if os.path.isfile(full) else b"{}"
        for args in commands:
            if os.path.isdir(full):
                shutil.rmtree(full)
            elif os.path.exists(full):
                os.chmod(full, 0o644)
                os.unlink(full)
            if how == "directory":
                os.mkdir(full)
            else:
                with open(full, "wb") as handle:
                    handle.write(saved)
                os.chmod(full, 0)
            before = session_bytes(project.path)
            log_before = open(os.path.join(root, "autotune.jsonl"), "rb").read() \
                if os.path.isfile(os.path.join(root, "autotune.jsonl")) else None
            result = run_cli(args, project.path)
            log_after = open(os.path.join(root, "autotune.jsonl"), "rb").read() \
                if os.path.isfile(os.path.join(root, "autotune.jsonl")) else None
            try:
                assert_clean_exit(result, args[0] in AGENT_FACING, "%s as %s: %s" % (name, how, args),
                                  report=args[0] == "doctor")
                if result.rc != 0 and args[0] != "doctor":
                    assert session_bytes(project.path) == before and log_before == log_after, \
                        "%s as %s: %s failed but changed files" % (name, how, args)
            except AssertionError as exc:
                problems.append(str(exc).splitlines()[0][:300])
        if os.path.isdir(full):
            shutil.rmtree(full)
        elif os.path.exists(full):
            os.chmod(full, 0o644)
            os.unlink(full)
        if name != ".autotune.state":
            with open(full, "wb") as handle:
                handle.write(saved)
        run_cli(["status"], project.path)
    if not chmod_blocks:
        sys.stderr.write("\n[hostile] running as root: mode 000 does not block reads; "
                         "only the directory-in-place cases ran\n")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------- a log of junk ----

def junk_lines(rng, good):
    """Lines that are not results: random bytes, JSON that is not an object, and
    objects of the right type with fields of every wrong type."""
    wrong = [None, True, 0, -1, 1e308, "x", "", [], [1, "a"], {}, {"metric": "x"}, "\udc80"]
    config, result = good["config"], good["result"]
    yield random_bytes(rng, 1, 300).replace(b"\n", b" ")
    yield b"\xef\xbb\xbf" + json.dumps(result).encode()   # BOM
    yield b"[1, 2, 3]"
    yield b'"just a string"'
    yield b"{"
    yield b'{"type": "result", "metric": NaN}'
    yield b'{"type": "result", "metric": 1e999}'
    yield b"\x00" * 20
    for template in (config, result):
        for field in sorted(template):
            for value in wrong:
                mutated = dict(template)
                mutated[field] = value
                yield json.dumps(mutated, ensure_ascii=False).encode("utf-8", "surrogatepass")
    for kind in ("control", "rebaseline", "resume", "hook", "unknown"):
        for value in rng.sample(wrong, 3):
            yield json.dumps({"type": kind, "action": value, "snapshot": value, "samples": value,
                              "metric": value, "timestamp": value, "streak": value},
                             ensure_ascii=False).encode("utf-8", "surrogatepass")


@pytest.mark.cost(8)
@pytest.mark.slow
def test_a_log_full_of_junk_lines(tmp_path):
    """A log where most lines are junk: every command still works (junk skipped and
    counted), `log` appends after it with the right index, and nothing crashes."""
    project = make_project(tmp_path / "repo", config=CONFIG)
    project.loop(100, description="baseline")   # run + log --status auto
    project.loop(103, description="second")
    project.set_delay(100)
    lines = open(os.path.join(str(project.path), "autotune.jsonl"), "rb").read().splitlines()
    good = {"config": json.loads(lines[0]), "result": json.loads(lines[1])}
    rng = random.Random(SEED)
    junk = list(junk_lines(rng, good))
    with open(os.path.join(str(project.path), "autotune.jsonl"), "ab") as handle:
        for raw in junk:
            handle.write(raw + b"\n")
        handle.write(lines[0] + b"\n")   # then a sound segment: config and a result
        handle.write(lines[1] + b"\n")
    os.unlink(os.path.join(str(project.path), ".autotune.state"))
    problems = []
    commands = [["explain"], ["explain", "--json"], ["status"], ["status", "--json"], ["doctor"],
                ["doctor", "--json"], ["dashboard"], ["dashboard", "--json"], ["report"],
                ["report", "--json"], ["export"], ["export", "--format", "jsonl"], ["statusline"],
                ["hook", "session-start"], ["hook", "stop"], ["restore", "--list"], ["run"],
                ["log", "--status", "auto", "--description", "after the junk"],
                ["stop"], ["resume"], ["repair"], ["rebaseline", "--repeat", "2"],
                ["init", "--name", "again", "--metric", "time_ms", "--direction", "lower"]]
    known = set(autotune.COMMANDS)
    for args in commands:
        if args[0] not in known:
            continue
        before = session_bytes(project.path)
        stdin = b'{"session_id": "s", "cwd": "%s"}' % str(project.path).encode() \
            if args[0] in ("hook", "statusline") else None
        result = run_cli(args, project.path, input=stdin)
        try:
            assert_clean_exit(result, args[0] in AGENT_FACING, " ".join(args), report=args[0] == "doctor")
            assert not any(w in result.err for w in ("Error:", "Exception:")), "%s -> %r" % (args, result)
            if result.rc != 0 and args[0] != "doctor":
                assert session_bytes(project.path) == before, "%s failed but changed files" % args
        except AssertionError as exc:
            problems.append(str(exc).splitlines()[0][:400])
    assert not problems, "%d commands misbehaved on a junk log:\n%s" % (len(problems), "\n".join(problems))
    results = [json.loads(raw) for raw in open(os.path.join(str(project.path), "autotune.jsonl"), "rb")
               .read().splitlines() if raw.startswith(b'{"type": "result", "index"')]
    assert any(r.get("description") == "after the junk" for r in results)


@pytest.mark.slow
def test_a_junk_line_nested_too_deeply(project):
    """One line of JSON nested deeper than the parser's recursion limit (junk from any
    writer) must be skipped like any other junk line, not stop every command."""
    project.ok("log", "--status", "keep", "--metric", "100", "--description", "baseline")
    with open(os.path.join(str(project.path), "autotune.jsonl"), "ab") as handle:
        handle.write(b'{"a": ' + b"[" * 100000 + b"]" * 100000 + b"}\n")
    problems = []
    for args in (["explain"], ["status", "--json"], ["doctor"],
                 ["log", "--status", "discard", "--metric", "101", "--description", "after"]):
        result = run_cli(args, project.path)
        try:
            assert_clean_exit(result, args[0] in AGENT_FACING, " ".join(args), report=args[0] == "doctor")
        except AssertionError as exc:
            problems.append(str(exc).splitlines()[0][:300])
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_deeply_nested_json_never_escapes_as_internal_error(project):
    """JSON nested just below the parser's limit is accepted by `--asi` then breaks the
    encoder (RecursionError) after git acted; the same for an escaped lone surrogate
    (UnicodeEncodeError). Both must be refused up front like any bad JSON."""
    project.ok("log", "--status", "keep", "--metric", "100", "--description", "baseline")
    for asi in ('{"a":' + "[" * 990 + "]" * 990 + "}", '{"a": "\\udc80"}', '{"\\ud800x": 1}'):
        project.set_delay(95)  # an experiment in the tree: a discard would revert it
        before = session_bytes(project.path)
        result = run_cli(["log", "--status", "discard", "--metric", "101", "--description", "x",
                          "--asi", asi], project.path)
        assert_clean_exit(result, True, "log --asi %s" % asi[:30])
        if result.rc != 0:
            assert session_bytes(project.path) == before
            assert project.read("work.py") == "DELAY_MS = 95\n", "the experiment was reverted by a refused log"
        else:
            last = project.results()[-1]
            assert last["asi"] == json.loads(asi)
