"""Edge cases of keep and discard found in review: each test reproduces a way the first
version lost, leaked or mis-restored someone's work, and pins the fixed behaviour."""

import json
import os
import subprocess

import pytest

from conftest import clean_env, git, make_project

VALUE_BENCH = """#!/usr/bin/env bash
echo "METRIC t=$(cat value.txt)"
"""


def value_project(tmp_path, name="repo", extra=None):
    path = tmp_path / name
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True, env=clean_env())
    from conftest import Project
    project = Project(path)
    project.write("autotune.sh", VALUE_BENCH, mode=0o755)
    project.write("value.txt", "10\n")
    project.write("code.txt", "hello\n")
    for rel, text in (extra or {}).items():
        project.write(rel, text)
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "base")
    return project


def start(project):
    project.ok("init", "--name", "x", "--metric", "t", "--direction", "lower")
    project.ok("run")
    project.ok("log", "--status", "keep", "--description", "baseline")


def experiment(project, value, status="auto", description="experiment"):
    project.write("value.txt", "%s\n" % value)
    project.ok("run")
    return project.ok("log", "--status", status, "--description", description)


@pytest.mark.slow
def test_an_experiment_that_edits_gitignore_neither_commits_nor_deletes_ignored_files(tmp_path):
    project = value_project(tmp_path, extra={".gitignore": ".env\ndata/\n"})
    project.write(".env", "API_KEY=secret\n")
    project.write("data/set.csv", "precious\n")
    start(project)
    project.write(".gitignore", "# tidied up\n")
    logged = experiment(project, 5)
    assert logged["git"]["action"] == "commit"
    assert ".env" not in logged["git"]["files"] and "data/set.csv" not in logged["git"]["files"]
    assert git(project.path, "ls-tree", "-r", "--name-only", "HEAD").split().count(".env") == 0
    project.write(".gitignore", "")
    logged = experiment(project, 20)
    assert logged["git"]["action"] == "revert"
    assert project.read("data/set.csv") == "precious\n" and project.read(".env") == "API_KEY=secret\n"
    assert project.read(".gitignore") == "# tidied up\n"


@pytest.mark.slow
def test_the_snapshot_survives_git_gc(tmp_path):
    project = value_project(tmp_path)
    project.write("local.cfg", "local v1\n")
    start(project)
    git(project.path, "gc", "-q", "--prune=now")
    project.write("local.cfg", "edited by the experiment\n")
    logged = experiment(project, 20)
    assert logged["git"]["action"] == "revert"
    assert project.read("local.cfg") == "local v1\n"


@pytest.mark.slow
def test_a_keep_that_deletes_an_untracked_file_commits(tmp_path):
    project = value_project(tmp_path)
    project.write("scratch.txt", "scratch\n")
    start(project)
    os.unlink(str(project.path / "scratch.txt"))
    logged = experiment(project, 5)
    assert logged["status"] == "keep" and logged["git"]["action"] == "commit"
    assert logged["git"]["files"] == ["scratch.txt", "value.txt"]  # the experiment's paths
    assert project.git("show", "--name-only", "--format=", "HEAD").split() == ["value.txt"]


def test_a_keep_whose_net_effect_is_head_reports_nothing_to_commit(tmp_path):
    bench = '#!/usr/bin/env bash\nif grep -q slow code.txt; then echo "METRIC t=10"; else echo "METRIC t=5"; fi\n'
    project = value_project(tmp_path)
    project.write("autotune.sh", bench, mode=0o755)
    project.git("commit", "-q", "-am", "bench")
    project.write("code.txt", "hello\nslow\n")  # the user's uncommitted edit, before init
    start(project)
    git(project.path, "checkout", "-q", "code.txt")  # the experiment undoes it
    project.ok("run")
    logged = project.ok("log", "--status", "keep", "--description", "drop slow")
    assert logged["git"] == {"action": "none", "message": "nothing to commit"}


@pytest.mark.slow
def test_a_keep_leaves_the_users_other_staged_work_staged(tmp_path):
    project = value_project(tmp_path)
    start(project)
    project.write("notes.txt", "staged by the user\n")
    project.git("add", "notes.txt")
    start_tree = project.git("diff", "--cached", "--name-only")
    project.ok("init", "--name", "x", "--metric", "t", "--direction", "lower")  # notes.txt is pre-existing now
    project.ok("run")
    project.ok("log", "--status", "keep", "--description", "baseline")
    logged = experiment(project, 5)
    assert logged["git"]["files"] == ["value.txt"]
    assert project.git("diff", "--cached", "--name-only") == start_tree
    assert project.git("status", "--porcelain", "value.txt") == ""


@pytest.mark.slow
def test_restore_uses_the_ref_the_log_recorded_even_after_clear(tmp_path):
    project = value_project(tmp_path)
    start(project)
    project.write("code.txt", "old idea\n")
    experiment(project, 20, description="old")
    assert project.cli("clear", "--yes").rc == 0
    start(project)
    project.write("new.txt", "new idea\n")
    logged = experiment(project, 30, description="new")
    saved = logged["git"]["saved"]
    assert saved.endswith("/1.2-2"), saved
    restored = project.cli("restore", "2", "--json")
    assert restored.rc == 0, restored
    assert restored.json["ref"] == saved and sorted(restored.json["files"]) == ["new.txt", "value.txt"]
    assert project.read("new.txt") == "new idea\n" and project.read("code.txt") == "hello\n"


