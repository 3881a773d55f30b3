"""Issue 2, point 4 (SPEC section 11): every malformed input gets a clear one-line
error and a non-zero exit, and leaves autotune.jsonl and .autotune.state byte for
byte unchanged. Text arguments are data, never code."""

import json
import os
import shutil
import subprocess

import pytest

import autotune
from conftest import Project, clean_env, make_project, run_cli
from support.core_helpers import write_config
from support.refusals import clear_error


def refused(project, *args, **kwargs):
    """Runs a command that must be refused without writing anything; returns its JSON."""
    before = project.snapshot_bytes()
    result = project.cli(*args, **kwargs)
    clear_error(result)
    assert project.snapshot_bytes() == before, "a refused call changed the session files"
    return result


def one_line_json_error(result):
    clear_error(result)
    lines = result.out.strip().splitlines()
    assert len(lines) == 1, result
    assert set(result.json) == {"error", "message"}, result
    message = result.json["message"]
    assert result.json["error"] and message and "\n" not in message, result
    assert "Traceback" not in result.out + result.err
    return message


@pytest.fixture(scope="module")
def _pending_template(tmp_path_factory):
    base = tmp_path_factory.mktemp("pending")
    project = make_project(base / "repo")
    project.loop(100, description="baseline")
    project.set_delay(90)
    project.ok("run")
    shutil.copytree(str(base / "repo"), str(base / "template"), symlinks=True)
    return base


@pytest.fixture
def pending(_pending_template):
    """A session with a baseline and a measured, not yet logged, experiment (90).

    Built once per module and copied back to the same path for every test (the
    measurement cache is keyed by the working directory's path)."""
    base = _pending_template
    shutil.rmtree(str(base / "repo"))
    shutil.copytree(str(base / "template"), str(base / "repo"), symlinks=True)
    return Project(base / "repo")


def log_args(*extra):
    return ("log", "--status", "keep", "--description", "faster") + extra


@pytest.mark.parametrize("value", ["abc", "", "nan", "-Infinity", "1e999"])
def test_bad_metric_values(pending, value):
    message = one_line_json_error(refused(pending, *log_args("--metric", value)))
    assert "--metric" in message


@pytest.mark.parametrize("flag,value", [
    ("--metrics", "{bad"),
    ("--metrics", '{"mem_mb": NaN}'),
    ("--metrics", '{"mem_mb": "fast"}'),
    ("--metrics", '{"__proto__": 1}'),
    ("--asi", "{"),
    ("--asi", '{"hypothesis": NaN}'),
])
def test_bad_json_arguments(pending, flag, value):
    message = one_line_json_error(refused(pending, *log_args(flag, value)))
    assert flag in message


def test_measurement_survives_refused_calls(pending):
    """Refusals consume nothing: the pending measurement is still logged afterwards."""
    refused(pending, *log_args("--metric", "nan"))
    refused(pending, *log_args("--asi", "{"))
    logged = pending.ok(*log_args())
    assert logged["metric"] == 90 and logged["index"] == 2


def test_unknown_status(pending):
    message = one_line_json_error(refused(pending, "log", "--status", "maybe", "--description", "x"))
    assert "maybe" in message and "--status" in message


def test_unknown_direction(bare_project):
    p = bare_project
    result = p.cli("init", "--name", "x", "--metric", "time_ms", "--direction", "sideways")
    assert result.rc != 0
    message = one_line_json_error(result)
    assert "sideways" in message and "--direction" in message
    assert not p.exists("autotune.jsonl") and not p.exists(".autotune.state")


def test_unknown_direction_on_reinit_changes_nothing(pending):
    refused(pending, "init", "--name", "x", "--metric", "time_ms", "--direction", "up")


@pytest.mark.parametrize("metric", ["", "has space", "a=b", "__proto__"])
def test_bad_metric_name_at_init(bare_project, metric):
    result = bare_project.cli("init", "--name", "x", "--metric", metric, "--direction", "lower")
    assert result.rc != 0
    one_line_json_error(result)
    assert not bare_project.exists("autotune.jsonl")


def test_secondary_metric_names_must_match(pending):
    message = one_line_json_error(refused(pending, *log_args("--metrics", '{"rss_mb": 3}')))
    assert "mem_mb" in message


