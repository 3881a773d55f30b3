"""Issue 10: the user's work is never lost or mixed in, beyond the happy path.

Every test drives the real CLI against real git in a scratch repository and byte-compares
the user's files before and after: symlinked directories inside and outside the
repository, a lossy clean filter, core.autocrlf, a held index lock, the user's own
uncommitted hunks interleaved with the experiment's, a copied autotune.py run through
both launchers, `git status` after a few experiments, a file-size limit during a keep, a
failing hook, a large untracked file, an experiment that edits .gitignore, and `doctor
--fix` with an experiment pending."""

import os
import resource
import shutil
import subprocess
import sys

import pytest

from conftest import AUTOTUNE, ROOT, Project, clean_env, run_cli
from support.refusals import clear_error

BENCH = "#!/usr/bin/env bash\necho \"METRIC t=$(cat value.txt)\"\n"


def repo(tmp_path, files=None, name="repo", config=None):
    """A committed repository whose benchmark prints the number in value.txt."""
    path = tmp_path / name
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True, env=clean_env())
    p = Project(path)
    p.write("autotune.sh", BENCH, mode=0o755)
    p.write("value.txt", "10\n")
    for rel, text in (files or {}).items():
        p.write(rel, text)
    if config is not None:
        import json
        p.write("autotune.config.json", json.dumps(config))
    p.git("add", "-A")
    p.git("commit", "-q", "-m", "base")
    return p


def start(p, **kwargs):
    p.ok("init", "--name", "x", "--metric", "t", "--direction", "lower", **kwargs)
    p.ok("run", **kwargs)
    return p.ok("log", "--status", "keep", "--description", "baseline", **kwargs)


def worse(p, status="discard"):
    p.write("value.txt", "20\n")
    p.ok("run")
    return p.ok("log", "--status", status, "--description", "worse")


def better(p, value=5):
    p.write("value.txt", "%d\n" % value)
    p.ok("run")
    return p.ok("log", "--status", "keep", "--description", "better")


def read(path):
    with open(str(path), "rb") as handle:
        return handle.read()


def tree_bytes(root):
    """Every file under root (symlinks as their target text), for byte comparison."""
    out = {}
    root = str(root)
    for base, dirs, files in os.walk(root):
        if ".git" in dirs:
            dirs.remove(".git")
        for name in dirs + files:
            full = os.path.join(base, name)
            rel = os.path.relpath(full, root)
            if os.path.islink(full):
                out[rel] = ("link", os.readlink(full))
            elif os.path.isfile(full):
                out[rel] = ("file", read(full))
    return out


def git_state(p):
    """HEAD, the user's index bytes and the refs: what "nothing changed" compares."""
    return (p.git("rev-parse", "HEAD"), read(os.path.join(str(p.path), ".git", "index")),
            p.git("for-each-ref", "--format=%(refname) %(objectname)", "refs/heads", "refs/autotune/discarded"))


# ------------------------------------------------------------ 1. symlinks ----


@pytest.mark.slow
def test_a_discard_never_deletes_through_a_symlink_to_a_directory_outside(tmp_path):
    dataset = tmp_path / "shared-dataset"
    dataset.mkdir()
    (dataset / "train.csv").write_bytes(b"precious,rows\n")
    (dataset / "test.csv").write_bytes(b"more,rows\n")
    p = repo(tmp_path)
    os.symlink(str(dataset), os.path.join(str(p.path), "data"))
    p.git("add", "data")
    p.git("commit", "-q", "-m", "link the dataset")
    start(p)
    before = tree_bytes(dataset)
    # the experiment replaces the link with a local copy of the data
    os.unlink(os.path.join(str(p.path), "data"))
    shutil.copytree(str(dataset), os.path.join(str(p.path), "data"))
    p.write("data/extra.csv", "made by the experiment\n")
    logged = worse(p)
    assert logged["git"]["action"] == "revert"
    assert tree_bytes(dataset) == before, "files behind the symlink were deleted"
    assert os.readlink(os.path.join(str(p.path), "data")) == str(dataset)


