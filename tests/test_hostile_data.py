"""Hostile input stays data (issue 12): names, numbers and text from the agent, the
benchmark's output, the config and the log never become code, control, markup, a
formula or unbounded work. Each test feeds the hostile input and checks that nothing
ran, nothing leaked and the command still answers."""

import csv
import io
import json
import os
import re
import shlex
import subprocess
import sys
import uuid

import pytest

from conftest import clean_env, make_project
from support.html_tags import TagCollector
from support.reliability import assert_clean_exit, autotune

CONFIG = {"health": {"maxNoImprovementRuns": 1000, "maxCrashStreak": 1000}, "repeat": 1}
CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def no_controls(text):
    found = CONTROL.findall(text)
    assert not found, "control characters %r reached the terminal: %r" % (sorted(set(found)), text[:500])


def bench_project(tmp_path, body, config=CONFIG, init=True, metric="time_ms"):
    project = make_project(tmp_path / "repo", benchmark="#!/usr/bin/env bash\n" + body, init=False,
                           config=config)
    if init:
        project.ok("init", "--name", "hostile", "--metric", metric, "--direction", "lower")
    return project


def append_lines(project, lines):
    with open(os.path.join(str(project.path), "autotune.jsonl"), "ab") as handle:
        for line in lines:
            handle.write(json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n")


# ------------------------------------------------------ 1. no code from a name ----

@pytest.mark.slow
def test_a_metric_name_never_becomes_code(bare_project, tmp_path):
    marker = str(tmp_path / "P")
    evil = 'x"+str(__import__("os").system("touch %s"))+"' % marker
    before = sorted(os.listdir(str(bare_project.path)))
    result = bare_project.cli("init", "--name", "n", "--metric", evil, "--direction", "lower",
                              "--scaffold", "--benchmark", "true", "--unit", "ms")
    assert result.rc == 1 and result.json["error"] == "bad_metric_name", result
    assert "letter" in result.json["message"] and "\n" not in result.json["message"]
    assert sorted(os.listdir(str(bare_project.path))) == before, "a refused init wrote files"
    for unit in ("ms$(touch %s)" % marker, "ms'", "`id`", "a\x1b[2J", "x" * 40):
        refused = bare_project.cli("init", "--name", "n", "--metric", "t_ms", "--unit", unit,
                                   "--direction", "lower", "--scaffold", "--benchmark", "true")
        assert refused.rc == 1 and refused.json["error"] == "bad_unit", refused
    assert sorted(os.listdir(str(bare_project.path))) == before
    assert not os.path.exists(marker)


def test_scaffold_quotes_every_value(bare_project, tmp_path):
    marker = str(tmp_path / "Q")
    os.unlink(os.path.join(str(bare_project.path), "autotune.sh"))
    name = "fast \"$(touch %s)\" '`touch %s`'\nnext line" % (marker, marker)
    workload = "true; echo '$(touch %s)' >/dev/null" % marker
    bare_project.ok("init", "--name", name, "--metric", "t:%-a/b.c_ms", "--unit", "ms", "--direction", "lower",
                    "--scaffold", "--benchmark", workload)
    script = bare_project.read("autotune.sh")
    assert "print('METRIC t:%-a/b.c_ms=' + format(elapsed * 1000.0, \".6g\"))" in script
    assert "WORKLOAD=" + shlex.quote(workload) in script
    assert "\nnext line" not in script, "the name broke out of its comment line"
    ran = bare_project.ok("run", "--repeat", "1")
    assert ran["passed"] and "t:%-a/b.c_ms" == ran["pname"] and ran["primary"] >= 0, ran
    assert not os.path.exists(marker)


@pytest.mark.slow
def test_benchmark_changed_suggests_a_command_that_pastes_exactly(tmp_path):
    project = make_project(tmp_path / "repo", init=False, config=CONFIG)
    name = "it's $(touch PWNED) `x` \\ \"q\"\tand\x1b[2J"
    project.ok("init", "--name", name, "--metric", "time_ms", "--unit", "µs", "--direction", "lower")
    project.ok("run")
    project.ok("log", "--status", "keep", "--description", "baseline")
    project.write("autotune.sh", project.read("autotune.sh") + "# changed\n")
    result = project.cli("run")
    assert result.rc == 1 and result.json["error"] == "benchmark_changed", result
    command = result.json["message"].split("Start a new segment with it: ", 1)[1]
    assert command.startswith("autotune init ")
    # bash reads the pasted line back into exactly the arguments of the segment
    argv = subprocess.run(["bash", "-c", "printf '%s\\0' " + command[len("autotune "):]],
                          stdout=subprocess.PIPE, check=True).stdout.split(b"\0")[:-1]
    assert [a.decode("utf-8") for a in argv] == ["init", "--name", name, "--metric", "time_ms", "--unit", "µs",
                                                  "--direction", "lower"]
    text = project.cli("doctor")  # the person-facing form of the same message
    no_controls(text.out + text.err)
    assert not project.exists("PWNED")


# ----------------------------------------------- 2. the timeout always holds ----

def test_the_timeout_holds_after_the_benchmark_closes_its_output(tmp_path):
    project = bench_project(tmp_path, 'echo "METRIC time_ms=5"\nexec >/dev/null 2>&1\nsleep 30\n')
    result = project.cli("run", "--timeout", "1", "--repeat", "1", timeout=25)
    assert result.rc == 0, result
    assert result.json["timeout"] is True and result.json["crashed"] is True, result.json
    assert "timed out" in result.json["reason"]


# ------------------------------------------------------------ 3. bounded work ----

@pytest.mark.slow
def test_distinct_metric_names_are_capped_and_counted_once(tmp_path):
    cap = autotune.MAX_METRIC_NAMES
    body = ("awk 'BEGIN { for (i = 0; i < 5000; i++) printf \"METRIC m%d=1\\n\", i }'\n"
            "echo 'METRIC time_ms=42'\n")
    project = bench_project(tmp_path, body)
    ran = project.ok("run", "--repeat", "2")
    assert ran["primary"] == 42, "the primary metric is kept after the cap"
    assert len(ran["metrics"]) == cap
    warnings = [w for w in ran.get("warnings", []) if "METRIC" in w]
    assert len(warnings) == 1 and "4900" in warnings[0], ran.get("warnings")
    logged = project.ok("log", "--status", "keep", "--description", "baseline")
    assert logged["status"] == "keep"
    line = open(os.path.join(str(project.path), "autotune.jsonl"), "rb").read().splitlines()[-1]
    assert len(line) < 20000, "one result added %d bytes to the log" % len(line)
    too_many = json.dumps({"m%d" % i: 1 for i in range(cap + 1)})
    before = project.snapshot_bytes()
    refused = project.cli("log", "--status", "discard", "--description", "d", "--metric", "1",
                          "--metrics", too_many, "--force")
    assert refused.rc == 1 and refused.json["error"] == "bad_metrics", refused
    assert project.snapshot_bytes() == before


@pytest.mark.slow
def test_a_result_line_with_huge_metrics_keeps_the_state_small(tmp_path):
    project = bench_project(tmp_path, 'echo "METRIC time_ms=5"\n')
    append_lines(project, [{"type": "result", "index": 1, "status": "keep", "metric": 5, "segment": 1,
                            "metrics": {"m%d" % i: 1 for i in range(200000)}, "description": "hand-made"}])
    os.unlink(os.path.join(str(project.path), ".autotune.state"))
    assert project.cli("explain").rc == 0
    assert os.path.getsize(os.path.join(str(project.path), ".autotune.state")) < 64 * 1024
    state = project.state()
    assert len(state["best"]["metrics"]) == autotune.MAX_METRIC_NAMES


# ----------------------------------------------- 4. extreme finite numbers ----

EXTREMES = ["1.7976931348623157e308", "-1.79e308", "5e-324", "4e-324", "-5e-324", "1e-310"]


@pytest.mark.slow
def test_extreme_numbers_through_every_command(tmp_path):
    body = 'v=$(cat value.txt)\necho "METRIC time_ms=$v"\necho "METRIC mem_mb=$v"\n'
    project = bench_project(tmp_path, body, init=False)
    project.write("value.txt", EXTREMES[0] + "\n")
    project.git("add", "value.txt")
    project.git("commit", "-q", "-m", "value")
    project.ok("init", "--name", "extremes", "--metric", "time_ms", "--direction", "lower")
    logged = 0
    for value in EXTREMES:
        project.write("value.txt", value + "\n")
        ran = project.ok("run", "--repeat", "2")
        assert ran["passed"] and ran["primary"] == float(value), ran
        count = len(project.results())
        result = project.cli("log", "--status", "auto", "--description", "value %s" % value)
        assert result.rc == 0 and "error" not in result.json, result
        logged += 1
        assert len(project.results()) == count + 1 == logged, "log wrote and failed, or wrote twice"
        assert project.results()[-1]["metric"] == float(value), "the measurement changed on its way to the log"
    forced = project.ok("log", "--status", "discard", "--description", "typed", "--metric", "-1.7976931348623157e308",
                        "--force", "--reason", "test")
    assert forced["metric"] == -1.7976931348623157e308
    for args in (["explain"], ["explain", "--json"], ["status"], ["status", "--json"], ["dashboard"],
                 ["dashboard", "--json"], ["report"], ["report", "--html", "r.html"], ["export"],
                 ["export", "--format", "csv"], ["export", "--format", "jsonl"], ["doctor"],
                 ["rebaseline", "--repeat", "2"]):
        result = project.cli(*args)
        assert_clean_exit(result, args[0] in autotune.AGENT_COMMANDS, " ".join(args), report=args[0] == "doctor")
        assert result.rc == 0 or args[0] == "doctor", result
    for stdin, args in ((b'{"cwd": "%s"}' % str(project.path).encode(), ["statusline"]),
                        (b'{"cwd": "%s", "session_id": "s"}' % str(project.path).encode(), ["hook", "session-start"])):
        result = project.cli(*args, input=stdin)
        assert result.rc == 0 and not result.err, result


def test_arithmetic_helpers_never_overflow():
    big, neg = 1.7976931348623157e308, -1.79e308
    assert autotune.median([big, big]) == big and autotune.median([neg, big]) is not None
    assert autotune._round(big - neg) is None and autotune._fmt(big - neg) == "overflow"
    assert autotune.pct_change(big, neg) is None and autotune.pct_change(1.0, 5e-324) is None
    assert autotune.fmt_pct(float("inf")) == "overflow"
    assert 0.0 <= autotune.fraction(big, neg, big) <= 1.0
    assert autotune.nice_ticks(neg, big) == [neg, big] and autotune.nice_ticks(0, 5e-324)
    assert autotune.sparkline([big, neg, 5e-324, None], 2)
    assert autotune._round(5e-324) == 5e-324 and autotune._round(1.23456789e-7) == 1.23457e-07
    state = autotune.State(config={"direction": "lower"}, baseline={"metric": big}, best={"metric": neg})
    conf = autotune.confidence([neg, 0.0, big], state)
    assert conf["label"] == "overflow" and conf["best_delta"] is None
    json.dumps(conf, allow_nan=False)
    verdict, evidence = autotune.assess([neg, neg], [big, big], "lower", 0.05, deterministic=True)
    assert verdict == "improved"
    json.dumps(evidence, allow_nan=False)


# -------------------------------------------- 5. nothing reaches a terminal ----

HOSTILE = "A\x1b]0;title\x07B\x1b[2JC\x1b]52;c;cHduZWQ=\x07D\x9b31mE\x9d8;;http://x\x9cF\x07\x08\x7f\x85G\rH"


def hostile_session(tmp_path):
    project = bench_project(tmp_path, 'echo "METRIC time_ms=5"\necho "%s" | tr -d "\\n"\n' % "x", init=False)
    project.ok("init", "--name", HOSTILE, "--metric", "time_ms", "--unit", "ms", "--direction", "lower")
    project.ok("run")
    project.ok("log", "--status", "keep", "--description", HOSTILE, "--asi", json.dumps({HOSTILE: HOSTILE}))
    append_lines(project, [
        {"type": "result", "index": 2, "status": "discard", "metric": 6, "segment": 1, "description": HOSTILE,
         "commit": HOSTILE, "verdict": HOSTILE, "health": HOSTILE, "failure": HOSTILE, "recovery": HOSTILE,
         "reason": HOSTILE, "metrics": {"time_ms": 6, HOSTILE: 1}, "asi": {HOSTILE: [HOSTILE]}, "active": True},
        {"type": "control", "action": "stop", "reason": HOSTILE, "by": HOSTILE},
        {"type": "control", "action": "resume"}])
    return project


@pytest.mark.slow
def test_no_control_character_reaches_a_terminal(tmp_path):
    project = hostile_session(tmp_path)
    root = str(project.path).encode()
    texts = [["explain"], ["status"], ["dashboard"], ["dashboard", "--full"], ["report"], ["doctor"],
             ["export"], ["restore", "--list"], ["stop", "--reason", HOSTILE], ["resume"]]
    for args in texts:
        result = project.cli(*args)
        assert result.rc in (0, 1), result
        no_controls((result.out + result.err).replace("\t", " ") if args[0] == "export" else result.out + result.err)
    for args, stdin in ((["statusline", "--no-color"], b'{"cwd": "%s"}' % root),
                        (["hook", "session-start"], b'{"cwd": "%s", "session_id": "s"}' % root),
                        (["explain", "--json"], None), (["log", "--status", "discard", "--description",
                                                          HOSTILE, "--metric", "7"], None)):
        result = project.cli(*args, input=stdin)
        assert result.rc == 0, result
        no_controls(result.out + result.err)  # JSON escapes them all, DEL and C1 too
    line = project.cli("statusline", input=b'{"cwd": "%s"}' % root)  # coloured: only its own SGR
    assert line.rc == 0 and "\x1b[" in line.out, line
    no_controls(re.sub(r"\x1b\[[0-9;]*m", "", line.out).replace("\n", " "))
    context = json.loads(project.cli("hook", "session-start", input=b'{"cwd": "%s", "session_id": "s"}' % root)
                         .out)["hookSpecificOutput"]["additionalContext"]
    no_controls(context.replace("\n", " "))  # what Claude Code shows decodes the JSON first


def test_colours_are_added_after_the_text_is_cleaned():
    data = {"name": HOSTILE, "metric": "t", "unit": HOSTILE, "direction": "lower", "segment": 1, "segments": 1,
            "active": True, "mode": HOSTILE, "health": HOSTILE, "failure": HOSTILE, "recovery": HOSTILE,
            "reason": HOSTILE, "why": HOSTILE, "baseline": 1, "best": 2, "best_pct": 1.0, "best_commit": HOSTILE,
            "best_description": HOSTILE, "last_metric": 1, "last_status": HOSTILE, "last_index": HOSTILE,
            "last_description": HOSTILE, "no_improve": 0, "crash_streak": 0, "keep_streak": 0, "heals": 0,
            "max_heals": 3, "max_no_improve": 5, "max_crash_streak": 2, "runs": 1, "kept": 1, "discarded": 0,
            "crashed": 0, "checks_failed": 0, "max_iterations": None, "path": HOSTILE, "total_runs": 1,
            "confidence": {"label": HOSTILE, "score": 1.0}, "next": HOSTILE, "next_text": HOSTILE,
            "warnings": [HOSTILE], "rows": [{"index": HOSTILE, "status": HOSTILE, "metric": 1, "vs_best_pct": None,
                                             "commit": HOSTILE, "description": HOSTILE}],
            "shown": 1, "total": 1, "trend": "", "best_trend": "", "generated": HOSTILE}
    colors = autotune.Colors(None, force=True)
    ours = {"\x1b[%sm" % code for code in autotune.Colors.CODES.values()} | {"\x1b[0m"}
    for render in (autotune.render_explain, autotune.render_status, autotune.render_dashboard):
        text = render(dict(data), colors)
        sequences = set(re.findall(r"\x1b\[[0-9;]*m", text))
        assert sequences and sequences <= ours, (render.__name__, sequences - ours)
        no_controls(re.sub(r"\x1b\[[0-9;]*m", "", text).replace("\n", " "))


@pytest.mark.parametrize("text,expected", [
    ("plain é ✓", "plain é ✓"), ("a\x1b[2Jb", "ab"), ("a\x1b]0;t\x07b", "ab"), ("a\x1b]52;c;eA==\x1b\\b", "ab"),
    ("a\x9b31mb", "ab"), ("a\x9d0;t\x9cb", "ab"), ("a\x1bcb", "ab"), ("a\x00\x07\x7f\x85b", "ab"),
    ("a\tb\rc", "a b c"), ("line\nnext", "line\nnext"), ("\x1b[31mred\x1b[0m", "red"),
    ("a\x1bP+q\x1b\\b", "ab"), ("trailing\x1b", "trailing"), ("\x1b[", "")])
def test_strip_controls(text, expected):
    assert autotune.strip_controls(text) == expected
    assert not CONTROL.findall(autotune.strip_controls(text, keep=""))


# ------------------------------------------------ 6. nothing reaches a browser ----

def test_the_html_report_escapes_every_field(tmp_path):
    project = bench_project(tmp_path, 'echo "METRIC time_ms=5"\n')
    evil = "<x-evil onload=alert(1)>\"'&"
    config = json.loads(open(os.path.join(str(project.path), "autotune.jsonl"), "rb").read().splitlines()[0])
    config.update(name=["<x-evil>", 1], metric_name=evil, metric_unit=evil, direction=evil, segment=2, mode=evil)
    row = {"type": "result", "index": evil, "status": "keep", "metric": 5, "segment": 2, "description": evil,
           "commit": evil, "verdict": evil, "health": evil, "failure": evil, "recovery": evil, "reason": "heal:" + evil,
           "timestamp": evil, "metrics": {evil: 1}, "asi": {evil: evil, "n": {"<x-evil>": 1}}, "files": [evil]}
    config2 = dict(config, name=12345, metric_name={"<x-evil>": 1}, segment=3)
    append_lines(project, [config, row, dict(row, status="discard", metric=4, index=7), config2,
                           dict(row, segment=3, name=evil)])
    result = project.cli("report", "--html", "r.html")
    assert result.rc == 0, result
    page = project.read("r.html")
    parser = TagCollector()
    parser.feed(page)
    assert "x-evil" not in parser.tags and not any("onload" in a for a in parser.attrs), (parser.tags, parser.attrs)
    assert "<x-evil" not in page and "&lt;x-evil onload=alert(1)&gt;&quot;&#x27;&amp;" in page
    assert "=\"<" not in page and "='<" not in page, "a value reached an attribute unescaped"


# --------------------------------------------- 7. nothing reaches a spreadsheet ----

FORMULA_CELLS = ["=HYPERLINK(\"http://x\",\"y\")", "+1+2", "-2+3", "@SUM(A1)", "\t=1+1", "\r=1+1",
                 " =1+1", "=cmd|' /C calc'!A0"]


def test_export_neutralizes_formulas_and_keeps_numbers(tmp_path):
    project = bench_project(tmp_path, 'echo "METRIC time_ms=-5"\necho "METRIC mem_mb=-2.5"\n',
                            metric="time_ms")
    project.ok("run")
    project.ok("log", "--status", "keep", "--description", FORMULA_CELLS[0])
    lines = [{"type": "result", "index": i + 2, "status": "discard", "metric": -7, "segment": 1,
              "description": cell, "commit": cell, "verdict": cell, "metrics": {"mem_mb": -3}}
             for i, cell in enumerate(FORMULA_CELLS)]
    append_lines(project, lines)
    for fmt in ("csv", "tsv"):
        result = project.cli("export", "--format", fmt)
        assert result.rc == 0, result
        if fmt == "csv":
            table = list(csv.reader(io.StringIO(result.out)))
        else:
            table = [line.split("\t") for line in result.out.splitlines()]
        header, rows = table[0], table[1:]
        for row in rows:
            cells = dict(zip(header, row))
            assert cells["time_ms"] in ("-5", "-7") and cells["mem_mb"] in ("-2.5", "-3"), cells
            for name in ("description", "commit", "verdict"):
                text = cells[name]
                assert text.lstrip(" ")[:1] not in ("=", "+", "-", "@") or text.startswith("'"), (fmt, name, text)
                assert text[:1] not in ("\t", "\r"), (fmt, text)


# ------------------------------------------------------- 8. the METRIC grammar ----

@pytest.mark.parametrize("line,expected", [
    ("METRIC time_ms=5", ("time_ms", 5.0)),
    ("50%\rMETRIC time_ms=5", ("time_ms", 5.0)),
    ("progress 1\rprogress 2\rMETRIC a=1\r", ("a", 1.0)),
    ("METRIC x=1\r\n", ("x", 1.0)),
    ("  METRIC\t x \t= \t-2.5e-3  ", ("x", -0.0025)),
    ("METRIC x=+.5", ("x", 0.5)),
    ("METRIC x=5.", ("x", 5.0)),
    ("METRIC x=1E+3", ("x", 1000.0)),
    ("METRIC x=5e-324", ("x", 5e-324)),
    ("METRIC x=1.7976931348623157e308", ("x", 1.7976931348623157e308)),
    ("METRIC a/b:c%-d.e_f=1", ("a/b:c%-d.e_f", 1.0)),
    ("METRIC _x=1", ("_x", 1.0)),
    ("METRIC x=1_000", None),
    ("METRIC x=\u0661\u0662", None),          # Arabic-Indic digits
    ("METRIC x=\uff11", None),                # a full-width digit
    ("METRIC x=1\u00a0", None),               # a no-break space is not a blank
    ("METRIC x=0x1A", None),
    ("METRIC x=inf", None), ("METRIC x=nan", None), ("METRIC x=Infinity", None),
    ("METRIC x=1e999", None),
    ("METRIC x=", None), ("METRIC =5", None), ("METRIC x", None), ("METRIC x=5 ms", None),
    ("METRIC x=5=6", None), ("METRIC x y=5", None), ("METRICx=5", None),
    ("METRIC 99th_ms=5", ("99th_ms", 5.0)), ("METRIC -x=5", None), ("METRIC .x=5", None), ("METRIC x$(id)=5", None), ("METRIC x\"=5", None),
    ("METRIC \u00e9=5", None), ("METRIC x\x1b[2J=5", None), ("METRIC " + "a" * 129 + "=1", None),
    ("METRIC " + "a" * 128 + "=1", ("a" * 128, 1.0)),
    ("METRIC __proto__=1", None), ("METRIC constructor=1", None),
    ("# METRIC x=1", None), ("the METRIC x=1", None), ("metric x=1", None), ("", None),
])
def test_metric_grammar(line, expected):
    assert autotune.parse_metric_line(line) == expected
    scanner = autotune.OutputScanner()
    scanner.feed(("noise\n" + line + "\nafter\n").encode("utf-8"))
    scanner.close()
    assert scanner.metrics == (dict([expected]) if expected else {}), "the scanner and the parser disagree"


def test_a_metric_after_a_progress_bar_is_found(tmp_path):
    project = bench_project(tmp_path, "printf '10%%\\r50%%\\rMETRIC time_ms=5\\n'\n"
                                      "printf 'METRIC mem_mb=1_000\\nMETRIC n=\\xd9\\xa1\\n'\n")
    ran = project.ok("run", "--repeat", "1")
    assert ran["passed"] and ran["primary"] == 5 and ran["metrics"] == {}, ran


# ---------------------------------------------- 9. descendants cannot escape ----

def escaped_sleepers(tag):
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/cmdline" % name, "rb") as handle:
                    if tag.encode() in handle.read():
                        found.append(int(name))
            except OSError:
                pass
    return found


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the subreaper is Linux's")
@pytest.mark.parametrize("ending", ["exit", "timeout"])
def test_descendants_cannot_escape_the_sweep(tmp_path, ending):
    tag = "3333.%d" % (uuid.uuid4().int % 10 ** 6)
    body = ('echo "METRIC time_ms=5"\n'
            "setsid env -i sleep %s </dev/null >/dev/null 2>&1 &\n"
            "(setsid env -i bash -c 'sleep %s & sleep %s' </dev/null >/dev/null 2>&1 &)\n"
            "%s\n") % (tag, tag, tag, "sleep 0.5" if ending == "exit" else "sleep 30")
    project = bench_project(tmp_path, body)
    try:
        result = project.cli("run", "--repeat", "1", "--timeout", "2", timeout=60)
        assert result.rc == 0, result
        assert result.json["timeout"] is (ending == "timeout"), result.json
        left = escaped_sleepers("sleep\0" + tag)
        assert not left, "processes outlived run: %s" % left
    finally:
        for pid in escaped_sleepers("sleep\0" + tag):
            try:
                os.kill(pid, 9)
            except OSError:
                pass


def test_strip_controls_on_random_text():
    import random
    rng = random.Random(12)
    alphabet = ["\x1b", "[", "]", "\\", "P", "(", "B", "0", ";", "m", "\x07", "\x9b", "\x9c", "\x9d", "\n",
                "\r", "\t", "a", "é", "\x00", "\x7f", "\x85", " "]
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        for keep in ("\n", ""):
            cleaned = autotune.strip_controls(text, keep)
            assert not CONTROL.findall(cleaned.replace("\n", "") if keep else cleaned), (text, cleaned)
            assert cleaned.count("\n") <= text.count("\n")
        assert "\x1b" not in autotune.strip_controls(text, sgr=True).replace("\x1b[", "")
