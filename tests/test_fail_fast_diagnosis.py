"""Issue 9 (SPEC amendment "issue 7"), points 7 and 8: fail fast on the checks, timeouts
reported as timeouts, a crash and a checks failure told apart, and autotune's own
diagnosis of a failure (the last error line; the edit or the environment), which never
advises editing the benchmark."""

import os
import re

import pytest

import autotune
from conftest import make_project
from support.refusals import clear_error

# Advice that would have the agent change the benchmark or the checks (its rules forbid it):
# an imperative verb and one of them in the same clause, once the negations are taken out.
NEGATIONS = re.compile(r"(not|never \w+) (the )?(benchmark|checks)\b|(the timeout and )?(the )?(benchmark|checks)"
                       r"( and the (benchmark|checks))? stays? as (it is|they are)", re.I)
ADVICE = re.compile(r"(?<!the )\b(edit|fix|change|rewrite|adjust|modify|update)\w*\b[^.;:]{0,60}?"
                    r"\b(autotune\.(checks\.)?sh|benchmark|checks)\b", re.I)


class _EditBenchmark(object):
    def search(self, text):
        return ADVICE.search(NEGATIONS.sub("", text))


EDIT_BENCHMARK = _EditBenchmark()


def test_the_advice_detector_catches_what_it_must():
    for bad in ("fix the environment, the benchmark or the checks before the next experiment",
                "fix the cause (benchmark, checks, scope or the idea backlog)",
                "Edit autotune.sh so that it prints the metric", "change the checks to accept it"):
        assert EDIT_BENCHMARK.search(bad), bad
    for good in ("fix the environment, not the benchmark", "never edit the checks",
                 "It looks like the edit made the benchmark much slower", "the benchmark stays as it is"):
        assert not EDIT_BENCHMARK.search(good), good


def counting_project(tmp_path, checks=None, noisy=True, config=None):
    """A benchmark that appends a line to a counter file outside the repository each time
    it runs (noisy: its value follows AUTOTUNE_SAMPLE, so samples differ but no change is
    a change), and optional checks that count themselves too."""
    counter = tmp_path / "executions"
    value = "$((100 + ${AUTOTUNE_SAMPLE:-1} % 3))" if noisy else "100"
    bench = ("#!/usr/bin/env bash\necho bench >> %s\ngrep -q CRASH work.py && { echo boom; exit 3; }\n"
             "echo \"METRIC time_ms=%s\"\n" % (counter, value))
    p = make_project(tmp_path / "repo", benchmark=bench, init=False, config=config)
    if checks is not None:
        p.write("autotune.checks.sh", "#!/usr/bin/env bash\necho checks >> %s\n%s" % (counter, checks), mode=0o755)
    p.ok("init", "--name", "t", "--metric", "time_ms", "--direction", "lower")
    return p, counter


def executions(counter):
    lines = counter.read_text().split() if counter.exists() else []
    counter.write_text("")
    return lines.count("bench"), lines.count("checks")


@pytest.mark.slow
def test_checks_run_after_the_first_sample_and_a_failure_stops_the_sampling(tmp_path):
    p, counter = counting_project(tmp_path, checks="grep -q BROKEN work.py && { echo 'FAILED: test_total'; exit 1; }\nexit 0\n")
    base = p.ok("run")
    assert base["n"] == 5 and base["checks"] is True and base["verdict"] == "baseline"
    assert executions(counter) == (5, 1)   # the checks ran once, not once per sample
    p.ok("log", "--status", "keep", "--description", "baseline")
    p.write("work.py", "DELAY_MS = 100\nBROKEN = True\n")
    ran = p.ok("run")
    assert executions(counter) == (1, 1)   # fail fast: one sample, then the checks, then nothing
    assert ran["n"] == 1 and ran["checks"] is False and ran["verdict"] == "checks_failed"
    assert ran["suggested_status"] == "checks_failed" and "FAILED: test_total" in ran["chk_out"]
    assert "checks failed after the first sample" in ran["sampling"]
    # a candidate that passes the checks still takes its full batch, checks once
    p.write("work.py", "DELAY_MS = 100\n# a comment\n")
    ran = p.ok("run")
    # interleaved (issue 9): a warm-up of the candidate, then the checks, then the pairs
    assert ran["checks"] is True and ran["n"] >= 5 and executions(counter) == (ran["executions"], 1)
    assert ran["executions"] == 2 * ran["n"] + 1 and ran["interleaved"]["warmup"] is not None


def test_a_deterministic_benchmark_runs_the_checks_once_after_its_one_sample(tmp_path):
    p, counter = counting_project(tmp_path, checks="exit 0\n", noisy=False)
    p.ok("run")
    p.ok("log", "--status", "keep", "--description", "baseline")
    executions(counter)
    p.write("work.py", "DELAY_MS = 100\nX = 1\n")
    ran = p.ok("run")
    assert ran["n"] == 1 and ran["checks"] is True and executions(counter) == (1, 1)


