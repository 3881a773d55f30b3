#!/usr/bin/env python3
"""`make plugin-check`, step 1: install the pinned Claude Code CLI into .tools/claude
(git-ignored) when it is missing, and say which one the plugin tests will use. Exits 1
with the reason when it cannot be installed (npm missing, no registry access...)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from support.claude_cli import ClaudeNotAvailable, claude_version, find_claude  # noqa: E402


def main():
    try:
        path = find_claude(install=True)
    except ClaudeNotAvailable as exc:
        print("plugin-check: cannot get the Claude Code CLI: %s" % exc, file=sys.stderr)
        return 1
    print("plugin-check: Claude Code %s at %s" % (claude_version(path), path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
