"""Shared fixtures: autotune is driven as a black box (`python3 autotune.py ...`) inside
throwaway git repositories, and its JSON, files and git history are inspected."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AUTOTUNE = os.path.join(ROOT, "autotune.py")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

BENCHMARK = """#!/usr/bin/env bash
# test benchmark: the metric is the number in work.py; CRASH makes it fail
d=$(sed -n 's/^DELAY_MS = //p' work.py)
if [ "$d" = CRASH ]; then echo "benchmark exploded"; exit 3; fi
echo "METRIC time_ms=$d"
echo "METRIC mem_mb=$((40 + d / 10))"
"""


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GIT_", "AUTOTUNE", "CLAUDE")) and k != "NO_COLOR"}
    env.update(GIT_AUTHOR_NAME="Test", GIT_AUTHOR_EMAIL="test@example.com",
               GIT_COMMITTER_NAME="Test", GIT_COMMITTER_EMAIL="test@example.com",
               GIT_CONFIG_NOSYSTEM="1", HOME=os.environ.get("AUTOTUNE_TEST_HOME", env.get("HOME", "/tmp")))
    env.update(extra)
    return env


class CLIResult(object):
    def __init__(self, proc):
        self.rc = proc.returncode
        self.out = proc.stdout.decode("utf-8", "replace")
        self.err = proc.stderr.decode("utf-8", "replace")
        self.json = None
        text = self.out.strip()
        if text.startswith("{"):
            try:
                self.json = json.loads(text)
            except ValueError:
                pass

    def __repr__(self):
        return "CLIResult(rc=%r, out=%r, err=%r)" % (self.rc, self.out[-2000:], self.err[-2000:])


# The bin wrappers' launcher: autotune.py loaded as a module, so its bytecode is cached
# (a script is recompiled on every call) and site-packages are skipped. AUTOTUNE_TEST_SCRIPT=1
# runs every call as `python3 autotune.py ...` instead; some tests always do.
LAUNCHER = "import sys; sys.path.insert(0, sys.argv.pop(1)); import autotune; sys.exit(autotune.main())"


def cli_argv(args, script=False):
    if script or os.environ.get("AUTOTUNE_TEST_SCRIPT"):
        return [sys.executable, AUTOTUNE] + list(args)
    return [sys.executable, "-I", "-S", "-c", LAUNCHER, ROOT] + list(args)


def run_cli(args, cwd, env=None, input=None, timeout=120, script=False):
    proc = subprocess.run(cli_argv(args, script), cwd=str(cwd),
                          env=env or clean_env(), input=input, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout)
    return CLIResult(proc)


def git(cwd, *args, check=True):
    proc = subprocess.run(["git"] + list(args), cwd=str(cwd), env=clean_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if check and proc.returncode != 0:
        raise AssertionError("git %s failed: %s" % (" ".join(args), proc.stderr.decode()))
    return proc.stdout.decode("utf-8", "replace")


class Project(object):
    """A scratch git repository with a deterministic benchmark (work.py's DELAY_MS)."""

    def __init__(self, path):
        self.path = path

    def write(self, name, text, mode=None):
        full = os.path.join(str(self.path), name)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w", encoding="utf-8") as handle:
            handle.write(text)
        if mode is not None:
            os.chmod(full, mode)
        return full

    def read(self, name):
        with open(os.path.join(str(self.path), name), encoding="utf-8") as handle:
            return handle.read()

    def exists(self, name):
        return os.path.exists(os.path.join(str(self.path), name))

    def set_delay(self, value):
        self.write("work.py", "DELAY_MS = %s\n" % value)

    def cli(self, *args, **kwargs):
        return run_cli(args, self.path, **kwargs)

    def ok(self, *args, **kwargs):
        """Runs a command that must succeed with one JSON object; returns it."""
        result = self.cli(*args, **kwargs)
        assert result.rc == 0, result
        assert result.json is not None and "error" not in result.json, result
        return result.json

    def git(self, *args, **kwargs):
        return git(self.path, *args, **kwargs)

    def log_lines(self):
        with open(os.path.join(str(self.path), "autotune.jsonl"), encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]

    def results(self):
        return [line for line in self.log_lines() if line.get("type") == "result"]

    def state(self):
        with open(os.path.join(str(self.path), ".autotune.state"), encoding="utf-8") as handle:
            return json.load(handle)

    def snapshot_bytes(self):
        """The session files' bytes, to prove a refused call changed nothing."""
        out = {}
        for name in ("autotune.jsonl", ".autotune.state"):
            full = os.path.join(str(self.path), name)
            out[name] = open(full, "rb").read() if os.path.exists(full) else None
        return out

    def head(self):
        return self.git("rev-parse", "--short=7", "HEAD").strip()

    def loop(self, delay, status="auto", description=None, **log_kwargs):
        """One experiment: set the metric, run, log; returns (run json, log json)."""
        self.set_delay(delay)
        ran = self.ok("run")
        args = ["log", "--status", status, "--description", description or "delay %s" % delay]
        for key, value in log_kwargs.items():
            args += ["--" + key.replace("_", "-"), value]
        return ran, self.ok(*args)


def make_project(path, benchmark=BENCHMARK, delay=100, init=True, name="speed up work()",
                 config=None):
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True, env=clean_env())
    project = Project(path)
    project.set_delay(delay)
    project.write("autotune.sh", benchmark, mode=0o755)
    if config is not None:
        project.write("autotune.config.json", json.dumps(config))
    project.git("add", "work.py", "autotune.sh")
    project.git("commit", "-q", "-m", "initial")
    if init:
        project.ok("init", "--name", name, "--metric", "time_ms", "--unit", "ms",
                   "--direction", "lower")
    return project


