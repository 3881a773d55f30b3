#!/usr/bin/env python3
"""Measured decision quality of autotune's keep/discard verdicts (issue 4, point 10).

Simulates optimization loops on synthetic benchmarks whose noise and true effects are
known, and applies autotune's real decision code with a fake benchmark function in place
of a process: `run`'s plan, sampling loop, verdict and suggested status
(`interleaved_looks`, `collect_pairs`, `sampling_plan`, `collect_samples`, `verdict_of`,
`suggested_status`; see `measure` below) and `log`'s decision and the fold of the log
(`decide_log`, `fold_entry`, `confidence`; see `Ledger`). The bench has no decision rule
of its own. Side by side, three rules: the interleaved default (the best and
the candidate measured alternately in the same window, `autotune.collect_pairs`), the
present rule (the candidate against the best's samples taken at an earlier run,
`evaluator.mode: "reference"`), and the naive rule "keep if a single sample is better
than the best so far".

It reports, per noise model:
  * the false-keep rate when nothing changed (a `keep` verdict for a null change),
  * the detection rate for true improvements of 1, 2 and 3 noise standard deviations,
  * the mean number of benchmark executions per decision,
and, for a long loop of 50 null experiments, how often the loop keeps at least one
("lucky best" ratchet). Targets at the default settings: false keeps <= 5% with no
true change, detection >= 90% at 3 sigma.

Noise models (a lower metric is better, true value 100, noise SD sigma = 1):
  gaussian     100 - effect + N(0, 1)
  lognormal    a heavy right tail: (LogNormal(0, 1) - its mean) / its SD, so SD 1
  quantized    a coarse timer: Gaussian noise rounded to a tick of 1 or 2 sigma, the true
               value at a random phase of the tick
  determ.      no noise at all (bundle size); effects are 1, 2, 3 units
Machine models (Gaussian noise on a machine whose speed changes; the factor multiplies
every measured value):
  step-25%     the machine gets 25% faster (or slower) between the baseline run and the
               candidate's run
  drift        0.5% slower per execution, gradually, within and across runs
  bursty       load that comes and goes: each execution starts a stretch of load with
               probability 0.1, lasting 4 executions on average, at 1.5-2x

Usage:
  python3 bench/decisions.py              # Markdown tables (for the README)
  python3 bench/decisions.py --json       # the same numbers as JSON
  python3 bench/decisions.py --quick      # 400 trials per cell, 50 loops: about 35 s, rates +-1%
  python3 bench/decisions.py --probe 4    # what-if: module constants and settings
Seeded (deterministic output); stdlib only; the default run takes about 105 s of CPU
(the running time goes to stderr).
"""

import argparse
import bisect
import functools
import json
import math
import os
import random
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import autotune  # noqa: E402

DIRECTION = "lower"
TRUE_VALUE = 100.0
EFFECTS = (0, 1, 2, 3)            # true improvements, in noise standard deviations
AFTER_EFFECT = 2                  # the real improvement that follows a ratchet of null changes
TARGET_FALSE_KEEPS = 0.05
TARGET_DETECTION_3SD = 0.90
TARGET_NOOP_RUNS = 20             # executions per no-op decision, both sides counted
TARGET_WIN_RUNS = 12              # executions per decision on a 3-sigma win
METRIC = "time"
LOG_REQUEST = autotune.LogRequest(status="auto")   # `log --status auto`
_LN_MEAN = math.exp(0.5)
_LN_SD = math.sqrt((math.e - 1.0) * math.e)


# ------------------------------------------------------------- noise models ----


class Machine(object):
    """The speed of the machine, as a factor on each execution's value: a step between
    the baseline run and later runs, a gradual drift, and stretches of load."""

    def __init__(self, rng, step=1.0, drift=0.0, bursts=False):
        self.rng, self.step, self.drift, self.bursts = rng, step, drift, bursts
        self.clock, self.runs, self.left, self.load = 0, 0, 0, 1.0

    def next_run(self):
        self.runs += 1

    def factor(self):
        self.clock += 1
        value = (self.step if self.runs > 1 else 1.0) * (1.0 + self.drift * self.clock)
        if self.bursts:
            if not self.left and self.rng.random() < 0.1:
                self.left = 1 + int(self.rng.expovariate(1.0 / 3.0))
                self.load = self.rng.uniform(1.5, 2.0)
            if self.left:
                self.left -= 1
                value *= self.load
        return value


