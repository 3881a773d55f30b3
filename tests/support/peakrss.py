#!/usr/bin/env python3
"""Runs `autotune.py ARGS...` inside this process and, when it ends, writes this
process's peak resident memory to the file named by $AUTOTUNE_PEAK_FILE as JSON:
{"vmhwm_kib": ..., "maxrss_kib": ..., "exit": ...}. The benchmark's own processes
are children and do not count: only autotune's memory is measured.

    AUTOTUNE_PEAK_FILE=peak.json python3 peakrss.py /path/to/autotune.py run
"""
import json
import os
import resource
import runpy
import sys


def vmhwm_kib():
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def main():
    target = sys.argv[1]
    sys.argv = [target] + sys.argv[2:]
    code = 0
    try:
        runpy.run_path(target, run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.stdout.flush()
        peak = {"vmhwm_kib": vmhwm_kib(),
                "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "exit": code}
        with open(os.environ["AUTOTUNE_PEAK_FILE"], "w") as handle:
            json.dump(peak, handle)
    return code


if __name__ == "__main__":
    sys.exit(main())