@pytest.mark.slow
def test_restore_works_whatever_the_users_diff_settings(tmp_path):
    project = value_project(tmp_path)
    start(project)
    project.write("code.txt", "changed\n")
    experiment(project, 20)
    git(project.path, "config", "diff.noprefix", "true")
    git(project.path, "config", "color.ui", "always")
    restored = project.cli("restore", "2", "--json")
    assert restored.rc == 0, restored
    assert project.read("code.txt") == "changed\n"


def test_restore_of_an_unknown_experiment_is_a_clear_error(tmp_path):
    project = value_project(tmp_path)
    start(project)
    result = project.cli("restore", "9")
    assert result.rc == 1 and "No discarded experiment 1.9" in result.err
    result = project.cli("restore", "x.y")
    assert result.rc == 2 and "label" in result.err


def test_session_files_are_never_reverted_even_from_a_staged_index(tmp_path):
    """A session of the first implementation has no snapshot: the base is HEAD, and the
    user's index seeds autotune's; a staged autotune.md must still not be reverted."""
    project = value_project(tmp_path, extra={"autotune.md": "notes v1\n"})
    config = {"type": "config", "name": "x", "metric_name": "t", "metric_unit": "", "direction": "lower",
              "segment": 1, "mode": "optimize"}
    result = {"type": "result", "index": 1, "commit": "abc1234", "metric": 10, "status": "keep",
              "description": "baseline", "timestamp": "2026-01-01T00:00:00Z", "segment": 1,
              "metrics": {}, "asi": {}, "failure": None, "health": "improving", "recovery": None,
              "reason": "improved", "files": [], "mode": "optimize"}
    project.write("autotune.jsonl", json.dumps(config) + "\n" + json.dumps(result) + "\n")
    project.write("autotune.md", "notes v2\n")
    project.git("add", "autotune.md")
    project.write("autotune.md", "notes v3, unsaved\n")
    logged = experiment(project, 20)
    assert "autotune.md" not in logged["git"]["files"]
    assert project.read("autotune.md") == "notes v3, unsaved\n"


@pytest.mark.slow
def test_a_submodule_change_is_reported_as_left_not_reverted(tmp_path):
    sub = tmp_path / "subsrc"
    subprocess.run(["git", "init", "-q", "-b", "main", str(sub)], check=True, env=clean_env())
    for message in ("s1", "s2"):
        git(sub, "commit", "-q", "--allow-empty", "-m", message)
    project = value_project(tmp_path)
    subprocess.run(["git", "-c", "protocol.file.allow=always", "submodule", "-q", "add", str(sub), "lib"],
                   cwd=str(project.path), check=True, env=clean_env(), stdout=subprocess.DEVNULL)
    project.git("commit", "-q", "-m", "sub")
    start(project)
    git(project.path / "lib", "checkout", "-q", "HEAD~1")
    logged = experiment(project, 20)
    assert logged["git"]["left"] == ["lib"] and "lib" not in logged["git"]["files"]
    assert "submodules are not reverted" in logged["git"]["message"]
    logged = experiment(project, 5, description="value only")
    assert logged["git"]["files"] == ["value.txt"]  # the left submodule is not swept into a keep


@pytest.mark.slow
def test_numbers_beyond_float_range_are_refused_or_skipped(tmp_path):
    project = make_project(tmp_path / "repo")
    project.ok("run")
    huge = "9" * 400
    before = project.snapshot_bytes()
    result = project.cli("log", "--status", "keep", "--description", "b", "--metrics", '{"mem_mb": %s}' % huge)
    assert result.rc == 1 and result.json["error"] == "bad_metrics"
    assert project.snapshot_bytes() == before
    with open(str(project.path / "autotune.jsonl"), "a") as handle:
        handle.write('{"type": "result", "index": 9, "metric": %s, "status": "discard", "segment": 1}\n' % huge)
    for command in (("explain",), ("status",), ("dashboard",)):
        assert project.cli(*command).rc == 0, command
    project.ok("run")  # a result line after a measurement means it was recorded: measure again
    assert project.ok("log", "--status", "keep", "--description", "after junk")["status"] == "keep"


def test_result_lines_with_odd_types_render(tmp_path):
    project = make_project(tmp_path / "repo")
    project.loop(100, description="baseline")
    with open(str(project.path / "autotune.jsonl"), "a") as handle:
        handle.write('{"type": "result", "index": 2, "commit": 1234567, "metric": 3, "status": "keep",'
                     ' "description": 42, "segment": 1}\n')
    assert project.cli("dashboard").rc == 0
    report = project.cli("report", "--html", str(tmp_path / "r.html"))
    assert report.rc == 0, report
    assert project.cli("export", "--format", "csv").rc == 0


def test_clear_without_a_terminal_names_what_it_would_delete(tmp_path):
    project = make_project(tmp_path / "repo")
    result = project.cli("clear")
    assert result.rc == 1 and "clear deletes autotune.jsonl, .autotune.state;" in result.err
