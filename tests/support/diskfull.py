#!/usr/bin/env python3
"""Runs autotune.py in this process with a disk that is full for one file.

argv: AUTOTUNE_PY FILE_NAME ARGS...   Every os.write to a file whose name is FILE_NAME
fails with ENOSPC after writing nothing, as a full disk does; everything else works. It
shows what a `log` says and leaves when its own log line cannot be written."""
import errno, os, sys

autotune_path, target = sys.argv[1], sys.argv[2]
real_write = os.write


def write(fd, data):
    try:
        name = os.path.basename(os.readlink("/proc/self/fd/%d" % fd))
    except OSError:
        name = ""
    if name == target:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real_write(fd, data)


os.write = write
sys.argv = [autotune_path] + sys.argv[3:]
sys.path.insert(0, os.path.dirname(autotune_path))
import autotune  # noqa: E402
sys.exit(autotune.main())
