"""The interleaved decision's statistics (issue 9, points 2-3): the signed-rank test with
ties and zeros, the exact spending of alpha across looks, what a look counts, and that
bench/decisions.py decides through the product's own functions (issue 15, point 2)."""

import itertools
import math
import os
import random
import sys

import autotune

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "bench"))


def _brute_p(gains):
    """P(rank sum of the positives >= observed) over every sign flip of the nonzero
    gains' mid-ranks, counted one pattern at a time."""
    ranks = [r for r in autotune.signed_ranks(gains) if r]
    observed = sum(r for r, g in zip(autotune.signed_ranks(gains), gains) if g > 0)
    hits = sum(1 for signs in itertools.product((0, 1), repeat=len(ranks))
               if sum(r for r, s in zip(ranks, signs) if s) >= observed)
    return hits / float(2 ** len(ranks))


def test_zeros_are_left_out_and_tied_magnitudes_share_a_mid_rank():
    # doubled mid-ranks: |1| twice -> ranks 1,2 -> 1.5 each -> 3; |2| -> 3 -> 6; zeros -> 0
    assert autotune.signed_ranks([1, 0, -1, 2, 0]) == [3, 0, 3, 6, 0]
    assert autotune.signed_ranks([]) == []
    assert autotune.signed_ranks([0, 0]) == [0, 0]


def test_rank_sum_counts_is_the_exact_null_distribution_with_ties():
    ranks = autotune.signed_ranks([1, 1, -1, 2, 3, -3])
    counts = autotune.rank_sum_counts([r for r in ranks if r])
    assert sum(counts) == 2 ** 6
    brute = [0] * len(counts)
    for signs in itertools.product((0, 1), repeat=6):
        brute[sum(r for r, s in zip(ranks, signs) if s)] += 1
    assert counts == brute


def test_signed_rank_p_is_the_permutation_p_value_with_ties_and_zeros():
    rng = random.Random(9)
    for _ in range(60):
        gains = [rng.choice((-2, -1, 0, 1, 1, 2, 3)) for _ in range(rng.randint(1, 9))]
        better, worse = autotune.signed_rank_p(gains)
        if not any(gains):
            assert (better, worse) == (1.0, 1.0)
            continue
        assert abs(better - _brute_p(gains)) < 1e-12, gains
        assert abs(worse - _brute_p([-g for g in gains])) < 1e-12, gains


def test_a_pair_has_the_same_magnitude_whichever_side_was_faster():
    """Two values measured in either order tie exactly (a coarse timer makes such pairs
    often); a float error that depended on the sign would break the test's symmetry."""
    values = [(98.0, 100.0), (96.0, 98.0), (0.3, 0.7), (1e-3, 7e-3), (123.456, 654.321)]
    ratios, relative = autotune.paired_ratios([a for a, _ in values], [b for _, b in values])
    swapped, _ = autotune.paired_ratios([b for _, b in values], [a for a, _ in values])
    assert relative and ratios == [-r for r in swapped]


def _sequential_keep_rate(magnitudes, looks, judged=None):
    """Over every sign pattern of these magnitudes (all equally likely under "no change"),
    the share that some look of the sequential test rejects for "better"; also checks
    that each look's level depends on the magnitudes only."""
    n = len(magnitudes)
    judged = judged or [True] * n
    levels_seen, rejected = None, 0
    for signs in itertools.product((1, -1), repeat=n):
        gains = [s * m for s, m in zip(signs, magnitudes)]
        spending, levels, hit = autotune.LookSpending(), [], False
        for size, nominal in looks:
            level = spending.level(gains[:size], judged[:size], nominal)
            levels.append(level)
            kept = [g for g, ok in zip(gains[:size], judged[:size]) if ok]
            hit = hit or autotune.signed_rank_p(kept)[0] <= level
        assert levels_seen is None or levels == levels_seen
        levels_seen = levels
        rejected += hit
    return rejected / float(2 ** n), spending.spent


def test_the_looks_together_keep_a_no_op_at_most_alpha_of_the_time_exactly():
    """The whole sequential plan, every look taken (no early stop helps it), counted over
    all 2^n sign patterns: at most alpha, with ties, zeros and set-aside pairs."""
    looks = [(5, 0.05 * 2 / 3)] + [(n, 0.05 / 12) for n in (6, 7, 8, 10)]
    rng = random.Random(3)
    cases = [list(range(1, 11)),                                   # no ties
             [1, 1, 2, 2, 2, 3, 3, 1, 2, 3],                       # a coarse timer's ties
             [1, 0, 2, 0, 3, 1, 0, 2, 4, 1],                       # and zero differences
             [rng.random() for _ in range(10)]]
    for magnitudes in cases:
        rate, spent = _sequential_keep_rate(magnitudes, looks)
        assert rate <= 0.05 + 1e-12 and spent <= 0.05 + 1e-12, (magnitudes, rate, spent)
        assert rate >= 1 / 32.0 or 0 in magnitudes[:5]             # the first look is not wasted
    judged = [True, False, True, True, True, True, True, False, True, True]
    rate, _ = _sequential_keep_rate(list(range(1, 11)), looks, judged)
    assert rate <= 0.05 + 1e-12