@pytest.mark.slow
def test_a_discard_never_deletes_a_tracked_file_through_a_symlink_inside_the_repo(tmp_path):
    p = repo(tmp_path, {"src/a.py": "A = 1\n", "src/b.py": "B = 2\n"})
    os.symlink("src", os.path.join(str(p.path), "lib"))
    p.git("add", "lib")
    p.git("commit", "-q", "-m", "lib is src")
    start(p)
    before = tree_bytes(p.path)
    os.unlink(os.path.join(str(p.path), "lib"))           # lib becomes a real directory
    shutil.copytree(os.path.join(str(p.path), "src"), os.path.join(str(p.path), "lib"))
    worse(p)
    after = tree_bytes(p.path)
    for rel in ("src/a.py", "src/b.py", "lib"):
        assert after[rel] == before[rel], rel
    assert p.git("status", "--porcelain", "--", "src", "lib") == ""
    kept = better(p)                                       # the next keep deletes nothing
    assert kept["git"]["files"] == ["value.txt"]
    assert p.git("ls-tree", "-r", "--name-only", "HEAD", "src").split() == ["src/a.py", "src/b.py"]


def test_a_directory_replaced_by_a_symlink_is_restored_without_touching_the_target(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "model.bin").write_bytes(b"\x00weights\xff")
    p = repo(tmp_path, {"models/model.bin": "local model\n", "models/readme": "r\n"})
    start(p)
    shutil.rmtree(os.path.join(str(p.path), "models"))
    os.symlink(str(outside), os.path.join(str(p.path), "models"))
    worse(p)
    assert read(outside / "model.bin") == b"\x00weights\xff" and sorted(os.listdir(str(outside))) == ["model.bin"]
    assert not os.path.islink(os.path.join(str(p.path), "models"))
    assert p.read("models/model.bin") == "local model\n" and p.read("models/readme") == "r\n"


# ------------------------------------------------------- 2. bytes, not blobs ----

STRIP = "#!/bin/sh\ngrep -v '\"output\"'\n"
NOTEBOOK = b'{"cells": [\n  {"source": "x = 1"},\n  {"output": "a plot the user waited an hour for"}\n]}\n'


@pytest.mark.slow
def test_a_discard_restores_the_bytes_a_lossy_clean_filter_would_drop(tmp_path):
    p = repo(tmp_path, {".gitattributes": "*.ipynb filter=strip\n"})
    p.write("strip.sh", STRIP, mode=0o755)
    p.git("config", "filter.strip.clean", os.path.join(str(p.path), "strip.sh"))
    p.git("config", "filter.strip.smudge", "cat")
    with open(os.path.join(str(p.path), "analysis.ipynb"), "wb") as handle:
        handle.write(NOTEBOOK)
    p.git("add", "analysis.ipynb", "strip.sh")
    p.git("commit", "-q", "-m", "notebook")
    start(p)
    assert read(p.path / "analysis.ipynb") == NOTEBOOK
    with open(os.path.join(str(p.path), "analysis.ipynb"), "ab") as handle:
        handle.write(b'{"output": "the experiment reran it"}\n')
    worse(p)
    assert read(p.path / "analysis.ipynb") == NOTEBOOK, "the user's outputs were lost"
    # a keep still commits what the filter cleans: outputs never reach a commit
    with open(os.path.join(str(p.path), "analysis.ipynb"), "wb") as handle:
        handle.write(NOTEBOOK.replace(b"x = 1", b"x = 2"))
    better(p)
    committed = p.git("show", "HEAD:analysis.ipynb")
    assert "x = 2" in committed and "output" not in committed
    assert read(p.path / "analysis.ipynb") == NOTEBOOK.replace(b"x = 1", b"x = 2")


@pytest.mark.slow
@pytest.mark.parametrize("autocrlf,content", [("input", b"one\r\ntwo\r\n"), ("true", b"lf\nonly\n"),
                                              ("true", b"mixed\r\nendings\n")])
def test_a_discard_restores_line_endings_exactly(tmp_path, autocrlf, content):
    p = repo(tmp_path)
    p.git("config", "core.autocrlf", autocrlf)
    p.git("config", "core.safecrlf", "false")
    with open(os.path.join(str(p.path), "notes.txt"), "wb") as handle:
        handle.write(content)                              # untracked, the user's
    start(p)
    with open(os.path.join(str(p.path), "notes.txt"), "ab") as handle:
        handle.write(b"experiment\r\n")
    worse(p)
    assert read(p.path / "notes.txt") == content


# ------------------------------------------------------------ 3. index lock ----


