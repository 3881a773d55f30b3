"""Loops for every ecosystem (issue 14): the toolchain and lockfiles in every result's
environment record, dependencies that follow the code on keep and discard, a size
benchmark without a script, the project's own commands proposed, readable tails,
permissions for the project's commands, and words that match (stopped vs paused).

No network and no real package manager: fake `node`, `npm`, `cargo`, `rustc`, `uv` and
`python3` on PATH print a version and record their arguments (and the colour variables
they saw) in a file."""

import gzip
import hashlib
import json
import os
import stat

import pytest

from conftest import clean_env, make_project

import autotune

FAKE = """#!/usr/bin/env bash
echo "$(basename "$0") $* NO_COLOR=${NO_COLOR-unset} FORCE_COLOR=${FORCE_COLOR-unset}" >> "%(calls)s"
if [ "$1" = --version ] || [ "$1" = version ]; then echo "%(version)s"; exit 0; fi
if [ "$1" = ci ] && [ -n "${SYNC_FAIL-}" ]; then echo "npm ERR! broken"; exit 3; fi
printf '\\033[32madded 1 package\\033[0m in 1s\\n'
"""

VERSIONS = {"node": "v20.1.0", "npm": "10.2.4", "cargo": "cargo 1.75.0 (1d8b05cdd 2023-11-20)",
            "rustc": "rustc 1.75.0 (82e1608df 2023-12-21)", "uv": "uv 0.4.2", "python3": "Python 3.12.1"}


