"""Fuzz (issue 12, point 10): randomized hostile log lines, configs, arguments and
benchmark output go through every command, every hook and the status line. Any
internal error, traceback, raw control character in text output (or in a JSON string
a hook hands to Claude Code for display), or unescaped markup in the HTML report fails.

Seeded (the same inputs on every machine) and bounded in time: rounds run until
BUDGET_S seconds have passed (at least MIN_ROUNDS), so it stays a few seconds of
`make test` however slow the machine; a failure prints the seed and round to replay."""

import json
import os
import random
import shutil
import time

import pytest

from conftest import clean_env, make_project, run_cli
from support.html_tags import TagCollector
from support.reliability import assert_clean_exit, autotune

SEED = 12
BUDGET_S = 7.0
MIN_ROUNDS = 2
MARK = "x-evil"  # every hostile markup carries it: the HTML must never hold it as a tag

CONTROLS = ["\x1b[2J", "\x1b]0;pwned\x07", "\x1b]52;c;cHduZWQ=\x07", "\x9b31m", "\x9d0;t\x9c",
            "\x07", "\x08", "\x00", "\x7f", "\x85", "\r", "\x1bc", "\x1bP+q\x1b\\", "\t", "\x0b"]
MARKUP = ["<%s>" % MARK, "<script %s>alert(1)</script>" % MARK, "\"><%s a='" % MARK,
          "'><img %s src=x onerror=alert(1)>" % MARK, "&lt;%s&gt;" % MARK, "]]><%s/>" % MARK]
FORMULAS = ["=HYPERLINK(\"http://x\")", "+1+2", "-2+3", "@SUM(A1)", "\t=cmd", "\r=cmd", "=1"]
SHELL = ["$(touch PWNED)", "`touch PWNED`", "'; touch PWNED; '", "\"$(touch PWNED)\""]
NUMBERS = [1.7976931348623157e308, -1.79e308, 5e-324, -5e-324, 2.2250738585072014e-308, 0, -0.0,
           1e-300, 1e300, 7, 3.5]
JUNK = [None, True, [], {}, ["<%s>" % MARK], {"<%s>" % MARK: "\x1b[2J"}, 12345, -1, 1e308]


def hostile_text(rng):
    parts = [rng.choice(CONTROLS), rng.choice(MARKUP), rng.choice(FORMULAS), rng.choice(SHELL),
             "text", "\u202e", "é"]
    rng.shuffle(parts)
    text = "".join(parts[:rng.randint(1, len(parts))])
    return rng.choice(FORMULAS) + text if rng.random() < 0.3 else text


def hostile_value(rng):
    roll = rng.random()
    if roll < 0.6:
        return hostile_text(rng)
    if roll < 0.8:
        return rng.choice(NUMBERS)
    return rng.choice(JUNK)


def hostile_log_lines(rng, good_config, good_result):
    """Config and result lines (and the other kinds) with hostile values in their fields."""
    lines = []
    config = dict(good_config)
    for field in ("name", "metric_unit", "direction", "mode", "objective", "segment"):
        if rng.random() < 0.5:
            config[field] = hostile_value(rng)
    if rng.random() < 0.3:
        config["metric_name"] = hostile_value(rng)
    lines.append(config)
    for index in range(rng.randint(3, 7)):
        result = dict(good_result)
        result["index"] = index + 1 if rng.random() < 0.8 else hostile_value(rng)
        result["status"] = rng.choice(["keep", "discard", "crash", "checks_failed"])
        result["metric"] = rng.choice(NUMBERS)
        for field in ("description", "commit", "verdict", "health", "failure", "recovery", "reason",
                      "timestamp", "mode", "files"):
            if rng.random() < 0.5:
                result[field] = hostile_value(rng)
        result["metrics"] = {hostile_text(rng) if rng.random() < 0.3 else "mem_mb": rng.choice(NUMBERS + JUNK)}
        result["asi"] = {hostile_text(rng): hostile_value(rng)}
        if rng.random() < 0.3:
            result["samples"] = [rng.choice(NUMBERS) for _ in range(3)]
        if rng.random() < 0.2:
            result["confidence"] = {"label": hostile_text(rng), "score": rng.choice(NUMBERS)}
        lines.append(result)
    lines.append({"type": "control", "action": rng.choice(["stop", "resume", "repair"]),
                  "reason": hostile_text(rng), "by": hostile_value(rng)})
    if rng.random() < 0.5:
        lines.append({"type": "control", "action": "resume"})
    lines.append({"type": "rebaseline", "metric": rng.choice(NUMBERS),
                  "samples": [rng.choice(NUMBERS), rng.choice(NUMBERS)]})
    return lines


