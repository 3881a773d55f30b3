#!/usr/bin/env python3
"""Runs autotune.py in this process and SIGKILLs it at its N-th I/O event (crash tests).

argv: AUTOTUNE_PY KILL_AT MODE TRACE_FILE ARGS...   (MODE: before | torn)
I/O events: os.open/write/replace/rename/unlink/truncate/makedirs/rmdir, open(),
fcntl.flock and starting a subprocess; opens are labelled :r or :w (may change a
file), so a test can skip the read-only ones (killing before a read leaves the same
files as killing before the next event that changes something). `before` kills just before event N; `torn`
kills at event N when it is a write to autotune.jsonl, after writing half of it.
The trace file receives the number and names of the events of a run that was not
killed. The same session state gives the same sequence of events, so killing at
N = 1, 2, ... visits every I/O step of a command exactly once.
"""
import builtins, os, signal, subprocess, sys

autotune_path, kill_at, mode, trace = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
real_open, real_write, real_readlink = builtins.open, os.write, os.readlink
names = []


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def point(name):
    names.append(name)
    if len(names) == kill_at and mode == "before":
        die()


def wrap(owner, attr, label):
    original = getattr(owner, attr)

    def wrapper(*args, **kwargs):
        point(label)
        return original(*args, **kwargs)
    setattr(owner, attr, wrapper)


def write(fd, data):
    try:
        target = real_readlink("/proc/self/fd/%d" % fd)
    except OSError:
        target = "?"
    label = "write:" + os.path.basename(target)
    names.append(label)
    if len(names) == kill_at:
        if mode == "torn" and target.endswith("autotune.jsonl") and len(data) > 1:
            real_write(fd, bytes(data[:len(data) // 2]))
            die()
        if mode == "before":
            die()
    return real_write(fd, data)


os.write = write
for attr in ("replace", "rename", "unlink", "truncate", "makedirs", "rmdir"):
    wrap(os, attr, "os." + attr)
real_os_open = os.open


def os_open(path, flags, *args, **kwargs):
    changes = flags & (os.O_CREAT | os.O_TRUNC | os.O_WRONLY)
    point("os.open:%s:%s" % ("w" if changes else "r", os.path.basename(str(path))))
    return real_os_open(path, flags, *args, **kwargs)


def builtin_open(file, mode="r", *args, **kwargs):
    changes = any(c in mode for c in "wax+")
    point("open:%s:%s" % ("w" if changes else "r", os.path.basename(str(file))))
    return real_open(file, mode, *args, **kwargs)


os.open = os_open
builtins.open = builtin_open
import fcntl  # noqa: E402
wrap(fcntl, "flock", "flock")
real_init = subprocess.Popen.__init__


def popen_init(self, *args, **kwargs):
    point("popen:" + " ".join(str(a) for a in (args[0] if args else kwargs.get("args", []))[:2]))
    return real_init(self, *args, **kwargs)


subprocess.Popen.__init__ = popen_init
sys.argv = [autotune_path] + sys.argv[5:]
code = 0
try:
    import runpy
    runpy.run_path(autotune_path, run_name="__main__")
except SystemExit as exc:
    code = exc.code
with real_open(trace, "w") as handle:
    handle.write("%d\n%s\n" % (len(names), "\n".join(names)))
sys.exit(code)
