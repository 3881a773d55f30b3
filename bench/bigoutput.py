#!/usr/bin/env python3
"""`run` on a benchmark that prints 1 GB (issue 6, point 4): peak memory under 64 MiB.

    python3 bench/bigoutput.py [--mb 1000] [--line-bytes 100] [--json]

The benchmark (bash, `yes | head -c`) prints MB megabytes of LINE-BYTES-long lines with
a METRIC line in the middle and one at the end. autotune runs inside
tests/support/peakrss.py, which reports its own peak resident memory (VmHWM) at the
end: the benchmark's processes are children and do not count. Prints the peak, the
time, the throughput and PASS/FAIL (exit status 1 on a failure). Standard library only.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AUTOTUNE = os.path.join(ROOT, "autotune.py")
PEAKRSS = os.path.join(ROOT, "tests", "support", "peakrss.py")
LIMIT_MIB = 64.0

BENCHMARK = """#!/usr/bin/env bash
line=$(head -c %(fill)d /dev/zero | tr '\\0' x)
yes "$line" | head -c %(half)d
echo
echo "METRIC mem_mb=55"
yes "$line" | head -c %(half)d
echo
echo "METRIC time_ms=42"
"""


def env_for(home, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "AUTOTUNE", "CLAUDE"))}
    env.update(GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.com",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.com",
               GIT_CONFIG_NOSYSTEM="1", HOME=home)
    env.update(extra)
    return env


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=1000, help="megabytes (10^6 bytes) printed (default 1000)")
    parser.add_argument("--line-bytes", type=int, default=100, help="length of a line (default 100)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    scratch = tempfile.mkdtemp(prefix="autotune-bigoutput-")
    try:
        env = env_for(scratch)
        repo = os.path.join(scratch, "repo")
        os.makedirs(repo)
        with open(os.path.join(repo, "autotune.sh"), "w") as handle:
            handle.write(BENCHMARK % {"fill": max(1, args.line_bytes - 1), "half": args.mb * 10 ** 6 // 2})
        os.chmod(os.path.join(repo, "autotune.sh"), 0o755)
        for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "autotune.sh"],
                    ["git", "commit", "-q", "-m", "bench"]):
            subprocess.run(cmd, cwd=repo, env=env, check=True, stdout=subprocess.DEVNULL)
        subprocess.run([sys.executable, AUTOTUNE, "init", "--name", "big output", "--metric", "time_ms",
                        "--direction", "lower"], cwd=repo, env=env, check=True, stdout=subprocess.DEVNULL)
        peak_file = os.path.join(scratch, "peak.json")
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, PEAKRSS, AUTOTUNE, "run", "--repeat", "1"], cwd=repo,
                              env=env_for(scratch, AUTOTUNE_PEAK_FILE=peak_file),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit("bigoutput: run failed: %s" % (proc.stdout + proc.stderr).decode()[-2000:])
        result = json.loads(proc.stdout.decode("utf-8"))
        with open(peak_file) as handle:
            peak = json.load(handle)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    peak_mib = peak["vmhwm_kib"] / 1024.0
    tail = result.get("output") or ""
    checks = {
        "peak_under_64_mib": peak_mib < LIMIT_MIB,
        "passed": bool(result.get("passed")) and not result.get("timeout"),
        "metrics": result.get("primary") == 42 and result.get("metrics") == {"mem_mb": 55},
        "tail_bounded": len(tail.encode("utf-8")) <= 4096 and len(tail.split("\n")) <= 50,
    }
    ok = all(checks.values())
    report = {"mb": args.mb, "line_bytes": args.line_bytes, "peak_mib": round(peak_mib, 1),
              "limit_mib": LIMIT_MIB, "run_dur_s": result.get("dur"), "wall_s": round(wall, 2),
              "mb_per_s": round(args.mb / max(result.get("dur") or wall, 1e-3), 1),
              "checks": checks, "pass": ok}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("autotune run on %d MB of %d-byte lines: peak RSS %.1f MiB (limit %.0f), benchmark+scan "
              "%.1f s (%.0f MB/s), wall %.1f s" % (args.mb, args.line_bytes, peak_mib, LIMIT_MIB,
                                                  result.get("dur") or 0, report["mb_per_s"], wall))
        for name, good in checks.items():
            print("  %-20s %s" % (name, "PASS" if good else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
