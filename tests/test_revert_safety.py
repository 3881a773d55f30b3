"""Issue 2, point 3: a revert never loses data.

What the user had before an experiment (untracked files, uncommitted edits, staged
work) survives a discard; ignored files, protected files and everything outside the
working directory are left alone; the discarded change comes back with
`autotune restore N`; a keep commits only the experiment's own files."""

import json
import os

import pytest

from conftest import BENCHMARK, Project, make_project, run_cli
from support.core_helpers import (commit_files, git_init, make_nested_project, racy_edit,
                                  write_config)
from support.refusals import clear_error

GITIGNORE = "build/\n*.log\n"


CHECKS = "#!/usr/bin/env bash\nif grep -q BROKEN work.py; then echo broken; exit 1; fi\n"


def prepared(tmp_path, config=None, checks=False):
    """A repository with the user's own work in progress before `init`."""
    p = make_project(tmp_path / "repo", init=False, config=config)
    if checks:
        p.write("autotune.checks.sh", CHECKS, mode=0o755)
    p.write("README.txt", "committed\n")
    p.write(".gitignore", GITIGNORE)
    p.git("add", "README.txt", ".gitignore")
    p.git("commit", "-q", "-m", "readme")
    # the user's work in progress
    p.write("scratch.txt", "mine\n")                                   # untracked
    p.write("notes/todo.txt", "todo\n")                                # untracked, in a dir
    p.write("README.txt", "committed\nuncommitted edit\n")             # unstaged edit
    p.write("staged.txt", "staged\n")
    p.git("add", "staged.txt")                                         # staged, not committed
    p.write("build/cache.bin", "ignored v1\n")                         # ignored
    p.write("debug.log", "log v1\n")                                   # ignored
    p.write("autotune.md", "# notes v1\n")                             # protected
    p.write("autotune.ideas.md", "- idea v1\n")                        # protected
    p.ok("init", "--name", "safety", "--metric", "time_ms", "--unit", "ms", "--direction", "lower")
    p.loop(100, description="baseline")
    return p


def user_work_is_intact(p):
    assert p.read("scratch.txt") == "mine\n"
    assert p.read("notes/todo.txt") == "todo\n"
    assert p.read("README.txt") == "committed\nuncommitted edit\n"
    assert p.read("staged.txt") == "staged\n"
    assert "staged.txt" in p.git("diff", "--cached", "--name-only").split()
    assert "README.txt" in p.git("diff", "--name-only").split()
    assert "scratch.txt" in p.git("ls-files", "--others", "--exclude-standard").split()


def experiment(p):
    """An experiment that touches a bit of everything."""
    p.set_delay(150)
    p.write("README.txt", "committed\nuncommitted edit\nexperiment line\n")
    p.write("scratch.txt", "mine, changed by the experiment\n")
    os.unlink(os.path.join(str(p.path), "notes", "todo.txt"))
    p.write("helper.py", "def helper():\n    return 1\n")
    p.write("pkg/sub/mod.py", "X = 1\n")
    p.write("build/cache.bin", "ignored v2\n")
    p.write("build/new.o", "object\n")
    p.write("debug.log", "log v2\n")
    p.write("autotune.md", "# notes v2\n")
    p.write("autotune.ideas.md", "- idea v2\n")


@pytest.mark.slow
def test_discard_restores_exactly_the_state_before_the_experiment_and_restore_undoes_it(tmp_path):
    p = prepared(tmp_path)
    # the baseline keep committed nothing of the user's work in progress
    assert p.git("log", "--format=%s").splitlines()[0] == "readme"
    user_work_is_intact(p)
    head = p.head()
    staged_before = p.git("diff", "--cached")
    experiment(p)
    ran = p.ok("run")
    assert ran["verdict"] == "worse"
    logged = p.ok("log", "--status", "discard", "--description", "touch everything")
    assert logged["git"]["action"] == "revert"
    assert p.head() == head
    # the experiment is gone
    assert p.read("work.py") == "DELAY_MS = 100\n"
    assert not p.exists("helper.py") and not p.exists("pkg/sub/mod.py")
    # directories are left (empty ones are invisible to git and may be the user's)
    assert [files for _, _, files in os.walk(os.path.join(str(p.path), "pkg")) if files] == []
    # what the user had before it is back, exactly, and the user's index is untouched
    user_work_is_intact(p)
    assert p.git("diff", "--cached") == staged_before
    # ignored and protected files are left as the experiment left them
    assert p.read("build/cache.bin") == "ignored v2\n" and p.read("build/new.o") == "object\n"
    assert p.read("debug.log") == "log v2\n"
    assert p.read("autotune.md") == "# notes v2\n" and p.read("autotune.ideas.md") == "- idea v2\n"
    # the discarded state was saved, and the command to get it back is reported
    assert logged["git"].get("restore") == "autotune restore 2"
    assert p.git("rev-parse", "-q", "--verify", "refs/autotune/discarded/1.2").strip()

    restored = p.cli("restore", "2", "--json")
    assert restored.rc == 0, restored
    assert restored.json["status"] == "restored"
    assert p.read("work.py") == "DELAY_MS = 150\n"
    assert p.read("helper.py") == "def helper():\n    return 1\n"
    assert p.read("pkg/sub/mod.py") == "X = 1\n"
    assert p.read("README.txt") == "committed\nuncommitted edit\nexperiment line\n"
    assert p.read("scratch.txt") == "mine, changed by the experiment\n"
    assert not p.exists("notes/todo.txt")
    # restoring touches neither protected nor ignored files
    assert p.read("autotune.md") == "# notes v2\n" and p.read("build/cache.bin") == "ignored v2\n"


