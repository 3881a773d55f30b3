"""Issue 13, points 1-3: a session of the first implementation continues here.

Sessions are made as tests/fixtures/seed-session/README.txt describes (the authentic
files copied into a git repository with the same benchmark), then patched where a test
needs another old state (a stopped loop, repair mode, other --metrics habits)."""

import json
import os

import pytest

from support.core_helpers import seed_bytes
from support.refusals import clear_error


def patch_log(p, change):
    """Rewrites the seed log's result lines with change(entry) (an old agent's habits)."""
    lines = []
    for raw in seed_bytes("autotune.jsonl").decode().splitlines():
        entry = json.loads(raw)
        if entry.get("type") == "result":
            change(entry)
        lines.append(json.dumps(entry))
    p.write("autotune.jsonl", "\n".join(lines) + "\n")


def patch_state(p, **fields):
    """The old state file with fields changed, pretty-printed as the old one writes it."""
    state = json.loads(seed_bytes(".autotune.state").decode())
    state.update(fields)
    p.write(".autotune.state", json.dumps(state, indent=2) + "\n")


# ------------------------------------------------ point 1: log --status auto ----

def test_auto_log_accepts_a_new_secondary_metric_with_a_note(seed):
    """The old rows recorded only time_ms; the benchmark also prints mem_mb."""
    seed.set_delay(50)
    ran = seed.ok("run")
    assert set(ran["metrics"]) == {"time_ms", "mem_mb"}
    before = seed.snapshot_bytes()
    logged = seed.ok("log", "--status", "auto", "--description", "much faster")
    assert logged["status"] == "keep" and logged["metric"] == 2000
    assert any("mem_mb" in note for note in logged["notes"]), logged
    assert "warnings" not in logged
    row = seed.results()[-1]
    assert row["metrics"] == {"time_ms": 50, "mem_mb": 45}
    assert seed.snapshot_bytes()["autotune.jsonl"].startswith(before["autotune.jsonl"])
    # the name is the segment's now: the next result gets no note
    seed.set_delay(60)
    seed.ok("run")
    again = seed.ok("log", "--status", "auto", "--description", "slower")
    assert again["status"] == "discard" and "notes" not in again and "warnings" not in again


def test_auto_log_warns_about_a_missing_secondary_metric(seed):
    """The old rows recorded time_ms and extra; this benchmark no longer prints extra."""
    patch_log(seed, lambda e: e["metrics"].update(extra=1) if e["segment"] == 2 else None)
    seed.set_delay(50)
    seed.ok("run")
    logged = seed.ok("log", "--status", "auto", "--description", "much faster")
    assert logged["status"] == "keep"
    assert any("extra" in w for w in logged["warnings"]), logged
    assert seed.results()[-1]["metrics"] == {"time_ms": 50, "mem_mb": 45}


def test_an_old_result_listing_the_primary_among_its_metrics_is_fine(seed):
    patch_log(seed, lambda e: e["metrics"].update(ops=e["metric"]) if e["segment"] == 2 else None)
    seed.set_delay(50)
    seed.ok("run")
    logged = seed.ok("log", "--status", "auto", "--description", "much faster")
    assert logged["status"] == "keep"
    assert "warnings" not in logged  # ops is the primary, not a missing secondary metric
    assert "ops" not in seed.results()[-1]["metrics"]


def test_hand_typed_metrics_that_run_did_not_measure_are_refused_without_requiring_them(seed):
    seed.set_delay(50)
    seed.ok("run")
    before = seed.snapshot_bytes()
    result = seed.cli("log", "--status", "auto", "--description", "x", "--metrics", '{"rss_mb": 3}')
    clear_error(result, "metric_mismatch")
    message = result.json["message"]
    assert "rss_mb" in message and "mem_mb" in message and "without --metrics" in message
    assert seed.snapshot_bytes() == before
    # no refusal of any kind asks for --metrics
    for other in (seed.cli("log", "--status", "auto", "--description", "x", "--metrics", '{"time_ms": 51}'),):
        assert other.rc != 0 and "without --metrics" in other.json["message"]


def test_an_old_agents_subset_of_metrics_logs_what_run_measured(seed):
    """The first implementation's agent passed --metrics by hand, a subset."""
    seed.set_delay(50)
    seed.ok("run")
    logged = seed.ok("log", "--status", "keep", "--description", "faster",
                     "--metrics", json.dumps({"time_ms": 50}))
    assert logged["status"] == "keep"
    assert seed.results()[-1]["metrics"] == {"time_ms": 50, "mem_mb": 45}


