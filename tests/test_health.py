"""Issue 2, point 2: every transition of the health machine (SPEC section 6).

Unit tests drive the pure `advance` / `choose_playbook` / `budget_reason` with plain
data; CLI tests show the same transitions in a real repository and that the values
in autotune.config.json move the thresholds."""

import json
import os

import pytest

import autotune
from conftest import make_project
from support.core_helpers import write_config
from support.refusals import clear_error

# The SPEC's failure -> preferred playbook order (section 6), written out here rather
# than read from autotune, so the tests check the implementation against the spec.
SPEC_ORDER = {
    "benchmark_crash": ["reset_worktree", "rebaseline", "diagnose", "pause"],
    "checks_failed": ["diagnose", "rebaseline", "pause"],
    "plateau": ["rebaseline", "shrink_scope", "diagnose", "pause"],
}
DEFAULT_PLAYBOOKS = ["rebaseline", "shrink_scope", "diagnose", "pause"]


def settings(**overrides):
    s = autotune.Settings()
    for key, value in overrides.items():
        setattr(s, key, value)
    return s


def start():
    return {"active": True, "mode": "optimize", "health": "running", "failure": None,
            "recovery": None, "reason": "initialized", "heals": 0, "no_improve": 0,
            "crash_streak": 0, "keep_streak": 0}


def drive(statuses, cfg=None, prev=None):
    """Applies `advance` to a sequence of (status, improved) or status strings."""
    cfg = cfg or settings()
    state = dict(prev or start())
    trail = []
    for step in statuses:
        status, improved = (step, status_improves(step)) if isinstance(step, str) else step
        state = autotune.advance(state, status, improved, cfg)
        trail.append(state)
    return trail


def status_improves(status):
    return status == "keep"


# ------------------------------------------------------------------ defaults ----

def test_spec_defaults():
    s = autotune.Settings()
    assert s.max_no_improve == 5 and s.max_crash_streak == 2
    assert list(s.playbooks) == DEFAULT_PLAYBOOKS
    assert s.max_heals == 3 and s.pause_on_exhausted is True


# --------------------------------------------------------------------- keep ----

def test_keep_that_improves_is_improving_and_resets_everything():
    prev = dict(start(), mode="repair", health="healing", failure="plateau", recovery="rebaseline",
                reason="heal:rebaseline", heals=2, no_improve=7, crash_streak=1, keep_streak=0)
    nxt = autotune.advance(prev, "keep", True, settings())
    assert nxt["health"] == "improving" and nxt["reason"] == "improved"
    assert nxt["no_improve"] == 0 and nxt["crash_streak"] == 0 and nxt["heals"] == 0
    assert nxt["keep_streak"] == 1 and nxt["mode"] == "optimize" and nxt["active"] is True
    assert nxt["failure"] is None and nxt["recovery"] is None
    assert prev["heals"] == 2, "advance must not modify its input"


def test_keep_without_improvement_is_kept_no_degrade():
    nxt = autotune.advance(dict(start(), keep_streak=3), "keep", False, settings())
    assert nxt["health"] == "running" and nxt["reason"] == "kept_no_degrade"
    assert nxt["keep_streak"] == 4 and nxt["no_improve"] == 0


# ------------------------------------------------------------------ discard ----

@pytest.mark.parametrize("limit", [1, 2, 5, 7])
def test_plateau_after_n_discards(limit):
    trail = drive(["discard"] * limit, settings(max_no_improve=limit))
    for count, state in enumerate(trail[:-1], 1):
        assert state["health"] == "running" and state["failure"] is None, (count, state)
        assert state["no_improve"] == count and state["reason"] == "no_improve"
    last = trail[-1]
    assert last["no_improve"] == limit and last["failure"] == "plateau"
    # a plateau heals at once with the first playbook of the plateau order
    assert last["health"] == "healing" and last["recovery"] == "rebaseline"
    assert last["reason"] == "heal:rebaseline" and last["mode"] == "repair" and last["heals"] == 1


def test_discard_resets_crash_and_keep_streaks():
    prev = dict(start(), crash_streak=1, keep_streak=4, failure="benchmark_crash", health="crashing")
    nxt = autotune.advance(prev, "discard", False, settings())
    assert nxt["crash_streak"] == 0 and nxt["keep_streak"] == 0 and nxt["no_improve"] == 1
    assert nxt["health"] == "running" and nxt["failure"] is None


# ----------------------------------------------------------------- crashing ----

@pytest.mark.parametrize("status,failure,reason", [
    ("crash", "benchmark_crash", "crash"),
    ("checks_failed", "checks_failed", "checks_failed"),
])
def test_first_failure_is_crashing(status, failure, reason):
    nxt = autotune.advance(dict(start(), keep_streak=2), status, False, settings())
    assert nxt["health"] == "crashing" and nxt["failure"] == failure and nxt["reason"] == reason
    assert nxt["crash_streak"] == 1 and nxt["no_improve"] == 1 and nxt["keep_streak"] == 0
    assert nxt["heals"] == 0 and nxt["recovery"] is None and nxt["active"] is True