def test_restore_of_an_unknown_experiment_is_a_clear_error(project):
    result = project.cli("restore", "7", "--json")
    clear_error(result)
    assert "7" in result.json["message"]


@pytest.mark.slow
def test_crash_and_checks_failed_revert_the_same_way(tmp_path):
    p = prepared(tmp_path, checks=True)
    for status, work in (("crash", "DELAY_MS = CRASH\n"), ("checks_failed", "DELAY_MS = 90\n# BROKEN\n")):
        p.write("helper.py", "x\n")
        p.write("scratch.txt", "changed\n")
        p.write("work.py", work)
        ran = p.ok("run")
        assert ran["suggested_status"] == status
        logged = p.ok("log", "--status", "auto", "--description", status)
        assert logged["status"] == status
        assert logged["git"]["action"] == "revert"
        assert not p.exists("helper.py") and p.read("work.py") == "DELAY_MS = 100\n"
        user_work_is_intact(p)


@pytest.mark.slow
def test_protected_benchmark_checks_and_config_survive_a_discard(tmp_path):
    p = make_project(tmp_path / "repo", init=False)
    p.write("autotune.checks.sh", "#!/usr/bin/env bash\nexit 0\n", mode=0o755)
    write_config(p, {"_comment": "v1"})
    p.ok("init", "--name", "x", "--metric", "time_ms", "--direction", "lower")
    p.loop(100, description="baseline")
    p.set_delay(150)
    p.ok("run")
    # edits to the protected files after the measurement (by a person or the agent)
    bench = p.read("autotune.sh") + "# edited\n"
    checks = p.read("autotune.checks.sh") + "# edited\n"
    p.write("autotune.sh", bench)
    p.write("autotune.checks.sh", checks)
    write_config(p, {"_comment": "v2"})
    p.write("autotune.holdout.sh", "#!/usr/bin/env bash\necho holdout\n")
    logged = p.ok("log", "--status", "discard", "--description", "worse")
    assert logged["git"]["action"] == "revert"
    assert p.read("work.py") == "DELAY_MS = 100\n"
    assert p.read("autotune.sh") == bench and p.read("autotune.checks.sh") == checks
    assert json.loads(p.read("autotune.config.json")) == {"_comment": "v2"}
    assert p.exists("autotune.holdout.sh")
    assert p.exists("autotune.jsonl") and p.exists(".autotune.state")


@pytest.mark.slow
def test_keep_commits_only_the_experiment(tmp_path):
    p = prepared(tmp_path)
    p.set_delay(80)
    p.write("helper.py", "def helper():\n    return 2\n")
    p.write("autotune.md", "# notes v2\n")
    p.write("autotune.ideas.md", "- idea v2\n")
    p.write("debug.log", "log v2\n")
    p.write("build/cache.bin", "ignored v2\n")
    p.ok("run")
    logged = p.ok("log", "--status", "keep", "--description", "faster helper")
    assert logged["git"]["action"] == "commit"
    assert sorted(commit_files(p)) == ["helper.py", "work.py"]
    tree = p.git("ls-tree", "-r", "--name-only", "HEAD").split()
    for name in ("autotune.jsonl", ".autotune.state", "autotune.md", "autotune.ideas.md",
                 "scratch.txt", "staged.txt", "debug.log", "build/cache.bin", "notes/todo.txt"):
        assert name not in tree, name
    user_work_is_intact(p)
    # and the experiment's files are clean now
    assert p.git("status", "--porcelain", "--", "work.py", "helper.py") == ""


@pytest.mark.slow
def test_subdirectory_session_leaves_the_rest_of_the_repository_alone(tmp_path):
    top, s = make_nested_project(tmp_path)
    s.loop(100, description="baseline")
    head = s.head()
    # changes outside the working directory, made during the experiment
    top.write("outside.txt", "outside v2\n")
    top.write("outside_new.txt", "new outside\n")
    top.write("lib/shared.py", "SHARED = 2\n")
    s.set_delay(150)
    s.write("inner_new.py", "y = 1\n")
    s.ok("run")
    logged = s.ok("log", "--status", "discard", "--description", "worse")
    assert logged["git"]["action"] == "revert"
    assert s.read("work.py") == "DELAY_MS = 100\n" and not s.exists("inner_new.py")
    assert top.read("outside.txt") == "outside v2\n"
    assert top.read("outside_new.txt") == "new outside\n"
    assert top.read("lib/shared.py") == "SHARED = 2\n"
    assert s.head() == head
    # a keep commits only inside the working directory
    s.set_delay(80)
    s.ok("run")
    kept = s.ok("log", "--status", "keep", "--description", "faster")
    assert kept["git"]["action"] == "commit"
    assert commit_files(top) == ["sub/work.py"]
    assert top.read("outside.txt") == "outside v2\n"
    assert "outside.txt" in top.git("diff", "--name-only").split()
    assert top.exists("sub/autotune.jsonl") and not top.exists("autotune.jsonl")


