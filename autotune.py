#!/usr/bin/env python3
"""autotune: autonomous optimization loops for Claude Code.

An agent edits code, runs a benchmark, keeps what improves a metric (a git commit),
reverts what does not, watches the health of its own loop, recovers from failures
with bounded playbooks, and pauses with a reason instead of thrashing.

The loop, as the agent drives it:

    autotune init --name "faster tests" --metric time_s --direction lower
    autotune run                      # ./autotune.sh -> METRIC lines -> checks -> verdict
    autotune log --status auto --description "cache the fixtures"   # commit or revert
    autotune explain                  # what state the loop is in, and what to do next

Files in the working directory (the "protected files": never committed, never reverted):
    autotune.jsonl        append-only log; one config line per segment, one result per
                          experiment. It is the truth: everything else derives from it.
    .autotune.state       a cache of the fold of the log (rebuilt when missing or stale)
    autotune.md, autotune.ideas.md   the agent's living notes and idea backlog
    autotune.sh           the benchmark; prints `METRIC name=value` lines
    autotune.checks.sh    optional correctness checks, run after a passing benchmark
    autotune.holdout.sh   optional holdout workload, run before a keep is accepted
    autotune.config.json  optional configuration
Private caches live in <git dir>/autotune/<key>/: the snapshot index that lets a revert
restore exactly the state before the experiment, the last run's measurement (which
`log` consumes), and the sorted metric values behind the confidence score.

Design. A functional core and an imperative shell: parsing, statistics, the fold of the
log into state, and the health machine are pure functions of plain data; files, git
and processes are touched only at the edges. Records are small __slots__ classes
(importing dataclasses costs more than the whole interpreter start-up, and every call
is one process in the agent's inner loop); heavy modules are imported where used.

Sections: constants, errors, data model, configuration, storage, metrics, statistics,
health, git, running, commands, hooks, rendering, CLI.

Tests: `make test` drives this file as a black box in scratch git repositories.
"""

import json
import os
import sys
import time

# ---------------------------------------------------------------- constants ----

VERSION = "1.0.0"

LOG_FILE = "autotune.jsonl"
STATE_FILE = ".autotune.state"
NOTES_FILE = "autotune.md"
IDEAS_FILE = "autotune.ideas.md"
BENCH_FILE = "autotune.sh"
CHECKS_FILE = "autotune.checks.sh"
HOLDOUT_FILE = "autotune.holdout.sh"
CONFIG_FILE = "autotune.config.json"
PROTECTED_FILES = (LOG_FILE, STATE_FILE, NOTES_FILE, IDEAS_FILE, BENCH_FILE,
                   CHECKS_FILE, HOLDOUT_FILE, CONFIG_FILE)
# Our own temporary and backup files, excluded from snapshots by glob.
PROTECTED_GLOBS = (".autotune.state.*", "autotune.jsonl.*")
INTEGRITY_FILES = (BENCH_FILE, CHECKS_FILE, HOLDOUT_FILE)

STATUSES = ("keep", "discard", "crash", "checks_failed")
CRASH_STATUSES = ("crash", "checks_failed")
DIRECTIONS = ("lower", "higher")
MODES = ("optimize", "repair")
AUTO_RESUME_MODES = ("prompt", "headless", "off", "continue")
# Verdicts after which a keep needs --force and --reason.
BLOCKING_VERDICTS = ("crash", "checks_failed", "guardrail_failed", "holdout_failed", "worse")

PLAYBOOKS = ("reset_worktree", "rebaseline", "shrink_scope", "diagnose", "pause")
FAILURE_PLAYBOOK_ORDER = {
    "benchmark_crash": ("reset_worktree", "rebaseline", "diagnose", "pause"),
    "checks_failed": ("diagnose", "rebaseline", "pause"),
    "plateau": ("rebaseline", "shrink_scope", "diagnose", "pause"),
}
RESERVED_METRIC_NAMES = ("__proto__", "constructor", "prototype")

DEFAULT_MAX_NO_IMPROVE = 5
DEFAULT_MAX_CRASH_STREAK = 2
DEFAULT_PLAYBOOKS = ("rebaseline", "shrink_scope", "diagnose", "pause")
DEFAULT_MAX_HEALS = 3
DEFAULT_TIMEOUT = 600.0
DEFAULT_CHECKS_TIMEOUT = 300.0
DEFAULT_ALPHA = 0.05
DEFAULT_MAX_SAMPLES = 15
DEFAULT_BATCH = 5          # samples per look for a noisy benchmark
DEFAULT_PROBE = 4          # baseline samples that decide "deterministic or noisy"
DEFAULT_REBASELINE = 5
DEFAULT_HOLDOUT_TOLERANCE_PCT = 5.0
DEFAULT_MAX_RESUMES = 20
DEFAULT_RESUME_INTERVAL_MIN = 5.0
DEFAULT_MAX_CONSECUTIVE_BLOCKS = 6
DEFAULT_MAX_BLOCKS = 200

OUTPUT_TAIL_LINES, OUTPUT_TAIL_BYTES = 50, 4096
CHECKS_TAIL_LINES, CHECKS_TAIL_BYTES = 20, 2048
MAX_LINE_BYTES = 65536        # a longer output line is cut (METRIC lines are short)
MAX_TEXT_CHARS = 20000        # descriptions and reasons
MAX_JSON_ARG_CHARS = 200000   # --metrics / --asi
STATE_FORMAT = 4              # bump when the state cache changes shape

AGENT_COMMANDS = ("init", "run", "log", "rebaseline", "hook")

# -------------------------------------------------------------------- errors ----


class AutotuneError(Exception):
    """An expected failure: one clear sentence, a stable code, nothing written."""

    def __init__(self, code, message, exit_code=1):
        Exception.__init__(self, message)
        self.code = code
        self.message = message
        self.exit_code = exit_code


def fail(code, message, exit_code=1):
    raise AutotuneError(code, message, exit_code)


# ---------------------------------------------------------- text and numbers ----


def _finite(value):
    """The value when it is a finite number, else None: the guard every computed figure
    (a difference, a ratio, a mean) passes before it is shown or stored, since two
    finite metrics such as 1.7976931348623157e308 and -1e308 can differ by infinity."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return value if value - value == 0 else None
    except (TypeError, OverflowError):
        return None


def _round(value, digits=6):
    value = _finite(value)
    if value is None:
        return None
    if value and abs(value) < 10.0 ** (3 - digits):  # keep significant digits of tiny values
        return float("%.*g" % (max(3, digits), value))
    rounded = round(value, digits)
    return int(rounded) if abs(rounded) < 1e15 and rounded == int(rounded) else rounded


def _fmt(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        if _finite(value) is None:
            return "overflow" if value == value else "-"
        if abs(value) < 1e15 and value == int(value):
            return str(int(value))
        return ("%.6g" % value)
    return str(value)


def fmt_metric(value, unit):
    if value is None:
        return "-"
    return "%s %s" % (_fmt(value), unit) if unit else _fmt(value)


def fmt_pct(value):
    if value is None:
        return "-"
    return "%+.1f%%" % value if _finite(value) is not None else "overflow"


def midpoint(low, high):
    """(low + high) / 2 that cannot overflow: the median of two huge metrics is finite."""
    if low == high:
        return low
    if (low < 0) == (high < 0):
        return low + (high - low) / 2.0
    return (low + high) / 2.0


def pct_change(value, reference):
    """(value - reference) / |reference| in percent, or None when there is no reference
    or the result overflows a float (a denormal reference, opposite huge values)."""
    if value is None or not reference:
        return None
    return _finite((value - reference) / abs(reference) * 100.0)


def fraction(value, low, high):
    """Where value sits in [low, high], from 0 to 1, for charts: finite for every finite
    input (the span of two huge metrics overflows; halves do not)."""
    span = high - low
    if not span > 0:
        return 0.5
    if span != float("inf"):
        return min(1.0, max(0.0, (value - low) / span))
    half = high / 2.0 - low / 2.0
    return min(1.0, max(0.0, (value / 2.0 - low / 2.0) / half)) if half > 0 else 0.5


def _one_line(text, limit):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _shell_quote(text):
    """One shell word that pastes back as exactly `text`: shlex.quote, or bash's $'...'
    with escapes when the text holds control characters (which must not reach a terminal
    raw, and would not survive a paste)."""
    import shlex
    text = str(text)
    if not any(_is_control(ch) for ch in text):
        return shlex.quote(text)
    escaped = []
    for ch in text:
        if ch in "\\'":
            escaped.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7f:
            escaped.append("\\x%02x" % ord(ch))
        elif _is_control(ch):
            escaped.append("\\u%04x" % ord(ch))
        else:
            escaped.append(ch)
    return "$'%s'" % "".join(escaped)


# Terminal safety. Text from the log, the config, the benchmark or the agent is data: it
# must never reach a terminal as control (ESC sequences that clear the screen, set the
# title, write the clipboard with OSC 52, ...). strip_controls is the one sanitizer:
# every text renderer passes what it prints through it, and adds its own colours after.

_ESC_FINAL = {"[": "csi", "]": "string", "P": "string", "X": "string", "^": "string", "_": "string"}
_C1_STRING = {"\x90", "\x98", "\x9d", "\x9e", "\x9f"}  # DCS, SOS, OSC, PM, APC


def _is_control(ch):
    code = ord(ch)
    return code < 0x20 or 0x7f <= code <= 0x9f


_CONTROL_TABLE = dict.fromkeys(list(range(0x20)) + list(range(0x7f, 0xa0)))
_control_search = []


def strip_controls(text, keep="\n", sgr=False):
    """The text without terminal control: whole escape sequences (CSI, OSC, DCS, ... and
    their 8-bit C1 forms) are removed, tab, CR, VT and FF become spaces, newlines stay
    when in `keep` (else spaces), every other C0/C1 control and DEL is removed. With
    `sgr`, colour sequences (ESC [ digits ; ... m) are kept: only for the output of the
    user's own status-line command. Text without controls costs one C-level pass."""
    if not isinstance(text, str):
        text = str(text)
    controls = len(text) - len(text.translate(_CONTROL_TABLE))
    if not controls or controls == sum(text.count(k) for k in keep):
        return text
    if not _control_search:
        import re
        _control_search.append(re.compile("[\x00-\x1f\x7f-\x9f]").search)
    search = _control_search[0]
    out, i, n = [], 0, len(text)
    while i < n:
        found = search(text, i)
        if found is None:
            out.append(text[i:])
            break
        at = found.start()
        out.append(text[i:at])
        ch = text[at]
        if ch in keep:
            out.append(ch)
            i = at + 1
            continue
        kind, start = None, at + 1
        if ch == "\x1b" and at + 1 < n and "\x20" <= text[at + 1] <= "\x7e":
            kind = _ESC_FINAL.get(text[at + 1], "short")
            start = at + 2 if kind != "short" else at + 1
        elif ch == "\x9b":
            kind = "csi"
        elif ch in _C1_STRING:
            kind = "string"
        if kind == "csi":  # parameters and intermediates 0x20-0x3f, then a final byte
            end = start
            while end < n and "\x20" <= text[end] <= "\x3f":
                end += 1
            end = end + 1 if end < n and "\x40" <= text[end] <= "\x7e" else end
            if sgr and text[end - 1:end] == "m" and all(c in "0123456789;" for c in text[start:end - 1]):
                out.append("\x1b[" + text[start:end])
            i = end
        elif kind == "string":  # up to BEL or ST (ESC \\, 0x9c); never past the line's end
            end = start
            while end < n and text[end] not in "\x07\x9c\x1b\n":
                end += 1
            i = end + (2 if text[end:end + 2] == "\x1b\\" else 1 if text[end:end + 1] in ("\x07", "\x9c")
                       else 0)
        elif kind == "short":  # ESC, intermediates, a final byte (ESC c resets, ESC ( B)
            end = start
            while end < n and "\x20" <= text[end] <= "\x2f":
                end += 1
            i = end + 1 if end < n and "\x30" <= text[end] <= "\x7e" else end
        else:
            if ch in "\t\r\x0b\x0c\n":
                out.append(" ")
            i = start
    return "".join(out)


def clean_data(value, keep=""):
    """A copy of a JSON-like value whose strings (keys too) went through strip_controls:
    what a renderer receives before it formats and colours anything."""
    if isinstance(value, str):
        return strip_controls(value, keep)
    if isinstance(value, dict):
        return {clean_data(k, keep) if isinstance(k, str) else k: clean_data(v, keep)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_data(v, keep) for v in value]
    return value


def spreadsheet_cell(value):
    """A CSV/TSV cell that a spreadsheet shows as text, never runs as a formula (OWASP
    CSV injection): text starting with = + - @ tab or CR gets a leading apostrophe.
    Numbers stay numbers (-5 is a number, not a formula)."""
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _fmt(value)
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    formula = text.lstrip(" ")[:1] in ("=", "+", "-", "@", "\t", "\r") and not _is_number_text(text)
    text = strip_controls(text)  # newlines stay (quoted in CSV); tab and CR become spaces
    return "'" + text if formula else text


def _is_number_text(text):
    """A plain decimal number as autotune writes one (-5, 1.5e-07), nothing else."""
    return (bool(text) and all(c in "0123456789+-.e" for c in text)
            and any(c.isdigit() for c in text) and _finite(_to_float(text)) is not None)


def _to_float(text):
    try:
        return float(text)
    except ValueError:
        return None


# ---------------------------------------------------------------- data model ----


class Record(object):
    """A named bag of fields with defaults that reads and writes plain dicts.

    Subclasses list FIELDS as (name, default) pairs; a callable default (list, dict)
    is called per instance. from_dict ignores unknown keys, so old and future log
    lines load without error.
    """

    __slots__ = ()
    FIELDS = ()

    def __init__(self, **values):
        for name, default in self.FIELDS:
            if name in values:
                value = values.pop(name)
            else:
                value = default() if callable(default) else default
            setattr(self, name, value)
        if values:
            raise TypeError("%s has no field %s" % (type(self).__name__, ", ".join(sorted(values))))

    @classmethod
    def from_dict(cls, data):
        if not isinstance(data, dict):
            data = {}
        return cls(**{name: data[name] for name, _ in cls.FIELDS if name in data})

    def to_dict(self):
        return {name: getattr(self, name) for name, _ in self.FIELDS}

    def copy(self):
        return type(self).from_dict(json.loads(json.dumps(self.to_dict())))

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, ", ".join(
            "%s=%r" % (name, getattr(self, name)) for name, _ in self.FIELDS))


class Settings(Record):
    """autotune.config.json, validated, with defaults filled in."""

    FIELDS = (
        ("path", None), ("raw", dict), ("working_dir", None),
        ("max_iterations", None), ("auto_resume", "prompt"), ("mode", "optimize"),
        ("max_no_improve", DEFAULT_MAX_NO_IMPROVE), ("max_crash_streak", DEFAULT_MAX_CRASH_STREAK),
        ("playbooks", lambda: list(DEFAULT_PLAYBOOKS)), ("max_heals", DEFAULT_MAX_HEALS),
        ("pause_on_exhausted", True),
        ("target", None), ("max_minutes", None),
        ("repeat", "auto"), ("max_samples", DEFAULT_MAX_SAMPLES), ("alpha", DEFAULT_ALPHA),
        ("min_improvement_pct", 0.0),
        ("guardrails", dict),
        ("holdout_tolerance_pct", DEFAULT_HOLDOUT_TOLERANCE_PCT),
        ("timeout", DEFAULT_TIMEOUT), ("checks_timeout", DEFAULT_CHECKS_TIMEOUT),
        ("max_resumes", DEFAULT_MAX_RESUMES), ("resume_interval_min", DEFAULT_RESUME_INTERVAL_MIN),
        ("max_consecutive_blocks", DEFAULT_MAX_CONSECUTIVE_BLOCKS), ("max_blocks", DEFAULT_MAX_BLOCKS),
    )
    __slots__ = tuple(name for name, _ in FIELDS)


class Result(Record):
    """One `result` line of the log: the first implementation's fields (always
    written, in its order), then ours (written when set)."""

    FIELDS = (
        ("type", "result"), ("index", 0), ("commit", None), ("metric", None),
        ("status", None), ("description", ""), ("timestamp", None), ("segment", 1),
        ("metrics", dict), ("asi", dict), ("failure", None), ("health", None),
        ("recovery", None), ("reason", None), ("files", list), ("mode", "optimize"),
        # ours
        ("active", None), ("improved", None), ("measured", None), ("verdict", None),
        ("samples", None), ("evidence", None), ("holdout", None), ("confidence", None),
        ("git", None), ("snapshot", None), ("env", None), ("run_dur", None),
        ("session_id", None), ("forced", None), ("override_reason", None), ("hashes", None),
    )
    __slots__ = tuple(name for name, _ in FIELDS)
    LEGACY_FIELDS = 16

    def to_entry(self):
        return {name: value for i, (name, value) in enumerate(self.to_dict().items())
                if i < self.LEGACY_FIELDS or value is not None}


class State(Record):
    """The fold of the log: the SPEC's state fields first, then the segment summary.

    Written to .autotune.state as a cache keyed by the log's size, so a call reads
    only what was appended since (history-independent cost).
    """

    FIELDS = (
        ("active", False), ("mode", "optimize"), ("health", "running"), ("failure", None),
        ("reason", None), ("recovery", None), ("heals", 0), ("no_improve", 0),
        # `failures` is the crash streak under the first implementation's name
        ("failures", 0), ("crash_streak", 0), ("keep_streak", 0), ("n_exp", 0),
        ("resume_count", 0), ("resume_at", 0), ("exp_at", None), ("progress_at", None),
        # segment summary
        ("segment", 0), ("segments", 0), ("config", None), ("config_offset", None),
        ("started_at", None), ("session_id", None),
        ("kept", 0), ("discarded", 0), ("crashed", 0), ("checks_failed", 0),
        ("metric_points", 0), ("total_results", 0), ("measured_results", 0), ("hashes", None),
        ("baseline", None), ("best", None), ("reference", None), ("last", None),
        ("confidence", None), ("snapshot", None), ("metric_names", None),
        ("stop_streak", 0), ("stop_blocks", 0), ("stopped_by", None), ("rebaselined_at", None),
        # cache bookkeeping
        ("format", STATE_FORMAT), ("log_size", 0), ("log_tail", ""), ("lines", 0),
        ("bad_lines", 0), ("bad_line_numbers", list),
    )
    __slots__ = tuple(name for name, _ in FIELDS)


class Outcome(Record):
    """One execution of a benchmark, checks or holdout script."""

    FIELDS = (("exit", None), ("dur", 0.0), ("timeout", False), ("metrics", dict),
              ("output", ""), ("error", None), ("dropped", 0))
    __slots__ = tuple(name for name, _ in FIELDS)


class Measurement(Record):
    """What `run` measured; stored for `log`, which must not be fed invented numbers."""

    FIELDS = (
        ("segment", None), ("timestamp", None), ("command", None), ("exit", None),
        ("dur", 0.0), ("passed", False), ("crashed", False), ("timeout", False),
        ("metrics", dict), ("primary", None), ("pname", None), ("samples", list),
        ("sample_metrics", list), ("output", ""), ("checks", None), ("chk_out", ""),
        ("verdict", None), ("suggested_status", None), ("evidence", None),
        ("sampling", None), ("guardrails", None), ("holdout", None), ("env", None),
        ("tree", None), ("head", None), ("reason", None), ("warnings", list), ("hashes", None),
    )
    __slots__ = tuple(name for name, _ in FIELDS)


# ------------------------------------------------------------- configuration ----


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    """A finite int or float (not a bool; not an int too big for a float)."""
    import math
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


class _ConfigReader(object):
    """Validates one JSON object of the config file, naming the field on error."""

    def __init__(self, path, data, prefix=""):
        self.path, self.data, self.prefix = path, data, prefix

    def error(self, key, expected):
        shown = json.dumps(self.data.get(key), ensure_ascii=False)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        fail("bad_config", "%s: %s%s must be %s, got %s." % (
            self.path, self.prefix, key, expected, shown))

    def check_keys(self, known):
        for key in self.data:
            if key not in known and not key.startswith(("_", "$")):
                fail("bad_config", "%s: unknown field %s%s (known: %s)." % (
                    self.path, self.prefix, key, ", ".join(known)))

    def get(self, key, kind, default=None, low=None, high=None, choices=None, allow_null=True):
        if key not in self.data or (self.data[key] is None and allow_null):
            return default
        value = self.data[key]
        if kind == "int":
            if not _is_int(value) or (low is not None and value < low) or (high is not None and value > high):
                self.error(key, "a whole number" + _range_text(low, high))
        elif kind == "number":
            if not _is_number(value) or (low is not None and value < low) or (high is not None and value > high):
                self.error(key, "a number" + _range_text(low, high))
        elif kind == "bool":
            if not isinstance(value, bool):
                self.error(key, "true or false")
        elif kind == "str":
            if not isinstance(value, str) or not value.strip():
                self.error(key, "a non-empty string")
        elif kind == "choice":
            if value not in choices:
                self.error(key, "one of " + ", ".join(json.dumps(c) for c in choices))
        elif kind == "object":
            if not isinstance(value, dict):
                self.error(key, "an object")
            return _ConfigReader(self.path, value, self.prefix + key + ".")
        return value


def _range_text(low, high):
    if low is not None and high is not None:
        return " from %s to %s" % (low, high)
    if low is not None:
        return " of at least %s" % low
    return ""


def _repeat_value(reader, key):
    value = reader.data.get(key)
    if value is None or value == "auto":
        return "auto" if value == "auto" else None
    if not _is_int(value) or not 1 <= value <= 1000:
        reader.error(key, '"auto" or a whole number from 1 to 1000')
    return value