@pytest.mark.slow
def test_checks_do_not_run_when_the_first_sample_crashes(tmp_path):
    p, counter = counting_project(tmp_path, checks="exit 0\n")
    p.ok("run")
    p.ok("log", "--status", "keep", "--description", "baseline")
    executions(counter)
    p.set_delay("CRASH")
    ran = p.ok("run")
    assert ran["verdict"] == "crash" and ran["checks"] is None and executions(counter) == (1, 0)


@pytest.mark.slow
def test_a_timeout_is_reported_as_a_timeout_everywhere(tmp_path):
    bench = "#!/usr/bin/env bash\ngrep -q SLOW work.py && sleep 30\necho 'METRIC time_ms=5'\n"
    p = make_project(tmp_path / "repo", benchmark=bench)
    p.loop(100, description="baseline")
    p.write("work.py", "DELAY_MS = 100\nSLOW = True\n")
    ran = p.ok("run", "--timeout", "1")
    assert ran["timeout"] is True and ran["verdict"] == "timeout" and ran["suggested_status"] == "crash"
    assert "timed out" in ran["reason"] and "1s" in ran["reason"] and "crash" not in ran["reason"]
    assert ran["diagnosis"]["kind"] == "timeout" and ran["diagnosis"]["origin"] in ("edit", "environment")
    assert "timeout" in ran["diagnosis"]["text"] and "crash" not in ran["diagnosis"]["text"].lower()
    assert "before the timeout" in ran["sampling"]
    # a keep is refused like after a crash
    refused = p.cli("log", "--status", "keep", "--description", "slow")
    clear_error(refused, "missing_metric")
    assert "timed out" in refused.json["message"] and "crashed" not in refused.json["message"]
    logged = p.ok("log", "--status", "auto", "--description", "sleeps")
    assert logged["status"] == "crash" and logged["verdict"] == "timeout"   # the log's status vocabulary
    assert logged["next"] == "diagnose" and "timeout" in logged["next_text"] and logged["reason"] == "timeout"
    assert logged["diagnosis"]["kind"] == "timeout"
    data = p.cli("explain", "--json").json
    assert "timed out" in data["why"] and "crashed" not in data["why"]
    assert data["timed_out"] == 1 and data["diagnosis"]["kind"] == "timeout"
    text = p.cli("explain").out
    assert "0 crashed, 1 timed out" in text and "timed out on the last experiment" in " ".join(text.split())
    assert "#2 crash (timed out)" in text
    assert p.results()[-1]["verdict"] == "timeout"


@pytest.mark.slow
def test_a_crash_then_a_checks_failure_are_two_kinds_and_recovery_is_about_the_checks(tmp_path):
    p, _ = counting_project(tmp_path, checks="grep -q BROKEN work.py && exit 1\nexit 0\n", noisy=False)
    p.loop(100, description="baseline")
    p.set_delay("CRASH")
    p.ok("run")
    first = p.ok("log", "--status", "auto", "--description", "crashes")
    assert first["status"] == "crash" and first["health"] == "crashing"
    p.write("work.py", "DELAY_MS = 100\nBROKEN = True\n")
    p.ok("run")
    second = p.ok("log", "--status", "auto", "--description", "breaks the checks")
    assert second["status"] == "checks_failed" and second["failure"] == "checks_failed"
    assert second["health"] == "healing" and second["recovery"] == "diagnose"
    data = p.cli("explain", "--json").json
    why = data["why"]
    assert "2 failures in a row: a benchmark crash, then a checks failure (2 start recovery)" in why, why
    assert "about the last failure, the correctness checks, not the earlier benchmark crash" in why, why
    assert data["diagnosis"]["kind"] == "checks_failed"
    assert "correctness checks failed" in data["next_text"]
    assert not EDIT_BENCHMARK.search(data["next_text"]), data["next_text"]


def lib_project(tmp_path):
    """A benchmark that imports lib.py from the repository and calls lib.run()."""
    bench = ("#!/usr/bin/env bash\nset -e\n\"${PYTHON:-python3}\" -c 'import sys; sys.path.insert(0, \".\"); "
             "import lib; lib.run()'\necho 'METRIC time_ms=5'\n")
    p = make_project(tmp_path / "repo", benchmark=bench, init=False)
    p.write("lib.py", "def run():\n    return 1\n")
    p.write("helper.py", "X = 1\n")
    p.git("add", "lib.py", "helper.py")
    p.git("commit", "-q", "-m", "lib")
    p.ok("init", "--name", "t", "--metric", "time_ms", "--direction", "lower")
    p.ok("run")
    p.ok("log", "--status", "keep", "--description", "baseline")
    return p