def fake_tools(tmp_path, versions=VERSIONS):
    """A bin directory of fake tools; returns (env with it first on PATH, calls file)."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir(exist_ok=True)
    calls = tmp_path / "calls.txt"
    for name, version in versions.items():
        write_fake(bindir, name, version, calls)
    env = clean_env(PATH="%s:%s" % (bindir, os.environ.get("PATH", "/usr/bin:/bin")))
    return env, calls


def write_fake(bindir, name, version, calls):
    path = bindir / name
    path.write_text(FAKE % {"calls": calls, "version": version})
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def calls_of(calls):
    return calls.read_text().splitlines() if calls.exists() else []


def node_project(tmp_path, config=None, env=None, extra=None):
    project = make_project(tmp_path / "repo", init=False, config=config)
    project.write("package.json", json.dumps({"name": "demo", "version": "1.0.0", "scripts": {
        "build": "node build.js", "test": "uvu tests", "bench": "node bench.js",
        "lint": "eslint ."}}, indent=2) + "\n")
    project.write("package-lock.json", '{"name": "demo", "lockfileVersion": 3}\n')
    for name, text in (extra or {}).items():
        project.write(name, text)
    project.git("add", "package.json", "package-lock.json", *(extra or {}))
    project.git("commit", "-q", "-m", "node project")
    project.ok("init", "--name", "n", "--metric", "time_ms", "--unit", "ms", "--direction", "lower", env=env)
    return project


def sha(project, name):
    return hashlib.sha256((project.path / name).read_bytes()).hexdigest()


# ------------------------------------------------------------ 1. toolchain ----


@pytest.mark.slow
def test_every_result_records_toolchains_and_lockfiles_and_a_change_is_a_warning(tmp_path):
    env, calls = fake_tools(tmp_path)
    project = node_project(tmp_path, env=env, extra={
        "Cargo.toml": "[package]\nname = \"x\"\n", "Cargo.lock": "# cargo lock\n",
        "uv.lock": "version = 1\n", "pyproject.toml": "[project]\nname = \"x\"\n"})
    ran = project.ok("run", env=env)
    tools = ran["env"]["toolchain"]
    assert tools == {"node": "20.1.0", "npm": "10.2.4", "cargo": "1.75.0", "rustc": "1.75.0",
                     "python": "3.12.1", "uv": "0.4.2"}, tools
    assert ran["env"]["lockfiles"] == {name: sha(project, name) for name in
                                       ("Cargo.lock", "package-lock.json", "uv.lock")}
    assert "warnings" not in ran, ran["warnings"]
    probes = len(calls_of(calls))
    assert probes == 6, calls_of(calls)
    logged = project.ok("log", "--status", "keep", "--description", "baseline", env=env)
    assert project.results()[-1]["env"]["toolchain"] == tools
    # the versions are cached: the next run spawns no probe
    project.set_delay(90)
    project.ok("run", env=env)
    assert len(calls_of(calls)) == probes, "a cached version was probed again"
    project.ok("log", "--status", "keep", "--description", "faster", env=env)
    # a new node (the executable changes) and a changed lockfile: warned in run and explain
    write_fake(tmp_path / "fakebin", "node", "v22.3.0", calls)
    project.set_delay(80)
    project.write("package-lock.json", '{"name": "demo", "lockfileVersion": 3, "x": 1}\n')
    ran = project.ok("run", env=env)
    warning = " ".join(ran.get("warnings", []))
    assert "the toolchain changed since the baseline" in warning and "node 20.1.0 → 22.3.0" in warning
    assert "package-lock.json changed" in warning, warning
    assert len(calls_of(calls)) == probes + 1, "only the changed executable is probed"
    project.ok("log", "--status", "keep", "--description", "with node 22", env=env)
    explain = project.ok("explain", "--json", env=env)
    text = " ".join(explain["warnings"])
    assert "node 20.1.0 → 22.3.0" in text and "(result #3)" in text, explain["warnings"]
    assert logged["status"] == "keep"


def test_a_project_without_markers_spawns_nothing_and_records_no_tool(tmp_path):
    env, calls = fake_tools(tmp_path)
    project = make_project(tmp_path / "repo")
    ran = project.ok("run", env=env)
    assert ran["env"]["toolchain"] == {} and ran["env"]["lockfiles"] == {}
    assert calls_of(calls) == []
    # the hooks and the status line never probe either
    project.write("package.json", "{}")
    for args, stdin in ((["statusline"], b"{}"), (["hook", "session-start"], b"{}"),
                        (["status"], None), (["dashboard"], None)):
        result = project.cli(*args, env=env, input=stdin)
        assert result.rc == 0, result
    assert calls_of(calls) == []


def test_version_parsing():
    cases = {"v20.11.1": "20.11.1", "rustc 1.76.0-nightly (1a2b 2023-12-01)": "1.76.0-nightly",
             "go version go1.21.5 linux/amd64": "1.21.5", 'openjdk version "17.0.9" 2023-10-17': "17.0.9",
             "Poetry (version 1.7.1)": "1.7.1", "": None, "no digits here": "no digits here"}
    for text, expected in cases.items():
        assert autotune.parse_version(text) == expected, text


# ------------------------------------------------- 2. dependencies follow ----


@pytest.mark.slow
def test_a_discard_that_reverts_a_dependency_change_names_npm_ci(tmp_path):
    env, calls = fake_tools(tmp_path)
    project = node_project(tmp_path, env=env)
    project.ok("run", env=env)
    project.ok("log", "--status", "keep", "--description", "baseline", env=env)
    # the experiment: `npm i -D terser@5` (package.json and the lockfile) and a slower build
    project.write("package.json", project.read("package.json").replace('"lint"', '"terser": "5", "lint"'))
    project.write("package-lock.json", '{"name": "demo", "lockfileVersion": 3, "terser": "5"}\n')
    project.set_delay(150)
    project.ok("run", env=env)
    before = len(calls_of(calls))
    answer = project.ok("log", "--status", "auto", "--description", "terser 5", env=env)
    assert answer["status"] == "discard"
    deps = answer["dependencies"]
    assert sorted(deps["changed"]) == ["package-lock.json", "package.json"]
    assert deps["sync"] == ["npm ci"] and "`npm ci`" in deps["message"] and "ran" not in deps
    assert "syncCommand" in deps["message"]
    assert len(calls_of(calls)) == before, "without syncCommand nothing is run"
    # bringing the experiment back says the same
    restored = project.ok("restore", "2", "--json")
    assert restored["dependencies"]["sync"] == ["npm ci"], restored
    project.git("checkout", "--", "package.json", "package-lock.json", "work.py")
    # an experiment that touches no manifest says nothing about dependencies
    project.set_delay(160)
    project.ok("run", env=env)
    assert "dependencies" not in project.ok("log", "--status", "auto", "--description", "slow", env=env)


@pytest.mark.slow
def test_sync_command_runs_after_a_keep_and_a_discard_with_its_tail_and_exit(tmp_path):
    env, calls = fake_tools(tmp_path)
    project = node_project(tmp_path, config={"syncCommand": "npm ci --no-audit"}, env=env)
    project.ok("run", env=env)
    project.ok("log", "--status", "keep", "--description", "baseline", env=env)
    project.write("package-lock.json", '{"name": "demo", "lockfileVersion": 3, "v": 2}\n')
    project.set_delay(90)
    project.ok("run", env=env)
    kept = project.ok("log", "--status", "auto", "--description", "new lock", env=env)
    assert kept["status"] == "keep" and kept["dependencies"]["changed"] == ["package-lock.json"]
    ran = kept["dependencies"]["ran"]
    assert ran["command"] == "npm ci --no-audit" and ran["exit"] == 0
    assert ran["output"] == "added 1 package in 1s", ran  # its ANSI colours removed
    assert "npm ci --no-audit NO_COLOR=1 FORCE_COLOR=0" in calls_of(calls)
    # a failing sync is reported, the result is still logged
    project.write("package-lock.json", '{"name": "demo", "lockfileVersion": 3, "v": 3}\n')
    project.set_delay(95)
    project.ok("run", env=env)
    failed = project.ok("log", "--status", "auto", "--description", "worse lock",
                        env=dict(env, SYNC_FAIL="1"))
    assert failed["status"] == "discard" and failed["dependencies"]["ran"]["exit"] == 3
    assert "npm ERR! broken" in failed["dependencies"]["ran"]["output"]
    assert "failed (exit 3)" in failed["dependencies"]["message"]
    assert project.results()[-1]["description"] == "worse lock"


def test_sync_commands_follow_the_lockfiles(tmp_path):
    def dirwith(name, *files):
        folder = tmp_path / name
        folder.mkdir()
        for f in files:
            (folder / f).write_text("x")
        return str(folder)
    cases = [
        (dirwith("pnpm", "package.json", "pnpm-lock.yaml"), ["package.json"], ["pnpm install --frozen-lockfile"]),
        (dirwith("yarn1", "package.json", "yarn.lock"), ["yarn.lock"], ["yarn install --frozen-lockfile"]),
        (dirwith("berry", "package.json", "yarn.lock", ".yarnrc.yml"), ["package.json"], ["yarn install --immutable"]),
        (dirwith("bun", "package.json", "bun.lockb"), ["bun.lockb"], ["bun install"]),
        (dirwith("npm", "package.json"), ["package.json"], ["npm install"]),
        (dirwith("uv", "pyproject.toml", "uv.lock"), ["uv.lock", "pyproject.toml"], ["uv sync"]),
        (dirwith("poetry", "pyproject.toml", "poetry.lock"), ["pyproject.toml"], ["poetry install"]),
        (dirwith("pip", "requirements-dev.txt"), ["requirements-dev.txt"], ["pip install -r requirements-dev.txt"]),
        (dirwith("rust", "Cargo.toml", "Cargo.lock"), ["Cargo.lock"], ["cargo fetch"]),
        (dirwith("go", "go.mod", "go.sum"), ["go.sum", "go.mod"], ["go mod download"]),
        (dirwith("ruby", "Gemfile", "Gemfile.lock"), ["Gemfile.lock"], ["bundle install"]),
        (dirwith("mono", "x"), ["packages/web/package.json", "README.md"], ["cd packages/web && npm install"]),
    ]
    for workdir, changed, expected in cases:
        assert autotune.sync_commands(workdir, autotune.dependency_files(changed)) == expected, (workdir, changed)
    assert autotune.dependency_files(["src/a.js", "README.md", "lib/Cargo.lock"]) == ["lib/Cargo.lock"]


# ------------------------------------------------------ 3. size benchmark ----

BUILD = """import os, sys
os.makedirs("dist/chunks", exist_ok=True)
n = int(open("size.txt").read())
open("dist/app.js", "w").write("function add(a, b) { return a + b; }\\n" * n)
open("dist/chunks/vendor.js", "w").write("".join("var v%d = %d;\\n" % (i, i * i) for i in range(n)))
open("dist/app.css", "w").write("body { margin: 0 }\\n" * 50)
print("built", n)
"""


def gzip_total(project, names):
    data = [(project.path / name).read_bytes() for name in names]
    return sum(len(gzip.compress(d, compresslevel=9, mtime=0)) for d in data), sum(len(d) for d in data)


@pytest.mark.slow
def test_size_benchmark_prints_gzip_bytes_after_the_build(tmp_path):
    project = make_project(tmp_path / "repo", init=False)
    os.unlink(str(project.path / "autotune.sh"))
    project.write("build.py", BUILD)
    project.write("size.txt", "40\n")
    project.write(".gitignore", "dist/\n")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "build")
    init = project.ok("init", "--name", "bundle", "--metric", "bundle_gzip", "--direction", "lower",
                      "--scaffold", "--size", "dist/**/*.js", "--benchmark", "python3 build.py")
    assert init["unit"] == "B" and "autotune.sh" in init["scaffolded"] and "size_note" not in init
    ran = project.ok("run")
    assert ran["passed"], ran
    js = ["dist/app.js", "dist/chunks/vendor.js"]  # not the css
    gz, raw = gzip_total(project, js)
    assert ran["primary"] == gz and ran["metrics"]["raw_bytes"] == raw
    assert set(ran["metrics"]) <= {"raw_bytes", "brotli_bytes"}
    assert ran["samples"] == [gz] * len(ran["samples"]) and "deterministic" in ran["sampling"]
    project.ok("log", "--status", "keep", "--description", "baseline")
    project.write("size.txt", "10\n")
    smaller = project.ok("run")
    assert smaller["primary"] == gzip_total(project, js)[0] < gz and smaller["verdict"] == "improved"
    # the build fails: a crash whose output says why
    project.write("size.txt", "not a number\n")
    crashed = project.ok("run")
    assert crashed["crashed"] and "the build failed" in crashed["output"] and "ValueError" in crashed["output"]


@pytest.mark.slow
def test_size_benchmark_in_kilobytes_and_no_match_is_a_crash(tmp_path):
    project = make_project(tmp_path / "repo", init=False)
    os.unlink(str(project.path / "autotune.sh"))
    project.write("out/a.js", "x = 1;\n" * 500)
    hostile = "out/$(touch PWNED)*.js"
    init = project.ok("init", "--name", "kb", "--metric", "bundle_kb", "--unit", "KB", "--direction", "lower",
                      "--scaffold", "--size", "out/*.js", "--size", hostile)
    assert "git does not ignore out/*.js" in init["size_note"]
    ran = project.ok("run")
    gz, _ = gzip_total(project, ["out/a.js"])
    assert ran["primary"] == round(gz / 1000.0, 3), ran
    assert not project.exists("PWNED") and not project.exists("out/PWNED")
    os.unlink(str(project.path / "out" / "a.js"))
    crashed = project.ok("run")
    assert crashed["crashed"] and "no file matches out/*.js" in crashed["output"]


@pytest.mark.parametrize("args, code, says", [
    (["--metric", "bundle_kb", "--unit", "KB", "--benchmark", "npm run build"], "benchmark_unit",
     "METRIC bundle_kb=<number>"),
    (["--metric", "score", "--benchmark", "node bench.js"], "benchmark_unit", "--size"),
    (["--metric", "bundle", "--unit", "ms", "--size", "dist/*.js"], "bad_unit", "KiB"),
])
def test_init_refuses_a_scaffold_that_cannot_print_the_metric(tmp_path, args, code, says):
    project = make_project(tmp_path / "repo", init=False)
    os.unlink(str(project.path / "autotune.sh"))
    before = sorted(os.listdir(str(project.path)))
    result = project.cli("init", "--name", "x", "--direction", "lower", "--scaffold", *args)
    assert result.rc != 0 and result.json["error"] == code and says in result.json["message"], result
    assert sorted(os.listdir(str(project.path))) == before
    no_scaffold = project.cli("init", "--name", "x", "--metric", "b", "--direction", "lower", "--size", "d/*")
    assert no_scaffold.rc != 0 and "--scaffold" in no_scaffold.json["message"]
    assert sorted(os.listdir(str(project.path))) == before


# ------------------------------------------------- 4. proposed commands ----


def test_init_scaffold_and_detect_propose_the_projects_own_commands(tmp_path):
    env, calls = fake_tools(tmp_path)
    project = make_project(tmp_path / "repo", init=False)
    os.unlink(str(project.path / "autotune.sh"))
    project.write("package.json", json.dumps({"scripts": {
        "build": "rollup -c", "test": "uvu tests", "bench": "node bench.js", "size": "size-limit",
        "prepare": "husky install"}}))
    project.write("pnpm-lock.yaml", "lockfileVersion: 6\n")
    project.write("Makefile", "all: build\nbuild:\n\tcc x.c\ntest: build\n\t./t\nbench:\n\t./b\nX := 1\n")
    project.write("Cargo.toml", "[package]\nname = \"x\"\n\n[[bench]]\nname = \"b\"\n")
    project.write("go.mod", "module x\n")
    project.write("pyproject.toml", "[tool.pytest.ini_options]\naddopts = \"-q\"\n")
    project.write("tox.ini", "[tox]\n")
    detected = project.ok("detect", env=env)
    proposed = detected["proposed"]
    commands = {kind: [item["command"] for item in items] for kind, items in proposed.items()}
    assert commands["build"][:1] == ["pnpm run build"] and "make build" in commands["build"]
    assert "cargo build --release" in commands["build"] and "go build ./..." in commands["build"]
    assert commands["test"][:1] == ["pnpm test"] and {"make test", "cargo test", "go test ./...",
                                                     "tox", "pytest -q"} <= set(commands["test"])
    assert {"pnpm run bench", "pnpm run size", "make bench", "cargo bench"} <= set(commands["benchmark"])
    assert all(item["from"] for items in proposed.values() for item in items)
    assert proposed["build"][0] == {"command": "pnpm run build", "from": "package.json scripts.build",
                                    "runs": "rollup -c"}
    assert "husky" not in json.dumps(proposed)
    assert detected["tools"]["node"] == "20.1.0" and detected["sync"][0] == "pnpm install --frozen-lockfile"
    init = project.ok("init", "--name", "x", "--metric", "size_b", "--direction", "lower", "--scaffold", env=env)
    assert init["proposed"] == proposed and "runs none of them on its own" in init["proposal_note"]
    # never used silently: the benchmark is still the template
    assert "still the template" in project.read("autotune.sh") and "pnpm" not in project.read("autotune.sh")


# --------------------------------------------------- 5. readable output ----

COLOURED = """#!/usr/bin/env bash
printf '\\033[1m\\033[32m✓\\033[39m\\033[22m 12 tests\\r\\033[2K\\033[31m✘ 1 failed\\033[0m\\n'
printf '\\033]0;title\\007NO_COLOR=%s FORCE_COLOR=%s\\n' "${NO_COLOR-unset}" "${FORCE_COLOR-unset}"
LAST
"""


def test_ansi_escapes_are_removed_from_tails_and_tools_are_asked_for_no_colour(tmp_path):
    project = make_project(tmp_path / "repo")
    project.write("autotune.sh", COLOURED.replace("LAST", 'echo "METRIC time_ms=5"'), mode=0o755)
    project.write("autotune.checks.sh", COLOURED.replace("LAST", "exit 1"), mode=0o755)
    ran = project.ok("run")
    assert ran["checks"] is False
    for tail in (ran["output"], ran["chk_out"]):
        assert "\x1b" not in tail and "\x07" not in tail and "\r" not in tail, tail
        assert tail.startswith("✘ 1 failed\nNO_COLOR=1 FORCE_COLOR=0"), tail
    project.write("autotune.config.json", json.dumps({"env": {"NO_COLOR": None, "FORCE_COLOR": "1"}}))
    again = project.ok("run")
    assert "NO_COLOR=unset FORCE_COLOR=1" in again["output"]
    project.write("autotune.config.json", json.dumps({"env": {"FORCE_COLOR": 1}}))
    bad = project.cli("run")
    assert bad.rc != 0 and bad.json["error"] == "bad_config" and "env.FORCE_COLOR" in bad.json["message"]


def test_clean_tail():
    cases = {"\x1b[32m✓ ok\x1b[0m 3": "✓ ok 3", "50%\r75%\rdone": "done", "a\r\nb\r\n": "a\nb\n",
             "\x1b]0;title\x07hi": "hi", "\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\": "link",
             "\x9b31mred": "red", "x\x1b(By": "xy", "plain": "plain", "\x1b[2J\x1b[H": ""}
    for text, expected in cases.items():
        assert autotune.clean_tail(text) == expected, repr(text)


# --------------------------------------------------------- 6. permissions ----


def test_setup_permissions_allows_the_project_commands_only_when_asked(tmp_path):
    project = node_project(tmp_path)
    plain = project.ok("setup-permissions", "--json")
    assert not any("npm" in rule for rule in plain["added"]) and "project_commands" not in plain
    project.ok("init", "--name", "n", "--metric", "time_ms", "--unit", "ms", "--direction", "lower",
               "--scaffold", "--checks", "npm test -- --bail")
    answer = project.ok("setup-permissions", "--with-project-commands", "--json")
    assert answer["project_commands"] == ["npm test -- --bail", "npm run build", "npm test", "npm run bench"]
    allow = json.loads(project.read(".claude/settings.local.json"))["permissions"]["allow"]
    for command in answer["project_commands"]:
        assert "Bash(%s)" % command in allow and "Bash(%s *)" % command in allow
    assert not any("lint" in rule for rule in allow)
    assert project.ok("setup-permissions", "--with-project-commands", "--json")["added"] == []
    text = project.cli("setup-permissions", "--with-project-commands")
    assert "npm run build, npm test" in text.out


# ---------------------------------------------------------------- 7. words ----


@pytest.mark.slow
def test_a_voluntary_stop_is_stopped_everywhere_with_how_to_resume(tmp_path):
    project = make_project(tmp_path / "repo")
    project.loop(100)
    stopped = project.ok("stop", "--json", "--reason", "lunch")
    assert stopped["health"] == "stopped" and "autotune resume" in stopped["next"]
    explain = project.ok("explain", "--json")
    assert explain["health"] == "stopped" and explain["next"] == "resume"
    assert "autotune resume" in explain["next_text"] and "lunch" in explain["why"]
    text = project.cli("explain").out
    assert "STOPPED" in text and "paused" not in text.lower()
    status = project.cli("status").out
    assert "STOPPED" in status and "PAUSED" not in status
    assert "stopped" in project.cli("dashboard").out
    payload = json.dumps({"workspace": {"current_dir": str(project.path)}}).encode()
    line = project.cli("statusline", input=payload).out
    assert "stopped" in line and "autotune resume" in line and "paused" not in line
    again = project.cli("stop")
    assert "already stopped" in again.out
    refused = project.cli("run")
    assert refused.rc != 0 and "autotune resume" in refused.json["message"]
    assert project.ok("resume", "--json")["health"] == "running"


def test_detect_survives_odd_project_files(tmp_path):
    project = make_project(tmp_path / "repo", init=False)
    os.makedirs(str(project.path / "package.json"))          # a directory, not a file
    project.write("Makefile", "\x00\xff binary junk \x1b[31m\n")
    project.write("Cargo.toml", "not toml at all [[[")
    os.mkfifo(str(project.path / "yarn.lock"))                # would block a reader
    project.write("requirements.txt", "")
    detected = project.ok("detect")
    assert detected["lockfiles"] == ["requirements.txt", "yarn.lock"]
    assert [i["command"] for i in detected["proposed"]["test"]] == ["cargo test"]
    files = autotune.ProjectFiles(str(project.path))
    assert autotune.lockfile_hashes(files) == {"requirements.txt": hashlib.sha256(b"").hexdigest()}
