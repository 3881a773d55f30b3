"""One implementation of each rule (issue 15): the pure helpers every caller shares.

Unit tests on plain data: the streak counters (`count_result`) that the health machine
and the fold of the log both use, the percentage helpers, and the pure judges that must
leave their arguments as they found them."""

import copy

import pytest

import autotune

ZERO = {"no_improve": 0, "crash_streak": 0, "keep_streak": 0, "heals": 0}


def counts(**values):
    return dict(ZERO, **values)


@pytest.mark.parametrize("status, before, after", [
    ("keep", counts(no_improve=3, crash_streak=2, keep_streak=1, heals=2), counts(keep_streak=2)),
    ("discard", counts(no_improve=3, crash_streak=2, keep_streak=4, heals=2), counts(no_improve=4, heals=2)),
    ("crash", counts(no_improve=1, crash_streak=1, keep_streak=4, heals=1),
     counts(no_improve=2, crash_streak=2, heals=1)),
    ("checks_failed", counts(keep_streak=2), counts(no_improve=1, crash_streak=1)),
    ("resume", counts(no_improve=5, crash_streak=3, keep_streak=2, heals=3), counts(keep_streak=2)),
])
def test_count_result_moves_each_streak(status, before, after):
    given = dict(before, health="running")   # other fields are read past, not copied
    kept = copy.deepcopy(given)
    assert autotune.count_result(given, status) == after
    assert given == kept   # pure: the argument is unchanged


def test_advance_and_the_fold_count_the_same_streaks():
    """The health machine and the fold of the log agree on every counter after the
    same results (they share count_result)."""
    statuses = ["keep", "discard", "discard", "crash", "checks_failed", "keep", "keep", "crash", "discard"]
    settings = autotune.Settings()
    settings.max_no_improve, settings.max_crash_streak = 100, 100   # no healing in between
    prev = {"active": True, "mode": "optimize", "health": "running", "failure": None,
            "recovery": None, "reason": "initialized", "heals": 0, "no_improve": 0,
            "crash_streak": 0, "keep_streak": 0}
    state = autotune.State()
    autotune.fold_entry(state, {"type": "config", "segment": 1, "name": "x", "metric_name": "t",
                                "metric_unit": "s", "direction": "lower"}, 0)
    for i, status in enumerate(statuses):
        prev = autotune.advance(prev, status, status == "keep", settings)
        autotune.fold_entry(state, {"type": "result", "status": status, "metric": 10 - i,
                                    "reason": prev["reason"]}, None)
        for name in autotune.STREAK_FIELDS:
            assert getattr(state, name) == prev[name], (i, status, name)
    autotune.fold_entry(state, {"type": "control", "action": "resume"}, None)
    assert (state.no_improve, state.crash_streak, state.heals, state.keep_streak) == (0, 0, 0, 0)