@pytest.mark.slow
def test_a_keep_with_the_index_locked_refuses_and_changes_nothing(tmp_path):
    p = repo(tmp_path)
    start(p)
    p.write("value.txt", "5\n")
    p.ok("run")
    lock = os.path.join(str(p.path), ".git", "index.lock")
    with open(lock, "wb"):
        pass
    state, log, tree = git_state(p), p.snapshot_bytes(), tree_bytes(p.path)
    refused = p.cli("log", "--status", "keep", "--description", "better")
    clear_error(refused, "git_locked")
    assert "index.lock" in refused.json["message"]
    assert git_state(p) == state and p.snapshot_bytes() == log and tree_bytes(p.path) == tree
    os.unlink(lock)
    kept = p.ok("log", "--status", "keep", "--description", "better")
    assert kept["git"]["action"] == "commit"
    # commit, ref and index agree: nothing staged reverts the kept change
    assert p.git("diff", "--cached", "--name-only") == "" and p.git("status", "--porcelain") == ""


# ------------------------------------------------- 4. the user's own edits ----

LINES = "".join("line %d\n" % i for i in range(1, 13))


def edit(text, changes):
    lines = text.splitlines(True)
    for number, new in changes.items():
        lines[number - 1] = new
    return "".join(lines)


@pytest.mark.slow
def test_a_keep_commits_only_the_experiments_hunks_and_leaves_the_users_uncommitted(tmp_path):
    p = repo(tmp_path, {"code.py": LINES})
    wip = edit(LINES, {2: "line 2 (mine)\n", 8: "line 8 (mine)\n"})
    p.write("code.py", wip)
    init = p.ok("init", "--name", "x", "--metric", "t", "--direction", "lower")
    assert "code.py" in init["warning"] and "uncommitted" in init["warning"]
    p.ok("run")
    p.ok("log", "--status", "keep", "--description", "baseline")
    both = edit(wip, {5: "line 5 (experiment)\n", 11: "line 11 (experiment)\n"})
    p.write("code.py", both)
    p.write("value.txt", "5\n")
    p.ok("run")
    kept = p.ok("log", "--status", "keep", "--description", "experiment")
    assert sorted(kept["git"]["files"]) == ["code.py", "value.txt"]
    assert p.git("show", "HEAD:code.py") == edit(LINES, {5: "line 5 (experiment)\n",
                                                        11: "line 11 (experiment)\n"})
    assert p.read("code.py") == both                       # the working tree is untouched
    diff = p.git("diff", "-U0", "--", "code.py")            # what stays uncommitted: the user's
    assert "+line 2 (mine)" in diff and "+line 8 (mine)" in diff and "experiment" not in diff
    assert p.git("diff", "--cached", "--name-only") == ""


def test_a_keep_whose_hunks_overlap_the_users_refuses_naming_the_file(tmp_path):
    p = repo(tmp_path, {"code.py": LINES})
    wip = edit(LINES, {4: "line 4 (mine)\n"})
    p.write("code.py", wip)
    start(p)
    p.write("code.py", edit(wip, {4: "line 4 (mine, then the experiment's)\n"}))
    p.write("value.txt", "5\n")
    p.ok("run")
    state, log, tree = git_state(p), p.snapshot_bytes(), tree_bytes(p.path)
    refused = p.cli("log", "--status", "keep", "--description", "experiment")
    clear_error(refused, "mixed_changes")
    assert "code.py" in refused.json["message"] and "commit" in refused.json["message"]
    assert git_state(p) == state and p.snapshot_bytes() == log and tree_bytes(p.path) == tree


def test_an_experiment_edit_of_an_untracked_user_file_cannot_be_kept_silently(tmp_path):
    p = repo(tmp_path)
    p.write("draft.py", "mine\n")
    start(p)
    p.write("draft.py", "mine\nexperiment\n")
    p.write("value.txt", "5\n")
    p.ok("run")
    refused = p.cli("log", "--status", "keep", "--description", "experiment")
    assert refused.rc != 0 and refused.json["error"] == "mixed_changes" and "draft.py" in refused.json["message"]
    assert "draft.py" not in p.git("ls-tree", "-r", "--name-only", "HEAD").split()


# -------------------------------------------------- 5. a copied autotune.py ----

MODULE_LAUNCHER = "import sys; sys.path.insert(0, sys.argv.pop(1)); import autotune; sys.exit(autotune.main())"