class Noise(object):
    """A synthetic benchmark on a machine: draw(rng, true_value, phase) -> one value,
    times the machine's factor."""

    def __init__(self, key, label, draw, tick=None, machine=None):
        self.key, self.label, self._draw, self.tick = key, label, draw, tick
        self.machine_args = machine or {}
        self.stationary = not machine

    def phase(self, rng):
        """Where the true value sits within a timer tick (drawn once per loop)."""
        return rng.random() * self.tick if self.tick else 0.0

    def new_machine(self, rng):
        return Machine(rng, **self.machine_args)

    def bench(self, rng, true_value, phase, machine=None):
        draw = self._draw
        if machine is None:
            return lambda: draw(rng, true_value + phase)
        return lambda: draw(rng, true_value + phase) * machine.factor()


def _gaussian(rng, mu):
    return mu + rng.gauss(0.0, 1.0)


def _lognormal(rng, mu):
    return mu + (rng.lognormvariate(0.0, 1.0) - _LN_MEAN) / _LN_SD


def _quantized(tick):
    def draw(rng, mu):
        return round((mu + rng.gauss(0.0, 1.0)) / tick) * tick
    return draw


def _exact(rng, mu):
    return mu


NOISES = (
    Noise("gaussian", "Gaussian", _gaussian),
    Noise("lognormal", "lognormal (heavy tail)", _lognormal),
    Noise("quantized1", "quantized, tick = 1σ", _quantized(1.0), tick=1.0),
    Noise("quantized2", "quantized, tick = 2σ", _quantized(2.0), tick=2.0),
    Noise("deterministic", "deterministic (σ = 0; effects in units)", _exact),
    Noise("faster", "Gaussian, 25% faster after the baseline", _gaussian, machine={"step": 0.75}),
    Noise("slower", "Gaussian, 25% slower after the baseline", _gaussian, machine={"step": 1.25}),
    Noise("drift", "Gaussian, drifting 0.5% per execution", _gaussian, machine={"drift": 0.005}),
    Noise("bursty", "Gaussian, bursts of load at 1.5-2×", _gaussian, machine={"bursts": True}),
)
RULES = ("interleaved", "present", "naive")
RULE_LABELS = {"interleaved": "interleaved (default)", "present": "present (earlier reference)",
               "naive": "naive (1 sample, better than best)"}


# -------------------------------------------------- autotune's decision code ----


def measure(bench, reference, settings, deterministic=False, noise_mad=None,
            direction=DIRECTION, repeat=None, best_bench=None, rng=None):
    """`cmd_run`'s `measure` without a process: the same plan (autotune.interleaved_looks,
    autotune.sampling_plan), sampling loop (autotune.collect_pairs with the kept code
    beside the candidate, or autotune.collect_samples), verdict (autotune.verdict_of) and
    suggested status (autotune.suggested_status; the simulated change's lines are
    unknown, so an equal result is discarded).

    bench() returns one sample of the candidate, best_bench() one of the kept code (None:
    the present rule, or before the baseline); reference is the best's samples (None
    before the baseline); deterministic and noise_mad are what `cmd_run` reads from the
    state. Returns (samples, verdict, suggested_status, evidence, executions)."""
    repeat = settings.repeat if repeat is None else repeat
    looks = autotune.interleaved_looks(reference, repeat, settings, deterministic) if best_bench else None
    plan = autotune.sampling_plan(reference, repeat, settings, deterministic)
    m = autotune.Measurement(pname=METRIC, passed=True)
    judged, executions = None, 0
    if looks is None:
        m.samples, m.sample_metrics, _ = autotune.collect_samples(
            lambda n: (bench(), {}), plan, reference, direction, settings, noise_mad, deterministic)
        executions = len(m.samples)
    else:
        benches = {"best": best_bench, "candidate": bench}
        (m.samples, m.sample_metrics, best, _, _, verdict, evidence, _, alpha) = autotune.collect_pairs(
            lambda side, n: (benches[side](), {}), looks, direction, settings, rng)
        judged, plan.alpha, executions = (verdict, evidence), alpha, len(m.samples) + len(best)
    m.primary = autotune.median(m.samples)
    reference_info = {"deterministic": deterministic, "source": "#best"}
    m.verdict, m.evidence, m.guardrails = autotune.verdict_of(m, reference, reference_info, direction,
                                                              settings, noise_mad, plan.alpha, None, judged)
    m.suggested_status, m.status_rule = autotune.suggested_status(m.verdict)
    return m.samples, m.verdict, m.suggested_status, m.evidence, executions