def hostile_config(rng):
    """A config with hostile strings where strings are allowed (or a broken one)."""
    roll = rng.random()
    if roll < 0.4:
        return json.dumps({"repeat": 1, "health": {"maxNoImprovementRuns": 1000, "maxCrashStreak": 1000}})
    if roll < 0.6:
        return json.dumps({"repeat": 1, "_comment": hostile_text(rng),
                           "guardrails": {"mem_mb": {"max": rng.choice(NUMBERS)}}})
    if roll < 0.8:
        return json.dumps({"repeat": 1, hostile_text(rng): 1})  # unknown field: an error naming it
    return json.dumps({"repeat": 1, "guardrails": {hostile_text(rng): {"max": 1}}})


def hostile_benchmark(rng):
    """A benchmark printing progress with CRs, escapes, markup and METRIC lines."""
    lines = []
    for _ in range(rng.randint(1, 6)):
        text = hostile_text(rng).replace("\x00", "")
        lines.append("printf '%%s\\n' %s" % autotune._shell_quote(text))
    value = rng.choice(NUMBERS)
    lines.append("printf '50%%%%\\rMETRIC time_ms=%r\\n'" % value)
    lines.append("printf 'METRIC mem_mb=%r\\n'" % rng.choice(NUMBERS))
    lines.append("printf '%%s\\n' %s" % autotune._shell_quote("METRIC %s=1" % hostile_text(rng).replace("\x00", "")))
    return "#!/usr/bin/env bash\n" + "\n".join(lines) + "\n"


REPORT_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "div", "span", "b",
               "table", "tr", "th", "td", "code", "svg", "rect", "line", "text", "path", "circle"}
REPORT_ATTRS = {"lang", "charset", "name", "content", "class", "style", "xmlns", "viewbox", "role",
                "aria-label", "x", "y", "width", "height", "x1", "x2", "y1", "y2", "text-anchor", "d",
                "cx", "cy", "r", "data-index", "data-segment"}


def control_chars(text, allowed="\n"):
    return sorted({"%r" % ch for ch in text if (ord(ch) < 0x20 or 0x7f <= ord(ch) <= 0x9f)
                   and ch not in allowed})


def check_text(label, text, allow_sgr=False):
    if allow_sgr:  # the status line's own colours: ESC [ digits m
        import re
        text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    bad = control_chars(text)
    assert not bad, "%s printed control characters %s: %r" % (label, bad, text[:400])


def check_json_strings(label, value):
    """Texts a hook answer carries are shown to a person: no control but newlines."""
    if isinstance(value, str):
        bad = control_chars(value)
        assert not bad, "%s: a JSON string holds %s: %r" % (label, bad, value[:300])
    elif isinstance(value, dict):
        for key, item in value.items():
            check_json_strings(label, key)
            check_json_strings(label, item)
    elif isinstance(value, list):
        for item in value:
            check_json_strings(label, item)


def check_call(label, args, result, agent_facing):
    assert_clean_exit(result, agent_facing, label, report=args[0] == "doctor")
    raw = result.out + result.err
    if result.json is not None or args[0] in autotune.AGENT_COMMANDS or "--json" in args:
        bad = control_chars(result.out)  # JSON escapes them all, DEL and C1 too
        assert not bad, "%s: raw control characters %s in JSON output %r" % (label, bad, result.out[:300])
        check_text(label + " (stderr)", result.err)
        if args[0] == "hook" and result.json is not None:
            check_json_strings(label, result.json)
    elif args[0] == "export":  # tab-separated values: the tabs are the format
        check_text(label, raw.replace("\t", " "))
    else:
        check_text(label, raw, allow_sgr=args[0] == "statusline")  # coloured by default


def arg(rng):
    """Hostile text as a command-line argument (argv cannot hold NUL)."""
    return hostile_text(rng).replace("\x00", "")