@pytest.mark.parametrize("command", [["log", "--status", "keep", "--description", "x", "--metric", "1"],
                                     ["run"]])
def test_missing_session_agent_commands(bare_project, command):
    result = bare_project.cli(*command)
    assert result.rc != 0
    message = one_line_json_error(result)
    assert "init" in message
    assert not bare_project.exists("autotune.jsonl") and not bare_project.exists(".autotune.state")


@pytest.mark.parametrize("command", ["explain", "status"])
def test_missing_session_person_commands(bare_project, command):
    result = bare_project.cli(command)
    assert result.rc != 0
    assert result.out.strip() == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "session" in lines[0].lower(), result
    as_json = bare_project.cli(command, "--json")
    assert as_json.rc != 0
    one_line_json_error(as_json)
    assert not bare_project.exists("autotune.jsonl")


# ------------------------------------------------------------ corrupt config ----

@pytest.mark.parametrize("text,field", [
    ('{"health": {"maxNoImprovementRuns": "five"}}', "maxNoImprovementRuns"),
    ('{"recovery": {"playbooks": "dance"}}', "playbooks"),
    ('{"recovery": {"maxHealingAttempts": "three"}}', "maxHealingAttempts"),
    ('{"recovery": {"pauseOnExhaustedRecovery": "no"}}', "pauseOnExhaustedRecovery"),
    ('{"maxIterations": -1}', "maxIterations"),
    ('{"budget": {"maxIterations": true}}', "maxIterations"),
    ('{"autoResume": "sometimes"}', "autoResume"),
    ('{"workingDir": 5}', "workingDir"),
])
def test_config_field_of_the_wrong_type_is_named(pending, text, field):
    pending.write("autotune.config.json", text)
    message = one_line_json_error(refused(pending, *log_args()))
    assert "autotune.config.json" in message and field in message, message


@pytest.mark.parametrize("data", [b"{not json", b'{"mode": "\xff\xfe"}'])
def test_unreadable_config_is_a_clear_error_for_every_command(pending, data):
    """The loop's commands refuse; the ones that show it answer with the problem (issue 13)."""
    with open(os.path.join(str(pending.path), "autotune.config.json"), "wb") as handle:
        handle.write(data)
    for args in (log_args(), ("run",)):
        message = one_line_json_error(refused(pending, *args))
        assert "autotune.config.json" in message, (args, message)
    for args in (("explain", "--json"), ("status", "--json")):
        shown = pending.cli(*args)
        assert shown.rc == 0 and any("autotune.config.json" in w for w in shown.json["warnings"]), shown


def test_corrupt_config_at_init_writes_nothing(bare_project):
    write_config(bare_project, {"health": {"maxNoImprovementRuns": 0}})
    result = bare_project.cli("init", "--name", "x", "--metric", "time_ms", "--direction", "lower")
    assert result.rc != 0
    message = one_line_json_error(result)
    assert "autotune.config.json" in message and "maxNoImprovementRuns" in message
    assert not bare_project.exists("autotune.jsonl") and not bare_project.exists(".autotune.state")


def test_corrupt_config_is_not_silently_replaced_by_defaults_for_person_commands(pending):
    """status answers (issue 13), and says what is wrong with the config."""
    pending.write("autotune.config.json", '{"health": {"maxNoImprovementRuns": "x"}}')
    result = pending.cli("status")
    assert result.rc == 0, result
    assert "autotune.config.json" in result.out and "maxNoImprovementRuns" in result.out


# ----------------------------------------------------------------- torn log ----

TORN = b'{"type": "result", "index": 2, "commit": "abc1234", "metric": 9'


def tear(project):
    with open(os.path.join(str(project.path), "autotune.jsonl"), "ab") as handle:
        handle.write(TORN)


