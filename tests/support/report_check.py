#!/usr/bin/env python3
"""Check an autotune HTML report in a real headless Chromium.

    python3 tests/support/report_check.py REPORT.html --expect-points N \
        [--selector 'svg circle.point'] [--screenshot out.png] [--full-page]

Exit status: 0 when the page loads with no console errors, uncaught exceptions
or external (network) requests, and the selector matches exactly N elements;
1 when the check fails; 2 on usage errors or when Chromium is missing/broken.
Prints a one-line summary (plus one indented line per error).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from browser import BrowserError, ChromiumNotFound, check_page, count_js  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", help="path of the HTML report")
    ap.add_argument("--expect-points", type=int, required=True, metavar="N",
                    help="number of elements the selector must match")
    ap.add_argument("--selector", default="svg circle.point",
                    help="CSS selector to count (default: %(default)r)")
    ap.add_argument("--screenshot", metavar="PNG", help="write a PNG screenshot here")
    ap.add_argument("--full-page", action="store_true", help="screenshot the whole page")
    ap.add_argument("--width", type=int, default=1200)
    ap.add_argument("--height", type=int, default=900)
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    ap.add_argument("--allow-network", action="store_true",
                    help="do not block/flag http(s) requests (they may still fail)")
    args = ap.parse_args(argv)

    if not os.path.isfile(args.report):
        print("report-check: FAIL %s: no such file" % args.report)
        return 2
    try:
        res = check_page(
            args.report,
            evaluate={"count": count_js(args.selector)},
            screenshot_path=args.screenshot,
            width=args.width,
            height=args.height,
            full_page=args.full_page,
            timeout=args.timeout,
            block_network=not args.allow_network,
        )
    except ChromiumNotFound as e:
        print("report-check: ERROR %s" % e)
        return 2
    except (BrowserError, TimeoutError, OSError) as e:
        print("report-check: ERROR browser failure: %s" % e)
        return 2

    count = res.values.get("count")
    problems = list(res.errors)
    if not args.allow_network:
        for u in res.external_requests:
            if not any(u in p for p in problems):
                problems.append("external request: %s" % u)
    if count != args.expect_points:
        problems.append("%r matched %s element(s), expected %d"
                        % (args.selector, count, args.expect_points))
    ok = res.loaded and not problems
    print("report-check: %s %s: %s=%s (expected %d), %d error(s), load %s, total %.2fs%s" % (
        "OK" if ok else "FAIL",
        args.report,
        args.selector,
        count,
        args.expect_points,
        len(res.errors),
        "%.2fs" % res.load_seconds if res.load_seconds is not None else "not fired",
        res.seconds,
        ", screenshot %s" % args.screenshot if args.screenshot and res.screenshot else "",
    ))
    for p in problems:
        print("  - %s" % p)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