def test_a_second_look_two_pairs_later_can_decide_a_single_small_loss():
    """The point of exact spending: after five pairs with one small loss, seven pairs with
    that loss as the smallest decide; a Bonferroni split could not (2/128 > its share)."""
    looks = autotune.pair_looks(15, 0.05)
    gains = [-0.012, 0.064, 0.042, 0.039, 0.030, 0.043, 0.036]
    spending = autotune.LookSpending()
    p5 = autotune.signed_rank_p(gains[:5])[0]
    assert p5 > spending.level(gains[:5], [True] * 5, looks[0][1])
    spending.level(gains[:6], [True] * 6, looks[1][1])
    assert autotune.signed_rank_p(gains)[0] <= spending.level(gains, [True] * 7, looks[2][1])


def test_pair_looks_come_one_pair_apart_first_and_add_up_to_alpha():
    assert [n for n, _ in autotune.pair_looks(15, 0.05)] == [5, 6, 7, 8, 11, 15]
    for limit in (1, 5, 6, 9, 15, 16, 40, 300):
        looks = autotune.pair_looks(limit, 0.05)
        sizes = [n for n, _ in looks]
        assert sizes[-1] == limit and sizes == sorted(set(sizes))
        assert abs(sum(a for _, a in looks) - 0.05) < 1e-12


def _collect(values):
    """collect_pairs over scripted (candidate, best) values, order fixed."""
    script = iter(values)
    pending = {}

    def take(side, number):
        if not pending:
            pending.update(zip(("candidate", "best"), next(script)))
        return pending.pop(side), {}
    settings = autotune.Settings()
    return autotune.collect_pairs(take, autotune.pair_looks(15, 0.05), "lower", settings,
                                  random.Random(1))


def test_a_look_that_ties_leave_unable_to_decide_spends_nothing():
    """A coarse timer: two of the first five pairs measured the same value on both sides
    (no sign). Those looks cannot reach alpha, so they spend none of it: five wins decide
    at the seventh pair with p = 1/32, as they would have at the fifth without the ties."""
    values = [(98.0, 100.0), (100.0, 100.0), (98.0, 100.0), (100.0, 100.0), (96.0, 98.0),
              (98.0, 100.0), (96.0, 100.0)] + [(100.0, 100.0)] * 30
    cand, _, best, _, _, verdict, evidence, notes, alpha = _collect(values)
    assert verdict == "improved" and len(cand) == 7 and len(notes) == 2, (len(cand), notes)
    assert evidence["p_value"] == 1 / 32.0 <= alpha


def test_a_candidate_behind_stops_at_the_first_look():
    values = [(101.0, 100.0), (99.5, 100.0), (100.8, 100.0), (100.2, 100.0), (100.9, 100.0)] * 4
    cand, _, _, _, _, verdict, _, _, _ = _collect(values)
    assert verdict == "within_noise" and len(cand) == 5


# ------------------------------------------- the bench runs the product's code ----


def test_the_bench_has_no_rule_of_its_own():
    """bench/decisions.py decides with suggested_status, verdict_of, decide_log and the
    fold of the log (issue 15): no status map, determinism rule or verdict test of its own."""
    with open(os.path.join(os.path.dirname(HERE), "bench", "decisions.py")) as handle:
        text = handle.read()
    for own_rule in ('"improved": "keep"', "is_deterministic(", "known_deterministic(", "assess(",
                     "assess_paired(", "self.best"):
        assert own_rule not in text, own_rule
    for product in ("autotune.suggested_status(", "autotune.verdict_of(", "autotune.decide_log(",
                    "autotune.fold_entry(", "autotune.collect_pairs(", "autotune.interleaved_looks("):
        assert product in text, product


def test_the_bench_ledger_keeps_the_logs_determinism_rule():
    """A noisy baseline stays noisy when a later keep happens to print identical samples
    (the fold's rule, not a copy of it)."""
    import decisions
    ledger = decisions.Ledger()
    ledger.log([100.0, 101.0, 99.0, 100.5, 102.0], "baseline", "keep")
    assert ledger.deterministic is False and ledger.reference == [100.0, 101.0, 99.0, 100.5, 102.0]
    assert ledger.log([98.0, 98.0, 98.0, 98.0, 98.0], "improved", "keep")
    assert ledger.deterministic is False and ledger.reference == [98.0] * 5
    assert not ledger.log([97.0] * 5, "within_noise", "discard")
    assert ledger.reference == [98.0] * 5 and ledger.noise_mad is not None


def test_the_bench_measure_returns_the_products_verdict_and_status():
    import decisions
    settings = autotune.Settings()
    rng = random.Random(5)
    best = iter([100.0 + 0.1 * (i % 3) for i in range(100)])
    cand = iter([97.0 + 0.1 * (i % 3) for i in range(100)])
    samples, verdict, status, evidence, runs = decisions.measure(
        lambda: next(cand), [100.0, 100.1, 100.2, 100.0, 100.1], settings, False, None,
        best_bench=lambda: next(best), rng=rng)
    assert (verdict, status) == ("improved", "keep") and runs == 2 * len(samples) == 10
    assert evidence["method"] == "interleaved-signed-rank"
    assert math.isclose(evidence["p_value"], 1 / 32.0)