@pytest.mark.slow
def test_truncated_last_line_readers_skip_it_and_say_so(project):
    project.loop(100, description="baseline")
    project.loop(90, description="faster")
    tear(project)
    before = project.snapshot_bytes()
    data = project.ok("explain", "--json")
    assert data["runs"] == 2 and data["best"] == 90 and data["last_status"] == "keep"
    assert any("truncated" in w for w in data["warnings"]), data["warnings"]
    text = project.cli("explain")
    assert text.rc == 0 and "truncated" in text.out
    status = project.ok("status", "--json")
    assert status["runs"] == 2 and any("truncated" in w for w in status["warnings"])
    assert project.snapshot_bytes() == before, "a reader rewrote the log or the state"
    # the same when the state cache has to be rebuilt from the torn log
    os.unlink(os.path.join(str(project.path), ".autotune.state"))
    data = project.ok("explain", "--json")
    assert data["runs"] == 2 and any("truncated" in w for w in data["warnings"])
    with open(os.path.join(str(project.path), "autotune.jsonl"), "rb") as handle:
        assert handle.read() == before["autotune.jsonl"]


@pytest.mark.slow
def test_truncated_last_line_log_refuses(project):
    project.loop(100, description="baseline")
    project.set_delay(90)
    project.ok("run")
    tear(project)
    message = one_line_json_error(refused(project, *log_args()))
    assert "truncated" in message and "autotune.jsonl" in message
    refused(project, "init", "--name", "again", "--metric", "time_ms", "--direction", "lower")
    with open(os.path.join(str(project.path), "autotune.jsonl"), "rb") as handle:
        assert handle.read().endswith(TORN)


@pytest.mark.slow
def test_junk_line_in_the_middle_is_skipped_and_reported(project):
    project.loop(100, description="baseline")
    with open(os.path.join(str(project.path), "autotune.jsonl"), "ab") as handle:
        handle.write(b"this is not json\n")
    project.loop(90, description="faster")
    data = project.ok("explain", "--json")
    assert data["runs"] == 2 and data["best"] == 90
    assert any("skipped" in w or "could not be read" in w for w in data["warnings"])


@pytest.mark.slow
def test_corrupt_state_cache_is_rebuilt_from_the_log(project):
    project.loop(100, description="baseline")
    project.loop(90, description="faster")
    project.write(".autotune.state", "{garbage")
    data = project.ok("explain", "--json")
    assert data["runs"] == 2 and data["best"] == 90 and data["health"] == "improving"
    logged = project.loop(95)[1]
    assert logged["index"] == 3 and logged["status"] == "discard"


# ---------------------------------------------------------- text is data ----

NASTY = ("it's a \"quoted\" $(touch pwned) `touch pwned2` ${HOME} $((1+1)) ; rm -rf x |& \\\n"
         "second line\twith tab — naïve café 日本語 ✓ 🚀")


def _no_pwned(root):
    for _dirpath, _dirs, files in os.walk(str(root)):
        for name in files:
            assert not name.startswith("pwned"), os.path.join(_dirpath, name)


@pytest.mark.slow
def test_description_is_stored_verbatim_and_executes_nothing(tmp_path):
    p = make_project(tmp_path / "repo")
    p.loop(100, description=NASTY)
    p.set_delay(80)
    p.ok("run")
    kept = p.ok("log", "--status", "keep", "--description", NASTY,
                "--asi", json.dumps({"hypothesis": NASTY}))
    assert kept["desc"] == NASTY
    results = p.results()
    assert results[0]["description"] == NASTY and results[1]["description"] == NASTY
    assert results[1]["asi"] == {"hypothesis": NASTY}
    # the raw log line is valid UTF-8 JSON that round-trips
    with open(os.path.join(str(p.path), "autotune.jsonl"), "rb") as handle:
        raw = handle.read().decode("utf-8")
    assert len(raw.splitlines()) == 5, "a newline in a description must not split a log line"
    message = p.git("log", "-1", "--format=%B")
    assert message.startswith("autotune: " + NASTY + "\n\n"), message
    assert "Autotune-Metric: time_ms=80" in message
    # a discard with the same description
    p.set_delay(120)
    p.ok("run")
    p.ok("log", "--status", "discard", "--description", NASTY)
    assert p.results()[-1]["description"] == NASTY
    explain = p.cli("explain")
    assert explain.rc == 0 and "日本語" in explain.out
    _no_pwned(tmp_path)
    assert not os.path.exists(os.path.join(os.getcwd(), "pwned"))