@pytest.mark.slow
@pytest.mark.parametrize("first", ["script", "module"])
def test_a_copied_autotune_is_never_committed_whichever_launcher_runs(tmp_path, first):
    p = repo(tmp_path)
    shutil.copy(AUTOTUNE, os.path.join(str(p.path), "autotune.py"))
    copy = os.path.join(str(p.path), "autotune.py")
    script = [sys.executable, copy]                              # python3 autotune.py
    in_repo_module = [sys.executable, "-c", MODULE_LAUNCHER, str(p.path)]   # bin/autotune of the copy
    installed = [sys.executable, "-I", "-S", "-c", MODULE_LAUNCHER, ROOT]   # an installed autotune
    order = [script, installed, in_repo_module] if first == "script" else [installed, in_repo_module, script]

    def call(argv, *args):
        proc = subprocess.run(argv + list(args), cwd=str(p.path), env=clean_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.returncode == 0, proc
        return proc

    call(order[0], "init", "--name", "x", "--metric", "t", "--direction", "lower")
    for value, argv in ((10, order[1]), (5, order[2]), (4, order[0])):
        p.write("value.txt", "%d\n" % value)
        call(argv, "run")
        call(argv, "log", "--status", "keep", "--description", "v%d" % value)
    committed = p.git("log", "--name-only", "--format=").split()
    assert "autotune.py" not in committed and not any("__pycache__" in c for c in committed)
    assert p.git("status", "--porcelain") == ""


# ------------------------------------------------ 6. out of `git status` ----


@pytest.mark.slow
def test_session_files_never_show_in_git_status(tmp_path):
    p = repo(tmp_path)
    gitignore_absent = not p.exists(".gitignore")
    start(p)
    p.write("autotune.md", "# notes\n")
    p.write("autotune.ideas.md", "- idea\n")
    worse(p)
    better(p)
    assert p.cli("report", "--html", "report.html").rc == 0
    assert p.cli("export", "--format", "csv", "-o", "results.csv").rc == 0
    assert p.git("status", "--porcelain", "--untracked-files=all") == ""
    assert gitignore_absent and not p.exists(".gitignore")   # never the user's .gitignore
    p.git("add", "-A")
    assert p.git("diff", "--cached", "--name-only") == ""


ODD = ["!bang.txt", "#hash.txt", "a*b.txt", "q?.txt", "[ab].txt", "trailing space ", "back\\slash",
       "ünï cödé.txt", "tab\there"]


@pytest.mark.slow
def test_exclude_lines_for_odd_names_match_exactly_that_file(tmp_path):
    p = repo(tmp_path)
    start(p)
    siblings = ["abc", "a", "b", "q1.txt", "axb.txt", "bang.txt", "hash.txt", "trailing space",
                "backslash", "back/slash", "ab.txt"]
    for name in ODD:
        assert p.cli("export", "-o", name).rc == 0
    for name in siblings:
        if "/" not in name:
            p.write(name, "sibling\n")
    untracked = p.git("ls-files", "-z", "--others", "--exclude-standard").split("\0")
    for name in ODD:
        assert name not in untracked, name
    for name in siblings:
        if "/" not in name:
            assert name in untracked, "%r was excluded by an odd name's line" % name


@pytest.mark.slow
def test_a_name_with_a_newline_is_never_excluded_by_a_pattern_that_matches_others(tmp_path):
    p = repo(tmp_path)
    start(p)
    p.write("axb", "sibling\n")
    assert p.cli("export", "-o", "a\nb").rc == 0
    untracked = p.git("ls-files", "-z", "--others", "--exclude-standard").split("\0")
    assert "axb" in untracked
    kept = better(p)                                           # nor is it committed
    assert "a\nb" not in kept["git"]["files"]


# ------------------------------------------- 7. disk full and failing hooks ----


def limited(bytes_):
    def preexec():
        resource.setrlimit(resource.RLIMIT_FSIZE, (bytes_, bytes_))
    return preexec


@pytest.mark.slow
def test_a_file_size_limit_during_a_keep_refuses_clearly_and_changes_nothing(tmp_path):
    p = repo(tmp_path, {"code.py": "x = 1\n"})
    start(p)
    p.write("code.py", "x = 2\n")
    p.write("value.txt", "5\n")
    p.ok("run")
    state, log, tree = git_state(p), p.snapshot_bytes(), tree_bytes(p.path)
    argv = [sys.executable, AUTOTUNE, "log", "--status", "keep", "--description", "better"]
    proc = subprocess.run(argv, cwd=str(p.path), env=clean_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, preexec_fn=limited(1024))
    import json
    answer = json.loads(proc.stdout.decode())
    assert proc.returncode != 0 and answer["error"] == "disk_full", proc
    message = answer["message"]
    assert "internal" not in message and "nothing was committed" in message.lower()
    assert "autotune log --status keep --description better" in message
    assert git_state(p) == state and p.snapshot_bytes() == log and tree_bytes(p.path) == tree
    p.ok("log", "--status", "keep", "--description", "better")   # the command it named works
    assert p.git("show", "HEAD:code.py") == "x = 2\n"


@pytest.mark.slow
def test_a_discard_under_a_file_size_limit_refuses_before_restoring_anything(tmp_path):
    p = repo(tmp_path, {"big.txt": "x" * 4000 + "\n"})
    start(p)
    p.write("big.txt", "small now\n")
    p.write("value.txt", "20\n")
    p.ok("run")
    state, log, tree = git_state(p), p.snapshot_bytes(), tree_bytes(p.path)
    argv = [sys.executable, AUTOTUNE, "log", "--status", "discard", "--description", "worse"]
    proc = subprocess.run(argv, cwd=str(p.path), env=clean_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, preexec_fn=limited(2048))
    import json
    answer = json.loads(proc.stdout.decode())
    assert proc.returncode != 0 and answer["error"] == "disk_full", proc
    assert "nothing was reverted" in answer["message"].lower()
    assert git_state(p) == state and p.snapshot_bytes() == log and tree_bytes(p.path) == tree


DISKFULL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "support", "diskfull.py")


