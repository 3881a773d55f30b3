#!/usr/bin/env bash
# autotune benchmark for the wordfreq example.
#
# METRIC lines: the Python lines executed by one top_words(corpus, 10) call, counted
# with sys.settrace. Unlike wall time it is exactly the same on every run and every
# machine, so each verdict is certain and the demo is reproducible. (Work done inside
# C builtins is free for this metric; in real projects, pick the metric you care about.)
# METRIC calls: Python function calls in the same call (a secondary metric).
set -euo pipefail
cd "$(dirname "$0")"
export PYTHONDONTWRITEBYTECODE=1 PYTHONHASHSEED=0

"${PYTHON:-python3}" - <<'PY'
import sys

import wordfreq

with open("corpus.txt", encoding="utf-8") as f:
    text = f.read()

lines = calls = 0


def count(frame, event, arg):
    global lines, calls
    if event == "call":
        calls += 1
    elif event == "line":
        lines += 1
    return count


sys.settrace(count)
try:
    top = wordfreq.top_words(text, 10)
finally:
    sys.settrace(None)

print("top 10:", ", ".join("%s %d" % pair for pair in top))
print("METRIC lines=%d" % lines)
print("METRIC calls=%d" % calls)
PY
