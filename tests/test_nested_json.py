"""A user's JSON file nested beyond Python's recursion limit is data, not a crash.

package.json is read by `detect` and by `init --scaffold` (proposals, protected script
bodies), and .claude/settings.local.json by `setup-permissions`: a hostile nesting gets
no proposal or a clear refusal, never an internal error, and `init` does not write its
config line and then fail."""

import json
import os

from conftest import git, run_cli
from support.refusals import INTERNAL_EXIT, clear_error

DEEP = "[" * 200000 + "]" * 200000


def scratch_repo(path):
    os.makedirs(str(path))
    git(str(path), "init", "-q")
    git(str(path), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "init")
    return str(path)


def test_detect_and_scaffold_read_a_hostile_package_json_as_no_scripts(tmp_path):
    repo = scratch_repo(tmp_path / "repo")
    with open(os.path.join(repo, "package.json"), "w") as handle:
        handle.write(DEEP)
    detected = run_cli(["detect"], repo)
    assert detected.rc == 0, detected
    assert detected.json["proposed"] == {"build": [], "test": [], "benchmark": []}
    init = run_cli(["init", "--name", "x", "--metric", "t_s", "--direction", "lower",
                    "--scaffold", "--benchmark", "true"], repo)
    assert init.rc == 0 and init.rc != INTERNAL_EXIT, init
    assert init.json["status"] == "initialized"
    with open(os.path.join(repo, "autotune.jsonl"), encoding="utf-8") as handle:
        lines = [json.loads(line) for line in handle]
    assert [line["type"] for line in lines] == ["config"]


def test_setup_permissions_refuses_a_hostile_settings_file_and_leaves_it(tmp_path):
    repo = scratch_repo(tmp_path / "repo")
    settings = os.path.join(repo, ".claude", "settings.local.json")
    os.makedirs(os.path.dirname(settings))
    with open(settings, "w") as handle:
        handle.write(DEEP)
    result = run_cli(["setup-permissions", "--json"], repo)
    clear_error(result, "bad_settings", "nested too deeply")
    with open(settings) as handle:
        assert handle.read() == DEEP
