"""Issue 13, points 1-3: a session of the first implementation continues here.

Sessions are made as tests/fixtures/seed-session/README.txt describes (the authentic
files copied into a git repository with the same benchmark), then patched where a test
needs another old state (a stopped loop, repair mode, other --metrics habits)."""

import json
import os

import pytest

from support.core_helpers import seed_bytes, seed_project


@pytest.fixture
def seed(tmp_path):
    return seed_project(tmp_path)


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
    assert result.rc != 0 and result.json["error"] == "metric_mismatch"
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