class Ledger(object):
    """A loop's log, kept by autotune's own code: `log --status auto` decides with
    autotune.decide_log (status, improved), the result line is folded with
    autotune.fold_entry (which keeps the reference: the best's samples and whether the
    benchmark is deterministic, inherited from the baseline) and the confidence score
    comes from autotune.confidence (its noise MAD is what `run` passes to `assess`)."""

    def __init__(self, direction=DIRECTION):
        self.state = autotune.State()
        autotune.fold_entry(self.state, {"type": "config", "segment": 1, "metric_name": METRIC,
                                         "direction": direction, "timestamp": "2026-01-01T00:00:00Z"})
        self.points = []

    @property
    def reference(self):
        return (self.state.reference or {}).get("samples") or None

    @property
    def deterministic(self):
        return (self.state.reference or {}).get("deterministic")

    @property
    def noise_mad(self):
        return (self.state.confidence or {}).get("noise_mad")

    def log(self, samples, verdict, status):
        """`log --status auto` after `run` measured samples with this verdict and status."""
        m = autotune.Measurement(pname=METRIC, passed=True, samples=list(samples),
                                 primary=autotune.median(samples), verdict=verdict,
                                 suggested_status=status)
        decision = autotune.decide_log(LOG_REQUEST, self.state, m)
        entry = {"type": "result", "status": decision.status, "metric": autotune._round(decision.metric),
                 "samples": [autotune._round(s) for s in samples], "improved": bool(decision.improved),
                 "verdict": decision.verdict, "measured": True}
        point = autotune.fold_entry(self.state, entry)
        if point is not None:
            bisect.insort(self.points, point)
        self.state.confidence = autotune.confidence(self.points, self.state)
        return bool(decision.improved)

    def rebaseline(self, samples):
        """A `rebaseline` line: the reference becomes these samples."""
        autotune.fold_entry(self.state, {"type": "rebaseline", "samples": [autotune._round(s) for s in samples],
                                         "metric": autotune._round(autotune.median(samples))})

    def step(self, bench, settings, best_bench=None, rng=None):
        """One experiment, `run` then `log --status auto`: (verdict, executions). With
        best_bench (the kept code on the same machine), the interleaved default."""
        samples, verdict, status, _, runs = measure(
            bench, self.reference, settings, self.deterministic, self.noise_mad
            if settings.repeat == "auto" else None, self.state.config["direction"],
            best_bench=best_bench, rng=rng)
        self.log(samples, verdict, status)
        return verdict, runs


# --------------------------------------------------------------- scenarios ----


def _rng(seed, *parts):
    # str seeds hash with SHA-512: stable across runs and Python versions, and each
    # cell of the tables gets its own stream (independent of which cells run)
    return random.Random(":".join(str(p) for p in (seed,) + parts))


def single_decisions(noise, effect, trials, settings, seed, rules=RULES):
    """A fresh loop per trial: baseline, then one candidate `effect` sigma better, on a
    fresh machine per rule (the same machine model)."""
    out = {}
    for rule in rules:
        rng = _rng(seed, "single", noise.key, effect, rule)
        kept = executions = baseline_runs = deterministic = 0
        for _ in range(trials):
            phase = noise.phase(rng)
            machine = None if noise.stationary else noise.new_machine(rng)
            best = noise.bench(rng, TRUE_VALUE, phase, machine)
            better = noise.bench(rng, TRUE_VALUE - effect, phase, machine)
            if rule == "naive":  # one sample each, keep if strictly better than the best
                if machine:
                    machine.next_run()
                first = best()
                if machine:
                    machine.next_run()
                kept += better() < first
                executions += 1
                continue
            ledger = Ledger()
            if machine:
                machine.next_run()
            verdict, runs = ledger.step(best, settings)
            baseline_runs += runs
            deterministic += bool(ledger.deterministic)
            if machine:
                machine.next_run()
            if rule == "interleaved":
                verdict, runs = ledger.step(better, settings, best_bench=best, rng=rng)
            else:
                verdict, runs = ledger.step(better, settings)
            kept += verdict == "improved"
            executions += runs
        out[rule] = {"keep_rate": kept / float(trials), "runs": executions / float(trials)}
        if rule != "naive":
            out[rule].update(baseline_runs=baseline_runs / float(trials),
                             deterministic_baselines=deterministic / float(trials))
    return out