@pytest.mark.slow
def test_a_crash_in_a_file_the_experiment_changed_looks_like_the_edit(tmp_path):
    p = lib_project(tmp_path)
    p.write("lib.py", "def run():\n    return 1 / 0\n")
    ran = p.ok("run")
    diag = ran["diagnosis"]
    assert diag["line"] == "ZeroDivisionError: division by zero"
    assert (diag["kind"], diag["origin"], diag["file"]) == ("crash", "edit", "lib.py")
    logged = p.ok("log", "--status", "auto", "--description", "divide by zero")
    assert logged["next"] == "diagnose"
    assert "ZeroDivisionError: division by zero" in logged["next_text"] and "the edit" in logged["next_text"]
    data = p.cli("explain", "--json").json
    assert "ZeroDivisionError: division by zero" in data["next_text"] and "lib.py" in data["next_text"]
    text = " ".join(p.cli("explain").out.split())
    assert "ZeroDivisionError: division by zero" in text and "looks like the edit" in text
    for advice in (ran["diagnosis"]["text"], logged["next_text"], data["next_text"], text):
        assert not EDIT_BENCHMARK.search(advice), advice
    # the next keep clears it: a diagnosis is about the current failure streak only
    p.write("lib.py", "def run():\n    return 2\n")
    p.ok("run")
    p.ok("log", "--status", "keep", "--description", "fixed")
    data = p.cli("explain", "--json").json
    assert data["diagnosis"] is None and "ZeroDivision" not in data["next_text"]


@pytest.mark.slow
def test_a_missing_command_looks_like_the_environment(tmp_path):
    p = lib_project(tmp_path)
    # the edit is in helper.py; the failure is a missing tool, in no file the experiment changed
    p.write("lib.py", "import subprocess\ndef run():\n    subprocess.run(['autotune-no-such-tool-x'], check=True)\n")
    p.write("helper.py", "X = 2\n")
    p.git("add", "lib.py")
    p.git("commit", "-q", "-m", "calls a tool")   # outside autotune: the kept code now needs the tool
    assert p.cli("doctor", "--fix").rc == 0
    p.write("helper.py", "X = 3\n")
    ran = p.ok("run")
    diag = ran["diagnosis"]
    assert diag["origin"] == "environment" and diag["file"] is None, diag
    assert "No such file or directory" in diag["line"] and "autotune-no-such-tool-x" in diag["line"]
    assert "environment" in diag["text"] and not EDIT_BENCHMARK.search(diag["text"])


def test_hostile_output_is_quoted_without_control_characters(tmp_path):
    bench = ("#!/usr/bin/env bash\ngrep -q CRASH work.py && { printf 'ok\\n\\033[31mError: \\033]0;pwned\\007bad\\x9b1m "
             "thing\\033[0m\\r\\n'; exit 2; }\necho 'METRIC time_ms=5'\n")
    p = make_project(tmp_path / "repo", benchmark=bench)
    p.loop(100, description="baseline")
    p.set_delay("CRASH")
    ran = p.ok("run")
    line = ran["diagnosis"]["line"]
    assert line.startswith("Error: ") and "bad" in line and "thing" in line
    assert not any(ord(ch) < 32 or 0x7f <= ord(ch) < 0xa0 for ch in line), repr(line)
    assert "pwned" not in line


# --------------------------------------------------------------- pure units ----

ROOT = "/home/u/proj"


def test_diagnose_a_python_traceback_in_a_changed_file():
    out = ('Traceback (most recent call last):\n  File "/home/u/proj/bench.py", line 3, in <module>\n'
           '  File "/home/u/proj/src/lib.py", line 9, in run\n    x = 1 / 0\nZeroDivisionError: division by zero\n')
    d = autotune.diagnose_crash(out, ["src/lib.py"], "crash", (ROOT,))
    assert (d["origin"], d["file"], d["line"]) == ("edit", "src/lib.py", "ZeroDivisionError: division by zero")
    # the same traceback when the experiment changed another file: not certain
    d = autotune.diagnose_crash(out, ["src/other.py"], "crash", (ROOT,))
    assert d["origin"] == "unclear" and d["file"] is None and "src/other.py" in d["why"]
    # a same-named file elsewhere (the standard library) is not the changed one
    out2 = 'Traceback (most recent call last):\n  File "/usr/lib/python3/lib.py", line 1\nKeyError: 1\n'
    assert autotune.diagnose_crash(out2, ["lib.py"], "crash", (ROOT,))["origin"] == "unclear"


