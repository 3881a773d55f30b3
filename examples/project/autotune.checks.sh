#!/usr/bin/env bash
# Correctness checks, run by `autotune run` after a passing benchmark: a failure makes
# the experiment checks_failed, and autotune reverts it however good its metric was.
set -euo pipefail
cd "$(dirname "$0")"
PYTHONDONTWRITEBYTECODE=1 "${PYTHON:-python3}" test_wordfreq.py 2>&1
