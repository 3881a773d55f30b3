"""Big output (issue 6, point 4): `run` streams the benchmark's output, keeping only
the METRIC values and a bounded tail, so its memory stays small however much the
benchmark prints (bench/bigoutput.py does the 1 GB check; here 200 MB).

autotune's own peak memory is measured by tests/support/peakrss.py, which runs it in
its process and reads VmHWM at the end (the benchmark's processes do not count)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import AUTOTUNE, clean_env, make_project

PEAKRSS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "support", "peakrss.py")
LIMIT_KIB = 64 * 1024
MB = 1000 * 1000

# 100 MB of 1000-byte lines, a METRIC line, 100 MB more, 60 tail lines, the primary METRIC
LOTS_OF_LINES = """#!/usr/bin/env bash
line=$(printf '%%0999d' 0)
yes "$line" | head -c %(half)d
echo "METRIC mem_mb=55"
yes "$line" | head -c %(half)d
for i in $(seq 1 60); do echo "tail line $i"; done
echo "METRIC time_ms=42"
"""

# one line of 100 MB with no newline, before and after the METRIC lines
ENDLESS_LINE = """#!/usr/bin/env bash
echo "METRIC mem_mb=7"
head -c %(size)d /dev/zero | tr '\\0' x
echo
echo "METRIC time_ms=42"
head -c %(size)d /dev/zero | tr '\\0' y
"""

SHORT_LINES = """#!/usr/bin/env bash
yes | head -c %(size)d
echo "METRIC time_ms=42"
"""


def run_measured(project, *args):
    peak_file = os.path.join(str(project.path), "..", "peak.json")
    env = clean_env(AUTOTUNE_PEAK_FILE=peak_file)
    proc = subprocess.run([sys.executable, PEAKRSS, AUTOTUNE] + list(args), cwd=str(project.path),
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")[-2000:]
    with open(peak_file) as handle:
        peak = json.load(handle)
    result = json.loads(proc.stdout.decode("utf-8"))
    return result, peak


def check_tail(result):
    output = result["output"]
    assert len(output.encode("utf-8")) <= 4096 and len(output.split("\n")) <= 50, len(output)


@pytest.mark.slow
def test_200_mb_of_output_keeps_only_tail_and_metrics(tmp_path):
    project = make_project(tmp_path / "repo", benchmark=LOTS_OF_LINES % {"half": 100 * MB})
    result, peak = run_measured(project, "run", "--repeat", "1", "--timeout", "120")
    sys.stderr.write("\n[big output] 200 MB in %.1f s, autotune peak RSS %.1f MiB\n" % (
        result["dur"], peak["vmhwm_kib"] / 1024.0))
    assert result["passed"] and not result["timeout"], result
    assert result["primary"] == 42 and result["metrics"] == {"mem_mb": 55}
    check_tail(result)
    assert result["output"].endswith("tail line 60\nMETRIC time_ms=42"), result["output"][-200:]
    assert result["output"].startswith("tail line "), result["output"][:200]
    assert peak["vmhwm_kib"] < LIMIT_KIB, "run peaked at %.1f MiB" % (peak["vmhwm_kib"] / 1024.0)


@pytest.mark.slow
def test_a_100_mb_line_without_newline(tmp_path):
    project = make_project(tmp_path / "repo", benchmark=ENDLESS_LINE % {"size": 100 * MB})
    result, peak = run_measured(project, "run", "--repeat", "1", "--timeout", "120")
    sys.stderr.write("\n[big output] 2 lines of 100 MB in %.1f s, autotune peak RSS %.1f MiB\n" % (
        result["dur"], peak["vmhwm_kib"] / 1024.0))
    assert result["passed"], result
    assert result["primary"] == 42 and result["metrics"] == {"mem_mb": 7}
    check_tail(result)
    assert result["output"].endswith("y" * 100), "the tail must end with the unterminated line"
    assert peak["vmhwm_kib"] < LIMIT_KIB, "run peaked at %.1f MiB" % (peak["vmhwm_kib"] / 1024.0)


def test_many_short_lines_are_scanned_fast(tmp_path):
    """`yes` prints 2-byte lines: per-line work must not make `run` the bottleneck (at
    1.6 MB/s, 1 GB of such output would take 10 minutes and hit the default timeout)."""
    size = 2 * MB
    project = make_project(tmp_path / "repo", benchmark=SHORT_LINES % {"size": size})
    result, peak = run_measured(project, "run", "--repeat", "1", "--timeout", "60")
    rate = size / max(result["dur"], 1e-3) / MB
    sys.stderr.write("\n[big output] %d MB of 2-byte lines in %.2f s (%.1f MB/s)\n" % (
        size // MB, result["dur"], rate))
    assert result["passed"] and result["primary"] == 42, result
    check_tail(result)
    assert rate >= 10, "run read 2-byte lines at %.1f MB/s" % rate