@pytest.mark.slow
def test_working_dir_from_config_leaves_the_outside_alone(tmp_path):
    root = tmp_path / "repo"
    git_init(root)
    top = Project(root)
    top.write("outside.txt", "outside v1\n")
    inner = Project(root / "bench")
    inner.set_delay(100)
    inner.write("autotune.sh", BENCHMARK, mode=0o755)
    top.git("add", "-A")
    top.git("commit", "-q", "-m", "initial")
    write_config(top, {"workingDir": "bench"})
    top.ok("init", "--name", "wd", "--metric", "time_ms", "--direction", "lower")
    assert inner.exists("autotune.jsonl") and not top.exists("autotune.jsonl")
    top.ok("run")
    top.ok("log", "--status", "keep", "--description", "baseline")
    top.write("outside.txt", "outside v2\n")
    top.write("stray.txt", "stray\n")
    inner.set_delay(150)
    inner.write("new.py", "z = 1\n")
    top.ok("run")
    logged = top.ok("log", "--status", "discard", "--description", "worse")
    assert logged["git"]["action"] == "revert"
    assert inner.read("work.py") == "DELAY_MS = 100\n" and not inner.exists("new.py")
    assert top.read("outside.txt") == "outside v2\n" and top.read("stray.txt") == "stray\n"
    assert top.exists("autotune.config.json")
    assert logged["git"]["files"] and all(f.startswith("bench/") for f in logged["git"]["files"])


@pytest.mark.slow
def test_nothing_to_revert_is_reported_not_an_error(project):
    project.loop(100, description="baseline")
    project.ok("run")
    logged = project.ok("log", "--status", "discard", "--description", "no change at all")
    assert logged["git"]["action"] == "none"


def test_nested_session_is_found_from_its_directory_not_from_above(tmp_path):
    top, s = make_nested_project(tmp_path)
    from_root = run_cli(["explain", "--json"], top.path)
    assert from_root.rc != 0
    assert s.ok("explain", "--json")["name"] == "nested"


@pytest.mark.slow
def test_type_changes_and_unusual_names_are_restored(tmp_path):
    p = make_project(tmp_path / "repo", init=False)
    p.write("data", "user data file\n")
    p.write("dir/a.txt", "user a\n")
    p.write("naïve file.txt", "unicode name\n")
    p.ok("init", "--name", "x", "--metric", "time_ms", "--direction", "lower")
    p.loop(100, description="baseline")
    import shutil
    os.unlink(os.path.join(str(p.path), "data"))
    p.write("data/x", "a directory now\n")               # file -> directory
    shutil.rmtree(os.path.join(str(p.path), "dir"))
    p.write("dir", "a file now\n")                        # directory -> file
    p.write("naïve file.txt", "changed\n")
    p.write("new ✓ file.txt", "new\n")
    p.set_delay(150)
    p.ok("run")
    p.ok("log", "--status", "discard", "--description", "reshape")
    assert p.read("data") == "user data file\n"
    assert p.read("dir/a.txt") == "user a\n"
    assert p.read("naïve file.txt") == "unicode name\n"
    assert not p.exists("new ✓ file.txt")
    restored = p.cli("restore", "2", "--json")
    assert restored.rc == 0, restored
    assert p.read("data/x") == "a directory now\n" and p.read("dir") == "a file now\n"
    assert p.read("new ✓ file.txt") == "new\n"


@pytest.mark.slow
def test_racy_uncommitted_edit_before_init_survives_a_discard(tmp_path):
    p = make_project(tmp_path / "repo", init=False)
    racy_edit(p, "work.py", "DELAY_MS = 200\n")
    p.ok("init", "--name", "racy", "--metric", "time_ms", "--direction", "lower")
    assert p.ok("run")["primary"] == 200
    p.ok("log", "--status", "keep", "--description", "baseline")
    assert p.git("show", "HEAD:work.py") == "DELAY_MS = 100\n", "the user's edit was committed"
    p.set_delay(250)                                 # the experiment
    p.ok("run")
    p.ok("log", "--status", "discard", "--description", "worse")
    assert p.read("work.py") == "DELAY_MS = 200\n", "the user's uncommitted edit was lost"



@pytest.mark.slow
def test_restore_that_does_not_apply_changes_nothing(project):
    project.loop(100, description="baseline")
    project.loop(150, status="discard")            # experiment 2: work.py -> 150, saved
    project.set_delay(130)                           # the tree moved on: work.py differs now
    result = project.cli("restore", "2", "--json")
    assert result.rc != 0 and result.json["error"], result
    assert "\n" not in result.json["message"]
    assert project.read("work.py") == "DELAY_MS = 130\n"
