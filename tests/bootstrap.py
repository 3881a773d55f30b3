#!/usr/bin/env python3
"""Runs the test suite with pytest, installing pytest first if this machine lacks it.

`make test` calls this. Order of preference: an installed pytest; one already
unpacked into .tools/pytest; `pip install --target .tools/pytest`; and, on a machine
with python3 but no pip at all, the pinned wheels fetched from PyPI's simple index,
checked against the sha256 below and unpacked into .tools/pytest. pytest is the only
test dependency; autotune.py itself needs nothing but the standard library.

`--jobs N` (first argument; `auto` is one per core, at most 4) runs the suite in N
pytest processes at once, each taking every N-th test, then prints one closing line for
all of them. Every test works in its own scratch directory, so they cannot collide.
"""

import hashlib
import os
import re
import subprocess
import sys
import time
import urllib.request
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.path.join(ROOT, ".tools", "pytest")
TARGET_LOGS = os.path.join(ROOT, ".tools", "test-logs")
WHEELS = [  # (file, sha256, needed on this Python)
    ("pytest-8.3.5-py3-none-any.whl", "c69214aa47deac29fad6c2a4f590b9c4a9fdb16a403176fe154b79c0b4d4d820", True),
    ("pluggy-1.5.0-py3-none-any.whl", "44e1ad92c8ca002de6377e165f3e0f1be63266ab4d554740532335b9d75ea669", True),
    ("iniconfig-2.0.0-py3-none-any.whl", "b6a85871a79d2e3b22d2d1b94ac2824226a63c6b741c88f7ae975f18b6778374", True),
    ("packaging-24.2-py3-none-any.whl", "09abb1bccd265c01f4a3aa3f7a7db064b36514d2cba19a2f694fe6150451a759", True),
    ("exceptiongroup-1.2.2-py3-none-any.whl", "3111b9d131c238bec2f8f516e123e14ba243563fb135d3fe885990585aa7795b",
     sys.version_info < (3, 11)),
    ("tomli-2.2.1-py3-none-any.whl", "cb55c73c5f4408779d0cf3eef9f762b9c9f147a77de7b258bef0a5628adc85cc",
     sys.version_info < (3, 11)),
]


def have_pytest():
    import importlib
    importlib.invalidate_caches()  # see what an install just put on sys.path
    try:
        import pytest  # noqa: F401  (only whether it imports)
        return True
    except ImportError:
        return False


def pip_install():
    specs = [name.split("-")[0] + "==" + name.split("-")[1] for name, _, needed in WHEELS if needed]
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           "--no-warn-script-location", "--target", TARGET] + specs,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc.returncode == 0


def fetch_wheels():
    os.makedirs(TARGET, exist_ok=True)
    for name, digest, needed in WHEELS:
        if not needed:
            continue
        project = name.split("-")[0]
        page = urllib.request.urlopen("https://pypi.org/simple/%s/" % project, timeout=60).read().decode()
        match = re.search(r'href="([^"#]*/%s)#sha256=%s"' % (re.escape(name), digest), page)
        if not match:
            raise SystemExit("bootstrap: %s with the pinned sha256 is not on PyPI's index" % name)
        data = urllib.request.urlopen(match.group(1), timeout=120).read()
        if hashlib.sha256(data).hexdigest() != digest:
            raise SystemExit("bootstrap: %s does not match its pinned sha256" % name)
        path = os.path.join(TARGET, name)
        with open(path, "wb") as handle:
            handle.write(data)
        with zipfile.ZipFile(path) as wheel:
            wheel.extractall(TARGET)
        os.unlink(path)


def run_parallel(jobs, args):
    """Runs the suite in `jobs` pytest processes, each taking every jobs-th test
    (tests/conftest.py reads AUTOTUNE_TEST_SHARD); prints each one's output whole."""
    started, procs = time.time(), []
    for index in range(jobs):
        log = open(os.path.join(TARGET_LOGS, "shard-%d.log" % index), "w+b")
        env = dict(os.environ, AUTOTUNE_TEST_SHARD="%d/%d" % (index, jobs))
        procs.append((subprocess.Popen([sys.executable, os.path.abspath(__file__)] + list(args),
                                       stdout=log, stderr=subprocess.STDOUT, env=env), log))
    totals, failed = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}, False
    for index, (proc, log) in enumerate(procs):
        proc.wait()
        log.seek(0)
        text = log.read().decode("utf-8", "replace")
        log.close()
        sys.stdout.write("== shard %d of %d\n%s" % (index + 1, jobs, text if text.endswith("\n") else text + "\n"))
        sys.stdout.flush()
        last = text.strip().splitlines()[-1] if text.strip() else ""
        for number, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)\b", last):
            totals["error" if word.startswith("error") else word] += int(number)
        failed = failed or proc.returncode != 0
    print("%d processes, %.0f s" % (jobs, time.time() - started))
    print("tests: %d passed, %d failed, %d skipped" % (
        totals["passed"], totals["failed"] + totals["error"], totals["skipped"]))
    return 1 if failed or not totals["passed"] else 0


def main():
    jobs = 1
    if sys.argv[1:2] == ["--jobs"]:
        jobs = max(1, int(sys.argv[2]) if sys.argv[2] != "auto" else min(4, os.cpu_count() or 1))
        del sys.argv[1:3]
    if not have_pytest():
        sys.path.insert(0, TARGET)
        if not have_pytest():
            print("bootstrap: pytest is missing; installing it into .tools/pytest", file=sys.stderr)
            if not pip_install():
                print("bootstrap: pip is not available; fetching pinned wheels from PyPI", file=sys.stderr)
                fetch_wheels()
            if not have_pytest():
                raise SystemExit("bootstrap: could not install pytest")
        os.environ["PYTHONPATH"] = TARGET + os.pathsep + os.environ.get("PYTHONPATH", "")
    if jobs > 1:
        os.makedirs(TARGET_LOGS, exist_ok=True)
        return run_parallel(jobs, sys.argv[1:])
    import pytest
    return pytest.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