@pytest.mark.slow
def test_a_disk_that_fills_after_the_commit_names_the_one_command_that_records_it(tmp_path):
    p = repo(tmp_path, {"code.py": "x = 1\n"})
    start(p)
    p.write("code.py", "x = 2\n")
    p.write("value.txt", "5\n")
    p.ok("run")
    log_before = p.snapshot_bytes()["autotune.jsonl"]
    proc = subprocess.run([sys.executable, DISKFULL, AUTOTUNE, "autotune.jsonl", "log", "--status",
                           "keep", "--description", "better"], cwd=str(p.path), env=clean_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    import json
    answer = json.loads(proc.stdout.decode())
    assert proc.returncode != 0 and answer["error"] == "disk_full", proc
    head = p.git("rev-parse", "--short=7", "HEAD").strip()
    assert head in answer["message"] and "log is unchanged" in answer["message"]
    assert p.snapshot_bytes()["autotune.jsonl"] == log_before     # no torn line left behind
    command = answer["message"].split("record it with: ", 1)[1].rstrip(".")
    import shlex
    argv = shlex.split(command)
    assert argv[:2] == ["autotune", "log"]
    recorded = p.ok(*argv[1:])
    assert recorded["commit"] == head and recorded["status"] == "keep"
    assert p.git("rev-parse", "--short=7", "HEAD").strip() == head


@pytest.mark.slow
def test_a_hook_that_rejects_the_update_shows_its_own_message(tmp_path):
    p = repo(tmp_path)
    start(p)
    hook = os.path.join(str(p.path), ".git", "hooks", "reference-transaction")
    with open(hook, "w") as handle:
        handle.write("#!/bin/sh\nif [ \"$1\" = prepared ]; then\n"
                     "  echo 'policy: the release branch is frozen until Monday' >&2\n  exit 1\nfi\n")
    os.chmod(hook, 0o755)
    p.write("value.txt", "5\n")
    p.ok("run")
    state, log = git_state(p), p.snapshot_bytes()
    refused = p.cli("log", "--status", "keep", "--description", "better")
    assert refused.rc != 0 and "frozen until Monday" in refused.json["message"], refused
    assert "internal" not in refused.json["error"]
    assert git_state(p) == state and p.snapshot_bytes() == log


# ---------------------------------------------------- 8. large untracked files ----


@pytest.mark.slow
def test_a_large_untracked_file_is_not_copied_into_git_and_never_touched(tmp_path):
    p = repo(tmp_path, config={"git": {"maxFileMB": 0.01}})       # about 10 KB
    big = os.urandom(30000)
    with open(os.path.join(str(p.path), "dataset.bin"), "wb") as handle:
        handle.write(big)
    init = p.ok("init", "--name", "x", "--metric", "t", "--direction", "lower")
    assert "dataset.bin" in init["warning"]
    blob = subprocess.run(["git", "hash-object", "dataset.bin"], cwd=str(p.path), env=clean_env(),
                          stdout=subprocess.PIPE).stdout.decode().strip()
    p.ok("run")
    p.ok("log", "--status", "keep", "--description", "baseline")
    assert subprocess.run(["git", "cat-file", "-e", blob], cwd=str(p.path), env=clean_env()).returncode != 0
    changed = big[:100] + b"experiment" + big[110:]
    with open(os.path.join(str(p.path), "dataset.bin"), "wb") as handle:
        handle.write(changed)
    p.write("value.txt", "20\n")
    ran = p.ok("run")
    assert any("dataset.bin" in w for w in ran["warnings"])
    logged = p.ok("log", "--status", "discard", "--description", "worse")
    assert "dataset.bin" not in logged["git"]["files"] and "dataset.bin" in logged["git"]["message"]
    assert read(p.path / "dataset.bin") == changed                 # never reverted
    kept = better(p)
    assert "dataset.bin" not in kept["git"]["files"]
    assert "dataset.bin" not in p.git("ls-tree", "-r", "--name-only", "HEAD").split()


# ------------------------------------------------- 9. ignored files and keeps ----


@pytest.mark.slow
def test_ignored_files_never_enter_a_keep_after_a_discarded_gitignore_edit(tmp_path):
    bench = ("#!/usr/bin/env bash\nmkdir -p dist\necho \"built $RANDOM$RANDOM $(date +%N)\" > dist/out.txt\n"
             "echo \"METRIC t=$(cat value.txt)\"\n")
    p = repo(tmp_path, {".gitignore": "dist\n"})
    p.write("autotune.sh", bench, mode=0o755)
    p.git("commit", "-q", "-am", "bench writes dist")
    start(p)
    p.write(".gitignore", "")
    worse(p)
    assert p.read(".gitignore") == "dist\n"
    p.write("value.txt", "5\n")
    ran = p.ok("run")
    assert not ran.get("warnings"), ran
    kept = p.ok("log", "--status", "keep", "--description", "better")
    assert kept["git"]["files"] == ["value.txt"]
    assert "dist/out.txt" not in p.git("ls-tree", "-r", "--name-only", "HEAD").split()
    rebased = p.cli("rebaseline")
    assert rebased.rc == 0, rebased
    doctor = p.cli("doctor", "--json")
    assert doctor.rc == 0 and doctor.json["ok"], doctor


@pytest.mark.slow
def test_doctor_finds_and_fixes_an_index_polluted_by_ignored_files(tmp_path):
    p = repo(tmp_path, {".gitignore": "dist\n"})
    start(p)
    p.write("dist/out.txt", "built\n")
    cache = [d for d in os.listdir(os.path.join(str(p.path), ".git", "autotune"))][0]
    index = os.path.join(str(p.path), ".git", "autotune", cache, "snapshot.index")
    env = clean_env(GIT_INDEX_FILE=index)
    subprocess.run(["git", "add", "-f", "dist/out.txt"], cwd=str(p.path), env=env, check=True)
    p.write("value.txt", "7\n")                                 # an experiment in progress
    found = p.cli("doctor", "--json")
    assert found.rc != 0 and [x["code"] for x in found.json["problems"]] == ["snapshot_ignored"]
    fixed = p.ok("doctor", "--fix", "--json")
    assert fixed["ok"]
    kept = better(p)
    assert kept["git"]["files"] == ["value.txt"]
    assert read(p.path / "dist/out.txt") == b"built\n"


# ------------------------------------------- 10. doctor --fix keeps it pending ----


@pytest.mark.slow
def test_doctor_fix_after_head_moved_keeps_the_experiment_pending(tmp_path):
    p = repo(tmp_path, {"code.py": "x = 1\n"})
    start(p)
    p.write("code.py", "x = 2  # the experiment\n")
    p.write("value.txt", "20\n")
    p.ok("run")
    p.write("mine.txt", "the user's own file\n")                 # the user's commit, mid-experiment
    p.git("add", "mine.txt")
    p.git("commit", "-q", "-m", "my own change")
    refused = p.cli("log", "--status", "discard", "--description", "worse")
    clear_error(refused, "head_moved")
    fixed = p.ok("doctor", "--fix", "--json")
    message = " ".join(x["message"] for x in fixed["problems"])
    assert "pending" in message and "code.py" in message
    logged = p.ok("log", "--status", "discard", "--description", "worse")
    assert logged["git"]["action"] == "revert" and sorted(logged["git"]["files"]) == ["code.py", "value.txt"]
    assert p.read("code.py") == "x = 1\n" and p.read("value.txt") == "10\n"
    assert p.read("mine.txt") == "the user's own file\n"
    assert p.git("status", "--porcelain") == ""


@pytest.mark.slow
def test_a_keep_merges_into_the_users_staged_version_of_the_file(tmp_path):
    p = repo(tmp_path, {"code.py": LINES})
    staged = edit(LINES, {2: "line 2 (staged by me)\n"})
    p.write("code.py", staged)
    p.git("add", "code.py")
    start(p)
    p.write("code.py", edit(staged, {10: "line 10 (experiment)\n"}))
    p.write("value.txt", "5\n")
    p.ok("run")
    p.ok("log", "--status", "keep", "--description", "experiment")
    assert p.git("show", "HEAD:code.py") == edit(LINES, {10: "line 10 (experiment)\n"})
    cached = p.git("diff", "--cached", "-U0")                 # still staged: the user's line only
    assert "+line 2 (staged by me)" in cached and "experiment" not in cached
    assert p.git("diff") == ""


@pytest.mark.slow
def test_a_session_started_by_an_older_version_is_excluded_at_its_next_run(tmp_path):
    p = repo(tmp_path)
    start(p)
    exclude = os.path.join(str(p.path), ".git", "info", "exclude")
    with open(exclude, "w") as handle:
        handle.write("# the user's own line\n*.swp\n")
    assert "autotune.jsonl" in p.git("status", "--porcelain")
    p.ok("run")
    assert p.git("status", "--porcelain") == ""
    with open(exclude) as handle:
        assert handle.read().startswith("# the user's own line\n*.swp\n")


def test_apply_experiment_separates_hunks_next_to_each_other_and_refuses_the_same_lines():
    from autotune import apply_experiment
    head = b"a\nb\nc\nd\n"
    base = b"a (mine)\nb\nc\nd\n"                                  # the user's edit of line 1
    assert apply_experiment(head, base, b"a (mine)\nb (exp)\nc\nd\n") == b"a\nb (exp)\nc\nd\n"
    assert apply_experiment(head, base, b"a (mine)\nnew\nb\nc\nd\n") == b"a\nnew\nb\nc\nd\n"
    assert apply_experiment(head, base, b"a (mine)\nb\nc\n") == b"a\nb\nc\n"            # deletion
    assert apply_experiment(head, base, b"a (mine, exp)\nb\nc\nd\n") is None           # same line
    assert apply_experiment(b"x\n", b"x\nmine\n", b"x\nmine\nexp\n") == b"x\nexp\n"
    assert apply_experiment(b"x\n", b"x\nmine\n", b"x\nexp\nmine\n") == b"x\nexp\n"  # just before
    assert apply_experiment(b"x\ny\nz\n", b"x\nz\n", b"x\nnew\nz\n") is None   # where the user deleted
    assert apply_experiment(b"a\n", b"a\nb", b"a\nb\nc") is None                    # no final newline
    assert apply_experiment(b"\0bin", b"\0bin2", b"\0bin3") is None


def test_apply_experiment_on_random_interleavings_gives_head_plus_the_experiment():
    import random
    from autotune import apply_experiment
    rng = random.Random(10)
    for _ in range(200):
        n = rng.randint(4, 40)
        head = ["line %d\n" % i for i in range(n)]
        owner = [rng.choice("u e . . .") for _ in range(n)]     # who edits each line
        for i in range(1, n):                                     # keep owners apart by a line
            if owner[i] != "." and owner[i - 1] not in (".", owner[i]):
                owner[i] = "."
        base = [l.replace("\n", " (mine)\n") if o == "u" else l for l, o in zip(head, owner)]
        ours = [l.replace("\n", " (exp)\n") if o == "e" else l for l, o in zip(base, owner)]
        expected = [l.replace("\n", " (exp)\n") if o == "e" else l for l, o in zip(head, owner)]
        got = apply_experiment("".join(head).encode(), "".join(base).encode(), "".join(ours).encode())
        assert got == "".join(expected).encode(), owner


def test_a_hook_that_rejects_saving_a_discard_shows_its_message_and_reverts_nothing(tmp_path):
    p = repo(tmp_path)
    start(p)
    hook = os.path.join(str(p.path), ".git", "hooks", "reference-transaction")
    with open(hook, "w") as handle:
        handle.write("#!/bin/sh\nif [ \"$1\" = prepared ] && grep -q discarded; then\n"
                     "  echo 'audit: refs/autotune is not allowed here' >&2\n  exit 1\nfi\n")
    os.chmod(hook, 0o755)
    p.write("value.txt", "20\n")
    p.ok("run")
    state, log, tree = git_state(p), p.snapshot_bytes(), tree_bytes(p.path)
    refused = p.cli("log", "--status", "discard", "--description", "worse")
    assert refused.rc != 0 and "refs/autotune is not allowed here" in refused.json["message"], refused
    assert git_state(p) == state and p.snapshot_bytes() == log and tree_bytes(p.path) == tree


LFS_CLEAN = """#!/bin/sh
# a Git LFS stand-in: the content goes to a store, git keeps a pointer
tmp=$(mktemp); cat > "$tmp"; id=$(git hash-object --no-filters "$tmp")
mkdir -p "$STORE"; mv "$tmp" "$STORE/$id"; echo "pointer $id"
"""
LFS_SMUDGE = """#!/bin/sh
read word id; cat "$STORE/$id"
"""


@pytest.mark.slow
def test_a_large_file_behind_a_clean_filter_is_not_copied_raw_and_is_restored_by_smudging(tmp_path):
    store = str(tmp_path / "lfs-store")
    p = repo(tmp_path, {".gitattributes": "*.bin filter=lfsish\n"}, config={"git": {"maxFileMB": 0.01}})
    p.write("clean.sh", LFS_CLEAN.replace("$STORE", store), mode=0o755)
    p.write("smudge.sh", LFS_SMUDGE.replace("$STORE", store), mode=0o755)
    p.git("config", "filter.lfsish.clean", os.path.join(str(p.path), "clean.sh"))
    p.git("config", "filter.lfsish.smudge", os.path.join(str(p.path), "smudge.sh"))
    model = os.urandom(30000)
    with open(os.path.join(str(p.path), "model.bin"), "wb") as handle:
        handle.write(model)
    p.git("add", "model.bin", "clean.sh", "smudge.sh")
    p.git("commit", "-q", "-m", "model in the store")
    start(p)
    raw = subprocess.run(["git", "hash-object", "--no-filters", "model.bin"], cwd=str(p.path),
                         env=clean_env(), stdout=subprocess.PIPE).stdout.decode().strip()
    assert subprocess.run(["git", "cat-file", "-e", raw], cwd=str(p.path), env=clean_env()).returncode != 0
    with open(os.path.join(str(p.path), "model.bin"), "wb") as handle:
        handle.write(os.urandom(30000))
    worse(p)
    assert read(p.path / "model.bin") == model


@pytest.mark.slow
def test_a_discard_says_when_the_users_index_still_stages_the_experiments_rename(tmp_path):
    """A discard restores files, not the user's index: a `git mv` the experiment made stays
    staged, and the answer says so with the command that unstages it (run from anywhere)."""
    p = repo(tmp_path, files={"doc.txt": "the user's document\n", "sub/keep.txt": "k\n"})
    start(p)
    p.git("mv", "doc.txt", "doc2.txt")
    p.write("value.txt", "20\n")
    p.ok("run")
    answer = p.ok("log", "--status", "discard", "--description", "rename the doc")
    assert read(p.path / "doc.txt") == b"the user's document\n" and not (p.path / "doc2.txt").exists()
    assert answer["git"]["staged"] == ["doc.txt", "doc2.txt"], answer["git"]
    note = answer["git"]["index_note"]
    assert "git restore --staged -- :/doc.txt :/doc2.txt" in note, note
    subprocess.run(["git", "restore", "--staged", "--", ":/doc.txt", ":/doc2.txt"], cwd=str(p.path / "sub"),
                   check=True, env=clean_env())
    assert p.git("status", "--porcelain", "--", "doc.txt", "doc2.txt") == ""
    # an ordinary discard (nothing staged) says nothing about the index
    p.write("value.txt", "30\n")
    p.ok("run")
    plain = p.ok("log", "--status", "discard", "--description", "worse")
    assert "staged" not in plain["git"] and "index_note" not in plain["git"], plain["git"]