def ratchet(noise, loops, experiments, settings, seed, rebaseline_every=None, rule="present"):
    """Loops of `experiments` null changes after a baseline: how often is one kept?

    rebaseline_every=k re-measures the best (`rebaseline`, 5 samples) after every k
    consecutive non-keeps, as the plateau playbook does. rule "interleaved" measures
    the kept code beside each candidate (the default), "present" uses earlier samples."""
    rng = _rng(seed, "ratchet", noise.key, rebaseline_every, rule)
    any_kept = total_kept = naive_any = naive_total = runs = after = naive_after = 0
    for _ in range(loops):
        phase = noise.phase(rng)
        machine = None if noise.stationary else noise.new_machine(rng)
        bench = noise.bench(rng, TRUE_VALUE, phase, machine)
        pair = {"best_bench": bench, "rng": rng} if rule == "interleaved" else {}
        ledger = Ledger()
        if machine:
            machine.next_run()
        ledger.step(bench, settings)
        kept, streak = 0, 0
        for _ in range(experiments):
            if machine:
                machine.next_run()
            verdict, n = ledger.step(bench, settings, **pair)
            runs += n
            if verdict == "improved":
                kept, streak = kept + 1, 0
            else:
                streak += 1
                if rebaseline_every and streak >= rebaseline_every:
                    ledger.rebaseline([bench() for _ in range(autotune.DEFAULT_REBASELINE)])
                    runs += autotune.DEFAULT_REBASELINE
                    streak = 0
        any_kept += kept > 0
        total_kept += kept
        # the cost of a lucky best: then a real improvement of AFTER_EFFECT sigma comes
        better = noise.bench(rng, TRUE_VALUE - AFTER_EFFECT, phase, machine)
        after += ledger.step(better, settings, **pair)[0] == "improved"
        best, naive_kept = bench(), 0
        for _ in range(experiments):
            value = bench()
            if value < best:
                best, naive_kept = value, naive_kept + 1
        naive_any += naive_kept > 0
        naive_total += naive_kept
        naive_after += better() < best
    return {"autotune": {"any_kept": any_kept / float(loops), "mean_kept": total_kept / float(loops),
                         "runs": runs / float(loops * experiments), "detect_after": after / float(loops)},
            "naive": {"any_kept": naive_any / float(loops), "mean_kept": naive_total / float(loops),
                      "runs": 1.0, "detect_after": naive_after / float(loops)}}


# ---------------------------------------------------------------- settings ----


def make_settings(args):
    settings = autotune.Settings()
    if args.alpha is not None:
        settings.alpha = args.alpha
    if args.max_samples is not None:
        settings.max_samples = args.max_samples
    if args.min_pct is not None:
        settings.min_improvement_pct = args.min_pct
    if args.repeat is not None:
        settings.repeat = args.repeat
    return settings


class Constants(object):
    """Temporarily sets autotune's module constants (what-if runs)."""

    def __init__(self, **values):
        self.values = {k: v for k, v in values.items() if v is not None}
        self.saved = {}

    def __enter__(self):
        for name, value in self.values.items():
            self.saved[name] = getattr(autotune, name)
            setattr(autotune, name, value)
        return self

    def __exit__(self, *exc):
        for name, value in self.saved.items():
            setattr(autotune, name, value)