@pytest.mark.parametrize("streak", [1, 2, 3])
def test_crash_streak_threshold_starts_healing(streak):
    trail = drive(["crash"] * streak, settings(max_crash_streak=streak))
    assert all(s["health"] == "crashing" for s in trail[:-1])
    assert trail[-1]["health"] == "healing" and trail[-1]["crash_streak"] == streak
    assert trail[-1]["recovery"] == "rebaseline"  # reset_worktree is not configured by default


def test_mixed_crash_and_checks_failures_count_as_one_streak():
    trail = drive(["crash", "checks_failed"])
    assert trail[-1]["crash_streak"] == 2 and trail[-1]["failure"] == "checks_failed"
    assert trail[-1]["health"] == "healing" and trail[-1]["recovery"] == "diagnose"


# ---------------------------------------------------------------- escalation ----

def expected_actions(failure, playbooks, attempts, pause_on_exhausted=True):
    allowed = [p for p in playbooks if pause_on_exhausted or p != "pause"]
    order = [p for p in SPEC_ORDER[failure] if p in allowed]
    return [order[min(k, len(order)) - 1] for k in range(1, attempts + 1)]


@pytest.mark.parametrize("failure", sorted(SPEC_ORDER))
@pytest.mark.parametrize("playbooks", [
    DEFAULT_PLAYBOOKS,
    ["reset_worktree", "rebaseline", "shrink_scope", "diagnose", "pause"],
    ["diagnose", "rebaseline"],
])
def test_kth_attempt_takes_kth_available_action(failure, playbooks):
    cfg = settings(playbooks=list(playbooks), max_heals=10)
    got = [autotune.choose_playbook(failure, k, cfg) for k in range(1, 7)]
    assert got == expected_actions(failure, playbooks, 6)


def test_crash_heals_escalate_then_the_pause_playbook_pauses():
    trail = drive(["crash"] * 4)
    assert trail[0]["health"] == "crashing"
    assert [s["recovery"] for s in trail[1:]] == ["rebaseline", "diagnose", "pause"]
    assert [s["heals"] for s in trail[1:]] == [1, 2, 3]
    assert [s["reason"] for s in trail[1:3]] == ["heal:rebaseline", "heal:diagnose"]
    assert trail[1]["health"] == trail[2]["health"] == "healing"
    assert trail[3]["health"] == "paused" and trail[3]["active"] is False


def test_plateau_heals_escalate_then_recovery_is_exhausted():
    trail = drive(["discard"] * 4, settings(max_no_improve=1))
    assert [s["recovery"] for s in trail[:3]] == ["rebaseline", "shrink_scope", "diagnose"]
    assert [s["heals"] for s in trail[:3]] == [1, 2, 3]
    last = trail[3]
    assert last["health"] == "paused" and last["reason"] == "recovery_exhausted"
    assert last["recovery"] == "pause" and last["mode"] == "repair" and last["active"] is False


@pytest.mark.parametrize("max_heals", [0, 1, 2])
def test_max_healing_attempts_bounds_the_heals(max_heals):
    trail = drive(["discard"] * (max_heals + 1), settings(max_no_improve=1, max_heals=max_heals))
    assert [s["health"] for s in trail[:-1]] == ["healing"] * max_heals
    assert trail[-1]["health"] == "paused" and trail[-1]["reason"] == "recovery_exhausted"


def test_heals_survive_discards_and_reset_on_keep():
    cfg = settings()
    trail = drive(["crash", "crash", "discard", "crash", "crash"], cfg)
    assert trail[1]["recovery"] == "rebaseline" and trail[2]["heals"] == 1
    assert trail[4]["recovery"] == "diagnose" and trail[4]["heals"] == 2
    after_keep = drive(["keep", "crash", "crash"], cfg, prev=trail[4])
    assert after_keep[0]["heals"] == 0
    assert after_keep[2]["recovery"] == "rebaseline" and after_keep[2]["heals"] == 1


def test_no_pause_on_exhausted_recovery_keeps_healing_with_the_last_action():
    cfg = settings(pause_on_exhausted=False, max_heals=2, max_no_improve=1)
    trail = drive(["discard"] * 8, cfg)
    assert all(s["health"] == "healing" and s["active"] is True for s in trail)
    assert all(s["reason"] != "recovery_exhausted" for s in trail)
    assert [s["recovery"] for s in trail] == expected_actions("plateau", DEFAULT_PLAYBOOKS, 8, False)
    assert "pause" not in [s["recovery"] for s in trail]
    assert [s["heals"] for s in trail] == list(range(1, 9))