# ----------------------------------------- point 3: the old stop and repair ----

def stop_hook(p):
    payload = {"session_id": "s1", "cwd": str(p.path), "hook_event_name": "Stop",
               "stop_hook_active": False, "transcript_path": "/dev/null"}
    return p.cli("hook", "stop", input=json.dumps(payload).encode())


def old_stop(p):
    """`autotune stop` of the first implementation, then its Stop hook (n_exp reset to 0)."""
    patch_state(p, active=False, health="paused", n_exp=0, resume_count=1)


def test_an_old_stop_is_honoured_whatever_n_exp(seed):
    before_hook = stop_hook(seed)
    assert before_hook.rc == 0 and "still active" in before_hook.out  # the loop as it was
    old_stop(seed)
    status = seed.ok("status", "--json")
    assert status["active"] is False and status["health"] == "stopped"
    assert "first implementation" in status["reason"]
    explain = seed.ok("explain", "--json")
    assert explain["active"] is False and explain["next"] == "resume"
    assert "first implementation" in explain["why"]
    log_before = seed.snapshot_bytes()["autotune.jsonl"]
    seed.set_delay(50)
    ran = seed.cli("run")
    clear_error(ran, "inactive")
    hook = stop_hook(seed)
    assert hook.rc == 0 and hook.out.strip() == "", hook  # no resume of a stopped loop
    assert seed.snapshot_bytes()["autotune.jsonl"] == log_before


def test_an_old_stop_survives_a_rebuilt_state_until_resumed(seed):
    old_stop(seed)
    assert seed.ok("status", "--json")["active"] is False  # adopted, and written in our format
    assert "format" in seed.state()
    os.unlink(os.path.join(str(seed.path), ".autotune.state"))  # a lost cache is rebuilt ...
    assert seed.ok("status", "--json")["active"] is False    # ... and still stopped
    doctor = seed.cli("doctor", "--json")
    assert "state_stale" not in [p["code"] for p in doctor.json["problems"]], doctor
    resumed = seed.ok("resume", "--json")
    assert resumed["active"] is True
    os.unlink(os.path.join(str(seed.path), ".autotune.state"))
    status = seed.ok("status", "--json")   # the resume line is later than the old stop
    assert status["active"] is True and status["mode"] == "optimize"
    seed.set_delay(50)
    assert seed.ok("run")["passed"] is True


def test_an_old_repair_is_honoured(seed):
    patch_state(seed, active=True, mode="repair", health="healing", recovery="manual_repair",
                reason="operator requested repair mode", n_exp=0)
    explain = seed.ok("explain", "--json")
    assert explain["mode"] == "repair" and explain["recovery"] == "manual_repair"
    assert explain["next"] == "repair" and explain["active"] is True
    seed.set_delay(50)
    seed.ok("run")
    logged = seed.ok("log", "--status", "auto", "--description", "fixed it")
    assert logged["status"] == "keep" and logged["mode"] == "optimize" and logged["recovery"] is None


def test_an_old_stop_after_our_own_state_was_written_is_honoured(seed):
    """Side by side: our state file exists, then the old `autotune stop` edits it."""
    seed.ok("status", "--json")
    ours = seed.state()
    ours.update(active=False, health="paused")
    seed.write(".autotune.state", json.dumps(ours, indent=2))
    assert seed.ok("status", "--json")["active"] is False


def test_a_control_line_after_the_old_state_wins(seed):
    old_stop(seed)
    state_path = os.path.join(str(seed.path), ".autotune.state")
    os.utime(state_path, (1000000000, 1000000000))  # written long before the line below
    with open(os.path.join(str(seed.path), "autotune.jsonl"), "a") as handle:
        handle.write(json.dumps({"type": "control", "action": "resume",
                                 "timestamp": "2026-11-26T10:00:00Z"}) + "\n")
    assert seed.ok("status", "--json")["active"] is True


# ------------------------------------ point 2: the first verdict after taking over ----

COUNTING_BENCHMARK = """#!/usr/bin/env bash
d=$(sed -n 's/^DELAY_MS = //p' work.py)
echo "$d" >> %s
echo "METRIC time_ms=$d"
echo "METRIC mem_mb=$((40 + d / 10))"
echo "METRIC ops=$((100000 / d))"
"""