def load_settings(path):
    """Reads autotune.config.json; a missing file means defaults, a bad one an error."""
    settings = Settings(path=path)
    try:
        with open(path, "rb") as handle:
            text = handle.read()
    except FileNotFoundError:
        return settings
    except OSError as exc:
        fail("bad_config", "%s: cannot be read (%s)." % (path, exc.strerror or exc))
    try:
        data = json.loads(text.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        fail("bad_config", "%s: is not UTF-8 text." % path)
    except ValueError as exc:
        fail("bad_config", "%s: invalid JSON (%s)." % (path, exc))
    except RecursionError:
        fail("bad_config", "%s: the JSON is nested too deeply." % path)
    if not isinstance(data, dict):
        fail("bad_config", "%s: must hold a JSON object, not %s." % (path, type(data).__name__))
    top = _ConfigReader(path, data)
    top.check_keys(("workingDir", "maxIterations", "autoResume", "mode", "repeat", "health",
                    "recovery", "budget", "evaluator", "guardrails", "holdout", "timeouts",
                    "resume"))
    settings.raw = data
    settings.working_dir = top.get("workingDir", "str")
    settings.max_iterations = top.get("maxIterations", "int", low=1)
    settings.auto_resume = top.get("autoResume", "choice", "prompt", choices=AUTO_RESUME_MODES)
    settings.mode = top.get("mode", "choice", "optimize", choices=MODES)
    settings.repeat = _repeat_value(top, "repeat") or "auto"

    health = top.get("health", "object")
    if health:
        health.check_keys(("maxNoImprovementRuns", "maxCrashStreak"))
        settings.max_no_improve = health.get("maxNoImprovementRuns", "int", DEFAULT_MAX_NO_IMPROVE, low=1)
        settings.max_crash_streak = health.get("maxCrashStreak", "int", DEFAULT_MAX_CRASH_STREAK, low=1)
    recovery = top.get("recovery", "object")
    if recovery:
        recovery.check_keys(("playbooks", "maxHealingAttempts", "pauseOnExhaustedRecovery"))
        books = recovery.data.get("playbooks")
        if books is not None:
            if not isinstance(books, list) or any(b not in PLAYBOOKS for b in books):
                recovery.error("playbooks", "a list of playbook names (%s)" % ", ".join(PLAYBOOKS))
            settings.playbooks = list(books)
        settings.max_heals = recovery.get("maxHealingAttempts", "int", DEFAULT_MAX_HEALS, low=0)
        settings.pause_on_exhausted = recovery.get("pauseOnExhaustedRecovery", "bool", True)
    budget = top.get("budget", "object")
    if budget:
        budget.check_keys(("maxIterations", "target", "maxMinutes"))
        settings.max_iterations = budget.get("maxIterations", "int", settings.max_iterations, low=1)
        settings.target = budget.get("target", "number")
        settings.max_minutes = budget.get("maxMinutes", "number", low=0.001)
    evaluator = top.get("evaluator", "object")
    if evaluator:
        evaluator.check_keys(("repeat", "maxSamples", "alpha", "minImprovementPct"))
        settings.repeat = _repeat_value(evaluator, "repeat") or settings.repeat
        settings.max_samples = evaluator.get("maxSamples", "int", DEFAULT_MAX_SAMPLES, low=1, high=1000)
        settings.alpha = evaluator.get("alpha", "number", DEFAULT_ALPHA, low=0.0001, high=0.5)
        settings.min_improvement_pct = evaluator.get("minImprovementPct", "number", 0.0, low=0)
    guardrails = top.get("guardrails", "object")
    if guardrails:
        rules = {}
        for name in guardrails.data:
            if name.startswith(("_", "$")) and not valid_metric_name(name):
                continue  # a comment
            if not valid_metric_name(name):
                fail("bad_config", "%s: guardrails.%s: %s is not a valid metric name (a letter, digit "
                     "or _, then letters, digits and _ . : / %% -)." % (
                         path, strip_controls(name, "")[:60], json.dumps(name[:60])))
            rule = guardrails.get(name, "object")
            if rule is None:
                guardrails.error(name, "an object")
            rule.check_keys(("maxRegressionPct", "max", "min", "direction"))
            parsed = {
                "maxRegressionPct": rule.get("maxRegressionPct", "number", low=0),
                "max": rule.get("max", "number"),
                "min": rule.get("min", "number"),
                "direction": rule.get("direction", "choice", "lower", choices=DIRECTIONS),
            }
            if parsed["maxRegressionPct"] is None and parsed["max"] is None and parsed["min"] is None:
                guardrails.error(name, "an object with maxRegressionPct, max or min")
            rules[name] = parsed
        settings.guardrails = rules
    holdout = top.get("holdout", "object")
    if holdout:
        holdout.check_keys(("maxRegressionPct",))
        settings.holdout_tolerance_pct = holdout.get(
            "maxRegressionPct", "number", DEFAULT_HOLDOUT_TOLERANCE_PCT, low=0)
    timeouts = top.get("timeouts", "object")
    if timeouts:
        timeouts.check_keys(("benchmark", "checks"))
        settings.timeout = timeouts.get("benchmark", "number", DEFAULT_TIMEOUT, low=0.001)
        settings.checks_timeout = timeouts.get("checks", "number", DEFAULT_CHECKS_TIMEOUT, low=0.001)
    resume = top.get("resume", "object")
    if resume:
        resume.check_keys(("maxResumes", "minMinutesBetween", "maxConsecutiveBlocks", "maxBlocks"))
        settings.max_resumes = resume.get("maxResumes", "int", DEFAULT_MAX_RESUMES, low=0)
        settings.resume_interval_min = resume.get("minMinutesBetween", "number",
                                                  DEFAULT_RESUME_INTERVAL_MIN, low=0)
        settings.max_consecutive_blocks = resume.get("maxConsecutiveBlocks", "int",
                                                     DEFAULT_MAX_CONSECUTIVE_BLOCKS, low=1)
        settings.max_blocks = resume.get("maxBlocks", "int", DEFAULT_MAX_BLOCKS, low=0)
    return settings


def _reject_constant(name):
    raise ValueError("%s is not a number JSON allows" % name)


# ------------------------------------------------------------------ storage ----


def utc_now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def iso_to_epoch(text):
    """Parses our own 'YYYY-MM-DDTHH:MM:SS[.f]Z' (and +00:00) timestamps; None if not one."""
    if not isinstance(text, str) or len(text) < 19:
        return None
    try:
        year, month, day = int(text[0:4]), int(text[5:7]), int(text[8:10])
        hour, minute, second = int(text[11:13]), int(text[14:16]), int(text[17:19])
    except ValueError:
        return None
    # days from civil (Howard Hinnant), so no calendar/datetime import is needed
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    return days * 86400 + hour * 3600 + minute * 60 + second


class Session(object):
    """Where a loop lives: its working directory, repository, settings and files."""

    __slots__ = ("workdir", "repo", "settings", "log_path", "state_path", "_cache_dir", "config_error")

    def __init__(self, workdir, repo, settings, config_error=None):
        self.workdir = workdir
        self.repo = repo
        self.settings = settings
        self.config_error = config_error  # set only by find_session(lenient=True)
        self.log_path = os.path.join(workdir, LOG_FILE)
        self.state_path = os.path.join(workdir, STATE_FILE)
        self._cache_dir = None

    def path(self, name):
        return os.path.join(self.workdir, name)

    def exists(self):
        return os.path.isfile(self.log_path)

    @property
    def cache_dir(self):
        """<git dir>/autotune/<key>: private caches, invisible to `git status`."""
        if self._cache_dir is None:
            import zlib
            base = self.repo.git_dir if self.repo else os.path.join(self.workdir, ".autotune-cache")
            key = "%08x" % zlib.crc32(os.path.realpath(self.workdir).encode("utf-8", "surrogateescape"))
            self._cache_dir = os.path.join(base, "autotune", key)
        return self._cache_dir

    def cache(self, name, create=False):
        if create and not os.path.isdir(self.cache_dir):
            os.makedirs(self.cache_dir, exist_ok=True)
        return os.path.join(self.cache_dir, name)


def find_session(cwd=None, lenient=False):
    """Resolves the working directory as SPEC section 3 says; never creates anything.

    `workingDir` in ./autotune.config.json wins; else the nearest directory from here
    up to the git root that holds autotune.jsonl; else the current directory. A broken
    config is an error, except with `lenient` (stop, clear, doctor must work with a typo
    in it): then the defaults apply and `config_error` says what is wrong.
    """
    cwd = os.path.abspath(cwd or os.getcwd())
    errors = []

    def settings_of(path):
        try:
            return load_settings(path)
        except AutotuneError as exc:
            if not lenient:
                raise
            errors.append(exc.message)
            return Settings(path=path)

    local_config = os.path.join(cwd, CONFIG_FILE)
    local = settings_of(local_config) if os.path.isfile(local_config) else None
    if local is not None and local.working_dir:
        workdir = os.path.normpath(os.path.join(cwd, local.working_dir))
        if not os.path.isdir(workdir):
            fail("bad_config", "%s: workingDir %s is not a directory." % (
                local_config, json.dumps(local.working_dir)))
        return Session(workdir, find_repo(workdir), local, (errors or [None])[0])
    repo = find_repo(cwd)
    workdir = cwd
    if repo is not None:
        probe = cwd
        while True:
            if os.path.isfile(os.path.join(probe, LOG_FILE)):
                workdir = probe
                break
            parent = os.path.dirname(probe)
            if _same_path(probe, repo.root) or parent == probe:
                break
            probe = parent
    settings = local if (workdir == cwd and local is not None) else settings_of(os.path.join(workdir, CONFIG_FILE))
    return Session(workdir, repo, settings, (errors or [None])[0])


def _same_path(a, b):
    return os.path.realpath(a) == os.path.realpath(b)


def _is_inside(path, root):
    path, root = os.path.realpath(path), os.path.realpath(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def require_session(session):
    if not session.exists():
        fail("no_session", "No autotune session in %s (no %s there or in a parent up to the "
             "git root); start one with `autotune init --name NAME --metric METRIC "
             "--direction lower|higher`." % (session.workdir, LOG_FILE))
    return session


def write_atomic(path, data):
    """Write-then-rename, so a reader sees the old file or the new one, never half."""
    tmp = "%s.%d.tmp" % (path, os.getpid())
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def dumps_line(entry):
    """One log line: compact JSON, no NaN/Infinity, non-ASCII kept as written."""
    return (json.dumps(entry, ensure_ascii=False, allow_nan=False, separators=(", ", ": "))
            + "\n").encode("utf-8")


def parse_line(raw):
    """A log line as a dict, or None when it is not one (junk lines are skipped)."""
    try:
        entry = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return entry if isinstance(entry, dict) else None


class LogLock(object):
    """Exclusive lock on the log for read-modify-append; the log file is the lock."""

    def __init__(self, session, create=False):
        self.session = session
        self.create = create
        self.fd = None

    def __enter__(self):
        if self.fd is not None:  # already locked by try_lock
            return self
        flags = os.O_RDWR | os.O_APPEND
        if self.create:
            flags |= os.O_CREAT
        try:
            self.fd = os.open(self.session.log_path, flags, 0o644)
        except FileNotFoundError:
            require_session(self.session)
            raise
        except OSError as exc:
            fail("io_error", "Cannot open %s (%s)." % (self.session.log_path, exc.strerror))
        try:
            import fcntl
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except ImportError:  # no advisory locks on this platform: single writer assumed
            pass
        return self

    def append(self, entries):
        data = b"".join(dumps_line(entry) for entry in entries)
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]

    def __exit__(self, *exc):
        os.close(self.fd)  # closing releases the flock
        self.fd = None
        return False


def try_lock(session):
    """A non-blocking LogLock, or None when another process holds it."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fd = os.open(session.log_path, os.O_RDWR | os.O_APPEND)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    lock = LogLock(session)
    lock.fd = fd
    return lock


# The fold: the log, read top to bottom, becomes the state. Pure over parsed lines.

_SEGMENT_KEEP = ("segments", "total_results", "format", "log_size", "log_tail", "lines",
                 "bad_lines", "bad_line_numbers",
                 "resume_count", "resume_at", "stop_blocks")  # the resume caps are per session


def _samples_of(entry, metric):
    samples = entry.get("samples")
    if isinstance(samples, list) and samples and all(_is_number(s) for s in samples):
        return [float(s) for s in samples]
    return [float(metric)] if metric is not None else []


def fold_entry(state, entry, offset=None):
    """Folds one log line into `state` (in place); returns its metric point or None."""
    kind = entry.get("type")
    if kind == "config":
        _fold_config(state, entry, offset)
    elif kind == "result":
        return _fold_result(state, entry)
    elif kind == "control":
        _fold_control(state, entry)
    elif kind == "rebaseline":
        samples = _samples_of(entry, entry.get("metric") if _is_number(entry.get("metric")) else None)
        if samples and state.config is not None:
            state.rebaselined_at = state.n_exp
            state.reference = {"metric": median(samples), "samples": samples, "source": "rebaseline",
                               "timestamp": entry.get("timestamp"),
                               "deterministic": is_deterministic(samples)}
    elif kind == "resume":
        state.resume_count += 1
        state.resume_at = iso_to_epoch(entry.get("timestamp")) or state.resume_at
        if isinstance(entry.get("session_id"), str):
            state.session_id = entry["session_id"]
    elif kind == "hook" and entry.get("action") == "block":
        state.stop_blocks += 1
        streak = entry.get("streak")
        state.stop_streak = streak if _is_int(streak) else state.stop_streak + 1
    return None


def _fold_config(state, entry, offset):
    fresh = State()
    for name, _ in State.FIELDS:
        if name not in _SEGMENT_KEEP:
            setattr(state, name, getattr(fresh, name))
    segment = entry.get("segment")
    if not _is_int(segment) or not 1 <= segment < 2 ** 31:
        segment = state.segments + 1
    state.segment = segment
    state.segments = max(state.segments, segment)
    state.config = dict(entry)
    for name in ("name", "metric_name", "metric_unit"):  # junk types would break every reader
        if not isinstance(state.config.get(name), str):
            state.config[name] = "" if state.config.get(name) is None else json.dumps(state.config[name])
    if state.config.get("direction") not in DIRECTIONS:
        state.config["direction"] = "lower"
    state.config_offset = offset
    state.active = True
    state.mode = entry.get("mode") if entry.get("mode") in MODES else "optimize"
    state.health = "running"
    state.reason = "initialized"
    state.started_at = entry.get("timestamp")
    state.session_id = entry.get("session_id")
    state.hashes = entry.get("hashes") if isinstance(entry.get("hashes"), dict) else None
    state.snapshot = entry.get("snapshot") if isinstance(entry.get("snapshot"), dict) else None


def _fold_result(state, entry):
    status = entry.get("status")
    if status not in STATUSES or state.config is None:
        return None
    direction = state.config.get("direction", "lower")
    state.n_exp += 1
    state.total_results += 1
    index = entry.get("index") if _is_int(entry.get("index")) else state.n_exp
    metric = float(entry["metric"]) if _is_number(entry.get("metric")) else None
    point = metric if status != "crash" else None
    timestamp = entry.get("timestamp")
    if point is not None:
        state.metric_points += 1
    if entry.get("measured") is True:
        state.measured_results += 1
    if state.n_exp == 1 and isinstance(entry.get("hashes"), dict):
        state.hashes = entry["hashes"]  # the benchmark as it was at the baseline
    if status == "keep":
        state.kept += 1
        state.no_improve, state.crash_streak, state.heals = 0, 0, 0
        state.keep_streak += 1
    elif status == "discard":
        state.discarded += 1
        state.no_improve += 1
        state.crash_streak, state.keep_streak = 0, 0
    else:
        if status == "crash":
            state.crashed += 1
        else:
            state.checks_failed += 1
        state.no_improve += 1
        state.crash_streak += 1
        state.keep_streak = 0
    reason = entry.get("reason")
    if isinstance(reason, str) and reason.startswith("heal:"):
        state.heals += 1
    state.failures = state.crash_streak
    for name in ("health", "failure", "recovery", "reason"):
        value = entry.get(name)
        setattr(state, name, value if value is None or isinstance(value, str) else str(value))
    if entry.get("mode") in MODES:
        state.mode = entry["mode"]
    active = entry.get("active")
    state.active = active if isinstance(active, bool) else state.health not in ("paused", "completed")
    metrics = entry.get("metrics") if isinstance(entry.get("metrics"), dict) else {}
    if len(metrics) > MAX_METRIC_NAMES:  # a hand-made line: the state stays small
        metrics = dict(list(metrics.items())[:MAX_METRIC_NAMES])
    if state.baseline is None and point is not None and status in ("keep", "discard"):
        state.baseline = {"index": index, "metric": point, "commit": entry.get("commit"),
                          "samples": _samples_of(entry, point), "metrics": metrics,
                          "holdout": entry.get("holdout") if _is_number(entry.get("holdout")) else None}
    improved = entry.get("improved")
    if not isinstance(improved, bool):
        improved = (status == "keep" and point is not None and
                    (state.best is None or is_better(point, state.best["metric"], direction)))
    if improved and point is not None:
        samples = _samples_of(entry, point)
        state.best = {"index": index, "metric": point, "commit": entry.get("commit"),
                      "samples": samples, "metrics": metrics, "timestamp": timestamp,
                      "description": entry.get("description"),
                      "holdout": entry.get("holdout") if _is_number(entry.get("holdout")) else None}
        inherited = len(samples) == 1 and bool((state.reference or {}).get("deterministic"))
        state.reference = {"metric": median(samples), "samples": samples, "source": "#%d" % index,
                           "timestamp": timestamp,
                           "deterministic": is_deterministic(samples) or inherited}
        state.progress_at = timestamp
    if state.metric_names is None and status != "crash" and entry.get("metrics") is not None:
        state.metric_names = sorted(metrics)
    state.last = {"index": index, "status": status, "metric": metric, "commit": entry.get("commit"),
                  "description": entry.get("description"), "timestamp": timestamp,
                  "verdict": entry.get("verdict")}
    state.exp_at = timestamp
    conf = entry.get("confidence")
    state.confidence = conf if isinstance(conf, dict) else None
    snap = entry.get("snapshot")
    state.snapshot = snap if isinstance(snap, dict) else None
    state.stop_streak = 0
    if isinstance(entry.get("session_id"), str):
        state.session_id = entry["session_id"]
    return point


def _fold_control(state, entry):
    action = entry.get("action")
    if action == "stop":
        state.active = False
        state.health = "paused"
        state.reason = entry.get("reason") or "stopped by a person"
        state.stopped_by = entry.get("by")
    elif action == "resume":
        state.active = True
        state.health = "running"
        state.mode = "optimize"
        state.failure = state.recovery = None
        state.reason = "resumed"
        state.heals = state.no_improve = state.crash_streak = state.failures = 0
        state.stop_streak = 0
    elif action == "snapshot" and isinstance(entry.get("snapshot"), dict):
        state.snapshot = entry["snapshot"]
    elif action == "repair":
        state.active = True
        state.mode = "repair"
        state.health = "healing"
        state.recovery = "manual_repair"
        state.reason = "manual repair requested"
        state.stop_streak = 0


class Loaded(object):
    """What load_state found: the state, the metric points it folded, and the tail."""

    __slots__ = ("state", "points", "complete", "torn", "rebuilt", "changed")

    def __init__(self, state):
        self.state = state
        self.points = []        # metric points folded by this call
        self.complete = False   # True when `points` holds the whole current segment
        self.torn = b""         # bytes after the last newline: a truncated last line
        self.rebuilt = False
        self.changed = False    # the state differs from the file on disk


def load_state(session):
    """The cached fold, brought up to the end of the log (or rebuilt from it)."""
    try:
        size = os.path.getsize(session.log_path)
    except OSError:
        require_session(session)
        raise
    cached, legacy = None, None
    try:
        with open(session.state_path, "rb") as handle:
            data = json.loads(handle.read().decode("utf-8"), parse_constant=_reject_constant)
        if isinstance(data, dict) and data.get("format") == STATE_FORMAT and _is_int(data.get("log_size")):
            import zlib
            checksum = data.pop("checksum", None)
            if checksum == "%08x" % zlib.crc32(_state_text(data).encode("utf-8")):
                cached = State.from_dict(data)
        elif isinstance(data, dict) and "format" not in data:
            legacy = data
    except (OSError, ValueError, UnicodeDecodeError, TypeError, RecursionError):
        pass
    with open(session.log_path, "rb") as handle:
        if cached is not None and cached.log_size <= size and _tail_matches(handle, cached):
            loaded = Loaded(cached)
            _fold_from(handle, loaded, cached.log_size)
            return loaded
        loaded = Loaded(State())
        loaded.rebuilt = loaded.changed = True
        loaded.complete = True
        _fold_from(handle, loaded, 0)
    state = loaded.state
    if legacy is not None and _is_int(legacy.get("n_exp")) and legacy.get("n_exp") == state.n_exp:
        # a state file of the first implementation: keep what the log cannot tell
        if isinstance(legacy.get("active"), bool):
            state.active = legacy["active"]
        for name in ("resume_count", "resume_at"):
            if _is_int(legacy.get(name)):
                setattr(state, name, legacy[name])
    if state.confidence is None and state.config is not None:
        state.confidence = confidence(sorted(loaded.points), state)
    return loaded


def _tail_matches(handle, cached):
    start = max(0, cached.log_size - 32)
    handle.seek(start)
    return handle.read(cached.log_size - start).hex() == cached.log_tail


def _fold_from(handle, loaded, offset):
    state = loaded.state
    handle.seek(offset)
    for raw in handle:
        if not raw.endswith(b"\n"):
            loaded.torn = raw
            break
        state.lines += 1
        entry = parse_line(raw)
        if entry is None:
            if raw.strip():
                state.bad_lines += 1
                if len(state.bad_line_numbers) < 10:
                    state.bad_line_numbers.append(state.lines)
        else:
            if entry.get("type") == "config":
                loaded.points = []
                loaded.complete = True
            point = fold_entry(state, entry, offset)
            if point is not None:
                loaded.points.append(point)
        offset += len(raw)
        loaded.changed = True
    if offset != state.log_size or loaded.changed:
        state.log_size = offset
        start = max(0, offset - 32)
        handle.seek(start)
        state.log_tail = handle.read(offset - start).hex()


def _state_text(data):
    return json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False, sort_keys=True)


def save_state(session, state):
    """Writes the cache with a checksum, so a hand-edited or damaged file is rebuilt
    instead of trusted. A cache that cannot be written is left stale: the log already
    holds the truth, and the next call catches up."""
    import zlib
    data = state.to_dict()
    data["checksum"] = "%08x" % zlib.crc32(_state_text(data).encode("utf-8"))
    try:
        write_atomic(session.state_path, (_state_text(data) + "\n").encode("utf-8"))
    except OSError:
        return False
    return True


def append_entries(lock, session, loaded, entries):
    """Appends lines under the lock and folds them into the loaded state, then
    writes the state, so the cache always matches the log it was built from."""
    state = loaded.state
    lines = [dumps_line(entry) for entry in entries]
    lock.append(entries)
    offset = state.log_size
    for entry, data in zip(entries, lines):
        point = fold_entry(state, json.loads(data.decode("utf-8")), offset)
        if point is not None:
            loaded.points.append(point)
        offset += len(data)
        state.lines += 1
    state.log_tail = (bytes.fromhex(state.log_tail) + b"".join(lines))[-32:].hex()
    state.log_size = offset
    save_state(session, state)


def persist_if_stale(session, loaded):
    """Read-only commands write back a rebuilt or caught-up state when nobody writes."""
    if not loaded.changed:
        return
    lock = try_lock(session)
    if lock is None:
        return
    with lock:
        try:
            if os.path.getsize(session.log_path) == loaded.state.log_size + len(loaded.torn):
                save_state(session, loaded.state)  # only if nobody appended since our fold
        except OSError:
            pass


def torn_tail_error(session, loaded):
    if loaded.torn:
        fail("torn_log", "%s ends with a truncated line (%d bytes, a write that was cut "
             "short); nothing was written. Run `autotune doctor --fix` to move it aside "
             "into a backup file." % (session.log_path, len(loaded.torn)))


_VALUES_MAGIC = b"ATV1"


def segment_values(session, loaded):
    """The current segment's metric points, sorted (cached in values.bin)."""
    from array import array
    import bisect
    state = loaded.state
    if loaded.complete:
        return array("d", sorted(loaded.points))
    expected = state.metric_points - len(loaded.points)
    try:
        with open(session.cache("values.bin"), "rb") as handle:
            data = handle.read()
        if (data[:4] == _VALUES_MAGIC and int.from_bytes(data[4:8], "little") == state.segment
                and int.from_bytes(data[8:16], "little") == expected
                and len(data) == 16 + 8 * expected):
            values = array("d")
            values.frombytes(data[16:])
            for point in loaded.points:
                bisect.insort(values, point)
            return values
    except OSError:
        pass
    return array("d", sorted(scan_segment_points(session, state)))


def scan_segment_points(session, state):
    points = []
    with open(session.log_path, "rb") as handle:
        handle.seek(state.config_offset or 0)
        scratch = State()
        for raw in handle:
            if not raw.endswith(b"\n"):
                break
            entry = parse_line(raw)
            if entry is None:
                continue
            if entry.get("type") == "config":
                points = []
            point = fold_entry(scratch, entry)
            if point is not None:
                points.append(point)
    return points


def save_values(session, state, values):
    header = (_VALUES_MAGIC + state.segment.to_bytes(4, "little")
              + len(values).to_bytes(8, "little"))
    write_atomic(session.cache("values.bin", create=True), header + values.tobytes())


def load_measurement(session):
    try:
        with open(session.cache("run.json"), "rb") as handle:
            return Measurement.from_dict(json.loads(handle.read().decode("utf-8")))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError, TypeError):
        return None


def save_measurement(session, measurement):
    write_atomic(session.cache("run.json", create=True),
                 json.dumps(measurement.to_dict(), ensure_ascii=False, allow_nan=False).encode("utf-8"))


def drop_measurement(session):
    try:
        os.unlink(session.cache("run.json"))
    except OSError:
        pass


# ------------------------------------------------------------------ metrics ----


# The METRIC grammar, in one place (README "The metric protocol" quotes it):
#
#   line    = [blanks] "METRIC" blanks name [blanks] "=" [blanks] number [blanks]
#   blanks  = one or more spaces or tabs
#   name    = first rest{0,127}     first = A-Z a-z 0-9 _     rest = first or . : / % -
#             (not __proto__, constructor or prototype)
#   number  = [+|-] (digits [. [digits]] | . digits) [(e|E) [+|-] digits]
#             digits = ASCII 0-9 only; finite (1e999, inf, nan, 1_000, 0x1A, ١٢ are not numbers)
#
# Lines are separated by LF, CR or CRLF: a progress bar's `50%\rMETRIC x=5` holds a
# METRIC line. Everything else a benchmark prints is ignored.

METRIC_NAME_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
METRIC_NAME_REST = METRIC_NAME_FIRST | frozenset(".:/%-")
MAX_METRIC_NAME = 128
MAX_METRIC_NAMES = 100       # secondary names kept per run and per result; the rest are counted
_NUMBER_CHARS = frozenset("0123456789+-.eE")
# the grammar as regular expressions (compiled on first use: only `run` scans output)
_NAME_RE = r"[A-Za-z0-9_][A-Za-z0-9_.:/%%-]{0,%d}" % (MAX_METRIC_NAME - 1)
_NUMBER_RE = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_LINE_RE = r"[ \t]*METRIC[ \t]+(%s)[ \t]*=[ \t]*(%s)[ \t]*" % (_NAME_RE, _NUMBER_RE)
_metric_patterns = []
# a unit is shown next to numbers and written into files: letters, digits and a few signs
UNIT_EXTRA = frozenset(" _.,:/%()[]^*°µ+-#")
MAX_UNIT = 32


def metric_patterns():
    """(one line as str, every line of a bytes chunk) compiled from the grammar above."""
    if not _metric_patterns:
        import re
        _metric_patterns.append(re.compile(_LINE_RE))
        _metric_patterns.append(re.compile(
            (r"(?:^|(?<=[\r\n]))%s(?=[\r\n]|\Z)" % _LINE_RE).encode("ascii")))
    return _metric_patterns


def parse_metric_line(line):
    """('name', value) for a physical line holding a line of the METRIC grammar above
    (the last one when carriage returns split it into several), else None."""
    pattern = metric_patterns()[0]
    for part in reversed(line.rstrip("\n").split("\r")):
        match = pattern.fullmatch(part)
        if match is not None and match.group(1) not in RESERVED_METRIC_NAMES:
            number = parse_number(match.group(2))
            if number is not None:
                return match.group(1), number
    return None


def parse_number(text):
    """A finite float from ASCII decimal text (the grammar's `number`), else None:
    float() alone would also take 1_000, inf, nan and non-ASCII digits."""
    if not text or not all(ch in _NUMBER_CHARS for ch in text) or not any(ch.isdigit() for ch in text):
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    return number if _is_number(number) else None


def valid_metric_name(name):
    """A name of the METRIC grammar: safe in a shell word, a Python string, a file, a
    spreadsheet header and a terminal, so no place it is written to can run it."""
    return (isinstance(name, str) and 0 < len(name) <= MAX_METRIC_NAME and name[0] in METRIC_NAME_FIRST
            and all(ch in METRIC_NAME_REST for ch in name) and name not in RESERVED_METRIC_NAMES)


def metric_name_error(flag, name, code="bad_metric_name"):
    fail(code, "%s %s is not a valid metric name: it starts with a letter, digit or _, "
         "then letters, digits and _ . : / %% - (at most %d characters; not __proto__, constructor or "
         "prototype), e.g. time_ms." % (flag, json.dumps(name), MAX_METRIC_NAME))


def valid_unit(unit):
    """A unit (ms, KB, ops/s, µs, °C): letters, digits, spaces and a few signs; no quotes,
    backslashes, $ or backticks, no control characters."""
    return (isinstance(unit, str) and len(unit) <= MAX_UNIT
            and all(ch.isalnum() or ch in UNIT_EXTRA for ch in unit))


class OutputScanner(object):
    """Consumes a process's output in chunks: keeps METRIC values and a bounded tail.
    Works per chunk (bytes.find/rfind), not per line, so a flood of short lines costs
    nothing and memory stays bounded whatever the benchmark prints."""

    def __init__(self, tail_bytes=16384, primary=None):
        self.metrics = {}
        self.primary = primary  # always kept, even after the cap of distinct names
        self.dropped = 0        # METRIC lines with a new name beyond MAX_METRIC_NAMES
        self.partial = b""      # the unterminated last line (at most MAX_LINE_BYTES)
        self.tailbuf = b""      # the last tail_bytes of complete lines
        self.tail_limit = tail_bytes
        self.lines = 0
        self.bytes = 0
        self.cut = False
        self.skip = False       # inside a line longer than MAX_LINE_BYTES

    def feed(self, chunk):
        self.bytes += len(chunk)
        self.lines += chunk.count(b"\n")
        if self.skip:  # drop the rest of an overlong line, up to its end (LF or CR)
            ends = [i for i in (chunk.find(b"\n"), chunk.find(b"\r")) if i >= 0]
            if not ends:
                return
            self.skip = False
            chunk = chunk[min(ends):]
        data = self.partial + chunk
        end = max(data.rfind(b"\n"), data.rfind(b"\r"))
        if end < 0:
            complete, self.partial = b"", data
        else:
            complete, self.partial = data[:end + 1], data[end + 1:]
        if len(self.partial) > MAX_LINE_BYTES:  # keep the head of an endless line
            self.partial = self.partial[:MAX_LINE_BYTES]
            self.skip = self.cut = True
        if complete:
            self._scan(complete)
            self.tailbuf = (self.tailbuf + complete)[-self.tail_limit:]

    def _scan(self, data):
        """Finds the METRIC lines of complete output (a line ends at LF or CR), keeping
        the primary and at most MAX_METRIC_NAMES other names; the rest are counted."""
        if b"METRIC" not in data:
            return
        metrics, primary = self.metrics, self.primary
        for match in metric_patterns()[1].finditer(data):
            name = match.group(1).decode("ascii")
            if name in RESERVED_METRIC_NAMES:
                continue
            if (name not in metrics and name != primary
                    and len(metrics) - (primary in metrics) >= MAX_METRIC_NAMES):
                self.dropped += 1
                continue
            number = parse_number(match.group(2).decode("ascii"))
            if number is not None:
                metrics[name] = number

    def close(self):
        if self.partial:
            self.lines += 1
            self._scan(self.partial)
            self.tailbuf = (self.tailbuf + self.partial + b"\n")[-self.tail_limit:]
            self.partial = b""

    def text(self, max_lines, max_bytes):
        lines = self.tailbuf.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        lines = [line[:MAX_LINE_BYTES] for line in lines[-max_lines:]]
        text = b"\n".join(lines).decode("utf-8", "replace")
        if len(text.encode("utf-8")) > max_bytes:
            text = text.encode("utf-8")[-max_bytes:].decode("utf-8", "ignore")
        return text


# --------------------------------------------------------------- statistics ----


def is_better(value, other, direction):
    return value < other if direction == "lower" else value > other


def median(values):
    ordered = sorted(values)
    count = len(ordered)
    if not count:
        return None
    mid = count // 2
    return ordered[mid] if count % 2 else midpoint(ordered[mid - 1], ordered[mid])


def mad(values):
    """Median absolute deviation from the median (a robust noise scale)."""
    center = median(values)
    return None if center is None else median([abs(v - center) for v in values])


def kth_of_two(first, first_len, second, second_len, k):
    """The k-th smallest (0-based) of two ascending sequences given as accessors."""
    low, high = max(0, k + 1 - second_len), min(k + 1, first_len)
    while low < high:
        taken = (low + high) // 2
        rest = k + 1 - taken
        if rest > 0 and first(taken) < second(rest - 1):
            low = taken + 1
        else:
            high = taken
    rest = k + 1 - low
    best = []
    if low > 0:
        best.append(first(low - 1))
    if rest > 0:
        best.append(second(rest - 1))
    return max(best)


def sorted_mad(ordered):
    """MAD of an ascending sequence in O(log n): deviations form two sorted runs."""
    import bisect
    count = len(ordered)
    if not count:
        return None
    mid = count // 2
    center = ordered[mid] if count % 2 else midpoint(ordered[mid - 1], ordered[mid])
    split = bisect.bisect_left(ordered, center)

    def below(i):
        return center - ordered[split - 1 - i]

    def above(j):
        return ordered[split + j] - center

    below_len, above_len = split, count - split
    if count % 2:
        return kth_of_two(below, below_len, above, above_len, mid)
    return midpoint(kth_of_two(below, below_len, above, above_len, mid - 1),
                    kth_of_two(below, below_len, above, above_len, mid))


def confidence(ordered_values, state):
    """SPEC 7: |best - baseline| / MAD of the segment's metric points."""
    baseline = state.baseline["metric"] if state.baseline else None
    best = state.best["metric"] if state.best else None
    count = len(ordered_values)
    result = {"score": None, "label": "insufficient_data", "best_delta": None,
              "noise_mad": None, "n": count, "infinite": False}
    if count < 3 or baseline is None or best is None:
        return result
    direction = (state.config or {}).get("direction", "lower")
    noise = sorted_mad(ordered_values)
    improvement = (baseline - best) if direction == "lower" else (best - baseline)
    result["best_delta"] = _round(best - baseline)
    result["noise_mad"] = _round(noise)
    if _finite(improvement) is None or _finite(noise) is None:
        result["label"] = "overflow"  # the metrics differ by more than a float holds
        return result
    if noise == 0:
        if improvement > 0:
            result.update(label="high", infinite=True)
        else:
            result.update(label="no_signal")
        return result
    score = _finite(abs(improvement) / noise)
    if score is None:
        result["label"] = "overflow"  # a huge improvement over a denormal noise
        return result
    result["score"] = round(score, 3)
    result["label"] = "high" if score >= 2.0 else "marginal" if score >= 1.0 else "within_noise"
    return result