def describe(settings):
    return {"repeat": settings.repeat, "alpha": settings.alpha, "maxSamples": settings.max_samples,
            "minImprovementPct": settings.min_improvement_pct, "probe": autotune.DEFAULT_PROBE,
            "batch": autotune.DEFAULT_BATCH, "rebaseline": autotune.DEFAULT_REBASELINE}


def decision_table(settings, trials, seed, noises):
    rows = []
    for noise in noises:
        cells = {effect: single_decisions(noise, effect, trials, settings, seed) for effect in EFFECTS}
        for rule in RULES:
            row = {"noise": noise.key, "label": noise.label, "rule": rule,
                   "false_keeps": cells[0][rule]["keep_rate"],
                   "detect": {str(e): cells[e][rule]["keep_rate"] for e in EFFECTS if e},
                   "runs": {str(e): cells[e][rule]["runs"] for e in EFFECTS}}
            if rule != "naive":
                row["baseline_runs"] = cells[0][rule]["baseline_runs"]
                row["deterministic_baselines"] = cells[0][rule]["deterministic_baselines"]
            row["meets_targets"] = (row["false_keeps"] <= TARGET_FALSE_KEEPS
                                    and row["detect"]["3"] >= TARGET_DETECTION_3SD)
            if rule == "interleaved" and noise.key != "deterministic":
                row["meets_cost"] = (row["runs"]["0"] <= TARGET_NOOP_RUNS
                                     and row["runs"]["3"] <= TARGET_WIN_RUNS)
            rows.append(row)
    return rows


# --------------------------------------------------------------- rendering ----


def pct(value):
    if value >= 0.9995 or value == 0:
        return "%d%%" % round(value * 100)
    return "%.1f%%" % (value * 100)


def render_decisions(rows):
    lines = ["| benchmark noise | rule | false keeps (no change) | detects 1σ | 2σ | 3σ "
             "| runs per decision (0σ · 1σ · 2σ · 3σ) | targets |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- | --- |"]
    for row in rows:
        runs = " · ".join("%.1f" % row["runs"][str(e)] for e in EFFECTS)
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            row["label"], RULE_LABELS[row["rule"]],
            pct(row["false_keeps"]), pct(row["detect"]["1"]), pct(row["detect"]["2"]),
            pct(row["detect"]["3"]), runs, ("met" if row["meets_targets"] and row.get("meets_cost", True)
                                            else "**missed**")))
    return "\n".join(lines)


