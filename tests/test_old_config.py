"""Issue 13, point 4: configs written for the first implementation keep working.

Its keys are accepted with a one-line warning naming what they do now; an unknown key
is a warning with a "did you mean"; a wrong type for a key autotune uses is an error for
the commands that need the config, while status, explain, dashboard, export and doctor
answer with the problem shown."""

import json

import pytest

import autotune
from conftest import make_project

OLD_CONFIG = {  # as the first implementation's README and lib/health.py read it
    "maxIterations": 0,
    "autoResume": "prompt",
    "health": {"maxNoImprovementRuns": "4", "maxCrashStreak": 2, "maxFlakyRetries": 2,
               "stuckTimeoutSeconds": 900},
    "recovery": {"playbooks": ["rebaseline", "ask_a_human", "pause"], "maxHealingAttempts": "3",
                 "pauseOnExhaustedRecovery": True},
}


def read(data):
    return autotune.read_config("/x/autotune.config.json", data)


def test_the_old_keys_are_read_with_one_line_warnings():
    s = read(OLD_CONFIG)
    assert not s.errors, s.errors
    assert s.max_iterations is None                       # 0 = no limit, as before
    assert s.max_no_improve == 4 and s.max_heals == 3     # numbers given as strings
    assert s.playbooks == ["rebaseline", "pause"]         # the unknown playbook is skipped
    text = "\n".join(s.warnings)
    assert all("\n" not in w and w.startswith("autotune.config.json: ") for w in s.warnings)
    for key, now in (("health.maxFlakyRetries", "evaluator.maxSamples"),
                     ("health.stuckTimeoutSeconds", "timeouts.benchmark"),
                     ("maxIterations", "no iteration limit"),
                     ("health.maxNoImprovementRuns", "read as the number 4"),
                     ("recovery.maxHealingAttempts", "read as the number 3"),
                     ("recovery.playbooks", "ask_a_human")):
        assert any(key in w and now in w for w in s.warnings), (key, text)
    assert len(s.warnings) == 6


@pytest.mark.parametrize("data, key, suggestion", [
    ({"autoresume": "off"}, "autoresume", "autoResume"),
    ({"maxIteration": 5}, "maxIteration", "maxIterations"),
    ({"health": {"maxCrashStreaks": 3}}, "health.maxCrashStreaks", "health.maxCrashStreak"),
    ({"evaluator": {"maxsamples": 3}}, "evaluator.maxsamples", "evaluator.maxSamples"),
])
def test_an_unknown_key_is_a_warning_with_did_you_mean(data, key, suggestion):
    s = read(data)
    assert not s.errors
    assert len(s.warnings) == 1 and key in s.warnings[0] and "did you mean %s?" % suggestion in s.warnings[0]


def test_a_whole_number_written_as_a_float_is_that_number():
    s = read({"health": {"maxCrashStreak": 3.0}, "maxIterations": 0.0})
    assert not s.errors and s.max_crash_streak == 3 and s.max_iterations is None
    assert read({"health": {"maxCrashStreak": 2.5}}).errors


def test_budget_max_iterations_zero_is_unlimited_too():
    assert read({"maxIterations": 5, "budget": {"maxIterations": 0}}).max_iterations is None
    assert read({"budget": {"maxIterations": "7"}}).max_iterations == 7


@pytest.mark.parametrize("data, key", [
    ({"health": {"maxCrashStreak": "three"}}, "health.maxCrashStreak"),
    ({"health": {"maxCrashStreak": True}}, "health.maxCrashStreak"),
    ({"recovery": {"playbooks": "rebaseline"}}, "recovery.playbooks"),
    ({"recovery": {"pauseOnExhaustedRecovery": "yes"}}, "recovery.pauseOnExhaustedRecovery"),
    ({"maxIterations": -1}, "maxIterations"),
    ({"health": 5}, "health"),
    ({"evaluator": {"repeat": "often"}}, "evaluator.repeat"),
])
def test_a_wrong_type_is_an_error_naming_the_key(data, key):
    s = read(data)
    assert len(s.errors) == 1 and key in s.errors[0], s.errors


def test_the_schema_is_one_table():
    fields = {name for name, _ in autotune.Settings.FIELDS}
    for key, kind, field, opts in autotune.CONFIG_SCHEMA:
        assert kind in autotune.CONFIG_KINDS, key
        assert field is None or field in fields, key


# ----------------------------------------------------------------- the CLI ----

@pytest.mark.slow
def test_an_old_config_runs_the_loop_with_its_warnings_shown(tmp_path):
    p = make_project(tmp_path / "repo", config=OLD_CONFIG)
    ran = p.ok("run")
    assert any("maxFlakyRetries" in w for w in ran["warnings"])
    logged = p.ok("log", "--status", "auto", "--description", "baseline")
    assert logged["limit"]["max_iterations"] is None
    explain = p.ok("explain", "--json")
    assert explain["max_no_improve"] == 4 and len(explain["warnings"]) == 6
    doctor = p.cli("doctor", "--json")
    assert doctor.rc == 0 and doctor.json["ok"] is True
    assert {x["code"] for x in doctor.json["problems"]} == {"config_warning"}


BROKEN = {"health": {"maxCrashStreak": "three", "maxNoImprovementRuns": 2}}


def test_a_wrong_type_refuses_the_loop_commands_and_changes_nothing(tmp_path):
    p = make_project(tmp_path / "repo")
    p.write("autotune.config.json", json.dumps(BROKEN))
    before = p.snapshot_bytes()
    for args in (["run"], ["log", "--status", "keep", "--description", "x", "--metric", "1"],
                 ["init", "--name", "n", "--metric", "time_ms", "--direction", "lower"], ["rebaseline"]):
        result = p.cli(*args)
        assert result.rc != 0 and result.json["error"] == "bad_config", (args, result)
        assert "health.maxCrashStreak" in result.json["message"] and "three" in result.json["message"]
    assert p.snapshot_bytes() == before


@pytest.mark.parametrize("args", [["status"], ["explain"], ["dashboard"], ["status", "--json"],
                                  ["explain", "--json"], ["dashboard", "--json"]])
def test_the_commands_that_show_the_loop_answer_with_the_config_problem(tmp_path, args):
    p = make_project(tmp_path / "repo")
    p.write("autotune.config.json", json.dumps(BROKEN))
    result = p.cli(*args)
    assert result.rc == 0, result
    shown = "\n".join(result.json["warnings"]) if result.json else " ".join(result.out.split())
    assert "health.maxCrashStreak" in shown and "three" in shown, shown
    if result.json:
        assert result.json["max_no_improve"] == 2  # the sound keys still apply


def test_export_and_doctor_answer_with_the_config_problem(tmp_path):
    p = make_project(tmp_path / "repo")
    p.write("autotune.config.json", "{not json")
    export = p.cli("export")
    assert export.rc == 0 and export.out.startswith("commit\t") and "invalid JSON" in export.err
    doctor = p.cli("doctor", "--json")
    assert doctor.json is not None and "bad_config" in [x["code"] for x in doctor.json["problems"]]
    assert doctor.rc == 1  # a real problem, unlike a warning
