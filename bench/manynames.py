#!/usr/bin/env python3
"""A benchmark printing millions of distinct METRIC names (issue 12, point 3).

    python3 bench/manynames.py [--names 2000000] [--autotune PATH] [--json]

The benchmark prints `METRIC time_ms=42` and then NAMES lines `METRIC mNNN=1`, each a
new name. autotune keeps at most its cap of distinct names (the rest are counted and
reported once), so `run`, `log`, and every later `explain`, status line and PreToolUse
call stay small and fast. Each command runs inside tests/support/peakrss.py, which
reports autotune's own peak resident memory (the benchmark's processes do not count).
Prints peak memory, wall time, the state file's size and PASS/FAIL for each command.
--autotune measures another copy (e.g. an older version) for a before/after table.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bigoutput import env_for  # noqa: E402  (the same scratch environment as bigoutput)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEAKRSS = os.path.join(ROOT, "tests", "support", "peakrss.py")
LIMIT_MIB = 64.0

BENCHMARK = """#!/usr/bin/env bash
echo "METRIC time_ms=42"
awk 'BEGIN { for (i = 0; i < %d; i++) printf "METRIC m%%d=1\\n", i }'
"""


def measured(autotune, args, repo, scratch, stdin=None):
    """(peak MiB, wall seconds, exit code, stdout) of one autotune call."""
    peak_file = os.path.join(scratch, "peak.json")
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, PEAKRSS, autotune] + args, cwd=repo, input=stdin,
                          env=env_for(scratch, AUTOTUNE_PEAK_FILE=peak_file),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wall = time.perf_counter() - started
    with open(peak_file) as handle:
        peak = json.load(handle)
    return peak["vmhwm_kib"] / 1024.0, wall, proc.returncode, proc.stdout.decode("utf-8", "replace")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", type=int, default=2000000, help="distinct names printed (default 2000000)")
    parser.add_argument("--autotune", default=os.path.join(ROOT, "autotune.py"), help="the autotune.py to measure")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    autotune = os.path.abspath(args.autotune)
    scratch = tempfile.mkdtemp(prefix="autotune-manynames-")
    rows = []
    try:
        env = env_for(scratch)
        repo = os.path.join(scratch, "repo")
        os.makedirs(repo)
        with open(os.path.join(repo, "autotune.sh"), "w") as handle:
            handle.write(BENCHMARK % args.names)
        os.chmod(os.path.join(repo, "autotune.sh"), 0o755)
        for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "autotune.sh"],
                    ["git", "commit", "-q", "-m", "bench"]):
            subprocess.run(cmd, cwd=repo, env=env, check=True, stdout=subprocess.DEVNULL)
        subprocess.run([sys.executable, autotune, "init", "--name", "many names", "--metric", "time_ms",
                        "--direction", "lower"], cwd=repo, env=env, check=True, stdout=subprocess.DEVNULL)
        payload = json.dumps({"tool_name": "Bash", "cwd": repo,
                              "tool_input": {"command": "echo hi > autotune.jsonl"}}).encode()
        calls = [("run", ["run", "--repeat", "1"], None),
                 ("log", ["log", "--status", "keep", "--description", "baseline"], None),
                 ("explain", ["explain"], None),
                 ("statusline", ["statusline"], json.dumps({"cwd": repo}).encode()),
                 ("pre-tool-use", ["hook", "pre-tool-use"], payload)]
        for label, call, stdin in calls:
            peak, wall, code, out = measured(autotune, call, repo, scratch, stdin)
            state = os.path.join(repo, ".autotune.state")
            rows.append({"call": label, "peak_mib": round(peak, 1), "wall_s": round(wall, 2), "exit": code,
                         "state_kib": round(os.path.getsize(state) / 1024.0, 1) if os.path.exists(state) else None,
                         "log_kib": round(os.path.getsize(os.path.join(repo, "autotune.jsonl")) / 1024.0, 1),
                         "ok": code == 0 and peak < LIMIT_MIB, "out": out[:300]})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    ok = all(row["ok"] for row in rows)
    if args.json:
        print(json.dumps({"names": args.names, "rows": rows, "pass": ok}, indent=2))
    else:
        print("autotune with a benchmark printing %d distinct METRIC names:" % args.names)
        print("  %-13s %9s %8s %10s %10s  %s" % ("call", "peak MiB", "wall s", "state KiB", "log KiB", "result"))
        for row in rows:
            print("  %-13s %9.1f %8.2f %10s %10s  %s" % (
                row["call"], row["peak_mib"], row["wall_s"], row["state_kib"], row["log_kib"],
                "PASS" if row["ok"] else "FAIL (exit %s)" % row["exit"]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
