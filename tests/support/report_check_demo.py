#!/usr/bin/env python3
"""`make report-check`: the HTML report of a real session, checked in headless Chromium.

Runs the demo (examples/demo.py: a complete loop through the real CLI and git) into a
directory, then loads the report it wrote in a real headless Chromium (browser.py,
network blocked) and checks that:
  * the page loads with no console error, uncaught exception or external request;
  * the chart has one point (`svg.chart circle.point`) per experiment in the log, and
    as many kept, discarded, crashed and checks_failed points as the log has of each;
  * the best-so-far line and the baseline line are drawn;
  * the experiment table has one row per experiment.
It saves a full-page screenshot and prints its path.

    python3 tests/support/report_check_demo.py [--out DIR]

Exit status: 0 when every check passed; 1 when one failed; 2 when the check could not
run (no Chromium and no way to install it, a browser failure): a check that did not
run must not look like a pass.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from browser import BrowserError, ChromiumNotFound, check_page, count_js, find_chromium  # noqa: E402

STATUSES = ("keep", "discard", "crash", "checks_failed")
SELECTOR = "svg.chart circle.point"


def say(text):
    print("report-check: %s" % text)
    sys.stdout.flush()


def ensure_chromium():
    """The browser's path; installs Debian's chromium when root with apt, else None."""
    found = find_chromium()
    if found:
        return found
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if not (is_root and shutil.which("apt-get")):
        return None
    say("chromium is missing: apt-get install -y chromium")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (["apt-get", "install", "-y", "-q", "chromium"],
                 ["apt-get", "update", "-q"],
                 ["apt-get", "install", "-y", "-q", "chromium"]):
        proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if proc.returncode == 0 and argv[1] == "install":
            break
    return find_chromium()


def results_of(log_path):
    """The result lines of the session log (every segment)."""
    rows = []
    with open(log_path, encoding="utf-8") as handle:
        for line in handle:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("type") == "result" and entry.get("status") in STATUSES:
                rows.append(entry)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", metavar="DIR", help="new or empty directory for the demo, report and "
                    "screenshot (default: a new temporary directory, kept)")
    args = ap.parse_args(argv)

    if os.environ.get("CHROMIUM") and find_chromium() is None:
        say("NOT RUN: $CHROMIUM=%s is not an executable; the report was not checked" % os.environ["CHROMIUM"])
        return 2
    if ensure_chromium() is None:
        say("NOT RUN: Chromium is not installed (Debian/Ubuntu: `apt-get install chromium`, as root); "
            "the report was not checked")
        return 2
    out = os.path.abspath(args.out) if args.out else tempfile.mkdtemp(prefix="autotune-report-check-")
    if os.path.exists(out) and os.listdir(out):
        say("NOT RUN: %s is not empty" % out)
        return 2
    workspace = os.path.join(out, "demo")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "demo.py"), "--keep", workspace,
                           "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    text = proc.stdout.decode("utf-8", "replace")
    if proc.returncode != 0:
        say("FAIL: the demo failed (exit %d):\n%s" % (proc.returncode, text))
        return 1
    report = os.path.join(workspace, "report.html")
    rows = results_of(os.path.join(workspace, "project", "autotune.jsonl"))
    expected = {status: sum(1 for r in rows if r["status"] == status) for status in STATUSES}
    screenshot = os.path.join(out, "report.png")

    evaluate = {"points": count_js(SELECTOR),
                "best_lines": count_js("svg.chart path.best"),
                "baseline_lines": count_js("svg.chart line.baseline"),
                "table_rows": "Array.from(document.querySelectorAll('table')).pop()"
                              ".querySelectorAll('tr').length - 1",
                "chart_width": "Math.round(document.querySelector('svg.chart').getBoundingClientRect().width)"}
    for status in STATUSES:
        evaluate[status] = count_js("%s.%s" % (SELECTOR, status))
    try:
        res = check_page(report, evaluate=evaluate, screenshot_path=screenshot, full_page=True,
                         width=1200, height=900, timeout=60)
    except ChromiumNotFound as exc:
        say("NOT RUN: %s" % exc)
        return 2
    except (BrowserError, TimeoutError, OSError) as exc:
        say("NOT RUN: browser failure: %s" % exc)
        return 2

    values = res.values
    problems = list(res.errors)
    problems += ["external request: %s" % u for u in res.external_requests
                 if not any(u in p for p in problems)]
    if values.get("points") != len(rows):
        problems.append("%r matched %s points, the log has %d experiments" % (SELECTOR, values.get("points"), len(rows)))
    for status in STATUSES:
        if values.get(status) != expected[status]:
            problems.append("%s.%s: %s points, the log has %d %s results" % (
                SELECTOR, status, values.get(status), expected[status], status))
    if not values.get("best_lines"):
        problems.append("no best-so-far line (svg.chart path.best)")
    if not values.get("baseline_lines"):
        problems.append("no baseline line (svg.chart line.baseline)")
    if values.get("table_rows") != len(rows):
        problems.append("the experiment table has %s rows, the log has %d experiments" % (
            values.get("table_rows"), len(rows)))
    if not values.get("chart_width"):
        problems.append("the chart is not visible (width %s)" % values.get("chart_width"))
    ok = res.loaded and not problems
    say("%s %s: %d points for %d experiments (%s), %d console error(s), load %s" % (
        "OK" if ok else "FAIL", report, values.get("points") or 0, len(rows),
        ", ".join("%s %s" % (values.get(s), s) for s in STATUSES), len(res.errors),
        "%.2fs" % res.load_seconds if res.load_seconds is not None else "did not fire"))
    for problem in problems:
        print("  - %s" % problem)
    if res.screenshot:
        say("screenshot: %s" % screenshot)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