def commands_for(rng, project):
    root = str(project.path)
    payload = {"session_id": "fuzz", "cwd": root, "stop_hook_active": False}
    guard = dict(payload, tool_name="Bash", tool_input={"command": "echo %s > autotune.jsonl" % autotune._shell_quote(
        arg(rng))})
    edit = dict(payload, tool_name="Write", tool_input={"file_path": "autotune.sh", "content": arg(rng)})
    status = {"workspace": {"current_dir": root}, "cost": {"total_cost_usd": rng.choice(NUMBERS)},
              "context_window": {"used_percentage": rng.choice(NUMBERS)}}
    calls = [["explain"], ["explain", "--json"], ["status"], ["status", "--json"], ["dashboard"],
             ["dashboard", "--full", "--json"], ["report"], ["report", "--json"],
             ["report", "--html", "report.html"], ["export"], ["export", "--format", "csv"],
             ["export", "--format", "jsonl"], ["doctor"], ["doctor", "--json"], ["restore", "--list"],
             ["version"], ["stop", "--reason", arg(rng)], ["resume"], ["repair"],
             ["run", "--repeat", "1"], ["log", "--status", "auto", "--description", arg(rng),
                                        "--asi", json.dumps({arg(rng): arg(rng)})],
             ["log", "--status", "discard", "--description", arg(rng), "--metric",
              repr(rng.choice(NUMBERS)), "--force", "--reason", arg(rng)],
             ["init", "--name", arg(rng), "--metric", rng.choice(["time_ms", arg(rng)]),
              "--unit", rng.choice(["ms", "µs", arg(rng)]), "--direction", "lower"],
             ["rebaseline", "--repeat", "1"], ["verify", "--pairs", "2"],
             ["hook", "session-start"], ["hook", "stop"], ["hook", "pre-tool-use"], ["hook", "pre-tool-use"],
             ["statusline"], ["statusline", "--no-color"], ["restore", "1"], ["restore", "1.2", "--json"],
             ["setup-permissions", "--json"], ["clear"], ["start", arg(rng)], ["detect"]]
    assert {args[0] for args in calls} == set(autotune.COMMANDS), "a command is not fuzzed"
    data = {"session-start": payload, "stop": payload, "pre-tool-use": guard}
    out = []
    for args in calls:
        stdin = data.get(args[1]) if args[0] == "hook" else status if args[0] == "statusline" else None
        if args == ["hook", "pre-tool-use"]:
            data["pre-tool-use"] = edit  # the second one: an edit of the benchmark
        out.append((args, None if stdin is None else json.dumps(stdin).encode()))
    rng.shuffle(out)
    return out


def one_round(tmp_path, rng, number, good):
    path = tmp_path / ("round%d" % number)
    project = make_project(path, benchmark=hostile_benchmark(rng), init=False)
    project.write("autotune.config.json", hostile_config(rng))
    lines = [good["config"]] + hostile_log_lines(rng, good["config"], good["result"])
    with open(os.path.join(str(path), "autotune.jsonl"), "wb") as handle:
        for line in lines:
            handle.write(json.dumps(line, ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n")
    if rng.random() < 0.3:
        with open(os.path.join(str(path), "autotune.jsonl"), "ab") as handle:
            handle.write(b'{"type": "result", "description": "\x1b[2J torn')  # a truncated last line
    env = clean_env(PATH=os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                                         if p and not os.path.exists(os.path.join(p, "claude"))))
    problems = []
    for args, data in commands_for(rng, project):
        label = "seed %d round %d: %s" % (SEED, number, [a[:40] for a in args])
        result = run_cli(args, path, env=env, input=data, timeout=60)
        try:
            check_call(label, args, result, args[0] in autotune.AGENT_COMMANDS)
            if args[:2] == ["report", "--html"] and result.rc == 0:
                with open(os.path.join(str(path), "report.html"), encoding="utf-8") as handle:
                    page = handle.read()
                parser = TagCollector()
                parser.feed(page)
                assert parser.tags <= REPORT_TAGS, "%s: unexpected tags %s" % (label, parser.tags - REPORT_TAGS)
                assert parser.attrs <= REPORT_ATTRS, "%s: unexpected attributes %s" % (
                    label, parser.attrs - REPORT_ATTRS)
                assert "<" + MARK not in page and "<script" not in page, "%s: unescaped markup" % label
                assert not control_chars(page, "\n"), "%s: control characters in the report" % label
        except AssertionError as exc:
            problems.append(str(exc)[:600])
    assert not os.path.exists(os.path.join(str(path), "PWNED")), "a hostile value ran as code"
    shutil.rmtree(str(path), ignore_errors=True)
    return problems


@pytest.mark.cost(10)
@pytest.mark.slow
def test_hostile_input_through_every_command_hook_and_status_line(tmp_path):
    base = make_project(tmp_path / "base")
    base.ok("log", "--status", "keep", "--metric", "100", "--description", "baseline")
    lines = base.log_lines()
    good = {"config": lines[0], "result": [line for line in lines if line.get("type") == "result"][0]}
    rng = random.Random(SEED)
    started, number, problems = time.monotonic(), 0, []
    while number < MIN_ROUNDS or time.monotonic() - started < BUDGET_S:
        problems += one_round(tmp_path, rng, number, good)
        number += 1
    assert not problems, "%d problems in %d rounds:\n%s" % (len(problems), number, "\n".join(problems))