def counted(p, tmp_path):
    """The seed project with a benchmark that counts its executions (outside the repo)."""
    counter = tmp_path / "executions"
    p.write("autotune.sh", COUNTING_BENCHMARK % counter, mode=0o755)
    p.git("commit", "-q", "-am", "count executions")

    def executions(code=None):
        """How many times the benchmark ran (on the code with DELAY_MS = code)."""
        seen = counter.read_text().split() if counter.exists() else []
        return len([d for d in seen if code is None or d == str(code)])
    return executions


@pytest.mark.parametrize("delay, verdict", [(55, "improved"),   # +27%
                                            (65, "improved"),   # +7.7%
                                            (75, "worse")])     # -6.7%
def test_the_first_verdict_measures_the_kept_code_in_at_most_5_executions(seed, tmp_path, delay, verdict):
    executions = counted(seed, tmp_path)
    seed.set_delay(delay)
    ran = seed.ok("run")
    assert ran["verdict"] == verdict, ran["sampling"]
    assert executions() <= 5, ran["sampling"]
    assert executions(70) >= 2 and executions(delay) >= 1  # the kept code (HEAD) was measured
    assert seed.read("work.py") == "DELAY_MS = %d\n" % delay  # the experiment is back in place
    assert seed.git("status", "--porcelain", "--", "work.py").startswith(" M")


def test_the_kept_code_samples_are_recorded_and_reused(seed, tmp_path):
    executions = counted(seed, tmp_path)
    seed.set_delay(75)
    seed.ok("run")
    logged = seed.ok("log", "--status", "auto", "--description", "worse")
    assert logged["status"] == "discard"
    lines = seed.log_lines()[-2:]
    assert lines[0]["type"] == "rebaseline" and lines[0]["source"] == "run"
    assert lines[0]["samples"] == [1428] * len(lines[0]["samples"]) and lines[1]["index"] == 8
    start = executions()
    seed.set_delay(65)
    ran = seed.ok("run")
    assert ran["verdict"] == "improved" and executions() - start <= 5


def test_a_run_killed_with_the_kept_code_swapped_in_is_recovered(seed):
    """The marker a killed `run` leaves: the experiment's tree, the kept code in place."""
    import subprocess
    seed.set_delay(55)
    seed.git("add", "-A", "--", "work.py")
    tree = seed.git("write-tree").strip()
    seed.git("reset", "-q")
    seed.set_delay(70)   # what swap_out leaves: HEAD's content
    dead = subprocess.Popen(["true"])
    dead.wait()
    import autotune
    session = autotune.find_loop(str(seed.path))
    os.makedirs(session.cache_dir, exist_ok=True)
    with open(session.cache("swap.json"), "w") as handle:
        json.dump({"tree": tree, "pid": dead.pid}, handle)
    ran = seed.ok("run")
    assert seed.read("work.py") == "DELAY_MS = 55\n"
    assert ran["primary"] == 1818 and any("restored" in w for w in ran["warnings"])
    assert not os.path.exists(session.cache("swap.json"))


def test_a_real_7_percent_win_on_the_first_segment_of_an_old_session(seed, tmp_path):
    """The seed's first segment alone (time_ms, lower is better, best 79 ms): a -7.6%
    change is a win, decided in at most 5 executions, not `within_noise` from the spread
    of the other experiments' values."""
    lines = seed_bytes("autotune.jsonl").decode().splitlines(True)
    seed.write("autotune.jsonl", "".join(lines[:9]))   # config + results 1-8
    patch_state(seed, n_exp=0, health="improving", mode="optimize", recovery=None, failure=None,
                reason="improved", heals=0, no_improve=0, keep_streak=1)
    executions = counted(seed, tmp_path)
    seed.set_delay(79)
    seed.git("commit", "-q", "-am", "the kept code of segment 1")
    seed.set_delay(73)
    ran = seed.ok("run")
    assert ran["pname"] == "time_ms" and ran["verdict"] == "improved", ran["sampling"]
    assert executions() <= 5
    logged = seed.ok("log", "--status", "auto", "--description", "7% faster")
    assert logged["status"] == "keep" and logged["best"] == 73 and logged["index"] == 9