def u_distribution(n, m):
    """Counts of the Mann-Whitney U statistic over all C(n+m, n) orderings (no ties).

    They are the coefficients of the Gaussian binomial [n+m choose n]_q, built as
    prod_{i=1..n} (1 - q^(m+i)) / (1 - q^i).
    """
    poly = [1]
    for i in range(1, n + 1):
        grown = poly + [0] * (m + i)
        for k, coef in enumerate(poly):
            grown[k + m + i] -= coef
        for k in range(i, len(grown)):
            grown[k] += grown[k - i]
        poly = grown
    return poly[:n * m + 1]


def mann_whitney(candidate, reference, direction):
    """One-sided p-values (candidate better, candidate worse) and the U statistic.

    Exact when there are no ties, else the normal approximation with tie and
    continuity corrections.
    """
    import math
    n, m = len(candidate), len(reference)
    better = (lambda c, r: c < r) if direction == "lower" else (lambda c, r: c > r)
    u = 0.0
    for c in candidate:
        for r in reference:
            u += 1.0 if better(c, r) else 0.5 if c == r else 0.0
    pooled = list(candidate) + list(reference)
    if len(set(pooled)) < len(pooled) and n + m <= 40:
        return _tied_p_values(candidate, reference, direction, u)
    if len(set(pooled)) == len(pooled) and n <= 60 and m <= 60:
        counts = u_distribution(n, m)
        total = float(sum(counts))
        k = int(round(u))
        return sum(counts[k:]) / total, sum(counts[:k + 1]) / total, u
    total_n = n + m
    ties = {}
    for value in pooled:
        ties[value] = ties.get(value, 0) + 1
    tie_term = sum(t ** 3 - t for t in ties.values()) / float(total_n * (total_n - 1))
    variance = n * m / 12.0 * ((total_n + 1) - tie_term)
    if variance <= 0:
        return 1.0, 1.0, u
    sd = math.sqrt(variance)
    mean = n * m / 2.0
    z_better = (u - mean - 0.5) / sd
    z_worse = (u - mean + 0.5) / sd
    return (0.5 * math.erfc(z_better / math.sqrt(2)), 0.5 * math.erfc(-z_worse / math.sqrt(2)), u)


def _tied_p_values(candidate, reference, direction, u):
    """Exact permutation p-values of U with ties (mid-ranks), counting the subsets of
    each tie group: the normal approximation is up to 2x too small for small samples."""
    import math
    n = len(candidate)
    counts = {}
    for value in list(candidate) + list(reference):
        counts[value] = counts.get(value, 0) + 1
    ways, below = {0: {0: 1}}, 0      # chosen candidates -> doubled rank sum -> count
    for value in sorted(counts, reverse=(direction == "lower")):   # worst to best
        size = counts[value]
        rank2 = 2 * below + size + 1                                # doubled mid-rank
        grown = {}
        for have, sums in ways.items():
            for k in range(0, min(size, n - have) + 1):
                weight = math.comb(size, k)
                row = grown.setdefault(have + k, {})
                for total, count in sums.items():
                    row[total + k * rank2] = row.get(total + k * rank2, 0) + count * weight
        ways, below = grown, below + size
    dist = ways.get(n, {})
    target = 2 * u + n * (n + 1)
    total = float(sum(dist.values()))
    return (sum(c for s, c in dist.items() if s >= target - 1e-9) / total,
            sum(c for s, c in dist.items() if s <= target + 1e-9) / total, u)


def min_p_value(n, m):
    """The smallest one-sided p-value an exact U test can reach with these sizes."""
    import math
    return 1.0 / math.comb(n + m, n)


def is_deterministic(samples):
    return len(samples) >= 2 and max(samples) == min(samples)


def robust_sigma(values):
    spread = mad(values) if len(values) >= 3 else None
    return None if spread is None else 1.4826 * spread


def assess(candidate, reference, direction, alpha, min_pct=0.0, noise_mad=None, final=True,
           deterministic=False):
    """Compares candidate samples with the reference (the best's samples).

    Returns (verdict, evidence); verdict None means "ambiguous, more samples may
    decide" (only when final is False). Three methods, chosen by what the data allow:
    exact comparison for a deterministic benchmark, a one-sided Mann-Whitney U test
    when both sides have enough samples to reach alpha, and otherwise a threshold of
    two robust sigmas (from the reference or the segment's MAD).
    """
    cand_med, ref_med = median(candidate), median(reference)
    delta = cand_med - ref_med
    gain = -delta if direction == "lower" else delta
    delta_pct = (delta / abs(ref_med) * 100.0) if ref_med else None
    gain_pct = (gain / abs(ref_med) * 100.0) if ref_med else None
    big_enough = min_pct <= 0 or (gain_pct is not None and gain_pct >= min_pct)
    evidence = {"method": None, "reference": {"median": _round(ref_med), "n": len(reference)},
                "candidate": {"median": _round(cand_med), "n": len(candidate)},
                "delta": _round(delta), "delta_pct": _round(delta_pct, 3) if delta_pct is not None else None,
                "noise": None, "p_value": None, "alpha": _round(alpha)}
    if (deterministic or is_deterministic(reference)) and max(candidate) == min(candidate):
        evidence["method"] = "exact"
        evidence["noise"] = {"sigma": 0, "deterministic": True}
        if gain > 0 and big_enough:
            return "improved", evidence
        return ("worse" if gain < 0 else "within_noise"), evidence
    if min_p_value(len(candidate), len(reference)) > alpha:
        if not final:
            return None, evidence  # the exact test cannot reach alpha yet: sample more
        sigma = robust_sigma(reference)
        if not sigma and noise_mad:
            sigma = 1.4826 * noise_mad
        evidence["method"] = "threshold"
        evidence["noise"] = {"sigma": _round(sigma), "deterministic": False,
                             "threshold": _round(2 * sigma) if sigma else 0}
        limit = 2 * sigma if sigma else 0.0
        if gain > limit and big_enough:
            return "improved", evidence
        if gain < -limit:
            return "worse", evidence
        return "within_noise", evidence
    p_better, p_worse, u = mann_whitney(candidate, reference, direction)
    sigma = robust_sigma(reference)
    evidence["method"] = "mann-whitney"
    evidence["noise"] = {"sigma": _round(sigma), "deterministic": False,
                         "sigma_pct": _round(sigma / abs(ref_med) * 100, 3) if sigma and ref_med else None}
    evidence["p_value"] = _round(p_better, 6)
    evidence["p_worse"] = _round(p_worse, 6)
    evidence["u"] = u
    if p_better <= alpha and gain > 0:
        if big_enough:
            return "improved", evidence
        return "within_noise", evidence
    if p_worse <= alpha and gain < 0:
        return "worse", evidence
    if not final and gain <= 0:
        return "within_noise", evidence  # not even ahead: more samples would not make it a keep
    return ("within_noise" if final else None), evidence


class SamplingPlan(object):
    """How many times to run the benchmark, and when to stop adding samples."""

    __slots__ = ("first", "step", "limit", "alpha", "why", "adaptive", "probe")

    def __init__(self, first, step, limit, alpha, why, adaptive=False, probe=False):
        self.first, self.step, self.limit = first, step, limit
        self.alpha, self.why, self.adaptive, self.probe = alpha, why, adaptive, probe


