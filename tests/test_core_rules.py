"""One implementation of each rule (issue 15): the pure helpers every caller shares.

Unit tests on plain data: the streak counters (`count_result`) that the health machine
and the fold of the log both use, the percentage helpers, and the pure judges that must
leave their arguments as they found them."""

import copy
import math

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


# ------------------------------------------------------------- percentages ----

def test_one_percent_formula_behind_every_percentage():
    assert autotune.percent_of(-5, -50) == -10.0
    assert autotune.pct_change(90, 100) == -10.0 and autotune.pct_change(90, 0) is None
    assert autotune.pct_change(1.7976931348623157e308, -1e308) is None   # overflow is no figure
    assert autotune.regression_pct(110, 100, "lower") == 10.0
    assert autotune.regression_pct(90, 100, "higher") == 10.0
    assert autotune.sigma_pct(2.0, -40) == 5.0
    assert autotune.sigma_pct(0, 40) is None and autotune.sigma_pct(2.0, 0) is None
    assert autotune.shift_pct(0.0, True) == 0.0 and autotune.shift_pct(-0.25, False) == -25.0
    assert abs(autotune.shift_pct(math.log(0.9), True) - -10.0) < 1e-9


def test_spreadsheet_cells_tell_numbers_with_the_metric_grammar():
    assert autotune.spreadsheet_cell("-5") == "-5"
    assert autotune.spreadsheet_cell("-1.5e-07") == "-1.5e-07"
    assert autotune.spreadsheet_cell("-1e999") == "'-1e999"      # not a finite number: text
    assert autotune.spreadsheet_cell("=1+1") == "'=1+1"
    assert autotune.spreadsheet_cell("-1_000") == "'-1_000"


def test_clean_tail_drops_sequences_and_keeps_other_characters():
    """The tail keeps what the program wrote but escape sequences (tab, NUL and bell
    stay; strip_controls removes them when the tail is shown)."""
    assert autotune.clean_tail("\x1b[31mF\x1b[0m\tx\x00\x07") == "F\tx\x00\x07"
    assert autotune.clean_tail("a\x1b") == "a"
    assert autotune.clean_tail("1%\r\x1b[K99%\rok\nnext") == "ok\nnext"


# ------------------------------------------------------------ pure judges ----

def measured(**fields):
    m = autotune.Measurement()
    m.passed, m.samples, m.metrics, m.checks = True, [9.0, 9.1, 9.0], {"mem_mb": 120}, True
    for name, value in fields.items():
        setattr(m, name, value)
    return m


def test_verdict_of_leaves_its_arguments_unchanged():
    settings = autotune.Settings()
    settings.guardrails = {"mem_mb": {"maxRegressionPct": 5}}
    m = measured()
    judged = ("improved", {"method": "interleaved-signed-rank", "reference": {"median": 10.0}})
    before_m, before_judged = copy.deepcopy(m.to_dict()), copy.deepcopy(judged)
    verdict, evidence, guardrails = autotune.verdict_of(
        m, [10.0], {"source": "#1"}, "lower", settings, None, 0.05, {"mem_mb": 100}, judged)
    assert verdict == "guardrail_failed" and guardrails["ok"] is False
    assert guardrails["breaches"][0]["metric"] == "mem_mb"
    assert m.to_dict() == before_m and m.guardrails is None
    assert judged == before_judged
    settings.guardrails = {}
    assert autotune.verdict_of(m, [10.0, 10.1, 10.0], {"source": "#1"}, "lower", settings, None, 0.05,
                               {}, judged) == ("improved", judged[1], None)
    assert autotune.verdict_of(measured(crashed=True), [], {}, "lower", settings, None, 0.05, {}) == \
        ("crash", None, None)


def test_holdout_verdict_answers_a_copy():
    holdout = {"value": 130.0, "ok": True, "reason": None}
    kept = copy.deepcopy(holdout)
    verdict, judged = autotune.holdout_verdict("improved", holdout, 100.0, "lower", 10.0)
    assert verdict == "holdout_failed" and holdout == kept
    assert judged["ok"] is False and judged["regression_pct"] == 30.0 and judged["reference"] == 100.0
    assert list(judged) == ["value", "ok", "reason", "reference", "regression_pct"]
    verdict, judged = autotune.holdout_verdict("improved", holdout, 125.0, "lower", 10.0)
    assert verdict == "improved" and judged["ok"] is True and holdout == kept
    assert autotune.holdout_verdict("baseline", holdout, 100.0, "lower", 10.0) == ("baseline", holdout)


# ------------------------------------------------------------------ storage ----

def test_log_lines_stop_at_a_torn_line(tmp_path):
    path = tmp_path / "log"
    path.write_bytes(b'{"a": 1}\n\n{"b": 2}\n{"c"')
    with open(str(path), "rb") as handle:
        lines = autotune.LogLines(handle, 9)
        assert list(lines) == [(9, b"\n"), (10, b'{"b": 2}\n')]
        assert lines.torn == b'{"c"' and lines.offset == 19


@pytest.mark.parametrize("data", [b"", b"a\n", b"a\nb", b"x" * 70000 + b"\n" + b"y" * 70000, b"\n\n"])
def test_lines_backward_reads_every_line_last_first(tmp_path, data):
    path = tmp_path / "log"
    path.write_bytes(data)
    with open(str(path), "rb") as handle:
        assert list(autotune.lines_backward(handle)) == list(reversed(data.split(b"\n")))
        start = len(data) // 2
        assert list(autotune.lines_backward(handle, start)) == list(reversed(data[start:].split(b"\n")))


def test_read_json_answers_the_default_for_anything_unreadable(tmp_path):
    missing = object()
    cases = {"ok.json": (b'{"a": [1]}', {"a": [1]}), "null.json": (b"null", None),
             "junk.json": (b"{", missing), "latin.json": (b'"\xff"', missing),
             "deep.json": (b"[" * 100000 + b"]" * 100000, missing)}
    for name, (data, expected) in cases.items():
        (tmp_path / name).write_bytes(data)
        assert autotune.read_json(str(tmp_path / name), missing) is expected or \
            autotune.read_json(str(tmp_path / name), missing) == expected, name
    assert autotune.read_json(str(tmp_path / "absent.json")) is None