@pytest.mark.parametrize("out, changed, file", [
    ("thread 'main' panicked at src/parse.rs:41:9:\nindex out of bounds\nnote: run with RUST_BACKTRACE=1\n",
     ["src/parse.rs"], "src/parse.rs"),
    ("/home/u/proj/web/app.js:12\n  throw new Error('nope')\nError: nope\n    at run (/home/u/proj/web/app.js:12:9)\n",
     ["web/app.js"], "web/app.js"),
    ("panic: runtime error: nil map\n\ngoroutine 1 [running]:\nmain.main()\n\t/home/u/proj/main.go:8 +0x1d\n",
     ["main.go"], "main.go"),
    ("cc -O2 -c fast.c\nfast.c:10:5: error: expected ';' before '}' token\nmake: *** [fast.o] Error 1\n",
     ["fast.c"], "fast.c"),
    ("Traceback (most recent call last):\n  File \"b.py\", line 1\nModuleNotFoundError: No module named 'helpers'\n",
     ["pkg/helpers.py"], "pkg/helpers.py"),
    ("Traceback (most recent call last):\nImportError: cannot import name 'fast_sum' from 'calc' (/opt/x/calc.py)\n",
     ["calc.py"], "calc.py"),
])
def test_diagnose_points_at_the_changed_file_in_many_languages(out, changed, file):
    d = autotune.diagnose_crash(out, changed, "crash", (ROOT,))
    assert d["origin"] == "edit" and d["file"] == file, d


@pytest.mark.parametrize("out", [
    "bash: line 3: hyperfine: command not found\n",
    "OSError: [Errno 28] No space left on device\n",
    "Traceback (most recent call last):\nModuleNotFoundError: No module named 'numpy'\n",
    "requests.exceptions.ConnectionError: Connection refused\n",
])
def test_diagnose_recognizes_the_environment(out):
    d = autotune.diagnose_crash(out, ["src/lib.py"], "crash", (ROOT,))
    assert d["origin"] == "environment" and "environment" in d["text"], d
    assert not EDIT_BENCHMARK.search(d["text"])


def test_diagnose_without_change_or_output_and_unknown_changes():
    d = autotune.diagnose_crash("", [], "crash", (ROOT,))
    assert d["line"] is None and d["origin"] == "environment" and "without any output" in d["text"]
    assert "changes no file" in d["why"]
    d = autotune.diagnose_crash("Segmentation fault (core dumped)\n", None, "crash")  # no snapshot
    assert d["origin"] == "unclear" and d["line"] == "Segmentation fault (core dumped)"


def test_diagnose_the_last_error_line_skips_metric_lines_and_prefers_errors():
    out = "step 1\nERROR: cannot parse input.json\nMETRIC time_ms=5\ncleanup done\n"
    assert autotune.diagnose_crash(out, ["a.py"])["line"] == "ERROR: cannot parse input.json"
    assert autotune.diagnose_crash("just text\nlast words\n", ["a.py"])["line"] == "last words"
    long = "Error: " + "x" * 1000
    assert len(autotune.diagnose_crash(long, ["a.py"])["line"]) <= 300


def test_diagnose_a_timeout_by_the_load():
    quiet = autotune.diagnose_crash("working...\n", ["a.py"], "timeout", limit=60, load=(0.5, 8))
    assert quiet["origin"] == "edit" and "60s" in quiet["text"] and "hang" in quiet["text"]
    busy = autotune.diagnose_crash("working...\n", ["a.py"], "timeout", limit=60, load=(12.0, 2))
    assert busy["origin"] == "environment" and "overloaded" in busy["text"]
    for d in (quiet, busy):
        assert d["kind"] == "timeout" and "crash" not in d["text"].lower() and not EDIT_BENCHMARK.search(d["text"])
    checks = autotune.diagnose_crash("", ["a.py"], "checks_timeout", limit=5, load=(0.1, 4))
    assert "correctness checks ran past their timeout (5s)" in checks["text"]


def test_diagnose_checks_failures_never_advise_editing_the_checks():
    d = autotune.diagnose_crash("..F\nFAIL: test_sum (t.T)\nAssertionError: 3 != 4\nFAILED (failures=1)\n",
                                ["calc.py"], "checks_failed", (ROOT,))
    assert d["origin"] == "edit" and d["line"] == "FAILED (failures=1)"
    assert "never edit the checks" in d["text"] and not EDIT_BENCHMARK.search(d["text"])


def test_no_playbook_or_pause_text_advises_editing_the_benchmark():
    texts = list(autotune.PLAYBOOK_TEXT.values())
    for reason in ("recovery_exhausted", "stopped by a person"):
        state = autotune.State(config={"metric_name": "t"}, health="paused", active=False, reason=reason,
                               recovery="pause" if reason == "recovery_exhausted" else None)
        texts.append(autotune.next_action(state)[1])
    for text in texts:
        assert not EDIT_BENCHMARK.search(text), text
