"""The bin/ and hooks/ wrappers (issue 3, point 6): they work from any directory,
through a symlink (also a chain of them, relative ones, in a directory with spaces),
from a copy of the plugin (as the marketplace installs it), on PATH as a bare
`autotune` (as Claude Code's Bash tool appends the plugin's bin/), and whether
CLAUDE_PLUGIN_ROOT is set, unset or wrong (the Bash tool does not set it)."""

import json
import os
import shutil
import subprocess

import pytest

from conftest import ROOT, clean_env, make_project

BIN = os.path.join(ROOT, "bin")
REAL = os.path.realpath(os.path.join(ROOT, "autotune.py"))
SUBCOMMAND = {
    "autotune": None, "run-experiment.sh": "run", "init-experiment.sh": "init",
    "log-experiment.sh": "log", "dashboard.sh": "dashboard", "setup-permissions.sh": "setup-permissions",
    "statusline.sh": "statusline",
}
PLUGIN_ROOTS = {"unset": None, "right": ROOT, "wrong": "/nonexistent/plugin-root"}


def run(argv, cwd, plugin_root="unset", env=None, input=None):
    env = dict(env or clean_env())
    value = PLUGIN_ROOTS[plugin_root]
    if value:
        env["CLAUDE_PLUGIN_ROOT"] = value
    proc = subprocess.run(argv, cwd=str(cwd), env=env, input=input, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=60)
    proc.text = proc.stdout.decode("utf-8", "replace")
    return proc


def test_every_wrapper_is_covered_and_executable():
    assert sorted(os.listdir(BIN)) == sorted(SUBCOMMAND), "a new wrapper needs a line in SUBCOMMAND"
    for name in os.listdir(BIN):
        path = os.path.join(BIN, name)
        assert os.access(path, os.X_OK), name
        with open(path) as handle:
            assert handle.readline().startswith("#!"), name


@pytest.fixture(scope="module")
def links(tmp_path_factory):
    """Symlinks to every wrapper, in a directory whose name has spaces: absolute, relative,
    and a chain of two."""
    base = tmp_path_factory.mktemp("links") / "my tools dir"
    base.mkdir()
    out = {}
    for name in SUBCOMMAND:
        target = os.path.join(BIN, name)
        absolute = base / ("abs-" + name)
        os.symlink(target, str(absolute))
        relative = base / ("rel-" + name)
        os.symlink(os.path.relpath(target, str(base)), str(relative))
        chained = base / ("chain-" + name)
        os.symlink(str(absolute), str(chained))
        out[name] = {"direct": target, "absolute": str(absolute), "relative": str(relative),
                     "chained": str(chained)}
    return out


@pytest.mark.parametrize("plugin_root", sorted(PLUGIN_ROOTS))
@pytest.mark.parametrize("how", ["direct", "absolute", "relative", "chained"])
def test_bin_autotune_from_anywhere(tmp_path, links, how, plugin_root):
    proc = run([links["autotune"][how], "version", "--json"], tmp_path, plugin_root)
    assert proc.returncode == 0, proc.stderr
    assert os.path.realpath(json.loads(proc.text)["path"]) == REAL


@pytest.mark.parametrize("name", sorted(n for n in SUBCOMMAND if n != "autotune"))
def test_each_wrapper_calls_its_subcommand(tmp_path, links, name):
    for how in ("direct", "chained"):
        proc = run([links[name][how], "--help"], tmp_path, "wrong")
        assert proc.returncode == 0, (name, how, proc.stderr)
        assert "usage: autotune %s" % SUBCOMMAND[name] in proc.text, (name, proc.text[:200])