def test_no_pause_on_exhausted_recovery_with_crashes():
    cfg = settings(pause_on_exhausted=False)
    trail = drive(["crash"] * 6, cfg)
    assert [s["recovery"] for s in trail[1:]] == ["rebaseline", "diagnose", "diagnose", "diagnose",
                                                 "diagnose"]
    assert trail[-1]["health"] == "healing" and trail[-1]["active"] is True


# -------------------------------------------------------------------- budget ----

def test_budget_reason_iterations():
    cfg = settings(max_iterations=3)
    assert autotune.budget_reason(2, 5.0, "lower", cfg, None, 0) is None
    assert autotune.budget_reason(3, 5.0, "lower", cfg, None, 0) == "iteration budget reached"
    assert autotune.budget_reason(4, None, "higher", cfg, None, 0) == "iteration budget reached"
    assert autotune.budget_reason(10 ** 6, 5.0, "lower", settings(), None, 0) is None


# ------------------------------------------------------- configuration file ----

def load(tmp_path, config):
    path = tmp_path / "autotune.config.json"
    path.write_text(json.dumps(config))
    return autotune.load_settings(str(path))


def test_config_file_sets_every_threshold(tmp_path):
    s = load(tmp_path, {"maxIterations": 7,
                        "health": {"maxNoImprovementRuns": 9, "maxCrashStreak": 4},
                        "recovery": {"playbooks": ["diagnose", "pause"], "maxHealingAttempts": 6,
                                     "pauseOnExhaustedRecovery": False}})
    assert (s.max_iterations, s.max_no_improve, s.max_crash_streak) == (7, 9, 4)
    assert list(s.playbooks) == ["diagnose", "pause"] and s.max_heals == 6
    assert s.pause_on_exhausted is False
    assert load(tmp_path, {"budget": {"maxIterations": 3}}).max_iterations == 3
    assert load(tmp_path, {}).max_no_improve == 5


def test_config_thresholds_drive_the_machine(tmp_path):
    """The same sequence of results ends differently under different files."""
    sequence = ["discard"] * 3
    default = drive(sequence, load(tmp_path, {}))
    strict = drive(sequence, load(tmp_path, {"health": {"maxNoImprovementRuns": 3}}))
    assert default[-1]["health"] == "running"
    assert strict[-1]["health"] == "healing" and strict[-1]["failure"] == "plateau"
    crashes = ["crash"] * 3
    patient = drive(crashes, load(tmp_path, {"health": {"maxCrashStreak": 3}}))
    assert [s["health"] for s in patient] == ["crashing", "crashing", "healing"]
    assert budget_done(load(tmp_path, {"maxIterations": 3}), 3)
    assert not budget_done(load(tmp_path, {"maxIterations": 4}), 3)


def budget_done(settings_, runs):
    return autotune.budget_reason(runs, None, "lower", settings_, None, 0) is not None


# --------------------------------------------------------------- CLI: config ----

def crash_once(p, description="crash"):
    """A crash as the agent logs it after a failed run (no metric, nothing measured)."""
    p.set_delay("CRASH")
    return p.ok("log", "--status", "crash", "--description", description)