@pytest.fixture
def project(tmp_path):
    """An initialized session: work.py DELAY_MS=100, autotune.sh prints it as time_ms."""
    return make_project(tmp_path / "repo")


@pytest.fixture
def seed(tmp_path):
    """The first implementation's session (tests/fixtures/seed-session) in a git repository
    with the same benchmark, as its README.txt describes."""
    from support.core_helpers import seed_project
    return seed_project(tmp_path)


@pytest.fixture
def bare_project(tmp_path):
    """The same repository without `init`."""
    return make_project(tmp_path / "repo", init=False)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: takes seconds (many processes, a whole loop, a kill at every step): "
                   "`make test` runs it, `make test-fast` (-m \"not slow\") leaves it out")
    config.addinivalue_line("markers", "cost(seconds): how long the test takes on an idle 2-core "
                                       "machine when far above the typical 0.35 s (balances the shards)")
    config.addinivalue_line("markers", "together: the module's tests run in one shard (an expensive "
                                       "module-scoped fixture is built once)")


TYPICAL_TEST_SECONDS = 0.35  # the mean of the tests without a cost marker, on an idle 2-core machine


def expected_seconds(item):
    """Seconds a test is expected to take (its `cost` marker, else a typical test's)."""
    marker = item.get_closest_marker("cost")
    return float(marker.args[0]) if marker else TYPICAL_TEST_SECONDS


def shard_units(items):
    """Tests that must run in one process: a module marked `together` (its module-scoped
    fixture is expensive, e.g. the whole demo) is one unit, every other test its own."""
    units, modules = [], {}
    for number, item in enumerate(items):
        if item.get_closest_marker("together"):
            key = item.module.__name__
            if key not in modules:
                modules[key] = len(units)
                units.append([])
            units[modules[key]].append(number)
        else:
            units.append([number])
    return units


def balanced_shards(costs, units, count):
    """The longest units first, each to the least loaded shard: the shards end close
    together, so the slowest one decides `make test`'s time as little as it can."""
    loads, shard_of = [0.0] * count, {}
    for unit in sorted(units, key=lambda u: (-sum(costs[n] for n in u), u[0])):
        shard = loads.index(min(loads))
        loads[shard] += sum(costs[n] for n in unit)
        for number in unit:
            shard_of[number] = shard
    return shard_of


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """`make test` runs the suite in one process per core: AUTOTUNE_TEST_SHARD=k/n keeps
    the k-th of n shards balanced by the tests' expected seconds (balanced_shards). It
    runs last, after `-m "not slow"` has deselected, so each shard gets its share of what
    is left."""
    shard = os.environ.get("AUTOTUNE_TEST_SHARD")
    if not shard:
        return
    index, count = (int(part) for part in shard.split("/"))
    shard_of = balanced_shards([expected_seconds(item) for item in items], shard_units(items), count)
    config.hook.pytest_deselected(items=[item for number, item in enumerate(items) if shard_of[number] != index])
    items[:] = [item for number, item in enumerate(items) if shard_of[number] == index]