def sampling_plan(reference, repeat, settings, deterministic=False):
    """Deterministic benchmarks cost one execution after the baseline; noisy ones get
    batches of samples until the test decides, up to a cap (alpha split over looks)."""
    if repeat != "auto":
        return SamplingPlan(repeat, 0, repeat, settings.alpha, "repeat=%d" % repeat)
    limit = max(1, settings.max_samples)
    if not reference:
        return SamplingPlan(min(DEFAULT_PROBE, limit), 0, min(DEFAULT_BATCH, limit), settings.alpha,
                            "baseline: measuring the noise", probe=True)
    if deterministic or is_deterministic(reference):
        return SamplingPlan(1, 0, 1, settings.alpha,
                            "the reference samples are identical (a deterministic benchmark)")
    batch = min(DEFAULT_BATCH, limit)
    looks = 1 + max(0, -(-(limit - batch) // batch))
    return SamplingPlan(batch, batch, limit, settings.alpha / looks,
                        "noisy benchmark", adaptive=True)


def collect_samples(take, plan, reference, direction, settings, noise_mad=None, deterministic=False):
    """The adaptive sampling loop of `run`, over a `take(n)` that measures sample n and
    returns (value, metrics), or None when the benchmark failed (which ends the loop).
    Returns (samples, per-sample metrics, notes on why more samples were taken)."""
    samples, sample_metrics, notes = [], [], []
    target = plan.first
    while len(samples) < target:
        taken = take(len(samples) + 1)
        if taken is None:
            break
        samples.append(taken[0])
        sample_metrics.append(taken[1])
        if len(samples) < target:
            continue
        if plan.probe and not is_deterministic(samples) and target < plan.limit:
            notes.append("the first %d samples differ, so %d more" % (len(samples), plan.limit - len(samples)))
            target = plan.limit
        elif plan.adaptive and reference:
            verdict, evidence = assess(samples, reference, direction, plan.alpha,
                                       settings.min_improvement_pct, noise_mad, final=False,
                                       deterministic=deterministic)
            if verdict is None and target < plan.limit:
                step = min(plan.step, plan.limit - target)
                notes.append("p=%s after %d samples was ambiguous, so %d more" % (
                    _fmt(evidence.get("p_value")), len(samples), step))
                target += step
    return samples, sample_metrics, notes


def median_metrics(sample_metrics, exclude=None):
    """Each secondary metric's median over the samples that reported it."""
    names = sorted({name for metrics in sample_metrics for name in metrics if name != exclude})
    return {name: _round(median([m[name] for m in sample_metrics if name in m])) for name in names}


def regression_pct(value, reference, direction):
    """How much worse `value` is than `reference`, in percent (inf from a zero reference)."""
    worse = value - reference if direction == "lower" else reference - value
    if reference:
        return worse / abs(reference) * 100.0
    return float("inf") if worse > 0 else 0.0


def verdict_of(m, reference, reference_info, direction, settings, noise_mad, alpha, baseline_metrics):
    """The verdict on a measurement and its evidence, before any holdout (pure; sets
    m.guardrails). A `baseline` or `improved` verdict then goes to holdout_verdict."""
    if m.crashed:
        return "crash", None
    if reference:
        verdict, evidence = assess(m.samples, reference, direction, alpha, settings.min_improvement_pct,
                                   noise_mad, final=True, deterministic=bool(reference_info.get("deterministic")))
        evidence["reference"]["source"] = reference_info.get("source")
    else:
        verdict, evidence = "baseline", None
    if m.checks is False:
        return "checks_failed", evidence
    if settings.guardrails:
        breaches = check_guardrails(settings.guardrails, m.metrics, baseline_metrics if reference else None)
        m.guardrails = {"ok": not breaches, "breaches": breaches}
        if breaches:
            return "guardrail_failed", evidence
    return verdict, evidence


def holdout_verdict(verdict, holdout, reference, direction, tolerance_pct):
    """The verdict once the holdout ran (pure; records its judgement in `holdout`): a
    crashed holdout, or one that regressed beyond tolerance against the baseline's,
    fails the candidate."""
    if holdout.get("reason"):
        return "holdout_failed"
    if verdict == "improved" and reference is not None:
        regression = regression_pct(holdout["value"], reference, direction)
        holdout["reference"] = reference
        holdout["regression_pct"] = _round(regression, 3) if regression != float("inf") else None
        if regression > tolerance_pct:
            holdout.update(ok=False, reason="the holdout regressed %.2f%% (allowed %s%%)" % (
                regression, _fmt(tolerance_pct)))
            return "holdout_failed"
    return verdict


def check_guardrails(rules, metrics, baseline_metrics):
    """Breaches of the configured guardrails, each with a sentence naming the metric."""
    breaches = []
    for name in sorted(rules):
        rule = rules[name]
        value = metrics.get(name)
        if not _is_number(value):
            breaches.append({"metric": name, "value": None,
                             "message": "guardrail metric %s was not reported" % name})
            continue
        if rule.get("max") is not None and value > rule["max"]:
            breaches.append({"metric": name, "value": value, "limit": rule["max"],
                             "message": "%s=%s is above its max %s" % (name, _fmt(value), _fmt(rule["max"]))})
        if rule.get("min") is not None and value < rule["min"]:
            breaches.append({"metric": name, "value": value, "limit": rule["min"],
                             "message": "%s=%s is below its min %s" % (name, _fmt(value), _fmt(rule["min"]))})
        base = (baseline_metrics or {}).get(name)
        pct = rule.get("maxRegressionPct")
        if pct is not None and _is_number(base):
            regression = regression_pct(value, base, rule.get("direction", "lower"))
            if regression > pct:
                breaches.append({"metric": name, "value": value, "baseline": base,
                                 "regression_pct": _round(regression, 3) if regression != float("inf") else None,
                                 "message": "%s=%s regressed %s against the baseline %s (allowed %s%%)" % (
                                     name, _fmt(value),
                                     ("%.2f%%" % regression) if regression != float("inf") else "from 0",
                                     _fmt(base), _fmt(pct))})
    return breaches


# ------------------------------------------------------------------- health ----

PLAYBOOK_TEXT = {
    "rebaseline": (
        "Re-measure the current best without any change (`autotune rebaseline`), so the "
        "next verdicts compare against fresh numbers rather than a lucky or drifted best; "
        "then try an idea of a different kind than the last ones."),
    "shrink_scope": (
        "Make smaller changes: one function, one parameter or one file at a time. Re-read "
        "the dead ends in autotune.md, pick the most promising untried idea from "
        "autotune.ideas.md, and cut it down to its smallest testable step."),
    "diagnose": (
        "Stop changing the code under test and find the cause first: read the output tail "
        "of the last run (and chk_out for checks), run ./autotune.sh by hand, and fix the "
        "environment, the benchmark or the checks before the next experiment."),
    "reset_worktree": (
        "Start the next experiment from a clean tree: autotune already reverted the failed "
        "change; check that `git status` shows nothing of it, delete leftovers such as "
        "build artefacts, and start again from the last kept commit."),
    "pause": (
        "The recovery playbooks are used up: stop experimenting and hand the loop to a "
        "person (`autotune explain` tells them why)."),
    "manual_repair": (
        "A person put the loop in repair mode: fix what is broken (the code, the environment; "
        "not the benchmark), `autotune run`, and log a keep to return to optimize mode (or the "
        "person runs `autotune resume`)."),
}


def health_fields(state):
    return {name: getattr(state, name) for name in (
        "active", "mode", "health", "failure", "recovery", "reason", "heals",
        "no_improve", "crash_streak", "keep_streak")}


def choose_playbook(failure, attempt, settings):
    """The attempt-th healing action (1-based) for this failure: escalation through
    the failure's preferred order, keeping only configured playbooks."""
    allowed = [p for p in settings.playbooks if settings.pause_on_exhausted or p != "pause"]
    order = [p for p in FAILURE_PLAYBOOK_ORDER[failure] if p in allowed] or allowed or ["diagnose"]
    return order[min(attempt, len(order)) - 1]


def advance(prev, status, improved, settings):
    """The health machine (SPEC 6): the health fields after one logged result.

    `prev` holds the fields of health_fields(); the answer is a new dict. A `pause`
    playbook pauses the loop; `pauseOnExhaustedRecovery: false` removes it, so the
    loop keeps healing with its last action instead of ever pausing itself.
    """
    nxt = dict(prev)
    nxt.update(active=True, recovery=None)
    if status == "keep":
        nxt.update(no_improve=0, crash_streak=0, keep_streak=prev["keep_streak"] + 1, heals=0,
                   mode="optimize", failure=None,
                   health="improving" if improved else "running",
                   reason="improved" if improved else "kept_no_degrade")
        return nxt
    nxt["no_improve"] = prev["no_improve"] + 1
    nxt["keep_streak"] = 0
    if status == "discard":
        nxt["crash_streak"] = 0
        nxt["reason"] = "no_improve"
        if nxt["no_improve"] >= settings.max_no_improve:
            nxt.update(failure="plateau", health="plateaued")
        else:
            nxt.update(failure=None, health="running")
    else:
        nxt["crash_streak"] = prev["crash_streak"] + 1
        crash = status == "crash"
        nxt.update(failure="benchmark_crash" if crash else "checks_failed", health="crashing",
                   reason="crash" if crash else "checks_failed")
    heal = (nxt["failure"] == "plateau" or
            (nxt["failure"] in ("benchmark_crash", "checks_failed")
             and nxt["crash_streak"] >= settings.max_crash_streak))
    if not heal:
        return nxt
    if prev["heals"] >= settings.max_heals and settings.pause_on_exhausted:
        nxt.update(health="paused", recovery="pause", mode="repair",
                   reason="recovery_exhausted", active=False)
        return nxt
    action = choose_playbook(nxt["failure"], prev["heals"] + 1, settings)
    nxt.update(heals=prev["heals"] + 1, recovery=action, mode="repair", reason="heal:" + action,
               health="healing")
    if action == "pause":
        nxt.update(health="paused", active=False)
    return nxt


def budget_reason(runs, best_metric, direction, settings, started_epoch, now_epoch):
    """Why the loop is complete (iteration count, target value, wall clock), or None."""
    if settings.max_iterations and runs >= settings.max_iterations:
        return "iteration budget reached"
    if settings.target is not None and best_metric is not None:
        reached = (best_metric <= settings.target if direction == "lower"
                   else best_metric >= settings.target)
        if reached:
            return "target reached: best %s %s target %s" % (
                _fmt(best_metric), "<=" if direction == "lower" else ">=", _fmt(settings.target))
    if settings.max_minutes and started_epoch is not None:
        minutes = (now_epoch - started_epoch) / 60.0
        if minutes >= settings.max_minutes:
            return "time budget reached: %.1f of %s minutes used" % (minutes, _fmt(settings.max_minutes))
    return None


def next_action(state):
    """The suggested next step for this state, as (code, what it means in practice)."""
    if state.config is None:
        return "init", "Start a session with `autotune init`."
    if state.health == "completed":
        return "report", ("The loop is complete (%s). Summarize the wins in autotune.md, read "
                          "`autotune report`, and start a new segment with `autotune init` if "
                          "there is more to gain." % (state.reason or "budget reached"))
    if state.health == "paused" or not state.active:
        if state.reason == "recovery_exhausted" or state.recovery == "pause":
            return "manual_repair", (
                "The loop paused itself: its recovery playbooks did not get it moving again. "
                "A person should read the recent results, fix the cause (benchmark, checks, "
                "scope or the idea backlog), then `autotune resume` (or `autotune repair` to "
                "resume in repair mode).")
        return "manual_repair", ("The loop is stopped (%s). Run `autotune resume` to continue "
                                 "it, or `autotune repair` to continue in repair mode."
                                 % (state.reason or "paused"))
    if state.health == "healing" and state.recovery == "rebaseline" and state.rebaselined_at == state.n_exp:
        return "continue", ("The rebaseline is done: the best was re-measured after the last result. Now "
                            "try an idea of a different kind than the last ones.")
    if state.recovery == "manual_repair":
        return "repair", PLAYBOOK_TEXT["manual_repair"]
    if state.health == "healing" and state.recovery:
        return state.recovery, PLAYBOOK_TEXT.get(state.recovery, "Apply the %s playbook." % state.recovery)
    if state.health == "plateaued":
        return "rebaseline", PLAYBOOK_TEXT["rebaseline"]
    if state.health == "crashing":
        return "diagnose", PLAYBOOK_TEXT["diagnose"]
    if state.n_exp == 0:
        return "baseline", ("Measure the baseline: `autotune run` on the unchanged code, then "
                            "`autotune log --status keep --description baseline`.")
    return "continue", ("Pick the next idea, make one focused change, `autotune run`, then "
                        "`autotune log --status auto --description ...`.")


# ---------------------------------------------------------------------- git ----


class GitError(AutotuneError):
    def __init__(self, args, returncode, stderr):
        text = stderr.decode("utf-8", "replace").strip().splitlines()
        detail = text[-1] if text else "exit %s" % returncode
        AutotuneError.__init__(self, "git_error", "git %s failed: %s" % (args[0], detail))




class Repo(object):
    """The few git facts and operations autotune needs; HEAD is read without a process."""

    __slots__ = ("root", "git_dir", "common_dir")  # no cache of HEAD: every call reads it fresh

    def __init__(self, root, git_dir):
        self.root = root
        self.git_dir = git_dir
        common = git_dir
        try:
            with open(os.path.join(git_dir, "commondir")) as handle:
                common = os.path.normpath(os.path.join(git_dir, handle.read().strip()))
        except OSError:
            pass
        self.common_dir = common

    def run(self, args, input=None, env=None, cwd=None, check=True):
        import subprocess
        proc = subprocess.run(["git"] + list(args), input=input, cwd=cwd or self.root,
                              env=env or git_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if check and proc.returncode != 0:
            raise GitError(args, proc.returncode, proc.stderr)
        return proc

    def _head_text(self):
        try:
            with open(os.path.join(self.git_dir, "HEAD"), "rb") as handle:
                return handle.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""

    def head(self):
        """The full hash of HEAD, or None on an unborn branch."""
        text = self._head_text()
        if _is_hash(text):
            return text
        if text.startswith("ref: ") and not os.path.exists(os.path.join(self.common_dir, "reftable")):
            ref = text[5:].strip()
            for base in (self.git_dir, self.common_dir):
                try:
                    with open(os.path.join(base, ref), "rb") as handle:
                        value = handle.read().decode("ascii", "replace").strip()
                    if _is_hash(value):
                        return value
                except OSError:
                    pass
            try:
                with open(os.path.join(self.common_dir, "packed-refs"), "rb") as handle:
                    for line in handle:
                        parts = line.decode("utf-8", "replace").split()
                        if len(parts) == 2 and parts[1] == ref and _is_hash(parts[0]):
                            return parts[0]
            except OSError:
                pass
        proc = self.run(["rev-parse", "-q", "--verify", "HEAD^{commit}"], check=False)
        value = proc.stdout.decode("ascii", "replace").strip()
        return value if proc.returncode == 0 and _is_hash(value) else None

    def branch(self):
        text = self._head_text()
        if text.startswith("ref: refs/heads/"):
            return text[len("ref: refs/heads/"):]
        return None

    def relpath(self, path):
        rel = os.path.relpath(os.path.realpath(path), os.path.realpath(self.root))
        return "" if rel == "." else rel.replace(os.sep, "/")


def _is_hash(text):
    return len(text) in (40, 64) and all(c in "0123456789abcdef" for c in text)


def git_env(**extra):
    env = dict(os.environ)
    for name in ("GIT_INDEX_FILE", "GIT_LITERAL_PATHSPECS", "GIT_GLOB_PATHSPECS",
                 "GIT_NOGLOB_PATHSPECS", "GIT_ICASE_PATHSPECS"):
        env.pop(name, None)
    env.update(LC_ALL="C", LANGUAGE="C", GIT_TERMINAL_PROMPT="0", GIT_OPTIONAL_LOCKS="0")
    env.update(extra)
    return env


def find_repo(path):
    """The repository around `path` (walking up to a .git), or None."""
    if os.environ.get("GIT_DIR") or os.environ.get("GIT_WORK_TREE"):
        import subprocess
        proc = subprocess.run(["git", "rev-parse", "--show-toplevel", "--absolute-git-dir"],
                              cwd=path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        lines = proc.stdout.decode("utf-8", "surrogateescape").splitlines()
        return Repo(lines[0], lines[1]) if proc.returncode == 0 and len(lines) == 2 else None
    probe = os.path.abspath(path)
    while True:
        dotgit = os.path.join(probe, ".git")
        if os.path.isdir(dotgit) and os.path.isfile(os.path.join(dotgit, "HEAD")):
            return Repo(probe, dotgit)
        if os.path.isfile(dotgit):
            try:
                with open(dotgit, "rb") as handle:
                    text = handle.read().decode("utf-8", "surrogateescape").strip()
            except OSError:
                text = ""
            if text.startswith("gitdir:"):
                return Repo(probe, os.path.normpath(os.path.join(probe, text[7:].strip())))
        parent = os.path.dirname(probe)
        if parent == probe:
            return None
        probe = parent


def exclude_locally(repo, path):
    """Keeps a file out of experiments and commits with a line in .git/info/exclude (a
    personal list git reads like .gitignore), unless git already ignores it or tracks it."""
    if repo is None or not _is_inside(path, repo.root):
        return False
    rel = os.path.relpath(os.path.realpath(path), os.path.realpath(repo.root)).replace(os.sep, "/")
    if repo.run(["ls-files", "--error-unmatch", "--", rel], check=False).returncode == 0:
        return False  # tracked: the user's decision
    if repo.run(["check-ignore", "-q", "--", rel], check=False).returncode == 0:
        return False
    exclude = os.path.join(repo.common_dir, "info", "exclude")
    os.makedirs(os.path.dirname(exclude), exist_ok=True)
    with open(exclude, "a", encoding="utf-8") as handle:
        handle.write("\n/%s\n" % "".join("\\" + c if c in "*?[]!#\\ " else c for c in rel))
    return True


def require_repo(session):
    if session.repo is None:
        fail("not_git_repo", "%s is not inside a git repository; autotune commits kept "
             "experiments and reverts the others, so it needs one (run `git init` and make "
             "a first commit)." % session.workdir)
    return session.repo


class Change(object):
    """One path that differs between two snapshot trees (from git diff-tree)."""

    __slots__ = ("old_mode", "new_mode", "old_sha", "new_sha", "status", "path")

    def __init__(self, old_mode, new_mode, old_sha, new_sha, status, path):
        self.old_mode, self.new_mode = old_mode, new_mode
        self.old_sha, self.new_sha = old_sha, new_sha
        self.status, self.path = status, path

    @property
    def name(self):
        return self.path.decode("utf-8", "replace")


def _excluded_paths(session):
    """Pathspecs that keep the protected files (and this script) out of snapshots."""
    specs = [":(exclude,literal)" + name for name in PROTECTED_FILES]
    specs += [":(exclude,glob)" + pattern for pattern in PROTECTED_GLOBS]
    me = os.path.realpath(os.path.abspath(__file__))
    if _is_inside(me, session.workdir):  # a copied autotune.py, and its cached bytecode
        rel = os.path.relpath(me, os.path.realpath(session.workdir))
        specs.append(":(exclude,literal)" + rel)
        specs.append(":(exclude,glob)" + os.path.join(os.path.dirname(rel), "__pycache__", "autotune.*.pyc"))
    return specs


def snapshot_tree(session):
    """The tree of the working directory as it is now (untracked files included,
    ignored and protected files not), written through autotune's own index so the
    user's index is never touched. The index persists, so git re-hashes only what
    changed since the last snapshot."""
    repo = require_repo(session)
    index, env = private_index(session, "snapshot.index")
    if not os.path.exists(index):
        _seed_index(repo, index)
    for attempt in (1, 2):
        proc = repo.run(["add", "-A", "--ignore-errors", "--", "."] + _excluded_paths(session),
                        env=env, cwd=session.workdir, check=False)
        if proc.returncode != 0 and b"fatal:" in proc.stderr:
            if attempt == 2:
                raise GitError(["add"], proc.returncode, proc.stderr)
            _reset_index(repo, index)
            continue
        tree = repo.run(["write-tree"], env=env, check=False)
        if tree.returncode == 0:
            return tree.stdout.decode("ascii").strip()
        if attempt == 2:
            raise GitError(["write-tree"], tree.returncode, tree.stderr)
        _reset_index(repo, index)


def _seed_index(repo, index):
    import shutil
    source = os.path.join(repo.git_dir, "index")
    if os.path.isfile(source):
        shutil.copy2(source, index)  # keep the mtime: git's racy-entry check depends on it


def _reset_index(repo, index):
    try:
        os.unlink(index)
    except OSError:
        pass
    if repo.head():
        repo.run(["read-tree", "HEAD"], env=git_env(GIT_INDEX_FILE=index))


def diff_trees(session, base, current, tracked_only=False):
    """The paths inside the working directory that differ between two trees
    (with tracked_only, not the ones `current` adds)."""
    if base == current:
        return []
    import fnmatch
    proc = session.repo.run(["diff-tree", "-r", "-z", "--no-renames", base, current])
    fields = proc.stdout.split(b"\0")
    prefix = session.repo.relpath(session.workdir).encode("utf-8", "surrogateescape")
    top = prefix + b"/" if prefix else b""
    protected = {top + name.encode() for name in PROTECTED_FILES}
    changes = []
    i = 0
    while i + 1 < len(fields):
        meta = fields[i]
        if not meta.startswith(b":"):
            i += 1
            continue
        old_mode, new_mode, old_sha, new_sha, status = meta[1:].split(b" ")
        path = fields[i + 1]
        i += 2
        if prefix and not path.startswith(top):
            continue
        rest = path[len(top):]
        if path in protected or (b"/" not in rest and any(
                fnmatch.fnmatch(os.fsdecode(rest), glob) for glob in PROTECTED_GLOBS)):
            continue  # whatever an index holds, session files are never the experiment's
        if tracked_only and old_mode == b"000000":
            continue
        changes.append(Change(old_mode, new_mode, old_sha, new_sha, status.decode("ascii"), path))
    return changes


def _identity_retry(repo, args, **kwargs):
    """Runs a committing git command; with no user identity configured, uses autotune's."""
    proc = repo.run(args, check=False, **kwargs)
    if proc.returncode != 0 and (b"identity" in proc.stderr or b"tell me who you are" in proc.stderr
                                 or b"empty ident" in proc.stderr):
        env = dict(kwargs.pop("env", None) or git_env())
        env.update(GIT_AUTHOR_NAME="autotune", GIT_AUTHOR_EMAIL="autotune@localhost",
                   GIT_COMMITTER_NAME="autotune", GIT_COMMITTER_EMAIL="autotune@localhost")
        proc = repo.run(args, check=False, env=env, **kwargs)
    if proc.returncode != 0:
        raise GitError(args, proc.returncode, proc.stderr)
    return proc


def private_index(session, name):
    """The environment for git to use one of autotune's own index files (a lock file
    left by a killed process is removed: callers hold the session lock)."""
    index = session.cache(name, create=True)
    try:
        os.unlink(index + ".lock")
    except OSError:
        pass
    return index, git_env(GIT_INDEX_FILE=index)


def _index_records(entries):
    """`git update-index -z --index-info` input for (mode, sha, path) entries; a 000000
    mode removes the path."""
    return b"".join((b"0 " + b"0" * len(sha) if mode == b"000000" else mode + b" " + sha)
                    + b"\t" + path + b"\0" for mode, sha, path in entries)


def commit_changes(session, changes, message):
    """Commits the measured contents of the experiment's paths on top of HEAD through a
    private index: no pathspecs, hooks or --only semantics, and what is committed is what
    the snapshot measured. The user's index then agrees with the new HEAD for those paths;
    their other staged work stays staged. Returns the new HEAD, or None when HEAD already
    holds exactly this tree."""
    repo = session.repo
    head = repo.head()
    _, env = private_index(session, "commit.index")
    repo.run(["read-tree"] + ([head] if head else ["--empty"]), env=env)
    records = _index_records((c.new_mode, c.new_sha, c.path) for c in changes)
    repo.run(["update-index", "-z", "--index-info"], input=records, env=env)
    tree = repo.run(["write-tree"], env=env).stdout.decode().strip()
    if head and tree == head_tree(repo, head):
        return None
    commit = _identity_retry(repo, ["commit-tree", tree, "-F", "-"] + (["-p", head] if head else []),
                             input=message.encode("utf-8", "surrogateescape")).stdout.decode().strip()
    repo.run(["update-ref", "-m", "autotune: keep", "HEAD", commit, head or "0" * len(commit)])
    repo.run(["update-index", "-z", "--index-info"], input=records, check=False)
    return commit


def anchor_snapshot(session, tree):
    """Keeps the snapshot safe from `git gc`: for untracked files it is the only copy."""
    session.repo.run(["update-ref", "--no-deref", "refs/autotune/snapshot/" +
                      os.path.basename(session.cache_dir), tree])


def ignored_by_base(session, base, paths):
    """The paths that the .gitignore files of tree `base` ignore (with the repository's
    own excludes): a file the user had ignored stays the user's, whatever an experiment
    did to .gitignore."""
    import tempfile
    repo = session.repo
    names = [n for n in repo.run(["ls-tree", "-r", "-z", "--name-only", base]).stdout.split(b"\0")
             if n == b".gitignore" or n.endswith(b"/.gitignore")]
    with tempfile.TemporaryDirectory(prefix="autotune-ignore-") as rules:
        for name in names:
            target = os.path.join(rules, os.fsdecode(name))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as handle:
                handle.write(repo.run(["cat-file", "blob", "%s:%s" % (base, os.fsdecode(name))]).stdout)
        proc = repo.run(["--work-tree=" + rules, "check-ignore", "--no-index", "-z", "--stdin"],
                        input=b"".join(p + b"\0" for p in paths), check=False)
    return set(proc.stdout.split(b"\0")) - {b""}


def without_users_ignored(session, base, changes):
    """Drops the files an experiment seems to create only because it edited .gitignore."""
    if not any(c.path.rsplit(b"/", 1)[-1] == b".gitignore" for c in changes):
        return changes
    created = [c.path for c in changes if c.old_mode == b"000000"]
    users = ignored_by_base(session, base, created) if created else set()
    return [c for c in changes if c.path not in users]


def save_discarded(session, base_tree, current_tree, label, description):
    """Keeps a discarded experiment reachable: a commit of the worktree before it and a
    child commit of the worktree with it, so `git show REF` is exactly the change."""
    repo = session.repo
    head = repo.head()
    parents = ["-p", head] if head else []
    before = _identity_retry(repo, ["commit-tree", base_tree] + parents + [
        "-m", "autotune: working tree before experiment %s" % label]).stdout.decode().strip()
    after = _identity_retry(repo, ["commit-tree", current_tree, "-p", before, "-m",
                                   "autotune discarded %s: %s" % (label, _one_line(description, 200))]
                            ).stdout.decode().strip()
    zero = "0" * len(after)
    for attempt in range(1, 100):  # create-only: a ref left by a killed `log` is never replaced
        ref = "refs/autotune/discarded/%s%s" % (label, "" if attempt == 1 else "-%d" % attempt)
        if repo.run(["update-ref", "-m", "autotune discard", ref, after, zero], check=False).returncode == 0:
            return ref
    raise GitError(["update-ref"], 1, b"cannot create a discard ref for " + label.encode())


def restore_changes(session, changes):
    """Returns the changed paths to their snapshot state: modified and deleted files get
    their old content back, files the experiment created are removed, submodules are left
    alone (reported by the caller). Directories are never removed: an empty one is
    invisible to git, and it may be the user's."""
    repo = session.repo
    _, env = private_index(session, "snapshot.index")
    files = [c for c in changes if b"160000" not in (c.old_mode, c.new_mode)]
    if files:
        repo.run(["update-index", "-z", "--index-info"], env=env,
                 input=_index_records((c.old_mode, c.old_sha, c.path) for c in files))
    checkout = [c.path for c in files if c.old_mode != b"000000"]
    if checkout:
        repo.run(["checkout-index", "-f", "-u", "-z", "--stdin"],
                 input=b"\0".join(checkout) + b"\0", env=env)
    for change in files:
        if change.old_mode == b"000000":
            full = os.path.join(repo.root, os.fsdecode(change.path))
            try:
                if os.path.islink(full) or os.path.isfile(full):
                    os.unlink(full)
            except OSError:
                pass


# ------------------------------------------------------------------ running ----


def _kill_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _reap_group(pgid, grace):
    """Ends what is left of a process group: TERM, a grace period, then KILL."""
    import signal
    if not _kill_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        time.sleep(0.02)
        if not _kill_group(pgid, 0):
            return
    _kill_group(pgid, signal.SIGKILL)


def _kill_tagged(token):
    """SIGKILLs the processes whose environment carries this run's token: descendants
    that left the process group (setsid, daemonizing servers). Linux /proc only."""
    import signal
    needle = b"AUTOTUNE_RUN_TOKEN=" + token.encode()
    try:
        names = os.listdir("/proc")
    except OSError:
        return
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % name, "rb") as handle:
                if needle in handle.read().split(b"\0"):
                    os.kill(int(name), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def _drain(poller, fd, scanner, limit=1 << 20):
    """Reads what is already buffered in the pipe (no waiting), up to `limit` bytes."""
    taken = 0
    while taken < limit and poller.poll(0):
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return
        taken += len(chunk)
        scanner.feed(chunk)


# Descendants that escape. A benchmark's processes run in their own process group, which
# a timeout kills. What leaves the group (setsid, a daemon) and even clears its
# environment (`setsid env -i sleep 3333 &`) is still found: on Linux autotune makes
# itself a child subreaper (prctl PR_SET_CHILD_SUBREAPER, through ctypes), so an orphaned
# descendant is re-parented to autotune instead of init, and the sweep kills every
# process below autotune in /proc, repeatedly, until none is left. Limits: a descendant
# that outlives a SIGKILLed autotune goes to init (nothing can follow it then); on other
# systems, or where prctl is refused, the sweep falls back to the process group and the
# AUTOTUNE_RUN_TOKEN environment variable, which a process can shed.

PR_SET_CHILD_SUBREAPER = 36
_subreaper = []  # [True/False] once tried


def become_subreaper():
    """Makes this process the reaper of its orphaned descendants (Linux); True if so."""
    if not _subreaper:
        ok = False
        if sys.platform.startswith("linux"):
            try:
                import ctypes
                libc = ctypes.CDLL(None, use_errno=True)
                ok = libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
            except (ImportError, OSError, AttributeError, TypeError):
                ok = False
        _subreaper.append(ok)
    return _subreaper[0]


def _process_table():
    """{pid: (ppid, state)} of every process, from /proc; {} where there is none."""
    table = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return table
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as handle:
                stat = handle.read()
            fields = stat[stat.rindex(b")") + 2:].split()
            table[int(name)] = (int(fields[1]), fields[0])
        except (OSError, ValueError, IndexError):
            pass
    return table


def descendants(root, exclude=()):
    """[(pid, state)] of the processes below `root` (a breadth-first walk of /proc),
    without the subtrees of the pids in `exclude`."""
    children = {}
    for pid, (ppid, state) in _process_table().items():
        children.setdefault(ppid, []).append((pid, state))
    found, queue = [], [root]
    while queue:
        for pid, state in children.get(queue.pop(), ()):
            if pid not in exclude:
                found.append((pid, state))
                queue.append(pid)
    return found


def kill_descendants(exclude=(), rounds=50):
    """SIGKILLs every live process below this one, reaping the zombies re-parented to
    it, until none is left (killing a parent hands its children to this process)."""
    import signal
    me = os.getpid()
    for _ in range(rounds):
        found = descendants(me, exclude)
        alive = [pid for pid, state in found if state not in (b"Z", b"X")]
        for pid, state in found:
            if state in (b"Z", b"X"):
                try:
                    os.waitpid(pid, os.WNOHANG)
                except OSError:  # not our child: its own parent reaps it
                    pass
        if not alive:
            return
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.01)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP while benchmarks run: unwind like Ctrl-C, so they are killed."""

    def __init__(self, signum):
        KeyboardInterrupt.__init__(self, signum)
        self.exit_code = 128 + signum


class ProcessSweep(object):
    """Context for a command that runs benchmarks: on the way out (normal, error,
    Ctrl-C, SIGTERM, SIGHUP) every process the benchmarks left is killed: all
    descendants of autotune (a subreaper on Linux, see above) and, as a fallback, every
    process carrying this run's token in its environment."""

    def __init__(self):
        self.token = "%d-%d" % (os.getpid(), time.monotonic_ns())
        self.before = ()

    def __enter__(self):
        import signal

        def terminate(signum, frame):
            raise Terminated(signum)
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, terminate)
        become_subreaper()
        # children this process had before (none on the command line) are not the sweep's
        self.before = frozenset(pid for pid, _ in descendants(os.getpid()))
        return self

    def __exit__(self, *exc):
        self.sweep()
        return False

    def sweep(self):
        kill_descendants(self.before)
        _kill_tagged(self.token)


def run_process(command, cwd, timeout, shell=False, env=None, tail_lines=OUTPUT_TAIL_LINES,
                tail_bytes=OUTPUT_TAIL_BYTES, sweep=None, primary=None):
    """Runs a benchmark-like command in its own process group, streaming its output
    (only METRIC lines and a bounded tail are kept), killing the whole group when the
    deadline passes (also after it closed its output), and leaving no background
    process behind (with `sweep`, the escaped ones are killed when the sweep ends;
    without it, right away)."""
    import select
    import signal
    import subprocess
    started = time.monotonic()
    outcome = Outcome()
    own_sweep = sweep is None
    if own_sweep:
        sweep = ProcessSweep()
        become_subreaper()
        sweep.before = frozenset(pid for pid, _ in descendants(os.getpid()))
    env = dict(os.environ if env is None else env, AUTOTUNE_RUN_TOKEN=sweep.token)
    try:
        proc = subprocess.Popen(command, shell=shell, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    except OSError as exc:
        outcome.error = "could not start %s: %s" % (command if shell else command[0], exc.strerror or exc)
        outcome.exit = 127
        return outcome
    scanner = OutputScanner(tail_bytes=max(tail_bytes * 4, 16384), primary=primary)
    fd = proc.stdout.fileno()
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    deadline = started + timeout
    exited_at = None   # when the benchmark's own process ended (or was killed)
    eof = False        # its output closed: it may still run (`exec >/dev/null 2>&1; sleep`)
    try:
        while True:
            now = time.monotonic()
            if exited_at is None and proc.poll() is not None:
                _reap_group(proc.pid, 1.0)
                exited_at = time.monotonic()
            if exited_at is None and now >= deadline:
                outcome.timeout = True
                _kill_group(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=2.0)
                except subprocess.TimeoutExpired:
                    pass
                _kill_group(proc.pid, signal.SIGKILL)
                proc.wait()
                exited_at = time.monotonic()
            if exited_at is not None and (eof or time.monotonic() > exited_at + 1.0):
                if not eof:
                    _drain(poller, fd, scanner)
                break  # done, or the pipe is held by a process outside the group
            if eof:  # nothing more to read: wait for the exit, never past the deadline
                try:
                    proc.wait(timeout=max(0.01, min(deadline - now, 0.5)))
                except subprocess.TimeoutExpired:
                    pass
                continue
            budget = (deadline - now) if exited_at is None else 0.2
            if not poller.poll(max(0.0, min(budget, 0.5)) * 1000):
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                eof = True
                continue
            scanner.feed(chunk)
    finally:
        proc.stdout.close()
        if proc.returncode is None:
            _kill_group(proc.pid, signal.SIGKILL)
            proc.wait()
        if own_sweep:
            sweep.sweep()
    scanner.close()
    outcome.exit = proc.returncode
    outcome.dur = round(time.monotonic() - started, 3)
    outcome.metrics = scanner.metrics
    outcome.dropped = scanner.dropped
    outcome.output = scanner.text(tail_lines, tail_bytes)
    return outcome


def benchmark_env(**extra):
    """The caller's environment without the variables that make a shell run other code
    first (BASH_ENV, ENV, exported functions): a way to fake any benchmark's output."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("BASH_ENV", "ENV") and not k.startswith("BASH_FUNC_")}
    env["AUTOTUNE"] = "1"
    env.update(extra)
    return env


def script_argv(path):
    return [path] if os.access(path, os.X_OK) else ["bash", path]


_SHELLS = ("bash", "sh", "/bin/bash", "/bin/sh", "/usr/bin/bash", "/usr/bin/sh")


def is_benchmark_command(command, workdir):
    """True only when `command` runs exactly ./autotune.sh: anchored, so
    `evil; ./autotune.sh` or `./autotune.sh && x` are not the benchmark."""
    import shlex
    if not isinstance(command, str) or any(ch in command for ch in "\n\r`$;&|<>(){}*?!#~\\"):
        return False
    try:
        tokens = shlex.split(command)
    except ValueError:
        return False
    if len(tokens) == 2 and tokens[0] in _SHELLS:
        path = tokens[1]
    elif len(tokens) == 3 and tokens[0] == "/usr/bin/env" and tokens[1] in ("bash", "sh"):
        path = tokens[2]
    elif len(tokens) == 1:
        path = tokens[0]
    else:
        return False
    return _same_path(os.path.join(workdir, path), os.path.join(workdir, BENCH_FILE))


# ------------------------------------------------------ arguments and output ----


def text_arg(value, flag, allow_empty=False, limit=MAX_TEXT_CHARS):
    """A text argument as data: any Unicode, quotes and newlines kept verbatim; only
    what cannot be stored (invalid UTF-8, NUL) or is absurdly long is refused."""
    if value is None:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        fail("bad_text", "%s is not valid UTF-8 text." % flag)
    if "\0" in value:
        fail("bad_text", "%s contains a NUL character." % flag)
    if not allow_empty and not value.strip():
        fail("bad_text", "%s must not be empty." % flag)
    if len(value) > limit:
        fail("bad_text", "%s is %d characters long; the limit is %d." % (flag, len(value), limit))
    return value


def number_arg(text, flag):
    import math
    try:
        value = float(text)
    except (TypeError, ValueError):
        fail("bad_number", "%s must be a number, got %s." % (flag, json.dumps(text)))
    if not math.isfinite(value):
        fail("bad_number", "%s must be a finite number, got %s." % (flag, json.dumps(text)))
    return value


def json_arg(text, flag):
    if text is None:
        return None
    text_arg(text, flag, allow_empty=True, limit=MAX_JSON_ARG_CHARS)
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        fail("bad_json", "%s is not valid JSON (%s)." % (flag, exc))
    except RecursionError:
        fail("bad_json", "%s is nested too deeply." % flag)
    if not isinstance(value, dict):
        fail("bad_json", "%s must be a JSON object, got %s." % (flag, type(value).__name__))
    if _json_depth(value) > 64:
        fail("bad_json", "%s is nested more than 64 levels deep." % flag)
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        fail("bad_json", "%s contains an escaped lone surrogate (\\ud800-\\udfff), which is not text." % flag)
    return value


def _json_depth(value):
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def metrics_arg(text, flag="--metrics"):
    value = json_arg(text, flag)
    if value is None:
        return None
    if len(value) > MAX_METRIC_NAMES:
        fail("bad_metrics", "%s has %d metrics; at most %d are kept per result." % (
            flag, len(value), MAX_METRIC_NAMES))
    for name, number in value.items():
        if not valid_metric_name(name):
            metric_name_error(flag + ":", name, "bad_metrics")
        if not _is_number(number):
            fail("bad_metrics", "%s: %s must be a finite number, got %s." % (
                flag, name, json.dumps(number)))
    return {name: float(number) if isinstance(number, float) else number for name, number in value.items()}


def same_number(a, b):
    return a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b))


# JSON escapes C0 controls itself; DEL and the C1 range (0x9b is a one-byte CSI) it
# writes raw unless told to escape all of non-ASCII, so they are escaped here.
_JSON_C1 = {code: "\\u%04x" % code for code in range(0x7f, 0xa0)}


def output(obj):
    """One JSON object on stdout (agent-facing commands): no raw control character in
    it, so it is safe on a terminal too."""
    data = json.dumps(obj, ensure_ascii=False, allow_nan=False)
    if not data.isascii() or "\x7f" in data:  # both fast: most output needs no translation
        data = data.translate(_JSON_C1)
    data += "\n"
    sys.stdout.buffer.write(data.encode("utf-8", "replace"))
    sys.stdout.flush()


def say(text, stream=None, painted=False):
    """Prints text for a person. Everything passes strip_controls, except text a
    renderer already built from cleaned values and painted with its own colours."""
    stream = stream or sys.stdout
    if not painted:
        text = strip_controls(text)
    data = text if text.endswith("\n") else text + "\n"
    encoding = getattr(stream, "encoding", None) or "utf-8"
    stream.buffer.write(data.encode(encoding, "replace"))
    stream.flush()


# ----------------------------------------------------------------- commands ----


def file_hashes(session):
    import hashlib
    hashes = {}
    for name in INTEGRITY_FILES:
        try:
            with open(session.path(name), "rb") as handle:
                hashes[name] = hashlib.sha256(handle.read()).hexdigest()
        except OSError:
            pass
    return hashes


def check_integrity(session, state, current=None):
    """A benchmark changed within a segment would move the goalposts: refuse. It may be
    edited freely until the baseline is logged; from then on it is fixed."""
    recorded = state.hashes
    if not isinstance(recorded, dict) or state.n_exp == 0:
        return
    current = current if current is not None else file_hashes(session)
    for name in INTEGRITY_FILES:
        if recorded.get(name) != current.get(name):
            what = ("was added" if name not in recorded else "was removed" if name not in current
                    else "changed")
            fail("benchmark_changed", "%s %s since the baseline of segment %d; a segment measures "
                 "with one benchmark. Start a new segment with it: %s" % (
                     name, what, state.segment, init_command(state.config or {})))


def init_command(config):
    """The `autotune init` line that starts a segment like this config's, every argument
    quoted so that pasting it runs exactly that command."""
    args = ["autotune", "init", "--name", config.get("name") or "loop",
            "--metric", config.get("metric_name") or "METRIC_NAME"]
    if config.get("metric_unit"):
        args += ["--unit", config["metric_unit"]]
    args += ["--direction", config.get("direction") or "lower"]
    return " ".join(_shell_quote(arg) for arg in args)


def environment(head):
    """Facts that let a later reader tell machine drift from progress."""
    env = {"python": "%d.%d.%d" % sys.version_info[:3], "implementation": sys.implementation.name,
           "cpus": os.cpu_count(), "commit": head[:7] if head else None}
    try:
        uname = os.uname()
        env["os"] = "%s %s %s" % (uname.sysname, uname.release, uname.machine)
        env["host"] = uname.nodename
    except AttributeError:
        env["os"] = sys.platform
    try:
        env["load"] = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        env["load"] = None
    env["cpu"] = None
    try:
        with open("/proc/cpuinfo", "rb") as handle:
            for raw in handle:
                if raw.startswith((b"model name", b"Model", b"cpu model", b"Hardware")):
                    env["cpu"] = raw.split(b":", 1)[1].strip().decode("utf-8", "replace")
                    break
    except OSError:
        pass
    return env


def benchmark_command(session, command):
    """(argv-or-string, shell, shown) for the benchmark; refuses what is not it."""
    bench = session.path(BENCH_FILE)
    if os.path.isfile(bench):
        if command is not None and not is_benchmark_command(command, session.workdir):
            fail("refused_command", "%s is not the benchmark: while %s exists, `run` runs only "
                 "./%s (anchored; no extra commands, arguments or wrappers)." % (
                     json.dumps(command), BENCH_FILE, BENCH_FILE))
        return script_argv(bench), False, command or "./" + BENCH_FILE
    if command is None:
        fail("no_benchmark", "No benchmark: %s does not exist in %s. Write it (it prints lines "
             "like `METRIC %s=<number>`) or pass --command." % (
                 BENCH_FILE, session.workdir, "metric"))
    text_arg(command, "--command")
    return command, True, command


def require_config(session, state):
    if state.config is None:
        fail("no_session", "%s has no config line; run `autotune init` first." % session.log_path)


def require_metric_name(state):
    """The segment's primary metric name, which must be one a benchmark can print under
    the METRIC grammar (a log from before it, or edited by hand, may hold another)."""
    name = state.config.get("metric_name")
    if not valid_metric_name(name):
        config = dict(state.config, metric_name="NEW_NAME")
        fail("bad_metric_name", "The segment's metric name %s is not a valid metric name (a "
             "letter, digit or _, then letters, digits and _ . : / %% -), so no METRIC line can report "
             "it. Start a new segment with a valid one: %s" % (json.dumps(name), init_command(config)))
    return name


def check_active(session, state, logging=False):
    """`run` needs an active loop with budget left. `log` records what `run` measured, so
    only the iteration count stops it: time and target budgets end the loop once the
    result is recorded."""
    require_config(session, state)
    if not state.active:
        _, advice = next_action(state)
        fail("inactive", "The loop is not active (health %s, reason %s)%s. %s" % (
            state.health, state.reason or "-", "; nothing was logged" if logging else "", advice))
    limit = session.settings.max_iterations
    reason = (("%d results, its iteration budget" % state.n_exp) if limit and state.n_exp >= limit
              else None) if logging else spent_budget(session, state)
    if reason:
        fail("budget_spent", "The budget of segment %d is spent (%s); raise it in %s or start a "
             "new segment with `autotune init`." % (state.segment, reason, CONFIG_FILE))


def spent_budget(session, state):
    direction = state.config.get("direction", "lower")
    best = state.best["metric"] if state.best else None
    return budget_reason(state.n_exp, best, direction, session.settings,
                         iso_to_epoch(state.started_at), time.time())


def cmd_init(args):
    session = find_session()
    name = text_arg(args.name, "--name")
    unit = text_arg(args.unit or "", "--unit", allow_empty=True)
    if not valid_metric_name(args.metric):
        metric_name_error("--metric", args.metric)
    if not valid_unit(unit):
        fail("bad_unit", "--unit %s is not a valid unit: at most %d letters, digits, spaces and "
             "%s (e.g. ms, KB, ops/s, µs)." % (json.dumps(unit, ensure_ascii=False), MAX_UNIT, " ".join(sorted(UNIT_EXTRA - {" "}))))
    if args.benchmark is not None:
        text_arg(args.benchmark, "--benchmark")
    if args.checks is not None:
        text_arg(args.checks, "--checks")
    repo = require_repo(session)
    created_log = not os.path.exists(session.log_path)
    scaffolded = scaffold(session, name, args.metric, unit, args.direction, args.benchmark,
                          args.checks) if args.scaffold else []
    try:
        with LogLock(session, create=True) as lock:
            loaded = load_state(session)
            torn_tail_error(session, loaded)
            state = loaded.state
            reinit = state.config is not None
            segment = state.segment if (reinit and state.n_exp == 0) else state.segment + 1
            if not reinit:
                exclude_locally(repo, session.state_path)  # a cache, never anybody's work
            snapshot = {"tree": snapshot_tree(session), "head": repo.head()}
            anchor_snapshot(session, snapshot["tree"])
            entry = {"type": "config", "name": name, "metric_name": args.metric, "metric_unit": unit,
                     "direction": args.direction, "segment": segment, "mode": session.settings.mode,
                     "objective": {"primaryMetric": args.metric, "direction": args.direction}}
            for section in ("health", "recovery", "budget", "evaluator", "guardrails", "holdout"):
                if section in session.settings.raw:
                    entry[section] = session.settings.raw[section]
            if session.settings.max_iterations:
                entry["maxIterations"] = session.settings.max_iterations
            entry.update(timestamp=utc_now(), session_id=os.environ.get("CLAUDE_CODE_SESSION_ID"),
                         hashes=file_hashes(session), snapshot=snapshot, version=VERSION)
            append_entries(lock, session, loaded, [entry])
            from array import array
            save_values(session, state, array("d"))
            drop_measurement(session)
    except BaseException:
        if created_log and os.path.exists(session.log_path) and os.path.getsize(session.log_path) == 0:
            os.unlink(session.log_path)
        raise
    result = {"status": "initialized", "name": name, "metric": args.metric, "unit": unit,
              "direction": args.direction, "segment": segment, "reinit": reinit,
              "path": session.workdir, "max_exp": session.settings.max_iterations,
              "mode": state.mode, "branch": repo.branch(), "commit": (snapshot["head"] or "")[:7] or None}
    if args.scaffold:
        result["scaffolded"] = scaffolded
    if not os.path.isfile(session.path(BENCH_FILE)):
        result["warning"] = "%s does not exist yet; `run` needs it (or --command)." % BENCH_FILE
    elif not snapshot["head"]:
        result["warning"] = "the repository has no commit yet: the first keep becomes its first commit"
    output(result)


_TIME_UNITS = {"s": 1.0, "sec": 1.0, "seconds": 1.0, "ms": 1e3, "us": 1e6, "µs": 1e6, "ns": 1e9}


def scaffold(session, name, metric, unit, direction, workload, checks):
    """Writes the session templates that do not exist yet; never overwrites a file.
    Values are quoted where they land (shlex.quote in shell, repr in Python, JSON in
    comments), never pasted into code; only --benchmark and --checks, which are the
    user's commands, are written as commands."""
    import shlex
    written = []

    def write(filename, text, executable=False):
        path = session.path(filename)
        if os.path.exists(path):
            return
        with open(path, "x", encoding="utf-8") as handle:
            handle.write(text)
        if executable:
            os.chmod(path, 0o755)
        written.append(filename)

    scale = _TIME_UNITS.get(unit or ("ms" if metric.endswith("_ms") else "s" if metric.endswith("_s") else ""))
    header = ("#!/usr/bin/env bash\n"
              "# autotune benchmark for %s.\n"
              "# Prints `METRIC %s=<number>` (%s is better); other METRIC lines are secondary\n"
              "# metrics. Edit it until the baseline is logged; from then on it is fixed for the\n"
              "# segment (`autotune init` again starts a new segment with a changed benchmark).\n"
              "set -euo pipefail\ncd \"$(dirname \"$0\")\"\n\n") % (
                  json.dumps(name, ensure_ascii=False).translate(_JSON_C1), metric, direction)
    if workload and scale:
        body = ("WORKLOAD=%s\n"
                "python3 - \"$WORKLOAD\" <<'PY'\n"
                "import subprocess, sys, time\n"
                "start = time.perf_counter()\n"
                "done = subprocess.run(sys.argv[1], shell=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)\n"
                "elapsed = time.perf_counter() - start\n"
                "if done.returncode != 0:  # show why: the tail of the workload's output\n"
                "    tail = done.stdout.decode(\"utf-8\", \"replace\").splitlines()[-40:]\n"
                "    print(\"\\n\".join(tail))\n"
                "    sys.exit(\"workload failed with exit code %%d\" %% done.returncode)\n"
                "print(%r + format(elapsed * %r, \".6g\"))\n"
                "PY\n") % (shlex.quote(workload), "METRIC %s=" % metric, scale)
    elif workload:
        body = ("# The workload; make it print the METRIC line.\n%s\n" % workload)
    else:
        body = ("echo \"autotune.sh is still the template: replace it with the workload and a "
                "'METRIC %s=<number>' line\" >&2\nexit 1\n\n"
                "# Example (bundle size in KB, two decimals):\n"
                "#   npm run build >/dev/null\n"
                "#   echo \"METRIC %s=$(wc -c < dist/bundle.js | awk '{printf \"%%.2f\", $1 / 1024}')\"\n") % (
                    metric, metric)
    write(BENCH_FILE, header + body, executable=True)
    if checks:
        write(CHECKS_FILE, "#!/usr/bin/env bash\n# Correctness checks: a non-zero exit makes the "
              "experiment checks_failed (reverted).\nset -euo pipefail\ncd \"$(dirname \"$0\")\"\n\n"
              "%s\n" % checks, executable=True)
    write(NOTES_FILE, (
        "# autotune: {name}\n\n"
        "## Objective\n{metric}{unit} — {direction} is better, measured by `./autotune.sh`.\n\n"
        "## Scope\n- In scope: (files and directories the loop may change)\n"
        "- Off limits: autotune.sh, autotune.checks.sh, the tests that define correctness\n\n"
        "## Constraints\n- (correctness, API, dependencies, memory, ...)\n\n"
        "## Current best\n(not measured yet: run the baseline)\n\n"
        "## Wins\n\n## Dead ends\n\n## Notes\n").format(
            name=name, metric=metric, unit=(" (%s)" % unit) if unit else "", direction=direction))
    write(IDEAS_FILE, "# Ideas backlog\n\nOne idea per line; strike out what was tried.\n\n- \n")
    return written


def cmd_run(args):
    session = require_session(find_session())
    settings = session.settings
    loaded = load_state(session)
    state = loaded.state
    check_active(session, state)
    argv, shell, shown = benchmark_command(session, args.command)
    hashes = file_hashes(session)  # read once: checked now, recorded with the measurement
    check_integrity(session, state, hashes)
    repeat = args.repeat if args.repeat is not None else settings.repeat
    timeout = args.timeout if args.timeout is not None else settings.timeout
    checks_timeout = args.checks_timeout if args.checks_timeout is not None else settings.checks_timeout
    config = state.config
    pname, direction = require_metric_name(state), config.get("direction", "lower")
    repo = session.repo
    head = repo.head() if repo else None
    warnings = []
    if state.snapshot and state.snapshot.get("head") and head != state.snapshot.get("head"):
        warnings.append("HEAD moved outside autotune since the last logged result; `log` will "
                        "refuse to commit or revert until you check it (see `autotune doctor`).")
    tree_before = None
    if repo:
        with LogLock(session):
            tree_before = snapshot_tree(session)
        if state.snapshot and tree_before == state.snapshot.get("tree") and state.n_exp:
            warnings.append("the working tree has no change since the last logged result, so "
                            "this run measures the kept code")
    env = benchmark_env(AUTOTUNE_SEGMENT=str(state.segment), AUTOTUNE_RUN=str(state.n_exp + 1))
    reference = (state.reference or {}).get("samples") or None
    deterministic = bool((state.reference or {}).get("deterministic"))
    plan = sampling_plan(reference, repeat, settings, deterministic)
    # the segment's MAD is the spread of its results (progress included): a fallback
    # for the adaptive default's small references only, never for a fixed repeat
    noise_mad = (state.confidence or {}).get("noise_mad") if repeat == "auto" else None
    m = Measurement(segment=state.segment, timestamp=utc_now(), command=shown, pname=pname,
                    warnings=warnings, head=head, hashes=hashes)
    with ProcessSweep() as sweep:
        runner = SampleRunner(argv, shell, session.workdir, timeout, env, pname, sweep)
        m.samples, m.sample_metrics, notes = collect_samples(
            runner.take, plan, reference, direction, settings, noise_mad, deterministic)
        outcome = runner.last
        m.exit, m.timeout, m.reason, m.dur = outcome.exit, outcome.timeout, runner.problem, round(runner.dur, 3)
        m.output = outcome.error or outcome.output
        m.passed = runner.problem is None
        m.crashed = not m.passed
        if runner.dropped:
            m.warnings.append("the benchmark printed %d METRIC line%s with names beyond the first %d "
                              "secondary metrics; %s ignored (autotune keeps at most %d names)" % (
                                  runner.dropped, "" if runner.dropped == 1 else "s", MAX_METRIC_NAMES,
                                  "it was" if runner.dropped == 1 else "they were", MAX_METRIC_NAMES))
        if m.passed:
            m.primary = median(m.samples)
            m.metrics = median_metrics(m.sample_metrics, exclude=pname)
            if os.path.isfile(session.path(CHECKS_FILE)):
                checks = run_process(script_argv(session.path(CHECKS_FILE)), session.workdir,
                                     checks_timeout, env=env, tail_lines=CHECKS_TAIL_LINES,
                                     tail_bytes=CHECKS_TAIL_BYTES, sweep=sweep)
                m.checks = checks.exit == 0 and not checks.timeout and not checks.error
                m.chk_out = checks.error or checks.output
                if checks.timeout:
                    m.chk_out = (m.chk_out + "\n[checks timed out after %ss]" % _fmt(checks_timeout)).strip()
        m.verdict, m.evidence = verdict_of(m, reference, state.reference or {}, direction, settings,
                                           noise_mad, plan.alpha, (state.baseline or {}).get("metrics"))
        if m.verdict in ("baseline", "improved") and os.path.isfile(session.path(HOLDOUT_FILE)):
            m.holdout = run_holdout(session, pname, timeout, env, sweep)
            m.verdict = holdout_verdict(m.verdict, m.holdout, (state.baseline or {}).get("holdout"),
                                        direction, settings.holdout_tolerance_pct)
    m.suggested_status = {"baseline": "keep", "improved": "keep", "crash": "crash",
                          "checks_failed": "checks_failed"}.get(m.verdict, "discard")
    samples = m.samples
    m.sampling = describe_sampling(plan, samples, notes, m, reference, settings.max_samples)
    m.env = environment(head)
    if repo:
        with LogLock(session):
            m.tree = snapshot_tree(session)
        if tree_before and m.tree != tree_before:
            created = [c.name for c in diff_trees(session, tree_before, m.tree)]
            m.warnings.append("the benchmark changed files that git does not ignore (%s); a keep "
                              "would commit them and a discard removes them: add them to "
                              ".gitignore" % ", ".join(created[:10]))
    save_measurement(session, m)
    result = {"exit": m.exit, "dur": m.dur, "passed": m.passed, "crashed": m.crashed,
              "timeout": m.timeout, "metrics": m.metrics, "primary": _round(m.primary),
              "pname": pname, "output": m.output, "checks": m.checks, "chk_out": m.chk_out,
              "samples": [_round(s) for s in samples], "n": len(samples), "sampling": m.sampling,
              "verdict": m.verdict, "suggested_status": m.suggested_status, "evidence": m.evidence,
              "guardrails": m.guardrails, "holdout": m.holdout, "reason": m.reason,
              "command": shown, "env": m.env}
    if m.warnings:
        result["warnings"] = m.warnings
    output(result)


def crash_reason(outcome, pname):
    if outcome.error:
        return outcome.error
    if outcome.timeout:
        return "timed out after %ss; the benchmark's process group was killed" % _fmt(outcome.dur)
    if outcome.exit != 0:
        if outcome.exit is not None and outcome.exit < 0:
            return "killed by signal %d" % -outcome.exit
        return "exited with code %s" % outcome.exit
    if pname not in outcome.metrics:
        return "exited 0 but printed no `METRIC %s=<number>` line" % pname
    return None


class SampleRunner(object):
    """`take` for collect_samples: one execution of the benchmark per sample; remembers
    the last outcome, the total time, and why it failed."""

    def __init__(self, argv, shell, cwd, timeout, env, pname, sweep):
        self.argv, self.shell, self.cwd, self.timeout = argv, shell, cwd, timeout
        self.env, self.pname, self.sweep = env, pname, sweep
        self.last, self.problem, self.dur = None, None, 0.0
        self.dropped = 0  # METRIC lines beyond the cap of names, in the sample that had most

    def take(self, number):
        self.env["AUTOTUNE_SAMPLE"] = str(number)
        self.last = run_process(self.argv, self.cwd, self.timeout, shell=self.shell, env=self.env,
                                sweep=self.sweep, primary=self.pname)
        self.dur += self.last.dur
        self.dropped = max(self.dropped, self.last.dropped)
        self.problem = crash_reason(self.last, self.pname)
        if self.problem:
            return None
        return self.last.metrics[self.pname], self.last.metrics


def run_holdout(session, pname, timeout, env, sweep):
    """Runs autotune.holdout.sh once; its judgement is verdict_of's."""
    run = run_process(script_argv(session.path(HOLDOUT_FILE)), session.workdir, timeout, env=env,
                      tail_lines=CHECKS_TAIL_LINES, tail_bytes=CHECKS_TAIL_BYTES, sweep=sweep,
                      primary=pname)
    problem = crash_reason(run, pname)
    holdout = {"value": run.metrics.get(pname), "reference": None, "ok": problem is None,
               "tolerance_pct": session.settings.holdout_tolerance_pct, "output": run.output}
    if problem:
        holdout["reason"] = "holdout " + problem
    return holdout


def describe_sampling(plan, samples, notes, m, reference, max_samples=DEFAULT_MAX_SAMPLES):
    count = len(samples)
    text = "%d sample%s" % (count, "" if count == 1 else "s")
    if m.crashed:
        return text + " before the crash"
    if plan.probe:
        if is_deterministic(samples):
            text += ": baseline; identical, so the benchmark is treated as deterministic and later runs take 1 sample"
        else:
            sigma = robust_sigma(samples)
            mid = median(samples)
            text += ": baseline; they differ (noise ±%s%%), so later runs take %d-%d samples" % (
                _fmt(round(sigma / abs(mid) * 100, 2)) if sigma and mid else "?",
                min(DEFAULT_BATCH, max_samples), max(1, max_samples))
    elif not plan.adaptive:
        text += ": " + plan.why
    else:
        text += ": noisy benchmark"
        if notes:
            text += "; " + "; ".join(notes)
        capped = count >= plan.limit and m.verdict == "within_noise"
        if m.evidence and m.evidence.get("p_value") is not None:
            text += "; %s p=%s (alpha per look %s)" % ("stopped at" if capped else "decided at",
                                                       _fmt(m.evidence["p_value"]), _fmt(round(plan.alpha, 4)))
        if capped:
            text += "; the cap of %d samples was reached without a significant difference" % plan.limit
    if reference and len(reference) < 3 and not is_deterministic(reference):
        text += "; the reference has only %d sample%s, run `autotune rebaseline` for a sharper verdict" % (
            len(reference), "" if len(reference) == 1 else "s")
    return text


class LogDecision(Record):
    """What a `log` call records, settled before anything is written."""

    FIELDS = (("status", None), ("metric", None), ("measured", False), ("metrics", dict),
              ("verdict", None), ("forced", False), ("improved", False))
    __slots__ = tuple(name for name, _ in FIELDS)


def decide_log(args, flags, state, m):
    """The status, numbers and verdict a `log` records, from its flags and the pending
    measurement; every refusal about them happens here, before git is touched."""
    metric_flag, metrics_flag, override = flags
    status = args.status
    if status == "auto":
        if m is None:
            fail("no_measurement", "--status auto needs a measurement: run `autotune run` first.")
        status = m.suggested_status
    # a keep sets the best the next runs are judged against: in a segment driven by `run`,
    # a typed-in number there is an invention unless a person says otherwise
    typed_keep = m is None and metric_flag is not None and status == "keep" and state.measured_results
    if typed_keep and not (args.force and override):
        fail("unmeasured_metric", "This segment's results come from `autotune run`, and there "
             "is no measurement to keep: run the benchmark (`autotune run`), then log without "
             "--metric. A typed-in number needs --force --reason \"why\" (recorded).")
    decision = LogDecision(status=status, forced=bool(typed_keep))
    decision.metric, decision.measured = metric_for_log(status, metric_flag, m, args.force)
    decision.metrics = (metrics_flag if metrics_flag is not None
                        else dict(m.metrics) if m is not None and m.passed else {})
    if metrics_flag is not None and m is not None and m.passed and not args.force:
        differing = sorted(k for k in metrics_flag if k in m.metrics
                           and not same_number(metrics_flag[k], m.metrics[k]))
        if differing:
            fail("metric_mismatch", "--metrics differs from what `run` measured for %s; omit "
                 "--metrics to log the measured values (or --force)." % ", ".join(differing))
    if status != "crash" and state.metric_names is not None and not args.force:
        missing = sorted(set(state.metric_names) - set(decision.metrics))
        extra = sorted(set(decision.metrics) - set(state.metric_names))
        if missing or extra:
            fail("metrics_mismatch", "Secondary metrics must match the segment's first result "
                 "(%s): %s%s. Use --force to log anyway." % (
                     ", ".join(state.metric_names) or "none",
                     ("missing " + ", ".join(missing)) if missing else "",
                     ("; " if missing and extra else "") + (("new " + ", ".join(extra)) if extra else "")))
    decision.verdict = m.verdict if (m is not None and (decision.measured or m.crashed)) else None
    if status == "keep" and decision.verdict in BLOCKING_VERDICTS:
        if not (args.force and override):
            fail("keep_refused", "The measurement's verdict is %s%s, so a keep is refused; log "
                 "--status %s, or a person overrides it with --force --reason \"why\"." % (
                     decision.verdict, " (significantly worse than the best)"
                     if decision.verdict == "worse" else "", m.suggested_status))
        decision.forced = True
    if status == "keep":  # "improved" is the verdict's when there is one, else strictly better
        direction = state.config.get("direction", "lower")
        decision.improved = state.best is None or (
            decision.verdict in ("baseline", "improved") if decision.verdict is not None
            else is_better(decision.metric, state.best["metric"], direction))
    return decision


def cmd_log(args):
    session = require_session(find_session())
    settings = session.settings
    description = text_arg(args.description, "--description")
    flags = (number_arg(args.metric, "--metric") if args.metric is not None else None,
             metrics_arg(args.metrics),
             text_arg(args.reason, "--reason") if args.reason is not None else None)
    asi = json_arg(args.asi, "--asi") or {}
    if args.commit is not None and not (4 <= len(args.commit) <= 64 and
                                        all(c in "0123456789abcdefABCDEF" for c in args.commit)):
        fail("bad_commit", "--commit %s is not a commit hash." % json.dumps(args.commit))
    repo = require_repo(session)
    with LogLock(session) as lock:
        loaded = load_state(session)
        torn_tail_error(session, loaded)
        state = loaded.state
        check_active(session, state, logging=True)
        config = state.config
        pname, direction = config.get("metric_name"), config.get("direction", "lower")
        m = load_measurement(session)
        if m is not None and m.segment != state.segment:
            m = None
        d = decide_log(args, flags, state, m)
        head = repo.head()
        snap = state.snapshot or {}
        skip_git = False
        if snap.get("head") is not None and snap.get("head") != head:
            own = own_unlogged_commit(repo, head, snap["head"])
            adopting = (own is not None and d.status == "keep" and args.commit is not None
                        and head.startswith(args.commit.lower()))
            if not adopting and not args.force:
                fail("head_moved", head_moved_message(snap["head"], head, own))
            skip_git = not adopting
            d.forced = d.forced or skip_git
        index = state.n_exp + 1
        current = snapshot_tree(session)
        if (d.status == "keep" and d.measured and m.tree and current != m.tree and not args.force
                and not skip_git and args.commit is None):
            fail("stale_run", "The working tree changed after `autotune run` measured it; run the "
                 "benchmark again so the keep commits what was measured (or --force).")
        git_info, commit, next_tree = apply_git(session, state, d.status, description, pname, d.metric,
                                                config.get("metric_unit"), "%d.%d" % (state.segment, index),
                                                index, current, head, skip_git, args.commit)
        if next_tree != snap.get("tree"):
            anchor_snapshot(session, next_tree)
        health = advance(health_fields(state), d.status, d.improved, settings)
        best_metric = d.metric if d.improved else (state.best or {}).get("metric")
        finished = budget_reason(index, best_metric, direction, settings,
                                 iso_to_epoch(state.started_at), time.time())
        if finished:
            health.update(health="completed", active=False, reason=finished)
        result = Result(
            index=index, commit=commit, metric=_round(d.metric), status=d.status,
            description=description, timestamp=utc_now(), segment=state.segment,
            metrics=d.metrics if d.status != "crash" or flags[1] else {}, asi=asi,
            failure=health["failure"], health=health["health"], recovery=health["recovery"],
            reason=health["reason"], files=git_info.get("files", []), mode=health["mode"],
            active=health["active"], improved=d.improved, measured=d.measured, git=git_info,
            snapshot={"tree": next_tree, "head": repo.head()},
            session_id=os.environ.get("CLAUDE_CODE_SESSION_ID") or None,
            hashes=((m.hashes if m is not None and m.hashes else file_hashes(session))
                    if state.n_exp == 0 else None))
        if m is not None and d.measured:
            result.samples = [_round(s) for s in m.samples] or None
            result.verdict, result.evidence, result.env, result.run_dur = m.verdict, m.evidence, m.env, m.dur
            if m.holdout and m.holdout.get("value") is not None:
                result.holdout = m.holdout["value"]
        else:
            result.env = environment(head)
        if d.forced:
            result.forced, result.override_reason = True, flags[2]
            result.verdict = result.verdict or d.verdict
        values = segment_values(session, loaded)
        preview = state.copy()
        point = fold_entry(preview, json.loads(dumps_line(result.to_entry()).decode("utf-8")))
        if point is not None:
            import bisect
            bisect.insort(values, point)
        result.confidence = confidence(values, preview)
        append_entries(lock, session, loaded, [result.to_entry()])
        try:
            save_values(session, loaded.state, values)
        except OSError:
            pass  # values.bin is keyed by the point count: a stale one is rescanned
        drop_measurement(session)
    output(log_answer(loaded.state, settings, result, pname, git_info))


def log_answer(state, settings, result, pname, git_info):
    """The JSON `log` prints: the result, what git did, and where the loop now stands."""
    baseline = (state.baseline or {}).get("metric")
    metric = result.metric
    delta = (metric - baseline) if (metric is not None and baseline is not None) else None
    action, _ = next_action(state)
    return {"status": result.status, "index": result.index, "commit": result.commit,
            "metric": metric, "name": pname, "baseline": _round(baseline), "delta": _round(delta),
            "d_pct": _round(pct_change(metric, baseline), 2),
            "desc": result.description, "confidence": result.confidence, "git": git_info,
            "limit": {"max_iterations": settings.max_iterations, "runs": state.n_exp,
                      "remaining": (settings.max_iterations - state.n_exp) if settings.max_iterations else None},
            "health": state.health, "failure": state.failure, "recovery": state.recovery,
            "reason": state.reason, "mode": state.mode, "active": state.active,
            "improved": result.improved, "best": _round((state.best or {}).get("metric")),
            "verdict": result.verdict, "measured": result.measured, "next": action}


def own_unlogged_commit(repo, head, snapshot_head):
    """(subject, trailer metric) when HEAD is autotune's own keep on top of the snapshot's
    HEAD (a `log` killed between its commit and its log line), else None."""
    if not head:
        return None
    proc = repo.run(["cat-file", "commit", head], check=False)
    if proc.returncode != 0:
        return None
    headers, _, message = proc.stdout.decode("utf-8", "replace").partition("\n\n")
    first = next((line[7:] for line in headers.splitlines() if line.startswith("parent ")), "")
    if first != snapshot_head or not message.startswith("autotune: ") or "Autotune-Metric:" not in message:
        return None
    subject = message.split("\n", 1)[0][len("autotune: "):]
    # the last trailer is autotune's: a description may quote one
    value = (message.rsplit("Autotune-Metric:", 1)[1].strip().split("\n")[0].split("=", 1)[-1].split() or ["?"])[0]
    return subject, value


def head_moved_message(snapshot_head, head, own):
    if own is not None:
        return ("HEAD (%s) is autotune's own keep of \"%s\", whose log line was lost (the process was "
                "killed after committing). Record it with: autotune log --status keep --commit %s "
                "--metric %s --description %s" % (head[:7], strip_controls(own[0], ""), head[:7], _shell_quote(own[1]),
                                                  _shell_quote(own[0])))
    return ("HEAD moved from %s to %s outside autotune since the last logged result, so autotune "
            "will not guess what to commit or revert. Check `git log` and `git status`; `autotune "
            "doctor --fix` takes a new snapshot, and `autotune log ... --force` records the result "
            "without touching git." % (snapshot_head[:7], (head or "nothing")[:7]))


def metric_for_log(status, metric_flag, m, force):
    """The primary metric of a result: what `run` measured, never a transcription.
    Returns (metric, measured)."""
    if metric_flag is not None:
        if m is not None and m.primary is not None:
            if same_number(metric_flag, m.primary):
                return m.primary, True
            if not force:
                fail("metric_mismatch", "--metric %s differs from what `run` measured (%s); omit "
                     "--metric to log the measured value, or pass --force to override it." % (
                         _fmt(metric_flag), _fmt(m.primary)))
            return metric_flag, False
        if m is not None and m.crashed and status not in CRASH_STATUSES and not force:
            fail("metric_mismatch", "The last run crashed and measured nothing (%s); log it with "
                 "--status crash, or pass --force to log an invented --metric." % (m.reason or "crash"))
        return metric_flag, m is not None and status in CRASH_STATUSES
    if m is not None:
        if m.primary is None and status in ("keep", "discard"):
            fail("missing_metric", "The last run crashed (%s), so there is no metric to %s; log "
                 "it with --status crash." % (m.reason or "no metric", status))
        return m.primary, True
    if status in ("keep", "discard"):
        fail("missing_metric", "No measurement to log: run the benchmark first (`autotune run`).")
    return None, False


def trailer_number(value):
    """The shortest exact text of a number, for the Autotune-Metric trailer."""
    if isinstance(value, float) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def head_tree(repo, head):
    if head is None:
        return repo.run(["hash-object", "-t", "tree", "--stdin"], input=b"").stdout.decode().strip()
    return repo.run(["rev-parse", head + "^{tree}"]).stdout.decode().strip()


def apply_git(session, state, status, description, pname, metric, unit, label, index, current,
              head, skip_git, given_commit):
    """Commits a keep, reverts anything else; returns (git info, commit, next snapshot)."""
    repo = session.repo
    base = (state.snapshot or {}).get("tree")
    short = head[:7] if head else None
    if skip_git:
        return {"action": "none", "message": "skipped: HEAD moved outside autotune (--force)"}, short, current
    if status == "keep":
        if given_commit:
            proc = repo.run(["rev-parse", "-q", "--verify", given_commit + "^{commit}"], check=False)
            if proc.returncode != 0:
                fail("bad_commit", "--commit %s is not a commit in this repository." % given_commit)
            full = proc.stdout.decode().strip()
            return {"action": "none", "message": "recorded the given commit"}, full[:7], current
        # without a snapshot (a session of the first implementation) untracked files are
        # not known to be the experiment's: they are neither committed nor deleted
        base_tree = base or head_tree(repo, head)
        changes = without_users_ignored(session, base_tree, diff_trees(
            session, base_tree, current, tracked_only=base is None))
        new_head = commit_changes(session, changes, "autotune: %s\n\nAutotune-Metric: %s=%s%s\n" % (
            description.rstrip(), strip_controls(pname, ""), trailer_number(metric),
            (" " + strip_controls(unit, "")) if unit else "")) \
            if changes else None
        if new_head is None:
            return {"action": "none", "message": "nothing to commit"}, short, current
        return (listed_files({"action": "commit", "commit": new_head[:7]}, [c.name for c in changes]),
                new_head[:7], current)
    keep_created = base is None
    base = base or head_tree(repo, head)
    every = diff_trees(session, base, current, tracked_only=keep_created)
    changes = without_users_ignored(session, base, every)
    if not changes:
        return {"action": "none", "message": "nothing to revert"}, short, current
    ref = save_discarded(session, base, current, label, description)
    restore_changes(session, changes)
    left = [c.name for c in changes if b"160000" in (c.old_mode, c.new_mode)]
    info = {"action": "revert", "saved": ref,
            "restore": "autotune restore %s" % _shell_quote(
                str(index) if ref.endswith("/" + label) else ref.rsplit("/", 1)[-1])}
    listed_files(info, [c.name for c in changes if c.name not in left])
    if left:
        info["left"] = left[:MAX_FILES_LISTED]
        info["message"] = ("submodules are not reverted (%s): check them out by hand" % ", ".join(left))
    exact = not (keep_created or left or len(changes) != len(every))
    return info, short, (base if exact else snapshot_tree(session))


MAX_FILES_LISTED = 1000  # file names one result lists; a keep of a generated tree says how many more


def listed_files(info, names):
    """Puts the changed files into git info, at most MAX_FILES_LISTED of them (the log
    line of one result stays small whatever an experiment touched)."""
    info["files"] = names[:MAX_FILES_LISTED]
    if len(names) > MAX_FILES_LISTED:
        info["files_more"] = len(names) - MAX_FILES_LISTED
    return info


def control(action, check=None, **fields):
    """Appends a control line (stop, resume, repair) unless `check` returns a note saying
    why not; returns (session, state, note)."""
    session = require_session(find_session(lenient=action == "stop"))
    with LogLock(session) as lock:
        loaded = load_state(session)
        torn_tail_error(session, loaded)
        state = loaded.state
        require_config(session, state)
        if check is not None:
            message = check(session, state)
            if message:
                return session, state, message
        entry = {"type": "control", "action": action, "timestamp": utc_now()}
        entry.update(fields)
        append_entries(lock, session, loaded, [entry])
    return session, loaded.state, None


def cmd_stop(args):
    by = "agent" if os.environ.get("CLAUDE_CODE_SESSION_ID") else "person"
    reason = text_arg(args.reason, "--reason") if args.reason else None
    session, state, note = control("stop", by=by, reason=reason,
                                   check=lambda s, st: "already stopped" if not st.active else None)
    report_control(args, state, note or "stopped", "the loop is paused and its data kept; "
                   "`autotune resume` continues it")


def cmd_resume(args):
    def check(session, state):
        if state.active and state.health not in ("paused", "completed") and state.mode != "repair":
            return "already active"
        reason = spent_budget(session, state)
        if reason:
            fail("budget_spent", "The budget is still spent (%s); raise it in %s or start a new "
                 "segment with `autotune init`." % (reason, CONFIG_FILE))
        return None
    session, state, note = control("resume", check=check)
    report_control(args, state, note or "resumed", "active, optimize mode, streaks and heals reset")


def cmd_repair(args):
    session, state, _ = control("repair")
    report_control(args, state, "repair mode", "active, health healing, recovery manual_repair")


def report_control(args, state, status, detail):
    if args.json:
        output({"status": status, "active": state.active, "health": state.health,
                "mode": state.mode, "reason": state.reason, "recovery": state.recovery})
    else:
        say("autotune: %s%s" % (status, (": " + detail) if not status.startswith("already") else ""))


def cmd_clear(args):
    import shutil
    session = find_session(lenient=True)
    targets = [p for p in (session.log_path, session.state_path) if os.path.exists(p)]
    cache = session.cache_dir if session.repo else None
    if not targets and not (cache and os.path.isdir(cache)):
        say("autotune: nothing to clear in %s" % session.workdir)
        return 0
    if not args.yes:
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            fail("needs_confirmation", "clear deletes %s; without a terminal to confirm on, pass "
                 "--yes." % (", ".join(os.path.basename(p) for p in targets) or "the caches"))
        say("This deletes %s in %s (autotune.md, the benchmark and git history stay)." % (
            ", ".join(os.path.basename(p) for p in targets), session.workdir))
        sys.stdout.write("Type 'yes' to confirm: ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            say("autotune: nothing deleted")
            return 1
    lock = LogLock(session) if session.exists() else None
    if lock is not None:
        lock.__enter__()  # a concurrent `log` must not append to a file being deleted
    try:
        for path in targets:
            os.unlink(path)
        if cache and os.path.isdir(cache):
            shutil.rmtree(cache, ignore_errors=True)
        if session.repo is not None and cache:
            session.repo.run(["update-ref", "-d", "refs/autotune/snapshot/" + os.path.basename(cache)],
                             check=False)
    finally:
        if lock is not None:
            lock.__exit__(None, None, None)
    say("autotune: cleared %s (discarded experiments stay under refs/autotune/)" % (
        ", ".join(os.path.basename(p) for p in targets) or "caches"))
    return 0


def cmd_version(args):
    if args.json:
        output({"version": VERSION, "python": "%d.%d.%d" % sys.version_info[:3],
                "path": os.path.abspath(__file__)})
    else:
        say("autotune %s" % VERSION)


def cmd_rebaseline(args):
    session = require_session(find_session())
    loaded = load_state(session)
    state = loaded.state
    require_config(session, state)
    argv, shell, shown = benchmark_command(session, None)
    check_integrity(session, state)
    pname = require_metric_name(state)
    if session.repo and state.snapshot:
        with LogLock(session):
            tree = snapshot_tree(session)
        if tree != state.snapshot.get("tree"):
            changed = [c.name for c in diff_trees(session, state.snapshot["tree"], tree)]
            fail("dirty_worktree", "The working tree has changes since the last logged result (%s): "
                 "an experiment in progress. Finish it first (`autotune run`, then `autotune log`), "
                 "so rebaseline measures the kept code." % ", ".join(changed[:10]))
    count = args.repeat or DEFAULT_REBASELINE
    timeout = args.timeout if args.timeout is not None else session.settings.timeout
    env = benchmark_env(AUTOTUNE_SEGMENT=str(state.segment), AUTOTUNE_REBASELINE="1")
    samples, sample_metrics = [], []
    with ProcessSweep() as sweep:
        runner = SampleRunner(argv, shell, session.workdir, timeout, env, pname, sweep)
        for number in range(1, count + 1):
            taken = runner.take(number)
            if taken is None:
                fail("benchmark_crashed", "The benchmark failed on the unchanged code (sample %d: %s); "
                     "nothing was recorded. Output tail: %s" % (
                         number, runner.problem, _one_line(runner.last.output, 300)))
            samples.append(taken[0])
            sample_metrics.append(taken[1])
    previous = state.reference or {}
    value = median(samples)
    head = session.repo.head() if session.repo else None
    entry = {"type": "rebaseline", "timestamp": utc_now(), "segment": state.segment,
             "commit": head[:7] if head else None, "metric": _round(value),
             "samples": [_round(s) for s in samples],
             "metrics": median_metrics(sample_metrics, exclude=pname),
             "previous": {"metric": _round(previous.get("metric")), "n": len(previous.get("samples") or []),
                          "source": previous.get("source")},
             "env": environment(head)}
    with LogLock(session) as lock:
        loaded = load_state(session)
        torn_tail_error(session, loaded)
        append_entries(lock, session, loaded, [entry])
    sigma = robust_sigma(samples)
    before = previous.get("metric")
    output({"status": "rebaselined", "metric": _round(value), "samples": entry["samples"],
            "n": len(samples), "previous": entry["previous"],
            "drift_pct": _round(pct_change(value, before), 3),
            "deterministic": is_deterministic(samples),
            "noise": {"sigma": _round(sigma), "sigma_pct": _round(sigma / abs(value) * 100, 3)
                      if sigma and value else None}})


def cmd_restore(args):
    session = find_session()
    repo = require_repo(session)
    if args.list or args.index is None:
        proc = repo.run(["for-each-ref", "--sort=-creatordate",
                         "--format=%(refname)%00%(creatordate:iso-strict)%00%(subject)",
                         "refs/autotune/discarded/"])
        rows = []
        for line in proc.stdout.decode("utf-8", "replace").splitlines():
            ref, date, subject = line.split("\0", 2)
            rows.append({"ref": ref, "label": ref.rsplit("/", 1)[-1], "date": date, "subject": subject})
        if args.json:
            output({"discarded": rows})
        elif not rows:
            say("autotune: no discarded experiments saved in this repository")
        else:
            for row in rows:
                say("%-8s %s  %s" % (row["label"], row["date"][:19], row["subject"]))
        return 0
    ref, label = discarded_ref(session, args.index, args.segment)
    if repo.run(["rev-parse", "-q", "--verify", ref + "^{commit}"], check=False).returncode != 0:
        fail("no_such_experiment", "No discarded experiment %s is saved (no %s); `autotune restore "
             "--list` shows what is." % (label, ref))
    diff = repo.run(["diff-tree", "-p", "--binary", "--full-index", ref + "^", ref]).stdout
    proc = repo.run(["apply", "--whitespace=nowarn"], input=diff, check=False)
    if proc.returncode != 0:
        lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        fail("restore_conflict", "Experiment %s does not apply to the working tree as it is now "
             "(%s); nothing was changed. Inspect it with `git show %s`." % (
                 label, lines[-1] if lines else "git apply failed", _shell_quote(ref)))
    files = [p.decode("utf-8", "replace") for p in repo.run(
        ["diff-tree", "-r", "-z", "--name-only", ref + "^", ref]).stdout.split(b"\0") if p]
    if args.json:
        output({"status": "restored", "ref": ref, "files": files})
    else:
        say("autotune: restored experiment %s into the working tree (%s)" % (label, ", ".join(files)))
    return 0


def discarded_ref(session, which, segment=None):
    """(ref, label) of a discarded experiment: a label such as 1.7 or 1.7-2, or an index
    of the current (or given) segment, looked up in the log, which records the ref."""
    if "." in which:
        return "refs/autotune/discarded/" + which, which
    index = int(which)
    if session.exists():
        state = load_state(session).state
        segment = segment or state.segment
        for entry in reversed(read_entries(session, state.config_offset if segment == state.segment else 0)):
            if (entry.get("type") == "result" and entry.get("index") == index
                    and entry.get("segment", segment) == segment and isinstance(entry.get("git"), dict)):
                saved = entry["git"].get("saved")
                if isinstance(saved, str) and saved.startswith("refs/autotune/discarded/"):
                    return saved, saved.rsplit("/", 1)[-1]
    label = "%d.%d" % (segment or 1, index)
    return "refs/autotune/discarded/" + label, label


def _discard_label(text):
    """argparse type: 7, or a saved label such as 1.7 or 1.7-2."""
    import re
    if not re.match(r"^[0-9]{1,9}(\.[0-9]{1,9}(-[0-9]{1,4})?)?$", text or ""):
        raise _type_error("must be an experiment index (7) or a label (1.7, 1.7-2), got %r" % text)
    return text


def reason_text(state, settings):
    """The last decision of the loop, in a sentence."""
    reason = state.reason or ""
    cause = {
        "plateau": "%d experiments in a row did not beat the best (%d make a plateau)" % (
            state.no_improve, settings.max_no_improve),
        "benchmark_crash": "the benchmark failed %d times in a row (%d start recovery)" % (
            state.crash_streak, settings.max_crash_streak),
        "checks_failed": "experiments failed %d times in a row, the last on the correctness checks "
                         "(%d start recovery)" % (state.crash_streak, settings.max_crash_streak),
    }.get(state.failure, state.failure or "")
    if reason == "initialized":
        return "a new segment started; nothing has been logged in it yet"
    if reason == "improved" and state.n_exp == 1:
        return "the baseline was measured and kept; every later experiment is judged against it"
    if reason == "improved":
        return "the last experiment beat the best, so it was kept"
    if reason == "kept_no_degrade":
        return "the last experiment was kept without beating the best"
    if reason == "no_improve":
        return "the last experiment did not beat the best and was reverted (%d in a row; %d make a plateau)" % (
            state.no_improve, settings.max_no_improve)
    if reason == "crash":
        return "the benchmark crashed on the last experiment (%d failure%s in a row; %d start recovery)" % (
            state.crash_streak, "" if state.crash_streak == 1 else "s", settings.max_crash_streak)
    if reason == "checks_failed":
        return "the correctness checks failed on the last experiment (%d failure%s in a row; %d start recovery)" % (
            state.crash_streak, "" if state.crash_streak == 1 else "s", settings.max_crash_streak)
    if reason == "heal:pause":
        return "%s, and the next recovery playbook is to pause, so the loop paused itself" % cause
    if reason.startswith("heal:"):
        return "%s, so recovery attempt %d of %d is %s" % (cause, state.heals, settings.max_heals, reason[5:])
    if reason == "recovery_exhausted":
        return "%s even after %d recovery attempt%s (the most allowed), so the loop paused itself" % (
            cause or "the loop kept failing", state.heals, "" if state.heals == 1 else "s")
    return reason or "-"


def clock_state(session, state):
    """A copy of the state in which a spent budget (the wall clock runs out between two
    results) reads as `completed`, as the next `log` would record it."""
    if state.config is None or not state.active or state.health == "completed":
        return state
    reason = spent_budget(session, state)
    if not reason:
        return state
    state = state.copy()
    state.health, state.active, state.reason = "completed", False, reason
    return state


def explain_data(session, loaded):
    state = clock_state(session, loaded.state)
    settings = session.settings
    config = state.config or {}
    action, advice = next_action(state)
    base = (state.baseline or {}).get("metric")
    best = (state.best or {}).get("metric")
    warnings = []
    if loaded.torn:
        warnings.append("%s ends with a truncated line (%d bytes); run `autotune doctor --fix`." % (
            LOG_FILE, len(loaded.torn)))
    if state.bad_lines:
        warnings.append("%d line%s of %s could not be read and were skipped (line %s)." % (
            state.bad_lines, "" if state.bad_lines == 1 else "s", LOG_FILE,
            ", ".join(str(n) for n in state.bad_line_numbers)))
    return {
        "name": config.get("name"), "metric": config.get("metric_name"), "unit": config.get("metric_unit"),
        "direction": config.get("direction"), "segment": state.segment, "segments": state.segments,
        "active": state.active, "mode": state.mode, "health": state.health, "failure": state.failure,
        "recovery": state.recovery, "reason": state.reason, "why": reason_text(state, settings),
        "baseline": _round(base), "best": _round(best),
        "best_pct": _round(pct_change(best, base), 2),
        "best_commit": (state.best or {}).get("commit"), "best_description": (state.best or {}).get("description"),
        "last_metric": _round((state.last or {}).get("metric")), "last_status": (state.last or {}).get("status"),
        "last_index": (state.last or {}).get("index"), "last_description": (state.last or {}).get("description"),
        "no_improve": state.no_improve, "crash_streak": state.crash_streak, "keep_streak": state.keep_streak,
        "heals": state.heals, "max_heals": settings.max_heals, "max_no_improve": settings.max_no_improve,
        "max_crash_streak": settings.max_crash_streak,
        "runs": state.n_exp, "kept": state.kept, "discarded": state.discarded, "crashed": state.crashed,
        "checks_failed": state.checks_failed, "max_iterations": settings.max_iterations,
        "confidence": state.confidence, "next": action, "next_text": advice, "warnings": warnings,
        "path": session.workdir,
    }


def cmd_explain(args):
    session = require_session(find_session())
    loaded = load_state(session)
    persist_if_stale(session, loaded)
    data = explain_data(session, loaded)
    if args.json:
        output(data)
    else:
        colors = Colors(sys.stdout)
        say(render_explain(data, colors), painted=colors.enabled)


def cmd_status(args):
    session = require_session(find_session())
    loaded = load_state(session)
    persist_if_stale(session, loaded)
    data = explain_data(session, loaded)
    state = loaded.state
    data.update(total_runs=state.total_results, resume_count=state.resume_count,
                session_id=state.session_id, exp_at=state.exp_at, progress_at=state.progress_at)
    if args.json:
        output(data)
    else:
        colors = Colors(sys.stdout)
        say(render_status(data, colors), painted=colors.enabled)


def cmd_start(args):
    import shutil
    claude = shutil.which("claude")
    if not claude:
        fail("no_claude", "The `claude` command is not on PATH; install Claude Code, then run "
             "`claude --agent autotune` in this directory.")
    argv = [claude, "--agent", "autotune"]
    root = os.path.dirname(os.path.realpath(os.path.abspath(__file__)))
    if os.path.isfile(os.path.join(root, ".claude-plugin", "plugin.json")) and not plugin_installed(claude):
        argv += ["--plugin-dir", root]  # a checkout or --plugin-dir user: load this plugin
    if args.goal:
        argv.append(" ".join(args.goal))
    os.execv(claude, argv)


def plugin_installed(claude):
    import subprocess
    try:
        proc = subprocess.run([claude, "plugin", "list", "--json"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, timeout=30)
        plugins = json.loads(proc.stdout.decode("utf-8", "replace") or "[]")
    except (OSError, ValueError, subprocess.SubprocessError):
        return True  # unknown: do not risk loading the plugin twice
    return any(isinstance(p, dict) and str(p.get("id", "")).startswith("autotune@")
               and p.get("enabled", True) for p in plugins if isinstance(plugins, list))


# Doctor: every check returns problems as (code, message, fix or None).

def cmd_doctor(args):
    session = find_session(lenient=True)
    problems = []  # dicts: code, message, fixable, fixed
    fixes = []

    def problem(code, message, fix=None):
        problems.append({"code": code, "message": message, "fixable": fix is not None, "fixed": False})
        if fix is not None:
            fixes.append((problems[-1], fix))

    if session.repo is None:
        problem("not_git_repo", "%s is not inside a git repository." % session.workdir)
    if not session.exists():
        problem("no_session", "No %s in %s: there is no session to check." % (LOG_FILE, session.workdir))
        return doctor_report(args, session, problems)
    loaded = load_state(session)
    state = loaded.state
    if loaded.torn:
        problem("torn_tail", "%s ends with a truncated line of %d bytes (a write that was cut short). "
                "Readers skip it; `log` refuses to append after it." % (LOG_FILE, len(loaded.torn)),
                fix=lambda lock: _fix_torn_tail(session, lock))
    if state.bad_lines:
        problem("bad_lines", "%d line%s of %s are not valid JSON objects (line %s); every command "
                "skips them." % (state.bad_lines, "" if state.bad_lines == 1 else "s", LOG_FILE,
                                 ", ".join(str(n) for n in state.bad_line_numbers)))
    if state.config is None:
        problem("no_config", "%s has no config line; run `autotune init`." % LOG_FILE)
    cached = _read_state_file(session)
    if cached is None:
        problem("state_missing", "%s is missing or unreadable; it will be rebuilt from the log." % STATE_FILE,
                fix=lambda lock: _fix_state(session))
    elif not loaded.rebuilt:
        fresh = Loaded(State())
        with open(session.log_path, "rb") as handle:
            _fold_from(handle, fresh, 0)
        a, b = fresh.state.to_dict(), loaded.state.to_dict()
        differing = sorted(k for k in a if k not in ("confidence",) and a[k] != b.get(k))
        if differing:
            problem("state_stale", "%s disagrees with the log (%s); it will be rebuilt." % (
                STATE_FILE, ", ".join(differing[:8])), fix=lambda lock: _fix_state(session))
    elif cached.get("format") != STATE_FORMAT:
        problem("state_legacy", "%s was written by another version; it will be rebuilt from the log." %
                STATE_FILE, fix=lambda lock: _fix_state(session))
    if session.config_error:
        problem("bad_config", session.config_error)
    bench = session.path(BENCH_FILE)
    if not os.path.isfile(bench):
        problem("no_benchmark", "%s does not exist; `run` needs it." % BENCH_FILE)
    else:
        if not os.access(bench, os.X_OK):
            problem("benchmark_not_executable", "%s is not executable (autotune runs it with bash)." % BENCH_FILE)
        if state.config is not None:
            try:
                check_integrity(session, state)
            except AutotuneError as exc:
                problem("benchmark_changed", exc.message)
    if session.repo is not None and state.config is not None:
        head = session.repo.head()
        snap = state.snapshot or {}
        if snap.get("head") and head != snap.get("head"):
            own = own_unlogged_commit(session.repo, head, snap["head"])
            if own is not None:
                problem("unlogged_keep", head_moved_message(snap["head"], head, own))
            else:
                problem("head_moved", "HEAD moved from %s to %s outside autotune since the last "
                        "logged result; `log` will refuse to commit or revert. The fix takes a new "
                        "snapshot of the working tree as the start of the next experiment." % (
                            snap["head"][:7], (head or "none")[:7]),
                        fix=lambda lock: _fix_snapshot(session, lock))
        if os.path.exists(os.path.join(session.repo.git_dir, "index.lock")):
            problem("git_locked", "%s exists: a git command is running or was killed. Delete it if "
                    "no git process is running." % os.path.join(session.repo.git_dir, "index.lock"))
        m = load_measurement(session)
        if m is not None and m.segment != state.segment:
            problem("stale_measurement", "The saved measurement is from segment %s; it will be dropped." %
                    m.segment, fix=lambda lock: drop_measurement(session))
    leftovers = [name for name in os.listdir(session.workdir)
                 if name.startswith((STATE_FILE + ".", LOG_FILE + ".")) and name.endswith(".tmp")]
    if leftovers:
        problem("temp_files", "Temporary files from an interrupted write: %s." % ", ".join(leftovers),
                fix=lambda lock: [os.unlink(session.path(n)) for n in leftovers])
    if args.fix and fixes:
        with LogLock(session) as lock:
            for entry, fix in fixes:
                fix(lock)
                entry["fixed"] = True
    return doctor_report(args, session, problems)


def _read_state_file(session):
    try:
        with open(session.state_path, "rb") as handle:
            data = json.loads(handle.read().decode("utf-8"))
        return data if isinstance(data, dict) else None
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return None


def _fix_torn_tail(session, lock):
    """Moves the bytes after the last newline into a backup file, then cuts them off."""
    with open(session.log_path, "rb") as handle:
        end = handle.seek(0, 2)
        position, tail = end, b""
        while position > 0 and b"\n" not in tail:
            step = min(1 << 16, position)
            position -= step
            handle.seek(position)
            tail = handle.read(step) + tail
    cut = end - len(tail) + tail.rfind(b"\n") + 1
    if cut == end:
        return
    backup = "%s.torn-%s" % (session.log_path, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    with open(backup, "wb") as handle:
        handle.write(tail[tail.rfind(b"\n") + 1:])
    os.truncate(session.log_path, cut)
    _fix_state(session)


def _fix_state(session):
    try:
        os.unlink(session.state_path)
    except OSError:
        pass
    loaded = load_state(session)
    if not save_state(session, loaded.state):
        fail("io_error", "Cannot write %s; check its directory's permissions and free space." % STATE_FILE)


def _fix_snapshot(session, lock):
    loaded = load_state(session)
    entry = {"type": "control", "action": "snapshot", "timestamp": utc_now(),
             "snapshot": {"tree": snapshot_tree(session), "head": session.repo.head()}}
    anchor_snapshot(session, entry["snapshot"]["tree"])
    append_entries(lock, session, loaded, [entry])


def doctor_report(args, session, problems):
    healthy = not [p for p in problems if not p["fixed"]]
    if args.json:
        output({"ok": healthy, "path": session.workdir, "problems": problems})
    else:
        colors = Colors(sys.stdout)
        if not problems:
            say("autotune doctor: %s is healthy" % session.workdir)
        for p in problems:
            mark = colors.green("fixed") if p["fixed"] else colors.yellow("fixable") if p["fixable"] else colors.red("problem")
            say("%s  %s: %s" % (mark, strip_controls(p["code"], ""), strip_controls(p["message"], "")),
                painted=colors.enabled)
        if problems and not args.fix and any(p["fixable"] for p in problems):
            say("Run `autotune doctor --fix` to repair what is marked fixable.")
    return 0 if healthy else 1


# -------------------------------------------------------------------- hooks ----
# Claude Code calls these with a JSON payload on stdin. A hook never fails loudly:
# with no session, a malformed payload or any error it exits 0 and stays silent.


def read_payload(stream=None):
    stream = stream or sys.stdin
    try:
        data = stream.buffer.read() if hasattr(stream, "buffer") else stream.read()
        payload = json.loads(data.decode("utf-8", "replace") if isinstance(data, bytes) else data)
    except (ValueError, OSError, RecursionError):
        return {}
    return payload if isinstance(payload, dict) else {}


def payload_session(payload):
    """The session of the payload's directory (a broken config means defaults, and
    session.config_error says so: a typo must not switch the guard off), or None."""
    cwd = payload.get("cwd")
    if not isinstance(cwd, str) or not os.path.isdir(cwd):
        cwd = os.getcwd()
    try:
        session = find_session(cwd, lenient=True)
        if not session.exists():
            return None, None
        loaded = load_state(session)
    except (AutotuneError, OSError):
        return None, None
    if loaded.state.config is None:
        return None, None
    return session, loaded


def tail_entries(session, start, count, kinds=("result",)):
    """The last `count` log entries of the given kinds after byte offset `start`,
    read from the end of the file (cost independent of the log's length)."""
    found = []
    with open(session.log_path, "rb") as handle:
        end = handle.seek(0, 2)
        position, carry = end, b""
        while position > start and len(found) < count:
            step = min(1 << 16, position - start)
            position -= step
            handle.seek(position)
            block = handle.read(step) + carry
            lines = block.split(b"\n")
            carry = lines.pop(0) if position > start else b""
            for raw in reversed(lines):
                entry = parse_line(raw) if raw.strip() else None
                if entry is not None and entry.get("type") in kinds:
                    found.append(entry)
                    if len(found) >= count:
                        break
        if carry and len(found) < count:
            entry = parse_line(carry)
            if entry is not None and entry.get("type") in kinds:
                found.append(entry)
    return list(reversed(found))


def resume_prompt(session, state):
    action, advice = next_action(state)
    best = (state.best or {}).get("metric")
    unit = (state.config or {}).get("metric_unit") or ""
    return ("Continue the autotune loop in %s: it is active (%s, %d runs in segment %d, best %s). "
            "Re-read autotune.md and `autotune explain`, then keep going: one focused change, "
            "`autotune run`, `autotune log --status auto --description ... --asi '{...}'`. "
            "Next action: %s — %s Stop only when `autotune explain` says the loop is paused or "
            "complete." % (session.workdir, state.health, state.n_exp, state.segment,
                            fmt_metric(best, unit), action, advice))


def hook_stop(payload):
    session, loaded = payload_session(payload)
    if session is None:
        return None
    state = clock_state(session, loaded.state)
    mode = session.settings.auto_resume
    if (mode == "off" or not state.active or state.health in ("paused", "completed")
            or state.n_exp == 0):
        return None
    session_id = payload.get("session_id")
    owner = state.session_id
    if mode == "prompt":
        if owner and session_id != owner:
            return None
        return {"systemMessage": "autotune: the loop in %s is still active (%d runs, %s). Resume "
                "it with `claude --agent autotune` or `autotune start`; stop it with `autotune "
                "stop`.%s" % (session.workdir, state.n_exp, state.health, (
                    " Its config is broken, so defaults apply: %s Run `autotune doctor`." %
                    session.config_error) if session.config_error else "")}
    if not owner or session_id != owner:
        return None  # never hijack a session that does not run the loop
    settings = session.settings
    if mode == "continue":
        streak = state.stop_streak + 1 if payload.get("stop_hook_active") is True else 1
        if streak > settings.max_consecutive_blocks or state.stop_blocks >= settings.max_blocks:
            return None
        entry = {"type": "hook", "event": "stop", "action": "block", "streak": streak,
                 "session_id": session_id, "timestamp": utc_now()}
        if not _append_quietly(session, entry):
            return None
        return {"decision": "block", "reason": resume_prompt(session, state)}
    if mode == "headless":
        return headless_resume(session, state, session_id)
    return None


def _append_quietly(session, entry):
    try:
        with LogLock(session) as lock:
            loaded = load_state(session)
            if loaded.torn:
                return False
            append_entries(lock, session, loaded, [entry])
        return True
    except (AutotuneError, OSError):
        return False


def _pid_alive(pid):
    """A live process (a zombie, left by an init that does not reap, is not live)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # EPERM: it exists
    try:
        with open("/proc/%d/stat" % pid) as handle:
            stat = handle.read()
        return stat[stat.rindex(")") + 2:].split()[0] not in ("Z", "X")
    except (OSError, ValueError, IndexError):
        return True


def headless_resume(session, state, caller=None):
    """Starts `claude -p ... --agent autotune` detached: at most maxResumes, spaced by
    minMinutesBetween, never while the last one it started is still running."""
    import shutil
    import subprocess
    import uuid
    settings = session.settings
    if state.resume_count >= settings.max_resumes:
        return {"systemMessage": "autotune: not resuming: %d headless resumes used (the limit)." % state.resume_count}
    if state.resume_at and time.time() - state.resume_at < settings.resume_interval_min * 60:
        return None
    pid_file = session.cache("headless.pid", create=True)
    try:
        with open(pid_file) as handle:
            pid_text, _, started_id = handle.read().strip().partition(" ")
        pid = int(pid_text or 0)
        if pid > 0 and started_id != caller and _pid_alive(pid):
            return None  # the last headless session is still live (and is not the caller)
    except (OSError, ValueError):
        pass
    claude = shutil.which("claude")
    if not claude:
        return {"systemMessage": "autotune: cannot resume headless: `claude` is not on PATH."}
    new_id = str(uuid.uuid4())
    log_path = session.cache("headless.log", create=True)
    with open(log_path, "ab") as log_handle:
        proc = subprocess.Popen([claude, "-p", resume_prompt(session, state), "--agent", "autotune",
                                 "--session-id", new_id], cwd=session.workdir,
                                stdin=subprocess.DEVNULL, stdout=log_handle, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    write_atomic(pid_file, ("%d %s" % (proc.pid, new_id)).encode())
    _append_quietly(session, {"type": "resume", "via": "headless", "pid": proc.pid,
                              "session_id": new_id, "timestamp": utc_now()})
    return {"systemMessage": "autotune: resumed the loop in a headless session (resume %d of %d, "
            "pid %d, output in %s)." % (state.resume_count + 1, settings.max_resumes, proc.pid, log_path)}


_OPERATORS = (";", "&&", "||", "|", "&", "(", ")", "<", ">", ">>", "<<", "|&", ";;", "\n")


def shell_tokens(command):
    """A Bash command's words, with operators (; && | ( ) < >) as words of their own;
    None when it does not parse (unbalanced quotes)."""
    import shlex
    try:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|()<>")
        lexer.whitespace_split = True
        lexer.commenters = ""
        return list(lexer)
    except ValueError:
        return None


def classify_run_command(command):
    """Whether a Bash command runs `autotune run`, and whether it does so plainly.

    Returns (invokes_run, plain, run_args): plain means a single simple command
    whose program is autotune (bin/autotune, autotune.py via python, or
    run-experiment.sh), with no operators, substitutions or wrappers around it."""
    import re
    if not isinstance(command, str):
        return False, False, []
    command = command.strip()
    if not re.search(r"(autotune|run-experiment)", command):
        return False, True, []
    mentions = re.search(r"(?:autotune(?:\.py)?['\"]?\s+(?:\S+\s+)*?run\b|run-experiment)", command)
    if not mentions:
        return False, True, []
    tokens = shell_tokens(command)
    if tokens is None:
        return True, False, []
    substitution = "$(" in command or "`" in command or "\n" in command
    words = list(tokens)
    assigned = False
    while words and "=" in words[0] and not words[0].startswith("=") and \
            words[0].split("=", 1)[0].replace("_", "").isalnum():
        words.pop(0)  # leading VAR=value assignments (BASH_ENV=... would fake the benchmark)
        assigned = True
    if words and os.path.basename(words[0]).startswith("python") and len(words) > 1:
        words.pop(0)
    elif words and words[0] in ("bash", "sh") and len(words) > 1 and not words[1].startswith("-"):
        words.pop(0)
    program = os.path.basename(words[0]) if words else ""
    if program in ("run-experiment.sh", "run-experiment"):
        args = words[1:]
    elif program in ("autotune", "autotune.py") and len(words) > 1 and words[1] == "run":
        args = words[2:]
    elif program in ("autotune", "autotune.py", "grep", "egrep", "fgrep", "rg", "cat", "head", "tail",
                     "less", "wc", "echo", "printf") and not substitution and \
            not any(set(t) <= set(";&|()<>") for t in tokens):
        return False, True, []  # on its own, a command whose arguments are data
    else:
        return True, False, []  # `run` reached through a wrapper, or not at its start
    plain = not (substitution or assigned or any(t in _OPERATORS for t in tokens))
    return True, plain, args


def _run_command_values(args):
    values = []
    for i, arg in enumerate(args):
        if arg == "--command":
            values.append(args[i + 1] if i + 1 < len(args) else "")
        elif arg.startswith("--command="):
            values.append(arg[len("--command="):])
    return values


_BENCH_WRITE = ("tee", "cp", "mv", "rm", "truncate", "dd", "install", "ln", "chmod")
_INTERPRETERS = r"\b(?:perl|python3?|ruby|node)\b"
_WRITES_IN_CODE = r"\s-[a-zA-Z]*i\b|open\(|\.write|write_text|unlink|rename|replace\("


def hook_pre_tool_use(payload):
    tool = payload.get("tool_name")
    tool_input = payload.get("tool_input") if isinstance(payload.get("tool_input"), dict) else {}
    if tool == "Bash":
        command = tool_input.get("command")
        if not isinstance(command, str) or ("autotune" not in command and "run-experiment" not in command):
            return None
    elif tool in ("Edit", "Write", "MultiEdit", "NotebookEdit"):
        path = tool_input.get("file_path") or tool_input.get("notebook_path")
        if not isinstance(path, str):
            return None
        cwd = payload.get("cwd") if isinstance(payload.get("cwd"), str) else os.getcwd()
        full = os.path.realpath(os.path.join(cwd, path))
        if os.path.basename(full) not in GUARDED_ALWAYS + GUARDED_UNTIL_BASELINE + ("autotune.py",):
            return None
    else:
        return None
    session, loaded = payload_session(payload)
    if session is None or not loaded.state.active:
        return None
    state = loaded.state
    if tool == "Bash":
        reason = bash_denial(command, session, state)
    else:
        reason = next((guard_reason(name, state) for name in guarded_files(session, state)
                       if _same_path(full, session.path(name))), None)
    if not reason:
        return None
    return {"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "deny",
                                   "permissionDecisionReason": reason}}


def _plain_autotune_call(command):
    """An autotune command on its own (no operators, substitutions or wrappers)."""
    command = command.strip()
    if "$(" in command or "`" in command or "\n" in command:
        return False
    tokens = shell_tokens(command)
    if tokens is None or any(set(t) <= set(";&|()<>") for t in tokens):
        return False
    words = tokens[1:] if tokens and os.path.basename(tokens[0]).startswith("python") else tokens
    return bool(words) and os.path.basename(words[0]) in ("autotune", "autotune.py")


def bash_denial(command, session, state):
    """Why a Bash command must not run during an active segment, or None."""
    import re
    invokes, plain, args = classify_run_command(command)
    if invokes and not plain:
        return ("autotune: `autotune run` must be called on its own, as `autotune run` (optionally "
                "--command ./autotune.sh, --timeout, --repeat): no other commands, pipes, "
                "substitutions, variable assignments or wrappers around it (to change directory, "
                "run `cd DIR` as a command of its own first).")
    if invokes:
        for value in _run_command_values(args):
            if os.path.isfile(session.path(BENCH_FILE)) and not is_benchmark_command(value, session.workdir):
                return ("autotune: %s is not the benchmark. While autotune.sh exists the loop measures "
                        "only ./autotune.sh; run `autotune run` without --command." % json.dumps(value))
        return None
    if _plain_autotune_call(command):
        return None  # `autotune log --description "..."` alone: its arguments are data
    for name in guarded_files(session, state):
        if name not in command:
            continue
        pattern = re.escape(name)
        if (re.search(r">\s*[\"']?(?:\S*/)?%s" % pattern, command)
                or re.search(r"\bsed\b[^|;&]*\s-(?:[a-zA-Z]*i|-in-place)\b[^|;&]*%s" % pattern, command)
                or re.search(r"\b(?:%s)\b[^|;&]*%s" % ("|".join(_BENCH_WRITE), pattern), command)
                and not re.search(r"^\s*(?:cp|install|ln)\s[^|;&<>]*%s[^|;&<>]*\s\S+\s*$" % pattern, command)
                or re.search(r"\bgit\s+(?:checkout|restore|rm|mv|apply|stash)\b[^|;&]*%s" % pattern, command)
                or re.search(_INTERPRETERS, command) and re.search(_WRITES_IN_CODE, command)):
            return guard_reason(name, state)
    return None


GUARDED_UNTIL_BASELINE = INTEGRITY_FILES + (CONFIG_FILE,)
GUARDED_ALWAYS = (LOG_FILE, STATE_FILE)


def guarded_files(session, state):
    """What the agent may not change during an active segment: autotune's own records, a
    copy of autotune.py inside the working directory, and, once the baseline is logged,
    the benchmark, checks, holdout and config (changing them would move the goalposts)."""
    names = list(GUARDED_ALWAYS)
    if state.n_exp:
        names += GUARDED_UNTIL_BASELINE
    me = os.path.realpath(os.path.abspath(__file__))
    if os.path.dirname(me) == os.path.realpath(session.workdir):
        names.append(os.path.basename(me))
    return names


def guard_reason(name, state):
    if name in GUARDED_ALWAYS:
        return ("autotune: %s is autotune's own record of the loop; only autotune writes it "
                "(autotune log, stop, doctor --fix)." % name)
    if name in GUARDED_UNTIL_BASELINE:
        return ("autotune: %s is part of the benchmark of the active segment %d, fixed by its "
                "baseline; changing it mid-segment would move the goalposts. To change it: "
                "`autotune stop`, edit it, then `autotune init` again to start a new segment." % (
                    name, state.segment))
    return "autotune: %s is the loop's own decision engine, not part of the experiment." % name


def hook_session_start(payload):
    session, loaded = payload_session(payload)
    if session is None or not loaded.state.active:
        return None
    context = session_summary(session, loaded)
    return {"hookSpecificOutput": {"hookEventName": "SessionStart", "additionalContext": context}}


def session_summary(session, loaded, recent=6):
    """A compact picture of the loop from the files on disk, for a fresh agent."""
    state = loaded.state
    data = explain_data(session, loaded)
    unit = data.get("unit") or ""
    lines = ["autotune: an optimization loop is active in %s (segment %d of %d)." % (
        session.workdir, state.segment, state.segments)]
    lines.append("Objective: %s — %s%s, %s is better." % (
        data.get("name"), data.get("metric"), (" (%s)" % unit) if unit else "", data.get("direction")))
    objective = _markdown_section(session.path(NOTES_FILE), "objective")
    if objective:
        lines.append("From autotune.md: " + _one_line(objective, 300))
    lines.append("State: %s, %s mode; %s." % (state.health, state.mode, data["why"]))
    lines.append("Next action: %s — %s" % (data["next"], data["next_text"]))
    if data["best"] is not None:
        conf = data.get("confidence") or {}
        lines.append("Best: %s (%s vs baseline %s) at %s, %s; confidence %s." % (
            fmt_metric(data["best"], unit), fmt_pct(data.get("best_pct")), _fmt(data["baseline"]),
            data.get("best_commit"), json.dumps(_one_line(data.get("best_description") or "", 100),
                                                ensure_ascii=False),
            conf.get("label", "-")))
    rows = tail_entries(session, state.config_offset or 0, recent)
    if rows:
        lines.append("Recent runs (newest last):")
        for row in rows:
            asi = row.get("asi") if isinstance(row.get("asi"), dict) else {}
            notes = "; ".join("%s: %s" % (k, _one_line(v, 120)) for k, v in list(asi.items())[:3])
            lines.append("  #%s %s %s %s%s" % (row.get("index"), row.get("status"),
                                                fmt_metric(row.get("metric"), unit),
                                                json.dumps(_one_line(row.get("description") or "", 100),
                                                           ensure_ascii=False),
                                                (" — " + notes) if notes else ""))
    ideas = open_ideas(session.path(IDEAS_FILE))
    if ideas:
        lines.append("Open ideas (autotune.ideas.md): " + " | ".join(ideas[:8]))
    lines.append("Resume: read autotune.md, run `autotune explain`, then continue the loop.")
    if session.config_error:
        lines.append("Warning: %s (defaults apply until a person fixes it)." % session.config_error)
    return "\n".join(lines)


def _markdown_section(path, title):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read(65536)
    except OSError:
        return None
    body, inside = [], False
    for line in text.splitlines():
        if line.startswith("#"):
            if inside:
                break
            inside = line.lstrip("#").strip().lower().startswith(title)
            continue
        if inside and line.strip():
            body.append(line.strip())
    return " ".join(body) or None


def open_ideas(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read(65536).splitlines()
    except OSError:
        return []
    ideas = []
    for line in lines:
        text = line.strip()
        if not text.startswith(("- ", "* ")) or "~~" in text or text[2:].startswith(("[x]", "[X]")):
            continue
        text = text[2:].replace("[ ]", "").strip()
        if text:
            ideas.append(_one_line(text, 120))
    return ideas


HOOKS = ("stop", "pre-tool-use", "session-start")


def cmd_hook(args):
    return run_hook(args.event)


def run_hook(event):
    """Hook entry point: always exits 0; prints a JSON answer or nothing."""
    handler = {"stop": hook_stop, "pre-tool-use": hook_pre_tool_use,
               "session-start": hook_session_start}[event]
    try:
        payload = read_payload()
        answer = handler(payload) if payload else None
    except Exception as exc:  # a hook must never break the user's session
        if os.environ.get("AUTOTUNE_DEBUG"):
            raise
        say("autotune hook %s: %s: %s" % (event, type(exc).__name__, exc), sys.stderr)
        answer = None
    if answer:  # Claude Code shows this text to a person: no control reaches their terminal
        output(clean_data(answer, keep="\n"))
    return 0


def statusline_text(payload, colors):
    """The status line: the loop's health and counters, then Claude's session facts."""
    parts = []
    workspace = payload.get("workspace") if isinstance(payload.get("workspace"), dict) else {}
    cwd = workspace.get("current_dir") or payload.get("cwd")
    session, loaded = payload_session({"cwd": cwd}) if isinstance(cwd, str) else (None, None)
    if session is not None:
        state = loaded.state
        health = strip_controls(state.health or "running", "")
        text = "%s %s" % (HEALTH_ICON.get(health, "●"), health)
        parts.append("autotune " + colors.paint(HEALTH_COLOR.get(health, "bold"), text)
                     + (colors.yellow(" ⚠ config") if session.config_error else ""))
        parts.append("#%d" % state.n_exp)
        parts.append("keep %d · no-imp %d · crash %d" % (state.keep_streak, state.no_improve,
                                                        state.crash_streak))
        parts.append("heals %d/%d" % (state.heals, session.settings.max_heals))
        best = (state.best or {}).get("metric")
        if best is not None:
            base = (state.baseline or {}).get("metric")
            pct = pct_change(best, base)
            parts.append("best %s%s" % (fmt_metric(best, strip_controls((state.config or {}).get("metric_unit") or "", "")),
                                        (" (%s)" % fmt_pct(pct)) if pct is not None else ""))
    cost = payload.get("cost") if isinstance(payload.get("cost"), dict) else {}
    claude = []
    if _is_number(cost.get("total_duration_ms")):
        claude.append("%dm" % int(cost["total_duration_ms"] // 60000))
    if _is_number(cost.get("total_cost_usd")):
        claude.append("$%.2f" % cost["total_cost_usd"])
    window = payload.get("context_window") if isinstance(payload.get("context_window"), dict) else {}
    if _is_number(window.get("used_percentage")):
        claude.append("ctx %d%%" % round(window["used_percentage"]))
    if parts and claude:  # without a loop here, only Claude's facts (a user-wide status line)
        return " · ".join(parts) + " │ " + " · ".join(claude)
    return " · ".join(parts or claude)


def cmd_statusline(args):
    raw = b""
    try:
        raw = sys.stdin.buffer.read(4 << 20)
        payload = json.loads(raw.decode("utf-8", "replace")) if raw.strip() else {}
        if not isinstance(payload, dict):
            payload = {}
    except (ValueError, OSError, RecursionError):
        payload = {}
    colors = Colors(sys.stdout, force=(args.color and "NO_COLOR" not in os.environ) or None)
    try:
        line = statusline_text(payload, colors)
    except Exception as exc:
        if os.environ.get("AUTOTUNE_DEBUG"):
            raise
        line = "autotune: status unavailable (%s)" % type(exc).__name__
    say(line, painted=colors.enabled)
    if args.chain:  # the user's own status line: its colours stay, nothing else of control
        say(strip_controls(chained_statusline(args.chain, raw), sgr=True), painted=True)
    return 0


def chained_statusline(command, payload):
    """Runs another status-line command as an argv (never through a shell or eval)."""
    import shlex
    import subprocess
    try:
        argv = shlex.split(command)
        proc = subprocess.run(argv, input=payload, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              timeout=5)
        return proc.stdout.decode("utf-8", "replace").rstrip("\n")
    except (ValueError, OSError, subprocess.SubprocessError) as exc:
        return "(status-line command failed: %s)" % type(exc).__name__


AGENT_SUBCOMMANDS = ("init", "run", "log", "explain", "status", "dashboard", "report", "export",
                     "rebaseline", "restore", "doctor", "stop", "version", "setup-permissions")


def launchers(root):
    """The ways to call autotune from a shell: the plugin's bin/ (bare on the Bash tool's
    PATH, or absolute), or a copied autotune.py."""
    if os.path.isfile(os.path.join(root, "bin", "autotune")):
        return ["autotune", os.path.join(root, "bin", "autotune")]
    return ["python3 autotune.py", "python3 " + os.path.join(root, "autotune.py")]


def permission_rules(root):
    """Allow rules for what the agent runs: the loop's subcommands (not clear, resume or
    repair, which are the person's), the benchmark, and read-only git."""
    rules = ["Bash(%s %s*)" % (launcher, command) for launcher in launchers(root)
             for command in AGENT_SUBCOMMANDS]
    if os.path.isdir(os.path.join(root, "bin")):
        rules += ["Bash(%s*)" % name for name in ("init-experiment.sh", "run-experiment.sh",
                                                 "log-experiment.sh")]
    return rules + ["Bash(./autotune.sh)", "Bash(bash autotune.sh)", "Bash(./autotune.checks.sh)",
                    "Bash(git status*)", "Bash(git diff*)", "Bash(git log*)", "Bash(git show*)"]


def statusline_command(root):
    script = os.path.join(root, "bin", "statusline.sh")
    if os.path.isfile(script):
        return "%s --color" % _shell_quote(script)
    return ("python3 -I -S -c %s %s statusline --color" % (_shell_quote(
        "import sys; sys.path.insert(0, sys.argv.pop(1)); import autotune; sys.exit(autotune.main())"),
        _shell_quote(root)))


def cmd_setup_permissions(args):
    target = os.path.abspath(args.dir or os.getcwd())
    if not os.path.isdir(target):
        fail("bad_dir", "%s is not a directory." % target)
    path = os.path.join(target, ".claude", "settings.local.json")
    settings = {}
    if os.path.exists(path):
        try:
            with open(path, "rb") as handle:
                settings = json.loads(handle.read().decode("utf-8"))
        except (ValueError, UnicodeDecodeError, OSError) as exc:
            fail("bad_settings", "%s is not valid JSON (%s); fix it first, nothing was changed." % (path, exc))
        if not isinstance(settings, dict):
            fail("bad_settings", "%s does not hold a JSON object; nothing was changed." % path)
    permissions = settings.setdefault("permissions", {})
    if not isinstance(permissions, dict):
        fail("bad_settings", "%s: permissions is not an object; nothing was changed." % path)
    allow = permissions.setdefault("allow", [])
    if not isinstance(allow, list):
        fail("bad_settings", "%s: permissions.allow is not a list; nothing was changed." % path)
    root = os.path.dirname(os.path.realpath(os.path.abspath(__file__)))
    added = [rule for rule in permission_rules(root) if rule not in allow]
    allow.extend(added)
    statusline = None
    if args.statusline:
        statusline = {"type": "command", "padding": 0, "command": statusline_command(root)}
        if settings.get("statusLine") != statusline:
            if settings.get("statusLine") and not args.force:
                fail("statusline_exists", "%s already has a statusLine; pass --force to replace it, or "
                     "chain it: `autotune statusline --chain '<its command>'`." % path)
            settings["statusLine"] = statusline
        else:
            statusline = None
    if added or statusline:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_atomic(path, (json.dumps(settings, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
        exclude_locally(find_repo(target), path)
    result = {"path": path, "added": added, "statusline": bool(statusline),
              "note": "project rules apply only once the folder is trusted in Claude Code"}
    if args.json:
        output(result)
    else:
        say("autotune: %s %s" % (path, ("added %d rule%s" % (len(added), "" if len(added) == 1 else "s"))
                                  if added else "already had every rule")
            + ("; status line set" if statusline else ""))
    return 0


# ---------------------------------------------------------------- rendering ----


class Colors(object):
    """ANSI colors only on a terminal, never with NO_COLOR set or TERM=dumb."""

    CODES = {"red": "31", "green": "32", "yellow": "33", "blue": "34", "magenta": "35",
             "cyan": "36", "dim": "2", "bold": "1"}

    def __init__(self, stream, force=None):
        if force is not None:
            self.enabled = force
        else:
            self.enabled = (hasattr(stream, "isatty") and stream.isatty()
                            and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb")

    def paint(self, name, text):
        return "\033[%sm%s\033[0m" % (self.CODES[name], text) if self.enabled else text

    def __getattr__(self, name):
        if name in Colors.CODES:
            return lambda text: self.paint(name, text)
        raise AttributeError(name)


HEALTH_COLOR = {"improving": "green", "running": "blue", "plateaued": "yellow", "crashing": "red",
                "healing": "magenta", "paused": "red", "completed": "cyan"}
HEALTH_ICON = {"improving": "▲", "running": "●", "plateaued": "■", "crashing": "✖", "healing": "✚",
               "paused": "⏸", "completed": "✔"}
CONF_COLOR = {"high": "green", "marginal": "yellow", "within_noise": "red", "no_signal": "red"}


def _wrap(label, text, width=80, indent=9):
    """Greedy word wrap with a hanging label (textwrap would cost a regex compile)."""
    lines, line, empty = [], label.ljust(indent), True
    for word in text.split():
        if not empty and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = " " * indent + word
        else:
            line += word if empty else " " + word
        empty = False
    lines.append(line)
    return "\n".join(lines)


def render_explain(data, colors):
    data = clean_data(data)
    unit = data.get("unit") or ""
    health = data["health"] or "running"
    lines = ['autotune · %s · segment %s of %s' % (
        json.dumps(data.get("name"), ensure_ascii=False), data["segment"], data["segments"])]
    lines.append("Metric:  %s%s, %s is better · %d run%s: %d kept, %d discarded, %d crashed, %d failed checks" % (
        data.get("metric"), (" (%s)" % unit) if unit else "", data.get("direction"), data["runs"],
        "" if data["runs"] == 1 else "s", data["kept"], data["discarded"], data["crashed"],
        data["checks_failed"]))
    lines.append("")
    state_text = "%s — %s mode, %s" % (health.upper(), data["mode"], "active" if data["active"] else "not active")
    lines.append("State:   " + colors.paint(HEALTH_COLOR.get(health, "bold"), state_text))
    lines.append(_wrap("Why:", data["why"][:1].upper() + data["why"][1:] + "."))
    if data["best"] is not None:
        conf = data.get("confidence") or {}
        conf_text = ""
        if conf.get("label") and conf.get("label") != "insufficient_data":
            score = "∞" if conf.get("infinite") else _fmt(conf.get("score"))
            conf_text = "; confidence %s (%s)" % (score, colors.paint(CONF_COLOR.get(conf["label"], "bold"), conf["label"]))
        best = "%s (%s vs baseline %s) at %s" % (
            fmt_metric(data["best"], unit), fmt_pct(data.get("best_pct")), _fmt(data["baseline"]),
            data.get("best_commit") or "-")
        if data.get("best_description"):
            best += ", %s" % json.dumps(data["best_description"], ensure_ascii=False)
        lines.append(_wrap("Best:", best + conf_text))
    if data.get("last_status"):
        lines.append(_wrap("Last:", "#%s %s %s, %s" % (
            data.get("last_index"), data["last_status"], fmt_metric(data.get("last_metric"), unit),
            json.dumps(data.get("last_description"), ensure_ascii=False))))
    lines.append("Streaks: keep %d · no-improvement %d/%d · crash %d/%d · heals %d/%d%s" % (
        data["keep_streak"], data["no_improve"], data["max_no_improve"], data["crash_streak"],
        data["max_crash_streak"], data["heals"], data["max_heals"],
        (" · budget %d/%d runs" % (data["runs"], data["max_iterations"])) if data.get("max_iterations") else ""))
    lines.append("")
    lines.append(_wrap("Next:", "%s — %s" % (colors.bold(data["next"]), data["next_text"])))
    for warning in data.get("warnings") or []:
        lines.append(_wrap("Warning:", warning))
    return "\n".join(lines)


def render_status(data, colors):
    data = clean_data(data)
    health = data["health"] or "running"
    unit = data.get("unit") or ""
    rows = [
        ("Session", "%s (%s)" % (json.dumps(data.get("name"), ensure_ascii=False), data["path"])),
        ("Mode", colors.bold("ACTIVE") if data["active"] else colors.red("PAUSED")),
        ("Strategy", data["mode"]),
        ("Health", colors.paint(HEALTH_COLOR.get(health, "bold"), "%s %s" % (HEALTH_ICON.get(health, ""), health))),
        ("Reason", data.get("reason") or "-"),
        ("Failures", "%d crash streak / %d no-improvement" % (data["crash_streak"], data["no_improve"])),
        ("Recovery", "%s (heals %d/%d)" % (data.get("recovery") or "-", data["heals"], data["max_heals"])),
        ("Segment", "%s of %s" % (data["segment"], data["segments"])),
        ("Total runs", "%d in this segment, %d in all" % (data["runs"], data["total_runs"])),
        ("Baseline", fmt_metric(data.get("baseline"), unit)),
        ("Best", "%s (%s) at %s" % (fmt_metric(data.get("best"), unit), fmt_pct(data.get("best_pct")),
                                    data.get("best_commit") or "-")),
        ("Next", data["next"]),
    ]
    lines = ["autotune status"] + ["  %-11s %s" % (label + ":", value) for label, value in rows]
    for warning in data.get("warnings") or []:
        lines.append("  " + colors.yellow("warning: ") + warning)
    return "\n".join(lines)


def read_entries(session, start=0):
    """Every parseable entry of the log from byte offset `start` (skipping junk)."""
    entries = []
    with open(session.log_path, "rb") as handle:
        handle.seek(start)
        for raw in handle:
            if not raw.endswith(b"\n"):
                break
            entry = parse_line(raw)
            if entry is not None:
                entries.append(entry)
    return entries


def row_metric(row):
    """The metric a result line contributes: none for a crash, whatever it says."""
    return row.get("metric") if _is_number(row.get("metric")) and row.get("status") != "crash" else None


def segment_rows(entries):
    """Groups log entries into segments: [{"config": {...}, "results": [...]}, ...]."""
    segments = []
    for entry in entries:
        kind = entry.get("type")
        if kind == "config":
            entry = dict(entry)
            for name in ("name", "metric_name", "metric_unit"):  # as the fold does: text
                if not isinstance(entry.get(name), str):
                    entry[name] = "" if entry.get(name) is None else json.dumps(entry[name], ensure_ascii=False)
            if entry.get("direction") not in DIRECTIONS:
                entry["direction"] = "lower"
            number = entry.get("segment") if _is_int(entry.get("segment")) else len(segments) + 1
            if segments and segments[-1]["number"] == number and not segments[-1]["results"]:
                segments[-1]["config"] = entry  # a re-init before any result
            else:
                segments.append({"number": number, "config": entry, "results": []})
        elif kind == "result" and segments and entry.get("status") in STATUSES:
            row = dict(entry)
            for name in ("commit", "description", "verdict", "health", "reason", "failure", "timestamp"):
                value = row.get(name)
                if value is not None and not isinstance(value, str):
                    row[name] = json.dumps(value, ensure_ascii=False)
            segments[-1]["results"].append(row)
    return segments


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values, width):
    """Values squeezed into `width` cells (bucket means), drawn with block characters."""
    present = [v for v in values if v is not None]
    if not present:
        return ""
    if len(values) > width:
        buckets = []
        for i in range(width):
            chunk = [v for v in values[i * len(values) // width:(i + 1) * len(values) // width]
                     if v is not None]
            buckets.append(sum(v / len(chunk) for v in chunk) if chunk else None)  # no overflow
        values = buckets
    low, high = min(present), max(present)
    return "".join(" " if v is None else SPARKS[3] if high == low else
                   SPARKS[int(fraction(v, low, high) * (len(SPARKS) - 1) + 0.5)] for v in values)


def best_so_far(results, direction):
    best, series = None, []
    for row in results:
        metric = row.get("metric") if _is_number(row.get("metric")) else None
        if row.get("status") == "keep" and metric is not None and row.get("improved", True) is not False:
            if best is None or is_better(metric, best, direction):
                best = metric
        series.append(best)
    return series


def dashboard_data(session, loaded, full=False, limit=20):
    state = loaded.state
    data = explain_data(session, loaded)
    results = segment_rows(read_entries(session, state.config_offset or 0))
    results = results[-1]["results"] if results else []
    direction = data.get("direction") or "lower"
    base = data.get("baseline")
    bests = best_so_far(results, direction)
    first = 0 if full else max(0, len(results) - limit)
    rows = []
    for i in range(first, len(results)):
        row, metric = results[i], row_metric(results[i])
        before = bests[i - 1] if i else None  # the best this experiment was judged against
        rows.append({"index": row.get("index"), "status": row.get("status"), "metric": _round(metric),
                     "vs_best_pct": _round(pct_change(metric, before), 2),
                     "vs_baseline_pct": _round(pct_change(metric, base), 2),
                     "commit": row.get("commit"), "description": row.get("description"),
                     "verdict": row.get("verdict"), "timestamp": row.get("timestamp")})
    series = [row_metric(row) for row in results]
    data.update(rows=rows, shown=len(rows), total=len(results),
                trend=sparkline(series, 60), best_trend=sparkline(bests, 60),
                generated=utc_now())
    return data


STATUS_COLOR = {"keep": "green", "discard": "dim", "crash": "red", "checks_failed": "yellow"}


def _plain(text):
    """The text without ANSI color sequences (what a terminal shows)."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\033" and text[i + 1:i + 2] == "[":
            end = text.find("m", i)
            if end > 0:
                i = end + 1
                continue
        out.append(text[i])
        i += 1
    return "".join(out)


def _fit(line, width):
    """A line cut to `width` visible columns (its colors dropped only when it is cut)."""
    plain = _plain(line)
    return line if len(plain) <= width else plain[:width - 1] + "…"


def render_dashboard(data, colors, width=80):
    data = clean_data(data)
    unit = data.get("unit") or ""
    health = data.get("health") or "running"
    conf = data.get("confidence") or {}
    out = []
    stamp, seg = data["generated"], " · segment %s of %s" % (data["segment"], data["segments"])
    name = _one_line(data.get("name") or "", max(10, width - len("autotune · ") - len(seg) - len(stamp) - 1))
    title = "autotune · %s%s" % (name, seg)
    out.append(colors.bold(title) + " " * max(1, width - len(title) - len(stamp)) + stamp)
    out.append("metric %s%s · %s is better · mode %s · %s · %s" % (
        data.get("metric"), (" (%s)" % unit) if unit else "", data.get("direction"), data["mode"],
        colors.paint(HEALTH_COLOR.get(health, "bold"), "%s %s" % (HEALTH_ICON.get(health, "●"), health)),
        "active" if data["active"] else colors.red("not active")))
    out.append("failure %s · recovery %s · heals %d/%d · reason %s" % (
        data.get("failure") or "-", data.get("recovery") or "-", data["heals"], data["max_heals"],
        _one_line(data.get("reason") or "-", 40)))
    out.append("runs %d · kept %s · discarded %s · crashed %s · checks failed %s" % (
        data["runs"], colors.green(str(data["kept"])), data["discarded"], colors.red(str(data["crashed"])),
        colors.yellow(str(data["checks_failed"]))))
    out.append("streaks: keep %d · no-improvement %d/%d · crash %d/%d%s" % (
        data["keep_streak"], data["no_improve"], data["max_no_improve"], data["crash_streak"],
        data["max_crash_streak"], (" · budget %d/%d" % (data["runs"], data["max_iterations"]))
        if data.get("max_iterations") else ""))
    conf_text = "-"
    if conf.get("label"):
        score = ("∞" if conf.get("infinite") else "%.2f" % conf["score"] if conf.get("score") is not None
                 else "")
        conf_text = (score + " " if score else "") + colors.paint(CONF_COLOR.get(conf["label"], "dim"), conf["label"])
    out.append("baseline %s · best %s (%s) at %s · conf %s" % (
        fmt_metric(data.get("baseline"), unit), fmt_metric(data.get("best"), unit),
        fmt_pct(data.get("best_pct")), data.get("best_commit") or "-", conf_text))
    if data.get("trend"):
        out.append("trend  %s" % colors.cyan(data["trend"]))
        out.append("best   %s" % colors.green(data["best_trend"]))
    out.append(_one_line("next   %s — %s" % (data["next"], data["next_text"]), width))
    out.append("")
    if data["rows"]:
        header = "%5s  %-13s %12s %8s  %-7s  %s" % ("#", "status", "metric", "vs best", "commit", "description")
        out.append(colors.bold(header))
        room = max(10, width - 54)
        for row in data["rows"]:
            line = "%5s  %-13s %12s %8s  %-7s  %s" % (
                row["index"], row["status"], _fmt(row["metric"]) if row["metric"] is not None else "-",
                fmt_pct(row["vs_best_pct"]), (row["commit"] or "-")[:7],
                _one_line(row["description"] or "", room))
            out.append(colors.paint(STATUS_COLOR.get(row["status"], "bold"), line))
        if data["shown"] < data["total"]:
            out.append(colors.dim("(%d of %d experiments shown; --full shows all)" % (data["shown"], data["total"])))
    else:
        out.append("no experiments logged in this segment yet")
    for warning in data.get("warnings") or []:
        out.append(colors.yellow("warning: ") + warning)
    return "\n".join(_fit(line, width) for line in out)


def cmd_dashboard(args):
    session = require_session(find_session())
    colors = Colors(sys.stdout)
    if not args.watch:
        loaded = load_state(session)
        data = dashboard_data(session, loaded, full=args.full)
        if args.json:
            output(data)
        else:
            say(render_dashboard(data, colors), painted=colors.enabled)
        return 0
    tty = sys.stdout.isatty()
    try:
        while True:
            loaded = load_state(session)
            text = render_dashboard(dashboard_data(session, loaded, full=args.full), colors)
            say(("\033[H\033[2J" if tty else "") + text + ("" if tty else "\n"), painted=tty)
            time.sleep(args.interval)
    except KeyboardInterrupt:
        say("")
    return 0


def nice_ticks(low, high, count=5):
    """Round tick values (steps of 1, 2 or 5 times a power of ten) covering [low, high];
    just the ends when the range has no round steps a float can hold (1e308, denormals)."""
    import math
    span = high - low if high > low else 1.0
    raw = span / max(1, count - 1)
    try:
        if not raw > 0 or _finite(raw) is None:
            raise ValueError("no step")
        power = 10.0 ** math.floor(math.log10(raw))
        step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
        start = math.floor(low / step) * step
        ticks, value = [], start
        while value <= high + step * 0.5 and len(ticks) < 50:
            ticks.append(round(value, 12))
            value += step
        if not ticks or len(set(ticks)) != len(ticks) or any(_finite(t) is None for t in ticks):
            raise ValueError("steps vanish")
        return ticks
    except (ValueError, OverflowError, ZeroDivisionError, StopIteration):
        return [low] if low == high else [low, high]


def _html(value):
    """A value from the log as HTML text: escaped (quotes too), without control characters."""
    import html
    return html.escape(strip_controls(value if isinstance(value, str) else str(value), ""))


def _svg_chart(group, width=960, height=340):
    """One inline SVG chart of the experiments of consecutive segments sharing a metric."""
    pad_left, pad_right, pad_top, pad_bottom = 64, 16, 38, 40
    points = []
    for segment in group:
        for row in segment["results"]:
            points.append((segment, row))
    values = [row.get("metric") for _, row in points
              if _is_number(row.get("metric")) and row.get("status") != "crash"]
    if not points:
        return ""
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if high == low:
        low, high = low - 1, high + 1
    margin = _finite((high - low) * 0.08) or 0.0
    if _finite(low - margin) is None or _finite(high + margin) is None:
        margin = 0.0
    ticks = nice_ticks(low - margin, high + margin)
    low, high = min(ticks[0], low - margin), max(ticks[-1], high + margin)
    plot_w, plot_h = width - pad_left - pad_right, height - pad_top - pad_bottom
    count = len(points)

    def x_at(i):
        return pad_left + (plot_w * (i + 0.5) / count)

    def y_at(value):
        return pad_top + plot_h * (1 - fraction(value, low, high))

    config = group[0]["config"]
    direction = config.get("direction", "lower")
    unit = config.get("metric_unit") or ""
    parts = ['<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" role="img" '
             'aria-label="%s by experiment">' % (width, height, _html(config.get("metric_name") or ""))]
    parts.append('<rect x="%d" y="%d" width="%d" height="%d" class="plot"/>' % (pad_left, pad_top, plot_w, plot_h))
    for value in ticks:
        y = y_at(value)
        parts.append('<line class="grid" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/>' % (pad_left, width - pad_right, y, y))
        parts.append('<text class="tick" x="%d" y="%.1f" text-anchor="end">%s</text>' % (
            pad_left - 6, y + 4, _html(_fmt(round(value, 9)))))
    every = max(1, nice_ticks(0, count, 8)[1] - nice_ticks(0, count, 8)[0])
    for i in range(0, count, int(every)):
        parts.append('<text class="tick" x="%.1f" y="%d" text-anchor="middle">%d</text>' % (
            x_at(i), height - pad_bottom + 16, i + 1))
    parts.append('<text class="axis" x="%d" y="%d">%s%s (%s is better)</text>' % (
        pad_left, 13, _html(config.get("metric_name") or ""), _html(" [%s]" % unit) if unit else "",
        _html(direction)))
    parts.append('<text class="axis" x="%d" y="%d" text-anchor="end">experiment</text>' % (width - pad_right, height - 6))
    position = 0
    for segment in group:
        first = position
        results = segment["results"]
        seg_conf = segment["config"]
        if first > 0:
            x = pad_left + plot_w * first / count
            parts.append('<line class="segment" x1="%.1f" x2="%.1f" y1="%d" y2="%d"/>' % (x, x, pad_top, pad_top + plot_h))
        parts.append('<text class="segment-label" x="%.1f" y="%d">segment %s: %s</text>' % (
            pad_left + plot_w * first / count + 4, pad_top - 5, segment["number"],
            _html(_one_line(seg_conf.get("name") or "", 40))))
        base = next((r.get("metric") for r in results if _is_number(r.get("metric"))
                     and r.get("status") in ("keep", "discard")), None)
        x0, x1 = pad_left + plot_w * first / count, pad_left + plot_w * (first + len(results)) / count
        if base is not None:
            parts.append('<line class="baseline" x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f"><title>baseline %s</title></line>' % (
                x0, x1, y_at(base), y_at(base), _html(fmt_metric(base, unit))))
        bests = best_so_far(results, seg_conf.get("direction", direction))
        path = []
        for i, value in enumerate(bests):
            if value is None:
                continue
            x = x_at(first + i)
            if path:
                path.append("H%.1f" % x)
            path.append(("M" if not path else "V") + ("%.1f,%.1f" % (x, y_at(value)) if not path
                                                       else "%.1f" % y_at(value)))
        if path:
            path.append("H%.1f" % x1)
        if path:
            parts.append('<path class="best" d="%s"><title>best so far</title></path>' % " ".join(path))
        for i, row in enumerate(results):
            status = row.get("status")
            metric = row.get("metric") if _is_number(row.get("metric")) and status != "crash" else None
            y = y_at(metric) if metric is not None else pad_top + plot_h  # no metric: on the axis
            label = "#%s.%s %s %s — %s" % (segment["number"], row.get("index"), status,
                                           fmt_metric(metric, unit), _one_line(row.get("description") or "", 120))
            parts.append('<circle class="point %s" cx="%.1f" cy="%.1f" r="%s" data-index="%s" data-segment="%s">'
                         '<title>%s</title></circle>' % (
                             _html(status or ""), x_at(first + i), y, "5" if status == "keep" else "4",
                             _html(row.get("index")), segment["number"], _html(label)))
        position += len(results)
    parts.append("</svg>")
    return "\n".join(parts)


REPORT_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1000px;color:#1d2330;padding:0 16px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px} .muted{color:#667}
table{border-collapse:collapse;width:100%;font-size:13px} th,td{padding:4px 6px;border-bottom:1px solid #e3e6ec;text-align:left;vertical-align:top}
th{background:#f5f6f9} td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.badge{display:inline-block;padding:0 6px;border-radius:8px;font-size:12px;color:#fff}
.badge.keep{background:#1a8f4c}.badge.discard{background:#8a94a6}.badge.crash{background:#c9302c}.badge.checks_failed{background:#d98b0a}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:10px 0} .card{border:1px solid #e3e6ec;border-radius:8px;padding:8px 12px;min-width:120px}
.card b{display:block;font-size:18px} svg.chart{width:100%;height:auto;margin:8px 0 0}
svg .plot{fill:#fbfcfd;stroke:#e3e6ec} svg .grid{stroke:#eef0f4} svg .tick,svg .axis,svg .segment-label{font-size:11px;fill:#667}
svg .segment{stroke:#9aa3b5;stroke-dasharray:4 3} svg .baseline{stroke:#5b6b8c;stroke-dasharray:6 4}
svg .best{fill:none;stroke:#1a8f4c;stroke-width:2} svg .point.keep{fill:#1a8f4c}
svg .point.discard{fill:#fff;stroke:#8a94a6;stroke-width:1.5} svg .point.crash{fill:#fff;stroke:#c9302c;stroke-width:2.5}
svg .point.checks_failed{fill:#d98b0a} .asi{color:#445;font-size:12px} .legend span{margin-right:14px}
"""


def _code_spans(escaped):
    """`x` in already escaped text as <code>x</code>."""
    parts = escaped.split("`")
    if len(parts) % 2 == 0:
        return escaped
    return "".join(part if i % 2 == 0 else "<code>%s</code>" % part for i, part in enumerate(parts))


def render_report(session, loaded, entries):
    segments = segment_rows(entries)
    esc = _html
    data = explain_data(session, loaded)
    out = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           '<title>autotune report: %s</title><style>%s</style></head><body>' % (
               esc(data.get("name") or ""), REPORT_CSS)]
    out.append('<h1>autotune report: %s</h1>' % esc(data.get("name") or "-"))
    out.append('<p class="muted">%s · generated %s · %d experiment%s in %d segment%s</p>' % (
        esc(session.workdir), utc_now(), sum(len(s["results"]) for s in segments),
        "" if sum(len(s["results"]) for s in segments) == 1 else "s", len(segments),
        "" if len(segments) == 1 else "s"))
    conf = data.get("confidence") or {}
    cards = [("health", "%s" % data["health"]), ("mode", data["mode"]),
             ("best", fmt_metric(data.get("best"), data.get("unit"))),
             ("vs baseline", fmt_pct(data.get("best_pct"))),
             ("confidence", conf.get("label") or "-"), ("runs", str(data["runs"])),
             ("kept", str(data["kept"])), ("next", data["next"])]
    out.append('<div class="cards">%s</div>' % "".join(
        '<div class="card"><span class="muted">%s</span><b>%s</b></div>' % (esc(k), esc(v)) for k, v in cards))
    out.append('<p>%s. <b>Next:</b> %s</p>' % (esc(data["why"][:1].upper() + data["why"][1:]),
                                               _code_spans(esc(data["next_text"]))))
    groups = []
    for segment in segments:
        key = (segment["config"].get("metric_name"), segment["config"].get("metric_unit"),
               segment["config"].get("direction"))
        if groups and groups[-1][0] == key:
            groups[-1][1].append(segment)
        else:
            groups.append((key, [segment]))
    out.append('<h2>Experiments by index</h2><p class="legend muted"><span style="color:#1a8f4c">● kept</span>'
               '<span>○ discarded</span><span style="color:#c9302c">○ crashed (no metric: on the axis)</span><span style="color:#d98b0a">● checks failed</span>'
               '<span style="color:#1a8f4c">— best so far</span><span>- - baseline</span></p>')
    for _, group in groups:
        out.append(_svg_chart(group))
    out.append('<h2>Segments</h2><table><tr><th>#</th><th>name</th><th>metric</th><th class="num">runs</th>'
               '<th class="num">kept</th><th class="num">discarded</th><th class="num">crashed</th>'
               '<th class="num">failed checks</th><th class="num">baseline</th><th class="num">best</th><th class="num">change</th></tr>')
    for segment in segments:
        config = segment["config"]
        direction = config.get("direction", "lower")
        results = segment["results"]
        base = next((r.get("metric") for r in results if _is_number(r.get("metric"))
                     and r.get("status") in ("keep", "discard")), None)
        best = ([b for b in best_so_far(results, direction) if b is not None] or [None])[-1]
        counts = {s: sum(1 for r in results if r.get("status") == s) for s in STATUSES}
        unit_text = esc(config.get("metric_unit") or "")
        out.append('<tr><td>%s</td><td>%s</td><td>%s (%s%s is better)</td><td class="num">%d</td>'
                   '<td class="num">%d</td><td class="num">%d</td><td class="num">%d</td><td class="num">%d</td>'
                   '<td class="num">%s</td><td class="num">%s</td><td class="num">%s</td></tr>' % (
                       segment["number"], esc(config.get("name") or ""), esc(config.get("metric_name") or ""),
                       unit_text + ", " if unit_text else "", esc(direction), len(results), counts["keep"],
                       counts["discard"], counts["crash"], counts["checks_failed"], esc(_fmt(base)), esc(_fmt(best)),
                       fmt_pct(pct_change(best, base))))
    out.append('</table><h2>All experiments</h2><table><tr><th>#</th><th>status</th><th class="num">metric</th>'
               '<th>verdict</th><th>health</th><th>commit</th><th>description and notes</th></tr>')
    for segment in segments:
        unit = segment["config"].get("metric_unit") or ""
        for row in segment["results"]:
            asi = row.get("asi") if isinstance(row.get("asi"), dict) else {}
            notes = "".join('<div class="asi"><b>%s</b>: %s</div>' % (
                esc(str(k)), esc(_one_line(v if isinstance(v, str) else json.dumps(v, ensure_ascii=False), 400)))
                for k, v in asi.items())
            metric = row_metric(row)
            secondary = row.get("metrics") if isinstance(row.get("metrics"), dict) else {}
            if secondary and row.get("status") != "crash":
                notes = '<div class="asi">%s</div>' % esc(" · ".join(
                    "%s %s" % (k, _fmt(v)) for k, v in sorted(secondary.items()) if _is_number(v))) + notes
            reason = row.get("reason") if isinstance(row.get("reason"), str) else ""
            health = esc(str(row.get("health") or "-"))
            if reason.startswith("heal:") or reason == "recovery_exhausted":
                health += '<div class="asi">%s → %s</div>' % (esc(str(row.get("failure") or "-")), esc(
                    reason[5:] if reason.startswith("heal:") else "pause"))
            out.append('<tr><td>%s.%s</td><td><span class="badge %s">%s</span></td><td class="num">%s</td>'
                       '<td>%s</td><td>%s</td><td><code>%s</code></td><td>%s%s</td></tr>' % (
                           segment["number"], esc(str(row.get("index"))), esc(row.get("status") or ""),
                           esc(row.get("status") or ""), esc(fmt_metric(metric, unit)),
                           esc(row.get("verdict") or "-"), health, esc(row.get("commit") or "-"),
                           esc(row.get("description") or ""), notes))
    out.append('</table><p class="muted">Made by autotune %s from %s.</p></body></html>' % (VERSION, LOG_FILE))
    return "\n".join(out) + "\n"


def write_output_file(session, name, data, flag):
    """Writes a file the user named: never a session file, never renamed over a device
    or a symlink (written through them instead); errors are one line."""
    import fnmatch
    path = os.path.abspath(name)
    real = os.path.realpath(path)
    workdir = os.path.realpath(session.workdir)
    if any(real == os.path.join(workdir, p) for p in PROTECTED_FILES) or (
            os.path.dirname(real) == workdir and
            any(fnmatch.fnmatch(os.path.basename(real), g) for g in PROTECTED_GLOBS)):
        fail("bad_path", "%s %s is one of autotune's session files; choose another name." % (flag, name))
    if os.path.isdir(path):
        fail("bad_path", "%s %s is a directory; give a file name." % (flag, name))
    if not os.path.isdir(os.path.dirname(path)):
        fail("bad_path", "%s: the directory of %s does not exist." % (flag, name))
    try:
        if os.path.islink(path) or (os.path.exists(path) and not os.path.isfile(path)):
            with open(path, "wb") as handle:
                handle.write(data)
        else:
            write_atomic(path, data)
    except OSError as exc:
        fail("io_error", "Cannot write %s (%s)." % (name, exc.strerror or exc))
    if session.repo is not None and _is_inside(real, workdir) and os.path.isfile(real):
        exclude_locally(session.repo, real)  # a report is not part of the next experiment
    return path


def cmd_report(args):
    session = require_session(find_session())
    loaded = load_state(session)
    entries = read_entries(session)
    if args.html:
        path = write_output_file(session, args.html, render_report(session, loaded, entries).encode("utf-8"),
                                 "--html")
        count = sum(len(s["results"]) for s in segment_rows(entries))
        if args.json:
            output({"path": path, "experiments": count})
        else:
            say("autotune: wrote %s (%d experiments)" % (path, count))
        return 0
    data = explain_data(session, loaded)
    segments = segment_rows(entries)
    if args.json:
        output({"summary": data, "segments": [{"number": s["number"], "config": s["config"],
                                                "results": len(s["results"])} for s in segments]})
        return 0
    lines = ["# autotune report: %s" % (data.get("name") or "-"), ""]
    lines.append("%s. Next: %s" % (data["why"][:1].upper() + data["why"][1:], data["next_text"]))
    for segment in segments:
        config = segment["config"]
        unit = config.get("metric_unit") or ""
        lines += ["", "## Segment %s: %s (%s, %s is better)" % (segment["number"], config.get("name"),
                                                                  config.get("metric_name"), config.get("direction")),
                  "", "| # | status | metric | description |", "|---|---|---|---|"]
        for row in segment["results"]:
            if row.get("status") == "keep":
                lines.append("| %s | keep | %s | %s |" % (row.get("index"), fmt_metric(row.get("metric"), unit),
                                                         _one_line(row.get("description") or "", 100).replace("|", "\\|")))
        lines.append("")
        lines.append("%d experiments: %d kept, %d discarded, %d crashed or failed checks." % (
            len(segment["results"]), sum(1 for r in segment["results"] if r.get("status") == "keep"),
            sum(1 for r in segment["results"] if r.get("status") == "discard"),
            sum(1 for r in segment["results"] if r.get("status") in CRASH_STATUSES)))
    say("\n".join(lines))
    return 0


def cmd_export(args):
    import csv
    import io
    session = require_session(find_session())
    segments = segment_rows(read_entries(session))
    if args.segment is not None:
        segments = [s for s in segments if s["number"] == args.segment]
        if not segments:
            fail("no_such_segment", "There is no segment %d in %s." % (args.segment, LOG_FILE))
    rows = [(s, r) for s in segments for r in s["results"]]
    if args.format == "jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False, allow_nan=False).translate(_JSON_C1) + "\n"
                       for _, r in rows)
    else:
        names = sorted({k for _, r in rows if isinstance(r.get("metrics"), dict) for k in r["metrics"]})
        metric_names = {s["config"].get("metric_name") for s in segments
                        if isinstance(s["config"].get("metric_name"), str)}
        metric_column = metric_names.pop() if len(metric_names) == 1 else "metric"
        header = ["commit", metric_column, "status", "description", "segment", "index", "timestamp",
                  "verdict", "health", "reason"] + names
        table = [header]
        for segment, row in rows:
            metrics = row.get("metrics") if isinstance(row.get("metrics"), dict) else {}
            table.append([row.get("commit"), row_metric(row), row.get("status"), row.get("description"),
                          segment["number"], row.get("index"), row.get("timestamp"), row.get("verdict"),
                          row.get("health"), row.get("reason")] + [metrics.get(n) for n in names])
        tsv = args.format == "tsv"
        # every cell is data: numbers as numbers, text never a formula (spreadsheet_cell)
        table = [[spreadsheet_cell(" ".join(cell.split()) if tsv and isinstance(cell, str) else cell)
                  for cell in line] for line in table]
        if tsv:
            text = "".join("\t".join(" ".join(cell.split()) for cell in line) + "\n" for line in table)
        else:
            buffer = io.StringIO()
            csv.writer(buffer, lineterminator="\n").writerows(table)
            text = buffer.getvalue()
    if args.output:
        write_output_file(session, args.output, text.encode("utf-8"), "--output")
        say("autotune: wrote %d rows to %s" % (len(rows), args.output), sys.stderr)
    else:
        sys.stdout.buffer.write(text.encode("utf-8", "replace"))
    return 0


# ---------------------------------------------------------------------- CLI ----

def _type_error(message):
    import argparse
    return argparse.ArgumentTypeError(message)


def make_parser_class():
    """argparse, imported only when a command line needs parsing (the hooks, called on
    every tool use, skip it), with errors that are AutotuneErrors (JSON for the agent)."""
    import argparse

    class Parser(argparse.ArgumentParser):
        def __init__(self, *args, **kwargs):
            argparse.ArgumentParser.__init__(self, *args, **kwargs)
            # `--metric -1.79e308` is a value, not an option (argparse knows only -5, -.5)
            import re
            self._negative_number_matcher = re.compile(r"^-(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$")

        def error(self, message):
            shown = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                            for ch in message)
            fail("usage", "%s: %s (see `%s --help`)." % (self.prog, shown, self.prog), exit_code=2)

    return Parser


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise _type_error("must be a whole number, got %r" % text)
    if not 1 <= value <= 10000:
        raise _type_error("must be from 1 to 10000, got %d" % value)
    return value


def _seconds(text):
    import math
    try:
        value = float(text)
    except ValueError:
        raise _type_error("must be a number of seconds, got %r" % text)
    if not math.isfinite(value) or value <= 0 or value > 7 * 86400:
        raise _type_error("must be more than 0 and at most a week, got %r" % text)
    return value


def _repeat(text):
    return "auto" if text == "auto" else _positive_int(text)


def build_init(p):
    p.add_argument("--name", required=True, help="what this loop optimizes, in a few words")
    p.add_argument("--metric", required=True, help="the primary metric name printed by autotune.sh")
    p.add_argument("--unit", default="", help="unit of the metric, e.g. ms, KB, ops/s")
    p.add_argument("--direction", required=True, choices=DIRECTIONS, help="which way is better")
    p.add_argument("--scaffold", action="store_true",
                   help="write templates for autotune.sh, autotune.md, autotune.ideas.md (never overwrites)")
    p.add_argument("--benchmark", metavar="CMD",
                   help="with --scaffold and a time unit: autotune.sh times CMD and prints the metric")
    p.add_argument("--checks", metavar="CMD", help="with --scaffold: write autotune.checks.sh running CMD")


def build_run(p):
    p.add_argument("--command", help="the benchmark command (default ./autotune.sh; only it while it exists)")
    p.add_argument("--timeout", type=_seconds, help="seconds per benchmark execution (default 600)")
    p.add_argument("--checks-timeout", type=_seconds, help="seconds for autotune.checks.sh (default 300)")
    p.add_argument("--repeat", type=_repeat, help="samples per run: N or auto (default: config or auto)")


def build_log(p):
    p.add_argument("--status", required=True, choices=STATUSES + ("auto",),
                   help="keep commits, the others revert; auto applies run's suggested status")
    p.add_argument("--description", required=True, help="what this experiment changed")
    p.add_argument("--metric", help="the primary metric (default: what `run` measured)")
    p.add_argument("--metrics", help="secondary metrics as a JSON object (default: measured)")
    p.add_argument("--asi", help="annotations as a JSON object: hypothesis, observation, next...")
    p.add_argument("--commit", help="record this commit instead of committing (keep)")
    p.add_argument("--force", action="store_true", help="override a refusal (recorded in the log)")
    p.add_argument("--reason", help="why a refusal is overridden (needed to keep a failed run)")


def build_json_only(p):
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def build_stop(p):
    build_json_only(p)
    p.add_argument("--reason", help="why the loop is stopped (shown by explain)")


def build_clear(p):
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")


def build_rebaseline(p):
    p.add_argument("--repeat", type=_positive_int, help="samples (default %d)" % DEFAULT_REBASELINE)
    p.add_argument("--timeout", type=_seconds, help="seconds per execution (default 600)")


def build_restore(p):
    build_json_only(p)
    p.add_argument("index", nargs="?", type=_discard_label,
                   help="the discarded experiment: its index (7) or its label (1.7, 1.7-2)")
    p.add_argument("--segment", type=_positive_int, help="its segment (default: the current one)")
    p.add_argument("--list", action="store_true", help="list the saved discarded experiments")


def build_doctor(p):
    build_json_only(p)
    p.add_argument("--fix", action="store_true", help="repair what is safe to repair")


def build_start(p):
    p.add_argument("goal", nargs="*", help="an optional goal for the agent")


def build_dashboard(p):
    build_json_only(p)
    p.add_argument("--watch", action="store_true", help="redraw every 2 s until Ctrl-C")
    p.add_argument("--full", action="store_true", help="all experiments, not the last 20")
    import argparse
    p.add_argument("--interval", type=_seconds, default=2.0, help=argparse.SUPPRESS)


def build_report(p):
    build_json_only(p)
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML report with charts")


def build_export(p):
    p.add_argument("--format", choices=("tsv", "csv", "jsonl"), default="tsv", help="default tsv")
    p.add_argument("--segment", type=_positive_int, help="only this segment (default: all)")
    p.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")


def build_hook(p):
    p.add_argument("event", choices=HOOKS,
                   help="the Claude Code hook event; the payload is read from stdin")


def build_statusline(p):
    p.add_argument("--chain", metavar="CMD", help="another status-line command to run after this one")
    p.add_argument("--color", action="store_true", help="ANSI colors (Claude Code renders them)")


def build_setup_permissions(p):
    build_json_only(p)
    p.add_argument("dir", nargs="?", help="the project directory (default: here)")
    p.add_argument("--statusline", action="store_true", help="also set autotune's status line there")
    p.add_argument("--force", action="store_true", help="replace an existing statusLine")


COMMANDS = {
    # name: (function, parser builder, one-line help)
    "init": (cmd_init, build_init, "start a session (a new segment): name, metric, direction"),
    "run": (cmd_run, build_run, "run the benchmark (and checks): metrics, verdict, suggested status"),
    "log": (cmd_log, build_log, "record a result: keep commits, discard/crash/checks_failed revert"),
    "explain": (cmd_explain, build_json_only, "what state the loop is in, why, and what to do next"),
    "status": (cmd_status, build_json_only, "a short status of the session"),
    "stop": (cmd_stop, build_stop, "pause the loop (data kept)"),
    "resume": (cmd_resume, build_json_only, "make a stopped or paused loop active again"),
    "repair": (cmd_repair, build_json_only, "put the loop in repair mode (manual_repair)"),
    "rebaseline": (cmd_rebaseline, build_rebaseline, "re-measure the kept code to refresh the noise estimate"),
    "restore": (cmd_restore, build_restore, "bring a discarded experiment back into the working tree"),
    "doctor": (cmd_doctor, build_doctor, "check the session files and git state; --fix repairs"),
    "clear": (cmd_clear, build_clear, "delete the log and state (asks first)"),
    "dashboard": (cmd_dashboard, build_dashboard, "the loop at a glance (--watch to follow it)"),
    "report": (cmd_report, build_report, "a summary; --html FILE writes a report with charts"),
    "export": (cmd_export, build_export, "the results as tsv, csv or jsonl"),
    "start": (cmd_start, build_start, "launch `claude --agent autotune` here"),
    "version": (cmd_version, build_json_only, "print the version"),
    "hook": (cmd_hook, build_hook, "Claude Code hook entry point (stop, pre-tool-use, session-start)"),
    "statusline": (cmd_statusline, build_statusline, "the Claude Code status line (payload on stdin)"),
    "setup-permissions": (cmd_setup_permissions, build_setup_permissions,
                          "merge autotune's allow rules into DIR/.claude/settings.local.json"),
}


def build_parser(only=None):
    Parser = make_parser_class()
    parser = Parser(prog="autotune", description="Autonomous optimization loops: edit, "
                    "benchmark, keep what improves the metric, revert the rest.")
    parser.add_argument("--version", action="version", version="autotune %s" % VERSION)
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND", parser_class=Parser)
    for name, (_, builder, summary) in COMMANDS.items():
        if only is not None and name != only:
            continue
        builder(sub.add_parser(name, help=summary, description=summary))
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    wants_json = command in AGENT_COMMANDS or "--json" in argv
    if command == "hook" and len(argv) == 2 and argv[1] in HOOKS:
        return run_hook(argv[1])  # the hot path: no command-line parser needed
    try:
        parser = build_parser(command)
        if not argv:
            parser.print_help()
            return 2
        args = parser.parse_args(argv)
        return COMMANDS[args.subcommand][0](args) or 0
    except AutotuneError as exc:
        if wants_json:
            output({"error": exc.code, "message": exc.message})
        else:
            text = exc.message if exc.message.startswith("autotune") else "autotune: " + exc.message
            say(text, sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        say("autotune: interrupted", sys.stderr)
        return getattr(exc, "exit_code", 130)
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug: say so in one line, the traceback on request
        if os.environ.get("AUTOTUNE_DEBUG"):
            raise
        message = "internal error: %s: %s (set AUTOTUNE_DEBUG=1 for the traceback)" % (
            type(exc).__name__, exc)
        if wants_json:
            output({"error": "internal", "message": message})
        else:
            say("autotune: " + message, sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