def discard_once(p, delay=150, description=None):
    """A discarded experiment (the metric is given, as a person or old agent would)."""
    p.set_delay(delay)
    return p.ok("log", "--status", "discard", "--metric", str(delay),
                "--metrics", json.dumps({"mem_mb": 40 + delay // 10}),
                "--description", description or "delay %s" % delay)


def make(tmp_path, config=None, name="repo"):
    p = make_project(tmp_path / name, config=config)
    p.loop(100, description="baseline")
    return p


@pytest.mark.slow
def test_cli_kept_no_degrade(tmp_path):
    p = make(tmp_path)
    ran, logged = p.loop(100, status="keep", description="same speed, simpler code")
    assert ran["verdict"] != "improved"
    assert logged["health"] == "running" and logged["reason"] == "kept_no_degrade"
    assert p.state()["keep_streak"] == 2 and p.state()["health"] == "running"
    ran, logged = p.loop(90, status="keep")
    assert logged["health"] == "improving" and logged["reason"] == "improved"


@pytest.mark.slow
def test_cli_max_no_improvement_runs_moves_the_plateau(tmp_path):
    default = make(tmp_path, name="default")
    strict = make(tmp_path, config={"health": {"maxNoImprovementRuns": 2}, "repeat": 1}, name="strict")
    for p in (default, strict):
        discard_once(p, 150)
    assert default.state()["health"] == strict.state()["health"] == "running"
    d2, s2 = discard_once(default, 160), discard_once(strict, 160)
    assert d2["health"] == "running" and d2["failure"] is None
    assert s2["failure"] == "plateau" and s2["health"] == "healing"
    assert s2["recovery"] == "rebaseline" and s2["reason"] == "heal:rebaseline"


@pytest.mark.slow
def test_cli_max_crash_streak_moves_the_threshold(tmp_path):
    default = make(tmp_path, name="default")
    eager = make(tmp_path, config={"health": {"maxCrashStreak": 1}}, name="eager")
    assert crash_once(default)["health"] == "crashing"
    first = crash_once(eager)
    assert first["health"] == "healing" and first["recovery"] == "rebaseline"
    assert crash_once(default)["health"] == "healing"


@pytest.mark.slow
def test_cli_escalating_plateau_heals_then_recovery_exhausted(tmp_path):
    p = make(tmp_path, config={"health": {"maxNoImprovementRuns": 1}, "repeat": 1})  # not known deterministic
    seen = [discard_once(p, 150 + k) for k in range(3)]
    assert [s["recovery"] for s in seen] == ["rebaseline", "shrink_scope", "diagnose"]
    assert [s["reason"] for s in seen] == ["heal:rebaseline", "heal:shrink_scope", "heal:diagnose"]
    assert p.state()["heals"] == 3
    last = discard_once(p, 160)
    assert last["health"] == "paused" and last["reason"] == "recovery_exhausted"
    assert last["recovery"] == "pause" and last["mode"] == "repair" and last["active"] is False
    state = p.state()
    assert state["active"] is False and state["health"] == "paused"
    # a paused loop refuses to run, says why, and writes nothing
    before = p.snapshot_bytes()
    refused = p.cli("run")
    clear_error(refused)
    assert "paused" in refused.json["message"] or "not active" in refused.json["message"]
    assert p.snapshot_bytes() == before


@pytest.mark.slow
def test_cli_pause_playbook_pauses(tmp_path):
    p = make(tmp_path)
    seen = [crash_once(p, "crash %d" % k) for k in range(4)]
    assert [s["health"] for s in seen] == ["crashing", "healing", "healing", "paused"]
    assert [s["recovery"] for s in seen] == [None, "rebaseline", "diagnose", "pause"]
    assert seen[-1]["active"] is False and p.state()["active"] is False


@pytest.mark.slow
def test_cli_pause_on_exhausted_recovery_false(tmp_path):
    p = make(tmp_path, config={"recovery": {"pauseOnExhaustedRecovery": False,
                                            "maxHealingAttempts": 1}})
    seen = [crash_once(p, "crash %d" % k) for k in range(5)]
    assert [s["health"] for s in seen] == ["crashing"] + ["healing"] * 4
    assert [s["recovery"] for s in seen[1:]] == ["rebaseline", "diagnose", "diagnose", "diagnose"]
    assert all(s["active"] is True for s in seen)
    assert p.state()["active"] is True and p.state()["heals"] == 4
    ran, logged = p.loop(90)  # still running experiments
    assert logged["status"] == "keep" and logged["health"] == "improving"


@pytest.mark.slow
def test_cli_configured_playbooks_are_used(tmp_path):
    p = make(tmp_path, config={"recovery": {"playbooks": ["reset_worktree", "diagnose", "pause"]}})
    seen = [crash_once(p) for _ in range(4)]
    assert [s["recovery"] for s in seen[1:]] == ["reset_worktree", "diagnose", "pause"]


@pytest.mark.slow
def test_cli_completed_at_the_iteration_budget(tmp_path):
    p = make(tmp_path, config={"budget": {"maxIterations": 3}})  # run 1: baseline
    second = p.loop(90)[1]
    assert second["health"] == "improving" and second["active"] is True
    assert second["limit"]["remaining"] == 1
    third = discard_once(p, 120)
    assert third["health"] == "completed" and third["active"] is False
    assert third["reason"] == "iteration budget reached"
    state = p.state()
    assert state["health"] == "completed" and state["active"] is False and state["n_exp"] == 3
    assert p.results()[-1]["health"] == "completed"
    before = p.snapshot_bytes()
    refused = p.cli("run")
    clear_error(refused)
    assert p.snapshot_bytes() == before


@pytest.mark.slow
def test_state_file_is_the_fold_of_the_log(tmp_path):
    """Deleting the cache and rebuilding it from the log gives the same health."""
    p = make(tmp_path, config={"health": {"maxNoImprovementRuns": 2}})
    p.loop(90)
    discard_once(p, 120)
    discard_once(p, 130)
    crash_once(p)
    cached = p.state()
    os.unlink(os.path.join(str(p.path), ".autotune.state"))
    rebuilt = p.ok("explain", "--json")
    for key in ("health", "failure", "recovery", "reason", "heals", "no_improve",
                "crash_streak", "keep_streak", "mode", "active"):
        assert rebuilt[key] == cached[key], key
    assert rebuilt["runs"] == cached["n_exp"] == 5