def test_name_and_unit_are_data_too(bare_project):
    p = bare_project
    name = "speed $(touch pwned) `touch pwned` 'q' \"dq\" ü"
    # a unit is restricted to a safe alphabet (issue 12): `$(x)` is refused, µs is not
    refused = p.cli("init", "--name", name, "--metric", "time_ms", "--unit", "µs $(x)",
                    "--direction", "lower")
    clear_error(refused, "bad_unit")
    init = p.ok("init", "--name", name, "--metric", "time_ms", "--unit", "µs",
                "--direction", "lower")
    assert init["name"] == name
    assert p.log_lines()[0]["name"] == name and p.log_lines()[0]["metric_unit"] == "µs"
    _no_pwned(p.path)


# -------------------------------------------------------------- no git repo ----

def test_init_outside_a_git_repository_refuses(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    probe = subprocess.run(["git", "rev-parse", "--git-dir"], cwd=str(plain), env=clean_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if probe.returncode == 0:
        pytest.skip("the temporary directory is inside a git repository")
    (plain / "autotune.sh").write_text("#!/usr/bin/env bash\necho 'METRIC t=1'\n")
    before = sorted(os.listdir(str(plain)))
    result = run_cli(["init", "--name", "x", "--metric", "t", "--direction", "lower"], plain)
    assert result.rc != 0
    message = one_line_json_error(result)
    assert "git" in message.lower() and "repository" in message.lower()
    assert sorted(os.listdir(str(plain))) == before, "init wrote something outside a repository"


# ------------------------------------------------------------ metric protocol ----

@pytest.mark.parametrize("line,expected", [
    ("METRIC time_ms=12.5", ("time_ms", 12.5)),
    ("   METRIC time_ms=12.5   ", ("time_ms", 12.5)),
    ("METRIC\ttime_ms=3", ("time_ms", 3.0)),
    ("METRIC x=1e3", ("x", 1000.0)),
    ("METRIC x=-2", ("x", -2.0)),
    ("METRIC x=0", ("x", 0.0)),
    ("METRIC x=abc", None),
    ("METRIC x=", None),
    ("METRIC =5", None),
    ("METRIC x", None),
    ("METRIC x=nan", None),
    ("METRIC x=NaN", None),
    ("METRIC x=inf", None),
    ("METRIC x=-Infinity", None),
    ("METRIC x=1e999", None),
    ("METRIC __proto__=1", None),
    ("METRIC constructor=1", None),
    ("METRIC prototype=1", None),
    ("METRICx=1", None),
    ("# METRIC x=1", None),
    ("the METRIC x=1", None),
    ("", None),
])
def test_parse_metric_line(line, expected):
    assert autotune.parse_metric_line(line) == expected


def test_benchmark_printing_a_non_finite_primary_metric_is_a_failure(tmp_path):
    bench = "#!/usr/bin/env bash\necho 'noise'\necho 'METRIC time_ms=nan'\necho 'METRIC mem_mb=3'\n"
    p = make_project(tmp_path / "repo", benchmark=bench)
    result = p.cli("run")
    assert result.rc == 0, result
    assert result.json["passed"] is False and result.json["primary"] is None
    assert "time_ms" in result.json["reason"]


def test_run_refuses_another_command_while_the_benchmark_exists(project):
    message = one_line_json_error(refused(project, "run", "--command", "echo 'METRIC time_ms=1'"))
    assert "autotune.sh" in message
    _no_pwned(project.path)
    refused(project, "run", "--command", "touch pwned; ./autotune.sh")
    _no_pwned(project.path)


@pytest.mark.parametrize("args", [["--timeout", "abc"], ["--timeout", "-1"], ["--timeout", "nan"]])
def test_run_bad_timeout(pending, args):
    one_line_json_error(refused(pending, "run", *args))


def test_person_facing_usage_error_is_one_clean_line(project):
    before = project.snapshot_bytes()
    result = project.cli("explain", "--bogus")
    assert result.rc != 0 and result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "--bogus" in lines[0], result
    assert not lines[0].startswith("autotune: autotune:"), lines[0]
    assert project.snapshot_bytes() == before


def test_overlong_description_is_refused(pending):
    message = one_line_json_error(refused(pending, "log", "--status", "keep", "--description",
                                          "x" * 50000))
    assert "--description" in message