def test_bare_autotune_on_path_as_the_bash_tool_has_it(tmp_path):
    env = clean_env()
    env["PATH"] = env.get("PATH", "/usr/bin:/bin") + os.pathsep + BIN  # appended, like Claude Code
    for name, args in (("autotune", ["version", "--json"]), ("run-experiment.sh", ["--help"])):
        proc = run([name] + args, tmp_path, env=env)
        assert proc.returncode == 0, (name, proc.stderr)
    proc = subprocess.run(["sh", "-c", "autotune version --json"], cwd=str(tmp_path), env=env,
                          stdout=subprocess.PIPE, timeout=30)
    assert os.path.realpath(json.loads(proc.stdout.decode())["path"]) == REAL


def test_a_copy_of_the_plugin_runs_its_own_autotune(tmp_path):
    """The marketplace installs a copy: the wrappers must use the copy next to them."""
    copy = tmp_path / "plugin copy"
    shutil.copytree(BIN, str(copy / "bin"), symlinks=True)
    shutil.copytree(os.path.join(ROOT, "hooks"), str(copy / "hooks"), symlinks=True)
    shutil.copy2(os.path.join(ROOT, "autotune.py"), str(copy / "autotune.py"))
    proc = run([str(copy / "bin" / "autotune"), "version", "--json"], tmp_path, "right")
    assert os.path.realpath(json.loads(proc.text)["path"]) == os.path.realpath(str(copy / "autotune.py"))
    hook = run([str(copy / "hooks" / "stop.sh")], tmp_path, "wrong", input=b"{}")
    assert hook.returncode == 0 and hook.text == ""


@pytest.mark.slow
@pytest.mark.parametrize("plugin_root", sorted(PLUGIN_ROOTS))
def test_wrappers_drive_a_whole_loop(tmp_path, links, plugin_root):
    """init, run, log, dashboard, statusline and setup-permissions through the wrappers,
    called through symlinks; arguments with spaces, quotes and `$(...)` arrive verbatim;
    exit codes come back."""
    project = make_project(tmp_path / "repo", init=False)
    cwd = project.path
    init = run([links["init-experiment.sh"]["chained"], "--name", "wrapped loop", "--metric", "time_ms",
                "--unit", "ms", "--direction", "lower"], cwd, plugin_root)
    assert init.returncode == 0 and json.loads(init.text)["status"] == "initialized", init.stderr
    ran = run([links["run-experiment.sh"]["relative"]], cwd, plugin_root)
    assert ran.returncode == 0 and json.loads(ran.text)["primary"] == 100, ran.text
    description = "baseline; with 'quotes' and $(touch pwned) `and ticks`"
    logged = run([links["log-experiment.sh"]["absolute"], "--status", "keep", "--description", description],
                 cwd, plugin_root)
    assert logged.returncode == 0, logged.text
    assert project.results()[-1]["description"] == description
    assert not (cwd / "pwned").exists()
    refused = run([links["run-experiment.sh"]["direct"], "--command", "./other.sh"], cwd, plugin_root)
    assert refused.returncode != 0 and "error" in json.loads(refused.text)
    dash = run([links["dashboard.sh"]["chained"]], cwd, plugin_root)
    assert dash.returncode == 0 and "wrapped loop" in dash.text
    line = run([links["statusline.sh"]["chained"]], cwd, plugin_root,
               input=json.dumps({"workspace": {"current_dir": str(cwd)}}).encode())
    assert line.returncode == 0 and "#1" in line.text
    perms = run([links["setup-permissions.sh"]["relative"], "--json", str(cwd)], tmp_path, plugin_root)
    assert perms.returncode == 0 and json.loads(perms.text)["added"]


@pytest.mark.parametrize("event", ["stop", "pre-tool-use", "session-start"])
def test_hook_wrappers_through_a_symlink(tmp_path, event):
    link = tmp_path / ("linked " + event + ".sh")
    os.symlink(os.path.join(ROOT, "hooks", event + ".sh"), str(link))
    for plugin_root in PLUGIN_ROOTS:
        proc = run([str(link)], tmp_path, plugin_root, input=b'{"cwd": "%s"}' % str(tmp_path).encode())
        assert proc.returncode == 0 and proc.text == "" and proc.stderr == b"", (plugin_root, proc.stderr)
