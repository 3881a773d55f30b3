#!/usr/bin/env bash
# Runs autotune.py init as a module: cached bytecode, no site-packages, no cwd on sys.path.
exec python3 -I -S -c 'import sys; sys.path.insert(0, sys.argv.pop(1)); import autotune; sys.exit(autotune.main())' "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." init "$@"
