#!/usr/bin/env bash
exec python3 "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../autotune.py" hook session-start
