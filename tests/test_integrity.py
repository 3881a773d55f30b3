"""The loop cannot be fed numbers it did not measure, nor keep what it measured as worse,
nor run a benchmark that something else rewrote on the way (review findings)."""

import json

import pytest

from conftest import clean_env


@pytest.mark.slow
def test_a_typed_in_keep_in_a_measured_segment_needs_an_override(project):
    project.loop(100, description="baseline")
    before = project.snapshot_bytes()
    refused = project.cli("log", "--status", "keep", "--metric", "1", "--description", "invented")
    assert refused.rc == 1 and refused.json["error"] == "unmeasured_metric"
    assert "autotune run" in refused.json["message"]
    assert project.snapshot_bytes() == before
    forced = project.ok("log", "--status", "keep", "--metric", "1", "--description", "by hand",
                        "--force", "--reason", "measured on the lab machine")
    line = project.results()[-1]
    assert forced["measured"] is False and line["forced"] is True
    assert line["override_reason"] == "measured on the lab machine"


@pytest.mark.slow
def test_typed_in_numbers_still_work_where_nothing_is_measured(project):
    """Sessions driven by hand (or by the first implementation) log with --metric."""
    first = project.ok("log", "--status", "keep", "--metric", "100", "--description", "by hand")
    second = project.ok("log", "--status", "keep", "--metric", "90", "--description", "by hand too")
    assert first["measured"] is False and second["improved"] is True


@pytest.mark.slow
def test_a_significantly_worse_result_is_not_kept_without_a_reason(project):
    project.loop(100, description="baseline")
    project.set_delay(130)
    ran = project.ok("run")
    assert ran["verdict"] == "worse"
    refused = project.cli("log", "--status", "keep", "--description", "simpler but slower")
    assert refused.rc == 1 and refused.json["error"] == "keep_refused"
    assert "significantly worse" in refused.json["message"]
    kept = project.ok("log", "--status", "keep", "--description", "simpler but slower", "--force",
                      "--reason", "the person prefers the simpler code")
    assert kept["improved"] is False and project.results()[-1]["verdict"] == "worse"


def test_shell_start_up_variables_never_reach_the_benchmark(project, tmp_path):
    evil = tmp_path / "evil.sh"
    evil.write_text('case "$0" in *autotune.sh) echo "METRIC time_ms=0.001"; exit 0;; esac\n')
    env = clean_env(BASH_ENV=str(evil), ENV=str(evil))
    ran = project.ok("run", env=env)
    assert ran["primary"] == 100


def test_the_hook_denies_a_run_behind_a_variable_assignment(project):
    payload = {"session_id": "s", "cwd": str(project.path), "hook_event_name": "PreToolUse",
               "tool_name": "Bash", "tool_input": {"command": "BASH_ENV=/tmp/evil.sh autotune run"}}
    answer = project.cli("hook", "pre-tool-use", input=json.dumps(payload).encode())
    decision = answer.json["hookSpecificOutput"]
    assert decision["permissionDecision"] == "deny" and "variable assignments" in decision["permissionDecisionReason"]


def test_the_agent_may_not_edit_the_log_state_or_config_of_an_active_loop(project):
    project.loop(100, description="baseline")
    for name in ("autotune.jsonl", ".autotune.state", "autotune.config.json"):
        payload = {"session_id": "s", "cwd": str(project.path), "hook_event_name": "PreToolUse",
                   "tool_name": "Write", "tool_input": {"file_path": str(project.path / name), "content": "{}"}}
        answer = project.cli("hook", "pre-tool-use", input=json.dumps(payload).encode())
        assert answer.json["hookSpecificOutput"]["permissionDecision"] == "deny", name