def render_ratchet(rows, experiments):
    lines = ["| benchmark noise | rule | loops of %d null changes keeping ≥ 1 | false keeps per loop "
             "| runs per experiment | then detects a real %dσ gain |" % (experiments, AFTER_EFFECT),
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for row in rows:
        lines.append("| %s | %s | %s | %.2f | %.1f | %s |" % (
            row["label"], row["rule_label"], pct(row["any_kept"]), row["mean_kept"], row["runs"],
            pct(row["detect_after"])))
    return "\n".join(lines)


# -------------------------------------------------------------------- main ----


def run(args):
    started = time.time()
    noises = [n for n in NOISES if not args.noise or n.key in args.noise]
    with Constants(DEFAULT_PROBE=args.probe, DEFAULT_BATCH=args.batch):
        settings = make_settings(args)
        report = {"settings": describe(settings), "seed": args.seed, "trials": args.trials,
                  "targets": {"false_keeps_max": TARGET_FALSE_KEEPS,
                              "detection_3sd_min": TARGET_DETECTION_3SD},
                  "decisions": decision_table(settings, args.trials, args.seed, noises)}
        ratchet_rows = []
        for noise in noises:
            if noise.key == "deterministic":
                continue
            for rule in ("interleaved", "present"):
                plain = ratchet(noise, args.loops, args.experiments, settings, args.seed, rule=rule)
                ratchet_rows.append(dict(plain["autotune"], noise=noise.key, label=noise.label,
                                         rule=rule, rule_label=RULE_LABELS[rule]))
            ratchet_rows.append(dict(plain["naive"], noise=noise.key, label=noise.label,
                                     rule="naive", rule_label="naive"))
            if not args.no_rebaseline:
                again = ratchet(noise, args.loops, args.experiments, settings, args.seed,
                                rebaseline_every=settings.max_no_improve)
                ratchet_rows.append(dict(again["autotune"], noise=noise.key, label=noise.label,
                                         rule="present+rebaseline",
                                         rule_label="present, `rebaseline` after %d discards"
                                         % settings.max_no_improve))
        report["ratchet"] = {"loops": args.loops, "experiments": args.experiments,
                             "rows": ratchet_rows}
    report["_seconds"] = round(time.time() - started, 1)
    return report


def render(report):
    s = report["settings"]
    head = ("Settings: repeat %s, alpha %s, maxSamples %s, minImprovementPct %s, probe %s, batch %s; "
            "%d trials per cell, seed %s." % (s["repeat"], s["alpha"], s["maxSamples"],
                                              s["minImprovementPct"], s["probe"], s["batch"],
                                              report["trials"], report["seed"]))
    parts = ["### Keep/discard decisions: one candidate against the baseline", "", head, "",
             render_decisions(report["decisions"]), ""]
    ours = [r for r in report["decisions"] if r["rule"] == "interleaved"]
    missed = [r["label"] for r in ours if not (r["meets_targets"] and r.get("meets_cost", True))]
    noisy = [r for r in ours if r["noise"] != "deterministic"]
    if noisy:
        parts += ["Targets for the default (every model): false keeps ≤ 5%%, detection at 3σ ≥ 90%%, "
                  "≤ %d executions per no-op decision and ≤ %d per 3σ win (both sides counted): %s. "
                  "Worst cases: false keeps %s, detection %s, executions %.1f (no-op) and %.1f (3σ win)." % (
                      TARGET_NOOP_RUNS, TARGET_WIN_RUNS, "met" if not missed else "missed for " + ", ".join(missed),
                      pct(max(r["false_keeps"] for r in ours)), pct(min(r["detect"]["3"] for r in ours)),
                      max(r["runs"]["0"] for r in noisy), max(r["runs"]["3"] for r in noisy)), ""]
    r = report["ratchet"]
    parts += ["### Lucky-best ratchet: %d null experiments after the baseline (%d loops)" % (
        r["experiments"], r["loops"]), "", render_ratchet(r["rows"], r["experiments"])]
    return "\n".join(parts)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    p.add_argument("--quick", action="store_true",
                   help="a fast look: 400 trials per cell and 50 ratchet loops (rates to about +-1%%)")
    p.add_argument("--seed", type=int, default=4)
    p.add_argument("--trials", type=int, help="trials per table cell (default 2000)")
    p.add_argument("--loops", type=int, help="loops in the ratchet scenario (default 100)")
    p.add_argument("--experiments", type=int, default=50, help="null experiments per loop")
    p.add_argument("--noise", action="append", choices=[n.key for n in NOISES],
                   help="only these noise models (repeatable)")
    p.add_argument("--no-rebaseline", action="store_true", help="skip the rebaseline ratchet rows")
    what_if = p.add_argument_group("what-if (autotune.py is not changed)")
    what_if.add_argument("--alpha", type=float, help="evaluator.alpha")
    what_if.add_argument("--max-samples", type=int, help="evaluator.maxSamples")
    what_if.add_argument("--min-pct", type=float, help="evaluator.minImprovementPct")
    what_if.add_argument("--repeat", type=int, help="a fixed repeat instead of auto")
    what_if.add_argument("--probe", type=int, help="DEFAULT_PROBE (baseline samples before deciding)")
    what_if.add_argument("--batch", type=int, help="DEFAULT_BATCH (samples per look)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.trials is None:
        args.trials = 400 if args.quick else 2000
    if args.loops is None:
        args.loops = 50 if args.quick else 100
    # u_distribution is a pure function of (n, m); memoizing it changes no decision,
    # only the running time of the exact Mann-Whitney p-values
    original = autotune.u_distribution
    autotune.u_distribution = functools.lru_cache(maxsize=None)(original)
    try:
        report = run(args)
    finally:
        autotune.u_distribution = original
    # the running time goes to stderr, so the output itself is deterministic
    sys.stderr.write("bench/decisions.py: %.1f s\n" % report.pop("_seconds"))
    if args.json:
        print(json.dumps(report, indent=1, sort_keys=True))
    else:
        print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
