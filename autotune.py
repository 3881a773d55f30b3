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
    autotune.jsonl        append-only log; one config line per segment, one measurement
                          line per `run`, one result per experiment, one line per
                          `verify`. It is the truth: everything else derives from it.
    .autotune.state       a cache of the fold of the log (rebuilt when missing or stale)
    autotune.md, autotune.ideas.md   the agent's living notes and idea backlog
    autotune.sh           the benchmark; prints `METRIC name=value` lines
    autotune.checks.sh    optional correctness checks, run after a passing benchmark
    autotune.holdout.sh   optional holdout workload, run before a keep is accepted
    autotune.config.json  optional configuration
Private caches live in <git dir>/autotune/<key>/: the snapshot index that lets a revert
restore exactly the state before the experiment, a display copy of the last run's
measurement (`log` reads the measurement line in the log, never this copy), the journal
of a swap of the kept code in and out during interleaved sampling, the journal naming
duet mode's temporary copy of the kept code (so a killed run's copy is removed), the
benchmark lock, and the sorted metric values behind the confidence score.

Design. A functional core and an imperative shell: parsing, statistics, the fold of the
log into state, and the health machine are pure functions of plain data; files, git
and processes are touched only at the edges. Records are small __slots__ classes
(importing dataclasses costs more than the whole interpreter start-up, and every call
is one process in the agent's inner loop); heavy modules are imported where used.

Sections are layers; each uses only what is above it: foundations (constants to
records); pure core (metric lines to views); shell (files to projects); edges (output to
CLI).

Sections: constants, errors, text and numbers, records, metric lines, configuration,
arguments, statistics, decision, diagnosis, health, the fold, views, files, git,
snapshots, storage, inputs, keep and restore, processes, projects, output, text
rendering, HTML report, init, run, log, rebaseline and verify, person commands, doctor,
shell words, write targets, hooks, command guard, Claude Code integration, CLI.

Tests: `make test` drives this file as a black box in scratch git repositories.
"""

import json
import os
import sys
import time


# ============================================================== FOUNDATIONS ====

# ---------------------------------------------------------------- constants ----

VERSION = "1.2.0"

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
HEALTHS = ("running", "improving", "plateaued", "crashing", "healing", "paused", "stopped", "completed")
# how `run` judges a noisy benchmark: the best and the candidate measured alternately in
# the same time window, or (the old bash scripts' rule) against the best's earlier samples
EVAL_MODES = ("interleaved", "reference", "duet")
DUET_SPARE_CORES = 2       # duet mode: cores that must be idle (CPUs minus the 1-minute load)
AUTO_RESUME_MODES = ("prompt", "headless", "off", "continue")
# Verdicts after which a keep needs --force and --reason.
BLOCKING_VERDICTS = ("crash", "timeout", "checks_failed", "guardrail_failed", "holdout_failed", "worse")
# Verdicts of a result equal to the best: the simplicity rule decides keep or discard.
EQUAL_VERDICTS = ("unchanged", "within_noise")

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
OUTLIER_FACTOR = 5.0       # a pair this many median magnitudes off was disturbed (load)
FIRST_PAIRS = 5            # interleaved: the first look (2^-5 is the smallest p of 5 pairs)
CONTENTION_MIN_WALL = 0.2  # seconds: shorter executions get no contention reading (10 ms jiffies)
CONTENTION_GAP = 0.25      # a pair whose sides had CPU shares this much apart (relative) is set aside
STALL_GAP = 0.5            # ... or whose CPU-pressure stall fractions differ by this much
DEFAULT_REBASELINE = 5
DEFAULT_HOLDOUT_TOLERANCE_PCT = 5.0
VERIFY_PAIRS = 10          # `verify`: pairs of (baseline commit, best commit) executions
HOLDOUT_PAIRS = 3          # interleaved holdout: pairs of (kept code, candidate) executions
DEFAULT_MAX_RESUMES = 20
DEFAULT_RESUME_INTERVAL_MIN = 5.0
DEFAULT_MAX_CONSECUTIVE_BLOCKS = 6
DEFAULT_MAX_BLOCKS = 200
DEFAULT_MAX_FILE_MB = 50   # untracked files larger than this are recorded, not snapshotted

OUTPUT_TAIL_LINES, OUTPUT_TAIL_BYTES = 50, 4096
CHECKS_TAIL_LINES, CHECKS_TAIL_BYTES = 20, 2048
MAX_LINE_BYTES = 65536        # a longer output line is cut (METRIC lines are short)
MAX_TEXT_CHARS = 20000        # descriptions and reasons
MAX_JSON_ARG_CHARS = 200000   # --metrics / --asi
STATE_FORMAT = 6              # bump when the state cache changes shape

AGENT_COMMANDS = ("init", "run", "log", "rebaseline", "verify", "hook", "detect")

# Ecosystems. Lockfiles pin what is installed: their SHA-256 is part of every result's
# environment record, and a keep or discard that changes one (or a manifest) names the
# command that brings the installed dependencies back in line with the code.
LOCKFILES = ("package-lock.json", "npm-shrinkwrap.json", "yarn.lock", "pnpm-lock.yaml", "bun.lockb",
             "bun.lock", "uv.lock", "poetry.lock", "Pipfile.lock", "pdm.lock", "Cargo.lock",
             "go.sum", "Gemfile.lock", "composer.lock")
LOCKFILE_GLOBS = ("requirements*.txt",)
LOCK_SUFFIXES = (".json", ".lock", ".yaml", ".lockb", ".sum", ".txt")  # tells a lockfile from a tool
MANIFESTS = ("package.json", "pyproject.toml", "setup.py", "setup.cfg", "Pipfile", "Cargo.toml",
             "go.mod", "Gemfile", "composer.json")
# (marker files, tools): a project with any marker uses these toolchains
TOOLCHAIN_MARKERS = (
    (("package.json",), ("node", "npm")),
    (("pnpm-lock.yaml",), ("pnpm",)),
    (("yarn.lock",), ("yarn",)),
    (("bun.lockb", "bun.lock"), ("bun",)),
    (("Cargo.toml",), ("cargo", "rustc")),
    (("go.mod",), ("go",)),
    (("pom.xml", "build.gradle", "build.gradle.kts"), ("java",)),
    (("pyproject.toml", "setup.py", "setup.cfg", "tox.ini", "Pipfile", "uv.lock", "poetry.lock",
      "requirements.txt"), ("python",)),
    (("uv.lock",), ("uv",)),
    (("poetry.lock",), ("poetry",)),
    (("Gemfile",), ("ruby",)),
)
# the argv that prints a tool's version (java prints it on stderr; both are read)
VERSION_ARGV = {"go": ("version",), "java": ("-version",)}
TOOLCHAIN_CACHE_SECONDS = 3600  # a version manager can switch a tool behind the same path
DEFAULT_BENCH_ENV = (("NO_COLOR", "1"), ("FORCE_COLOR", "0"))
SYNC_TAIL_LINES, SYNC_TAIL_BYTES = 20, 2048


# ------------------------------------------------------------------- errors ----

class AutotuneError(Exception):
    """An expected failure: one clear sentence, a stable code, nothing written."""

    def __init__(self, code, message, exit_code=1):
        Exception.__init__(self, message)
        self.code = code
        self.message = message
        self.exit_code = exit_code


def fail(code, message, exit_code=1):
    raise AutotuneError(code, message, exit_code)


# --------------------------------------------------------- text and numbers ----

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


def percent_of(amount, reference):
    """`amount` as a percentage of |reference| (reference not zero): the one formula
    behind every percent change, regression and noise figure; may be inf (callers
    that show it pass it through _finite or _round)."""
    return amount / abs(reference) * 100.0


def pct_change(value, reference):
    """(value - reference) / |reference| in percent, or None when there is no reference
    or the result overflows a float (a denormal reference, opposite huge values)."""
    if value is None or not reference:
        return None
    return _finite(percent_of(value - reference, reference))


def sigma_pct(sigma, reference):
    """A noise figure (a robust sigma) as a percentage of the value it is noise around,
    or None when there is no noise or no reference to scale it by."""
    return percent_of(sigma, reference) if sigma and reference else None


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
_SEQUENCE_STARTS = ("\x1b", "\x9b") + tuple(sorted(_C1_STRING))  # ESC, CSI and the C1 strings
_control_search = {}


def _search_for(sequences_only):
    """The compiled search for the next character strip_controls acts on: every control,
    or only the starts of escape sequences."""
    if sequences_only not in _control_search:
        import re
        chars = "".join(_SEQUENCE_STARTS) if sequences_only else "\x00-\x1f\x7f-\x9f"
        _control_search[sequences_only] = re.compile("[%s]" % chars).search
    return _control_search[sequences_only]


def strip_controls(text, keep="\n", sgr=False, sequences_only=False):
    """The text without terminal control: whole escape sequences (CSI, OSC, DCS, ... and
    their 8-bit C1 forms) are removed, tab, CR, VT and FF become spaces, newlines stay
    when in `keep` (else spaces), every other C0/C1 control and DEL is removed. With
    `sgr`, colour sequences (ESC [ digits ; ... m) are kept: only for the output of the
    user's own status-line command. With `sequences_only`, only the escape sequences
    (and a lone ESC) go and every other character stays: for captured output tails,
    stored as the program wrote them and stripped again when shown. Text without
    controls costs one C-level pass."""
    if not isinstance(text, str):
        text = str(text)
    if sequences_only:
        if not any(start in text for start in _SEQUENCE_STARTS):
            return text
    else:
        controls = len(text) - len(text.translate(_CONTROL_TABLE))
        if not controls or controls == sum(text.count(k) for k in keep):
            return text
    search = _search_for(sequences_only)
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
            if sequences_only:
                out.append(ch if ch != "\x1b" else "")
            elif ch in "\t\r\x0b\x0c\n":
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


def clean_tail(text):
    """A captured output tail as a terminal would show it: escape sequences (colours,
    cursor moves, OSC titles and links) removed by strip_controls, and of a line redrawn
    with carriage returns (a progress bar) only its last state kept. Test runners colour
    their output; an agent reads these tails as text."""
    text = strip_controls(text, sequences_only=True)
    if "\r" not in text:
        return text
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if "\r" in line:
            line = line.rstrip("\r")
            lines[i] = line[line.rfind("\r") + 1:]
    return "\n".join(lines)


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


def _reject_constant(name):
    raise ValueError("%s is not a number JSON allows" % name)


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


# ------------------------------------------------------------------ records ----

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
        ("min_improvement_pct", 0.0), ("eval_mode", "interleaved"),
        ("guardrails", dict),
        ("holdout_tolerance_pct", DEFAULT_HOLDOUT_TOLERANCE_PCT),
        ("timeout", DEFAULT_TIMEOUT), ("checks_timeout", DEFAULT_CHECKS_TIMEOUT),
        ("max_resumes", DEFAULT_MAX_RESUMES), ("resume_interval_min", DEFAULT_RESUME_INTERVAL_MIN),
        ("max_consecutive_blocks", DEFAULT_MAX_CONSECUTIVE_BLOCKS), ("max_blocks", DEFAULT_MAX_BLOCKS),
        ("max_file_bytes", int(DEFAULT_MAX_FILE_MB * (1 << 20))),
        ("sync_command", None), ("env", dict),
        ("protect", list), ("protect_defaults", True),
        # one line each, naming the file and the key: accepted with a note / broken
        ("warnings", list), ("errors", list),
    )
    __slots__ = tuple(name for name, _ in FIELDS)


class Result(Record):
    """One `result` line of the log: the fields the old bash scripts wrote (always
    written, in their order), then ours (written when set)."""

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
        ("diagnosis", None), ("rule", None),
        ("judge", None), ("inputs", None), ("measurement", None),
    )
    __slots__ = tuple(name for name, _ in FIELDS)
    LEGACY_FIELDS = 16

    def to_entry(self):
        return {name: value for i, (name, value) in enumerate(self.to_dict().items())
                if i < self.LEGACY_FIELDS or value is not None}


class State(Record):
    """The fold of the log: the fields .autotune.state has always had (the old bash
    scripts read and wrote them) first, then the segment summary.

    Written to .autotune.state as a cache keyed by the log's size, so a call reads
    only what was appended since (history-independent cost).
    """

    FIELDS = (
        ("active", False), ("mode", "optimize"), ("health", "running"), ("failure", None),
        ("reason", None), ("recovery", None), ("heals", 0), ("no_improve", 0),
        # `failures` is the crash streak under the name the old bash scripts gave it
        ("failures", 0), ("crash_streak", 0), ("keep_streak", 0), ("n_exp", 0),
        ("resume_count", 0), ("resume_at", 0), ("exp_at", None), ("progress_at", None),
        # segment summary
        ("segment", 0), ("segments", 0), ("config", None), ("config_offset", None),
        ("started_at", None), ("session_id", None),
        ("kept", 0), ("discarded", 0), ("crashed", 0), ("checks_failed", 0), ("timed_out", 0),
        # the kinds (crash, timeout, checks_failed) of the current failure streak, oldest first
        ("streak_kinds", list),
        ("metric_points", 0), ("total_results", 0), ("measured_results", 0), ("hashes", None),
        ("baseline", None), ("best", None), ("reference", None), ("last", None),
        ("confidence", None), ("snapshot", None), ("metric_names", None),
        ("stop_streak", 0), ("stop_blocks", 0), ("stopped_by", None), ("rebaselined_at", None),
        ("toolchain", None), ("last_toolchain", None), ("resume_capped", None),
        ("judge", None), ("inputs", None), ("pending", None),
        # when and where (byte offset) a line last set `active`: control, config, our result
        ("set_at", None), ("set_offset", None), ("verified", None),
        # cache bookkeeping
        ("format", STATE_FORMAT), ("log_size", 0), ("log_tail", ""), ("lines", 0),
        ("bad_lines", 0), ("bad_line_numbers", list),
    )
    __slots__ = tuple(name for name, _ in FIELDS)


class Outcome(Record):
    """One execution of a benchmark, checks or holdout script."""

    FIELDS = (("exit", None), ("dur", 0.0), ("timeout", False), ("metrics", dict),
              ("output", ""), ("error", None), ("dropped", 0), ("contention", None))
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
        ("diagnosis", None), ("status_rule", None),
        ("inputs", None), ("judge", None),
        ("reference", None),  # the kept code's samples, when `run` measured it first
        ("paired", None), ("load", None),
    )
    __slots__ = tuple(name for name, _ in FIELDS)


# ================================================================ PURE CORE ====

# ------------------------------------------------------------- metric lines ----

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


# ------------------------------------------------------------ configuration ----

# The configuration file, one row per key: (dotted path, kind, Settings field, options).
# A row applies when its key is present and not null; a later row overrides an earlier
# one (budget.maxIterations beats maxIterations). The first part of a dotted path is a
# section, which must be an object. Keys of the old bash scripts that mean nothing
# here any more are "retired": accepted, with a warning saying what does that job now.
CONFIG_SCHEMA = (
    ("workingDir", "str", "working_dir", {}),
    ("maxIterations", "iterations", "max_iterations", {}),
    ("autoResume", "choice", "auto_resume", {"choices": AUTO_RESUME_MODES}),
    ("mode", "choice", "mode", {"choices": MODES}),
    ("repeat", "repeat", "repeat", {}),
    ("health.maxNoImprovementRuns", "int", "max_no_improve", {"low": 1}),
    ("health.maxCrashStreak", "int", "max_crash_streak", {"low": 1}),
    ("health.maxFlakyRetries", "retired", None, {"now": (
        "a noisy benchmark is sampled until the verdict is clear, up to evaluator.maxSamples")}),
    ("health.stuckTimeoutSeconds", "retired", None, {"now": (
        "a benchmark execution is killed after timeouts.benchmark seconds (default 600)")}),
    ("recovery.playbooks", "playbooks", "playbooks", {}),
    ("recovery.maxHealingAttempts", "int", "max_heals", {"low": 0}),
    ("recovery.pauseOnExhaustedRecovery", "bool", "pause_on_exhausted", {}),
    ("budget.maxIterations", "iterations", "max_iterations", {}),
    ("budget.target", "number", "target", {}),
    ("budget.maxMinutes", "number", "max_minutes", {"low": 0.001}),
    ("evaluator.repeat", "repeat", "repeat", {}),
    ("evaluator.maxSamples", "int", "max_samples", {"low": 1, "high": 1000}),
    ("evaluator.alpha", "number", "alpha", {"low": 0.0001, "high": 0.5}),
    ("evaluator.minImprovementPct", "number", "min_improvement_pct", {"low": 0}),
    ("evaluator.mode", "choice", "eval_mode", {"choices": EVAL_MODES}),
    ("guardrails", "guardrails", "guardrails", {}),
    ("holdout.maxRegressionPct", "number", "holdout_tolerance_pct", {"low": 0}),
    ("timeouts.benchmark", "number", "timeout", {"low": 0.001}),
    ("timeouts.checks", "number", "checks_timeout", {"low": 0.001}),
    ("resume.maxResumes", "int", "max_resumes", {"low": 0}),
    ("resume.minMinutesBetween", "number", "resume_interval_min", {"low": 0}),
    ("resume.maxConsecutiveBlocks", "int", "max_consecutive_blocks", {"low": 1}),
    ("resume.maxBlocks", "int", "max_blocks", {"low": 0}),
    ("syncCommand", "str", "sync_command", {}),
    ("env", "env", "env", {}),
    ("protect", "protect", "protect", {}),
    ("protectDefaults", "bool", "protect_defaults", {}),
    ("git.maxFileMB", "megabytes", "max_file_bytes", {"low": 0}),
)


class _ConfigProblem(Exception):
    """A wrong value for one key: that key keeps its default (what a lenient reader needs)."""


class _ConfigReader(object):
    """Reads the config file's keys through CONFIG_SCHEMA; collects warnings and errors,
    each one line naming the file and the key."""

    def __init__(self, path):
        self.path, self.warnings, self.errors = path, [], []

    def warn(self, key, text):
        self.warnings.append("%s: %s %s" % (os.path.basename(self.path), key, text))

    def error(self, key, value, expected):
        shown = json.dumps(value, ensure_ascii=False)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        raise _ConfigProblem("%s: %s must be %s, got %s." % (self.path, key, expected, shown))

    def unknown_keys(self, data, known, prefix=""):
        import difflib
        for key in data:
            if key in known or key.startswith(("_", "$")):
                continue
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6) or [
                k for k in known if k.lower() == key.lower()]
            self.warn(prefix + key, "is not a key autotune reads; it is ignored%s." % (
                " (did you mean %s%s?)" % (prefix, close[0]) if close else " (known: %s)" % ", ".join(known)))

    def number(self, key, value, opts, whole):
        """An int or a finite number in range; "3" (the old bash scripts read numbers
        given as strings) is read as 3, with a warning."""
        expected = ("a whole number" if whole else "a number") + _range_text(opts.get("low"), opts.get("high"))
        parsed = value
        if isinstance(value, str):
            try:
                parsed = int(value.strip()) if whole else float(value.strip())
            except ValueError:
                self.error(key, value, expected)
        if whole and _is_number(parsed) and isinstance(parsed, float) and parsed.is_integer():
            parsed = int(parsed)  # 5.0 is 5 (the old bash scripts read it with int())
        ok = _is_int(parsed) if whole else _is_number(parsed)
        if not ok or (opts.get("low") is not None and parsed < opts["low"]) or (
                opts.get("high") is not None and parsed > opts["high"]):
            self.error(key, value, expected)
        if isinstance(value, str):
            parsed = _round(parsed) if not whole else parsed
            self.warn(key, "is the string %s; read as the number %s (write it without quotes)." % (
                json.dumps(value), _fmt(parsed)))
        return parsed


def _cfg_int(reader, key, value, opts):
    return reader.number(key, value, opts, whole=True)


def _cfg_number(reader, key, value, opts):
    return reader.number(key, value, opts, whole=False)


def _cfg_megabytes(reader, key, value, opts):
    """A size in MB (fractions allowed) as bytes; 0 means no limit."""
    return int(reader.number(key, value, opts, whole=False) * (1 << 20))


def _cfg_iterations(reader, key, value, opts):
    """maxIterations: 0 meant "no limit" to the old bash scripts, and still does."""
    count = reader.number(key, value, {"low": 0}, whole=True)
    if count == 0:
        reader.warn(key, "is 0, which means no iteration limit (as before); leave it out instead.")
        return None
    return count


def _cfg_bool(reader, key, value, opts):
    if not isinstance(value, bool):
        reader.error(key, value, "true or false")
    return value


def _cfg_str(reader, key, value, opts):
    if not isinstance(value, str) or not value.strip():
        reader.error(key, value, "a non-empty string")
    return value


def _cfg_choice(reader, key, value, opts):
    if value not in opts["choices"]:
        reader.error(key, value, "one of " + ", ".join(json.dumps(c) for c in opts["choices"]))
    return value


def _cfg_repeat(reader, key, value, opts):
    if value == "auto":
        return value
    try:
        return reader.number(key, value, {"low": 1, "high": 1000}, whole=True)
    except _ConfigProblem:
        reader.error(key, value, '"auto" or a whole number from 1 to 1000')


def _cfg_playbooks(reader, key, value, opts):
    """A list of playbook names; a name autotune does not know (the old bash scripts
    accepted any) is skipped with a warning."""
    if not isinstance(value, list) or not all(isinstance(b, str) for b in value):
        reader.error(key, value, "a list of playbook names (%s)" % ", ".join(PLAYBOOKS))
    unknown = [b for b in value if b not in PLAYBOOKS]
    if unknown:
        reader.warn(key, "names %s, which autotune does not have; skipped (it has %s)." % (
            ", ".join(json.dumps(b, ensure_ascii=False) for b in unknown), ", ".join(PLAYBOOKS)))
    return [b for b in value if b in PLAYBOOKS]


def _cfg_retired(reader, key, value, opts):
    reader.warn(key, "is no longer used: %s." % opts["now"])
    return None


def _cfg_guardrails(reader, key, value, opts):
    if not isinstance(value, dict):
        reader.error(key, value, "an object")
    rules = {}
    for name, rule in value.items():
        if name.startswith(("_", "$")) and not valid_metric_name(name):
            continue  # a comment
        where = "%s.%s" % (key, strip_controls(name, "")[:60])
        if not valid_metric_name(name):
            reader.error(key, name, "an object whose keys are metric names (a letter, digit or _, then "
                         "letters, digits and _ . : / % -)")
        if not isinstance(rule, dict):
            reader.error(where, rule, "an object")
        reader.unknown_keys(rule, ("maxRegressionPct", "max", "min", "direction"), where + ".")
        parsed = {}
        for field, kind, field_opts in (("maxRegressionPct", _cfg_number, {"low": 0}),
                                        ("max", _cfg_number, {}), ("min", _cfg_number, {}),
                                        ("direction", _cfg_choice, {"choices": DIRECTIONS})):
            raw = rule.get(field)
            parsed[field] = None if raw is None else kind(reader, "%s.%s" % (where, field), raw, field_opts)
        parsed["direction"] = parsed["direction"] or "lower"
        if parsed["maxRegressionPct"] is None and parsed["max"] is None and parsed["min"] is None:
            reader.error(where, rule, "an object with maxRegressionPct, max or min")
        rules[name] = parsed
    return rules


def _cfg_env(reader, key, value, opts):
    """Variables for the benchmark's environment: name -> string, or null to unset it."""
    if not isinstance(value, dict):
        reader.error(key, value, "an object")
    for name, text in value.items():
        if not name or "=" in name or "\0" in name or not (text is None or isinstance(text, str)) \
                or (isinstance(text, str) and "\0" in text):
            reader.error("%s.%s" % (key, name), text, "a string (or null to unset the variable)")
    return dict(value)


def _cfg_protect(reader, key, value, opts):
    """`protect`: globs relative to the working directory, never outside it."""
    expected = "a list of globs relative to the working directory (like \"tests/**\")"
    if not isinstance(value, list):
        reader.error(key, value, expected)
    for pattern in value:
        if (not isinstance(pattern, str) or not pattern.strip() or "\0" in pattern
                or pattern.startswith(("/", "~")) or ".." in pattern.replace("\\", "/").split("/")):
            reader.error(key, pattern, expected + "; this is not one")
    return [pattern.strip() for pattern in value]


CONFIG_KINDS = {"int": _cfg_int, "number": _cfg_number, "iterations": _cfg_iterations,
                "bool": _cfg_bool, "str": _cfg_str, "choice": _cfg_choice, "repeat": _cfg_repeat,
                "playbooks": _cfg_playbooks, "retired": _cfg_retired, "guardrails": _cfg_guardrails,
                "env": _cfg_env, "protect": _cfg_protect, "megabytes": _cfg_megabytes}


def _range_text(low, high):
    if low is not None and high is not None:
        return " from %s to %s" % (low, high)
    if low is not None:
        return " of at least %s" % low
    return ""


def read_config(path, data):
    """Settings from the parsed config object, by CONFIG_SCHEMA (pure). A wrong value is
    an error in `settings.errors` and leaves its key at the default."""
    settings = Settings(path=path, raw=data)
    reader = _ConfigReader(path)
    sections = {}
    for row in CONFIG_SCHEMA:
        head, _, tail = row[0].partition(".")
        if tail:
            sections.setdefault(head, []).append(tail)
    reader.unknown_keys(data, tuple(dict.fromkeys(row[0].partition(".")[0] for row in CONFIG_SCHEMA)))
    for name, keys in sections.items():
        section = data.get(name)
        if section is None:
            continue
        if not isinstance(section, dict):
            reader.errors.append("%s: %s must be an object, got %s." % (
                path, name, json.dumps(section, ensure_ascii=False)[:60]))
            continue
        reader.unknown_keys(section, tuple(keys), name + ".")
    for key, kind, field, opts in CONFIG_SCHEMA:
        head, _, tail = key.partition(".")
        holder = data.get(head) if tail else data
        value = holder.get(tail or head) if isinstance(holder, dict) else None
        if value is None:
            continue
        try:
            parsed = CONFIG_KINDS[kind](reader, key, value, opts)
        except _ConfigProblem as exc:
            reader.errors.append(str(exc))
            continue
        if field is not None:
            setattr(settings, field, parsed)
    settings.warnings, settings.errors = reader.warnings, reader.errors
    return settings


# Everything in the config that decides a verdict, compared as written: whole sections,
# so a key added later (evaluator.mode, a new guardrail field) is covered without a list.
JUDGE_SECTIONS = ("evaluator", "guardrails", "holdout", "repeat", "env", "protect", "protectDefaults")
LEGACY_JUDGE_SECTIONS = ("evaluator", "guardrails", "holdout")  # what old config lines copied


def judge_of(raw):
    """The judge's settings of a parsed config: its JUDGE_SECTIONS as written (comment
    keys, those starting with _ or $, left out)."""
    raw = raw if isinstance(raw, dict) else {}
    return {key: _without_comments(raw[key]) for key in JUDGE_SECTIONS if key in raw}


def _without_comments(value):
    if isinstance(value, dict):
        return {k: _without_comments(v) for k, v in value.items() if not k.startswith(("_", "$"))}
    return value


def legacy_judge(entry):
    """The judge of a config line written before fingerprints: the sections it copied
    (None for lines written by the old bash scripts, which copied none)."""
    if "version" not in entry:
        return None
    judge = {key: _without_comments(entry[key]) for key in LEGACY_JUDGE_SECTIONS if key in entry}
    judge["_legacy"] = True
    return judge


def _flatten(value, prefix=""):
    if isinstance(value, dict) and value:
        flat = {}
        for key in value:
            flat.update(_flatten(value[key], "%s%s" % (prefix + "." if prefix else "", key)))
        return flat
    return {prefix: value}


def judge_changes(recorded, raw):
    """The dotted keys whose value differs between the recorded judge and the config now,
    as (key, before, after); [] when nothing that decides a verdict changed."""
    if not isinstance(recorded, dict):
        return []
    current = judge_of(raw)
    recorded = dict(recorded)
    if recorded.pop("_legacy", False):
        current = {key: current[key] for key in LEGACY_JUDGE_SECTIONS if key in current}
    before, after = _flatten(recorded), _flatten(current)
    before.pop("", None)
    after.pop("", None)
    return [(key, before.get(key, ABSENT), after.get(key, ABSENT))
            for key in sorted(set(before) | set(after))
            if key not in before or key not in after
            or json.dumps(before[key], sort_keys=True) != json.dumps(after[key], sort_keys=True)]


ABSENT = "(absent)"


def changes_text(changes, limit=4):
    shown = ["%s %s -> %s" % (key, a if a is ABSENT else json.dumps(a, sort_keys=True)[:60],
                              b if b is ABSENT else json.dumps(b, sort_keys=True)[:60])
             for key, a, b in changes[:limit]]
    more = len(changes) - limit
    return "; ".join(shown) + ("; and %d more" % more if more > 0 else "")


# ---------------------------------------------------------------- arguments ----

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
    except ValueError:
        fail("bad_json", "%s contains a number too large for a finite value (like 1e400)." % flag)
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


def _type_error(message):
    import argparse
    return argparse.ArgumentTypeError(message)


_INVOCATION = []


def again_command():
    """The command line of this call, to tell the user what to run again."""
    return " ".join(["autotune"] + [_shell_quote(a) for a in _INVOCATION])


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
    """How far the best is from the baseline in units of noise: |best - baseline| / MAD
    of the segment's metric points, with a label (high from 2, marginal from 1, else
    within_noise; insufficient_data, no_signal and overflow when no score can be given)."""
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


def robust_sigma(values):
    spread = mad(values) if len(values) >= 3 else None
    return None if spread is None else 1.4826 * spread


# Interleaved measurement (randomized multiple interleaved trials): the best and the
# candidate run alternately, the order of each pair drawn at random, so whatever the
# machine does (a step change, drift, load that comes and goes) hits both sides alike.
# The judgement is the exact Wilcoxon signed-rank test on the pairs' log-ratios: the
# random order makes each pair's ratio symmetric about 1 under "no change" whatever the
# drift, which is exactly the test's assumption; ranks make one pair hit by a burst of
# load count as one pair, not as a huge mean; log-ratios cancel a slowdown that hits
# both sides of a pair. Given the pairs' magnitudes, the signs are fair coins under "no
# change", so every probability below is counted exactly over sign patterns, ties and
# zeros included (conditional on what was observed). Sequential: looks at 5, 6, 7, 8,
# 11, 15, ... undisturbed pairs (up to maxSamples); alpha is spent look by look (see
# LookSpending), a look spends only what its discrete test can attain (the rest carries
# over), and a rejection region is charged only for the sign patterns that an earlier
# look would not already have stopped at; so false keeps stay <= alpha. A candidate not
# even ahead stops early.


def paired_ratios(candidate, best):
    """Per pair, log(candidate / best), or the difference in units of the best's median
    when a value is not positive (a score that can be 0 or negative). Returns
    (ratios, relative) where relative says they are log-ratios. A pair's magnitude does
    not depend on which side was faster (log(a/b) is computed as -log(b/a) when a < b),
    so the two orders of the same two values tie exactly, as the test's ranks require."""
    import math
    if all(v > 0 for v in candidate) and all(v > 0 for v in best):
        return [math.log(c / b) if c >= b else -math.log(b / c) for c, b in zip(candidate, best)], True
    scale = abs(median(best)) or 1.0
    return [(c - b) / scale for c, b in zip(candidate, best)], False


def shift_pct(shift, relative):
    """A shift of paired_ratios' scale (a log-ratio when `relative`, else a fraction of
    the best's median) as a percent change of the candidate against the best."""
    import math
    return (math.expm1(shift) if relative else shift) * 100.0


def hodges_lehmann(values):
    """The median of the pairwise (Walsh) averages: the estimate that goes with the
    signed-rank test (robust, and exact for a constant shift)."""
    if len(values) > 200:
        return median(values)
    walsh = [(values[i] + values[j]) / 2.0 for i in range(len(values)) for j in range(i, len(values))]
    return median(walsh)


def signed_ranks(gains):
    """The doubled mid-ranks (integers) of the gains' magnitudes, in the gains' order:
    a zero gets 0 and is left out of the ranking (Wilcoxon's rule: a pair whose two sides
    measured the same, as a coarse timer often makes them, has no sign to count);
    tied magnitudes share their mid-rank."""
    nonzero = sorted((abs(g), i) for i, g in enumerate(gains) if g != 0)
    ranks2 = [0] * len(gains)
    i = 0
    while i < len(nonzero):
        j = i
        while j + 1 < len(nonzero) and nonzero[j + 1][0] == nonzero[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks2[nonzero[k][1]] = i + j + 2
        i = j + 1
    return ranks2


def rank_sum_counts(ranks2):
    """counts[s] = how many of the 2^n sign patterns give a rank sum of the positive
    pairs of s: the exact null distribution of the statistic given these (mid-)ranks."""
    counts = [0] * (sum(ranks2) + 1)
    counts[0] = 1
    top = 0
    for r in ranks2:
        for s in range(top, -1, -1):
            if counts[s]:
                counts[s + r] += counts[s]
        top += r
    return counts


def signed_rank_p(gains):
    """One-sided p-values (gains > 0, gains < 0) of the Wilcoxon signed-rank statistic:
    zeros dropped, tied magnitudes get mid-ranks, and the null distribution is counted
    exactly over the 2^n sign flips given those ranks (the permutation distribution, so
    ties cost no validity); a normal approximation above 60 pairs."""
    import math
    ranks2 = [r for r in signed_ranks(gains) if r]
    n = len(ranks2)
    if not n:
        return 1.0, 1.0
    observed = sum(r for r, g in zip(signed_ranks(gains), gains) if g > 0)
    total = sum(ranks2)
    if n > 60:
        mean = total / 2.0
        sd = math.sqrt(sum(r * r for r in ranks2) / 4.0)
        return (0.5 * math.erfc((observed - mean - 1) / sd / math.sqrt(2)),
                0.5 * math.erfc((mean - observed - 1) / sd / math.sqrt(2)))
    counts = rank_sum_counts(ranks2)
    flips = float(2 ** n)
    return sum(counts[observed:]) / flips, sum(counts[:observed + 1]) / flips


class LookSpending(object):
    """The alpha of one sequential decision, spent look by look (pure bookkeeping; one
    object per decision, fed the looks in order).

    Each look adds its nominal share to the budget. Its rejection region is the largest
    "rank sum >= c" whose cost fits what is left, and the cost is counted exactly over
    the sign patterns given the pairs' magnitudes: only the part of the region that no
    earlier look's all-wins pattern covers (such a pattern already ended the decision
    there), so nested looks close together cost little; what a discrete look cannot
    spend carries to the next. Given the magnitudes the signs are fair coins under "no
    change", the costs add up to at most alpha for every magnitude configuration, and so
    false keeps stay <= alpha overall. (A region counted by the normal approximation,
    above 60 pairs, is charged its full budget.)"""

    def __init__(self):
        self.budget = 0.0
        self.spent = 0.0
        self.stoppers = []    # earlier looks' judged pair indices whose all-wins pattern stopped
        self.last = 0.0       # the level of the latest look

    def level(self, gains, judged, nominal):
        """The p-value at or below which this look decides (0.0: it cannot); records the
        look. gains are all pairs' so far, judged says which the test counts."""
        self.last = self._level(gains, judged, nominal)
        return self.last

    def _level(self, gains, judged, nominal):
        self.budget += nominal
        allowed = self.budget - self.spent
        ranks_all = signed_ranks([g if ok else 0 for g, ok in zip(gains, judged)])
        members = [i for i, r in enumerate(ranks_all) if r]
        if not members or allowed <= 0:
            return 0.0
        if len(members) > 60:
            self.spent = self.budget
            return allowed
        ranks2 = [ranks_all[i] for i in members]
        tails = _suffix_sums(rank_sum_counts(ranks2))
        flips = float(2 ** len(members))
        overlaps = [self._overlap(ranks_all, members, earlier) for earlier in self.stoppers]
        best = None
        for c in range(len(tails) - 1, -1, -1):
            if c + 1 < len(tails) and tails[c] == tails[c + 1]:
                continue      # no sign pattern has this rank sum
            tail = tails[c] / flips
            cost = tail - max([overlap(c) for overlap in overlaps] or [0.0])
            if cost > allowed + 1e-15:
                break
            best = (c, tail, cost)
        if best is None:
            return 0.0
        self.spent += max(0.0, best[2])
        self.stoppers.append(frozenset(members))
        return best[1]

    @staticmethod
    def _overlap(ranks_all, members, earlier):
        """c -> P(rank sum >= c and every pair of the earlier look a win)."""
        fixed = sum(ranks_all[i] for i in members if i in earlier)
        free = [ranks_all[i] for i in members if i not in earlier]
        tails = _suffix_sums(rank_sum_counts(free)) + [0]
        scale = float(2 ** (len(free) + len(earlier)))
        return lambda c: tails[min(max(0, c - fixed), len(tails) - 1)] / scale


def _suffix_sums(counts):
    """tails[c] = sum(counts[c:]), integers (exact)."""
    tails, running = [0] * len(counts), 0
    for c in range(len(counts) - 1, -1, -1):
        running += counts[c]
        tails[c] = running
    return tails


def hl_interval(values, level=0.95):
    """The distribution-free confidence interval of the Hodges-Lehmann shift (the one the
    signed-rank test inverts): the k-th smallest and largest Walsh averages, k from the
    exact null distribution of the statistic. None when n is too small for the level."""
    import math
    n = len(values)
    tail = (1.0 - level) / 2.0
    total = n * (n + 1) // 2
    if n > 60:
        k = int(math.floor(total / 2.0 - 1.959964 * math.sqrt(n * (n + 1) * (2 * n + 1) / 24.0)))
    else:
        counts = [0] * (total + 1)
        counts[0] = 1
        for r in range(1, n + 1):
            for t in range(total - r, -1, -1):
                if counts[t]:
                    counts[t + r] += counts[t]
        flips, cumulative, k = float(2 ** n), 0, 0
        for t in range(total + 1):
            cumulative += counts[t]
            if cumulative / flips > tail:
                break
            k = t + 1
    if k < 1:
        return None
    walsh = sorted((values[i] + values[j]) / 2.0 for i in range(n) for j in range(i, n))
    return walsh[k - 1], walsh[len(walsh) - k]


def _normal_quantile(p):
    """The standard normal quantile, by bisection of erfc (it only sizes a warning)."""
    import math
    lo, hi = -10.0, 10.0
    for _ in range(80):
        mid = (lo + hi) / 2.0
        if 0.5 * math.erfc(-mid / math.sqrt(2)) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


# ----------------------------------------------------------------- decision ----

def is_deterministic(samples):
    return len(samples) >= 2 and max(samples) == min(samples)


def known_deterministic(flag, reference):
    """Whether the benchmark is deterministic: the recorded flag when there is one (the
    baseline decides, so a noisy timer's coarse ticks that happen to agree do not turn a
    noisy benchmark into a deterministic one), else whether the reference samples agree."""
    return bool(flag) if flag is not None else is_deterministic(reference)


def assess(candidate, reference, direction, alpha, min_pct=0.0, noise_mad=None, final=True,
           deterministic=None):
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
    delta_pct = percent_of(delta, ref_med) if ref_med else None
    gain_pct = percent_of(gain, ref_med) if ref_med else None
    big_enough = min_pct <= 0 or (gain_pct is not None and gain_pct >= min_pct)
    evidence = {"method": None, "reference": {"median": _round(ref_med), "n": len(reference)},
                "candidate": {"median": _round(cand_med), "n": len(candidate)},
                "delta": _round(delta), "delta_pct": _round(delta_pct, 3) if delta_pct is not None else None,
                "noise": None, "p_value": None, "alpha": _round(alpha)}
    if known_deterministic(deterministic, reference) and max(candidate) == min(candidate):
        evidence["method"] = "exact"
        evidence["noise"] = {"sigma": 0, "deterministic": True}
        if gain > 0 and big_enough:
            return "improved", evidence
        # an identical value is `unchanged`: a deterministic benchmark has no noise to be within
        return ("worse" if gain < 0 else "unchanged" if gain == 0 else "within_noise"), evidence
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
                         "sigma_pct": _round(sigma_pct(sigma, ref_med), 3)}
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


def pair_looks(limit, alpha):
    """The sequential plan: (undisturbed pairs, nominal alpha) at each look, up to `limit`
    pairs. Looks come one pair apart at first (5, 6, 7, 8: a single lost or disturbed
    pair among the first five then costs a pair or two, not a jump to a large look),
    then about a third apart (5, 6, 7, 8, 11, 15 for 15). The first look's share is 2/3 of alpha (all it can
    use is 2^-5, the five-wins pattern; the rest carries over), the others share the
    remaining third; the nominal shares add up to alpha (see LookSpending)."""
    limit = max(1, limit)
    sizes = [min(FIRST_PAIRS, limit)]
    while sizes[-1] < limit:
        last = sizes[-1]
        grown = last + (1 if last < FIRST_PAIRS + 3 else -(-last // 3))
        sizes.append(limit if grown >= limit - 1 and grown > FIRST_PAIRS + 3 else min(grown, limit))
    if len(sizes) == 1:
        return [(sizes[0], alpha)]
    rest = alpha / 3.0 / (len(sizes) - 1)
    return [(sizes[0], alpha * 2.0 / 3.0)] + [(size, rest) for size in sizes[1:]]


def disturbed_pairs(gains):
    """Which pairs to judge (True) and which a burst of load hit on one side only (False):
    a ratio beyond OUTLIER_FACTOR times the median magnitude. The rule reads magnitudes,
    never signs, so under "no change" the kept signs are still fair coins and the test
    stays exact."""
    magnitudes = [abs(g) for g in gains]
    center = median(magnitudes) if len(magnitudes) >= 4 else None
    if not center:
        return [True] * len(gains)
    return [m <= OUTLIER_FACTOR * center for m in magnitudes]


def unequal_load(one, other):
    """True when the two executions of a pair ran on clearly different machines: the
    CPU share the rest of the machine left free differs by more than CONTENTION_GAP
    (relative, and by more than the jiffy resolution of the readings), or the fraction of
    time something waited for a CPU (pressure stall) differs by more than STALL_GAP.

    The free share, cpus - others' cores, is what a CPU-bound benchmark can get once the
    machine is full: a hog taking one core of two halves it, a 20-50% slowdown as seen on
    a 2-core machine; 25% sits at the low end of that and above what a steady machine
    varies between two neighbouring executions. The rule reads both readings the same
    way and never the benchmark's values, so it is symmetric in the two sides and blind
    to which was faster. None readings (a short execution, no /proc) decide nothing."""
    import math
    if not one or not other:
        return False
    cpus = max(one.get("cpus") or 1, other.get("cpus") or 1)
    floor = 0.01 * cpus
    free = [max(cpus - (r.get("others") or 0.0), floor) for r in (one, other)]
    # each CPU's busy count is off by up to a 10 ms jiffy, independently: the difference
    # of two readings is off by about sqrt(2 * cpus) jiffies over the shorter wall time
    resolution = 0.01 * math.sqrt(2 * cpus) / max(min(one.get("wall") or 1, other.get("wall") or 1), 1e-3)
    if abs(free[0] - free[1]) > resolution and max(free) / min(free) > 1.0 + CONTENTION_GAP:
        return True
    stalls = [r.get("stall") for r in (one, other)]
    return None not in stalls and abs(stalls[0] - stalls[1]) > STALL_GAP


def load_set_aside(loads):
    """For each pair's (candidate reading, best reading): True when it is set aside
    because its two sides saw unequal load (see unequal_load)."""
    return [unequal_load(c, b) for c, b in (loads or ())]


def judged_pairs(gains, loads=None):
    """Which pairs the signed-rank test judges: neither a magnitude outlier
    (disturbed_pairs) nor a pair whose sides saw unequal load. Both rules are blind to
    the signs and to which side is which, so under "no change" the kept signs stay fair
    coins and the test stays exact."""
    kept = disturbed_pairs(gains)
    if loads:
        kept = [ok and not aside for ok, aside in zip(kept, load_set_aside(loads) + [False] * len(kept))]
    return kept


def contention_summary(readings):
    """One side's contention over its executions: median others' cores, their maximum,
    median stall fraction; None when no execution could be read."""
    known = [r for r in readings if r]
    if not known:
        return None
    stalls = [r["stall"] for r in known if r.get("stall") is not None]
    return {"others_cores": _round(median([r["others"] for r in known]), 3),
            "max_others_cores": _round(max(r["others"] for r in known), 3),
            "stall": _round(median(stalls), 3) if stalls else None,
            "cpus": known[0].get("cpus"), "read": len(known), "of": len(readings)}


def assess_paired(candidate, best, direction, alpha, min_pct=0.0, final=True, loads=None,
                  spending=None):
    """Judges interleaved samples (candidate[i] and best[i] measured side by side).
    Returns (verdict, evidence) like `assess`; None means "look again with more pairs".
    With `spending` (a LookSpending: this is one look of a sequential decision), alpha is
    this look's nominal share and the level the test uses is what the spending allows."""
    import math
    ratios, relative = paired_ratios(candidate, best)
    gains = [-r for r in ratios] if direction == "lower" else list(ratios)
    kept = judged_pairs(gains, loads)
    if spending is not None:
        alpha = spending.level(gains, kept, alpha)
    p_better, p_worse = signed_rank_p([g for g, ok in zip(gains, kept) if ok])
    shift = hodges_lehmann(ratios)
    delta_pct = (math.expm1(shift) if relative else shift) * 100.0
    gain_pct = -delta_pct if direction == "lower" else delta_pct
    spread = robust_sigma(ratios)
    best_med = median(best)
    evidence = {"method": "interleaved-signed-rank",
                "reference": {"median": _round(best_med), "n": len(best), "source": "interleaved"},
                "candidate": {"median": _round(median(candidate)), "n": len(candidate)},
                "delta": _round(median(candidate) - best_med), "delta_pct": _round(delta_pct, 3),
                "noise": {"sigma_pct": _round(spread * 100.0, 3) if spread is not None else None,
                          "deterministic": False, "per": "pair"},
                "p_value": _round(p_better, 6), "p_worse": _round(p_worse, 6), "alpha": _round(alpha),
                "pairs": len(gains), "wins": sum(1 for g in gains if g > 0)}
    if not all(kept):
        evidence["disturbed_pairs"] = len(kept) - sum(kept)
    if loads and any(c or b for c, b in loads):
        evidence["contention"] = {"candidate": contention_summary([c for c, _ in loads]),
                                  "best": contention_summary([b for _, b in loads]),
                                  "unequal_pairs": sum(load_set_aside(loads)), "pairs": len(loads),
                                  "judged": sum(kept),
                                  "others": [[(r or {}).get("others") for r in pair] for pair in loads]}
    if p_better <= alpha and gain_pct > 0:
        return ("improved" if min_pct <= 0 or gain_pct >= min_pct else "within_noise"), evidence
    if p_worse <= alpha and gain_pct < 0:
        return "worse", evidence
    # ahead means winning more than half of the judged pairs (a tie is not a win); the
    # count, unlike the estimate, is not pulled by a few pairs that load hit unseen
    behind = 2 * sum(1 for g, ok in zip(gains, kept) if ok and g > 0) <= sum(kept)
    if final or behind:
        return "within_noise", evidence   # not ahead: more pairs would rarely make it a keep
    return None, evidence


def resolvable_pct(evidence, alpha):
    """The smallest change (percent) that this many pairs with this spread resolve
    about 80% of the time: (z_alpha + z_0.8) * sigma / sqrt(n)."""
    import math
    sigma = (evidence.get("noise") or {}).get("sigma_pct")
    pairs = evidence.get("pairs") or 0
    if not sigma or not pairs:
        return None
    z_alpha = -_normal_quantile(max(1e-9, alpha))
    return (z_alpha + 0.8416) * sigma / math.sqrt(pairs)


def collect_pairs(take, looks, direction, settings, rng):
    """The interleaved sampling loop: `take(side, n)` measures side "best" or "candidate"
    (returning (value, metrics) or (value, metrics, contention reading), or None when it
    failed, which ends the loop). The order within each pair is drawn from `rng`. A look
    happens once it has its number of judged pairs (see judged_pairs: not disturbed, not
    unequally loaded), taking at most twice the last look's pairs; alpha is spent across
    the looks by one LookSpending. Returns (candidate samples, candidate metrics, best
    samples, best metrics, the order of each pair, the verdict and evidence of the last
    look, notes, the level of its test)."""
    cand, cand_m, best, best_m, orders, notes, loads = [], [], [], [], [], [], []
    verdict = evidence = None
    alpha = 0.0
    ceiling = 2 * looks[-1][0]
    spending = LookSpending()
    for number, (size, nominal) in enumerate(looks):
        while len(cand) < ceiling and (len(cand) < size or _judged(cand, best, loads) < size):
            order = ("best", "candidate") if rng.random() < 0.5 else ("candidate", "best")
            got = {}
            for side in order:
                taken = take(side, len(cand) + 1)
                if taken is None:
                    return cand, cand_m, best, best_m, orders, None, None, notes, alpha
                got[side] = taken
            orders.append("BC" if order[0] == "best" else "CB")
            cand.append(got["candidate"][0])
            cand_m.append(got["candidate"][1])
            best.append(got["best"][0])
            best_m.append(got["best"][1])
            loads.append(tuple(got[side][2] if len(got[side]) > 2 else None for side in ("candidate", "best")))
        final = number == len(looks) - 1 or len(cand) >= ceiling
        verdict, evidence = assess_paired(cand, best, direction, nominal, settings.min_improvement_pct, final,
                                          loads, spending=spending)
        alpha = spending.last
        if verdict is not None:
            break
        notes.append("p=%s after %d pairs was ambiguous, so more" % (_fmt(evidence.get("p_value")), len(cand)))
    return cand, cand_m, best, best_m, orders, verdict, evidence, notes, alpha


def _judged(cand, best, loads=None):
    """How many of the pairs so far the test would judge (not disturbed, not unequally
    loaded). A tie (a zero ratio, as a coarse timer makes often) counts: the look then
    judges fewer signed pairs and may be unable to decide, but such a look spends no
    alpha (see LookSpending), while waiting for signed pairs would make a no-op cost far
    more."""
    ratios, _ = paired_ratios(cand, best)
    return sum(judged_pairs(ratios, loads))


def interleaved_looks(reference, repeat, settings, deterministic=None):
    """The interleaved plan of `run` ([(pairs, alpha), ...]), or None when the present
    rule applies: before the baseline, for a deterministic benchmark (one execution
    decides), with evaluator.mode "reference", or when a fixed repeat or maxSamples
    allows too few pairs for the exact test to reach alpha."""
    if settings.eval_mode not in ("interleaved", "duet") or not reference or \
            known_deterministic(deterministic, reference):
        return None
    looks = [(max(1, repeat), settings.alpha)] if repeat != "auto" else pair_looks(settings.max_samples,
                                                                                   settings.alpha)
    if 0.5 ** looks[-1][0] > sum(nominal for _, nominal in looks):
        return None   # too few pairs to ever reach alpha (repeat or maxSamples below 5)
    return looks


class SamplingPlan(object):
    """How many times to run the benchmark, and when to stop adding samples."""

    __slots__ = ("first", "step", "limit", "alpha", "why", "adaptive", "probe")

    def __init__(self, first, step, limit, alpha, why, adaptive=False, probe=False):
        self.first, self.step, self.limit = first, step, limit
        self.alpha, self.why, self.adaptive, self.probe = alpha, why, adaptive, probe


def sampling_plan(reference, repeat, settings, deterministic=None):
    """Deterministic benchmarks cost one execution after the baseline; noisy ones get
    batches of samples until the test decides, up to a cap (alpha split over looks)."""
    if repeat != "auto":
        return SamplingPlan(repeat, 0, repeat, settings.alpha, "repeat=%d" % repeat)
    limit = max(1, settings.max_samples)
    if not reference:
        return SamplingPlan(min(DEFAULT_PROBE, limit), 0, min(DEFAULT_BATCH, limit), settings.alpha,
                            "baseline: measuring the noise", probe=True)
    if known_deterministic(deterministic, reference):
        return SamplingPlan(1, 0, 1, settings.alpha,
                            "the reference samples are identical (a deterministic benchmark)")
    batch = min(DEFAULT_BATCH, limit)
    looks = 1 + max(0, -(-(limit - batch) // batch))
    return SamplingPlan(batch, batch, limit, settings.alpha / looks,
                        "noisy benchmark", adaptive=True)


def reference_to_measure(reference, repeat):
    """True when the best the next verdict is judged against is one recorded number and no
    samples (a session written by the old bash scripts logged one value per experiment), so
    `run` measures the kept code first rather than taking the spread of *other
    experiments'* values for noise. (When `run` measures the best beside every candidate,
    this is the case where that reference is missing.)"""
    if repeat != "auto" or not reference:
        return False
    return len(reference.get("samples") or ()) < 2 and not reference.get("deterministic")


def collect_samples(take, plan, reference, direction, settings, noise_mad=None, deterministic=None):
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


def metric_name_changes(known, metrics, pname):
    """(new, missing) secondary metric names of a result against the segment's earlier
    ones. Neither refuses a result: `run` records what the benchmark printed, and the
    agent of the old bash scripts typed --metrics by hand, often a subset, sometimes with
    the primary among them (never a secondary metric, so it is left out)."""
    known = set(known or ()) - {pname}
    names = set(metrics) - {pname}
    return sorted(names - known), sorted(known - names)


def regression_pct(value, reference, direction):
    """How much worse `value` is than `reference`, in percent (inf from a zero reference)."""
    worse = value - reference if direction == "lower" else reference - value
    if reference:
        return percent_of(worse, reference)
    return float("inf") if worse > 0 else 0.0


def verdict_of(measurement, reference, reference_info, direction, settings, noise_mad, alpha, baseline_metrics,
               judged=None):
    """The verdict on a measurement, its evidence and the guardrails' judgement (None
    when none were checked), before any holdout, as (verdict, evidence, guardrails).
    Pure: `measurement` and `judged` are read, not changed. A verdict that would be kept
    (`baseline`, `improved`, or an equal result the simplicity rule keeps) then goes
    to holdout_verdict. `judged` is the interleaved verdict and evidence (collect_pairs),
    and then baseline_metrics are the kept code's, measured in the same window."""
    if measurement.crashed:
        return ("timeout" if measurement.timeout else "crash"), None, None
    if judged is not None:
        verdict, evidence = judged
    elif reference:
        verdict, evidence = assess(measurement.samples, reference, direction, alpha, settings.min_improvement_pct,
                                   noise_mad, final=True, deterministic=reference_info.get("deterministic"))
        evidence["reference"]["source"] = reference_info.get("source")  # assess's new dict
    else:
        verdict, evidence = "baseline", None
    if measurement.checks is False:
        return "checks_failed", evidence, None
    if not settings.guardrails:
        return verdict, evidence, None
    breaches = check_guardrails(settings.guardrails, measurement.metrics, baseline_metrics if reference else None,
                                "the kept code measured beside it" if judged else "the baseline")
    guardrails = {"ok": not breaches, "breaches": breaches}
    return ("guardrail_failed" if breaches else verdict), evidence, guardrails


def holdout_verdict(verdict, holdout, reference, direction, tolerance_pct):
    """The verdict once the holdout ran, and the holdout record with its judgement added,
    as (verdict, holdout). Pure: `holdout` is not changed; the answer is a copy. A
    crashed holdout, or one that regressed beyond tolerance against the baseline's,
    fails the candidate (an improvement, or an equal result kept for being simpler)."""
    if holdout.get("reason"):
        return "holdout_failed", holdout
    if verdict == "baseline" or reference is None:
        return verdict, holdout
    regression = regression_pct(holdout["value"], reference, direction)
    judged = dict(holdout, reference=reference,
                  regression_pct=_round(regression, 3) if regression != float("inf") else None)
    if regression > tolerance_pct:
        judged.update(ok=False, reason="the holdout regressed %.2f%% (allowed %s%%)" % (
            regression, _fmt(tolerance_pct)))
        return "holdout_failed", judged
    return verdict, judged


def suggested_status(verdict, lines_added=None, lines_removed=None):
    """What `log --status auto` records for a verdict, and the rule that decided it, as
    (status, {"rule", "why", "lines_added", "lines_removed"}). Pure.

    Simpler is better: at a result equal to the best (`unchanged`, `within_noise`) an
    experiment that removes more lines than it adds is kept (removing code for an
    equal result is a win); one that adds code, or changes as many lines as it removes,
    is discarded (a within-noise change that adds code is not). Line counts of None
    (unknown) never keep. Every other verdict decides alone."""
    rule = {"rule": "verdict", "lines_added": lines_added, "lines_removed": lines_removed}
    if verdict in EQUAL_VERDICTS:
        equal = "an unchanged result" if verdict == "unchanged" else "a result within the noise"
        if lines_added is None or lines_removed is None:
            rule.update(rule="not_simpler", why="%s, and the lines the experiment changes are unknown, "
                        "so it is discarded" % equal)
            return "discard", rule
        counts = "removes %d line%s and adds %d" % (lines_removed, "" if lines_removed == 1 else "s",
                                                    lines_added)
        if lines_removed > lines_added:
            rule.update(rule="simpler", why="simpler is better: %s, and the experiment %s, so it is "
                        "kept (the best does not move)" % (equal, counts))
            return "keep", rule
        rule.update(rule="not_simpler", why="simpler is better: %s, and the experiment %s, so it is "
                    "discarded (an equal result does not pay for more code)" % (equal, counts))
        return "discard", rule
    status = {"baseline": "keep", "improved": "keep", "crash": "crash", "timeout": "crash",
              "checks_failed": "checks_failed"}.get(verdict, "discard")
    rule["why"] = "the verdict is %s" % verdict
    return status, rule


def check_guardrails(rules, metrics, baseline_metrics, against="the baseline"):
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
                                 "message": "%s=%s regressed %s against %s (%s; allowed %s%%)" % (
                                     name, _fmt(value),
                                     ("%.2f%%" % regression) if regression != float("inf") else "from 0",
                                     against, _fmt(base), _fmt(pct))})
    return breaches


def interleave_obstacle(loop, state, head):
    """Why the kept code cannot be measured beside the candidate, or None."""
    if loop.repo is None:
        return "the directory is not in a git repository"
    snap = state.snapshot or {}
    if not snap.get("tree"):
        return "the log has no snapshot of the kept code (a session of an older autotune)"
    if snap.get("head") and head != snap.get("head"):
        return "HEAD moved outside autotune"
    return None


def noise_verdict(evidence, alpha, looks, settings, load):
    """`within_noise` at the cap because the same-window samples spread too widely for
    the cap to resolve the change asked for: the cause and what to do, or None."""
    if evidence.get("method") != "interleaved-signed-rank" or (evidence.get("p_value") or 0) <= alpha:
        return None
    if (evidence.get("pairs") or 0) < looks[-1][0]:
        return None
    resolvable = resolvable_pct(evidence, alpha)
    if resolvable is None or resolvable <= settings.min_improvement_pct:
        return None
    before, after = (load or {}).get("before") or {}, (load or {}).get("after") or {}
    cpus = before.get("cpus") or after.get("cpus")
    busiest = max(before.get("1m") or 0, after.get("1m") or 0)
    cause = ("the machine was busy (load average %s -> %s on %s CPUs)" % (
        _fmt(before.get("1m")), _fmt(after.get("1m")), cpus)
        if cpus and busiest >= 0.75 * cpus else "the benchmark's own run-to-run spread")
    asked = ("evaluator.minImprovementPct asks for %s%%" % _fmt(settings.min_improvement_pct)
             if settings.min_improvement_pct else "no evaluator.minImprovementPct is set")
    message = ("too noisy to decide: measured side by side, the kept code and the candidate differ by "
               "±%s%% from pair to pair, so %d pairs resolve only changes above ~%s%% (%s). Cause: %s. "
               "What to do: run on a quieter machine, raise evaluator.maxSamples, or make the "
               "workload longer so each sample averages more noise away." % (
                   _fmt(evidence["noise"]["sigma_pct"]), evidence["pairs"], _fmt(round(resolvable, 2)),
                   asked, cause))
    return {"resolvable_pct": _round(resolvable, 3), "cause": cause, "message": message}


def describe_pairs(paired, measurement, notes):
    count = len(measurement.samples)
    if measurement.crashed:
        return "%d pair%s before the %s" % (count, "" if count == 1 else "s", "timeout" if measurement.timeout else "crash")
    if measurement.checks is False:
        return ("%d sample%s: the correctness checks failed after the first sample, so no more were "
                "taken%s" % (count, "" if count == 1 else "s",
                             "" if paired.get("best") else " (the kept code did not run)"))
    text = ("%d pairs, duet: the kept code (from a copy of the tree) and the candidate started together "
            "in each pair" % count if paired.get("duet") else
            "%d pairs, interleaved: the kept code and the candidate measured alternately, the order "
            "of each pair at random (%s)" % (count, paired["order"]))
    if notes:
        text += "; " + "; ".join(notes)
    evidence = measurement.evidence or {}
    if evidence.get("p_value") is not None and paired.get("alpha") is not None:
        text += "; signed-rank p=%s (alpha at this look %s)" % (_fmt(evidence["p_value"]),
                                                              _fmt(round(paired["alpha"], 4)))
    load = evidence.get("contention") or {}
    unequal = load.get("unequal_pairs") or 0
    outliers = (evidence.get("disturbed_pairs") or 0) - unequal
    if outliers > 0:
        text += "; %d pair%s set aside as disturbed by load on one side" % (outliers, "" if outliers == 1 else "s")
    if unequal:
        text += ("; %d pair%s set aside because the rest of the machine used clearly more CPU during one "
                 "side than the other" % (unequal, "" if unequal == 1 else "s"))
    return text


def describe_sampling(plan, samples, notes, measurement, reference, max_samples=DEFAULT_MAX_SAMPLES):
    count = len(samples)
    text = "%d sample%s" % (count, "" if count == 1 else "s")
    if measurement.crashed:
        return text + (" before the timeout" if measurement.timeout else " before the crash")
    if measurement.checks is False:
        return text + ": the correctness checks failed after the first sample, so no more were taken"
    if plan.probe:
        if is_deterministic(samples):
            text += ": baseline; identical, so the benchmark is treated as deterministic and later runs take 1 sample"
        else:
            noise = sigma_pct(robust_sigma(samples), median(samples))
            text += (": baseline; they differ (noise ±%s%%), so later runs take %d-%d samples (pairs of the "
                     "kept code and the candidate, unless evaluator.mode is reference)") % (
                _fmt(round(noise, 2)) if noise is not None else "?",
                min(DEFAULT_BATCH, max_samples), max(1, max_samples))
    elif not plan.adaptive:
        text += ": " + plan.why
    else:
        text += ": noisy benchmark"
        if notes:
            text += "; " + "; ".join(notes)
        capped = count >= plan.limit and measurement.verdict == "within_noise"
        if measurement.evidence and measurement.evidence.get("p_value") is not None:
            text += "; %s p=%s (alpha per look %s)" % ("stopped at" if capped else "decided at",
                                                       _fmt(measurement.evidence["p_value"]), _fmt(round(plan.alpha, 4)))
        if capped:
            text += "; the cap of %d samples was reached without a significant difference" % plan.limit
    if reference and len(reference) < 3 and not is_deterministic(reference):
        text += "; the reference has only %d sample%s, run `autotune rebaseline` for a sharper verdict" % (
            len(reference), "" if len(reference) == 1 else "s")
    return text


class LogDecision(Record):
    """What a `log` call records, settled before anything is written."""

    FIELDS = (("status", None), ("metric", None), ("measured", False), ("metrics", dict),
              ("verdict", None), ("forced", False), ("improved", False), ("notes", list),
              ("warnings", list))
    __slots__ = tuple(name for name, _ in FIELDS)


class LogRequest(Record):
    """What a `log` call asks for, its arguments checked (_log_arguments): the status
    (or "auto"), a typed --metric and --metrics (None when not given), the --reason of
    an override, --force, --commit, the description and the --asi object."""

    FIELDS = (("status", None), ("metric", None), ("metrics", None), ("reason", None),
              ("force", False), ("commit", None), ("description", None), ("asi", dict))
    __slots__ = tuple(name for name, _ in FIELDS)


def decide_log(request, state, measurement):
    """The status, numbers and verdict a `log` records, from its request (a LogRequest)
    and the pending `measurement`; every refusal about them happens here, before git
    is touched."""
    metric_flag, metrics_flag, override = request.metric, request.metrics, request.reason
    status = request.status
    if status == "auto":
        if measurement is None:
            fail("no_measurement", "--status auto needs a measurement: run `autotune run` first.")
        status = measurement.suggested_status
    # a keep sets the best the next runs are judged against: in a segment driven by `run`,
    # a typed-in number there is an invention unless a person says otherwise
    typed_keep = measurement is None and metric_flag is not None and status == "keep" and state.measured_results
    if typed_keep and not (request.force and override):
        fail("unmeasured_metric", "This segment's results come from `autotune run`, and there "
             "is no measurement to keep: run the benchmark (`autotune run`), then log without "
             "--metric. A typed-in number needs --force --reason \"why\" (recorded).")
    decision = LogDecision(status=status, forced=bool(typed_keep))
    decision.metric, decision.measured = metric_for_log(status, metric_flag, measurement, request.force)
    measured_metrics = measurement is not None and measurement.passed
    if metrics_flag is not None and measured_metrics and not request.force:
        unmeasured = sorted(k for k in metrics_flag if k not in measurement.metrics and k != measurement.pname)
        differing = sorted(k for k in metrics_flag if k in measurement.metrics
                           and not same_number(metrics_flag[k], measurement.metrics[k]))
        if unmeasured:
            fail("metric_mismatch", "--metrics names %s, which `run` did not measure (it measured "
                 "%s); log without --metrics to record what was measured." % (
                     ", ".join(unmeasured), ", ".join(sorted(measurement.metrics)) or "no secondary metric"))
        if differing:
            fail("metric_mismatch", "--metrics differs from what `run` measured for %s; log "
                 "without --metrics to record the measured values." % ", ".join(differing))
    decision.metrics = (dict(measurement.metrics) if measured_metrics and not (request.force and metrics_flag is not None)
                        else metrics_flag if metrics_flag is not None else {})
    if status != "crash" and state.metric_names is not None:
        new, missing = metric_name_changes(state.metric_names, decision.metrics,
                                           state.config.get("metric_name"))
        if new:
            decision.notes.append("new secondary metric%s %s recorded (the segment's earlier results "
                                  "did not have %s)" % ("s" if len(new) > 1 else "", ", ".join(new),
                                                         "them" if len(new) > 1 else "it"))
        if missing:
            decision.warnings.append("secondary metric%s %s of earlier results %s not reported by this "
                                     "one" % ("s" if len(missing) > 1 else "", ", ".join(missing),
                                              "were" if len(missing) > 1 else "was"))
    decision.verdict = measurement.verdict if (measurement is not None and (decision.measured or measurement.crashed)) else None
    if status == "keep" and decision.verdict in BLOCKING_VERDICTS:
        if not (request.force and override):
            fail("keep_refused", "The measurement's verdict is %s%s, so a keep is refused; log "
                 "--status %s, or a person overrides it with --force --reason \"why\"." % (
                     decision.verdict, " (significantly worse than the best)"
                     if decision.verdict == "worse" else "", measurement.suggested_status))
        decision.forced = True
    if status == "keep":  # "improved" is the verdict's when there is one, else strictly better
        direction = state.config.get("direction", "lower")
        decision.improved = state.best is None or (
            decision.verdict in ("baseline", "improved") if decision.verdict is not None
            else is_better(decision.metric, state.best["metric"], direction))
    return decision


def metric_for_log(status, metric_flag, measurement, force):
    """The primary metric of a result: what `run` measured, never a transcription.
    Returns (metric, measured)."""
    if metric_flag is not None:
        if measurement is not None and measurement.primary is not None:
            if same_number(metric_flag, measurement.primary):
                return measurement.primary, True
            if not force:
                fail("metric_mismatch", "--metric %s differs from what `run` measured (%s); omit "
                     "--metric to log the measured value, or pass --force to override it." % (
                         _fmt(metric_flag), _fmt(measurement.primary)))
            return metric_flag, False
        if measurement is not None and measurement.crashed and status not in CRASH_STATUSES and not force:
            fail("metric_mismatch", "The last run %s and measured nothing (%s); log it with "
                 "--status crash, or pass --force to log an invented --metric." % (
                     "timed out" if measurement.timeout else "crashed", measurement.reason or "crash"))
        return metric_flag, measurement is not None and status in CRASH_STATUSES
    if measurement is not None:
        if measurement.primary is None and status in ("keep", "discard"):
            fail("missing_metric", "The last run %s (%s), so there is no metric to %s; log "
                 "it with --status crash." % ("timed out" if measurement.timeout else "crashed",
                                              measurement.reason or "no metric", status))
        return measurement.primary, True
    if status in ("keep", "discard"):
        fail("missing_metric", "No measurement to log: run the benchmark first (`autotune run`).")
    return None, False


def trailer_number(value):
    """The shortest exact text of a number, for the Autotune-Metric trailer."""
    if isinstance(value, float) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


# ---------------------------------------------------------------- diagnosis ----

# Diagnosis of a failed run: the last error line of the output, and whether it looks like
# the edit (it points at a file the experiment changed) or the environment. Pure.

_ENVIRONMENT_SIGNS = (
    (r"command not found|executable file not found|not recognized as an internal", "a command is missing"),
    (r"no module named|modulenotfounderror|cannot find module|cannot find package|"
     r"error while loading shared libraries|importerror", "a module or library is missing"),
    (r"no space left on device|disk quota exceeded", "the disk is full"),
    (r"out of memory|cannot allocate memory|memoryerror|bad_alloc|oom-kill", "memory ran out"),
    (r"connection refused|connection reset|address already in use|network is unreachable|"
     r"could not resolve|name resolution|name or service not known", "the network or a service"),
    (r"too many open files|resource temporarily unavailable", "a resource limit"),
    (r"read-only file system", "the file system is read-only"),
    (r"permission denied|operation not permitted", "a permission"),
    (r"no such file or directory", "a file is missing"),
)
_ERROR_WORDS = (r"(?i)(error|exception|traceback|fatal|panic|abort|segmentation fault|core dumped|"
                r"\bfail(ed|ure|s)?\b|not found|no such file|permission denied|\bkilled\b|assert)")


def clean_output_lines(text):
    """The lines of a process's output as a terminal would show them, without colour
    sequences or other control characters (they must not reach the agent's terminal)."""
    import unicodedata
    return ["".join(ch for ch in strip_controls(raw, keep="") if unicodedata.category(ch) != "Cf").rstrip()
            for raw in (text or "").splitlines()]


def last_error_line(lines):
    """The line that says what went wrong: a Python traceback's exception line, else the
    last line that reads like an error, else the last line (METRIC lines and autotune's
    own notes skipped); None for no output."""
    import re
    lines = [l for l in lines if l.strip() and not l.lstrip().startswith(("METRIC ", "[checks timed out"))]
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("Traceback (most recent call last)"):
            after = [l for l in lines[i + 1:] if not l.startswith((" ", "\t"))]
            if after:
                return _one_line(after[0], 300)
            break
    for line in reversed(lines):
        if re.search(_ERROR_WORDS, line):
            return _one_line(line, 300)
    return _one_line(lines[-1], 300) if lines else None


def _file_refs(lines):
    """The paths an output points at, in order: traceback frames (`File "x.py", line 3`)
    and `path.ext:line` mentions (compilers, Node, Rust and Go panics)."""
    import re
    refs = []
    for line in lines:
        for match in re.finditer(r'File "([^"]+)", line \d+|((?:[A-Za-z]:)?[\w.~/\\+@-]*\w\.\w{1,10}):\d+', line):
            refs.append((match.group(1) or match.group(2)).replace("\\", "/"))
    return refs


def _changed_match(ref, changed, roots):
    """The changed file (a repository path) that `ref` names, or None."""
    if ref.startswith("/"):
        for root in roots:
            prefix = root.rstrip("/") + "/"
            if ref.startswith(prefix) and ref[len(prefix):] in changed:
                return ref[len(prefix):]
        return None
    while ref.startswith("./"):
        ref = ref[2:]
    for name in changed:
        if ref == name or name.endswith("/" + ref):
            return name
    return None


def _changed_file_named(lines, changed, roots):
    """The changed file the output points at (the innermost mention wins), or None: a
    traceback frame or `path:line`, or a module that cannot be found or imported whose
    name is a changed file's."""
    import re
    hit = None
    for ref in _file_refs(lines):
        hit = _changed_match(ref, changed, roots) or hit
    if hit:
        return hit
    for line in reversed(lines[-40:]):
        missing = re.search(r"no module named '?([\w.]+)|cannot find module '([^']+)'|"
                            r"cannot import name '?\w+'? from '([\w.]+)'", line, re.I)
        name = missing and [g for g in missing.groups() if g][0].replace("/", ".").split(".")[-1]
        if name:
            return next((c for c in changed if c.rsplit("/", 1)[-1].rsplit(".", 1)[0] == name
                         or ("/%s/" % name) in "/" + c), None)
    return None


def _environment_sign(line, lines, changed_files):
    """Why the failure reads like the environment (the last error line is asked first,
    then the output's tail), or None."""
    import re
    sign = None
    for text in (line or "", "\n".join(lines[-40:])):
        sign = next((label for pattern, label in _ENVIRONMENT_SIGNS if re.search(pattern, text, re.I)), None)
        if sign:
            break
    if changed_files is not None and not changed_files:   # nothing differs from the kept code
        sign = "the experiment changes no file, so the edit cannot be the cause" + (
            "; the output says %s" % sign if sign else "")
    return sign


def _timeout_advice(kind, line, sign, limit, load):
    """(origin, why, text) for a benchmark or checks timeout: the environment when the
    machine was overloaded (load above CPUs + 1) or nothing changed, else the edit."""
    what, stays = (("the benchmark", "benchmark") if kind == "timeout"
                   else ("the correctness checks", "checks"))
    head = "%s ran past %s timeout%s and %s killed." % (
        what[0].upper() + what[1:], "its" if kind == "timeout" else "their",
        (" (%ss)" % _fmt(limit)) if limit else "", "was" if kind == "timeout" else "were")
    if line:
        head += ' Its output ends with "%s".' % line
    known = load is not None and load[0] is not None and bool(load[1])
    if (known and load[0] > load[1] + 1) or (sign and sign.startswith("the experiment changes no file")):
        why = "the machine was overloaded (load %s on %d CPUs)" % (_fmt(load[0]), load[1]) \
            if known and load[0] > load[1] + 1 else sign
        return "environment", why, ("%s It may be the environment: %s. Run again on a quieter machine; "
                                    "the %s stays as it is." % (head, why, stays))
    why = "the kept code finished within the limit%s" % (
        (" and the machine was not overloaded (load %s on %d CPUs)" % (_fmt(load[0]), load[1])) if known else "")
    return "edit", why, ("%s It looks like the edit made %s much slower or made it hang (an infinite "
                         "loop, a deadlock, a wait for input): %s. Look for that in the change, or drop "
                         "the idea; the timeout and the %s stay as they are." % (head, what, why, stays))


def _checks_advice(line, hit, sign):
    """(origin, why, text) for failed correctness checks: the edit unless the output
    reads like the environment (the kept code passed the same checks)."""
    head = "The benchmark ran, but the correctness checks failed%s." % ((': "%s"' % line) if line else "")
    if sign:
        why = "the checks' output says %s" % sign
        return "environment", why, ("%s It looks like the environment (%s), not the edit: run ./%s by "
                                    "hand on the kept code; if it fails the same way, fix the "
                                    "environment, not the checks." % (head, sign, CHECKS_FILE))
    why = ("the failure points at %s, which the experiment changed" % hit if hit
           else "the kept code passed the same checks")
    return "edit", why, ("%s It looks like the edit: %s, so the change alters what the code computes. "
                         "Fix the behaviour or drop the idea; never edit the checks or the tests that "
                         "define correctness." % (head, why))


def _crash_advice(line, hit, sign, changed):
    """(origin, why, text) for a benchmark crash."""
    head = "The benchmark crashed%s." % ((': its output ends with "%s"' % line) if line else " without any output")
    if hit:
        why = "the error points at %s, which the experiment changed" % hit
        return "edit", why, ("%s It looks like the edit: %s. Fix the bug and retry the idea (after the "
                             "log, `autotune restore --list` finds the reverted change), or drop it; the "
                             "benchmark stays as it is." % (head, why))
    if sign:
        return "environment", "the output says %s" % sign, (
            "%s It looks like the environment (%s), not the edit: run ./%s by hand on the kept code; if it "
            "fails the same way, fix the environment (install, free or restart what is missing), not the "
            "benchmark, then retry the idea." % (head, sign, BENCH_FILE))
    why = "the error names no file the experiment changed%s" % (
        (" (%s)" % ", ".join(changed[:5])) if changed else "")
    return "unclear", why, ("%s The cause is not certain: %s. The kept code passed this benchmark, so the "
                            "edit is still the likely cause (through code that calls it or data it "
                            "changes); run ./%s by hand on the kept code to rule out the environment. The "
                            "benchmark stays as it is." % (head, why, BENCH_FILE))


def diagnose_crash(output, changed_files, kind="crash", roots=(), limit=None, load=None):
    """What a failed run says about its cause, for `run`, `log` and `explain` (pure).

    kind is `crash`, `timeout`, `checks_failed` or `checks_timeout`; output is the tail
    of the benchmark's (or the checks') output; changed_files the experiment's paths
    relative to the repository root `roots` (as given and as resolved), None when
    unknown; limit the timeout in seconds; load (load average, CPU count). Returns
    {"kind", "line", "origin", "file", "why", "text"}: origin `edit` when the error
    points at a file the experiment changed (or the checks reject its result),
    `environment` when it reads like a missing tool, a full disk, memory or the network
    (or nothing changed, or the machine was overloaded at a timeout), else `unclear`.
    `text` is the advice: it never suggests editing the benchmark or the checks, which
    the agent's rules forbid."""
    lines = clean_output_lines(output)
    line = last_error_line(lines)
    changed = list(changed_files or [])
    hit = _changed_file_named(lines, changed, roots)
    sign = None if hit else _environment_sign(line, lines, changed_files)
    if kind in ("timeout", "checks_timeout"):
        origin, why, text = _timeout_advice(kind, line, sign, limit, load)
        hit = None
    elif kind == "checks_failed":
        origin, why, text = _checks_advice(line, hit, sign)
    else:
        origin, why, text = _crash_advice(line, hit, sign, changed)
    return {"kind": kind, "line": line, "origin": origin, "file": hit, "why": why, "text": text}


def crash_reason(outcome, pname, limit=None):
    if outcome.error:
        return outcome.error
    if outcome.timeout:
        return "timed out: still running after %ss (the timeout), so its process group was killed" % (
            _fmt(limit if limit is not None else outcome.dur))
    if outcome.exit != 0:
        if outcome.exit is not None and outcome.exit < 0:
            return "killed by signal %d" % -outcome.exit
        return "exited with code %s" % outcome.exit
    if pname not in outcome.metrics:
        return "exited 0 but printed no `METRIC %s=<number>` line" % pname
    return None


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
        "Stop trying new ideas and find the cause first: read the output tail of the last "
        "run (and chk_out for the checks), run ./autotune.sh by hand on the kept code, and "
        "fix the environment or the edit before the next experiment (the benchmark and the "
        "checks stay as they are: they define the goal)."),
    "diagnose_plateau": (
        "Stop trying ideas of the same kind and find where the metric is spent: profile the "
        "workload the benchmark runs, read the secondary metrics and the dead ends in "
        "autotune.md, and write down what dominates before the next experiment targets it."),
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


def choose_playbook(failure, attempt, settings, deterministic=False):
    """The attempt-th healing action (1-based) for this failure: escalation through
    the failure's preferred order, keeping only configured playbooks. A plateau of a
    deterministic benchmark skips `rebaseline`: identical re-measurements teach nothing."""
    allowed = [p for p in settings.playbooks if settings.pause_on_exhausted or p != "pause"]
    if deterministic and failure == "plateau":
        allowed = [p for p in allowed if p != "rebaseline"]
    order = [p for p in FAILURE_PLAYBOOK_ORDER[failure] if p in allowed] or allowed or ["diagnose"]
    return order[min(attempt, len(order)) - 1]


STREAK_FIELDS = ("no_improve", "crash_streak", "keep_streak", "heals")


def count_result(streaks, status):
    """The streak counters (STREAK_FIELDS, read from the mapping `streaks`, which is not
    changed) after one result, as a new dict: the one place they are counted, for the
    health machine (`advance`) and for the fold of the log. A keep ends the
    no-improvement, failure and healing streaks and extends the keep streak; a discard
    extends the no-improvement streak and ends the others but healing; a failure (crash,
    checks_failed) extends the no-improvement and failure streaks. A person's `resume`
    ends the no-improvement, failure and healing streaks and leaves the keep streak."""
    counts = {name: streaks[name] for name in STREAK_FIELDS}
    if status == "keep":
        counts.update(no_improve=0, crash_streak=0, heals=0, keep_streak=counts["keep_streak"] + 1)
    elif status == "resume":
        counts.update(no_improve=0, crash_streak=0, heals=0)
    elif status == "discard":
        counts.update(no_improve=counts["no_improve"] + 1, crash_streak=0, keep_streak=0)
    else:
        counts.update(no_improve=counts["no_improve"] + 1, crash_streak=counts["crash_streak"] + 1,
                      keep_streak=0)
    return counts


def advance(prev, status, improved, settings, deterministic=False, timeout=False):
    """The health machine: the health fields after one logged result.

    `prev` holds the fields of health_fields(); the answer is a new dict. A `pause`
    playbook pauses the loop; `pauseOnExhaustedRecovery: false` removes it, so the
    loop keeps healing with its last action instead of ever pausing itself.
    `deterministic` (the benchmark's values are identical on re-measurement) takes
    `rebaseline` out of a plateau's recovery; `timeout` (a crash whose verdict is a
    timeout) makes the reason `timeout`, not `crash`.
    """
    nxt = dict(prev)
    nxt.update(count_result(prev, status), active=True, recovery=None)
    if status == "keep":
        nxt.update(mode="optimize", failure=None,
                   health="improving" if improved else "running",
                   reason="improved" if improved else "kept_no_degrade")
        return nxt
    if status == "discard":
        nxt["reason"] = "no_improve"
        if nxt["no_improve"] >= settings.max_no_improve:
            nxt.update(failure="plateau", health="plateaued")
        else:
            nxt.update(failure=None, health="running")
    else:
        crash = status == "crash"
        nxt.update(failure="benchmark_crash" if crash else "checks_failed", health="crashing",
                   reason=("timeout" if timeout else "crash") if crash else "checks_failed")
    heal = (nxt["failure"] == "plateau" or
            (nxt["failure"] in ("benchmark_crash", "checks_failed")
             and nxt["crash_streak"] >= settings.max_crash_streak))
    if not heal:
        return nxt
    if prev["heals"] >= settings.max_heals and settings.pause_on_exhausted:
        nxt.update(health="paused", recovery="pause", mode="repair",
                   reason="recovery_exhausted", active=False)
        return nxt
    action = choose_playbook(nxt["failure"], prev["heals"] + 1, settings, deterministic)
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
    """The suggested next step for this state, as (code, what it means in practice);
    during a failure streak the text ends with the diagnosis of the last failure."""
    action, text = playbook_action(state)
    diagnosis = failure_diagnosis(state)
    if diagnosis and action not in ("init", "report"):
        text = "%s %s" % (text, diagnosis["text"])
    return action, text


def failure_diagnosis(state):
    """The diagnosis of the last result while the loop is in its failure streak, or None."""
    last = state.last or {}
    diagnosis = last.get("diagnosis")
    if state.crash_streak and last.get("status") in CRASH_STATUSES and isinstance(diagnosis, dict) \
            and isinstance(diagnosis.get("text"), str):
        return diagnosis
    return None


def playbook_action(state):
    """next_action without the diagnosis: the playbook this state calls for."""
    if state.config is None:
        return "init", "Start a session with `autotune init`."
    if state.health == "completed" and needs_verify(state):
        return "verify", ("The loop is complete (%s). Before reporting, check the headline: `autotune "
                          "verify` measures the baseline commit beside the best one in the same window "
                          "(the logged figure compares numbers taken at different times); then summarize "
                          "the wins in autotune.md and read `autotune report`." % (state.reason or "budget reached"))
    if state.health == "completed":
        return "report", ("The loop is complete (%s). Summarize the wins in autotune.md, read "
                          "`autotune report`, and start a new segment with `autotune init` if "
                          "there is more to gain." % (state.reason or "budget reached"))
    if state.health == "stopped":
        reason = state.reason if state.reason not in (None, "stopped by a person") else None
        return "resume", ("The loop is stopped (by %s%s). `autotune resume` continues it where it "
                          "left off; `autotune repair` continues it in repair mode." % (
                              "the agent" if state.stopped_by == "agent" else "a person",
                              (": %s" % reason) if reason else ""))
    if state.health == "paused" or not state.active:
        if state.reason == "recovery_exhausted" or state.recovery == "pause":
            return "manual_repair", (
                "The loop paused itself: its recovery playbooks did not get it moving again. "
                "A person should read the recent results, fix the cause (the environment, the "
                "scope or the idea backlog; a benchmark or checks that are wrong take a new "
                "segment, `autotune init`), then `autotune resume` (or `autotune repair` to "
                "resume in repair mode). The agent stops here and edits nothing.")
        return "manual_repair", ("The loop is stopped (%s). Run `autotune resume` to continue "
                                 "it, or `autotune repair` to continue in repair mode."
                                 % (state.reason or "paused"))
    if state.health == "healing" and state.recovery == "rebaseline" and state.rebaselined_at == state.n_exp:
        return "continue", ("The rebaseline is done: the best was re-measured after the last result. Now "
                            "try an idea of a different kind than the last ones.")
    if state.recovery == "manual_repair":
        return "repair", PLAYBOOK_TEXT["manual_repair"]
    if state.health == "healing" and state.recovery:
        key = "diagnose_plateau" if (state.recovery, state.failure) == ("diagnose", "plateau") else state.recovery
        return state.recovery, PLAYBOOK_TEXT.get(key, "Apply the %s playbook." % state.recovery)
    if state.health == "plateaued":
        if (state.reference or {}).get("deterministic"):  # identical re-measurements teach nothing
            return "shrink_scope", PLAYBOOK_TEXT["shrink_scope"]
        return "rebaseline", PLAYBOOK_TEXT["rebaseline"]
    if state.health == "crashing":
        return "diagnose", PLAYBOOK_TEXT["diagnose"]
    if state.n_exp == 0:
        return "baseline", ("Measure the baseline: `autotune run` on the unchanged code, then "
                            "`autotune log --status keep --description baseline`.")
    return "continue", ("Pick the next idea, make one focused change, `autotune run`, then "
                        "`autotune log --status auto --description ...`.")


def new_segment_command(state):
    """The shell-quoted `autotune init` that starts a new segment of this loop."""
    config = state.config or {}
    unit = config.get("metric_unit")
    return "autotune init --name %s --metric %s%s --direction %s" % (
        _shell_quote(config.get("name") or "loop"), _shell_quote(config.get("metric_name") or "metric"),
        (" --unit %s" % _shell_quote(unit)) if unit else "",
        _shell_quote(config.get("direction") or "lower"))


def require_config(loop, state):
    if state.config is None:
        fail("no_session", "%s has no config line; run `autotune init` first." % loop.log_path)


def require_metric_name(state):
    """The segment's primary metric name, which must be one a benchmark can print under
    the METRIC grammar (a log from before it, or edited by hand, may hold another)."""
    name = state.config.get("metric_name")
    if not valid_metric_name(name):
        config = State(config=dict(state.config, metric_name="NEW_NAME"))
        fail("bad_metric_name", "The segment's metric name %s is not a valid metric name (a "
             "letter, digit or _, then letters, digits and _ . : / %% -), so no METRIC line can report "
             "it. Start a new segment with a valid one: %s" % (json.dumps(name), new_segment_command(config)))
    return name


def check_may_run(loop, state, now, logging=False):
    """Refuses (`inactive`, then `budget_spent`) unless the loop is active AND its budget
    is not spent: two checks, not one. `run` needs both; `log` records what `run`
    measured, so of the budgets only the iteration count stops it: time and target
    budgets end the loop once the result is recorded."""
    require_config(loop, state)
    if not state.active:
        _, advice = next_action(state)
        fail("inactive", "The loop is not active (health %s, reason %s)%s. %s" % (
            state.health, state.reason or "-", "; nothing was logged" if logging else "", advice))
    limit = loop.settings.max_iterations
    reason = (("%d results, its iteration budget" % state.n_exp) if limit and state.n_exp >= limit
              else None) if logging else spent_budget(loop, state, now)
    if reason:
        fail("budget_spent", "The budget of segment %d is spent (%s); raise it in %s or start a "
             "new segment with `autotune init`." % (state.segment, reason, CONFIG_FILE))


def spent_budget(loop, state, now):
    """Why the segment's budget is spent at `now` (epoch seconds), or None."""
    direction = state.config.get("direction", "lower")
    best = state.best["metric"] if state.best else None
    return budget_reason(state.n_exp, best, direction, loop.settings,
                         iso_to_epoch(state.started_at), now)


def needs_verify(state):
    """A kept change since the baseline that no `verify` has measured yet."""
    best, base = state.best or {}, state.baseline or {}
    return bool(best and base and best.get("index") != base.get("index")
                and best.get("commit") and best.get("commit") != base.get("commit")
                and current_verification(state) is None)


def current_verification(state):
    """The last `verify` of this segment if it measured the current best, else None."""
    verified = state.verified
    if not verified or not state.best or verified.get("best_index") != state.best.get("index"):
        return None
    return verified


FAILURE_WORDS = {"crash": ("benchmark crash", "benchmark crashes"),
                 "timeout": ("benchmark timeout", "benchmark timeouts"),
                 "checks_failed": ("checks failure", "checks failures")}


def streak_text(state):
    """The current failure streak in words, its kinds in order (a crash and a checks
    failure that follows it are different failures): "2 failures in a row: a benchmark
    crash, then a checks failure"; None without a streak."""
    streak = state.crash_streak or 0
    kinds = [k for k in (state.streak_kinds or []) if k in FAILURE_WORDS][-streak:] if streak else []
    if not kinds:
        return None
    groups = []
    for kind in kinds:
        if groups and groups[-1][0] == kind:
            groups[-1][1] += 1
        else:
            groups.append([kind, 1])
    if len(groups) == 1 and len(kinds) == streak:
        what = {"crash": "the benchmark failed", "timeout": "the benchmark timed out",
                "checks_failed": "the correctness checks failed"}[kinds[0]]
        return "%s %s in a row" % (what, "once" if streak == 1 else "%d times" % streak)
    parts = ["%s %s" % ("a" if n == 1 else n, FAILURE_WORDS[k][n != 1]) for k, n in groups]
    return "%d failure%s in a row: %s%s" % (streak, "" if streak == 1 else "s",
                                            "..., " if len(kinds) < streak else "", ", then ".join(parts))


def recovery_subject(state):
    """Which failure a recovery is about when the streak mixes kinds: the last one."""
    kinds = set((state.streak_kinds or [])[-(state.crash_streak or 0):]) if state.crash_streak else set()
    last = (state.streak_kinds or [None])[-1]
    if len(kinds) < 2 or last not in FAILURE_WORDS:
        return ""
    what = {"crash": "the benchmark crash", "timeout": "the benchmark timeout",
            "checks_failed": "the correctness checks"}[last]
    return ", about the last failure, %s, not the earlier %s" % (what, " or ".join(
        FAILURE_WORDS[k][0] for k in sorted(kinds - {last})))


def reason_text(state, settings):
    """The last decision of the loop, in a sentence."""
    reason = state.reason or ""
    streak = streak_text(state)
    cause = {
        "plateau": "%d experiments in a row did not beat the best (%d make a plateau)" % (
            state.no_improve, settings.max_no_improve),
        "benchmark_crash": "%s (%d start recovery)" % (
            streak or "the benchmark failed %d times in a row" % state.crash_streak, settings.max_crash_streak),
        "checks_failed": "%s (%d start recovery)" % (
            streak or "experiments failed %d times in a row, the last on the correctness checks"
            % state.crash_streak, settings.max_crash_streak),
    }.get(state.failure, state.failure or "")
    if state.health == "stopped":
        return "%s stopped the loop%s; its data is kept" % (
            "the agent" if state.stopped_by == "agent" else "a person",
            "" if reason in ("", "stopped by a person") else " (%s)" % reason)
    last = state.last or {}
    if reason == "initialized":
        return "a new segment started; nothing has been logged in it yet"
    if reason == "improved" and state.n_exp == 1:
        return "the baseline was measured and kept; every later experiment is judged against it"
    if reason == "improved":
        return "the last experiment beat the best, so it was kept"
    if reason == "kept_no_degrade":
        if last.get("rule") == "simpler":
            return ("the last experiment was kept without beating the best: at an equal result it "
                    "removes more lines than it adds (simpler is better), and the best stays %s" % (
                        _fmt((state.best or {}).get("metric"))))
        return "the last experiment was kept without beating the best"
    if reason == "no_improve":
        return "the last experiment did not beat the best and was reverted (%d in a row; %d make a plateau)" % (
            state.no_improve, settings.max_no_improve)
    if reason in ("crash", "timeout", "checks_failed"):
        what = ("the benchmark timed out" if reason == "timeout" or last.get("verdict") == "timeout"
                else "the benchmark crashed" if reason == "crash" else "the correctness checks failed")
        mixed = streak and ": " in streak
        return "%s on the last experiment (%s; %d start recovery)" % (
            what, streak if mixed else "%d failure%s in a row" % (
                state.crash_streak, "" if state.crash_streak == 1 else "s"), settings.max_crash_streak)
    if reason == "heal:pause":
        return "%s, and the next recovery playbook is to pause, so the loop paused itself" % cause
    if reason.startswith("heal:"):
        return "%s, so recovery attempt %d of %d is %s%s" % (cause, state.heals, settings.max_heals, reason[5:],
                                                             recovery_subject(state))
    if reason == "recovery_exhausted":
        return "%s even after %d recovery attempt%s (the most allowed), so the loop paused itself" % (
            cause or "the loop kept failing", state.heals, "" if state.heals == 1 else "s")
    return reason or "-"


# ----------------------------------------------------------------- the fold ----

# The fold: the log, read top to bottom, becomes the state. Pure over parsed lines.

_SEGMENT_KEEP = ("segments", "total_results", "format", "log_size", "log_tail", "lines",
                 "bad_lines", "bad_line_numbers",
                 "resume_count", "resume_at", "stop_blocks")  # the resume caps are per session


def toolchain_of(env):
    """{"tools", "locks"} from a result's environment record, or None when it has none
    (a record of an older version); junk from a hand-edited log is dropped."""
    if not isinstance(env, dict) or ("toolchain" not in env and "lockfiles" not in env):
        return None

    def clean(value):
        if not isinstance(value, dict):
            return {}
        return {str(k)[:200]: (v[:200] if isinstance(v, str) else None)
                for k, v in list(value.items())[:30]}
    return {"tools": clean(env.get("toolchain")), "locks": clean(env.get("lockfiles"))}


def toolchain_changes(reference, current, locks=True):
    """What differs between two toolchain records, as short phrases (tools first)."""
    if not reference or not current:
        return []
    changes = []
    old, new = reference.get("tools") or {}, current.get("tools") or {}
    for tool in sorted(set(old) | set(new)):
        if tool in old and tool in new:
            if old[tool] != new[tool]:
                changes.append("%s %s → %s" % (tool, old[tool] or "not found", new[tool] or "not found"))
        elif tool in new and new[tool]:
            changes.append("%s %s (not used at the baseline)" % (tool, new[tool]))
    if not locks:
        return changes
    old, new = reference.get("locks") or {}, current.get("locks") or {}
    since = reference.get("lock_index")
    where = (" since #%s, the last keep" % since) if since and since != reference.get("index") else ""
    for name in sorted(set(old) | set(new)):
        if name not in new:
            changes.append("%s was removed%s" % (name, where))
        elif name not in old:
            changes.append("%s was added%s" % (name, where))
        elif old[name] != new[name]:
            changes.append("%s changed%s (sha256 %s → %s)" % (name, where, (old[name] or "?")[:8],
                                                             (new[name] or "?")[:8]))
    return changes


def toolchain_warning(changes):
    """One sentence for run and explain; what it implies depends on what changed: other tool
    versions make numbers incomparable, a lockfile change is usually the experiment's own."""
    if not changes:
        return None
    tools = [c for c in changes if not c.split(" ", 1)[0].endswith(LOCK_SUFFIXES)]
    text = "the toolchain changed since the baseline: %s" % "; ".join(changes)
    if tools:
        text += " (numbers measured with other tool versions are not comparable)"
    if len(tools) < len(changes):
        text += (" (a lockfile changed: the run measures the dependencies installed now; after a "
                 "keep or discard, `log` names the command that brings them back in line)")
    return text


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
        point = _fold_result(state, entry)
        if isinstance(entry.get("active"), bool):
            state.set_at, state.set_offset = entry.get("timestamp"), offset
        return point
    elif kind == "control":
        _fold_control(state, entry)
        if entry.get("action") in ("stop", "resume", "repair"):
            state.set_at, state.set_offset = entry.get("timestamp"), offset
    elif kind == "rebaseline":
        samples = _samples_of(entry, entry.get("metric") if _is_number(entry.get("metric")) else None)
        if samples and state.config is not None:
            state.rebaselined_at = state.n_exp
            state.reference = {"metric": median(samples), "samples": samples, "source": "rebaseline",
                               "timestamp": entry.get("timestamp"),
                               "deterministic": is_deterministic(samples)}
            if isinstance(entry.get("metrics"), dict):
                state.reference["metrics"] = entry["metrics"]   # guardrails compare with these
            if _is_number(entry.get("holdout")):
                state.reference["holdout"] = entry["holdout"]   # and the holdout with this
    elif kind == "verify" and state.config is not None and _is_number(entry.get("delta_pct")):
        state.verified = {name: entry.get(name) for name in (
            "delta_pct", "low_pct", "high_pct", "pairs", "logged_pct", "timestamp")}
        state.verified["best_index"] = (entry.get("best") or {}).get("index")
    elif kind == "measurement":
        if state.config is not None and entry.get("segment") == state.segment and _is_int(offset):
            state.pending = offset  # what the next `log` records, read back from the log
    elif kind == "resume":
        state.resume_count += 1
        state.resume_at = iso_to_epoch(entry.get("timestamp")) or state.resume_at
        if isinstance(entry.get("session_id"), str):
            state.session_id = entry["session_id"]
    elif kind == "hook" and entry.get("action") == "block":
        state.stop_blocks += 1
        streak = entry.get("streak")
        state.stop_streak = streak if _is_int(streak) else state.stop_streak + 1
        state.resume_capped = None
    elif kind == "hook" and entry.get("action") == "capped":
        state.resume_capped = str(entry.get("cap"))  # said once: the Stop hook stays silent after
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
    state.started_at = state.set_at = entry.get("timestamp")
    state.set_offset = offset
    state.session_id = entry.get("session_id")
    state.hashes = entry.get("hashes") if isinstance(entry.get("hashes"), dict) else None
    state.snapshot = entry.get("snapshot") if isinstance(entry.get("snapshot"), dict) else None
    state.inputs = entry.get("inputs") if isinstance(entry.get("inputs"), dict) else None
    state.judge = entry.get("judge") if isinstance(entry.get("judge"), dict) else legacy_judge(entry)


def failure_kind(status, verdict):
    """A failed result's kind: `timeout` (a crash whose verdict says the benchmark ran out
    of time), `crash` or `checks_failed`; None for keep and discard."""
    if status == "crash":
        return "timeout" if verdict == "timeout" else "crash"
    return "checks_failed" if status == "checks_failed" else None


def last_load(evidence):
    """From a result's evidence: how many pairs were set aside for unequal load, and
    whether the machine was too busy to decide ({"unequal_pairs", "pairs", "busy"}), or
    None when no pair was."""
    load = evidence.get("contention") if isinstance(evidence, dict) else None
    if not isinstance(load, dict) or not _is_int(load.get("unequal_pairs")) or load["unequal_pairs"] <= 0:
        return None
    return {"unequal_pairs": load["unequal_pairs"], "pairs": load.get("pairs") if _is_int(load.get("pairs")) else None,
            "busy": bool(load.get("busy"))}


def _fold_counts(state, entry, status):
    """A result's counts: the tally per status, the streaks (count_result), the kinds of
    the failures in the current streak, and the heals (a result whose reason is a
    playbook, `heal:...`)."""
    for name, value in count_result(health_fields(state), status).items():
        setattr(state, name, value)
    if status == "keep":
        state.kept += 1
        state.streak_kinds = []
    elif status == "discard":
        state.discarded += 1
        state.streak_kinds = []
    else:
        kind = failure_kind(status, entry.get("verdict"))
        if status == "crash":
            state.crashed += 1
            state.timed_out += kind == "timeout"
        else:
            state.checks_failed += 1
        state.streak_kinds = (state.streak_kinds + [kind])[-10:]
    reason = entry.get("reason")
    if isinstance(reason, str) and reason.startswith("heal:"):
        state.heals += 1
    state.failures = state.crash_streak


def _fold_health(state, entry):
    """The health fields as the result line says (`log` wrote them from the health
    machine); junk types become text, a missing `active` follows the health."""
    for name in ("health", "failure", "recovery", "reason"):
        value = entry.get(name)
        setattr(state, name, value if value is None or isinstance(value, str) else str(value))
    if entry.get("mode") in MODES:
        state.mode = entry["mode"]
    active = entry.get("active")
    state.active = active if isinstance(active, bool) else state.health not in ("paused", "stopped", "completed")


def _fold_best(state, entry, status, index, point, metrics):
    """The segment's baseline (its first measured keep or discard) and best (an improved
    keep; a line without `improved` is judged here), and the reference the next verdict
    compares with: the best's samples."""
    timestamp = entry.get("timestamp")
    if state.baseline is None and point is not None and status in ("keep", "discard"):
        state.baseline = {"index": index, "metric": point, "commit": entry.get("commit"),
                          "samples": _samples_of(entry, point), "metrics": metrics,
                          "holdout": entry.get("holdout") if _is_number(entry.get("holdout")) else None}
    improved = entry.get("improved")
    if not isinstance(improved, bool):
        improved = (status == "keep" and point is not None and
                    (state.best is None or is_better(point, state.best["metric"],
                                                     state.config.get("direction", "lower"))))
    if improved and point is not None:
        samples = _samples_of(entry, point)
        state.best = {"index": index, "metric": point, "commit": entry.get("commit"),
                      "samples": samples, "metrics": metrics, "timestamp": timestamp,
                      "description": entry.get("description"),
                      "holdout": entry.get("holdout") if _is_number(entry.get("holdout")) else None}
        # the baseline decides whether the benchmark is deterministic; a later keep keeps
        # that (one sample of a deterministic benchmark; identical samples of a noisy one)
        inherited = (state.reference or {}).get("deterministic")
        state.reference = {"metric": median(samples), "samples": samples, "source": "#%d" % index,
                           "timestamp": timestamp,
                           "deterministic": (is_deterministic(samples) if inherited is None else
                                             bool(inherited) and (len(samples) == 1 or is_deterministic(samples)))}
        state.progress_at = timestamp


def _fold_result(state, entry):
    status = entry.get("status")
    if status not in STATUSES or state.config is None:
        return None
    state.n_exp += 1
    state.total_results += 1
    index = entry.get("index") if _is_int(entry.get("index")) else state.n_exp
    metric = float(entry["metric"]) if _is_number(entry.get("metric")) else None
    point = metric if status not in CRASH_STATUSES else None  # failures are not the code's speed
    timestamp = entry.get("timestamp")
    if point is not None:
        state.metric_points += 1
    if entry.get("measured") is True:
        state.measured_results += 1
    if state.n_exp == 1:  # the benchmark, its inputs and its judge as they were at the baseline
        for name in ("hashes", "inputs", "judge"):
            if isinstance(entry.get(name), dict):
                setattr(state, name, entry[name])
    state.pending = None  # a result consumes the measurement before it
    _fold_counts(state, entry, status)
    _fold_health(state, entry)
    metrics = entry.get("metrics") if isinstance(entry.get("metrics"), dict) else {}
    if len(metrics) > MAX_METRIC_NAMES:  # a hand-made line: the state stays small
        metrics = dict(list(metrics.items())[:MAX_METRIC_NAMES])
    _fold_best(state, entry, status, index, point, metrics)
    if status != "crash" and entry.get("metrics") is not None:
        # every secondary name the segment has seen (a new one is noted once, when it
        # appears); the primary is not a secondary metric even when a result listed it
        names = set(state.metric_names or ()) | set(metrics)
        names.discard(state.config.get("metric_name"))
        state.metric_names = sorted(names)
    state.last = {"index": index, "status": status, "metric": metric, "commit": entry.get("commit"),
                  "description": entry.get("description"), "timestamp": timestamp,
                  "verdict": entry.get("verdict")}
    for name in ("diagnosis", "rule"):   # why it failed, or which rule kept or discarded it
        if isinstance(entry.get(name), (dict, str)):
            state.last[name] = entry[name]
    load = last_load(entry.get("evidence"))
    if load:
        state.last["load"] = load
    _fold_toolchain(state, toolchain_of(entry.get("env")), index, status)
    state.exp_at = timestamp
    conf = entry.get("confidence")
    state.confidence = conf if isinstance(conf, dict) else None
    snap = entry.get("snapshot")
    state.snapshot = snap if isinstance(snap, dict) else None
    state.stop_streak = 0
    if isinstance(entry.get("session_id"), str):
        state.session_id = entry["session_id"]
    return point


def _fold_toolchain(state, record, index, status):
    """The segment's toolchain reference: tool versions of its first recorded result (the
    baseline), lockfiles of its last keep (a kept dependency change is the code's); and
    the last result's record, for `explain`."""
    if record is None:
        return
    if state.toolchain is None:
        state.toolchain = dict(record, index=index, lock_index=index)
    elif status == "keep":
        state.toolchain = dict(state.toolchain, locks=record["locks"], lock_index=index)
    state.last_toolchain = dict(record, index=index)


def _fold_control(state, entry):
    action = entry.get("action")
    if action == "stop":  # a voluntary stop is "stopped"; "paused" is the loop pausing itself
        state.active = False
        state.health = "stopped"
        state.reason = entry.get("reason") or "stopped by a person"
        state.stopped_by = entry.get("by")
    elif action == "resume":
        state.active = True
        state.health = "running"
        state.mode = "optimize"
        state.failure = state.recovery = None
        state.reason = "resumed"
        for name, value in count_result(health_fields(state), "resume").items():
            setattr(state, name, value)
        state.failures = 0
        state.stop_streak = 0
        state.streak_kinds = []
        state.resume_capped = None
    elif action == "snapshot" and isinstance(entry.get("snapshot"), dict):
        state.snapshot = entry["snapshot"]
    elif action == "repair":
        state.active = True
        state.mode = "repair"
        state.health = "healing"
        state.recovery = "manual_repair"
        state.reason = "manual repair requested"
        state.stop_streak = 0


# -------------------------------------------------------------------- views ----

def sync_message(git_info, deps):
    kept = git_info.get("action") == "commit"
    text = "the %s %s %s" % ("keep" if kept else "discard", "committed" if kept else "reverted",
                             ", ".join(deps["changed"][:6]))
    suggested = " and ".join("`%s`" % c for c in deps["sync"]) or "the install"
    ran = deps.get("ran")
    if ran is None:
        return ("%s: the installed dependencies %s; run %s before the next `autotune run` (set "
                "\"syncCommand\" in %s to run it automatically)" % (
                    text, "may not match them (unless the experiment installed them)" if kept
                    else "no longer match the code", suggested, CONFIG_FILE))
    if ran.get("exit") == 0 and not ran.get("timeout"):
        return "%s; syncCommand `%s` brought the installed dependencies in line (exit 0, %ss)" % (
            text, ran["command"], _fmt(ran.get("dur")))
    return ("%s, and syncCommand `%s` failed (%s): the installed dependencies may not match the "
            "code; fix them before the next `autotune run` (suggested: %s)" % (
                text, ran["command"], "timed out" if ran.get("timeout") else "exit %s" % ran.get("exit"),
                suggested))


def kept_code_entry(measurement, state):
    """The kept code's samples that `run` measured (a best without samples), recorded as a
    rebaseline line before the result: later verdicts compare with them."""
    ref, previous = measurement.reference, state.reference or {}
    return {"type": "rebaseline", "timestamp": measurement.timestamp, "segment": state.segment,
            "commit": ref.get("commit"), "metric": ref.get("metric"), "samples": ref.get("samples"),
            "metrics": ref.get("metrics") or {}, "source": "run",
            "previous": {"metric": _round(previous.get("metric")),
                         "n": len(previous.get("samples") or []), "source": previous.get("source")}}


def log_answer(state, settings, result, pname, git_info, notes=(), warnings=()):
    """The JSON `log` prints: the result, what git did, and where the loop now stands."""
    baseline = (state.baseline or {}).get("metric")
    metric = result.metric
    delta = (metric - baseline) if (metric is not None and baseline is not None) else None
    action, advice = next_action(state)
    answer = {"status": result.status, "index": result.index, "commit": result.commit,
            "metric": metric, "name": pname, "baseline": _round(baseline), "delta": _round(delta),
            "d_pct": _round(pct_change(metric, baseline), 2),
            "desc": result.description, "confidence": result.confidence, "git": git_info,
            "limit": {"max_iterations": settings.max_iterations, "runs": state.n_exp,
                      "remaining": (settings.max_iterations - state.n_exp) if settings.max_iterations else None},
            "health": state.health, "failure": state.failure, "recovery": state.recovery,
            "reason": state.reason, "mode": state.mode, "active": state.active,
            "improved": result.improved, "best": _round((state.best or {}).get("metric")),
            "verdict": result.verdict, "measured": result.measured, "next": action, "next_text": advice}
    if result.rule:
        answer["rule"] = result.rule
    if result.diagnosis:
        answer["diagnosis"] = result.diagnosis
    if notes:
        answer["notes"] = list(notes)
    if warnings:
        answer["warnings"] = list(warnings)
    return answer


def head_moved_message(snapshot_head, head, own):
    if own is not None:
        return ("HEAD (%s) is autotune's own keep of \"%s\", whose log line was lost (the process was "
                "killed after committing). Record it with: autotune log --status keep --commit %s "
                "--metric %s --description %s" % (head[:7], strip_controls(own[0], ""), head[:7], _shell_quote(own[1]),
                                                  _shell_quote(own[0])))
    return ("HEAD moved from %s to %s outside autotune since the last logged result, so autotune "
            "will not guess what to commit or revert. Check `git log` and `git status`; `autotune "
            "doctor --fix` moves the snapshot onto the new HEAD and keeps the experiment pending, "
            "and `autotune log ... --force` records the result without touching git." % (snapshot_head[:7], (head or "nothing")[:7]))


def with_large(info, large, verb):
    """Adds to `log`'s git info the large files the experiment changed, which are not."""
    if large:
        info["large"] = large[:MAX_FILES_LISTED]
        note = "%s %s over the snapshot size limit (git.maxFileMB), so not %s" % (
            ", ".join(large[:10]), "is" if len(large) == 1 else "are", verb)
        info["message"] = "%s; %s" % (info["message"], note) if info.get("message") else note
    return info


MAX_FILES_LISTED = 1000  # file names one result lists; a keep of a generated tree says how many more


def listed_files(info, names):
    """Puts the changed files into git info, at most MAX_FILES_LISTED of them (the log
    line of one result stays small whatever an experiment touched)."""
    info["files"] = names[:MAX_FILES_LISTED]
    if len(names) > MAX_FILES_LISTED:
        info["files_more"] = len(names) - MAX_FILES_LISTED
    return info


def headline_text(logged_pct, verified, against=""):
    """"logged -61.3%; verified -10.2% ± 1.1%" (the verified part when there is one). The
    interval of the pairs' estimate need not be centred on it: then it is shown as it is,
    "verified -48.1% (95% CI -55.6% to -44.7%)", since a ± would misplace it."""
    text = ("logged %s" % fmt_pct(logged_pct) if logged_pct is not None else "logged -") + against
    if verified and verified.get("delta_pct") is not None:
        low, high = verified.get("low_pct"), verified.get("high_pct")
        text += "; verified %s" % fmt_pct(verified["delta_pct"])
        if _is_number(low) and _is_number(high):
            half = round((high - low) / 2.0, 1)
            if abs((high + low) / 2.0 - verified["delta_pct"]) <= 0.05:
                text += " ± %s%%" % _fmt(half)
            else:
                text += " (95%% CI %s to %s)" % (fmt_pct(low), fmt_pct(high))
    return text


def clock_state(loop, state, now):
    """A copy of the state in which a spent budget (the wall clock runs out between two
    results) reads as `completed` at `now`, as the next `log` would record it."""
    if state.config is None or not state.active or state.health == "completed":
        return state
    reason = spent_budget(loop, state, now)
    if not reason:
        return state
    state = state.copy()
    state.health, state.active, state.reason = "completed", False, reason
    return state


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


def best_so_far(results, direction):
    best, series = None, []
    for row in results:
        metric = row.get("metric") if _is_number(row.get("metric")) else None
        if row.get("status") == "keep" and metric is not None and row.get("improved", True) is not False:
            if best is None or is_better(metric, best, direction):
                best = metric
        series.append(best)
    return series


# ==================================================================== SHELL ====

# -------------------------------------------------------------------- files ----

def _same_path(a, b):
    return os.path.realpath(a) == os.path.realpath(b)


def _is_inside(path, root):
    path, root = os.path.realpath(path), os.path.realpath(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def write_atomic(path, data, durable=False):
    """Write-then-rename, so a reader sees the old file or the new one, never half.
    `durable` also syncs the file and its directory: for what must survive a power cut
    or a kill -9 (the journal of a swap, before the first file of the best's code moves)."""
    tmp = "%s.%d.tmp" % (path, os.getpid())
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if durable:
        try:
            fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass


def read_json(path, default=None):
    """The JSON value a file holds, or `default` when the file is missing or unreadable,
    is not UTF-8, is not JSON or nests too deep: the one reader of autotune's own JSON
    files (caches, journals), with one set of exceptions."""
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read().decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return default


def _process_start(pid):
    """The start time of a process (clock ticks since boot, /proc), so a pid that was
    reused is not taken for the process that wrote a journal."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            stat = handle.read()
        return stat[stat.rindex(")") + 2:].split()[19]
    except (OSError, ValueError, IndexError):
        return None


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


# ---------------------------------------------------------------------- git ----

class GitError(AutotuneError):
    """A git command that failed; the message carries git's own words (a hook's too)."""

    def __init__(self, args, returncode, stderr):
        self.returncode, self.stderr = returncode, stderr
        lines = [line.strip().translate(_CONTROL_TABLE) for line in stderr.decode("utf-8", "replace").splitlines()]
        lines = [line for line in lines if line and not line.startswith("hint:")]
        if lines:
            detail = _one_line(" / ".join(lines[-8:]), 900)
        elif returncode is not None and returncode < 0:
            detail = "killed by signal %d" % -returncode
        else:
            detail = "exit %s" % returncode
        AutotuneError.__init__(self, "git_error", "git %s failed: %s" % (args[0], detail))


DISK_ERRNOS = ("ENOSPC", "EFBIG", "EDQUOT")


def disk_full(exc):
    """True when a write failed for want of room: a full disk, a quota, or a file-size
    limit (`ulimit -f`; git dies of SIGXFSZ there, Python gets EFBIG)."""
    import errno
    if isinstance(exc, GitError):
        import signal
        return (exc.returncode == -getattr(signal, "SIGXFSZ", 25) or any(
            text in exc.stderr for text in (b"No space left", b"File too large", b"quota exceeded")))
    return isinstance(exc, OSError) and exc.errno in {getattr(errno, n, -1) for n in DISK_ERRNOS}


def remedy(exc):
    return "Free space (or raise the file-size limit)" if disk_full(exc) else "Fix that"


def why_no_room(exc):
    if isinstance(exc, GitError):
        return "git could not write: %s" % exc.message
    return exc.strerror or str(exc)


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

    def index_path(self):
        return os.path.join(self.git_dir, "index")


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


def exclude_pattern(rel):
    """The info/exclude line that matches exactly the file at repository path `rel`
    (bytes) and nothing else, or None when no line can (a newline, or a carriage return
    at the end, which git strips). Anchored with a leading /, so a leading ! or # is
    just a character; every glob character, backslash and space is escaped."""
    if b"\n" in rel or rel.endswith(b"\r") or not rel:
        return None
    return b"/" + b"".join(b"\\" + bytes((c,)) if c in b"*?[]!#\\ \t" else bytes((c,)) for c in rel)


def _outputs_file(repo):
    return os.path.join(repo.common_dir, "autotune", "outputs")


def exclude_locally(repo, *paths, **kwargs):
    """Keeps files out of `git status`, experiments and commits with lines in
    .git/info/exclude (a personal list git reads like .gitignore; never the user's
    .gitignore), unless git already tracks or ignores them. `globs` are extra patterns
    (relative to the repository, already escaped) added as they are. A name no exclude
    line can match exactly is listed in <git dir>/autotune/outputs instead, which keeps
    it out of snapshots. Returns the number of lines added."""
    globs = kwargs.get("globs", ())
    if repo is None:
        return 0
    rels = [os.fsencode(repo.relpath(p)) for p in paths if _is_inside(p, repo.root)]
    rels = [r for r in rels if r]
    wanted = []
    if rels:
        tracked = set(repo.run(["ls-files", "-z", "--full-name", "--"] + [
            ":(top,literal)" + os.fsdecode(r) for r in rels], check=False).stdout.split(b"\0"))
        ignored = set(repo.run(["check-ignore", "-z", "--stdin"], input=b"".join(
            r + b"\0" for r in rels), check=False).stdout.split(b"\0"))
        unmatched = []
        for rel in rels:
            if rel in tracked or rel in ignored:
                continue  # tracked: the user's decision; ignored: nothing to do
            line = exclude_pattern(rel)
            if line is None:
                unmatched.append(rel)
            else:
                wanted.append(line)
        if unmatched:
            _add_lines(_outputs_file(repo), unmatched, b"\0")
    wanted += [os.fsencode(g) for g in globs]
    return _add_lines(os.path.join(repo.common_dir, "info", "exclude"), wanted, b"\n") if wanted else 0


def _add_lines(path, lines, sep):
    """Appends the lines a file does not hold yet (idempotent: init runs again and again)."""
    try:
        with open(path, "rb") as handle:
            existing = set(handle.read().split(sep))
    except OSError:
        existing = set()
    new = []
    for line in lines:
        if line not in existing and line not in new:
            new.append(line)
    if new:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "ab") as handle:
            if sep == b"\n":
                handle.write(b"\n# autotune session files (never committed, never reverted)\n"
                             if not any(l.startswith(b"# autotune") for l in existing) else b"")
            handle.write(b"".join(line + sep for line in new))
    return len(new)


def ensure_excluded(loop):
    """exclude_session_files for a session started by an older version: one file read
    when the exclude file already has autotune's lines."""
    try:
        with open(os.path.join(loop.repo.common_dir, "info", "exclude"), "rb") as handle:
            if b"# autotune session files" in handle.read():
                return
    except OSError:
        pass
    exclude_session_files(loop)


def exclude_session_files(loop):
    """Keeps what autotune writes in the working directory out of `git status`: the log,
    the state, the living document and idea backlog, their temporary files, and a copy
    of autotune.py with its bytecode."""
    repo = loop.repo
    names = [loop.path(n) for n in (LOG_FILE, STATE_FILE, NOTES_FILE, IDEAS_FILE)]
    copy = copied_autotune(loop)
    if copy:
        names.append(copy)
    prefix = exclude_pattern(os.fsencode(repo.relpath(loop.workdir)))
    prefix = prefix or b""
    globs = [prefix + b"/" + g for g in (b"autotune.jsonl.*", b".autotune.state.*",
                                        b"__pycache__/autotune.*.pyc")]
    return exclude_locally(repo, *names, globs=[os.fsdecode(g) for g in globs])


_AUTOTUNE_MARK = b'"""autotune: autonomous optimization loops'


def copied_autotune(loop):
    """The path of a copy of autotune.py in the working directory, whichever launcher
    runs: the file that runs when it is inside, else an autotune.py that starts like this
    one (read 200 bytes, no process)."""
    me = os.path.realpath(os.path.abspath(__file__))
    if _is_inside(me, loop.workdir):
        return me
    candidate = loop.path("autotune.py")
    try:
        with open(candidate, "rb") as handle:
            head = handle.read(200)
    except OSError:
        return None
    return candidate if _AUTOTUNE_MARK in head else None


def require_repo(loop):
    if loop.repo is None:
        fail("not_git_repo", "%s is not inside a git repository; autotune commits kept "
             "experiments and reverts the others, so it needs one (run `git init` and make "
             "a first commit)." % loop.workdir)
    return loop.repo


ZERO_MODE = b"000000"
GITLINK = b"160000"
SYMLINK = b"120000"


def ignored_by_base(loop, base, paths):
    """The paths that the .gitignore files of tree `base` ignore (with the repository's
    own excludes): a file the user had ignored stays the user's, whatever an experiment
    did to .gitignore."""
    import tempfile
    repo = loop.repo
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


def ignored_by_git(repo, workdir, glob):
    """Whether a file the size glob matches would be ignored by git (checked on a sample
    path made from the glob, so it works before the build ran)."""
    sample = glob.replace("**/", "").replace("*", "x").replace("?", "x").replace("[", "").replace("]", "")
    path = os.path.relpath(os.path.join(workdir, sample), repo.root)
    if path.startswith(".."):
        return True  # outside the repository: git never sees it
    return repo.run(["check-ignore", "-q", "--no-index", "--", path], check=False).returncode == 0


def without_users_ignored(loop, base, changes):
    """Drops the files an experiment seems to create only because it edited .gitignore."""
    if not any(c.path.rsplit(b"/", 1)[-1] == b".gitignore" for c in changes):
        return changes
    created = [c.path for c in changes if c.old_mode == ZERO_MODE]
    users = ignored_by_base(loop, base, created) if created else set()
    return [c for c in changes if c.path not in users]


def head_tree(repo, head):
    if head is None:
        return repo.run(["hash-object", "-t", "tree", "--stdin"], input=b"").stdout.decode().strip()
    return repo.run(["rev-parse", head + "^{tree}"]).stdout.decode().strip()


# ---------------------------------------------------------------- snapshots ----

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

    def inverse(self):
        """The same path changed the other way (restore_changes of it re-applies this)."""
        return Change(self.new_mode, self.old_mode, self.new_sha, self.old_sha, self.status, self.path)


def _excluded_paths(loop):
    """Pathspecs that keep the protected files, a copy of this script (whichever
    launcher runs), outputs no exclude line can name, and files over the size limit
    out of snapshots."""
    specs = [":(exclude,literal)" + name for name in PROTECTED_FILES]
    specs += [":(exclude,glob)" + pattern for pattern in PROTECTED_GLOBS]
    specs.append(":(exclude,glob)__pycache__/autotune.*.pyc")
    copy = copied_autotune(loop)
    if copy:
        rel = os.path.relpath(copy, os.path.realpath(loop.workdir))
        specs.append(":(exclude,literal)" + rel)
        specs.append(":(exclude,glob)" + os.path.join(os.path.dirname(rel), "__pycache__", "autotune.*.pyc"))
    try:
        with open(_outputs_file(loop.repo), "rb") as handle:
            specs += [":(top,exclude,literal)" + os.fsdecode(n) for n in handle.read().split(b"\0") if n]
    except OSError:
        pass
    specs += [":(top,exclude,literal)" + os.fsdecode(p) for p in (loop.oversized or {})]
    return specs


def oversized_files(loop):
    """{repository path: [size, mtime_ns]} of the files the user's git does not track
    that are over the size limit (git.maxFileMB): they are recorded, not copied into
    .git by every snapshot, and an experiment never commits or reverts them."""
    limit = loop.settings.max_file_bytes
    if not limit:
        return {}
    repo = loop.repo
    _, env = private_index(loop, "snapshot.index")
    listed = repo.run(["ls-files", "-z", "--full-name", "--others", "--modified", "--exclude-standard"],
                      env=env, cwd=loop.workdir, check=False).stdout.split(b"\0")
    big = {}
    for rel in listed:
        if rel and rel not in big:
            try:
                st = os.lstat(os.path.join(repo.root, os.fsdecode(rel)))
            except OSError:
                continue
            if st.st_size > limit and not os.path.islink(os.path.join(repo.root, os.fsdecode(rel))):
                big[rel] = [st.st_size, st.st_mtime_ns]
    if big:
        tracked = set(repo.run(["ls-files", "-z", "--full-name", "--"] + [
            ":(top,literal)" + os.fsdecode(r) for r in big], check=False).stdout.split(b"\0"))
        big = {rel: value for rel, value in big.items() if rel not in tracked}
    if big:
        repo.run(["update-index", "-z", "--force-remove", "--stdin"], env=env,
                 input=b"".join(rel + b"\0" for rel in big), check=False)
    return big


def large_record(loop):
    """The size limit's record for a log line's snapshot: {path: [size, mtime_ns]}."""
    return {os.fsdecode(k): v for k, v in sorted((loop.oversized or {}).items())}


def large_changes(before, after):
    """The large files that appeared, changed or vanished between two records."""
    before, after = before or {}, after or {}
    return sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))


def snapshot_tree(loop):
    """The tree of the working directory as it is now, byte for byte (untracked files
    included; ignored, protected and oversized files not), written through autotune's
    own index so the user's index is never touched. The index persists, so git re-hashes
    only what changed since the last snapshot. Entries follow the ignore rules in force
    (an ignored file never lingers from an earlier snapshot), and a file that a clean
    filter or end-of-line conversion would change is stored as its raw bytes. Sets
    loop.oversized to the files left out for their size."""
    repo = require_repo(loop)
    index, env = private_index(loop, "snapshot.index")
    if not os.path.exists(index):
        _seed_index(repo, index)
    loop.oversized = oversized_files(loop)
    for attempt in (1, 2):
        proc = repo.run(["add", "-A", "--ignore-errors", "--", "."] + _excluded_paths(loop),
                        env=env, cwd=loop.workdir, check=False)
        if proc.returncode != 0 and b"fatal:" in proc.stderr:
            if attempt == 2:
                raise GitError(["add"], proc.returncode, proc.stderr)
            _reset_index(repo, index)
            continue
        _keep_raw_bytes(loop, env, _drop_ignored(loop, env))
        tree = repo.run(["write-tree"], env=env, check=False)
        if tree.returncode == 0:
            return tree.stdout.decode("ascii").strip()
        if attempt == 2:
            raise GitError(["write-tree"], tree.returncode, tree.stderr)
        _reset_index(repo, index)


def _seed_index(repo, index):
    import shutil
    source = repo.index_path()
    if os.path.isfile(source):
        shutil.copy2(source, index)  # keep the mtime: git's racy-entry check depends on it


def _reset_index(repo, index):
    try:
        os.unlink(index)
    except OSError:
        pass
    if repo.head():
        repo.run(["read-tree", "HEAD"], env=git_env(GIT_INDEX_FILE=index))


def ignored_entries(loop, env, attributes=None):
    """Entries of the private index that the ignore rules in force ignore and that the
    user's own index does not track: left over from an experiment that un-ignored them.
    With a list `attributes`, the same git call also appends the .gitattributes files
    the index holds (listed as if ignored by an extra -x pattern, then told apart)."""
    repo = loop.repo
    extra = ["-x", ".gitattributes"] if attributes is not None else []
    listed = [p for p in repo.run(["ls-files", "-z", "--full-name", "--cached", "--ignored",
                                   "--exclude-standard"] + extra, env=env, cwd=repo.root,
                                  check=False).stdout.split(b"\0") if p]
    if attributes is not None:
        attributes.extend(p for p in listed if p.rsplit(b"/", 1)[-1] == b".gitattributes")
        listed = [p for p in listed if p.rsplit(b"/", 1)[-1] != b".gitattributes"]
    if not listed:
        return []
    tracked = set(repo.run(["ls-files", "-z", "--full-name"]).stdout.split(b"\0"))
    return [p for p in listed if p not in tracked]


def _drop_ignored(loop, env):
    """Removes stale ignored entries; returns the .gitattributes files the index holds."""
    attributes = []
    stale = ignored_entries(loop, env, attributes)
    if stale:
        loop.repo.run(["update-index", "-z", "--force-remove", "--stdin"], env=env,
                         input=b"".join(p + b"\0" for p in stale))
    return attributes


def _config_may_convert(repo):
    """False when no config file can set core.autocrlf or core.attributesFile (read as
    text, so the everyday case costs no process); True means ask git."""
    if os.environ.get("GIT_CONFIG_PARAMETERS") or os.environ.get("GIT_CONFIG_COUNT"):
        return True
    home = os.path.expanduser("~")
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    for path in (os.path.join(repo.common_dir, "config"), os.path.join(repo.git_dir, "config.worktree"),
                 os.path.join(home, ".gitconfig"), os.path.join(xdg, "git", "config"),
                 os.environ.get("GIT_CONFIG_GLOBAL") or "", "/etc/gitconfig"):
        try:
            with open(path, "rb") as handle:
                text = handle.read().lower()
        except (OSError, ValueError):
            continue
        if b"autocrlf" in text or b"attributesfile" in text or b"include" in text:
            return True
    return False


def _conversion_config(repo):
    """(autocrlf on, any attributes file outside the tree), asking git only when a
    config file mentions them."""
    autocrlf, attributes = False, False
    home = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    if not _config_may_convert(repo):
        return False, (os.path.isfile(os.path.join(repo.common_dir, "info", "attributes"))
                       or os.path.isfile(os.path.join(home, "git", "attributes")))
    proc = repo.run(["config", "-z", "--get-regexp", r"^core\.(autocrlf|attributesfile)$"], check=False)
    for item in proc.stdout.split(b"\0"):
        key, _, value = item.partition(b"\n")
        if key == b"core.autocrlf":
            autocrlf = value.strip().lower() in (b"true", b"input", b"yes", b"on", b"1")
        elif key == b"core.attributesfile" and value.strip():
            attributes = True
    attributes = attributes or os.path.isfile(os.path.join(repo.common_dir, "info", "attributes")) \
        or os.path.isfile(os.path.join(home, "git", "attributes"))
    return autocrlf, attributes


_CONVERSION_ATTRS = (b"filter", b"ident", b"working-tree-encoding", b"text", b"eol", b"crlf")


def converted_paths(repo, paths, autocrlf=None):
    """The paths whose bytes git may change between the working tree and a blob (a
    clean/smudge filter, ident, an encoding, or end-of-line conversion)."""
    if not paths:
        return set()
    if autocrlf is None:
        autocrlf = _conversion_config(repo)[0]
    proc = repo.run(["check-attr", "-z", "--stdin"] + [a.decode() for a in _CONVERSION_ATTRS],
                    input=b"".join(p + b"\0" for p in paths))
    fields = proc.stdout.split(b"\0")
    found, text_unset = set(), set()
    for i in range(0, len(fields) - 2, 3):
        path, attr, value = fields[i], fields[i + 1], fields[i + 2]
        if attr == b"text" and value == b"unset":
            text_unset.add(path)
        elif value not in (b"unspecified", b"unset"):
            found.add(path)
    if autocrlf:
        found |= set(paths) - text_unset
    return found


def _blob_id(data, length):
    import hashlib
    digest = hashlib.sha256() if length == 64 else hashlib.sha1()
    digest.update(b"blob %d\0" % len(data))
    digest.update(data)
    return digest.hexdigest().encode("ascii")


def _raw_record(loop):
    """autotune's record of converted files: "known" {path: [size, mtime_ns, raw sha]}
    (so an unchanged file is not re-read) and "cleaned" [[path, sha]] (files over the
    size limit whose snapshot holds git's cleaned blob: a restore smudges those)."""
    data = read_json(loop.cache("raw.json"))
    if isinstance(data, dict):
        return {"known": data.get("known") or {}, "cleaned": data.get("cleaned") or []}
    return {"known": {}, "cleaned": []}


def _keep_raw_bytes(loop, env, attribute_files):
    """Replaces, in the private index, every blob that git's clean filter or end-of-line
    conversion made different from the file on disk by the file's raw bytes, so a
    restore writes back exactly what was there (a notebook's outputs, CRLF endings). A
    file over the size limit (a Git LFS object) keeps its cleaned blob and is recorded,
    so a restore smudges it as git would; a file whose size and mtime are as recorded
    is not read again."""
    repo = loop.repo
    autocrlf, attributes = _conversion_config(repo)
    loop.converts = bool(autocrlf or attributes or attribute_files)
    if not loop.converts:
        return  # nothing can convert: the everyday case, no extra process
    entries = {}
    for line in repo.run(["ls-files", "-z", "-s", "--full-name"], env=env, cwd=loop.workdir
                         ).stdout.split(b"\0"):
        if line:
            meta, _, path = line.partition(b"\t")
            mode, sha, _stage = meta.split(b" ")
            if mode in (b"100644", b"100755"):
                entries[path] = (mode, sha)
    record = _raw_record(loop)
    known, cleaned = record["known"], {tuple(pair) for pair in record["cleaned"]}
    limit, now = loop.settings.max_file_bytes, time.time_ns() if hasattr(time, "time_ns") else int(time.time() * 1e9)
    fix, hash_paths = {}, []
    for path in converted_paths(repo, list(entries), autocrlf):
        name = os.fsdecode(path)
        try:
            st = os.lstat(os.path.join(repo.root, name))
        except OSError:
            continue
        mode, sha = entries[path]
        if limit and st.st_size > limit:
            cleaned.add((name, sha.decode()))
            continue
        mark = known.get(name)
        if mark and mark[:2] == [st.st_size, st.st_mtime_ns]:
            if mark[2].encode() != sha:
                fix[path] = mark[2].encode()
            continue
        try:
            with open(os.path.join(repo.root, name), "rb") as handle:
                data = handle.read()
        except OSError:
            continue
        raw = _blob_id(data, len(sha))
        if raw != sha:
            hash_paths.append(path)
        if st.st_mtime_ns < now - 2 * 10 ** 9:  # an older mtime cannot hide a same-tick edit
            known[name] = [st.st_size, st.st_mtime_ns, raw.decode()]
    if hash_paths:
        shas = repo.run(["hash-object", "-w", "--no-filters", "--stdin-paths"], cwd=repo.root,
                        input=b"".join(p + b"\n" for p in hash_paths)).stdout.split()
        fix.update(zip(hash_paths, shas))
    if fix:
        repo.run(["update-index", "-z", "--index-info"], env=env, input=_index_records(
            (entries[p][0], sha, p) for p, sha in fix.items()))
    data = {"known": {k: v for k, v in known.items() if os.fsencode(k) in entries},
            "cleaned": sorted(list(pair) for pair in cleaned)}
    if data != record:
        try:
            write_atomic(loop.cache("raw.json"), json.dumps(data).encode("utf-8"))
        except OSError:
            pass  # only a cache: the next snapshot reads the files again


def diff_trees(loop, base, current, tracked_only=False):
    """The paths inside the working directory that differ between two trees
    (with tracked_only, not the ones `current` adds)."""
    if base == current:
        return []
    import fnmatch
    proc = loop.repo.run(["diff-tree", "-r", "-z", "--no-renames", base, current])
    fields = proc.stdout.split(b"\0")
    prefix = loop.repo.relpath(loop.workdir).encode("utf-8", "surrogateescape")
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
        if tracked_only and old_mode == ZERO_MODE:
            continue
        changes.append(Change(old_mode, new_mode, old_sha, new_sha, status.decode("ascii"), path))
    return changes


def experiment_changes(loop, base, current, tracked_only=False, every=None):
    """What the experiment changed between two snapshots: diff_trees (or `every`, its
    answer) without the files that are the user's whatever a snapshot holds: files
    ignored by the rules before or after the experiment (and not tracked), and files
    over the size limit."""
    if every is None:
        every = diff_trees(loop, base, current, tracked_only)
    changes = without_users_ignored(loop, base, every)
    large = set(loop.oversized or ())
    changes = [c for c in changes if c.path not in large]
    gone = [c.path for c in changes if c.new_mode == ZERO_MODE]
    if gone:
        repo = loop.repo
        ignored = set(repo.run(["check-ignore", "-z", "--stdin"], input=b"".join(
            p + b"\0" for p in gone), check=False).stdout.split(b"\0"))
        changes = [c for c in changes if c.path not in ignored]
    return changes


def line_counts(loop, base, current, changes=None):
    """(lines added, lines removed) by the experiment between two snapshot trees: git's
    numstat, exact and one process, over the paths diff_trees calls the experiment's
    (protected files and paths outside the working directory are not); a binary file
    counts as neither."""
    if changes is None:
        changes = diff_trees(loop, base, current)
    paths = {c.path for c in changes}
    if not paths:
        return 0, 0
    proc = loop.repo.run(["diff-tree", "-r", "-z", "--numstat", "--no-renames", base, current])
    added = removed = 0
    for record in proc.stdout.split(b"\0"):
        parts = record.split(b"\t", 2)
        if len(parts) == 3 and parts[2] in paths and parts[0].isdigit() and parts[1].isdigit():
            added += int(parts[0])
            removed += int(parts[1])
    return added, removed


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


def private_index(loop, name):
    """The environment for git to use one of autotune's own index files (a lock file
    left by a killed process is removed: callers hold the log lock)."""
    index = loop.cache(name, create=True)
    try:
        os.unlink(index + ".lock")
    except OSError:
        pass
    return index, git_env(GIT_INDEX_FILE=index)


def _index_records(entries):
    """`git update-index -z --index-info` input for (mode, sha, path) entries; a 000000
    mode removes the path."""
    return b"".join((b"0 " + b"0" * len(sha) if mode == ZERO_MODE else mode + b" " + sha)
                    + b"\t" + path + b"\0" for mode, sha, path in entries)


def _ls_entries(repo, args, env=None):
    """{path: (mode, sha)} from `git ls-files -s -z` (stage 0) or `git ls-tree -r -z`."""
    out = {}
    for line in repo.run(args, env=env).stdout.split(b"\0"):
        if not line:
            continue
        meta, _, path = line.partition(b"\t")
        parts = meta.split(b" ")
        if args[0] == "ls-tree":
            out[path] = (parts[0], parts[2])
        elif parts[2] == b"0":
            out[path] = (parts[0], parts[1])
        else:
            out[path] = (b"conflict", b"")
    return out


def _cat_blobs(repo, shas):
    """{sha: bytes} for blobs, from one `git cat-file --batch`."""
    wanted = sorted(set(shas))
    if not wanted:
        return {}
    data = repo.run(["cat-file", "--batch"], input=b"".join(s + b"\n" for s in wanted)).stdout
    out, pos = {}, 0
    for sha in wanted:
        end = data.index(b"\n", pos)
        header = data[pos:end].split(b" ")
        size = int(header[2])
        out[sha] = data[end + 1:end + 1 + size]
        pos = end + 1 + size + 1
    return out


def _clean_blob(repo, sha, path):
    """The blob git would store for raw bytes `sha` at `path` (its clean filter applied)."""
    data = repo.run(["cat-file", "blob", sha.decode()]).stdout
    return repo.run(["hash-object", "-w", "--stdin", "--path=" + os.fsdecode(path)],
                    input=data).stdout.strip()


def _hunks(a, b):
    """The differing regions between line lists a and b: (a1, a2, b1, b2) tuples."""
    import difflib
    return [(i1, i2, j1, j2) for tag, i1, i2, j1, j2 in
            difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes() if tag != "equal"]


def _overlaps(one, other):
    """Whether two base-line ranges touch the same lines: ranges overlap; an insertion
    conflicts with an insertion at the same place or with a range around it (an edit
    right next to another is not a conflict)."""
    a1, a2 = one
    c1, c2 = other
    if a1 == a2 and c1 == c2:
        return a1 == c1
    if a1 == a2:
        return c1 < a1 < c2
    if c1 == c2:
        return a1 < c1 < a2
    return a1 < c2 and c1 < a2


def apply_experiment(head, base, ours):
    """HEAD's text with the experiment's hunks (base -> ours) applied, where base is
    HEAD plus the user's uncommitted hunks: the user's hunks are left out, the
    experiment's kept. Pure, on bytes; None when a hunk of each touches the same lines
    (or the text is binary)."""
    if b"\0" in head or b"\0" in base or b"\0" in ours:
        return None
    h, b, o = head.splitlines(True), base.splitlines(True), ours.splitlines(True)
    users = [(j1, j2, h[i1:i2]) for i1, i2, j1, j2 in _hunks(h, b)]   # in base: j1..j2 <- HEAD's lines
    experiment = [(i1, i2, o[j1:j2]) for i1, i2, j1, j2 in _hunks(b, o)]
    for e1, e2, _ in experiment:
        if any(_overlaps((e1, e2), (u1, u2)) for u1, u2, _ in users):
            return None
    edits = sorted(users + experiment, key=lambda edit: (edit[0], edit[1]))
    out, pos = [], 0
    for start, stop, lines in edits:
        out.extend(b[pos:start])
        out.extend(lines)
        pos = stop
    out.extend(b[pos:])
    return b"".join(out)


def _merge_blobs(repo, at_head, base, ours):
    """apply_experiment on three blobs; the written result blob, or None."""
    blobs = _cat_blobs(repo, [at_head, base, ours])
    merged = apply_experiment(blobs[at_head], blobs[base], blobs[ours])
    if merged is None:
        return None
    return repo.run(["hash-object", "-w", "--no-filters", "--stdin"], input=merged).stdout.strip()


def session_head_entries(loop, head, paths):
    """{path: (mode, sha)} of HEAD for these repository paths (one ls-tree)."""
    if not head or not paths:
        return {}
    return _ls_entries(loop.repo, ["ls-tree", "-r", "-z", "--full-tree", head, "--"] + [
        ":(literal)" + os.fsdecode(p) for p in paths])


# ------------------------------------------------------------------ storage ----

def load_settings(path, lenient=False):
    """Reads autotune.config.json; a missing file means defaults. A broken one is an
    error, or with `lenient` (the commands that only show the loop) the defaults for what
    is broken, with the problem in `settings.errors`."""
    try:
        with open(path, "rb") as handle:
            text = handle.read()
    except FileNotFoundError:
        return Settings(path=path)
    except OSError as exc:
        return _config_failure(path, "%s: cannot be read (%s)." % (path, exc.strerror or exc), lenient)
    try:
        data = json.loads(text.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        return _config_failure(path, "%s: is not UTF-8 text." % path, lenient)
    except ValueError as exc:
        return _config_failure(path, "%s: invalid JSON (%s)." % (path, exc), lenient)
    except RecursionError:
        return _config_failure(path, "%s: the JSON is nested too deeply." % path, lenient)
    if not isinstance(data, dict):
        return _config_failure(path, "%s: must hold a JSON object, not %s." % (path, type(data).__name__),
                               lenient)
    settings = read_config(path, data)
    if settings.errors and not lenient:
        more = len(settings.errors) - 1
        fail("bad_config", settings.errors[0] + (" (and %d more problem%s: `autotune doctor` lists them)" % (
            more, "" if more == 1 else "s") if more else ""))
    return settings


def _config_failure(path, message, lenient):
    if not lenient:
        fail("bad_config", message)
    return Settings(path=path, errors=[message])


def utc_now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Loop(object):
    """Where a loop lives: its working directory, repository, settings and files."""

    __slots__ = ("workdir", "repo", "settings", "log_path", "state_path", "_cache_dir", "config_error",
                 "config_errors", "oversized", "converts")

    def __init__(self, workdir, repo, settings, config_errors=()):
        self.workdir = workdir
        self.repo = repo
        self.settings = settings
        self.config_errors = list(config_errors)  # set only by find_loop(lenient=True)
        self.config_error = " ".join(config_errors) or None
        self.log_path = os.path.join(workdir, LOG_FILE)
        self.state_path = os.path.join(workdir, STATE_FILE)
        self._cache_dir = None
        self.oversized = {}  # set by snapshot_tree: files left out of it for their size
        self.converts = None  # set by snapshot_tree: False when git can convert no file's bytes

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


def find_loop(cwd=None, lenient=False):
    """Resolves the loop's working directory; never creates anything.

    `workingDir` in ./autotune.config.json wins; else the nearest directory from here
    up to the git root that holds autotune.jsonl; else the current directory. A broken
    config is an error, except with `lenient` (the commands that stop, clear or only show
    the loop must work with a typo in it): then the defaults apply to what is broken and
    `config_error` says what is wrong.
    """
    cwd = os.path.abspath(cwd or os.getcwd())
    errors = []

    def settings_of(path):
        settings = load_settings(path, lenient)
        errors.extend(settings.errors)
        return settings

    local_config = os.path.join(cwd, CONFIG_FILE)
    local = settings_of(local_config) if os.path.isfile(local_config) else None
    workdir = os.path.normpath(os.path.join(cwd, local.working_dir)) if local and local.working_dir else None
    if workdir is not None and not os.path.isdir(workdir):
        message = "%s: workingDir %s is not a directory." % (local_config, json.dumps(local.working_dir))
        if not lenient:
            fail("bad_config", message)
        errors.append(message)
        workdir = local.working_dir = None
    if workdir is not None:
        return Loop(workdir, find_repo(workdir), local, errors)
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
    return Loop(workdir, repo, settings, errors)


def require_loop(loop):
    if not loop.exists():
        fail("no_session", "No autotune session in %s (no %s there or in a parent up to the "
             "git root); start one with `autotune init --name NAME --metric METRIC "
             "--direction lower|higher`." % (loop.workdir, LOG_FILE))
    return loop


def dumps_line(entry):
    """One log line: compact JSON, no NaN/Infinity, non-ASCII kept as written."""
    return (json.dumps(entry, ensure_ascii=False, allow_nan=False, separators=(", ", ": "))
            + "\n").encode("utf-8")


class LogLines(object):
    """The log's complete lines from byte `offset`, as (offset, raw) pairs: the one
    forward reader of the log. A last line without its newline (a write cut short) is
    not a line: it ends the iteration and is kept in `torn`; `offset` ends after the
    last complete line."""

    def __init__(self, handle, offset=0):
        self.handle, self.offset, self.torn = handle, offset, b""

    def __iter__(self):
        self.handle.seek(self.offset)
        for raw in self.handle:
            if not raw.endswith(b"\n"):
                self.torn = raw
                return
            yield self.offset, raw
            self.offset += len(raw)


def lines_backward(handle, start=0):
    """The lines of a file after byte `start`, last first, read in 64 KiB blocks from
    the end (cost independent of the file's length): the one backward reader. The
    first one is what follows the last newline (b"" when the file ends with one)."""
    end = handle.seek(0, 2)
    position, carry = end, b""
    while position > start:
        step = min(1 << 16, position - start)
        position -= step
        handle.seek(position)
        lines = (handle.read(step) + carry).split(b"\n")
        carry = lines.pop(0)
        for raw in reversed(lines):
            yield raw
    yield carry


def parse_line(raw):
    """A log line as a dict, or None when it is not one (junk lines are skipped)."""
    try:
        entry = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return entry if isinstance(entry, dict) else None


class LogLock(object):
    """Exclusive lock on the log for read-modify-append; the log file is the lock."""

    def __init__(self, loop, create=False):
        self.loop = loop
        self.create = create
        self.fd = None

    def __enter__(self):
        if self.fd is not None:  # already locked by try_lock
            return self
        flags = os.O_RDWR | os.O_APPEND
        if self.create:
            flags |= os.O_CREAT
        try:
            self.fd = os.open(self.loop.log_path, flags, 0o644)
        except FileNotFoundError:
            require_loop(self.loop)
            raise
        except OSError as exc:
            fail("io_error", "Cannot open %s (%s)." % (self.loop.log_path, exc.strerror))
        try:
            import fcntl
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except ImportError:  # no advisory locks on this platform: single writer assumed
            pass
        return self

    def append(self, entries):
        """Appends whole lines; a write that fails (a full disk) is cut back off, so the
        log never keeps half a line from it."""
        data = b"".join(dumps_line(entry) for entry in entries)
        view = memoryview(data)
        start = os.lseek(self.fd, 0, os.SEEK_END)
        try:
            while view:
                written = os.write(self.fd, view)
                view = view[written:]
        except OSError:
            try:
                os.ftruncate(self.fd, start)
            except OSError:
                pass
            raise

    def __exit__(self, *exc):
        os.close(self.fd)  # closing releases the flock
        self.fd = None
        return False


def open_locked(path, flags):
    """Opens `path` (OSError propagates) and takes an exclusive flock on it without
    waiting: the one lock opener of the log's try_lock and of the benchmark lock.
    Returns (fd, taken): taken is True when the lock is ours, False when another process
    holds it (the fd stays open, so its holder can be read), None when the platform has
    no advisory locks. The caller closes the fd; closing releases the lock."""
    fd = os.open(path, flags, 0o644)
    try:
        import fcntl
    except ImportError:
        return fd, None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return fd, False
    return fd, True


def try_lock(loop):
    """A non-blocking LogLock, or None when another process holds it (or, without
    advisory locks, always: nobody can tell)."""
    try:
        fd, taken = open_locked(loop.log_path, os.O_RDWR | os.O_APPEND)
    except OSError:
        return None
    if not taken:
        os.close(fd)
        return None
    lock = LogLock(loop)
    lock.fd = fd
    return lock


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


def load_state(loop):
    """The cached fold, brought up to the end of the log (or rebuilt from it)."""
    try:
        size = os.path.getsize(loop.log_path)
    except OSError:
        require_loop(loop)
        raise
    cached, foreign = None, None
    try:
        with open(loop.state_path, "rb") as handle:
            data = json.loads(handle.read().decode("utf-8"), parse_constant=_reject_constant)
            written_at = os.fstat(handle.fileno()).st_mtime
        if isinstance(data, dict) and data.get("format") == STATE_FORMAT and _is_int(data.get("log_size")):
            import zlib
            checksum = data.pop("checksum", None)
            if checksum == "%08x" % zlib.crc32(_state_text(data).encode("utf-8")):
                cached = State.from_dict(data)
            else:  # ours, edited since by someone else (the old bash scripts' stop/repair)
                foreign = OldState.from_file(data, written_at, data.get("log_size"))
        elif isinstance(data, dict) and "format" not in data:
            foreign = OldState.from_file(data, written_at)  # written by the old bash scripts
    except (OSError, ValueError, UnicodeDecodeError, TypeError, RecursionError):
        pass
    if cached is not None:
        with open(loop.log_path, "rb") as handle:
            if cached.log_size <= size and _tail_matches(handle, cached):
                loaded = Loaded(cached)
                _fold_from(handle, loaded, cached.log_size)
                return loaded
    return fold_log(loop, foreign)


def fold_log(loop, foreign=None):
    """The state rebuilt from the whole log. A loop controlled by the old bash scripts
    (their `stop` and `repair` wrote only .autotune.state) keeps what that file said when
    no line of the log set the loop's activity after it; the file is remembered in the
    cache directory, so a later rebuild keeps honouring it."""
    loaded = Loaded(State())
    loaded.rebuilt = loaded.changed = True
    loaded.complete = True
    with open(loop.log_path, "rb") as handle:
        _fold_from(handle, loaded, 0)
    state = loaded.state
    old = foreign if foreign is not None else OldState.load(loop)
    if old is not None and old.applies_to(state):
        old.apply(state)
        if foreign is not None and loop.repo is not None:
            old.log_size = state.log_size  # every line so far was judged against it
            old.save(loop)
    if state.confidence is None and state.config is not None:
        state.confidence = confidence(sorted(loaded.points), state)
    return loaded


class OldState(object):
    """The controls of a .autotune.state written by someone else: the first
    implementation (no `format`), or its `stop`/`repair`/Stop hook editing ours."""

    __slots__ = ("fields", "written_at", "log_size")
    NAMES = ("active", "mode", "recovery", "health", "reason", "resume_count", "resume_at")

    def __init__(self, fields, written_at, log_size=None):
        self.fields, self.written_at, self.log_size = fields, written_at, log_size

    @classmethod
    def from_file(cls, data, written_at, log_size=None):
        return cls({k: data[k] for k in cls.NAMES if k in data}, written_at,
                   log_size if _is_int(log_size) else None)

    @classmethod
    def load(cls, loop):
        if loop.repo is None:
            return None
        data = read_json(loop.cache("old-state.json"))
        try:
            return cls(data["fields"], float(data["written_at"]), data["log_size"])
        except (ValueError, KeyError, TypeError, RecursionError):
            return None

    def save(self, loop):
        try:
            write_atomic(loop.cache("old-state.json", create=True), json.dumps(
                {"fields": self.fields, "written_at": self.written_at,
                 "log_size": self.log_size}).encode("utf-8"))
        except OSError:
            pass  # only a later rebuild would forget it

    def applies_to(self, state):
        """True when no line of the log set the loop's activity after the file was
        written: our own state saw the whole log, or every such line is older."""
        if state.config is None:
            return False
        if _is_int(self.log_size):  # lines from this offset on came after the file
            return state.set_offset is None or state.set_offset < self.log_size
        set_at = iso_to_epoch(state.set_at)
        return set_at is None or set_at < self.written_at

    def apply(self, state):
        old = self.fields
        was_active, fold_reason = state.active, state.reason
        if isinstance(old.get("active"), bool):
            state.active = old["active"]
        if old.get("mode") in MODES:
            state.mode = old["mode"]
        if "recovery" in old and (old["recovery"] is None or isinstance(old["recovery"], str)):
            state.recovery = old["recovery"]
        if old.get("health") in HEALTHS:
            state.health = old["health"]
        if isinstance(old.get("reason"), str):
            state.reason = old["reason"]
        if was_active and not state.active and state.health != "completed":
            if state.reason == fold_reason:  # the old `stop`: it changed only active and health
                state.health, state.stopped_by = "stopped", "person"
                state.reason = "with the first implementation's `autotune stop`"
            else:
                state.health = "paused"
        for name in ("resume_count", "resume_at"):
            if _is_int(old.get(name)):
                setattr(state, name, max(getattr(state, name), old[name]))


def _tail_matches(handle, cached):
    start = max(0, cached.log_size - 32)
    handle.seek(start)
    return handle.read(cached.log_size - start).hex() == cached.log_tail


def _fold_from(handle, loaded, offset):
    state = loaded.state
    lines = LogLines(handle, offset)
    for offset, raw in lines:
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
        loaded.changed = True
    offset = lines.offset
    if lines.torn:
        loaded.torn = lines.torn
    if offset != state.log_size or loaded.changed:
        state.log_size = offset
        start = max(0, offset - 32)
        handle.seek(start)
        state.log_tail = handle.read(offset - start).hex()


def _state_text(data):
    return json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False, sort_keys=True)


def save_state(loop, state):
    """Writes the cache with a checksum, so a hand-edited or damaged file is rebuilt
    instead of trusted. A cache that cannot be written is left stale: the log already
    holds the truth, and the next call catches up."""
    import zlib
    data = state.to_dict()
    data["checksum"] = "%08x" % zlib.crc32(_state_text(data).encode("utf-8"))
    try:
        write_atomic(loop.state_path, (_state_text(data) + "\n").encode("utf-8"))
    except OSError:
        return False
    return True


def append_entries(lock, loop, loaded, entries):
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
    save_state(loop, state)


def persist_if_stale(loop, loaded):
    """Read-only commands write back a rebuilt or caught-up state when nobody writes."""
    if not loaded.changed:
        return
    lock = try_lock(loop)
    if lock is None:
        return
    with lock:
        try:
            if os.path.getsize(loop.log_path) == loaded.state.log_size + len(loaded.torn):
                save_state(loop, loaded.state)  # only if nobody appended since our fold
        except OSError:
            pass


def torn_tail_error(loop, loaded):
    if loaded.torn:
        fail("torn_log", "%s ends with a truncated line (%d bytes, a write that was cut "
             "short); nothing was written. Run `autotune doctor --fix` to move it aside "
             "into a backup file." % (loop.log_path, len(loaded.torn)))


_VALUES_MAGIC = b"ATV2"  # v2: checks_failed values are not points


def segment_values(loop, loaded):
    """The current segment's metric points, sorted (cached in values.bin)."""
    from array import array
    import bisect
    state = loaded.state
    if loaded.complete:
        return array("d", sorted(loaded.points))
    expected = state.metric_points - len(loaded.points)
    try:
        with open(loop.cache("values.bin"), "rb") as handle:
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
    return array("d", sorted(scan_segment_points(loop, state)))


def scan_segment_points(loop, state):
    points = []
    with open(loop.log_path, "rb") as handle:
        scratch = State()
        for _, raw in LogLines(handle, state.config_offset or 0):
            entry = parse_line(raw)
            if entry is None:
                continue
            if entry.get("type") == "config":
                points = []
            point = fold_entry(scratch, entry)
            if point is not None:
                points.append(point)
    return points


def save_values(loop, state, values):
    header = (_VALUES_MAGIC + state.segment.to_bytes(4, "little")
              + len(values).to_bytes(8, "little"))
    write_atomic(loop.cache("values.bin", create=True), header + values.tobytes())


def measurement_entry(measurement):
    """The log line `run` appends: what it measured and of which tree, without the output
    tails (those stay in the run.json cache, which only displays)."""
    data = measurement.to_dict()
    for name in ("output", "chk_out", "warnings"):
        data.pop(name, None)
    if isinstance(data.get("holdout"), dict):
        data["holdout"] = {k: v for k, v in data["holdout"].items() if k != "output"}
    entry = {"type": "measurement"}
    entry.update(data)
    return entry


def pending_measurement(loop, state):
    """The measurement that the next `log` records: the last `measurement` line `run`
    appended to the log in this segment with no result after it, as (Measurement, ref)
    where ref is {"offset", "sha256"} of that line; (None, None) when there is none.

    It is read back from the log, never from a cache: the state only says where to start
    looking, and a result or config line after a measurement means it was used."""
    import hashlib
    offset = state.pending
    if not _is_int(offset) or offset < (state.config_offset or 0):
        return None, None
    found = None
    with open(loop.log_path, "rb") as handle:
        if offset:
            handle.seek(offset - 1)
            if handle.read(1) != b"\n":
                return None, None  # not the start of a line: a damaged or forged cache
        for position, raw in LogLines(handle, offset):
            entry = parse_line(raw)
            kind = entry.get("type") if entry is not None else None
            if kind == "measurement" and entry.get("segment") == state.segment:
                found = (position, raw, entry)
            elif kind in ("result", "config"):
                found = None
    if found is None:
        return None, None
    position, raw, entry = found
    return (Measurement.from_dict(entry),
            {"offset": position, "sha256": hashlib.sha256(raw).hexdigest()})


def load_measurement(loop):
    """run.json: the last run's full answer (output tails included), for display only;
    `log` never reads it (an agent can rewrite it)."""
    missing = object()
    data = read_json(loop.cache("run.json"), missing)
    try:
        return Measurement.from_dict(data) if data is not missing else None
    except (ValueError, TypeError, RecursionError):
        return None


def save_measurement(loop, measurement):
    write_atomic(loop.cache("run.json", create=True),
                 json.dumps(measurement.to_dict(), ensure_ascii=False, allow_nan=False).encode("utf-8"))


def drop_measurement(loop):
    try:
        os.unlink(loop.cache("run.json"))
    except OSError:
        pass


def config_notes(loop):
    """The config file's warnings (keys read differently than written) and, for the
    commands that read it leniently, its errors: one line each, shown wherever the
    loop is shown."""
    return list(loop.settings.warnings) + [
        "%s Its default applies here; the commands that run the loop refuse until it is fixed." % error
        for error in loop.config_errors]


def read_entries(loop, start=0):
    """Every parseable entry of the log from byte offset `start` (skipping junk)."""
    entries = []
    with open(loop.log_path, "rb") as handle:
        for _, raw in LogLines(handle, start):
            entry = parse_line(raw)
            if entry is not None:
                entries.append(entry)
    return entries


# ------------------------------------------------------------------- inputs ----

def file_hashes(loop):
    import hashlib
    hashes = {}
    for name in INTEGRITY_FILES:
        try:
            with open(loop.path(name), "rb") as handle:
                hashes[name] = hashlib.sha256(handle.read()).hexdigest()
        except OSError:
            pass
    return hashes


# What defines the commands a benchmark calls: protected by default (protectDefaults),
# since `npm pkg set scripts.test="... || true"` turns failing checks into a keep. Only
# the definitions: package.json's scripts (not its dependencies: changing one is a fair
# experiment), the Makefile, the test runner's settings, build scripts.
_CALLS = (
    ("npm", r"\b(?:npm|pnpm|yarn|bun)\s+(?:(?:-s|--silent|-q|--quiet)\s+)*(?:run(?:-script)?\s+)?"
            r"(?:(?:-s|--silent|-q|--quiet)\s+)*([A-Za-z0-9][\w:.-]*)"),
    ("make", r"(?:^|[\s;&|(])(?:g?make)(?:\s|$)"),
    ("pytest", r"\b(?:pytest|py\.test)\b"),
    ("tox", r"(?:^|[\s;&|(])tox(?:\s|$)"),
    ("cargo", r"\bcargo\s+\w"),
    ("jest", r"\b(?:jest|vitest)\b"),
    ("script", r"(?:^|[\s;&|(])(?:bash\s+|sh\s+|\./)([\w./-]+\.sh)\b"),
)
_NPM_NOT_SCRIPTS = ("install", "i", "ci", "add", "remove", "uninstall", "exec", "x", "dlx", "pkg",
                    "config", "init", "publish", "pack", "link", "audit", "outdated", "update",
                    "why", "ls", "list", "set-script", "version", "view", "cache", "rebuild")
_NPM_ALIASES = {"t": "test", "tst": "test"}


def called_tools(text):
    """{tool: set of arguments} for the commands a shell script calls (comments skipped)."""
    import re
    calls = {}
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    for tool, pattern in _CALLS:
        for match in re.finditer(pattern, code, re.M):
            value = match.group(1) if match.groups() else ""
            if tool == "npm":
                value = _NPM_ALIASES.get(value, value)
                if value in _NPM_NOT_SCRIPTS:
                    continue
            calls.setdefault(tool, set()).add(value)
    return calls


def _read_bytes(path, limit=None):
    try:
        with open(path, "rb") as handle:
            return handle.read() if limit is None else handle.read(limit)
    except OSError:
        return None


def ini_section(text, header):
    """The lines of one [header] section of an INI or TOML file (header included), or None."""
    lines, inside = [], False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            if inside:
                break
            inside = stripped.split("#", 1)[0].strip() == "[%s]" % header
        if inside:
            lines.append(line)
    return "\n".join(lines) if lines else None


def package_scripts(path):
    """The "scripts" object of a package.json, or {} (missing, not JSON, hostile nesting):
    the one reader of a project's package.json."""
    data = read_json(path, {})
    scripts = data.get("scripts") if isinstance(data, dict) else None
    return scripts if isinstance(scripts, dict) else {}


def indirect_inputs(loop, texts):
    """The keys of what defines the commands the given scripts call: "Makefile",
    "package.json#scripts.test", "pyproject.toml#[tool.pytest.ini_options]"..."""
    keys = []
    calls = {}
    for text in texts:
        for tool, values in called_tools(text).items():
            calls.setdefault(tool, set()).update(values)
    exists = lambda name: os.path.isfile(loop.path(name))
    if "npm" in calls:
        scripts = package_scripts(loop.path("package.json"))
        todo, seen = sorted(calls["npm"]), set()
        while todo:
            name = todo.pop()
            for entry in ("pre" + name, name, "post" + name):
                if entry in scripts and entry not in seen:
                    seen.add(entry)
                    body = scripts[entry] if isinstance(scripts[entry], str) else ""
                    nested = called_tools(body)
                    todo.extend(sorted(nested.pop("npm", ())))
                    for tool, values in nested.items():
                        calls.setdefault(tool, set()).update(values)
                    for word in body.split():
                        word = word.strip("'\";&|()")
                        if (word.endswith((".sh", ".bash")) or word.startswith(("scripts/", "./scripts/"))
                                or os.path.basename(word).startswith("build.")) and exists(word):
                            keys.append(os.path.normpath(word))
        keys += ["package.json#scripts.%s" % name for name in sorted(seen)]
    if "make" in calls:
        for name in ("GNUmakefile", "makefile", "Makefile"):
            if exists(name):
                keys.append(name)
                text = (_read_bytes(loop.path(name), 1 << 20) or b"").decode("utf-8", "replace")
                for line in text.splitlines():
                    if line.startswith(("include ", "-include ", "sinclude ")):
                        keys += [w for w in line.split()[1:] if exists(w)]
                break
    if "pytest" in calls or "tox" in calls:
        keys += [name for name in ("pytest.ini", "conftest.py", "tests/conftest.py", "test/conftest.py")
                 if exists(name)]
        keys += ["%s#[%s]" % pair for pair in (("pyproject.toml", "tool.pytest.ini_options"),
                                              ("setup.cfg", "tool:pytest"), ("tox.ini", "pytest"))]
    if "tox" in calls:
        keys += ["tox.ini" if exists("tox.ini") else "tox.ini#[tox]", "pyproject.toml#[tool.tox]",
                 "setup.cfg#[tox:tox]"]
    if "cargo" in calls:
        keys += [name for name in ("build.rs",) if exists(name)]
        keys += [".cargo/config.toml#[alias]", ".cargo/config#[alias]"]
    if "jest" in calls:
        keys += [name for name in os.listdir(loop.workdir)
                 if name.startswith(("jest.config.", "vitest.config.", "vite.config."))]
        keys.append("package.json#jest")
    keys += [os.path.normpath(path) for path in calls.get("script", ()) if exists(path)]
    return sorted(set(k for k in keys if k not in PROTECTED_FILES))


def _input_digest(loop, key):
    """sha256 of one protected input (a file, a package.json entry, an INI/TOML section),
    or None when it does not exist."""
    name, _, part = key.partition("#")
    return _input_digest_of(_read_bytes(loop.path(name)), part)


def _input_digest_of(data, part):
    import hashlib
    if data is None:
        return None
    if part.startswith("[") and part.endswith("]"):
        section = ini_section(data.decode("utf-8", "replace"), part[1:-1])
        if section is None:
            return None
        data = section.encode("utf-8")
    elif part:
        try:
            value = json.loads(data.decode("utf-8"))
            for step in part.split(".", 1) if part.startswith("scripts.") else [part]:
                value = value[step]
        except (ValueError, UnicodeDecodeError, KeyError, TypeError, RecursionError):
            return None
        data = json.dumps(value, sort_keys=True).encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def protected_glob_files(loop, patterns):
    """The files (relative paths) the `protect` globs match, autotune's own files excepted."""
    import fnmatch
    import glob
    found = set()
    root = glob.escape(loop.workdir)
    for pattern in patterns:
        for path in glob.glob(os.path.join(root, pattern), recursive=True):
            rel = os.path.relpath(path, loop.workdir)
            if (os.path.isfile(path) and not rel.startswith(".git" + os.sep) and rel != ".git"
                    and rel not in PROTECTED_FILES
                    and not any(fnmatch.fnmatch(rel, g) for g in PROTECTED_GLOBS)):
                found.add(rel)
    return sorted(found)


def input_hashes(loop):
    """{key: sha256} of the loop's protected inputs: the files the config's `protect` globs
    match and, unless protectDefaults is false, what defines the commands the benchmark,
    checks and holdout call. Hashed at the baseline like the benchmark."""
    keys = protected_glob_files(loop, loop.settings.protect)
    if loop.settings.protect_defaults:
        texts = [(_read_bytes(loop.path(name), 1 << 20) or b"").decode("utf-8", "replace")
                 for name in INTEGRITY_FILES]
        keys += indirect_inputs(loop, texts)
    hashes = {}
    for key in keys:
        digest = _input_digest(loop, key)
        if digest is not None:
            hashes[key] = digest
    return hashes


def check_inputs(loop, state, current, since="the baseline of segment %d", run_again=False):
    """A protected input changed since the baseline (or since `run`, for `log`): refuse."""
    recorded = state.inputs if not isinstance(since, dict) else since
    if not isinstance(recorded, dict) or current is None:
        return
    for key in sorted(set(recorded) | set(current)):
        if recorded.get(key) != current.get(key):
            what = ("was added" if key not in recorded else "was removed" if key not in current
                    else "changed")
            if run_again:
                fail("stale_run", "The protected input %s %s after `autotune run` measured; nothing "
                     "was logged. Put it back and run the benchmark again (`autotune run`)." % (
                         key, what))
            fail("protected_changed", "The protected input %s %s since the baseline of segment "
                 "%d; the verdict must not depend on it, so nothing was run. Put it back (e.g. "
                 "`git checkout -- %s`), or start a new segment with it: %s" % (
                     key, what, state.segment, _shell_quote(key.partition("#")[0]),
                     new_segment_command(state)))


def check_judge(loop, state):
    """The settings that decide a verdict are fixed by the baseline, like the benchmark."""
    if state.n_exp == 0 or state.config is None:
        return
    changes = judge_changes(state.judge, loop.settings.raw)
    if changes:
        fail("judge_changed", "The judge's settings changed since the baseline of segment %d "
             "(%s in %s); a segment is judged by one set of rules, so nothing was run. Put them "
             "back, or start a new segment with them: %s" % (
                 state.segment, changes_text(changes), CONFIG_FILE, new_segment_command(state)))


def check_integrity(loop, state, current=None):
    """A benchmark changed within a segment would move the goalposts: refuse. It may be
    edited freely until the baseline is logged; from then on it is fixed."""
    recorded = state.hashes
    if not isinstance(recorded, dict) or state.n_exp == 0:
        return
    current = current if current is not None else file_hashes(loop)
    for name in INTEGRITY_FILES:
        if recorded.get(name) != current.get(name):
            what = ("was added" if name not in recorded else "was removed" if name not in current
                    else "changed")
            fail("benchmark_changed", "%s %s since the baseline of segment %d; a segment measures "
                 "with one benchmark. Start a new segment with it: %s" % (
                     name, what, state.segment, new_segment_command(state)))


# --------------------------------------------------------- keep and restore ----

def commit_entries(loop, changes, head):
    """The (mode, sha, path) entries a keep commits: the experiment's change applied to
    HEAD's version of each file. Where the user had uncommitted edits in a file before
    the experiment (the snapshot differs from HEAD there), the experiment's hunks are
    merged onto HEAD's version (3-way: base = the snapshot, ours = the experiment's file,
    HEAD), so the user's edits stay uncommitted in the working tree. Refuses, naming the
    files, when the two cannot be separated. Blobs are cleaned as git would commit them."""
    repo = loop.repo
    head_entries = session_head_entries(loop, head, [c.path for c in changes])
    regular = (b"100644", b"100755")
    converted = converted_paths(repo, [c.path for c in changes if c.old_mode in regular
                                       or c.new_mode in regular]) if loop.converts is not False else set()

    def entry(mode, sha, path):
        if mode == ZERO_MODE:
            return None
        if mode in regular and path in converted:
            sha = _clean_blob(repo, sha, path)
        return (mode, sha)

    out, mixed = [], []
    for c in changes:
        base, ours, at_head = entry(c.old_mode, c.old_sha, c.path), entry(c.new_mode, c.new_sha, c.path), \
            head_entries.get(c.path)
        if base == at_head or ours == at_head:  # no uncommitted edit of the user's here, or nothing to do
            if ours != at_head:
                out.append((ours[0], ours[1], c.path) if ours else (ZERO_MODE, c.old_sha, c.path))
            continue
        if ours is None:  # the experiment deleted a file that held the user's edit
            out.append((ZERO_MODE, c.old_sha, c.path))
            continue
        if base is None or at_head is None or not (base[0] in regular and ours[0] in regular
                                                   and at_head[0] in regular):
            mixed.append((c.name, "not committed" if at_head is None else "not a plain file"))
            continue
        merged = _merge_blobs(repo, at_head[1], base[1], ours[1])
        if merged is None:
            mixed.append((c.name, "the same lines"))
            continue
        out.append((ours[0] if base[0] != ours[0] else at_head[0], merged, c.path))
    if mixed:
        fail("mixed_changes", "The experiment changed %s, which also hold%s your own uncommitted "
             "work (%s), and the two cannot be told apart, so nothing was committed or logged. "
             "Commit or stash your own change first (then `autotune doctor --fix`), or undo the "
             "experiment's edit there; or log it with --status discard." % (
                 ", ".join(name for name, _ in mixed), "s" if len(mixed) == 1 else "",
                 "; ".join("%s: %s" % pair for pair in mixed)))
    return out


INDEX_LOCK_WAIT = 2.0  # seconds a keep waits for another git process to release the index


def lock_user_index(repo, again):
    """Takes the user's index lock (index.lock) the way git does, retrying briefly while
    another git process (an editor's `git status`) holds it; refuses after that."""
    path = repo.index_path() + ".lock"
    deadline = time.time() + INDEX_LOCK_WAIT
    while True:
        try:
            return path, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            if time.time() >= deadline:
                fail("git_locked", "%s exists: another git process (an editor or a `git status`) "
                     "is using the index, or one was killed. Nothing was committed and nothing "
                     "was logged. When no git process is running (delete the file if one was "
                     "killed), run the same command again: %s" % (path, again))
            time.sleep(0.1)


def _new_user_index(loop, head_entries, entries):
    """The bytes of the user's index after a keep: each committed path staged as
    committed where the user had staged nothing else; a path the user staged differently
    gets the 3-way merge of their staged version with the keep (refused on a conflict)."""
    import shutil
    repo = loop.repo
    index = loop.cache("user.index", create=True)
    source = repo.index_path()
    if os.path.isfile(source):
        shutil.copy2(source, index)
    else:
        try:
            os.unlink(index)
        except OSError:
            pass
    env = git_env(GIT_INDEX_FILE=index)
    staged = _ls_entries(repo, ["ls-files", "-s", "-z", "--full-name", "--"] + [
        ":(top,literal)" + os.fsdecode(p) for _, _, p in entries], env=env) if os.path.isfile(index) else {}
    records, mixed = [], []
    for mode, sha, path in entries:
        old, mine = head_entries.get(path), staged.get(path)
        new = None if mode == ZERO_MODE else (mode, sha)
        if mine == old or mine == new:
            records.append((mode, sha, path))
        elif mine is not None and old is not None and new is not None and mine[0] == old[0] == new[0]:
            merged = _merge_blobs(repo, mine[1], old[1], new[1])
            if merged is None:
                mixed.append(path.decode("utf-8", "replace"))
            else:
                records.append((mode, merged, path))
        else:
            mixed.append(path.decode("utf-8", "replace"))
    if mixed:
        fail("mixed_changes", "You have staged changes to %s that overlap the experiment's, so "
             "nothing was committed or logged. Commit or unstage them (`git restore --staged`), "
             "then run the same command again." % ", ".join(mixed))
    repo.run(["update-index", "-z", "--index-info"], input=_index_records(records), env=env)
    with open(index, "rb") as handle:
        return handle.read()


def commit_changes(loop, changes, message, again="autotune log"):
    """Commits the experiment's change on top of HEAD through a private index: no
    pathspecs, hooks or --only semantics. What is committed is the experiment's hunks
    applied to HEAD's version of each file (commit_entries: the user's own uncommitted
    edits stay uncommitted). Commit, branch and the user's index change together or not
    at all: the index is locked first (waiting briefly on another git process), the new
    index is prepared in the lock file, then the ref moves and the lock file becomes the
    index. Returns the new HEAD, or None when HEAD already holds exactly this tree."""
    repo = loop.repo
    head = repo.head()
    entries = commit_entries(loop, changes, head)
    _, env = private_index(loop, "commit.index")
    repo.run(["read-tree"] + ([head] if head else ["--empty"]), env=env)
    records = _index_records(entries)
    repo.run(["update-index", "-z", "--index-info"], input=records, env=env)
    tree = repo.run(["write-tree"], env=env).stdout.decode().strip()
    if head and tree == head_tree(repo, head):
        return None
    head_entries = session_head_entries(loop, head, [p for _, _, p in entries])
    lock_path, fd = lock_user_index(repo, again)
    try:
        data = _new_user_index(loop, head_entries, entries)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.close(fd)
        fd = None
        commit = _identity_retry(repo, ["commit-tree", tree, "-F", "-"] + (["-p", head] if head else []),
                                 input=message.encode("utf-8", "surrogateescape")).stdout.decode().strip()
        repo.run(["update-ref", "-m", "autotune: keep", "HEAD", commit, head or "0" * len(commit)])
        os.replace(lock_path, repo.index_path())
        lock_path = None
    finally:
        if fd is not None:
            os.close(fd)
        if lock_path is not None:
            try:
                os.unlink(lock_path)
            except OSError:
                pass
    return commit


def anchor_snapshot(loop, tree):
    """Keeps the snapshot safe from `git gc`: for untracked files it is the only copy."""
    loop.repo.run(["update-ref", "--no-deref", "refs/autotune/snapshot/" +
                      os.path.basename(loop.cache_dir), tree])


def save_discarded(loop, base_tree, current_tree, label, description):
    """Keeps a discarded experiment reachable: a commit of the worktree before it and a
    child commit of the worktree with it, so `git show REF` is exactly the change."""
    repo = loop.repo
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
        proc = repo.run(["update-ref", "-m", "autotune discard", ref, after, zero], check=False)
        if proc.returncode == 0:
            return ref
        if b"exists" not in proc.stderr and b"reference already" not in proc.stderr \
                and b"cannot lock" not in proc.stderr:
            raise GitError(["update-ref"], proc.returncode, proc.stderr)  # a hook, a full disk
    raise GitError(["update-ref"], 1, b"cannot create a discard ref for " + label.encode())


# Working-tree writes that never follow a symlink: every leading component of a path is
# opened with O_NOFOLLOW relative to its parent's descriptor, so a symlink where a
# directory was (or the reverse) is never written or deleted through.

_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _parent_fd(root, rel, create=False):
    """A descriptor of the real directory holding `rel`'s last component, reached from
    `root` without following a symlink; None when a leading component is missing or is
    not a real directory (with `create`, missing directories are made and a symlink or
    file in the way of one is removed, never followed: a directory stood there before)."""
    import errno
    fd = os.open(root, _DIR_FLAGS)
    try:
        for part in rel.split(b"/")[:-1]:
            try:
                child = os.open(part, _DIR_FLAGS | _NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if not create or exc.errno not in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                    if create:
                        raise
                    os.close(fd)
                    return None
                if exc.errno != errno.ENOENT:
                    os.unlink(part, dir_fd=fd)  # a symlink or a file: removed itself, never its target
                os.mkdir(part, 0o777, dir_fd=fd)
                child = os.open(part, _DIR_FLAGS | _NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def _remove_tree_at(parent, name):
    """Removes directory `name` under descriptor `parent` and all it holds, descending
    by descriptors: a symlink inside is removed, never followed."""
    import stat
    fd = os.open(name, _DIR_FLAGS | _NOFOLLOW, dir_fd=parent)
    try:
        for entry in os.listdir(fd):
            if stat.S_ISDIR(os.stat(entry, dir_fd=fd, follow_symlinks=False).st_mode):
                _remove_tree_at(fd, entry)
            else:
                os.unlink(entry, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent)


def unlink_in_tree(root, rel):
    """Deletes file or symlink `rel` under `root`; nothing when a leading component is a
    symlink (the file is not there, whatever is behind the link) or it is a directory."""
    import stat
    fd = _parent_fd(root, rel)
    if fd is None:
        return False
    name = rel.rsplit(b"/", 1)[-1]
    try:
        if stat.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
            return False
        os.unlink(name, dir_fd=fd)
        return True
    except FileNotFoundError:
        return False
    finally:
        os.close(fd)


def write_in_tree(root, rel, mode, data):
    """Writes `data` at `rel` under `root` as git mode `mode` (a file, an executable, or a
    symlink whose target is `data`), byte for byte, without following a symlink: written
    to a temporary name beside it and renamed over (a symlink in the way is replaced, not
    written through; a directory in the way holds only what came after the snapshot and
    is removed)."""
    import stat
    fd = _parent_fd(root, rel, create=True)
    name = rel.rsplit(b"/", 1)[-1]
    tmp = b".%s.autotune-%d.tmp" % (name[:80], os.getpid())
    try:
        if mode == SYMLINK:
            os.symlink(data, tmp, dir_fd=fd)
        else:
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW,
                          0o777 if mode == b"100755" else 0o666, dir_fd=fd)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(out, view):]
            finally:
                os.close(out)
        try:
            if stat.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                _remove_tree_at(fd, name)
        except FileNotFoundError:
            pass
        os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
        tmp = None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp, dir_fd=fd)
            except OSError:
                pass
        os.close(fd)


def restore_sizes(loop, changes):
    """{sha: size} of the blobs restore_changes would write (for a room check first)."""
    shas = sorted({c.old_sha for c in changes if c.old_mode not in (ZERO_MODE, GITLINK)
                   and c.new_mode != GITLINK})
    if not shas:
        return {}
    out = loop.repo.run(["cat-file", "--batch-check"], input=b"".join(s + b"\n" for s in shas)).stdout
    return {line.split(b" ")[0]: int(line.split(b" ")[2]) for line in out.splitlines() if line.count(b" ") == 2}


def restore_changes(loop, changes):
    """Returns the changed paths to their snapshot state, byte for byte: files the
    change created are deleted first, then modified and deleted files get the snapshot's
    raw bytes back (git's smudge filters and end-of-line conversion are not applied: the
    snapshot holds what was on disk). No path is written or deleted through a symlink
    (see write_in_tree). Submodules are left alone (reported by the caller); directories
    are never removed (an empty one is invisible to git, and it may be the user's),
    except one standing where a snapshot file must go. Then the private index records
    the snapshot's entries for those paths. An OSError (a full disk) leaves the files
    already restored restored; calling again finishes the job."""
    repo = loop.repo
    files = [c for c in changes if GITLINK not in (c.old_mode, c.new_mode)]
    if not files:
        return
    for change in files:
        if change.old_mode == ZERO_MODE:
            unlink_in_tree(repo.root, change.path)
    restore = [c for c in files if c.old_mode != ZERO_MODE]
    cleaned = {(os.fsencode(p), s.encode()) for p, s in _raw_record(loop)["cleaned"]} \
        if loop.converts is not False else set()
    smudge = [c for c in restore if (c.path, c.old_sha) in cleaned]
    blobs = _cat_blobs(repo, [c.old_sha for c in restore if c not in smudge])
    for change in restore:
        if change not in smudge:
            write_in_tree(repo.root, change.path, change.old_mode, blobs[change.old_sha])
    _, env = private_index(loop, "snapshot.index")
    repo.run(["update-index", "-z", "--index-info"], env=env,
             input=_index_records((c.old_mode, c.old_sha, c.path) for c in files))
    if smudge:  # a large file whose snapshot is git's cleaned blob (an LFS pointer): as git would
        repo.run(["checkout-index", "-f", "-u", "-z", "--stdin"], env=env,
                 input=b"".join(c.path + b"\0" for c in smudge))


def rebased_snapshot(loop, tree, old_head, new_head):
    """The snapshot `tree` with the files that changed between two HEADs (a commit of the
    user's own made mid-experiment) taken from the new HEAD: the experiment in progress
    stays the difference between the working tree and the snapshot, and what the user
    committed is not mistaken for it."""
    repo = loop.repo
    _, env = private_index(loop, "rebase.index")
    repo.run(["read-tree", tree], env=env)
    if old_head and new_head:
        moved = repo.run(["diff-tree", "-r", "-z", "--no-renames", old_head, new_head]).stdout.split(b"\0")
        records = []
        for i in range(0, len(moved) - 1, 2):
            meta, path = moved[i], moved[i + 1]
            if meta.startswith(b":"):
                parts = meta[1:].split(b" ")
                records.append((parts[1], parts[3], path))
        if records:
            repo.run(["update-index", "-z", "--index-info"], env=env, input=_index_records(records))
    return repo.run(["write-tree"], env=env).stdout.decode().strip()


def without_paths(loop, tree, paths):
    """`tree` with `paths` removed (an index polluted by ignored files, repaired)."""
    repo = loop.repo
    _, env = private_index(loop, "rebase.index")
    repo.run(["read-tree", tree], env=env)
    repo.run(["update-index", "-z", "--force-remove", "--stdin"], env=env,
             input=b"".join(p + b"\0" for p in paths))
    return repo.run(["write-tree"], env=env).stdout.decode().strip()


def room_problem(paths_sizes, directory):
    """Why writing files of these final sizes would fail, or None: a file-size limit
    (`ulimit -f`) below one of them, or less free space on the disk than they need."""
    sizes = [size for _, size in paths_sizes]
    if not sizes:
        return None
    try:
        import resource
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except (ImportError, ValueError, OSError):
        limit = -1
    if limit not in (-1, getattr(sys.modules.get("resource"), "RLIM_INFINITY", -1)):
        over = [(name, size) for name, size in paths_sizes if size > limit]
        if over:
            return "%s needs %d bytes and the file-size limit (ulimit -f) is %d bytes" % (
                over[0][0], over[0][1], limit)
    try:
        st = os.statvfs(directory)
        free = st.f_bavail * st.f_frsize
    except (AttributeError, OSError):
        return None
    need = sum(sizes) + (1 << 20)
    if free < need:
        return "about %d bytes must be written and the disk has %d bytes free" % (need, free)
    return None


SWAP_JOURNAL = "swap.json"


def _flipped(changes):
    """The same changes seen from the other side: restore_changes of these writes the
    `new` side (the candidate's files)."""
    return [c.inverse() for c in changes]


class Swap(object):
    """Materializes the best's code for interleaved measurement by swapping exactly the
    experiment's files in place (the paths where the best's tree and the candidate's
    differ; untracked and ignored files, a venv, node_modules, build directories, stay as
    they are, so both sides see the same environment at the same paths).

    Before the first swap a journal (which tree is the candidate, which is the best) is
    written and fsynced in autotune's private directory, and the candidate's tree is
    anchored by a ref; `close` (called in `finally`, so on Ctrl-C, SIGTERM and SIGHUP too)
    puts the candidate back and removes both. After a kill -9 the journal stays:
    `autotune doctor --fix` (restore_swap) puts the candidate back, and every command
    that reads or changes the tree refuses until then."""

    def __init__(self, loop, best_tree, candidate_tree, purpose="run", tracked_only=False):
        self.loop, self.best_tree, self.candidate_tree = loop, best_tree, candidate_tree
        self.purpose = purpose
        self.changes = experiment_changes(loop, best_tree, candidate_tree, tracked_only=tracked_only)
        self.side, self.journal, self.stamp = "candidate", None, 0

    @property
    def paths(self):
        return [c.name for c in self.changes]

    def to(self, side):
        """Puts `side` ("best" or "candidate") in place; a no-op when it is already."""
        if side == self.side or not self.changes:
            self.side = side
            return
        import signal
        blocked = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        signal.pthread_sigmask(signal.SIG_BLOCK, blocked)   # a swap is never left half done by
        try:                                                # Ctrl-C: it is delivered after it
            if self.journal is None:
                self._open()
            with LogLock(self.loop):
                restore_changes(self.loop, self.changes if side == "best" else _flipped(self.changes))
            self.side = side
            self._stamp(side)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)

    def _open(self):
        loop = self.loop
        self.journal = loop.cache(SWAP_JOURNAL, create=True)
        anchor = "refs/autotune/swap/" + os.path.basename(loop.cache_dir)
        loop.repo.run(["update-ref", "--no-deref", anchor, self.candidate_tree])
        write_atomic(self.journal, json.dumps({
            "purpose": self.purpose, "pid": os.getpid(), "pid_start": _process_start(os.getpid()),
            "started": utc_now(),
            "candidate_tree": self.candidate_tree, "best_tree": self.best_tree,
            "paths": self.paths[:200]}).encode("utf-8"), durable=True)

    def _stamp(self, side):
        """Gives the swapped files a modification time in a later whole second than the
        last swap: caches keyed on (mtime in seconds, size), like Python's .pyc files,
        would otherwise run one side's stale code for the other."""
        now = int(time.time())
        self.stamp = max(now, self.stamp + 1)
        root = self.loop.repo.root
        for change in (self.changes if side == "best" else _flipped(self.changes)):
            if change.old_mode in (b"000000", b"120000", b"160000"):
                continue
            full = os.path.join(root, os.fsdecode(change.path))
            try:
                if not os.path.islink(full):
                    os.utime(full, (self.stamp, self.stamp))
            except OSError:
                pass

    def close(self):
        """Puts the candidate back (idempotent) and drops the journal."""
        if self.journal is None:
            return
        self.to("candidate")
        _drop_swap(self.loop)
        self.journal = None


def _drop_swap(loop):
    try:
        os.unlink(loop.cache(SWAP_JOURNAL))
    except OSError:
        pass
    loop.repo.run(["update-ref", "-d", "refs/autotune/swap/" + os.path.basename(loop.cache_dir)],
                     check=False)


def pending_swap(loop):
    """The journal of a swap that did not finish (a measurement killed while the best's
    files were in place), or None."""
    if loop.repo is None:
        return None
    missing = object()
    data = read_json(loop.cache(SWAP_JOURNAL), missing)
    if data is missing:
        return None
    return data if isinstance(data, dict) else {}


def refuse_pending_swap(loop):
    """Every command that reads or changes the experiment's files refuses while a live
    measurement has the kept version in their place, and first puts the experiment's
    files back after a killed one (as `doctor --fix` does). Returns a warning or None."""
    journal = pending_swap(loop)
    if journal is None:
        return None
    if swap_owner_alive(journal):
        fail("measuring", "`autotune %s` (pid %s) is measuring the kept code beside the candidate "
             "and has the kept version of the experiment's files in place; wait for it to finish." % (
                 journal.get("purpose", "run"), journal.get("pid")))
    with LogLock(loop):
        return "restored" if recover_swap(loop) else None


def recover_swap(loop):
    """After a measurement killed while the kept code was in place (its process is gone):
    puts the experiment's files back, exactly. Returns True when it restored something.
    Callers hold the LogLock."""
    journal = pending_swap(loop)
    if journal is None or swap_owner_alive(journal):
        return False
    restore_swap(loop, journal)
    return True


def swap_owner_alive(journal):
    pid = journal.get("pid")
    if not _is_int(pid) or pid <= 0 or not _pid_alive(pid):
        return False
    start = journal.get("pid_start")
    return start is None or _process_start(pid) in (None, start)


def restore_swap(loop, journal):
    """Puts the candidate's files back after an interrupted swap (idempotent: every path
    of the swap is written from the candidate's tree, whatever step was reached)."""
    best, candidate = journal.get("best_tree"), journal.get("candidate_tree")
    legacy = journal.get("tree")
    if candidate is None and isinstance(legacy, str) and _is_hash(legacy):
        # the marker an earlier autotune.py wrote ({"tree", "pid"}: the candidate's tree, no
        # best_tree); its tracked files come back
        restore_changes(loop, experiment_changes(loop, legacy, snapshot_tree(loop), tracked_only=True))
        _drop_swap(loop)
        return []
    if not (isinstance(best, str) and _is_hash(best) and isinstance(candidate, str) and _is_hash(candidate)):
        fail("bad_journal", "The swap journal %s is damaged; restore the experiment's files by hand "
             "(`git status`), then delete it." % loop.cache(SWAP_JOURNAL))
    changes = experiment_changes(loop, best, candidate)
    restore_changes(loop, _flipped(changes))
    _drop_swap(loop)
    return changes


class ExperimentFiles(object):
    """The experiment as `run` sees it: what differs between the last logged snapshot and
    the tree it measures. Asked only when needed (a failure's diagnosis, an equal
    result's line counts), and computed once."""

    def __init__(self, loop, base, tree):
        self.loop, self.base, self.tree = loop, base, tree
        self._changes = None

    def changes(self):
        """The Change list, or None when unknown (no git, no snapshot: an old session)."""
        if self._changes is None and self.base and self.tree and self.loop.repo:
            self._changes = experiment_changes(self.loop, self.base, self.tree)
        return self._changes

    def names(self):
        changes = self.changes()
        return None if changes is None else [c.name for c in changes]

    def lines(self):
        """(added, removed), or (None, None) when unknown."""
        changes = self.changes()
        if changes is None:
            return None, None
        return line_counts(self.loop, self.base, self.tree, changes)

    def roots(self):
        repo = self.loop.repo
        return (repo.root, os.path.realpath(repo.root)) if repo else ()


DUET_JOURNAL = "duet.json"


class DuetCopy(object):
    """Duet mode's second tree: the kept code's files (the best snapshot, checked out by
    git into a private temporary directory, outside the user's tree) beside the
    candidate's tree, so both sides can run AT THE SAME TIME. The environment the
    snapshot leaves out (ignored and untracked files: a venv, node_modules, build
    directories, data, the benchmark script itself) is reached through symlinks to the
    user's own paths, so both sides see the same environment (except __pycache__: each
    side compiles its own code). Limits: both sides then
    share it (a benchmark that writes into an ignored build directory races with its
    twin), absolute paths or `..` paths in the benchmark reach the user's tree, not the
    copy, and a tool that resolves symlinks sees the user's path.

    Nothing of the user's is written: the copy lives under the temporary directory; its
    path is journalled in autotune's private cache first, so `close` (in `finally`: also
    on Ctrl-C, SIGTERM, SIGHUP) and, after a kill -9, the next `run` (remove_stale_copy)
    delete it."""

    def __init__(self, loop, best_tree, changes):
        import tempfile
        self.loop, self.best_tree = loop, best_tree
        self.created = {c.path for c in changes if c.old_mode == b"000000"}
        self.journal = loop.cache(DUET_JOURNAL, create=True)
        self.root = tempfile.mkdtemp(prefix="autotune-duet-")
        write_atomic(self.journal, json.dumps({"pid": os.getpid(), "pid_start": _process_start(os.getpid()),
                                               "copy": self.root}).encode("utf-8"), durable=True)
        try:
            self._check_out()
            self._link_environment(loop.repo.root.encode(), self.root.encode(), b"")
        except BaseException:
            self.close()
            raise

    def _check_out(self):
        index = self.loop.cache("duet.index")
        env = git_env(GIT_INDEX_FILE=index)
        try:
            self.loop.repo.run(["read-tree", self.best_tree], env=env)
            self.loop.repo.run(["--work-tree=" + self.root, "checkout-index", "-a", "-f"], env=env)
        finally:
            try:
                os.unlink(index)
            except OSError:
                pass

    def _link_environment(self, user_dir, copy_dir, rel):
        """Symlinks what the user's directory has and the copy lacks (except .git and
        what the experiment created); descends into directories both have."""
        try:
            names = os.listdir(user_dir)
        except OSError:
            return
        for name in names:
            path = rel + name
            if (not rel and name == b".git") or name == b"__pycache__":
                continue   # each side compiles its own code: no shared bytecode cache
            target, here = os.path.join(user_dir, name), os.path.join(copy_dir, name)
            if os.path.lexists(here):
                if os.path.isdir(here) and not os.path.islink(here) and os.path.isdir(target):
                    self._link_environment(target, here, path + b"/")
                continue
            if path in self.created or any(c.startswith(path + b"/") for c in self.created):
                continue
            os.symlink(target, here)

    def where(self, path):
        """The copy's counterpart of a path inside the user's tree (else the path itself)."""
        root = self.loop.repo.root
        rel = os.path.relpath(path, root)
        return path if rel.startswith(os.pardir) else os.path.normpath(os.path.join(self.root, rel))

    def close(self):
        """Deletes the copy (symlinks are removed, never followed) and its journal."""
        import shutil
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
        try:
            os.unlink(self.journal)
        except OSError:
            pass


def remove_stale_copy(loop):
    """After a run killed with a duet copy in place (its process gone): deletes the copy.
    True when it removed one."""
    import shutil
    import tempfile
    path = loop.cache(DUET_JOURNAL)
    data = read_json(path, None)
    if not isinstance(data, dict) or swap_owner_alive(data):
        return False
    copy = data.get("copy")
    if isinstance(copy, str) and os.path.basename(copy).startswith("autotune-duet-") and \
            os.path.dirname(os.path.realpath(copy)) == os.path.realpath(tempfile.gettempdir()):
        shutil.rmtree(copy, ignore_errors=True)
    try:
        os.unlink(path)
    except OSError:
        pass
    return True


# ---------------------------------------------------------------- processes ----

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


def _kill_tagged(token, prefix=False):
    """SIGKILLs the processes whose environment carries this run's token: descendants
    that left the process group (setsid, daemonizing servers). Linux /proc only. With
    `prefix`, every token of the process whose pid is `token` (a killed holder's)."""
    import signal
    needle = b"AUTOTUNE_RUN_TOKEN=" + token.encode() + (b"-" if prefix else b"")
    try:
        names = os.listdir("/proc")
    except OSError:
        return
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % name, "rb") as handle:
                variables = handle.read().split(b"\0")
                if any(v.startswith(needle) for v in variables) if prefix else needle in variables:
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


def _process_table(needle=None):
    """{pid: (ppid, state, tagged)} of every process, from /proc; {} where there is none.
    `tagged`: the process's environment holds the variable `needle` (read only when
    given: one walk of /proc finds both the descendants and the tagged escapees)."""
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
            tagged = False
            if needle is not None:
                try:
                    with open("/proc/%s/environ" % name, "rb") as handle:
                        tagged = needle in handle.read().split(b"\0")
                except OSError:
                    pass
            table[int(name)] = (int(fields[1]), fields[0], tagged)
        except (OSError, ValueError, IndexError):
            pass
    return table


def descendants(root, exclude=(), table=None):
    """[(pid, state)] of the processes below `root` (a breadth-first walk of /proc, or of
    `table`), without the subtrees of the pids in `exclude`."""
    children = {}
    for pid, row in (_process_table() if table is None else table).items():
        children.setdefault(row[0], []).append((pid, row[1]))
    found, queue = [], [root]
    while queue:
        for pid, state in children.get(queue.pop(), ()):
            if pid not in exclude:
                found.append((pid, state))
                queue.append(pid)
    return found


def kill_descendants(exclude=(), rounds=50, token=None):
    """SIGKILLs every live process below this one, reaping the zombies re-parented to
    it, until none is left (killing a parent hands its children to this process). With
    `token`, the first walk of /proc also kills the processes that carry it in their
    environment (AUTOTUNE_RUN_TOKEN): escapees that left for init where no subreaper is."""
    import signal
    me = os.getpid()
    needle = None if token is None else b"AUTOTUNE_RUN_TOKEN=" + token.encode()
    for _ in range(rounds):
        table = _process_table(needle)
        found = descendants(me, exclude, table)
        alive = [pid for pid, state in found if state not in (b"Z", b"X")]
        if needle is not None:
            below = set(pid for pid, _ in found)
            alive += [pid for pid, (_, state, tagged) in table.items()
                      if tagged and pid != me and pid not in below and pid not in exclude
                      and state not in (b"Z", b"X")]
            needle = None   # escapees are found once; later rounds follow the subreaper's orphans
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
    process carrying this run's token in its environment. The SIGTERM/SIGHUP handlers it
    installs are put back as they were on the way out."""

    def __init__(self):
        self.token = "%d-%d" % (os.getpid(), time.monotonic_ns())
        self.before = ()
        self.saved = {}

    def __enter__(self):
        import signal

        def terminate(signum, frame):
            raise Terminated(signum)
        for signum in (signal.SIGTERM, signal.SIGHUP):
            self.saved[signum] = signal.signal(signum, terminate)
        self.start()
        return self

    def start(self):
        """Becomes the subreaper and notes the children this process already had (none
        on the command line): they are not the sweep's. Without `with`: no handlers."""
        become_subreaper()
        self.before = frozenset(pid for pid, _ in descendants(os.getpid()))
        return self

    def __exit__(self, *exc):
        import signal
        try:
            self.sweep()
        finally:
            for signum, handler in self.saved.items():
                signal.signal(signum, signal.SIG_DFL if handler is None else handler)
            self.saved = {}
        return False

    def sweep(self):
        kill_descendants(self.before, token=self.token)


def _stop_group(proc):
    """A timed-out benchmark gets SIGTERM and two seconds to clean up, then SIGKILL."""
    import signal
    import subprocess
    _kill_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=2.0)
    except subprocess.TimeoutExpired:
        pass
    _kill_group(proc.pid, signal.SIGKILL)
    proc.wait()


def _scanned(outcome, scanner, tail_lines, tail_bytes):
    """The outcome with what the scanner kept: the metrics and a tail that is cleaned of
    control sequences before it is cut to `tail_bytes` (cutting first could split one)."""
    scanner.close()
    outcome.metrics = scanner.metrics
    outcome.dropped = scanner.dropped
    text = clean_tail(scanner.text(tail_lines, scanner.tail_limit))
    if len(text.encode("utf-8")) > tail_bytes:
        text = text.encode("utf-8")[-tail_bytes:].decode("utf-8", "ignore")
    outcome.output = text
    return outcome


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
        sweep = ProcessSweep().start()
    env = dict(os.environ if env is None else env, AUTOTUNE_RUN_TOKEN=sweep.token)
    counters = cpu_counters()
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
                _stop_group(proc)
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
    outcome.contention = contention(counters, cpu_counters())
    outcome.exit = 124 if outcome.timeout else proc.returncode  # as timeout(1) reports it
    outcome.dur = round(time.monotonic() - started, 3)
    return _scanned(outcome, scanner, tail_lines, tail_bytes)


# Contention: how much CPU the rest of the machine used while one execution ran.
# Read from /proc/stat (every CPU's busy jiffies, steal included: a hypervisor's other
# guests are "the rest of the machine" too) minus the CPU of autotune and of the children
# it reaped (getrusage: the benchmark's whole waited-for tree), over the wall time: the
# others' CPU, in cores. /proc/stat is the primary signal because it says WHO used the
# CPU and exists on every Linux, containers included. /proc/pressure/cpu ("some" total:
# microseconds during which something waited for a CPU) is read beside it where the
# kernel has PSI (4.20+, not disabled): it says whether anyone waited, but it counts the
# benchmark's own threads waiting for each other and third parties queueing among
# themselves, and reads ~100% on both sides of a saturated machine, so it only sets a
# pair aside when the two sides differ by a lot (STALL_GAP). Jiffies are 10 ms: an
# execution shorter than CONTENTION_MIN_WALL gets no reading (None) rather than noise;
# without /proc (macOS) every reading is None and pairs are judged as before.

def cpu_counters():
    """(monotonic seconds, the machine's busy CPU seconds, CPU pressure stall seconds or
    None, this process's plus its reaped children's CPU seconds), or None without
    /proc/stat."""
    import resource
    try:
        with open("/proc/stat", "rb") as handle:
            fields = handle.readline().split()
        ticks = [int(x) for x in fields[1:9]]
        hz = float(os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, AttributeError):
        return None
    if len(ticks) < 8 or fields[0] != b"cpu":
        return None
    busy = (sum(ticks[:3]) + sum(ticks[5:8])) / hz    # user nice system + irq softirq steal
    stall = None
    try:
        with open("/proc/pressure/cpu", "rb") as handle:
            first = handle.readline()
        if first.startswith(b"some"):
            stall = int(first.rsplit(b"total=", 1)[1]) / 1e6
    except (OSError, ValueError, IndexError):
        pass
    own = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        own += usage.ru_utime + usage.ru_stime
    return time.monotonic(), busy, stall, own


def contention(before, after):
    """The reading of one execution between two cpu_counters(): {"others": cores the rest
    of the machine used, "stall": fraction of the time something waited for a CPU (or
    None), "cpus", "wall"}, or None when unknown or too short to measure."""
    if not before or not after:
        return None
    wall = after[0] - before[0]
    if wall < CONTENTION_MIN_WALL:
        return None
    cpus = os.cpu_count() or 1
    others = ((after[1] - before[1]) - (after[3] - before[3])) / wall
    stall = None
    if before[2] is not None and after[2] is not None:
        stall = _round(min(1.0, max(0.0, (after[2] - before[2]) / wall)), 3)
    return {"others": _round(min(float(cpus), max(0.0, others)), 3), "stall": stall,
            "cpus": cpus, "wall": _round(wall, 3)}


class BenchmarkLock(object):
    """One benchmark at a time per loop: every command that executes the benchmark
    (run, rebaseline, and any later one) holds it for as long as it measures.

    An flock on <cache>/bench.lock, which the kernel releases when the holder exits or
    is killed (kill -9 included), so a dead holder never blocks anyone; the file's text
    (pid, start time, command) only names the holder in the refusal of a second caller.
    A second caller is refused at once rather than queued: its measurement would be of
    a machine busy with the first one."""

    def __init__(self, loop, command):
        self.loop, self.command, self.fd = loop, command, None

    def __enter__(self):
        path = self.loop.cache("bench.lock", create=True)
        try:
            fd, taken = open_locked(path, os.O_RDWR | os.O_CREAT)
        except OSError as exc:
            fail("io_error", "Cannot open %s (%s)." % (path, exc.strerror))
        if taken is False:  # None: no advisory locks on this platform, one caller assumed
            holder = _lock_holder(fd)
            os.close(fd)
            fail("benchmark_running", "Another benchmark of this loop is running (%s); benchmarks "
                 "never overlap, so nothing was run. Wait for it to finish, then try again." %
                 holder_text(holder))
        previous = _lock_holder(fd)  # left by a holder killed before it could clear it
        if _is_int(previous.get("pid")) and previous["pid"] != os.getpid():
            _kill_tagged(str(previous["pid"]), prefix=True)  # its benchmark may outlive it
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "started": utc_now(),
                                 "command": self.command}).encode("utf-8"))
        self.fd = fd
        return self

    def __exit__(self, *exc):
        try:
            os.ftruncate(self.fd, 0)
        except OSError:
            pass
        os.close(self.fd)  # closing releases the flock
        self.fd = None
        return False


def _lock_holder(fd):
    try:
        os.lseek(fd, 0, 0)
        data = json.loads(os.read(fd, 65536).decode("utf-8", "replace"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError, RecursionError):
        return {}


def holder_text(holder):
    if not holder:
        return "its holder did not say who it is yet"
    return "pid %s, started %s: %s" % (holder.get("pid"), holder.get("started"),
                                        json.dumps(holder.get("command"), ensure_ascii=False))


def running_benchmark(loop):
    """The holder of the benchmark lock ({} when it does not say), or None when free."""
    try:
        fd, taken = open_locked(loop.cache("bench.lock"), os.O_RDWR)
    except OSError:
        return None
    try:
        return _lock_holder(fd) if taken is False else None
    finally:
        os.close(fd)


def benchmark_env(overrides=None, **extra):
    """The caller's environment without the variables that make a shell run other code
    first (BASH_ENV, ENV, exported functions): a way to fake any benchmark's output.
    Tools are asked not to colour their output (NO_COLOR=1, FORCE_COLOR=0): the tails are
    read as text. `overrides` (the config's "env") sets variables, or unsets them (null)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("BASH_ENV", "ENV") and not k.startswith("BASH_FUNC_")}
    env.update(DEFAULT_BENCH_ENV)
    for name, value in (overrides or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
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


def benchmark_command(loop, command):
    """(argv-or-string, shell, shown) for the benchmark; refuses what is not it."""
    bench = loop.path(BENCH_FILE)
    if os.path.isfile(bench):
        if command is not None and not is_benchmark_command(command, loop.workdir):
            fail("refused_command", "%s is not the benchmark: while %s exists, `run` runs only "
                 "./%s (anchored; no extra commands, arguments or wrappers)." % (
                     json.dumps(command), BENCH_FILE, BENCH_FILE))
        return script_argv(bench), False, command or "./" + BENCH_FILE
    if command is None:
        fail("no_benchmark", "No benchmark: %s does not exist in %s. Write it (it prints lines "
             "like `METRIC %s=<number>`) or pass --command." % (
                 BENCH_FILE, loop.workdir, "metric"))
    text_arg(command, "--command")
    return command, True, command


def pair_order_rng():
    """The coin that orders each pair: seeded from the OS (AUTOTUNE_PAIR_SEED makes it
    repeatable for tests)."""
    import random
    seed = os.environ.get("AUTOTUNE_PAIR_SEED")
    return random.Random(seed if seed else os.urandom(16))


def load_average():
    """The 1-minute load average and the number of CPUs, or None where unknown."""
    try:
        return {"1m": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}
    except (OSError, AttributeError):
        return None


class Progress(object):
    """Sample k of n on stderr, only when stderr is a terminal (never in JSON, never
    when piped)."""

    def __init__(self, what):
        self.what = what
        self.live = False
        try:
            self.live = sys.stderr.isatty()
        except (AttributeError, ValueError):
            pass

    def show(self, text):
        if self.live:
            sys.stderr.write("\r\033[Kautotune %s: %s" % (self.what, text))
            sys.stderr.flush()

    def done(self):
        if self.live:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


class ChecksGate(object):
    """Fail fast: autotune.checks.sh runs once, right after the candidate's first passing
    sample, so a candidate that fails them is known before its remaining samples are
    taken. Call after_candidate_sample() only while the candidate's own files are in
    place: the checks judge the candidate, never the best."""

    def __init__(self, path, cwd, timeout, env, sweep):
        self.path = path if path and os.path.isfile(path) else None   # None: no checks
        self.cwd, self.timeout, self.env, self.sweep = cwd, timeout, env, sweep
        self.outcome = None

    def after_candidate_sample(self):
        """Runs the checks the first time; False when they failed (stop sampling)."""
        if self.path is None:
            return True
        if self.outcome is None:
            self.outcome = run_process(script_argv(self.path), self.cwd, self.timeout, env=self.env,
                                       tail_lines=CHECKS_TAIL_LINES, tail_bytes=CHECKS_TAIL_BYTES,
                                       sweep=self.sweep)
        return self.passed()

    def passed(self):
        run = self.outcome
        return run is None or (run.exit == 0 and not run.timeout and not run.error)

    def result(self):
        """(checks, chk_out, timed out) as `run` reports them; checks is None when they
        did not run (no checks file, or no passing sample)."""
        run = self.outcome
        if run is None:
            return None, "", False
        out = run.error or run.output
        if run.timeout:
            out = (out + "\n[checks timed out after %ss]" % _fmt(self.timeout)).strip()
        return self.passed(), out, bool(run.timeout)


class SampleRunner(object):
    """`take` for collect_samples: one execution of the benchmark per sample; remembers
    the last outcome, the total time, and why it failed. With a ChecksGate, the checks
    run after the first passing sample, and a failure ends the sampling (`halted`)."""

    def __init__(self, argv, shell, cwd, timeout, env, pname, sweep, gate=None, progress=None, side=None):
        self.argv, self.shell, self.cwd, self.timeout = argv, shell, cwd, timeout
        # its own copy: AUTOTUNE_SAMPLE/AUTOTUNE_SIDE must not reach the checks or the
        # holdout through an env dict shared with them
        self.env, self.pname, self.sweep, self.gate = dict(env), pname, sweep, gate
        self.last, self.problem, self.dur, self.halted = None, None, 0.0, False
        self.progress, self.side = progress, side
        self.dropped = 0  # METRIC lines beyond the cap of names, in the sample that had most

    def take(self, number):
        if self.halted:
            return None   # the checks failed: no more samples of a candidate that cannot be kept
        self.env["AUTOTUNE_SAMPLE"] = str(number)
        if self.side:
            self.env["AUTOTUNE_SIDE"] = self.side
        if self.progress:
            self.progress.show("sample %d%s" % (number, " (%s)" % ("kept code" if self.side == "best" else
                                                                    "candidate") if self.side else ""))
        self.last = run_process(self.argv, self.cwd, self.timeout, shell=self.shell, env=self.env,
                                sweep=self.sweep, primary=self.pname)
        self.dur += self.last.dur
        self.dropped = max(self.dropped, self.last.dropped)
        self.problem = crash_reason(self.last, self.pname, self.timeout)
        if self.problem:
            return None
        if self.gate is not None and not self.gate.after_candidate_sample():
            self.halted = True
        return self.last.metrics[self.pname], self.last.metrics, self.last.contention


class DuetTake(object):
    """`take` for collect_pairs in duet mode: the first call of a pair starts BOTH sides
    at the same time (a thread each; run_process only waits on its own child) and
    answers for its side; the second call answers from what the pair already measured.
    The order within a pair means nothing here. Readings of contention are left out:
    each side's counters would count its twin as "the rest of the machine"."""

    def __init__(self, runners):
        self.runners, self.pending, self.number = runners, {}, None

    def __call__(self, side, number):
        if number != self.number:
            self.number, self.pending = number, self._both(number)
        got = self.pending.get(side)
        return None if got is None else got[:2]

    def _both(self, number):
        import threading
        got = {}

        def one(side):
            got[side] = self.runners[side].take(number)
        threads = [threading.Thread(target=one, args=(side,), daemon=True) for side in ("best", "candidate")]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)   # a short join keeps Ctrl-C and SIGTERM deliverable
        return got


# ----------------------------------------------------------------- projects ----

# What a project is made of, read from its files: the toolchains it uses (and their
# versions, cached), the lockfiles that pin its dependencies, the command that brings the
# installed dependencies back in line with them, and its own build, test and benchmark
# commands. No guess is silent: each proposal says which file it comes from.


class ProjectFiles(object):
    """The file names of the working directory and, when the loop lives below it, of the
    git root (a monorepo's lockfile sits at the top): one listdir each."""

    __slots__ = ("workdir", "dirs")

    def __init__(self, workdir, repo_root=None):
        self.workdir = workdir
        self.dirs = []  # (absolute directory, prefix relative to the workdir, set of names)
        roots = [workdir]
        if repo_root and not _same_path(repo_root, workdir):
            roots.append(repo_root)
        for root in roots:
            try:
                names = set(os.listdir(root))
            except OSError:
                names = set()
            prefix = "" if root == workdir else os.path.relpath(root, workdir) + "/"
            self.dirs.append((root, prefix, names))

    def names(self):
        return set().union(*(names for _, _, names in self.dirs))

    def first(self, *candidates):
        """The path of the first of these files found (workdir first), or None."""
        for root, _, names in self.dirs:
            for name in candidates:
                if name in names and os.path.isfile(os.path.join(root, name)):
                    return os.path.join(root, name)
        return None


def project_files(loop):
    return ProjectFiles(loop.workdir, loop.repo.root if loop.repo else None)


def is_lockfile(name):
    import fnmatch
    return name in LOCKFILES or any(fnmatch.fnmatch(name, glob) for glob in LOCKFILE_GLOBS)


def project_tools(names):
    """The toolchains a project uses, from the marker files among `names`."""
    tools = []
    for markers, used in TOOLCHAIN_MARKERS:
        if any(m in names for m in markers) or ("python" in used and any(
                n.startswith("requirements") and n.endswith(".txt") for n in names)):
            tools.extend(t for t in used if t not in tools)
    return tools


def parse_version(text):
    """'v20.11.1' / 'rustc 1.75.0 (…)' / 'go version go1.21.5 linux/amd64' /
    'openjdk version "17.0.9" …' -> the version; else the first line, shortened."""
    import re
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines[:3]:
        found = re.search(r"(?<![\w.])v?(\d+\.\d+(?:\.\d+)*(?:[-+][0-9A-Za-z.]+)?)", line.replace("go1.", " 1."))
        if found:
            return found.group(1)
    return _one_line(lines[0], 60) if lines else None


def _tool_executable(tool, files, path):
    """The executable a tool name resolves to; `python` is the project's interpreter
    (its .venv's when there is one), not necessarily autotune's."""
    import shutil
    if tool == "python":
        for root, _, names in files.dirs:
            if ".venv" in names:
                candidate = os.path.join(root, ".venv", "bin", "python")
                if os.path.isfile(candidate):
                    return candidate
        return shutil.which("python3", path=path) or shutil.which("python", path=path)
    return shutil.which(tool, path=path)


_PIN_FILES = (".nvmrc", ".node-version", ".tool-versions", ".python-version", "rust-toolchain",
              "rust-toolchain.toml", ".go-version", ".java-version", ".ruby-version", ".sdkmanrc")


def _pins_signature(files):
    """Version managers pick a tool by these files behind the same shim: they are part
    of the cache key."""
    parts = []
    for root, _, names in files.dirs:
        for name in _PIN_FILES:
            if name in names:
                try:
                    st = os.stat(os.path.join(root, name))
                    parts.append("%s:%d:%d" % (name, st.st_mtime_ns, st.st_size))
                except OSError:
                    pass
    return ",".join(parts)


def tool_versions(loop, tools, env, files, now=None):
    """{tool: version or None} for the project's toolchains. A version is cached in the
    private cache dir, keyed by the executable's real path, mtime and size and by the
    version pin files, for an hour at most (a version manager can switch a tool behind the
    same path): `run` spawns the probes (concurrently) only when that key changes."""
    now = time.time() if now is None else now
    path = env.get("PATH")
    cache_path = loop.cache("toolchain.json") if loop.repo else None  # never litter a non-repo
    cache = read_json(cache_path or os.devnull)
    if not isinstance(cache, dict):
        cache = {}
    pins = _pins_signature(files)
    me = os.path.realpath(sys.executable)
    found, todo = {}, []
    for tool in tools:
        exe = _tool_executable(tool, files, path)
        if exe is None:
            found[tool] = None  # not installed (or not on the benchmark's PATH)
            continue
        real = os.path.realpath(exe)
        if tool == "python" and real == me:
            found[tool] = "%d.%d.%d" % sys.version_info[:3]
            continue
        try:
            st = os.stat(real)
        except OSError:
            found[tool] = None
            continue
        key = "%s|%s|%d|%d|%s" % (tool, real, st.st_mtime_ns, st.st_size, pins)
        hit = cache.get(key)
        if isinstance(hit, list) and len(hit) == 2 and _is_number(hit[1]) and 0 <= now - hit[1] < TOOLCHAIN_CACHE_SECONDS:
            found[tool] = hit[0] if isinstance(hit[0], str) else None
        else:
            todo.append((tool, exe, key))
    if todo:
        probed = probe_versions([(tool, exe) for tool, exe, _ in todo], loop.workdir, env)
        fresh = {k: v for k, v in cache.items() if isinstance(v, list) and len(v) == 2
                 and _is_number(v[1]) and 0 <= now - v[1] < TOOLCHAIN_CACHE_SECONDS}
        for tool, _, key in todo:
            found[tool] = probed.get(tool)
            if found[tool] is not None:  # a failed or slow probe is tried again next time
                fresh[key] = [found[tool], now]
        try:
            if cache_path:
                loop.cache("toolchain.json", create=True)
                write_atomic(cache_path, json.dumps(fresh, sort_keys=True).encode("utf-8"))
        except OSError:
            pass  # a cache that cannot be written costs a probe next time, nothing else
    return {tool: found[tool] for tool in tools}


def probe_versions(pairs, cwd, env, timeout=10.0):
    """Runs `<tool> --version` (go: `go version`, java: `-version`) for each pair at the
    same time; {tool: version or None}. A probe that fails or hangs is None."""
    import subprocess
    env = dict(env, NO_UPDATE_NOTIFIER="1", npm_config_update_notifier="false")
    procs = []
    for tool, exe in pairs:
        try:
            procs.append((tool, subprocess.Popen([exe] + list(VERSION_ARGV.get(tool, ("--version",))),
                                                 cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                 start_new_session=True, close_fds=True)))
        except OSError:
            procs.append((tool, None))
    deadline = time.monotonic() + timeout
    versions = {}
    for tool, proc in procs:
        if proc is None:
            versions[tool] = None
            continue
        try:
            out, _ = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
            versions[tool] = parse_version(out[:4096].decode("utf-8", "replace")) if proc.returncode == 0 else None
        except subprocess.TimeoutExpired:
            _reap_group(proc.pid, 0.5)
            proc.communicate()
            versions[tool] = None
    return versions


def lockfile_hashes(files, limit=20):
    """{name: sha256} of the lockfiles present (names relative to the working directory)."""
    import hashlib
    hashes = {}
    for root, prefix, names in files.dirs:
        for name in sorted(names):
            if len(hashes) >= limit or not is_lockfile(name):
                continue
            path = os.path.join(root, name)
            if not os.path.isfile(path):  # a directory, a FIFO or a device is no lockfile
                continue
            digest = hashlib.sha256()
            try:
                with open(path, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
            except OSError:  # unreadable: not a lockfile we can pin
                continue
            hashes[prefix + name] = digest.hexdigest()
    return hashes


# Which command brings the installed dependencies back in line, per ecosystem: the first
# rule whose files are all present in the directory of the changed file wins.
SYNC_RULES = {
    "node": ((("pnpm-lock.yaml",), "pnpm install --frozen-lockfile"),
             (("bun.lockb",), "bun install"), (("bun.lock",), "bun install"),
             (("yarn.lock", ".yarnrc.yml"), "yarn install --immutable"),
             (("yarn.lock",), "yarn install --frozen-lockfile"),
             (("package-lock.json",), "npm ci"), (("npm-shrinkwrap.json",), "npm ci"),
             ((), "npm install")),
    "python": ((("uv.lock",), "uv sync"), (("poetry.lock",), "poetry install"),
               (("pdm.lock",), "pdm sync"), (("Pipfile.lock",), "pipenv sync"),
               ((), "pip install -e .")),
    "rust": (((), "cargo fetch"),),
    "go": (((), "go mod download"),),
    "ruby": (((), "bundle install"),),
    "php": (((), "composer install"),),
}
ECOSYSTEM_OF = {
    "package.json": "node", "package-lock.json": "node", "npm-shrinkwrap.json": "node",
    "yarn.lock": "node", "pnpm-lock.yaml": "node", "bun.lockb": "node", "bun.lock": "node",
    "pyproject.toml": "python", "setup.py": "python", "setup.cfg": "python", "uv.lock": "python",
    "poetry.lock": "python", "Pipfile": "python", "Pipfile.lock": "python", "pdm.lock": "python",
    "Cargo.toml": "rust", "Cargo.lock": "rust", "go.mod": "go", "go.sum": "go",
    "Gemfile": "ruby", "Gemfile.lock": "ruby", "composer.json": "php", "composer.lock": "php",
}


def sync_commands(workdir, changed):
    """The commands that bring installed dependencies in line after `changed` (paths
    relative to the working directory) moved: one per ecosystem and directory, chosen
    by the lockfiles present there now. A requirements file gets `pip install -r` itself."""
    commands = []
    for path in changed:
        folder, name = os.path.split(path)
        if name.startswith("requirements") and name.endswith(".txt"):
            command = "pip install -r %s" % _shell_quote(name)
        elif name in ECOSYSTEM_OF:
            try:
                present = set(os.listdir(os.path.join(workdir, folder) or "."))
            except OSError:
                present = set()
            command = next(cmd for needs, cmd in SYNC_RULES[ECOSYSTEM_OF[name]]
                           if all(n in present for n in needs))
        else:
            continue
        if folder:
            command = "cd %s && %s" % (_shell_quote(folder), command)
        if command not in commands:
            commands.append(command)
    return commands


def dependency_files(names):
    return [name for name in names if os.path.basename(name) in MANIFESTS
            or os.path.basename(name) in ECOSYSTEM_OF or is_lockfile(os.path.basename(name))]


# Script names that are a build, tests or a benchmark, by ecosystem convention.
_BUILD_NAMES = ("build", "compile", "bundle", "dist")
_TEST_NAMES = ("test", "tests", "check", "spec", "unit")
_BENCH_NAMES = ("bench", "benchmark", "benchmarks", "perf", "size")


def _kind_of(name):
    base = name.split(":", 1)[0].lower()
    if base in _BUILD_NAMES:
        return "build"
    if base in _TEST_NAMES:
        return "test"
    if base in _BENCH_NAMES:
        return "benchmark"
    return None


def _read_text(path, limit=1 << 20):
    if not os.path.isfile(path):
        return None
    try:
        with open(path, "rb") as handle:
            return handle.read(limit).decode("utf-8", "replace")
    except OSError:
        return None


def propose_commands(files):
    """{"build": [...], "test": [...], "benchmark": [...]}: the project's own commands,
    each {"command", "from"} (and "runs" for a package.json script), read from
    package.json scripts, a Makefile, pyproject.toml/tox.ini/setup.cfg, Cargo.toml, go.mod."""
    import re
    found = {"build": [], "test": [], "benchmark": []}

    def add(kind, command, source, runs=None):
        if kind and all(item["command"] != command for item in found[kind]):
            item = {"command": command, "from": source}
            if runs:
                item["runs"] = _one_line(runs, 200)
            found[kind].append(item)

    names = files.names()
    package = files.first("package.json")
    if package:
        scripts = package_scripts(package)
        manager = ("pnpm" if "pnpm-lock.yaml" in names else "yarn" if "yarn.lock" in names
                   else "bun" if names & {"bun.lockb", "bun.lock"} else "npm")
        for name, body in (scripts.items() if isinstance(scripts, dict) else []):
            if not isinstance(body, str) or "no test specified" in body:
                continue
            command = ("%s test" % manager if name == "test" and manager != "bun"
                       else "%s run %s" % (manager, _shell_quote(name)))
            add(_kind_of(name), command, "package.json scripts.%s" % name, body)
    makefile = files.first("GNUmakefile", "makefile", "Makefile")
    text = _read_text(makefile) if makefile else None
    if text:
        for target in re.findall(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)[ \t]*:(?![=:])", text, re.M):
            kind = _kind_of(target) or ("build" if target == "all" else None)
            add(kind, "make %s" % target, "%s target %s" % (os.path.basename(makefile), target))
    runner = ("uv run " if "uv.lock" in names else "poetry run " if "poetry.lock" in names else "")
    pyproject = _read_text(files.first("pyproject.toml") or "") if "pyproject.toml" in names else None
    setup_cfg = _read_text(files.first("setup.cfg") or "") if "setup.cfg" in names else None
    if "tox.ini" in names:
        add("test", "tox", "tox.ini")
    if "pytest.ini" in names or (pyproject and ("[tool.pytest" in pyproject or "pytest" in pyproject)) \
            or (setup_cfg and "[tool:pytest]" in setup_cfg):
        source = ("pytest.ini" if "pytest.ini" in names else "pyproject.toml (pytest)"
                  if pyproject and "pytest" in pyproject else "setup.cfg [tool:pytest]")
        add("test", runner + "pytest -q", source)
        if pyproject and "pytest-benchmark" in pyproject:
            add("benchmark", runner + "pytest -q --benchmark-only", "pyproject.toml (pytest-benchmark)")
    cargo = files.first("Cargo.toml")
    if cargo:
        add("build", "cargo build --release", "Cargo.toml")
        add("test", "cargo test", "Cargo.toml")
        text = _read_text(cargo) or ""
        if "[[bench]]" in text or os.path.isdir(os.path.join(os.path.dirname(cargo), "benches")):
            add("benchmark", "cargo bench", "Cargo.toml [[bench]]" if "[[bench]]" in text else "benches/")
    if files.first("go.mod"):
        add("build", "go build ./...", "go.mod")
        add("test", "go test ./...", "go.mod")
        add("benchmark", "go test -run '^$' -bench . ./...", "go.mod (Go's Benchmark functions)")
    return found


def project_report(loop):
    """What `detect` and `init --scaffold` say about the project: its toolchains, lockfiles
    and proposed commands (no process is started)."""
    files = project_files(loop)
    names = files.names()
    return {"tools": project_tools(names),
            "lockfiles": sorted(prefix + name for _, prefix, found in files.dirs for name in found
                                if is_lockfile(name)),
            "proposed": propose_commands(files)}


def machine_facts(head, loop=None, run_env=None):
    """Facts that let a later reader tell machine drift from progress: the machine, and
    with `loop` the project's toolchain versions (cached; see tool_versions) and the
    SHA-256 of its lockfiles."""
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
    if loop is not None:
        files = project_files(loop)
        tools = project_tools(files.names())
        env["toolchain"] = tool_versions(loop, tools, run_env or benchmark_env(loop.settings.env),
                                         files) if tools else {}
        env["lockfiles"] = lockfile_hashes(files)
    return env


# ==================================================================== EDGES ====

# ------------------------------------------------------------------- output ----

# JSON escapes C0 controls itself; DEL and the C1 range (0x9b is a one-byte CSI) it
# writes raw unless told to escape all of non-ASCII, so they are escaped here.
_JSON_C1 = {code: "\\u%04x" % code for code in range(0x7f, 0xa0)}


def print_json(obj):
    """One JSON object on stdout (agent-facing commands): no raw control character in
    it, so it is safe on a terminal too."""
    data = json.dumps(obj, ensure_ascii=False, allow_nan=False)
    if not data.isascii() or "\x7f" in data:  # both fast: most output needs no translation
        data = data.translate(_JSON_C1)
    data += "\n"
    sys.stdout.buffer.write(data.encode("utf-8", "replace"))
    sys.stdout.flush()


def print_text(text, stream=None, painted=False):
    """Prints text for a person. Everything passes strip_controls, except text a
    renderer already built from cleaned values and painted with its own colours."""
    stream = stream or sys.stdout
    if not painted:
        text = strip_controls(text)
    data = text if text.endswith("\n") else text + "\n"
    encoding = getattr(stream, "encoding", None) or "utf-8"
    stream.buffer.write(data.encode(encoding, "replace"))
    stream.flush()


# ----------------------------------------------------------- text rendering ----

def explain_data(loop, loaded, disk=False):
    """The data behind explain, status and the dashboard. With `disk`, the lockfiles on
    disk are hashed and compared with the kept code's (explain and status only: the
    dashboard redraws every few seconds)."""
    state = clock_state(loop, loaded.state, time.time())
    settings = loop.settings
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
    changes = toolchain_changes(state.toolchain, state.last_toolchain, locks=False)
    if changes:
        changes = ["%s (result #%s)" % ("; ".join(changes), state.last_toolchain.get("index"))]
    if disk and state.toolchain:
        changes += toolchain_changes(dict(state.toolchain, tools={}), {
            "tools": {}, "locks": lockfile_hashes(project_files(loop))})
    if changes:
        warnings.append(toolchain_warning(changes) + ".")
    warnings.extend(config_notes(loop))
    return {
        "name": config.get("name"), "metric": config.get("metric_name"), "unit": config.get("metric_unit"),
        "direction": config.get("direction"), "segment": state.segment, "segments": state.segments,
        "active": state.active, "mode": state.mode, "health": state.health, "failure": state.failure,
        "recovery": state.recovery, "reason": state.reason, "why": reason_text(state, settings),
        "baseline": _round(base), "best": _round(best),
        "best_pct": _round(pct_change(best, base), 2),
        "best_commit": (state.best or {}).get("commit"), "best_description": (state.best or {}).get("description"),
        "verified": current_verification(state),
        "last_metric": _round((state.last or {}).get("metric")), "last_status": (state.last or {}).get("status"),
        "last_index": (state.last or {}).get("index"), "last_description": (state.last or {}).get("description"),
        "last_verdict": (state.last or {}).get("verdict"), "last_load": (state.last or {}).get("load"),
        "no_improve": state.no_improve, "crash_streak": state.crash_streak, "keep_streak": state.keep_streak,
        "heals": state.heals, "max_heals": settings.max_heals, "max_no_improve": settings.max_no_improve,
        "max_crash_streak": settings.max_crash_streak,
        "runs": state.n_exp, "kept": state.kept, "discarded": state.discarded, "crashed": state.crashed,
        "checks_failed": state.checks_failed, "timed_out": state.timed_out,
        "max_iterations": settings.max_iterations, "diagnosis": failure_diagnosis(state),
        "confidence": state.confidence, "next": action, "next_text": advice, "warnings": warnings,
        "path": loop.workdir,
    }


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
                "healing": "magenta", "paused": "red", "stopped": "yellow", "completed": "cyan"}
HEALTH_ICON = {"improving": "▲", "running": "●", "plateaued": "■", "crashing": "✖", "healing": "✚",
               "paused": "⏸", "stopped": "⏹", "completed": "✔"}
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
    timed_out = data.get("timed_out") or 0   # timeouts are crashes in the log, not in words
    lines.append("Metric:  %s%s, %s is better · %d run%s: %d kept, %d discarded, %d crashed, %s%d failed checks" % (
        data.get("metric"), (" (%s)" % unit) if unit else "", data.get("direction"), data["runs"],
        "" if data["runs"] == 1 else "s", data["kept"], data["discarded"], data["crashed"] - timed_out,
        ("%d timed out, " % timed_out) if timed_out else "", data["checks_failed"]))
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
        best = "%s (%s) at %s" % (
            fmt_metric(data["best"], unit), headline_text(data.get("best_pct"), data.get("verified"),
                                                          " vs baseline %s" % _fmt(data["baseline"])),
            data.get("best_commit") or "-")
        if data.get("best_description"):
            best += ", %s" % json.dumps(data["best_description"], ensure_ascii=False)
        lines.append(_wrap("Best:", best + conf_text))
    if data.get("last_status"):
        lines.append(_wrap("Last:", "#%s %s%s %s, %s" % (
            data.get("last_index"), data["last_status"],
            " (timed out)" if data.get("last_verdict") == "timeout" else "", fmt_metric(data.get("last_metric"), unit),
            json.dumps(data.get("last_description"), ensure_ascii=False))))
    load = data.get("last_load") or {}
    if load.get("unequal_pairs"):
        lines.append(_wrap("", "%s of %s pairs set aside: the rest of the machine used clearly more CPU "
                               "during one side than the other%s" % (
                                   load["unequal_pairs"], load.get("pairs") or "?",
                                   " (too busy to decide: within noise)" if load.get("busy") else "")))
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
        ("Mode", colors.bold("ACTIVE") if data["active"] else colors.red(
            health.upper() if health in ("stopped", "paused", "completed") else "NOT ACTIVE")),
        ("Strategy", data["mode"]),
        ("Health", colors.paint(HEALTH_COLOR.get(health, "bold"), "%s %s" % (HEALTH_ICON.get(health, ""), health))),
        ("Reason", data.get("reason") or "-"),
        ("Failures", "%d crash streak / %d no-improvement" % (data["crash_streak"], data["no_improve"])),
        ("Recovery", "%s (heals %d/%d)" % (data.get("recovery") or "-", data["heals"], data["max_heals"])),
        ("Segment", "%s of %s" % (data["segment"], data["segments"])),
        ("Total runs", "%d in this segment, %d in all" % (data["runs"], data["total_runs"])),
        ("Baseline", fmt_metric(data.get("baseline"), unit)),
        ("Best", "%s (%s) at %s" % (fmt_metric(data.get("best"), unit),
                                    headline_text(data.get("best_pct"), data.get("verified")),
                                    data.get("best_commit") or "-")),
        ("Next", data["next"]),
    ]
    lines = ["autotune status"] + ["  %-11s %s" % (label + ":", value) for label, value in rows]
    for warning in data.get("warnings") or []:
        lines.append("  " + colors.yellow("warning: ") + warning)
    return "\n".join(lines)


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


def dashboard_data(loop, loaded, full=False, limit=20):
    state = loaded.state
    data = explain_data(loop, loaded)
    results = segment_rows(read_entries(loop, state.config_offset or 0))
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
        headline_text(data.get("best_pct"), data.get("verified")), data.get("best_commit") or "-", conf_text))
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
    for warning in data.get("warnings") or []:  # wrapped, not cut: it says what to fix
        wrapped = _wrap("warning:", warning, width, indent=9).split("\n")
        out += [colors.yellow(wrapped[0][:8]) + wrapped[0][8:]] + wrapped[1:]
    return "\n".join(_fit(line, width) for line in out)


def cmd_dashboard(args):
    if args.dir is not None and not os.path.isdir(args.dir):
        fail("bad_dir", "--dir %s is not a directory." % json.dumps(args.dir, ensure_ascii=False))
    colors = Colors(sys.stdout)
    width = terminal_columns()
    if not args.watch:
        loop = require_loop(find_loop(args.dir, lenient=True))
        data = dashboard_data(loop, load_state(loop), full=args.full)
        if args.json:
            print_json(data)
        else:
            print_text(render_dashboard(data, colors, width), painted=colors.enabled)
        return 0
    tty = sys.stdout.isatty()
    try:
        while True:  # started before the loop (or across a `clear`): wait for a session
            loop = find_loop(args.dir, lenient=True)
            if loop.exists():
                try:
                    text = render_dashboard(dashboard_data(loop, load_state(loop), full=args.full),
                                            colors, width)
                except FileNotFoundError:  # cleared between the check and the read
                    continue
            else:
                text = "\n".join(_fit(line, width) for line in (
                    "autotune: waiting for a session in %s" % strip_controls(loop.workdir, ""),
                    "(`autotune init` starts one there; Ctrl-C quits)"))
            print_text(("\033[H\033[2J" if tty else "") + text + ("" if tty else "\n"), painted=tty)
            time.sleep(args.interval)
    except KeyboardInterrupt:
        print_text("")
    return 0


def terminal_columns():
    """The width to draw in: $COLUMNS when it is a sane number (the old bash scripts
    honoured it too), else 80, whatever the terminal's size."""
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        return 80
    return columns if 20 <= columns <= 1000 else 80


# -------------------------------------------------------------- HTML report ----

def spreadsheet_cell(value):
    """A CSV/TSV cell that a spreadsheet shows as text, never runs as a formula (OWASP
    CSV injection): text starting with = + - @ tab or CR gets a leading apostrophe.
    Numbers stay numbers (-5 is a number, not a formula: parse_number, the METRIC
    grammar's number, tells them)."""
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _fmt(value)
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    formula = text.lstrip(" ")[:1] in ("=", "+", "-", "@", "\t", "\r") and parse_number(text) is None
    text = strip_controls(text)  # newlines stay (quoted in CSV); tab and CR become spaces
    return "'" + text if formula else text


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


def segment_baseline(results):
    """A segment's baseline as its report shows it: the metric of its first kept or
    discarded result, or None."""
    return next((r.get("metric") for r in results if _is_number(r.get("metric"))
                 and r.get("status") in ("keep", "discard")), None)


class _ChartArea(object):
    """Where a report chart draws: its size, the padding around the plot, and the
    position of an experiment (by its place among `count`) and of a value."""

    left, right, top, bottom = 64, 16, 38, 40

    def __init__(self, width, height, count, low, high):
        self.width, self.height, self.count, self.low, self.high = width, height, count, low, high
        self.plot_w = width - self.left - self.right
        self.plot_h = height - self.top - self.bottom

    def x_at(self, i):
        return self.left + (self.plot_w * (i + 0.5) / self.count)

    def x_edge(self, i):
        """The left edge of the i-th experiment's slot (a segment's boundary)."""
        return self.left + self.plot_w * i / self.count

    def y_at(self, value):
        return self.top + self.plot_h * (1 - fraction(value, self.low, self.high))


def _chart_range(values):
    """(low, high, ticks) of a chart's value axis: the values' span (any span for one
    value or none) with an 8% margin (none where it would overflow), out to round ticks."""
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if high == low:
        low, high = low - 1, high + 1
    margin = _finite((high - low) * 0.08) or 0.0
    if _finite(low - margin) is None or _finite(high + margin) is None:
        margin = 0.0
    ticks = nice_ticks(low - margin, high + margin)
    return min(ticks[0], low - margin), max(ticks[-1], high + margin), ticks


def _chart_axes(area, ticks, config):
    """The chart's frame: the plot, the value grid and ticks, the experiment numbers
    and the two axis titles."""
    unit = config.get("metric_unit") or ""
    parts = ['<rect x="%d" y="%d" width="%d" height="%d" class="plot"/>' % (
        area.left, area.top, area.plot_w, area.plot_h)]
    for value in ticks:
        y = area.y_at(value)
        parts.append('<line class="grid" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/>' % (
            area.left, area.width - area.right, y, y))
        parts.append('<text class="tick" x="%d" y="%.1f" text-anchor="end">%s</text>' % (
            area.left - 6, y + 4, _html(_fmt(round(value, 9)))))
    every = max(1, nice_ticks(0, area.count, 8)[1] - nice_ticks(0, area.count, 8)[0])
    for i in range(0, area.count, int(every)):
        parts.append('<text class="tick" x="%.1f" y="%d" text-anchor="middle">%d</text>' % (
            area.x_at(i), area.height - area.bottom + 16, i + 1))
    parts.append('<text class="axis" x="%d" y="%d">%s%s (%s is better)</text>' % (
        area.left, 13, _html(config.get("metric_name") or ""), _html(" [%s]" % unit) if unit else "",
        _html(config.get("direction", "lower"))))
    parts.append('<text class="axis" x="%d" y="%d" text-anchor="end">experiment</text>' % (
        area.width - area.right, area.height - 6))
    return parts


def _best_path(area, bests, first, end_x):
    """The SVG path of the best-so-far steps of a segment starting at slot `first`,
    drawn on to `end_x`; "" before the first keep."""
    path = []
    for i, value in enumerate(bests):
        if value is None:
            continue
        x = area.x_at(first + i)
        if path:
            path.append("H%.1f" % x)
        path.append(("M" if not path else "V") + ("%.1f,%.1f" % (x, area.y_at(value)) if not path
                                                   else "%.1f" % area.y_at(value)))
    if path:
        path.append("H%.1f" % end_x)
    return " ".join(path)


def _chart_segment(area, segment, first, unit, direction):
    """One segment of a chart from slot `first`: its boundary and label, baseline,
    best-so-far line and one point per experiment (a crash sits on the axis)."""
    results, seg_conf = segment["results"], segment["config"]
    parts = []
    if first > 0:
        x = area.x_edge(first)
        parts.append('<line class="segment" x1="%.1f" x2="%.1f" y1="%d" y2="%d"/>' % (
            x, x, area.top, area.top + area.plot_h))
    parts.append('<text class="segment-label" x="%.1f" y="%d">segment %s: %s</text>' % (
        area.x_edge(first) + 4, area.top - 5, segment["number"],
        _html(_one_line(seg_conf.get("name") or "", 40))))
    base = segment_baseline(results)
    x0, x1 = area.x_edge(first), area.x_edge(first + len(results))
    if base is not None:
        parts.append('<line class="baseline" x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f"><title>baseline %s</title></line>' % (
            x0, x1, area.y_at(base), area.y_at(base), _html(fmt_metric(base, unit))))
    path = _best_path(area, best_so_far(results, seg_conf.get("direction", direction)), first, x1)
    if path:
        parts.append('<path class="best" d="%s"><title>best so far</title></path>' % path)
    for i, row in enumerate(results):
        status = row.get("status")
        metric = row_metric(row)
        y = area.y_at(metric) if metric is not None else area.top + area.plot_h  # no metric: on the axis
        label = "#%s.%s %s %s — %s" % (segment["number"], row.get("index"), status,
                                       fmt_metric(metric, unit), _one_line(row.get("description") or "", 120))
        parts.append('<circle class="point %s" cx="%.1f" cy="%.1f" r="%s" data-index="%s" data-segment="%s">'
                     '<title>%s</title></circle>' % (
                         _html(status or ""), area.x_at(first + i), y, "5" if status == "keep" else "4",
                         _html(row.get("index")), segment["number"], _html(label)))
    return parts


def _svg_chart(group, width=960, height=340):
    """One inline SVG chart of the experiments of consecutive segments sharing a metric."""
    rows = [row for segment in group for row in segment["results"]]
    if not rows:
        return ""
    low, high, ticks = _chart_range([m for m in map(row_metric, rows) if m is not None])
    area = _ChartArea(width, height, len(rows), low, high)
    config = group[0]["config"]
    direction = config.get("direction", "lower")
    unit = config.get("metric_unit") or ""
    parts = ['<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" role="img" '
             'aria-label="%s by experiment">' % (width, height, _html(config.get("metric_name") or ""))]
    parts += _chart_axes(area, ticks, config)
    position = 0
    for segment in group:
        parts += _chart_segment(area, segment, position, unit, direction)
        position += len(segment["results"])
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


def _report_head(loop, data, segments):
    """The report's HTML head, title, counts line, summary cards and next step."""
    esc = _html
    experiments = sum(len(s["results"]) for s in segments)
    out = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           '<title>autotune report: %s</title><style>%s</style></head><body>' % (
               esc(data.get("name") or ""), REPORT_CSS)]
    out.append('<h1>autotune report: %s</h1>' % esc(data.get("name") or "-"))
    out.append('<p class="muted">%s · generated %s · %d experiment%s in %d segment%s</p>' % (
        esc(loop.workdir), utc_now(), experiments, "" if experiments == 1 else "s", len(segments),
        "" if len(segments) == 1 else "s"))
    conf = data.get("confidence") or {}
    cards = [("health", "%s" % data["health"]), ("mode", data["mode"]),
             ("best", fmt_metric(data.get("best"), data.get("unit"))),
             ("vs baseline", headline_text(data.get("best_pct"), data.get("verified"))),
             ("confidence", conf.get("label") or "-"), ("runs", str(data["runs"])),
             ("kept", str(data["kept"])), ("next", data["next"])]
    out.append('<div class="cards">%s</div>' % "".join(
        '<div class="card"><span class="muted">%s</span><b>%s</b></div>' % (esc(k), esc(v)) for k, v in cards))
    out.append('<p>%s. <b>Next:</b> %s</p>' % (esc(data["why"][:1].upper() + data["why"][1:]),
                                               _code_spans(esc(data["next_text"]))))
    return out


def _chart_groups(segments):
    """Consecutive segments with the same metric, unit and direction: one chart each."""
    groups = []
    for segment in segments:
        key = (segment["config"].get("metric_name"), segment["config"].get("metric_unit"),
               segment["config"].get("direction"))
        if groups and groups[-1][0] == key:
            groups[-1][1].append(segment)
        else:
            groups.append((key, [segment]))
    return [group for _, group in groups]


def _segment_table_row(segment):
    """A segment's row of the report's table: its counts, baseline, best and change."""
    esc = _html
    config = segment["config"]
    direction = config.get("direction", "lower")
    results = segment["results"]
    base = segment_baseline(results)
    best = ([b for b in best_so_far(results, direction) if b is not None] or [None])[-1]
    counts = {s: sum(1 for r in results if r.get("status") == s) for s in STATUSES}
    unit_text = esc(config.get("metric_unit") or "")
    return ('<tr><td>%s</td><td>%s</td><td>%s (%s%s is better)</td><td class="num">%d</td>'
            '<td class="num">%d</td><td class="num">%d</td><td class="num">%d</td><td class="num">%d</td>'
            '<td class="num">%s</td><td class="num">%s</td><td class="num">%s</td></tr>' % (
                segment["number"], esc(config.get("name") or ""), esc(config.get("metric_name") or ""),
                unit_text + ", " if unit_text else "", esc(direction), len(results), counts["keep"],
                counts["discard"], counts["crash"], counts["checks_failed"], esc(_fmt(base)), esc(_fmt(best)),
                fmt_pct(pct_change(best, base))))


def _experiment_row(segment, row, unit):
    """One experiment's row of the report: status, metric, verdict, health (with a
    heal's failure and remedy), commit, description, secondary metrics and notes."""
    esc = _html
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
    return ('<tr><td>%s.%s</td><td><span class="badge %s">%s</span></td><td class="num">%s</td>'
            '<td>%s</td><td>%s</td><td><code>%s</code></td><td>%s%s</td></tr>' % (
                segment["number"], esc(str(row.get("index"))), esc(row.get("status") or ""),
                esc(row.get("status") or ""), esc(fmt_metric(metric, unit)),
                esc(row.get("verdict") or "-"), health, esc(row.get("commit") or "-"),
                esc(row.get("description") or ""), notes))


def render_report(loop, loaded, entries):
    segments = segment_rows(entries)
    data = explain_data(loop, loaded)
    out = _report_head(loop, data, segments)
    out.append('<h2>Experiments by index</h2><p class="legend muted"><span style="color:#1a8f4c">● kept</span>'
               '<span>○ discarded</span><span style="color:#c9302c">○ crashed (no metric: on the axis)</span><span style="color:#d98b0a">● checks failed</span>'
               '<span style="color:#1a8f4c">— best so far</span><span>- - baseline</span></p>')
    out += [_svg_chart(group) for group in _chart_groups(segments)]
    out.append('<h2>Segments</h2><table><tr><th>#</th><th>name</th><th>metric</th><th class="num">runs</th>'
               '<th class="num">kept</th><th class="num">discarded</th><th class="num">crashed</th>'
               '<th class="num">failed checks</th><th class="num">baseline</th><th class="num">best</th><th class="num">change</th></tr>')
    out += [_segment_table_row(segment) for segment in segments]
    out.append('</table><h2>All experiments</h2><table><tr><th>#</th><th>status</th><th class="num">metric</th>'
               '<th>verdict</th><th>health</th><th>commit</th><th>description and notes</th></tr>')
    for segment in segments:
        unit = segment["config"].get("metric_unit") or ""
        out += [_experiment_row(segment, row, unit) for row in segment["results"]]
    out.append('</table><p class="muted">Made by autotune %s from %s.</p></body></html>' % (VERSION, LOG_FILE))
    return "\n".join(out) + "\n"


def write_output_file(loop, name, data, flag):
    """Writes a file the user named: never a session file, never renamed over a device
    or a symlink (written through them instead); errors are one line."""
    import fnmatch
    path = os.path.abspath(name)
    real = os.path.realpath(path)
    workdir = os.path.realpath(loop.workdir)
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
    if loop.repo is not None and _is_inside(real, workdir) and os.path.isfile(real):
        exclude_locally(loop.repo, real)  # a report is not part of the next experiment
    return path


def cmd_report(args):
    loop = require_loop(find_loop(lenient=True))
    loaded = load_state(loop)
    entries = read_entries(loop)
    if args.html:
        path = write_output_file(loop, args.html, render_report(loop, loaded, entries).encode("utf-8"),
                                 "--html")
        count = sum(len(s["results"]) for s in segment_rows(entries))
        if args.json:
            print_json({"path": path, "experiments": count})
        else:
            print_text("autotune: wrote %s (%d experiments)" % (path, count))
        return 0
    data = explain_data(loop, loaded)
    segments = segment_rows(entries)
    if args.json:
        print_json({"summary": data, "segments": [{"number": s["number"], "config": s["config"],
                                                "results": len(s["results"])} for s in segments]})
        return 0
    lines = ["# autotune report: %s" % (data.get("name") or "-"), ""]
    lines.append("%s. Next: %s" % (data["why"][:1].upper() + data["why"][1:], data["next_text"]))
    if data["warnings"]:
        lines += [""] + ["Warning: " + w for w in data["warnings"]]
    if data.get("best") is not None:
        lines += ["", "Best: %s (%s)%s" % (
            fmt_metric(data["best"], data.get("unit") or ""), headline_text(data.get("best_pct"), data.get("verified")),
            "" if data.get("verified") else "; not verified: `autotune verify` measures the baseline commit "
            "beside the best one")]
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
        checks = [e for e in entries if e.get("type") == "verify" and e.get("segment") == segment["number"]]
        if checks:
            v = checks[-1]
            lines += ["", "Verified %s: baseline #%s (%s) beside best #%s (%s), %s pairs: %s." % (
                v.get("timestamp"), (v.get("baseline") or {}).get("index"), (v.get("baseline") or {}).get("commit"),
                (v.get("best") or {}).get("index"), (v.get("best") or {}).get("commit"), v.get("pairs"),
                headline_text(v.get("logged_pct"), v))]
        lines.append("")
        lines.append("%d experiments: %d kept, %d discarded, %d crashed or failed checks." % (
            len(segment["results"]), sum(1 for r in segment["results"] if r.get("status") == "keep"),
            sum(1 for r in segment["results"] if r.get("status") == "discard"),
            sum(1 for r in segment["results"] if r.get("status") in CRASH_STATUSES)))
    print_text("\n".join(lines))
    return 0


def cmd_export(args):
    import csv
    import io
    loop = require_loop(find_loop(lenient=True))
    segments = segment_rows(read_entries(loop))
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
    for note in config_notes(loop):
        print_text("autotune: warning: " + note, sys.stderr)  # the data stays clean on stdout
    if args.output:
        write_output_file(loop, args.output, text.encode("utf-8"), "--output")
        print_text("autotune: wrote %d rows to %s" % (len(rows), args.output), sys.stderr)
    else:
        sys.stdout.buffer.write(text.encode("utf-8", "replace"))
    return 0


# --------------------------------------------------------------------- init ----

def _init_arguments(loop, args):
    """`init`'s arguments checked before anything is written: the name, the unit (as
    the scaffold plan settles it) and the --size globs, as (name, unit, sizes)."""
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
    sizes = [text_arg(glob, "--size") for glob in args.size or []]
    return name, check_scaffold_plan(loop, args, unit, sizes), sizes


def _config_entry(loop, args, name, unit, segment, sizes, snapshot, inputs):
    """The segment's config line: the objective, the config sections that judge and
    steer the loop as written, the project commands given, and the fingerprints
    (benchmark files, protected inputs, judge, snapshot) later lines are checked against."""
    entry = {"type": "config", "name": name, "metric_name": args.metric, "metric_unit": unit,
             "direction": args.direction, "segment": segment, "mode": loop.settings.mode,
             "objective": {"primaryMetric": args.metric, "direction": args.direction}}
    for section in ("health", "recovery", "budget", "evaluator", "guardrails", "holdout"):
        if section in loop.settings.raw:
            entry[section] = loop.settings.raw[section]
    if loop.settings.max_iterations:
        entry["maxIterations"] = loop.settings.max_iterations
    commands = {key: value for key, value in (("benchmark", args.benchmark), ("checks", args.checks),
                                              ("size", sizes)) if value}
    if commands:  # what setup-permissions --with-project-commands allows
        entry["commands"] = commands
    entry.update(timestamp=utc_now(), session_id=os.environ.get("CLAUDE_CODE_SESSION_ID"),
                 hashes=file_hashes(loop), inputs=inputs,
                 judge=judge_of(loop.settings.raw), snapshot=snapshot, version=VERSION)
    return entry


def _scaffold_answer(loop, repo, args, scaffolded, sizes):
    """What `init --scaffold` adds to the answer: the files it wrote, those it left as
    they were (scaffolding never overwrites), the proposed project commands, and a
    --size glob git does not ignore."""
    result = {"scaffolded": scaffolded}
    skipped = [n for n in (BENCH_FILE, CHECKS_FILE) if n not in scaffolded and (
        args.benchmark or sizes if n == BENCH_FILE else args.checks)]
    if skipped:
        result["kept_existing"] = skipped
        result["note"] = ("%s already existed, so --benchmark/--checks/--size did not change %s "
                          "(scaffolding never overwrites)" % (" and ".join(skipped),
                                                              "them" if len(skipped) > 1 else "it"))
    result.update(proposal_answer(loop, args, sizes))
    unignored = [glob for glob in sizes if not ignored_by_git(repo, loop.workdir, glob)]
    if unignored:
        result["size_note"] = ("git does not ignore %s: the build output would look like the "
                               "experiment's change (a keep commits it); add its directory to "
                               ".gitignore" % ", ".join(unignored))
    return result


def _protect_hint(loop):
    """Without a "protect" list: the usual data and test directories this project has,
    proposed for one (an experiment could otherwise change them), or {}."""
    if loop.settings.protect:
        return {}
    proposal = [g for g in ("tests/**", "test/**", "benchmark/data/**", "bench/data/**",
                            "data/**", "fixtures/**", "testdata/**")
                if os.path.isdir(loop.path(g[:-3]))]
    if not proposal:
        return {}
    return {"suggest_protect": proposal,
            "hint": ("Protect the benchmark's data and the correctness tests so no "
                     "experiment can change them: add \"protect\": %s to %s, then run "
                     "init again." % (json.dumps(proposal), CONFIG_FILE))}


def cmd_init(args):
    loop = find_loop()
    name, unit, sizes = _init_arguments(loop, args)
    repo = require_repo(loop)
    refuse_pending_swap(loop)
    created_log = not os.path.exists(loop.log_path)
    scaffolded = scaffold(loop, name, args.metric, unit, args.direction, args.benchmark,
                          args.checks, sizes) if args.scaffold else []
    try:
        with LogLock(loop, create=True) as lock:
            loaded = load_state(loop)
            torn_tail_error(loop, loaded)
            state = loaded.state
            reinit = state.config is not None
            segment = state.segment if (reinit and state.n_exp == 0) else state.segment + 1
            exclude_session_files(loop)  # out of `git status`; never the user's .gitignore
            snapshot = {"tree": snapshot_tree(loop), "head": repo.head()}
            if loop.oversized:
                snapshot["large"] = large_record(loop)
            anchor_snapshot(loop, snapshot["tree"])
            warnings = init_warnings(loop, snapshot)
            inputs = input_hashes(loop)
            entry = _config_entry(loop, args, name, unit, segment, sizes, snapshot, inputs)
            append_entries(lock, loop, loaded, [entry])
            from array import array
            save_values(loop, state, array("d"))
            drop_measurement(loop)
    except BaseException:
        if created_log and os.path.exists(loop.log_path) and os.path.getsize(loop.log_path) == 0:
            os.unlink(loop.log_path)
        raise
    result = {"status": "initialized", "name": name, "metric": args.metric, "unit": unit,
              "direction": args.direction, "segment": segment, "reinit": reinit,
              "path": loop.workdir, "max_exp": loop.settings.max_iterations,
              "mode": state.mode, "branch": repo.branch(), "commit": (snapshot["head"] or "")[:7] or None}
    result["protected"] = sorted(inputs)
    if args.scaffold:
        result.update(_scaffold_answer(loop, repo, args, scaffolded, sizes))
    result.update(_protect_hint(loop))
    if not os.path.isfile(loop.path(BENCH_FILE)):
        warnings.insert(0, "%s does not exist yet; `run` needs it (or --command)." % BENCH_FILE)
    elif not snapshot["head"]:
        warnings.insert(0, "the repository has no commit yet: the first keep becomes its first commit")
    if warnings:
        result["warning"] = "; ".join(warnings)
    if config_notes(loop):
        result["warnings"] = config_notes(loop)
    print_json(result)


def init_warnings(loop, snapshot):
    """What a new user should know before the first experiment: their own uncommitted
    edits (a keep separates them from the experiment's, but not on the same lines), and
    files too large to snapshot."""
    warnings = []
    head = snapshot["head"]
    if head:
        dirty = [c.name for c in diff_trees(loop, head_tree(loop.repo, head), snapshot["tree"],
                                            tracked_only=True)]
        if dirty:
            warnings.append(
                "you have uncommitted changes in %s%s: they stay yours (a keep commits only the "
                "experiment's hunks), but an experiment that edits the same lines cannot be kept; "
                "commit or stash them first for the cleanest history" % (
                    ", ".join(dirty[:10]), " and %d more" % (len(dirty) - 10) if len(dirty) > 10 else ""))
    if loop.oversized:
        big = sorted(loop.oversized.items())
        warnings.append(
            "%s %s over the snapshot size limit (git.maxFileMB = %s): recorded by size and time, "
            "never copied into .git, committed or reverted by autotune" % (
                ", ".join("%s (%s)" % (os.fsdecode(p), _size_text(v[0])) for p, v in big[:10]),
                "is" if len(big) == 1 else "are", _fmt(loop.settings.max_file_bytes / float(1 << 20))))
    return warnings


def _size_text(size):
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= scale:
            return "%.1f %s" % (size / float(scale), unit)
    return "%d bytes" % size


_TIME_UNITS = {"s": 1.0, "sec": 1.0, "seconds": 1.0, "ms": 1e3, "us": 1e6, "µs": 1e6, "ns": 1e9}
_SIZE_UNITS = {"b": 1, "byte": 1, "bytes": 1, "kb": 1000, "kib": 1024, "mb": 1000000, "mib": 1048576}
_SIZE_UNIT_NAMES = {1: "B", 1000: "KB", 1024: "KiB", 1000000: "MB", 1048576: "MiB"}


def time_scale(metric, unit):
    """Seconds -> the metric's time unit (from --unit, else a _ms or _s suffix), or None."""
    return _TIME_UNITS.get(unit or ("ms" if metric.endswith("_ms") else "s" if metric.endswith("_s") else ""))


def size_scale(metric, unit):
    """Bytes per unit of a size metric (from --unit, else a _kb/_kib/... suffix; bytes by
    default), or None for a unit that is not a size."""
    if unit:
        return _SIZE_UNITS.get(unit.lower())
    return _SIZE_UNITS.get(metric.lower().rsplit("_", 1)[-1] if "_" in metric else "", 1)


def check_scaffold_plan(loop, args, unit, sizes):
    """Refuses a scaffold that could not print the metric; returns the unit to record
    (a size metric without --unit is in bytes, or in its suffix's unit)."""
    if sizes and not args.scaffold:
        fail("bad_arguments", "--size writes autotune.sh: add --scaffold.")
    if not args.scaffold or os.path.exists(loop.path(BENCH_FILE)):
        return unit
    if sizes:
        scale = size_scale(args.metric, unit)
        if scale is None:
            fail("bad_unit", "--size measures bytes, so --unit must be a size (B, KB, KiB, MB or "
                 "MiB), got %s." % json.dumps(unit))
        return unit or _SIZE_UNIT_NAMES[scale]
    if args.benchmark and time_scale(args.metric, unit) is None:
        fail("benchmark_unit", "--benchmark CMD makes autotune.sh time CMD, which needs a time unit "
             "(--unit s, ms, us or ns, or a metric ending in _s or _ms); %s%s is not a time. Either "
             "measure file sizes with --size 'dist/**/*.js' (CMD then runs first, as the build), or "
             "write %s yourself so that it runs the workload and prints the line `METRIC %s=<number>` "
             "(secondary metrics are more METRIC lines; a non-zero exit marks a failure)." % (
                 args.metric, (" (%s)" % unit) if unit else "", BENCH_FILE, args.metric))
    return unit


def proposal_answer(loop, args, sizes):
    """The project's own commands, proposed in init's answer (never used silently)."""
    report = project_report(loop)
    answer = {"proposed": report["proposed"], "tools": report["tools"]}
    if any(report["proposed"].values()):
        answer["proposal_note"] = (
            "commands found in the project's files (each with its `from`); autotune runs none of "
            "them on its own: %s" % (
                "choose the benchmark and checks and pass them as --benchmark / --checks / --size, "
                "or write them into %s" % BENCH_FILE if not (args.benchmark or sizes) else
                "%s runs only what you passed" % BENCH_FILE))
    return answer


def size_benchmark_body(metric, scale, patterns, build):
    """The body of a size benchmark: runs the build (if any), then prints the total gzip
    (level 9) size of the matching files as the primary metric, raw bytes and brotli
    bytes (where a brotli module or CLI exists) as secondary ones. Deterministic: gzip
    without a timestamp, files in sorted order. Values reach the code as arguments,
    shell-quoted, never pasted into it."""
    return (
        "METRIC=%s\nBYTES_PER_UNIT=%s\nBUILD=%s  # runs first; empty for none\n"
        "python3 - \"$METRIC\" \"$BYTES_PER_UNIT\" \"$BUILD\" %s <<'PY'\n"
        "import glob, gzip, os, shutil, subprocess, sys\n"
        "metric, scale, build, patterns = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]\n"
        "if build:\n"
        "    done = subprocess.run(build, shell=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)\n"
        "    if done.returncode != 0:  # show why: the tail of the build's output\n"
        "        print(\"\\n\".join(done.stdout.decode(\"utf-8\", \"replace\").splitlines()[-40:]))\n"
        "        sys.exit(\"the build failed with exit code %%d\" %% done.returncode)\n"
        "files = sorted({path for pattern in patterns for path in glob.glob(pattern, recursive=True)\n"
        "                if os.path.isfile(path)})\n"
        "if not files:\n"
        "    sys.exit(\"no file matches %%s: did the build write them?\" %% \" \".join(patterns))\n"
        "try:\n"
        "    import brotli\n"
        "    def brotli_size(path, data):\n"
        "        return len(brotli.compress(data, quality=11))\n"
        "except ImportError:\n"
        "    tool = shutil.which(\"brotli\")\n"
        "    def brotli_size(path, data):\n"
        "        if tool is None:\n"
        "            return None\n"
        "        out = subprocess.run([tool, \"-c\", \"-q\", \"11\", \"--\", path], stdout=subprocess.PIPE)\n"
        "        return len(out.stdout) if out.returncode == 0 else None\n"
        "raw = gz = br = 0\n"
        "for path in files:\n"
        "    with open(path, \"rb\") as handle:\n"
        "        data = handle.read()\n"
        "    raw += len(data)\n"
        "    gz += len(gzip.compress(data, compresslevel=9, mtime=0))\n"
        "    size = brotli_size(path, data) if br is not None else None\n"
        "    br = None if size is None else br + size\n"
        "print(\"METRIC %%s=%%s\" %% (metric, gz if scale == 1 else \"%%.3f\" %% (gz / scale)))\n"
        "if metric != \"raw_bytes\":\n"
        "    print(\"METRIC raw_bytes=%%d\" %% raw)\n"
        "if br is not None and metric != \"brotli_bytes\":\n"
        "    print(\"METRIC brotli_bytes=%%d\" %% br)\n"
        "print(\"%%d files, %%d bytes, %%d gzipped\" %% (len(files), raw, gz), file=sys.stderr)\n"
        "PY\n") % (_shell_quote(metric), scale, _shell_quote(build or ""),
                   " ".join(_shell_quote(p) for p in patterns))


def scaffold(loop, name, metric, unit, direction, workload, checks, sizes=None):
    """Writes the session templates that do not exist yet; never overwrites a file.
    Values are quoted where they land (shlex.quote in shell, repr in Python, JSON in
    comments), never pasted into code; only --benchmark and --checks, which are the
    user's commands, are written as commands."""
    import shlex
    written = []

    def write(filename, text, executable=False):
        path = loop.path(filename)
        if os.path.exists(path):
            return
        with open(path, "x", encoding="utf-8") as handle:
            handle.write(text)
        if executable:
            os.chmod(path, 0o755)
        written.append(filename)

    scale = time_scale(metric, unit)
    header = ("#!/usr/bin/env bash\n"
              "# autotune benchmark for %s.\n"
              "# Prints `METRIC %s=<number>` (%s is better); other METRIC lines are secondary\n"
              "# metrics. Edit it until the baseline is logged; from then on it is fixed for the\n"
              "# segment (`autotune init` again starts a new segment with a changed benchmark).\n"
              "set -euo pipefail\ncd \"$(dirname \"$0\")\"\n\n") % (
                  json.dumps(name, ensure_ascii=False).translate(_JSON_C1), metric, direction)
    if sizes:
        body = size_benchmark_body(metric, size_scale(metric, unit), sizes, workload)
    elif workload and scale:
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


def cmd_detect(args):
    """What autotune reads from the project, before any session: its toolchains (with
    versions), lockfiles, the command that syncs its dependencies, and its own build, test
    and benchmark commands to propose in the setup questions. Writes nothing but the
    private version cache (inside .git)."""
    loop = find_loop(lenient=True)
    report = project_report(loop)
    tools = report["tools"]
    versions = tool_versions(loop, tools, benchmark_env(loop.settings.env), project_files(loop))
    deps = [name for name in report["lockfiles"] + sorted(project_files(loop).names() & set(MANIFESTS))
            if "/" not in name]
    print_json({"path": loop.workdir, "tools": versions, "lockfiles": report["lockfiles"],
            "sync": sync_commands(loop.workdir, deps), "proposed": report["proposed"],
            "note": "proposals read from the project's files (each with its `from`); nothing was run "
                    "but the tools' --version"})


# ---------------------------------------------------------------------- run ----

def cmd_run(args):
    loop = require_loop(find_loop())
    loaded = load_state(loop)
    state = loaded.state
    check_may_run(loop, state, time.time())
    argv, shell, shown = benchmark_command(loop, args.command)
    hashes = file_hashes(loop)  # read once: checked now, recorded with the measurement
    check_integrity(loop, state, hashes)
    check_judge(loop, state)
    inputs = input_hashes(loop)
    if state.n_exp:
        check_inputs(loop, state, inputs)
    with BenchmarkLock(loop, shown):
        measure(args, loop, state, argv, shell, shown, hashes, inputs)


class RunContext(object):
    """What one `run` measures with: its settings, command, environment and the sweep
    that kills what its benchmarks leave behind (set once the sweep starts)."""

    def __init__(self, args, loop, state, argv, shell, shown):
        settings = loop.settings
        self.loop, self.state, self.settings = loop, state, settings
        self.argv, self.shell, self.shown = argv, shell, shown
        self.repeat = args.repeat if args.repeat is not None else settings.repeat
        self.timeout = args.timeout if args.timeout is not None else settings.timeout
        self.checks_timeout = args.checks_timeout if args.checks_timeout is not None else settings.checks_timeout
        self.pname, self.direction = require_metric_name(state), state.config.get("direction", "lower")
        self.head = loop.repo.head() if loop.repo else None
        self.env = benchmark_env(settings.env, AUTOTUNE_SEGMENT=str(state.segment),
                                 AUTOTUNE_RUN=str(state.n_exp + 1))
        self.sweep = None

    def runner(self, gate=None, progress=None, side=None):
        return SampleRunner(self.argv, self.shell, self.loop.workdir, self.timeout, self.env, self.pname,
                            self.sweep, gate, progress, side)


def run_prelude(ctx):
    """Before any execution: the config notes, a recovered swap, the tree to measure and
    the warnings about it. Returns (warnings, tree_before)."""
    loop, state = ctx.loop, ctx.state
    warnings = config_notes(loop)
    if state.snapshot and state.snapshot.get("head") and ctx.head != state.snapshot.get("head"):
        warnings.append("HEAD moved outside autotune since the last logged result; `log` will "
                        "refuse to commit or revert until you check it (see `autotune doctor`).")
    if not loop.repo:
        return warnings, None
    with LogLock(loop):
        ensure_excluded(loop)
        if recover_swap(loop):
            warnings.append("a killed `run` had left the kept code in place of the experiment; "
                            "the experiment's files were restored first")
        remove_stale_copy(loop)
        tree_before = snapshot_tree(loop)
    large = large_changes((state.snapshot or {}).get("large"), large_record(loop))
    if large:
        warnings.append("%s changed but %s over the snapshot size limit (git.maxFileMB): "
                        "autotune neither commits nor reverts %s" % (
                            ", ".join(large[:10]), "is" if len(large) == 1 else "are",
                            "it" if len(large) == 1 else "them"))
    if state.snapshot and tree_before == state.snapshot.get("tree") and state.n_exp:
        warnings.append("the working tree has no change since the last logged result, so "
                        "this run measures the kept code")
    return warnings, tree_before


def run_looks(ctx, reference, deterministic, warnings):
    """The interleaved plan (see interleaved_looks), or None with a warning when the kept
    code cannot be measured beside the candidate."""
    looks = interleaved_looks(reference, ctx.repeat, ctx.settings, deterministic)
    if looks is not None:
        why_not = interleave_obstacle(ctx.loop, ctx.state, ctx.head)
        if why_not:
            warnings.append("judged against the kept code's earlier samples, not measured beside it: "
                            "%s; a change of the machine's speed since then decides the verdict" % why_not)
            looks = None
    return looks


def sample_interleaved(ctx, measurement, runner, gate, looks, tree_before, progress):
    """The kept code and the candidate, alternately (collect_pairs), with the experiment's
    files swapped in place. Fills measurement.samples and .sample_metrics; returns (judged
    verdict and evidence or None, the paired record, the swap, notes)."""
    swap = Swap(ctx.loop, ctx.state.snapshot["tree"], tree_before)
    kept_runner = ctx.runner(progress=progress, side="best")
    runner.side = "candidate"
    sides = {"best": kept_runner, "candidate": runner}

    def interleaved(side, number):
        swap.to(side)
        return sides[side].take(number)
    take = interleaved
    copy = duet_copy(ctx, swap, measurement.warnings)
    if copy is not None:
        kept_runner = duet_runner(ctx, copy, progress)
        take = DuetTake({"best": kept_runner, "candidate": runner})
    warmup, notes = None, []
    if gate.path:
        # fail fast: with checks, the candidate's first execution is a warm-up (not
        # judged: pairs keep their random order) after which the checks run, on the
        # candidate's own files; a failure ends the run before the kept code runs
        warmup = runner.take(0)
    try:
        if gate.path and (warmup is None or runner.halted):
            measurement.samples, measurement.sample_metrics = ([warmup[0]], [warmup[1]]) if warmup else ([], [])
            best_samples, best_metrics, orders, verdict, evidence, alpha = [], [], [], None, None, None
        else:
            (measurement.samples, measurement.sample_metrics, best_samples, best_metrics, orders, verdict, evidence, notes,
             alpha) = collect_pairs(take, looks, ctx.direction, ctx.settings, pair_order_rng())
            if copy is not None and kept_runner.problem and not runner.problem and not best_samples:
                measurement.warnings.append(
                    "duet mode: the kept code failed when run from a copy of the tree (%s), so the "
                    "benchmark cannot run from a copy; measured interleaved instead" % kept_runner.problem)
                copy.close()
                copy, kept_runner = None, sides["best"]
                (measurement.samples, measurement.sample_metrics, best_samples, best_metrics, orders, verdict, evidence,
                 notes, alpha) = collect_pairs(interleaved, looks,
                                               ctx.direction, ctx.settings, pair_order_rng())
    finally:
        swap.close()
        if copy is not None:
            ctx.sweep.sweep()   # an interrupted pair's twin still runs in the copy: stop it first
            copy.close()
        progress.done()
    if warmup is not None:
        notes = ["a warm-up execution of the candidate ran the checks first"] + notes
    if kept_runner.problem:
        fail("kept_code_failed", "The kept code failed while it was measured beside your change "
             "(%s), so the change cannot be judged; nothing was recorded and your files are as "
             "they were. Output tail: %s. Check the environment with `autotune rebaseline`, or "
             "set evaluator.mode to \"reference\" in %s to judge against earlier samples." % (
                 kept_runner.problem, _one_line(kept_runner.last.output, 300), CONFIG_FILE))
    paired = {"best": [_round(v) for v in best_samples],
              "order": "".join(o[0] for o in orders) if copy is None else "D" * len(orders),
              "duet": copy is not None,
              "swapped": swap.paths[:50], "alpha": alpha, "warmup": _round(warmup[0]) if warmup else None,
              "best_metrics": median_metrics(best_metrics, exclude=ctx.pname)}
    return ((verdict, evidence) if verdict is not None else None), paired, swap, notes


def duet_obstacle(cpus, load_1m, command_text, workdir, force=False):
    """Why duet mode cannot run here (the run falls back to interleaved), or None: it
    needs DUET_SPARE_CORES idle cores (both sides run at once; with fewer, the twins
    compete with each other and with the rest of the machine), and a benchmark that can
    run from a copy of the tree (a command naming the tree's absolute path would run
    the user's tree twice). `force` (AUTOTUNE_DUET_FORCE=1, for measuring duet on a
    small machine) skips the spare-core rule, never the two-CPU one."""
    if command_text and workdir and workdir in command_text:
        return "the benchmark (its command or script) names the tree's absolute path, so it cannot run from a copy"
    if not cpus or cpus < 2:
        return "the machine has %s CPU%s; both sides must run at once" % (cpus or 1, "" if cpus == 2 else "s")
    spare = cpus - (load_1m or 0.0)
    if spare < DUET_SPARE_CORES and not force:
        return "only %s of %d cores are idle (load average %s); duet mode needs %d" % (
            _fmt(round(max(spare, 0.0), 1)), cpus, _fmt(load_1m), DUET_SPARE_CORES)
    return None


def duet_copy(ctx, swap, warnings):
    """Duet mode (evaluator.mode "duet"): the kept code's copy of the tree, or None (with
    a warning saying why) when the run measures interleaved instead."""
    if ctx.settings.eval_mode != "duet":
        return None
    facts = load_average() or {}
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else facts.get("cpus")
    text = ctx.shown if ctx.shell else ""
    if not ctx.shell:
        try:
            with open(ctx.loop.path(BENCH_FILE), "rb") as handle:
                text = handle.read(1 << 20).decode("utf-8", "replace")
        except OSError:
            text = ""
    why = duet_obstacle(cpus, facts.get("1m"), text, ctx.loop.workdir,
                        os.environ.get("AUTOTUNE_DUET_FORCE") == "1")
    if why is None:
        try:
            return DuetCopy(ctx.loop, swap.best_tree, swap.changes)
        except (OSError, GitError) as exc:
            why = "the copy of the tree could not be made (%s)" % _one_line(str(exc), 200)
    warnings.append("duet mode is off for this run: %s; measured interleaved instead" % why)
    return None


def duet_runner(ctx, copy, progress):
    """The kept code's SampleRunner in duet mode: the benchmark started in the copy."""
    argv = ctx.argv if ctx.shell else [copy.where(word) if os.path.isabs(word) else word for word in ctx.argv]
    return SampleRunner(argv, ctx.shell, copy.where(ctx.loop.workdir), ctx.timeout, ctx.env, ctx.pname,
                        ctx.sweep, None, progress, "best")


def take_outcome(measurement, runner, gate):
    """What the candidate's last execution and the checks say: exit, output, pass/crash,
    the medians of its samples."""
    outcome = runner.last
    measurement.exit, measurement.timeout, measurement.reason, measurement.dur = outcome.exit, outcome.timeout, runner.problem, round(runner.dur, 3)
    measurement.output = outcome.error or outcome.output
    measurement.passed = runner.problem is None
    measurement.crashed = not measurement.passed
    if runner.dropped:
        measurement.warnings.append("the benchmark printed %d METRIC line%s with names beyond the first %d "
                          "secondary metrics; %s ignored (autotune keeps at most %d names)" % (
                              runner.dropped, "" if runner.dropped == 1 else "s", MAX_METRIC_NAMES,
                              "it was" if runner.dropped == 1 else "they were", MAX_METRIC_NAMES))
    measurement.checks, measurement.chk_out, checks_timed_out = gate.result()
    if measurement.passed:
        measurement.primary = median(measurement.samples)
        measurement.metrics = median_metrics(measurement.sample_metrics, exclude=measurement.pname)
    return checks_timed_out


def judge_run(ctx, measurement, basis, paired, swap, experiment, judged):
    """The verdict, the suggested status and, for a keep, the holdout. `basis` is
    (reference samples, reference info, noise MAD, plan)."""
    state, settings = ctx.state, ctx.settings
    reference, reference_info, noise_mad, plan = basis
    baseline_metrics = paired["best_metrics"] if paired else (
        (state.reference or {}).get("metrics") or (state.baseline or {}).get("metrics"))
    measurement.verdict, measurement.evidence, measurement.guardrails = verdict_of(measurement, reference, reference_info, ctx.direction, settings,
                                                     noise_mad, plan.alpha, baseline_metrics, judged)
    measurement.suggested_status, measurement.status_rule = suggested_status(
        measurement.verdict, *(experiment.lines() if measurement.verdict in EQUAL_VERDICTS else (None, None)))
    if measurement.suggested_status != "keep" or not os.path.isfile(ctx.loop.path(HOLDOUT_FILE)):
        return
    if paired:
        measurement.holdout, holdout_ref = holdout_pairs(ctx.loop, ctx.pname, ctx.timeout, ctx.env, ctx.sweep, swap)
    else:
        measurement.holdout = run_holdout(ctx.loop, ctx.pname, ctx.timeout, ctx.env, ctx.sweep)
        holdout_ref = (state.reference or {}).get("holdout")
        if not _is_number(holdout_ref):
            holdout_ref = (state.baseline or {}).get("holdout")
    measurement.verdict, measurement.holdout = holdout_verdict(measurement.verdict, measurement.holdout, holdout_ref, ctx.direction,
                                           settings.holdout_tolerance_pct)
    if measurement.verdict == "holdout_failed":
        measurement.suggested_status, measurement.status_rule = suggested_status(measurement.verdict)


def note_window(measurement, paired, plan, looks, settings):
    """The machine during the pairs: the load average, a too-noisy or too-busy verdict
    with its cause and remedies, the per-side contention."""
    if not paired:
        return
    paired["load"] = measurement.load
    measurement.paired = paired
    if measurement.evidence is None:
        return
    too_noisy = noise_verdict(measurement.evidence, plan.alpha, looks, settings, measurement.load)
    if too_noisy:
        measurement.evidence["too_noisy"] = too_noisy
        measurement.warnings.append(too_noisy["message"])
    busy = busy_verdict(measurement.verdict, measurement.evidence, looks)
    if busy:
        measurement.evidence["contention"]["busy"] = busy
        measurement.warnings.append(busy)
    if measurement.evidence.get("contention"):
        paired["contention"] = measurement.evidence["contention"]
    measurement.evidence["interleaved"] = {"best": paired["best"], "order": paired["order"], "load": measurement.load}


def diagnose_run(ctx, measurement, experiment, checks_timed_out):
    """A failure's diagnosis, the toolchain drift and protected inputs the benchmark
    changed; the environment recorded with the measurement."""
    measurement.env = machine_facts(ctx.head, ctx.loop, ctx.env)
    measurement.env["load_run"] = measurement.load    # the load average before and after this run's executions
    if measurement.crashed or measurement.checks is False:
        kind = (("timeout" if measurement.timeout else "crash") if measurement.crashed
                else "checks_timeout" if checks_timed_out else "checks_failed")
        measurement.diagnosis = diagnose_crash(measurement.output if measurement.crashed else measurement.chk_out, experiment.names(), kind,
                                     experiment.roots(), ctx.timeout if measurement.crashed else ctx.checks_timeout,
                                     ((measurement.env.get("load") or [None])[0], measurement.env.get("cpus")))
    drift = toolchain_warning(toolchain_changes(ctx.state.toolchain, toolchain_of(measurement.env)))
    if drift:
        measurement.warnings.append(drift)
    after = input_hashes(ctx.loop)
    touched = sorted(k for k in set(after) | set(measurement.inputs) if after.get(k) != measurement.inputs.get(k))
    if touched:
        measurement.inputs = after
        measurement.warnings.append("the benchmark changed protected inputs (%s); the next run will be "
                          "refused until they are put back" % ", ".join(touched[:10]))


def record_measurement(loop, measurement, tree_before):
    """Appends the measurement line to the log (what `log` records) and caches run.json."""
    repo = loop.repo
    with LogLock(loop) as lock:
        if repo:
            measurement.tree = snapshot_tree(loop)
        loaded = load_state(loop)
        torn_tail_error(loop, loaded)
        if loaded.state.segment == measurement.segment and loaded.state.config is not None:
            append_entries(lock, loop, loaded, [measurement_entry(measurement)])
        else:
            measurement.warnings.append("a new segment started while this run measured; it was not recorded")
    if repo and tree_before and measurement.tree != tree_before:
        created = [c.name for c in diff_trees(loop, tree_before, measurement.tree)]
        measurement.warnings.append("the benchmark changed files that git does not ignore (%s); a keep "
                          "would commit them and a discard removes them: add them to "
                          ".gitignore" % ", ".join(created[:10]))
    save_measurement(loop, measurement)


def run_answer(measurement, paired):
    """The JSON `run` prints."""
    samples = measurement.samples
    result = {"exit": measurement.exit, "dur": measurement.dur, "passed": measurement.passed, "crashed": measurement.crashed,
              "timeout": measurement.timeout, "metrics": measurement.metrics, "primary": _round(measurement.primary),
              "pname": measurement.pname, "output": measurement.output, "checks": measurement.checks, "chk_out": measurement.chk_out,
              "samples": [_round(s) for s in samples], "n": len(samples), "sampling": measurement.sampling,
              "verdict": measurement.verdict, "suggested_status": measurement.suggested_status, "status_rule": measurement.status_rule,
              "evidence": measurement.evidence,
              "guardrails": measurement.guardrails, "holdout": measurement.holdout, "reason": measurement.reason,
              "command": measurement.command, "env": measurement.env, "load": measurement.load,
              "interleaved": paired,
              "executions": len(samples) + (len(paired["best"]) + (paired["warmup"] is not None) if paired else 0)}
    if measurement.diagnosis:
        result["diagnosis"] = measurement.diagnosis
    if measurement.reference:
        result["reference"] = {k: measurement.reference[k] for k in ("source", "commit", "samples", "n", "deterministic")}
    if measurement.warnings:
        result["warnings"] = measurement.warnings
    return result


def measure(args, loop, state, argv, shell, shown, hashes, inputs):
    """`run` under the benchmark lock: samples, checks, holdout, verdict; the measurement
    is appended to the log (what `log` records) and cached in run.json (for display).
    A noisy benchmark is measured interleaved: the kept code beside the candidate."""
    ctx = RunContext(args, loop, state, argv, shell, shown)
    settings = loop.settings
    warnings, tree_before = run_prelude(ctx)
    reference_info = state.reference or {}
    reference = reference_info.get("samples") or None
    deterministic = reference_info.get("deterministic")
    looks = run_looks(ctx, reference, deterministic, warnings)
    # the segment's MAD is the spread of its results (progress included): a fallback
    # for the adaptive default's small references only, never for a fixed repeat
    noise_mad = (state.confidence or {}).get("noise_mad") if ctx.repeat == "auto" else None
    measurement = Measurement(segment=state.segment, timestamp=utc_now(), command=shown, pname=ctx.pname,
                    warnings=warnings, head=ctx.head, hashes=hashes, inputs=inputs,
                    judge=judge_of(settings.raw))
    experiment = ExperimentFiles(loop, (state.snapshot or {}).get("tree"), tree_before)
    load_before = load_average()
    judged = paired = swap = None
    notes = []
    progress = Progress("run")
    with ProcessSweep() as ctx.sweep:
        if looks is None and tree_before and reference_to_measure(state.reference, ctx.repeat):
            kept, problem = measure_kept_code(loop, state, tree_before, ctx.head, argv, shell, ctx.timeout,
                                              ctx.env, ctx.pname, ctx.direction, settings, ctx.sweep)
            if kept is not None:
                measurement.reference = kept
                reference, deterministic, noise_mad = kept["samples"], kept["deterministic"], None
                reference_info = {"source": kept["source"], "deterministic": deterministic}
            else:
                warnings.append("the kept code could not be measured (%s), so the verdict compares "
                                "with the best's one recorded value" % problem)
        plan = sampling_plan(reference, ctx.repeat, settings, deterministic)
        # the checks run after the candidate's first passing sample (fail fast), never on the
        # kept code: in the interleaved loop the candidate is in place after its own sample
        gate = ChecksGate(loop.path(CHECKS_FILE), loop.workdir, ctx.checks_timeout, ctx.env, ctx.sweep)
        runner = ctx.runner(gate, progress)
        if looks is None:
            measurement.samples, measurement.sample_metrics, notes = collect_samples(
                runner.take, plan, reference, ctx.direction, settings, noise_mad, deterministic)
        else:
            judged, paired, swap, notes = sample_interleaved(ctx, measurement, runner, gate, looks, tree_before, progress)
            if judged is not None:
                plan.alpha = paired["alpha"]
        checks_timed_out = take_outcome(measurement, runner, gate)
        judge_run(ctx, measurement, (reference, reference_info, noise_mad, plan), paired, swap, experiment, judged)
    measurement.load = {"before": load_before, "after": load_average()}
    note_window(measurement, paired, plan, looks, settings)
    measurement.sampling = describe_pairs(paired, measurement, notes) if paired else describe_sampling(
        plan, measurement.samples, notes, measurement, reference, settings.max_samples)
    if measurement.reference:
        measurement.sampling = "%s; first the kept code: %s" % (measurement.sampling, measurement.reference["why"])
    diagnose_run(ctx, measurement, experiment, checks_timed_out)
    record_measurement(loop, measurement, tree_before)
    print_json(run_answer(measurement, paired))


def busy_verdict(verdict, evidence, looks):
    """`within_noise` because so many pairs saw unequal load on their two sides (and were
    set aside) that the cap came before enough pairs could be judged: the cause and what
    to do, or None."""
    load = (evidence or {}).get("contention") or {}
    if verdict != "within_noise" or not load.get("unequal_pairs") or not looks:
        return None
    if load.get("pairs", 0) < 2 * looks[-1][0] or load.get("judged", 0) >= looks[-1][0]:
        return None   # the cap was not reached, or enough pairs were judged: the data decided
    sides = ""
    best, cand = load.get("best") or {}, load.get("candidate") or {}
    if best.get("others_cores") is not None and cand.get("others_cores") is not None:
        sides = (" (other processes used a median %s cores during the kept code's executions and %s "
                 "during the candidate's, up to %s and %s, on %s CPUs)" % (
                     _fmt(best["others_cores"]), _fmt(cand["others_cores"]), _fmt(best["max_others_cores"]),
                     _fmt(cand["max_others_cores"]), best.get("cpus") or cand.get("cpus")))
    return ("the machine was busy: %d of %d pairs saw unequal load on their two sides%s and were set "
            "aside, leaving %d to judge, too few for a decision within the sample cap. What to do: stop "
            "what else runs on this machine (builds, other benchmarks, a second loop) or run when it is "
            "quiet, then `autotune run` again; or raise evaluator.maxSamples." % (
                load["unequal_pairs"], load["pairs"], sides, load.get("judged", 0)))


def measure_kept_code(loop, state, current, head, argv, shell, timeout, env, pname, direction,
                      settings, sweep):
    """Samples of the kept code, measured now with the experiment's files swapped out, for
    a best that has no samples (reference_to_measure). Returns (reference, None), or
    (None, why) when the kept code did not run."""
    snap = (state.snapshot or {}).get("tree")
    base = snap or head_tree(loop.repo, head)
    runner = SampleRunner(argv, shell, loop.workdir, timeout, dict(env, AUTOTUNE_REFERENCE="1"),
                          pname, sweep)
    swap = Swap(loop, base, current, tracked_only=snap is None)
    try:
        swap.to("best")
        samples, sample_metrics, _ = collect_samples(runner.take, sampling_plan(None, "auto", settings),
                                                     None, direction, settings)
    finally:
        swap.close()
    if runner.problem:
        return None, runner.problem
    commit = head[:7] if head else None
    same = is_deterministic(samples)
    return {"source": "kept code (%s) measured by run" % (commit or "no commit"), "commit": commit,
            "metric": _round(median(samples)), "samples": [_round(x) for x in samples], "n": len(samples),
            "metrics": median_metrics(sample_metrics, exclude=pname), "deterministic": same,
            "why": "the best was one recorded number without samples, so the kept code%s was measured "
                   "%d times (%s)" % (" (%s)" % commit if commit else "", len(samples),
                                      "identical: deterministic" if same else "they differ: noisy")}, None


def run_holdout(loop, pname, timeout, env, sweep):
    """Runs autotune.holdout.sh once; its judgement is verdict_of's."""
    run = run_process(script_argv(loop.path(HOLDOUT_FILE)), loop.workdir, timeout, env=env,
                      tail_lines=CHECKS_TAIL_LINES, tail_bytes=CHECKS_TAIL_BYTES, sweep=sweep,
                      primary=pname)
    problem = crash_reason(run, pname, timeout)
    holdout = {"value": run.metrics.get(pname), "reference": None, "ok": problem is None,
               "tolerance_pct": loop.settings.holdout_tolerance_pct, "output": run.output}
    if problem:
        holdout["reason"] = "holdout " + problem
    return holdout


def holdout_pairs(loop, pname, timeout, env, sweep, swap, pairs=HOLDOUT_PAIRS):
    """The holdout judged like the primary metric: the kept code's holdout and the
    candidate's, alternately in the same window (order at random). Returns (holdout,
    the kept code's median) for holdout_verdict."""
    rng = pair_order_rng()
    values = {"best": [], "candidate": []}
    holdout = None
    try:
        for _ in range(pairs):
            for side in (("best", "candidate") if rng.random() < 0.5 else ("candidate", "best")):
                swap.to(side)
                one = run_holdout(loop, pname, timeout, env, sweep)
                if one.get("reason"):
                    if side == "best":
                        one["reason"] = "the kept code's " + one["reason"]
                    return one, None
                values[side].append(one["value"])
                holdout = one if side == "candidate" else holdout
    finally:
        swap.close()
    holdout["value"] = _round(median(values["candidate"]))
    holdout["samples"] = [_round(v) for v in values["candidate"]]
    holdout["best_samples"] = [_round(v) for v in values["best"]]
    holdout["against"] = "the kept code measured beside it"
    return holdout, median(values["best"])


# ---------------------------------------------------------------------- log ----

def _log_arguments(args):
    """`log`'s own arguments as a LogRequest, checked before the log is locked or read
    (bad input changes nothing)."""
    description = text_arg(args.description, "--description")
    metric = number_arg(args.metric, "--metric") if args.metric is not None else None
    metrics = metrics_arg(args.metrics)
    reason = text_arg(args.reason, "--reason") if args.reason is not None else None
    asi = json_arg(args.asi, "--asi") or {}
    if args.commit is not None and not (4 <= len(args.commit) <= 64 and
                                        all(c in "0123456789abcdefABCDEF" for c in args.commit)):
        fail("bad_commit", "--commit %s is not a commit hash." % json.dumps(args.commit))
    return LogRequest(status=args.status, metric=metric, metrics=metrics, reason=reason,
                      force=bool(args.force), commit=args.commit, description=description, asi=asi)


def _log_head(repo, state, decision, request):
    """HEAD, and whether `log` leaves git alone, as (head, skip_git). HEAD moved past the
    snapshot: a keep that names the loop's own unlogged commit (--commit) adopts it;
    anything else is refused, or with --force recorded without touching git."""
    head = repo.head()
    snap = state.snapshot or {}
    skip_git = False
    if snap.get("head") is not None and snap.get("head") != head:
        own = own_unlogged_commit(repo, head, snap["head"])
        adopting = (own is not None and decision.status == "keep" and request.commit is not None
                    and head.startswith(request.commit.lower()))
        if not adopting and not request.force:
            fail("head_moved", head_moved_message(snap["head"], head, own))
        skip_git = not adopting
        decision.forced = decision.forced or skip_git
    return head, skip_git


def _check_measured_tree(loop, state, measurement, head, current):
    """Refuses to log numbers of other code: the working tree (`current`) or a protected
    input changed after `run` measured it."""
    measured = measurement.tree
    if measured and measurement.head and head and measurement.head != head:
        # HEAD moved since `run` and `doctor --fix` adopted it: what the user
        # committed meanwhile is theirs, not a change to the measured experiment
        measured = rebased_snapshot(loop, measured, measurement.head, head)
    if measured and current != measured:
        changed = [c.name for c in diff_trees(loop, measured, current)]
        fail("stale_run", "The working tree changed after `autotune run` measured it (%s); "
             "nothing was logged. Run the benchmark again (`autotune run`), so the log "
             "records the numbers of the code it keeps or discards." % (
                 ", ".join(changed[:10]) or "files changed"))
    if isinstance(measurement.inputs, dict):
        check_inputs(loop, state, input_hashes(loop), since=measurement.inputs, run_again=True)


def _log_health(state, decision, settings, index):
    """The health fields the result line carries: the health machine's step, then
    "completed" when this result spends a budget."""
    health = advance(health_fields(state), decision.status, decision.improved, settings,
                     deterministic=bool((state.reference or {}).get("deterministic")),
                     timeout=decision.verdict == "timeout")
    best_metric = decision.metric if decision.improved else (state.best or {}).get("metric")
    finished = budget_reason(index, best_metric, state.config.get("direction", "lower"), settings,
                             iso_to_epoch(state.started_at), time.time())
    if finished:
        health.update(health="completed", active=False, reason=finished)
    return health


def _add_measurement(result, loop, state, measurement, ref, decision, reason, head):
    """What the result line takes from the measurement `run` recorded (samples, verdict,
    evidence, diagnosis, rule) and, at the baseline, the judge and protected inputs
    it fixes for the segment; the machine facts when nothing was measured."""
    if state.n_exp == 0:  # the baseline fixes the judge and the protected inputs
        result.judge = (measurement.judge if measurement is not None and isinstance(measurement.judge, dict)
                        else judge_of(loop.settings.raw))
        result.inputs = (measurement.inputs if measurement is not None and isinstance(measurement.inputs, dict)
                         else input_hashes(loop))
    if ref is not None:
        result.measurement = ref
    if measurement is not None and (decision.measured or measurement.crashed):
        if decision.status in CRASH_STATUSES and measurement.diagnosis:
            result.diagnosis = measurement.diagnosis
        if measurement.status_rule and decision.status == measurement.suggested_status:
            result.rule = measurement.status_rule.get("rule")
    if measurement is not None and decision.measured:
        result.samples = [_round(s) for s in measurement.samples] or None
        result.verdict, result.evidence, result.env, result.run_dur = measurement.verdict, measurement.evidence, measurement.env, measurement.dur
        if measurement.holdout and measurement.holdout.get("value") is not None:
            result.holdout = measurement.holdout["value"]
    else:
        result.env = machine_facts(head, loop)
    if decision.forced:
        result.forced, result.override_reason = True, reason
        result.verdict = result.verdict or decision.verdict


def _log_entries(loop, loaded, result, measurement, decision):
    """The lines to append (the kept code's samples first, when `run` measured them),
    the result carrying its confidence, and the segment's sorted metric values with
    the result's point: confidence is computed on a fold of the result as it will read."""
    state = loaded.state
    entries = [result.to_entry()]
    if measurement is not None and decision.measured and measurement.reference:
        entries.insert(0, kept_code_entry(measurement, state))
    values = segment_values(loop, loaded)
    preview = state.copy()
    point = fold_entry(preview, json.loads(dumps_line(result.to_entry()).decode("utf-8")))
    if point is not None:
        import bisect
        bisect.insort(values, point)
    result.confidence = confidence(values, preview)
    entries[-1] = result.to_entry()
    return entries, values


def _with_dependencies(answer, loop, git_info):
    """`log`'s answer, with what a kept or discarded lockfile change means for the
    installed dependencies (and the config's sync command run, when there is one)."""
    deps = dependency_change(loop, git_info)
    if deps is not None:
        answer["dependencies"] = deps
        if loop.settings.sync_command:
            deps["ran"] = run_sync(loop)
            deps["message"] = sync_message(git_info, deps)
    return answer


def cmd_log(args):
    loop = require_loop(find_loop())
    settings = loop.settings
    request = _log_arguments(args)
    description = request.description
    repo = require_repo(loop)
    with LogLock(loop) as lock:
        recover_swap(loop)  # the experiment's files first, if a killed `run` swapped them out
        loaded = load_state(loop)
        torn_tail_error(loop, loaded)
        state = loaded.state
        check_may_run(loop, state, time.time(), logging=True)
        config = state.config
        pname = config.get("metric_name")
        holder = running_benchmark(loop)
        if holder is not None:
            fail("benchmark_running", "A benchmark of this loop is running (%s); nothing was "
                 "logged. Log when its measurement is recorded." % holder_text(holder))
        measurement, ref = pending_measurement(loop, state)
        decision = decide_log(request, state, measurement)
        head, skip_git = _log_head(repo, state, decision, request)
        snap = state.snapshot or {}
        index = state.n_exp + 1
        current = snapshot_or_fail(loop)
        if measurement is not None and not skip_git and request.commit is None:
            _check_measured_tree(loop, state, measurement, head, current)
        git_info, commit, next_tree = apply_git(loop, state, decision.status, description, pname, decision.metric,
                                                config.get("metric_unit"), "%d.%d" % (state.segment, index),
                                                index, current, head, skip_git, request.commit)
        if next_tree != snap.get("tree"):
            try:
                anchor_snapshot(loop, next_tree)
            except (GitError, OSError) as exc:  # after git changed: say so, never fail now
                git_info["warning"] = "the new snapshot could not be anchored against `git gc` (%s)" % (
                    exc.message if isinstance(exc, GitError) else exc)
        health = _log_health(state, decision, settings, index)
        result = Result(
            index=index, commit=commit, metric=_round(decision.metric), status=decision.status,
            description=description, timestamp=utc_now(), segment=state.segment,
            metrics=decision.metrics if decision.status != "crash" or request.metrics else {}, asi=request.asi,
            failure=health["failure"], health=health["health"], recovery=health["recovery"],
            reason=health["reason"], files=git_info.get("files", []), mode=health["mode"],
            active=health["active"], improved=decision.improved, measured=decision.measured, git=git_info,
            snapshot=dict({"tree": next_tree, "head": repo.head()},
                          **({"large": large_record(loop)} if loop.oversized else {})),
            session_id=os.environ.get("CLAUDE_CODE_SESSION_ID") or None,
            hashes=((measurement.hashes if measurement is not None and measurement.hashes else file_hashes(loop))
                    if state.n_exp == 0 else None))
        _add_measurement(result, loop, state, measurement, ref, decision, request.reason, head)
        entries, values = _log_entries(loop, loaded, result, measurement, decision)
        try:
            append_entries(lock, loop, loaded, entries)
        except OSError as exc:
            fail("disk_full" if disk_full(exc) else "io_error",
                 unlogged_message(exc, decision.status, git_info, result.commit, description))
        try:
            save_values(loop, loaded.state, values)
        except OSError:
            pass  # values.bin is keyed by the point count: a stale one is rescanned
        drop_measurement(loop)
    print_json(_with_dependencies(log_answer(loaded.state, settings, result, pname, git_info, decision.notes,
                                         decision.warnings), loop, git_info))


def dependency_change(loop, git_info):
    """What a keep or discard did to the dependencies: the manifests and lockfiles it
    committed or reverted and the commands that bring the installed ones in line; None
    when it touched none."""
    if git_info.get("action") not in ("commit", "revert"):
        return None
    root = loop.repo.root
    files = [os.path.relpath(os.path.join(root, name), loop.workdir) for name in git_info.get("files") or []]
    changed = dependency_files(files)
    if not changed:
        return None
    deps = {"changed": changed, "sync": sync_commands(loop.workdir, changed),
            "sync_command": loop.settings.sync_command}
    deps["message"] = sync_message(git_info, deps)
    return deps


def run_sync(loop):
    """Runs the config's syncCommand (the user's own command, through the shell like the
    benchmark) in the working directory, with the benchmark's environment and timeout."""
    settings = loop.settings
    env = benchmark_env(settings.env, AUTOTUNE_SYNC="1")
    with ProcessSweep() as sweep:
        outcome = run_process(settings.sync_command, loop.workdir, settings.timeout, shell=True,
                              env=env, tail_lines=SYNC_TAIL_LINES, tail_bytes=SYNC_TAIL_BYTES, sweep=sweep)
    return {"command": settings.sync_command, "exit": outcome.exit, "dur": outcome.dur,
            "timeout": outcome.timeout, "output": (outcome.error or outcome.output).strip("\n")}


def unlogged_message(exc, status, git_info, commit, description):
    """What a `log` whose git work is done but whose log line could not be written
    says: the state of the repository and of the log, and the one command that repairs."""
    why = why_no_room(exc)
    action = git_info.get("action")
    if action == "commit":
        return ("%s: the keep was committed as %s (HEAD and your index agree), but the log is "
                "unchanged: its line could not be written. Free space, then record it with: "
                "autotune log --status keep --commit %s --description %s" % (
                    why, commit, commit, _shell_quote(description)))
    if action == "revert":
        return ("%s: the experiment was reverted (saved as %s), but the log is unchanged: its "
                "line could not be written. Free space, then run the same command again (it finds "
                "nothing left to revert and records the result): %s" % (
                    why, git_info.get("saved"), again_command()))
    return ("%s: git was not changed and the log is unchanged: its line could not be written. "
            "Free space, then run the same command again: %s" % (why, again_command()))


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


def apply_git(loop, state, status, description, pname, metric, unit, label, index, current,
              head, skip_git, given_commit):
    """Commits a keep, reverts anything else; returns (git info, commit, next snapshot).
    Either it completes, or it refuses having changed nothing, or (a disk that fills up
    midway) it says exactly what state the repository is in and what to run."""
    repo = loop.repo
    base = (state.snapshot or {}).get("tree")
    short = head[:7] if head else None
    if skip_git:
        return {"action": "none", "message": "skipped: HEAD moved outside autotune (--force)"}, short, current
    large = large_changes((state.snapshot or {}).get("large"), large_record(loop))
    if status == "keep" and given_commit:
        proc = repo.run(["rev-parse", "-q", "--verify", given_commit + "^{commit}"], check=False)
        if proc.returncode != 0:
            fail("bad_commit", "--commit %s is not a commit in this repository." % given_commit)
        full = proc.stdout.decode().strip()
        return {"action": "none", "message": "recorded the given commit"}, full[:7], current
    # without a snapshot (a session written by the old bash scripts) untracked files are
    # not known to be the experiment's: they are neither committed nor deleted
    keep_created = base is None
    base = base or head_tree(repo, head)
    every = diff_trees(loop, base, current, tracked_only=keep_created)
    changes = experiment_changes(loop, base, current, every=every)
    if status == "keep":
        info, commit = keep_changes(loop, changes, description, pname, metric, unit, short)
        return with_large(info, large, "kept"), commit, current
    if not changes:
        return with_large({"action": "none", "message": "nothing to revert"}, large, "reverted"), short, current
    again = again_command()
    sizes = restore_sizes(loop, changes)
    problem = room_problem([(c.name, sizes.get(c.old_sha, 0)) for c in changes if c.old_sha in sizes]
                           + _session_writes(loop), repo.root)
    if problem:
        fail("disk_full", "Not enough room: %s. Nothing was reverted and nothing was logged (the "
             "working tree, the repository and the log are unchanged). Free space or raise the "
             "limit, then run the same command again: %s" % (problem, again))
    try:
        ref = save_discarded(loop, base, current, label, description)
    except (GitError, OSError) as exc:
        if isinstance(exc, GitError) and not disk_full(exc):
            raise
        fail("disk_full" if disk_full(exc) else "io_error", "%s while saving the experiment: nothing was reverted and nothing was "
             "logged. %s, then run the same command again: %s" % (why_no_room(exc), remedy(exc), again))
    try:
        restore_changes(loop, changes)
    except (GitError, OSError) as exc:
        fail("disk_full" if disk_full(exc) else "restore_failed",
             "%s while restoring the experiment's files: the experiment is saved as %s; some "
             "files are restored and the others still hold the experiment; the log is unchanged. "
             "Fix that, then run the same command again to restore the rest: %s" % (
                 why_no_room(exc), ref, again))
    left = [c.name for c in changes if GITLINK in (c.old_mode, c.new_mode)]
    info = {"action": "revert", "saved": ref,
            "restore": "autotune restore %s" % _shell_quote(
                str(index) if ref.endswith("/" + label) else ref.rsplit("/", 1)[-1])}
    listed_files(info, [c.name for c in changes if c.name not in left])
    if left:
        info["left"] = left[:MAX_FILES_LISTED]
        info["message"] = ("submodules are not reverted (%s): check them out by hand" % ", ".join(left))
    staged = staged_among(repo, head, [c.path for c in changes])
    if staged:
        names = [path.decode("utf-8", "replace") for path in staged]
        info["staged"] = names[:MAX_FILES_LISTED]
        info["index_note"] = (
            "your git index still stages changes to %s, which the experiment touched (a `git add` "
            "or `git mv` of the experiment's, or your own staging): the files are restored, the "
            "index is left as it is; `git restore --staged -- %s` unstages them" % (
                ", ".join(names[:10]) + (" and %d more" % (len(names) - 10) if len(names) > 10 else ""),
                " ".join(_shell_quote(":/" + name) for name in names[:10])))
    exact = not (keep_created or left or len(changes) != len(every))
    return with_large(info, large, "reverted"), short, (base if exact else snapshot_tree(loop))


def staged_among(repo, head, paths):
    """Those of `paths` whose entry in the user's own index differs from HEAD's: a discard
    restores files, not the index, so a staged rename or add of the experiment's would
    otherwise ride along in the user's next `git commit` unannounced."""
    if not head or not paths:
        return []
    proc = repo.run(["diff-index", "--cached", "--name-only", "-z", "--no-renames", head], check=False)
    if proc.returncode != 0:
        return []
    staged = set(proc.stdout.split(b"\0"))
    return sorted(path for path in paths if path in staged)


def snapshot_or_fail(loop):
    """snapshot_tree for `log`, with a full disk said plainly (nothing changed yet)."""
    try:
        return snapshot_tree(loop)
    except (GitError, OSError) as exc:
        if isinstance(exc, GitError) and not disk_full(exc):
            raise
        fail("disk_full" if disk_full(exc) else "io_error", "%s while taking the snapshot of the "
             "working tree: nothing was committed, reverted or logged. Fix that, then run the same "
             "command again: %s" % (why_no_room(exc), again_command()))


def _session_writes(loop):
    """The files every `log` grows or rewrites, at about their final sizes."""
    out = []
    for name, path, extra in (("the index", loop.repo.index_path(), 0),
                              (LOG_FILE, loop.log_path, 1 << 14)):
        try:
            out.append((name, os.path.getsize(path) + extra))
        except OSError:
            pass
    return out


def keep_changes(loop, changes, description, pname, metric, unit, short):
    """Commits a keep (see commit_changes); (git info, commit) or a clear refusal."""
    if not changes:
        return {"action": "none", "message": "nothing to commit"}, short
    again = again_command()
    problem = room_problem(_session_writes(loop) + [("the commit index", os.path.getsize(
        loop.repo.index_path()) if os.path.isfile(loop.repo.index_path()) else 0)], loop.repo.git_dir)
    if problem:
        fail("disk_full", "Not enough room: %s. Nothing was committed and nothing was logged (the "
             "repository, your index and the log are unchanged). Free space or raise the limit, "
             "then run the same command again: %s" % (problem, again))
    message = "autotune: %s\n\nAutotune-Metric: %s=%s%s\n" % (
        description.rstrip(), strip_controls(pname, ""), trailer_number(metric),
        (" " + strip_controls(unit, "")) if unit else "")
    try:
        new_head = commit_changes(loop, changes, message, again)
    except (GitError, OSError) as exc:
        if isinstance(exc, GitError) and not disk_full(exc):
            raise
        fail("disk_full" if disk_full(exc) else "io_error", "%s while committing the keep: nothing was committed and nothing was "
             "logged (the repository, your index and the log are unchanged). %s, then run the "
             "same command again: %s" % (why_no_room(exc), remedy(exc), again))
    if new_head is None:
        return {"action": "none", "message": "nothing to commit"}, short
    return listed_files({"action": "commit", "commit": new_head[:7]}, [c.name for c in changes]), new_head[:7]


# ---------------------------------------------------- rebaseline and verify ----

def cmd_rebaseline(args):
    loop = require_loop(find_loop())
    loaded = load_state(loop)
    state = loaded.state
    require_config(loop, state)
    argv, shell, shown = benchmark_command(loop, None)
    check_integrity(loop, state)
    check_judge(loop, state)
    if state.n_exp:
        check_inputs(loop, state, input_hashes(loop))
    with BenchmarkLock(loop, "rebaseline: " + shown):
        refuse_pending_swap(loop)
        rebaseline(args, loop, state, argv, shell)


def rebaseline(args, loop, state, argv, shell):
    """`rebaseline` under the benchmark lock."""
    pname = require_metric_name(state)
    if loop.repo and state.snapshot:
        with LogLock(loop):
            tree = snapshot_tree(loop)
        changed = ([c.name for c in experiment_changes(loop, state.snapshot["tree"], tree)]
                   if tree != state.snapshot.get("tree") else [])
        if changed:
            fail("dirty_worktree", "The working tree has changes since the last logged result (%s): "
                 "an experiment in progress. Finish it first (`autotune run`, then `autotune log`), "
                 "so rebaseline measures the kept code." % ", ".join(changed[:10]))
    count = args.repeat or DEFAULT_REBASELINE
    timeout = args.timeout if args.timeout is not None else loop.settings.timeout
    env = benchmark_env(loop.settings.env, AUTOTUNE_SEGMENT=str(state.segment), AUTOTUNE_REBASELINE="1")
    samples, sample_metrics = [], []
    with ProcessSweep() as sweep:
        runner = SampleRunner(argv, shell, loop.workdir, timeout, env, pname, sweep)
        for number in range(1, count + 1):
            taken = runner.take(number)
            if taken is None:
                fail("benchmark_crashed", "The benchmark failed on the unchanged code (sample %d: %s); "
                     "nothing was recorded. Output tail: %s" % (
                         number, runner.problem, _one_line(runner.last.output, 300)))
            samples.append(taken[0])
            sample_metrics.append(taken[1])
        holdout = None
        if os.path.isfile(loop.path(HOLDOUT_FILE)):
            values = []
            for _ in range(HOLDOUT_PAIRS):
                one = run_holdout(loop, pname, timeout, env, sweep)
                if one.get("reason"):
                    fail("holdout_crashed", "The holdout failed on the unchanged code (%s); nothing was "
                         "recorded. Output tail: %s" % (one["reason"], _one_line(one.get("output"), 300)))
                values.append(one["value"])
            holdout = median(values)
    previous = state.reference or {}
    value = median(samples)
    head = loop.repo.head() if loop.repo else None
    entry = {"type": "rebaseline", "timestamp": utc_now(), "segment": state.segment,
             "commit": head[:7] if head else None, "metric": _round(value),
             "samples": [_round(s) for s in samples],
             "metrics": median_metrics(sample_metrics, exclude=pname),
             "previous": {"metric": _round(previous.get("metric")), "n": len(previous.get("samples") or []),
                          "source": previous.get("source")},
             "env": machine_facts(head, loop, env)}
    if holdout is not None:
        entry["holdout"] = _round(holdout)
    drift = rebaseline_drift(samples, previous, state.config.get("direction", "lower"), loop.settings)
    if drift:
        entry["drift"] = drift
    with LogLock(loop) as lock:
        loaded = load_state(loop)
        torn_tail_error(loop, loaded)
        append_entries(lock, loop, loaded, [entry])
    sigma = robust_sigma(samples)
    before = previous.get("metric")
    result = {"status": "rebaselined", "metric": _round(value), "samples": entry["samples"],
              "n": len(samples), "previous": entry["previous"],
              "drift_pct": _round(pct_change(value, before), 3),
              "deterministic": is_deterministic(samples), "metrics": entry["metrics"],
              "holdout": entry.get("holdout"),
              "noise": {"sigma": _round(sigma), "sigma_pct": _round(sigma_pct(sigma, value), 3)}}
    if drift:
        result["warnings"] = [drift["message"]]
    print_json(result)


def rebaseline_drift(samples, previous, direction, settings):
    """A warning when the kept code now measures beyond the noise of its previous
    reference (the same code: only the machine can have changed), or None."""
    before = previous.get("samples") or []
    if not before:
        return None
    deterministic = is_deterministic(before) and is_deterministic(samples)
    verdict, evidence = assess(samples, before, direction, settings.alpha, deterministic=deterministic)
    if verdict not in ("improved", "worse"):
        return None
    pct = evidence.get("delta_pct")
    load = load_average() or {}
    p_value = evidence.get("p_value") if verdict == "improved" else evidence.get("p_worse")
    return {"delta_pct": pct, "p_value": p_value,
            "message": "the kept code now measures %s%% %s its previous reference (%s, %d sample%s), beyond "
                       "the noise (%s): the same code, so the machine changed (load average now %s on %s CPUs). "
                       "Earlier samples are no fair yardstick now; the interleaved default measures the kept "
                       "code beside each candidate, so its verdicts do not depend on them." % (
                           _fmt(abs(pct)) if pct is not None else "?",
                           "off" if pct is None else ("below" if pct < 0 else "above"),
                           previous.get("source") or "?", len(before), "" if len(before) == 1 else "s",
                           "exact comparison" if deterministic else "%s, p=%s" % (
                               evidence.get("method"), _fmt(evidence.get("p_value") if verdict == "improved"
                                                            else evidence.get("p_worse"))),
                           _fmt(load.get("1m")), load.get("cpus") or "?")}


def resolve_commit(repo, short, what, index):
    """The full hash of a commit the log recorded, or a clear error when history was
    rewritten since (nothing is written)."""
    if not isinstance(short, str) or not short:
        fail("commit_missing", "The log records no commit for the %s (#%s), so it cannot be "
             "measured; `verify` needs a segment whose results were logged by autotune in git." % (what, index))
    proc = repo.run(["rev-parse", "-q", "--verify", "--end-of-options", short + "^{commit}"], check=False)
    if proc.returncode != 0:
        fail("commit_missing", "The %s commit %s (result #%s) is no longer in this repository: its history "
             "was rewritten (rebase, reset, amend or gc). Nothing was measured or written. To recover, find "
             "it with `git reflog` or a branch that still has it and restore it (e.g. `git branch "
             "autotune-%s %s`), or start a new segment with `autotune init` so the baseline is code that "
             "exists." % (what, short, index, what, short))
    return proc.stdout.decode().strip()


def _verify_commits(repo, state):
    """The two commits `verify` compares and where HEAD stands, as (base, best,
    base_commit, best_commit, head, on_top); refuses when there is nothing to verify
    or HEAD does not hold the best (HEAD may carry kept equal-result changes on top)."""
    base, best = state.baseline or {}, state.best or {}
    if not base or not best:
        fail("nothing_to_verify", "`verify` compares the baseline with the best kept result; this "
             "segment has %s yet." % ("no baseline" if not base else "no kept result"))
    base_commit = resolve_commit(repo, base.get("commit"), "baseline", base.get("index"))
    best_commit = resolve_commit(repo, best.get("commit"), "best", best.get("index"))
    if base_commit == best_commit:
        fail("nothing_to_verify", "The best is the baseline commit %s: no kept change to verify yet." %
             base_commit[:7])
    head = repo.head()
    on_top = head != best_commit and head is not None and repo.run(
        ["merge-base", "--is-ancestor", best_commit, head], check=False).returncode == 0
    if head != best_commit and not on_top:
        fail("head_not_best", "HEAD is %s, which does not contain the best result's commit %s: `verify` "
             "measures the working tree as the best, so check out the best first." % (
                 (head or "none")[:7], best_commit[:7]))
    return base, best, base_commit, best_commit, head, on_top


def _verify_trees(loop, state, repo, base_commit, head):
    """The working tree (the kept code, refused when an experiment is in progress) and
    the tree with the baseline's version of the files they differ in, as (current,
    baseline_tree). Callers hold the LogLock."""
    current = snapshot_tree(loop)
    if state.snapshot and current != state.snapshot.get("tree"):
        changed = [c.name for c in diff_trees(loop, state.snapshot["tree"], current)]
        fail("dirty_worktree", "The working tree has changes since the last logged result (%s): an "
             "experiment in progress. Finish it first (`autotune run`, then `autotune log`), so verify "
             "measures the kept code." % ", ".join(changed[:10]))
    return current, tree_with_paths_of(loop, current, head_tree(repo, base_commit), head_tree(repo, head))


def _verify_pairs(loop, argv, shell, timeout, env, pname, swap, pairs):
    """Runs the baseline ("best" side of the swap) and the best ("candidate" side)
    alternately, in random order per pair, until `pairs` pairs are judged (two identical
    pairs of a deterministic benchmark suffice). A pair set aside as `run` sets one aside
    (judged_pairs: load on one side only) is replaced, up to twice `pairs` in all.
    Returns (values per side, orders: "A" when the baseline ran first, each pair's
    (best's reading, baseline's reading) of the machine's load); a failed run is
    refused, the tree put back."""
    progress = Progress("verify")
    values = {"best": [], "candidate": []}
    orders, loads = [], []
    rng = pair_order_rng()
    with ProcessSweep() as sweep:
        runners = {side: SampleRunner(argv, shell, loop.workdir, timeout, dict(env), pname, sweep,
                                      progress=progress, side=side) for side in ("best", "candidate")}
        try:
            while len(values["candidate"]) < 2 * pairs and (
                    len(values["candidate"]) < pairs
                    or sum(judged_pairs(paired_ratios(values["candidate"], values["best"])[0], loads)) < pairs):
                order = ("best", "candidate") if rng.random() < 0.5 else ("candidate", "best")
                reading = {}
                for side in order:
                    swap.to(side)
                    taken = runners[side].take(len(values["candidate"]) + 1)
                    if taken is None:
                        runner = runners[side]
                        fail("benchmark_crashed", "The benchmark failed on the %s commit (%s); nothing was "
                             "recorded and the working tree is as it was. Output tail: %s" % (
                                 "baseline" if side == "best" else "best", runner.problem,
                                 _one_line(runner.last.output, 300)))
                    values[side].append(taken[0])
                    reading[side] = taken[2]
                orders.append("A" if order[0] == "best" else "B")   # A: the baseline ran first
                loads.append((reading["candidate"], reading["best"]))
                if len(orders) == 2 and is_deterministic(values["best"]) \
                        and is_deterministic(values["candidate"]):
                    break   # a deterministic benchmark: two identical pairs say all there is
        finally:
            swap.close()
            progress.done()
    return values, orders, loads


def _verify_change(old, new, loads=None):
    """The best's change against the baseline from the judged pairs, in percent, as
    (delta, interval, set aside): the Hodges-Lehmann shift and its 95% interval as (low,
    high), None when there are too few pairs (the shift itself for a deterministic
    benchmark), and how many pairs were set aside (judged_pairs)."""
    ratios, relative = paired_ratios(new, old)
    kept = judged_pairs(ratios, loads)
    if sum(kept) >= 5:
        ratios = [r for r, ok in zip(ratios, kept) if ok]
    set_aside = len(kept) - len(ratios)
    shift = hodges_lehmann(ratios)
    interval = (shift, shift) if is_deterministic(old) and is_deterministic(new) else hl_interval(ratios)

    def pct(x):
        return _round(shift_pct(x, relative), 3)
    return pct(shift), ((pct(interval[0]), pct(interval[1])) if interval else None), set_aside


def cmd_verify(args):
    """The honest headline: the segment's baseline commit against the best commit,
    measured interleaved in one window, with a 95% interval; recorded as a log line."""
    loop = require_loop(find_loop())
    loaded = load_state(loop)
    state = loaded.state
    require_config(loop, state)
    repo = require_repo(loop)
    argv, shell, shown = benchmark_command(loop, None)
    check_integrity(loop, state)
    base, best, base_commit, best_commit, head, on_top = _verify_commits(repo, state)
    with BenchmarkLock(loop, "verify: " + shown):
        refuse_pending_swap(loop)
        with LogLock(loop):
            current, baseline_tree = _verify_trees(loop, state, repo, base_commit, head)
        pairs = args.pairs or VERIFY_PAIRS
        timeout = args.timeout if args.timeout is not None else loop.settings.timeout
        pname = state.config.get("metric_name")
        env = benchmark_env(loop.settings.env, AUTOTUNE_SEGMENT=str(state.segment), AUTOTUNE_VERIFY="1")
        swap = Swap(loop, baseline_tree, current, purpose="verify")
        values, orders, loads = _verify_pairs(loop, argv, shell, timeout, env, pname, swap, pairs)
        old, new = values["best"], values["candidate"]
        delta, interval, set_aside = _verify_change(old, new, loads)
        logged = _round(pct_change(best["metric"], base.get("metric")), 3)
        entry = {"type": "verify", "timestamp": utc_now(), "segment": state.segment,
                 "baseline": {"index": base.get("index"), "commit": base_commit[:7]},
                 "best": {"index": best.get("index"), "commit": best_commit[:7],
                          "measured": head[:7]},
                 "pairs": len(new), "delta_pct": delta, "low_pct": interval[0] if interval else None,
                 "high_pct": interval[1] if interval else None, "logged_pct": logged,
                 "samples": {"baseline": [_round(v) for v in old], "best": [_round(v) for v in new]},
                 "order": "".join(orders), "set_aside": set_aside,
                 "swapped": swap.paths[:50], "env": machine_facts(head, loop, env), "load": load_average()}
        with LogLock(loop) as lock:
            loaded = load_state(loop)
            torn_tail_error(loop, loaded)
            append_entries(lock, loop, loaded, [entry])
        result = dict(entry, status="verified", headline=headline_text(logged, entry), command=shown)
        result["warnings"] = []
        if on_top:
            result["warnings"].append("HEAD (%s) carries kept equal-result changes on top of the best commit %s; "
                                      "verify measured HEAD, the code you have now" % (head[:7], best_commit[:7]))
        if not interval:
            result["warnings"].append("%d pairs are too few for a 95%% interval; run `autotune verify "
                                      "--pairs 10`." % len(new))
        elif interval[0] < 0 < interval[1]:
            result["warnings"].append("the 95%% interval (%s to %s) includes no change: on this machine "
                                      "the best is not distinguishable from the baseline; run `autotune "
                                      "verify --pairs %d` on a quieter machine or with a longer workload"
                                      % (fmt_pct(interval[0]), fmt_pct(interval[1]), 2 * pairs))
        if set_aside:
            result["warnings"].append("%d of %d pairs were set aside (load on one side only) and not "
                                      "counted" % (set_aside, len(new)))
        if not result["warnings"]:
            del result["warnings"]
        print_json(result)


def tree_with_paths_of(loop, tree, old_tree, new_tree):
    """`tree` (the working tree's snapshot) with the paths that differ between old_tree
    and new_tree (two commits) set to old_tree's version: the working tree as it would
    be with the baseline's code, every other file (untracked ones included) unchanged."""
    changes = diff_trees(loop, old_tree, new_tree)
    index, env = private_index(loop, "verify.index")
    repo = loop.repo
    repo.run(["read-tree", tree], env=env)
    if changes:
        repo.run(["update-index", "-z", "--index-info"], env=env,
                 input=_index_records((c.old_mode, c.old_sha, c.path) for c in changes
                                      if b"160000" not in (c.old_mode, c.new_mode)))
    return repo.run(["write-tree"], env=env).stdout.decode("ascii").strip()


# ---------------------------------------------------------- person commands ----

def control(action, check=None, **fields):
    """Appends a control line (stop, resume, repair) unless `check` returns a note saying
    why not; returns (loop, state, note)."""
    loop = require_loop(find_loop(lenient=action == "stop"))
    with LogLock(loop) as lock:
        loaded = load_state(loop)
        torn_tail_error(loop, loaded)
        state = loaded.state
        require_config(loop, state)
        if check is not None:
            message = check(loop, state)
            if message:
                return loop, state, message
        entry = {"type": "control", "action": action, "timestamp": utc_now()}
        entry.update(fields)
        append_entries(lock, loop, loaded, [entry])
    return loop, loaded.state, None


def cmd_stop(args):
    by = "agent" if os.environ.get("CLAUDE_CODE_SESSION_ID") else "person"
    reason = text_arg(args.reason, "--reason") if args.reason else None
    loop, state, note = control("stop", by=by, reason=reason, check=lambda s, st: None if st.active else (
        "already stopped" if st.health == "stopped" else "already not active (%s: %s)" % (
            st.health, st.reason or "-")))
    report_control(args, state, note or "stopped", "the loop is stopped and its data kept; "
                   "`autotune resume` continues it", next_step="autotune resume")


def cmd_resume(args):
    def check(loop, state):
        if state.active and state.health not in ("paused", "stopped", "completed") and state.mode != "repair":
            return "already active"
        reason = spent_budget(loop, state, time.time())
        if reason:
            fail("budget_spent", "The budget is still spent (%s); raise it in %s or start a new "
                 "segment with `autotune init`." % (reason, CONFIG_FILE))
        return None
    loop, state, note = control("resume", check=check)
    report_control(args, state, note or "resumed", "active, optimize mode, streaks and heals reset")


def cmd_repair(args):
    loop, state, _ = control("repair")
    report_control(args, state, "repair mode", "active, health healing, recovery manual_repair")


def report_control(args, state, status, detail, next_step=None):
    if args.json:
        answer = {"status": status, "active": state.active, "health": state.health,
                  "mode": state.mode, "reason": state.reason, "recovery": state.recovery}
        if next_step or not state.active:
            answer["next"] = next_step or next_action(state)[1]
        print_json(answer)
    else:
        print_text("autotune: %s%s" % (status, (": " + detail) if not status.startswith("already") else ""))


def cmd_clear(args):
    import shutil
    loop = find_loop(lenient=True)
    targets = [p for p in (loop.log_path, loop.state_path) if os.path.exists(p)]
    cache = loop.cache_dir if loop.repo else None
    if not targets and not (cache and os.path.isdir(cache)):
        print_text("autotune: nothing to clear in %s" % loop.workdir)
        return 0
    if not args.yes:
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            fail("needs_confirmation", "clear deletes %s; without a terminal to confirm on, pass "
                 "--yes." % (", ".join(os.path.basename(p) for p in targets) or "the caches"))
        print_text("This deletes %s in %s (autotune.md, the benchmark and git history stay)." % (
            ", ".join(os.path.basename(p) for p in targets), loop.workdir))
        sys.stdout.write("Type 'yes' to confirm: ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            print_text("autotune: nothing deleted")
            return 1
    lock = LogLock(loop) if loop.exists() else None
    if lock is not None:
        lock.__enter__()  # a concurrent `log` must not append to a file being deleted
    try:
        for path in targets:
            os.unlink(path)
        if cache and os.path.isdir(cache):
            shutil.rmtree(cache, ignore_errors=True)
        if loop.repo is not None and cache:
            loop.repo.run(["update-ref", "-d", "refs/autotune/snapshot/" + os.path.basename(cache)],
                             check=False)
    finally:
        if lock is not None:
            lock.__exit__(None, None, None)
    print_text("autotune: cleared %s (discarded experiments stay under refs/autotune/)" % (
        ", ".join(os.path.basename(p) for p in targets) or "caches"))
    return 0


def cmd_version(args):
    if args.json:
        print_json({"version": VERSION, "python": "%d.%d.%d" % sys.version_info[:3],
                "path": os.path.abspath(__file__)})
    else:
        print_text("autotune %s" % VERSION)


def cmd_restore(args):
    loop = find_loop()
    repo = require_repo(loop)
    refuse_pending_swap(loop)
    if args.list or args.index is None:
        proc = repo.run(["for-each-ref", "--sort=-creatordate",
                         "--format=%(refname)%00%(creatordate:iso-strict)%00%(subject)",
                         "refs/autotune/discarded/"])
        rows = []
        for line in proc.stdout.decode("utf-8", "replace").splitlines():
            ref, date, subject = line.split("\0", 2)
            rows.append({"ref": ref, "label": ref.rsplit("/", 1)[-1], "date": date, "subject": subject})
        if args.json:
            print_json({"discarded": rows})
        elif not rows:
            print_text("autotune: no discarded experiments saved in this repository")
        else:
            for row in rows:
                print_text("%-8s %s  %s" % (row["label"], row["date"][:19], row["subject"]))
        return 0
    ref, label = discarded_ref(loop, args.index, args.segment)
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
    changed = dependency_files([os.path.relpath(os.path.join(repo.root, f), loop.workdir) for f in files])
    deps = {"changed": changed, "sync": sync_commands(loop.workdir, changed),
            "message": "the restore brought back %s: bring the installed dependencies in line with "
                       "%s before `autotune run`" % (", ".join(changed[:6]), " and ".join(
                           "`%s`" % c for c in sync_commands(loop.workdir, changed)))} if changed else None
    if args.json:
        answer = {"status": "restored", "ref": ref, "files": files}
        if deps:
            answer["dependencies"] = deps
        print_json(answer)
    else:
        print_text("autotune: restored experiment %s into the working tree (%s)" % (label, ", ".join(files)))
        if deps:
            print_text("autotune: %s" % deps["message"])
    return 0


def discarded_ref(loop, which, segment=None):
    """(ref, label) of a discarded experiment: a label such as 1.7 or 1.7-2, or an index
    of the current (or given) segment, looked up in the log, which records the ref."""
    if "." in which:
        return "refs/autotune/discarded/" + which, which
    index = int(which)
    if loop.exists():
        state = load_state(loop).state
        segment = segment or state.segment
        for entry in reversed(read_entries(loop, state.config_offset if segment == state.segment else 0)):
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


def _loop_view(args, render, extra=None):
    """explain and status: the loop's explain data (plus `extra` of the state), as JSON
    or rendered text; a broken config is shown, not refused."""
    loop = require_loop(find_loop(lenient=True))
    loaded = load_state(loop)
    persist_if_stale(loop, loaded)
    data = explain_data(loop, loaded, disk=True)
    if extra:
        data.update(extra(loaded.state))
    if args.json:
        print_json(data)
    else:
        colors = Colors(sys.stdout)
        print_text(render(data, colors), painted=colors.enabled)


def cmd_explain(args):
    _loop_view(args, render_explain)


def cmd_status(args):
    _loop_view(args, render_status, lambda state: dict(
        total_runs=state.total_results, resume_count=state.resume_count, session_id=state.session_id,
        exp_at=state.exp_at, progress_at=state.progress_at))


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
    os.environ["AUTOTUNE_AGENT"] = "1"  # its SessionStart hook briefs it as the loop's owner
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


# ------------------------------------------------------------------- doctor ----

# Doctor: every check returns problems as (code, message, fix or None).

def _doctor_log(loop, loaded, problem):
    """doctor's checks of the log and of the state cache beside it: a torn last line,
    lines that are not JSON, no config line, a missing, stale or old-format state."""
    state = loaded.state
    if loaded.torn:
        problem("torn_tail", "%s ends with a truncated line of %d bytes (a write that was cut short). "
                "Readers skip it; `log` refuses to append after it." % (LOG_FILE, len(loaded.torn)),
                fix=lambda lock: _fix_torn_tail(loop, lock))
    if state.bad_lines:
        problem("bad_lines", "%d line%s of %s are not valid JSON objects (line %s); every command "
                "skips them." % (state.bad_lines, "" if state.bad_lines == 1 else "s", LOG_FILE,
                                 ", ".join(str(n) for n in state.bad_line_numbers)))
    if state.config is None:
        problem("no_config", "%s has no config line; run `autotune init`." % LOG_FILE)
    cached = _read_state_file(loop)
    if cached is None:
        problem("state_missing", "%s is missing or unreadable; it will be rebuilt from the log." % STATE_FILE,
                fix=lambda lock: _fix_state(loop))
    elif not loaded.rebuilt:
        fresh = fold_log(loop)
        a, b = fresh.state.to_dict(), loaded.state.to_dict()
        differing = sorted(k for k in a if k not in ("confidence",) and a[k] != b.get(k))
        if differing:
            problem("state_stale", "%s disagrees with the log (%s); it will be rebuilt." % (
                STATE_FILE, ", ".join(differing[:8])), fix=lambda lock: _fix_state(loop))
    elif cached.get("format") != STATE_FORMAT:
        problem("state_legacy", "%s was written by another version; it will be rebuilt from the log." %
                STATE_FILE, fix=lambda lock: _fix_state(loop))


def _doctor_judge(loop, state, problem):
    """doctor's checks of what judges the loop: the config, the benchmark file, the
    judge's settings and protected inputs against the baseline, a running benchmark."""
    for error in loop.config_errors:
        problem("bad_config", error)
    for note in loop.settings.warnings:
        problem("config_warning", note)["warning"] = True
    bench = loop.path(BENCH_FILE)
    if not os.path.isfile(bench):
        problem("no_benchmark", "%s does not exist; `run` needs it." % BENCH_FILE)
    else:
        if not os.access(bench, os.X_OK):
            problem("benchmark_not_executable", "%s is not executable (autotune runs it with bash)." % BENCH_FILE)
        if state.config is not None:
            try:
                check_integrity(loop, state)
            except AutotuneError as exc:
                problem("benchmark_changed", exc.message)
    if state.config is not None and state.n_exp:
        for check, code in ((lambda: check_judge(loop, state), "judge_changed"),
                            (lambda: check_inputs(loop, state, input_hashes(loop)),
                             "protected_changed")):
            try:
                check()
            except AutotuneError as exc:
                problem(code, exc.message.replace(", so nothing was run", ""))
    holder = running_benchmark(loop) if loop.repo is not None else None
    if holder is not None:
        problem("benchmark_running", "A benchmark is running (%s)." % holder_text(holder))


def _doctor_swap(loop, problem):
    """doctor's check of a swap journal: a live measurement with the kept code in place,
    or an interrupted one whose fix puts the experiment's files back."""
    journal = pending_swap(loop)
    if journal is None:
        return
    if swap_owner_alive(journal):
        problem("measuring", "`autotune %s` (pid %s) has the kept version of the experiment's "
                "files in place while it measures them beside yours; it puts yours back when "
                "it ends." % (journal.get("purpose", "run"), journal.get("pid")))
    else:
        problem("interrupted_swap", "An interrupted `autotune %s` (started %s) left the kept "
                "version of the experiment's files in place of yours (%s); the fix puts yours "
                "back, exactly as they were when it started." % (
                    journal.get("purpose", "run"), journal.get("started", "?"),
                    ", ".join(str(p) for p in (journal.get("paths") or [])[:10]) or "?"),
                fix=lambda lock: restore_swap(loop, journal))


def _doctor_git(loop, state, problem):
    """doctor's checks of git and autotune's private files in it: ignored files in the
    snapshot, HEAD moved past the snapshot, a git index lock, a swap, a saved
    measurement of another segment."""
    stale = ignored_entries(loop, private_index(loop, "snapshot.index")[1]) \
        if os.path.exists(loop.cache("snapshot.index")) else []
    if stale:
        problem("snapshot_ignored", "autotune's snapshot index holds %d file%s that git ignores "
                "and you do not track (%s), left over from an experiment that edited the ignore "
                "rules: a keep could commit them and a discard revert them. The fix removes them "
                "from the snapshot; the files stay on disk." % (
                    len(stale), "" if len(stale) == 1 else "s",
                    ", ".join(os.fsdecode(p) for p in stale[:10])),
                fix=lambda lock: _fix_ignored(loop, lock, stale))
    head = loop.repo.head()
    snap = state.snapshot or {}
    if snap.get("head") and head != snap.get("head"):
        own = own_unlogged_commit(loop.repo, head, snap["head"])
        if own is not None:
            problem("unlogged_keep", head_moved_message(snap["head"], head, own))
        else:
            problem("head_moved", head_moved_problem(loop, snap, head),
                    fix=lambda lock: _fix_snapshot(loop, lock))
    if os.path.exists(os.path.join(loop.repo.git_dir, "index.lock")):
        problem("git_locked", "%s exists: a git command is running or was killed. Delete it if "
                "no git process is running." % os.path.join(loop.repo.git_dir, "index.lock"))
    _doctor_swap(loop, problem)
    measurement = load_measurement(loop)
    if measurement is not None and measurement.segment != state.segment:
        problem("stale_measurement", "The saved measurement is from segment %s; it will be dropped." %
                measurement.segment, fix=lambda lock: drop_measurement(loop))


def cmd_doctor(args):
    loop = find_loop(lenient=True)
    problems = []  # dicts: code, message, fixable, fixed
    fixes = []

    def problem(code, message, fix=None):
        problems.append({"code": code, "message": message, "fixable": fix is not None, "fixed": False})
        if fix is not None:
            fixes.append((problems[-1], fix))
        return problems[-1]

    if loop.repo is None:
        problem("not_git_repo", "%s is not inside a git repository." % loop.workdir)
    if not loop.exists():
        problem("no_session", "No %s in %s: there is no session to check." % (LOG_FILE, loop.workdir))
        return doctor_report(args, loop, problems)
    loaded = load_state(loop)
    state = loaded.state
    _doctor_log(loop, loaded, problem)
    _doctor_judge(loop, state, problem)
    if loop.repo is not None and state.config is not None:
        _doctor_git(loop, state, problem)
    leftovers = [name for name in os.listdir(loop.workdir)
                 if name.startswith((STATE_FILE + ".", LOG_FILE + ".")) and name.endswith(".tmp")]
    if leftovers:
        problem("temp_files", "Temporary files from an interrupted write: %s." % ", ".join(leftovers),
                fix=lambda lock: [os.unlink(loop.path(n)) for n in leftovers])
    if args.fix and fixes:
        with LogLock(loop) as lock:
            for entry, fix in fixes:
                fix(lock)
                entry["fixed"] = True
    return doctor_report(args, loop, problems)


def _read_state_file(loop):
    data = read_json(loop.state_path)
    return data if isinstance(data, dict) else None


def _fix_torn_tail(loop, lock):
    """Moves the bytes after the last newline into a backup file, then cuts them off."""
    with open(loop.log_path, "rb") as handle:
        end = handle.seek(0, 2)
        torn = next(lines_backward(handle))
    cut = end - len(torn)
    if cut == end:
        return
    backup = "%s.torn-%s" % (loop.log_path, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    with open(backup, "wb") as handle:
        handle.write(torn)
    os.truncate(loop.log_path, cut)
    _fix_state(loop)


def _fix_state(loop):
    try:
        os.unlink(loop.state_path)
    except OSError:
        pass
    loaded = load_state(loop)
    if not save_state(loop, loaded.state):
        fail("io_error", "Cannot write %s; check its directory's permissions and free space." % STATE_FILE)


def head_moved_problem(loop, snap, head):
    """doctor's words for a HEAD moved outside autotune, naming the experiment in
    progress that the fix keeps pending."""
    text = ("HEAD moved from %s to %s outside autotune since the last logged result; `log` will "
            "refuse to commit or revert. " % (snap["head"][:7], (head or "none")[:7]))
    pending = []
    if snap.get("tree"):
        with LogLock(loop):
            current = snapshot_tree(loop)
            base = rebased_snapshot(loop, snap["tree"], snap["head"], head)
            pending = [c.name for c in experiment_changes(loop, base, current)]
    if pending:
        return text + ("The fix moves the snapshot onto the new HEAD (what you committed is yours) "
                       "and keeps the experiment in progress pending (%s%s): `log` then keeps or "
                       "discards it as usual." % (", ".join(pending[:10]), ", ..." if len(pending) > 10 else ""))
    return text + "The fix moves the snapshot onto the new HEAD; no experiment is in progress."


def _fix_snapshot(loop, lock):
    """Moves the snapshot onto the new HEAD without swallowing a pending experiment: the
    files the user's commits changed are taken from HEAD, the rest stays as the snapshot
    had it (rebased_snapshot)."""
    loaded = load_state(loop)
    snap = loaded.state.snapshot or {}
    head = loop.repo.head()
    tree = (rebased_snapshot(loop, snap["tree"], snap.get("head"), head) if snap.get("tree")
            else snapshot_tree(loop))
    entry = {"type": "control", "action": "snapshot", "timestamp": utc_now(),
             "snapshot": dict(snap, tree=tree, head=head)}
    anchor_snapshot(loop, tree)
    append_entries(lock, loop, loaded, [entry])


def _fix_ignored(loop, lock, stale):
    """Removes ignored, untracked files from the private index and from the logged
    snapshot, keeping any experiment in progress pending."""
    _, env = private_index(loop, "snapshot.index")
    loop.repo.run(["update-index", "-z", "--force-remove", "--stdin"], env=env,
                     input=b"".join(p + b"\0" for p in stale))
    loaded = load_state(loop)
    snap = loaded.state.snapshot or {}
    if snap.get("tree"):
        tree = without_paths(loop, snap["tree"], stale)
        if tree != snap["tree"]:
            anchor_snapshot(loop, tree)
            append_entries(lock, loop, loaded, [{"type": "control", "action": "snapshot",
                                                    "timestamp": utc_now(),
                                                    "snapshot": dict(snap, tree=tree)}])


def doctor_report(args, loop, problems):
    healthy = not [p for p in problems if not p["fixed"] and not p.get("warning")]
    if args.json:
        print_json({"ok": healthy, "path": loop.workdir, "problems": problems})
    else:
        colors = Colors(sys.stdout)
        if healthy and not [p for p in problems if not p.get("warning")]:
            print_text("autotune doctor: %s is healthy" % loop.workdir)
        for p in problems:
            mark = (colors.green("fixed") if p["fixed"] else colors.yellow("fixable") if p["fixable"]
                    else colors.yellow("warning") if p.get("warning") else colors.red("problem"))
            print_text("%s  %s: %s" % (mark, strip_controls(p["code"], ""), strip_controls(p["message"], "")),
                painted=colors.enabled)
        if problems and not args.fix and any(p["fixable"] for p in problems):
            print_text("Run `autotune doctor --fix` to repair what is marked fixable.")
    return 0 if healthy else 1


# -------------------------------------------------------------- shell words ----

# A small reader of Bash command lines for the PreToolUse guard: words with their
# quoting removed, operators, redirections with their targets, heredoc bodies, and the
# text of command and process substitutions (read again as commands of their own).
# Best effort by design: what it cannot read, the hashes of the benchmark and of the
# protected inputs still catch at the next `run`.

_SHELL_OPS = ("&&", "||", ";;", "|&", ";", "|", "&", "(", ")", "\n")
_REDIR_OPS = ("&>>", "&>", "<<<", "<<-", "<<", "<>", "<&", ">>", ">&", ">|", "<", ">")


class SimpleCommand(object):
    """One simple command: its words, its redirections [(op, target)], heredoc bodies,
    and whether it sits inside a substitution or behind operators."""

    __slots__ = ("words", "redirs", "heredocs", "nested")

    def __init__(self, nested=False):
        self.words, self.redirs, self.heredocs, self.nested = [], [], [], nested


class ParsedCommands(list):
    """shell_parse's answer: the simple commands, and how many operators joined them."""

    operators = 0

    def close(self, command):
        """Ends `command` at an operator: kept when it has a word or a redirection."""
        if command.words or command.redirs:
            self.append(command)


def _balanced_end(text, i):
    """Index just past the `)` closing the `(` before text[i] (quotes and nesting
    respected), or -1 when it is not closed."""
    depth, n = 1, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "'":
            j = text.find("'", i + 1)
            if j < 0:
                return -1
            i = j + 1
            continue
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            if i >= n:
                return -1
            i += 1
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return -1


def _read_heredocs(text, i, pending):
    """Skips the bodies of the heredocs opened on the line that just ended, recording
    each body on its command; returns where the next line starts."""
    n = len(text)
    for delimiter, strip_tabs, owner in pending:
        body = []
        while i < n:
            end = text.find("\n", i)
            line = text[i:] if end < 0 else text[i:end]
            i = n if end < 0 else end + 1
            if (line.lstrip("\t") if strip_tabs else line) == delimiter:
                break
            body.append(line)
        owner.heredocs.append("\n".join(body))
    return i


def _substitution_end(text, i, subs):
    """Index just past the `$(...)` or backquoted command starting at text[i], whether or
    not inside double quotes, with the command it runs added to `subs` (an arithmetic
    `$((...))` runs none); -1 when it is not closed."""
    if text.startswith("$(", i):
        end = _balanced_end(text, i + 2)
        if end >= 0 and not text.startswith("$((", i):
            subs.append(text[i + 2:end - 1])
        return end
    j, n = i + 1, len(text)
    while j < n and text[j] != "`":
        j += 2 if text[j] == "\\" else 1
    if j >= n:
        return -1
    subs.append(text[i + 1:j].replace("\\`", "`"))
    return j + 1


def _ansi_c_quoted(text, i):
    """($'...' at text[i] with \\n, \\t, \\' and \\\\ decoded, True, index past it), or None
    when it is not closed: Bash expands it to those characters before the command sees it."""
    j, n = i + 2, len(text)
    while j < n and text[j] != "'":
        j += 2 if text[j] == "\\" else 1
    if j >= n:
        return None
    return (text[i + 2:j].replace("\\n", "\n").replace("\\t", "\t").replace("\\'", "'")
            .replace("\\\\", "\\"), True, j + 1)


def _double_quoted(text, i, subs):
    """(the text of the "..." at text[i], True, index past it), or None when it is not
    closed. Inside double quotes a backslash escapes only $ ` " \\ and a newline, and a
    substitution still runs (its command is added to `subs`)."""
    piece, i, n = [], i + 1, len(text)
    while i < n and text[i] != '"':
        c = text[i]
        if c == "\\" and i + 1 < n:
            if text[i + 1] in '$`"\\':
                piece.append(text[i + 1])
            elif text[i + 1] != "\n":
                piece.append(text[i:i + 2])
            i += 2
            continue
        if text.startswith(("$(", "`"), i):
            end = _substitution_end(text, i, subs)
            if end < 0:
                return None
            piece.append(text[i:end])
            i = end
            continue
        piece.append(c)
        i += 1
    if i >= n:
        return None
    return "".join(piece), True, i + 1


def _word_part(text, i, subs):
    """(text, quoted, index past it) of the quoted or escaped part of a word at text[i]
    (\\x, '...', $'...', "...", $(...) or `...`), or None when it is not closed."""
    c = text[i]
    if c == "\\":
        return (text[i + 1] if i + 1 < len(text) and text[i + 1] != "\n" else ""), False, i + 2
    if c == "'":
        j = text.find("'", i + 1)
        return None if j < 0 else (text[i + 1:j], True, j + 1)
    if text.startswith("$'", i):
        return _ansi_c_quoted(text, i)
    if text.startswith(("$(", "`"), i):
        end = _substitution_end(text, i, subs)
        return None if end < 0 else (text[i:end], False, end)
    if c == '"':
        return _double_quoted(text, i, subs)
    return c, False, i + 1


def _read_word(text, i, subs):
    """(word with its quoting removed, whether any part was quoted, index past it) of the
    word at text[i], or None when a quote is not closed. A quoted empty word ('') is a
    word; an empty unquoted one is not."""
    parts, quoted, n = [], False, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n;|&()<>":
            break
        if c in "\\'\"$`":
            part = _word_part(text, i, subs)
            if part is None:
                return None
            parts.append(part[0])
            quoted = quoted or part[1]
            i = part[2]
            continue
        parts.append(c)
        i += 1
    return "".join(parts), quoted, i


def _redirection_at(text, i):
    """(operator, index of the operator) of a redirection at text[i], after an optional
    file descriptor number (2>, 10<&); (None, ...) when there is none."""
    j, n = i, len(text)
    while j < n and text[j].isdigit():
        j += 1
    return next((o for o in _REDIR_OPS if text.startswith(o, j)), None), j


def _process_substitution(text, i, subs):
    """Index just past the <(...) or >(...) at text[i], its command added to `subs`;
    -1 when it is not closed."""
    end = _balanced_end(text, i + 2)
    if end >= 0:
        subs.append(text[i + 2:end - 1])
    return end


# How many levels of `bash -c` and `eval` the guard reads through (a substitution's own
# nesting is bounded by shell_parse).
_WRAPPED_DEPTH = 4


def nested_commands(text, depth, deepest=None):
    """The commands of a command line that another one runs (a substitution's, or the
    text of `bash -c` and `eval`), read as a command line of its own and marked nested;
    None when it does not parse or lies deeper than `deepest` levels."""
    if deepest is not None and depth >= deepest:
        return None
    return shell_parse(text, nested=True, depth=depth + 1)


def shell_parse(text, nested=False, depth=0):
    """The simple commands of a Bash command line (substitutions included, marked
    nested), plus how many top-level simple commands there are; None when it does
    not parse (an unclosed quote or parenthesis: Bash would refuse it too)."""
    if depth > 8:
        return None
    commands, current = ParsedCommands(), SimpleCommand(nested)
    subs, pending_heredocs = [], []
    i, n = 0, len(text)
    expect_target = None
    while i < n:
        c = text[i]
        if c in " \t\r":
            i += 1
            continue
        if c == "\\" and i + 1 < n and text[i + 1] == "\n":
            i += 2
            continue
        if c == "#" and expect_target is None:
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if expect_target is None and not text.startswith("&>", i):
            op = next((o for o in _SHELL_OPS if text.startswith(o, i)), None)
            if op is not None:
                commands.close(current)
                commands.operators += 1
                current = SimpleCommand(nested)
                i += len(op)
                if op == "\n":
                    i = _read_heredocs(text, i, pending_heredocs)
                    pending_heredocs = []
                continue
        if expect_target is None:
            redir, j = _redirection_at(text, i)
            if redir in ("<", ">") and j == i and text.startswith("(", j + 1):
                i = _process_substitution(text, j, subs)  # <(...) or >(...): a word that runs a command
                if i < 0:
                    return None
                current.words.append(text[j:i])
                continue
            if redir is not None:
                i = j + len(redir)
                expect_target = redir
                continue
        elif text.startswith(("<(", ">("), i):
            end = _process_substitution(text, i, subs)
            if end < 0:
                return None
            current.redirs.append((expect_target, text[i:end]))
            expect_target = None
            i = end
            continue
        elif c in ";|&()<>\n":
            return None
        word = _read_word(text, i, subs)
        if word is None:
            return None
        value, quoted, i = word
        if expect_target is not None:
            if expect_target in ("<<", "<<-"):
                pending_heredocs.append((value, expect_target == "<<-", current))
            current.redirs.append((expect_target, value))
            expect_target = None
        elif value or quoted:
            current.words.append(value)
    if expect_target is not None and expect_target not in ("<<", "<<-"):
        return None
    commands.close(current)
    for body in subs:
        inner = nested_commands(body, depth)
        if inner is None:
            return None
        commands.extend(inner)
    return commands


_SHELL_PROGRAMS = ("bash", "sh", "zsh", "dash", "ksh", "fish")
_SHELL_KEYWORDS = ("do", "then", "else", "elif", "if", "while", "until", "!", "{", "time", "coproc")
_CODE_PROGRAMS = ("python", "pypy", "node", "ruby", "perl", "php", "deno", "bun")
# Programs that run the rest of their arguments as a command: (name, options that take a value,
# how many leading operands are theirs).
_WRAPPERS = {
    "env": ("-u", "-C", "-S", "--unset", "--chdir"), "nice": ("-n", "--adjustment"),
    "nohup": (), "time": ("-f", "-o"), "command": (), "exec": ("-a",), "builtin": (),
    "sudo": ("-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U"), "doas": ("-u", "-C"),
    "stdbuf": ("-i", "-o", "-e"), "ionice": ("-c", "-n", "-p"), "setsid": (), "unbuffer": (),
    "caffeinate": (), "xargs": ("-a", "-d", "-E", "-I", "-L", "-n", "-P", "-s", "--delimiter",
                                "--max-args", "--max-procs", "--replace"),
    "timeout": ("-k", "-s", "--kill-after", "--signal"), "watch": ("-n", "-d", "--interval"),
    "strace": ("-e", "-o", "-p", "-s"), "ltrace": ("-e", "-o"), "chrt": (), "taskset": (),
    "flock": ("-w", "-E", "--timeout"), "systemd-run": (), "proot": (), "fakeroot": (),
}
_WRAPPER_OPERANDS = {"timeout": 1, "taskset": 1, "chrt": 1, "flock": 1, "systemd-run": 0}
_RUNNERS = {"uv": "run", "poetry": "run", "pipenv": "run", "pdm": "run", "hatch": "run",
            "npx": None, "pnpx": None, "bunx": None, "conda": "run"}


def _is_assignment(word):
    name, eq, _ = word.partition("=")
    return bool(eq) and bool(name) and (name[0].isalpha() or name[0] == "_") and \
        name.replace("_", "a").isalnum()


def command_program(words):
    """(program, args, wrapped, assigned, nested_text) of a simple command's words:
    leading VAR=value words and wrappers (env, timeout, sudo, xargs, nohup, uv run,
    python -m, ...) are looked through; `bash -c TEXT` and `eval` give their text
    as nested_text, to be read as a command line of its own."""
    words = list(words)
    assigned = wrapped = False
    while words and _is_assignment(words[0]):
        words.pop(0)
        assigned = True
    for _ in range(12):
        while words and words[0] in _SHELL_KEYWORDS:
            words.pop(0)  # `do autotune run`, `then cp x y`, `! cmd`
            wrapped = True
        if not words:
            return "", [], wrapped, assigned, None
        program = os.path.basename(words[0])
        args = words[1:]
        if program in _WRAPPERS:
            wrapped = True
            takes, operands, i = _WRAPPERS[program], _WRAPPER_OPERANDS.get(program, 0), 0
            while i < len(args):
                arg = args[i]
                if arg == "--":
                    i += 1
                    break
                if program == "env" and _is_assignment(arg):
                    i += 1
                elif arg.startswith("-") and len(arg) > 1:
                    i += 2 if (arg in takes) else 1
                elif program == "nice" and arg.lstrip("-").isdigit():
                    i += 1
                else:
                    break
            i += operands
            words = args[i:]
            continue
        if program in _RUNNERS:
            sub = _RUNNERS[program]
            if sub is None or (args and args[0] == sub):
                wrapped = True
                rest = args if sub is None else args[1:]
                while rest and rest[0].startswith("-"):
                    rest = rest[1:]
                words = rest
                continue
        if program.startswith("python") or program in ("pypy", "pypy3"):
            i = 0
            while i < len(args) and args[i].startswith("-") and args[i] not in ("-m", "-c"):
                i += 2 if args[i] in ("-X", "-W") else 1
            if i < len(args) and args[i] == "-m" and i + 1 < len(args):
                words = [args[i + 1]] + args[i + 2:]
                wrapped = wrapped or args[i + 1] not in ("autotune",)
                continue
            if i < len(args) and args[i] == "-c":
                return program, args, wrapped, assigned, None
            if i < len(args):
                words = args[i:]
                continue
            return program, args, wrapped, assigned, None
        if program in _SHELL_PROGRAMS:
            i = 0
            while i < len(args) and args[i].startswith("-") and args[i] != "-c":
                i += 1
            if i < len(args) and args[i] == "-c":
                return program, args, wrapped, assigned, (args[i + 1] if i + 1 < len(args) else "")
            if i < len(args):
                words = args[i:]
                wrapped = True
                continue
            return program, args, wrapped, assigned, None
        if program in ("eval",):
            return program, args, wrapped, assigned, " ".join(args)
        return program, args, wrapped, assigned, None
    return "", [], True, assigned, None


def run_invocations(commands, depth=0):
    """The simple commands (with their program and args) that run `autotune run`,
    each as (args, plain_enough) where plain_enough is False when reached through a
    wrapper, a substitution or an assignment."""
    found = []
    for command in commands:
        program, args, wrapped, assigned, nested = command_program(command.words)
        if nested is not None:
            inner = nested_commands(nested, depth, _WRAPPED_DEPTH)
            if inner is None:
                if "autotune" in nested or "run-experiment" in nested:
                    found.append(([], False))
                continue
            found += [(a, False) for a, _ in run_invocations(inner, depth + 1)]
            continue
        if program in ("autotune", "autotune.py") and args and args[0] == "run":
            found.append((args[1:], not (wrapped or assigned or command.nested)))
        elif program in ("run-experiment.sh", "run-experiment"):
            found.append((args, not (wrapped or assigned or command.nested)))
    return found


# ------------------------------------------------------------ write targets ----

def _operands(args, takes=(), options=None):
    """The non-option arguments (options in `takes` consume the next word; `--` ends
    the options). `options`, a list, receives each option as (option, the next word when
    it takes one and there is one, else None), for a caller that reads some of them."""
    found, i, done = [], 0, False
    while i < len(args):
        arg = args[i]
        if not done and arg == "--":
            done = True
        elif not done and arg.startswith("-") and len(arg) > 1:
            value = args[i + 1] if arg in takes and i + 1 < len(args) else None
            if options is not None:
                options.append((arg, value))
            if arg in takes:
                i += 1
        else:
            found.append(arg)
        i += 1
    return found


def _diff_paths(text, strip=None):
    """The file names a unified diff touches (--- / +++ headers), each with the given
    number of leading components stripped, or with 0, 1 and all when unknown."""
    paths = []
    for line in text.splitlines():
        if line.startswith(("--- ", "+++ ", "diff --git ")):
            names = line.split()[2:] if line.startswith("diff --git") else [line[4:].split("\t")[0].strip()]
            for name in names:
                if name == "/dev/null" or not name:
                    continue
                parts = name.split("/")
                for count in ([strip] if strip is not None else [0, 1, len(parts) - 1]):
                    if 0 <= count < len(parts):
                        paths.append("/".join(parts[count:]))
    return paths


def _patch_text(command, cwd, files):
    """The diff a `patch` reads: its heredocs and here-strings, then the patch files and
    the file redirected to its stdin (the first MiB of each)."""
    texts = list(command.heredocs)
    texts += [target for op, target in command.redirs if op == "<<<"]
    texts += _read_texts(cwd, files + [target for op, target in command.redirs if op == "<"])
    return "\n".join(texts)


def _strip_option(args, short, long):
    for i, arg in enumerate(args):
        if arg == short and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(short) and len(arg) > len(short) and not arg.startswith("--"):
            return arg[len(short):]
        if arg.startswith(long + "="):
            return arg.split("=", 1)[1]
    return None


_COPY_TAKES = {
    "cp": ("-S", "--suffix"), "mv": ("-S", "--suffix"), "ln": ("-S", "--suffix"),
    "install": ("-m", "-o", "-g", "-S", "--mode", "--owner", "--group", "--suffix"),
    "rsync": ("-e", "--rsh", "--exclude", "--include", "--filter", "-f", "--files-from",
              "--exclude-from", "--include-from", "--rsync-path", "--log-file", "--partial-dir",
              "--backup-dir", "--compare-dest", "--link-dest", "--copy-dest", "--chmod",
              "--chown", "-T", "--temp-dir", "-B", "--block-size", "--port"),
    "scp": ("-P", "-i", "-o", "-F", "-c", "-l", "-S", "-J"),
}


def _copy_destination(program, options):
    """(target directory or None, whether -T forbids one, whether it only makes
    directories) from the options of cp/mv/install/ln (-t DIR, -tDIR,
    --target-directory[=]DIR, -T; install -d), the last -t winning."""
    target_dir, no_target_dir = None, False
    for arg, value in options:
        if program in ("cp", "mv", "install", "ln"):
            if arg in ("-t", "--target-directory") and value is not None:
                target_dir = value
            elif arg.startswith("--target-directory="):
                target_dir = arg.split("=", 1)[1]
            elif arg.startswith("-t") and not arg.startswith("--"):
                target_dir = arg[2:]
            elif arg in ("-T", "--no-target-directory"):
                no_target_dir = True
        if program == "install" and arg in ("-d", "--directory"):
            return None, False, True
    return target_dir, no_target_dir, False


def _copy_targets(program, args, cwd):
    """What cp/mv/install/ln/rsync/scp write: the destination (a file, or each source's
    name inside a destination directory, -t DIR included), the files a directory copy
    lands on, and for mv the sources too (they disappear)."""
    takes = _COPY_TAKES.get(program, ())
    if program in ("cp", "mv", "install", "ln"):
        takes += ("-t", "--target-directory")
    options = []
    operands = _operands(args, takes, options)
    target_dir, no_target_dir, directories_only = _copy_destination(program, options)
    if directories_only:
        return []
    full = lambda p: os.path.join(cwd, os.path.expanduser(p))
    if target_dir is not None:
        sources, dest_dir = operands, target_dir
    elif program == "ln" and len(operands) == 1:
        sources, dest_dir = operands, "."
    elif len(operands) >= 2:
        sources, dest = operands[:-1], operands[-1]
        if program in ("rsync", "scp") and ":" in dest.split("/", 1)[0]:
            return []  # a remote destination
        if no_target_dir or not (dest.endswith("/") or os.path.isdir(full(dest))):
            targets = [(dest, "file")]
            if len(sources) == 1 and os.path.isdir(full(sources[0])) and program != "ln":
                targets += _tree_copy(full(sources[0]), dest)
            return targets + ([(s, "tree") for s in sources] if program == "mv" else [])
        dest_dir = dest
    else:
        return []
    targets = []
    for source in sources:
        name = os.path.basename(source.rstrip("/")) or source
        if name in (".", "..") or (program == "rsync" and source.endswith("/")
                                   and not os.path.isdir(full(source))):
            targets.append((dest_dir, "tree"))  # a directory's contents, unknown here
            continue
        if program == "rsync" and source.endswith("/"):
            targets += _tree_copy(full(source), dest_dir)
            continue
        targets.append((os.path.join(dest_dir, name), "tree" if program == "mv" else "file"))
        if os.path.isdir(full(source)) and program != "ln":
            targets += _tree_copy(full(source), os.path.join(dest_dir, name))
        if program == "mv":
            targets.append((source, "tree"))
    return targets


def _tree_copy(source_dir, dest_dir, limit=5000):
    """The files a recursive copy of source_dir writes under dest_dir (at most `limit`)."""
    targets = []
    for root, dirs, files in os.walk(source_dir):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), source_dir)
            targets.append((os.path.join(dest_dir, rel), "file"))
            if len(targets) >= limit:
                return targets
    return targets


_CODE_WRITES = (r"open\([^)]*,\s*(?:mode\s*=\s*)?['\"][rbt]*[wax+]|(?<!stdout)(?<!stderr)\.write\(|"
                r"write_text|write_bytes|unlink|os\.remove|rename|os\.replace|rmtree|shutil\.|"
                r"truncate|writeFile|appendFile|rmSync|File\.write|File\.open\([^)]*['\"][wa]|"
                r"IO\.write|FileUtils|open\s*\([^,)]*,\s*['\"]\+?>")


def _code_targets(code):
    """Paths quoted in interpreter code that writes files (a heuristic: the guard only
    cares whether one of them is protected)."""
    import re
    if not re.search(_CODE_WRITES, code):
        return []
    literals = re.findall(r"['\"]([^'\"\n]{1,300})['\"]", code)
    return [(literal.lstrip("+<>& ") or literal, "file") for literal in literals]  # perl's ">file"


def _git_targets(args, cwd):
    """(targets, cwd) of a git command: pathspecs that checkout/restore/reset/stash/clean/
    rm/mv/apply would rewrite; -C DIR moves the directory."""
    i = 0
    while i < len(args) and args[i].startswith("-"):
        if args[i] in ("-C", "-c", "--git-dir", "--work-tree", "--namespace") and i + 1 < len(args):
            if args[i] == "-C":
                cwd = os.path.join(cwd, args[i + 1])
            i += 2
        else:
            i += 1
    if i >= len(args):
        return [], cwd
    sub, rest = args[i], args[i + 1:]
    paths_after = rest[rest.index("--") + 1:] if "--" in rest else None
    before = rest[:rest.index("--")] if "--" in rest else rest

    def existing(words, takes=()):
        return [w for w in _operands(words, takes) if w in (".", "*", ":/") or
                os.path.lexists(os.path.join(cwd, w))]

    trees = []
    if sub in ("checkout", "restore"):
        takes = ("-b", "-B", "--orphan", "-s", "--source", "--conflict", "--pathspec-from-file")
        trees = (paths_after or []) + existing(before, takes)
        if sub == "restore" and paths_after is None:
            trees = _operands(before, takes)
    elif sub == "reset":
        trees = (paths_after or []) + existing(before)
        revs = [w for w in _operands(before) if w not in trees]
        if "--hard" in rest and any(r not in ("HEAD", "@") for r in revs):
            trees.append(".")  # resets every tracked file to another commit
    elif sub == "stash":
        action = rest[0] if rest and not rest[0].startswith("-") else "push"
        if action in ("push", "save"):
            if any(a in ("-u", "--include-untracked", "-a", "--all") for a in rest):
                trees.append(".")
            trees += paths_after or []
    elif sub == "clean":
        flags = "".join(a[1:] for a in before if a.startswith("-") and not a.startswith("--"))
        forced = "f" in flags or "--force" in rest
        if forced and "n" not in flags and "--dry-run" not in rest:
            trees = (paths_after or []) + _operands(before, ("-e", "--exclude")) or ["."]
    elif sub in ("rm", "mv"):
        trees = (paths_after or []) + _operands(before)
    elif sub == "apply":
        if not any(a in ("--check", "--stat", "--numstat", "--summary") for a in rest):
            strip = _strip_option(rest, "-p", "--p")
            return [(p, "file") for p in _diff_paths(
                "\n".join(_read_texts(cwd, _operands(before))), int(strip) if (strip or "").isdigit() else 1)], cwd
    return [(p, "tree") for p in trees], cwd


def _read_texts(cwd, names):
    """The first MiB of each named file that can be read, as text (a guess at a diff
    needs no more; an unreadable name is skipped)."""
    texts = []
    for name in names:
        try:
            with open(os.path.join(cwd, name), "rb") as handle:
                texts.append(handle.read(1 << 20).decode("utf-8", "replace"))
        except OSError:
            pass
    return texts


def _cluster_value(args, letter, long):
    """Values of a short option that may be clustered (-sSLo FILE, -oFILE) or long."""
    values, i = [], 0
    while i < len(args):
        arg = args[i]
        if arg.startswith(long + "="):
            values.append(arg.split("=", 1)[1])
        elif arg == long and i + 1 < len(args):
            values.append(args[i + 1])
            i += 1
        elif arg.startswith("-") and not arg.startswith("--") and letter in arg[1:]:
            rest = arg[arg.index(letter, 1) + 1:]
            if rest:
                values.append(rest)
            elif i + 1 < len(args):
                values.append(args[i + 1])
                i += 1
        i += 1
    return values


def _sed_targets(args):
    """The files `sed -i` rewrites: its operands, less the script when no -e/-f gave one."""
    if not any(a.startswith("--in-place") or (a.startswith("-") and not a.startswith("--")
                                              and "i" in a[1:]) for a in args):
        return []
    has_script = any(a in ("-e", "-f", "--expression", "--file") or
                     a.startswith(("--expression=", "--file=")) for a in args)
    files = _operands(args, ("-e", "-f", "--expression", "--file", "-l", "--line-length"))
    return [(p, "file") for p in (files if has_script else files[1:])]


def _perl_targets(command, args):
    """The files `perl -i` rewrites (its operands, less the script when no -e gave one);
    without -i, what its one-liner writes."""
    clusters = [a for a in args if a.startswith("-") and not a.startswith("--") and len(a) > 1
                and a[1] not in "MmIdDx"]
    if not any("i" in a[1:] for a in clusters):
        return _interpreter_targets(command, args)
    files, code, i = [], False, 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("-") and len(arg) > 1 and not arg.startswith("--"):
            if arg[-1] in "eE" and arg[1] not in "MmIdDx":
                code = True
                i += 1
        else:
            files.append(arg)
        i += 1
    return [(p, "file") for p in (files if code else files[1:])]


def _awk_targets(args):
    """The files gawk's inplace extension rewrites: its operands (not var=value), less
    the program when no -f gave one."""
    joined = " ".join(args)
    if not ("-i inplace" in joined or "-iinplace" in joined or "--include=inplace" in joined
            or "--include inplace" in joined):
        return []
    files = [a for a in _operands(args, ("-v", "-f", "-F", "-i", "--include", "--assign",
                                         "--file", "--field-separator"))
             if not _is_assignment(a)]
    has_file = any(a in ("-f", "--file") for a in args)
    return [(p, "file") for p in (files if has_file else files[1:])]


def _mode_targets(args):
    """The files chmod/chown/chgrp/setfacl/chattr change: the operands after the mode or
    owner (all of them with --reference); a mode such as -w is not an option."""
    import re
    words = [a for a in args if a != "--" and not (a.startswith("-") and not re.match(
        r"-[rwxXstugoa=+,0-7]+\Z", a))]
    reference = any(a.startswith("--reference") for a in args)
    return [(p, "file") for p in (words if reference else words[1:])]


def _curl_targets(args):
    """The files curl writes: -o/--output values, the URL's last component with -O,
    under --output-dir."""
    values = _cluster_value(args, "o", "--output")
    if any(a in ("-O", "--remote-name", "--remote-name-all") or
           (a.startswith("-") and not a.startswith("--") and "O" in a[1:]) for a in args):
        values += [os.path.basename(u.split("?")[0].rstrip("/")) for u in _operands(args)
                   if "://" in u]
    directory = (_cluster_value(args, "\0", "--output-dir") or [""])[-1]
    return [(os.path.join(directory, v), "file") for v in values if v and v != "-"]


def _patch_targets(command, args, cwd):
    """The files `patch` writes: -o FILE alone, else the file it is given and every file
    the diff names (read from -i, a second operand, stdin or a heredoc), under -d DIR."""
    output_file = _strip_option(args, "-o", "--output")
    if output_file:
        return [(output_file, "file")]
    strip = _strip_option(args, "-p", "--strip")
    directory = _strip_option(args, "-d", "--directory") or ""
    operands = _operands(args, ("-p", "-i", "-o", "-d", "-D", "-F", "-z", "-B", "-Y", "-V",
                                "--input", "--directory", "--strip", "-r"))
    patch_files = [v for v in [_strip_option(args, "-i", "--input")] if v] + operands[1:2]
    targets = []
    if operands:
        targets = [(os.path.join(directory, operands[0]), "file")]
    text = _patch_text(command, cwd, patch_files)
    targets += [(os.path.join(directory, p), "file") for p in _diff_paths(
        text, int(strip) if (strip or "").isdigit() else None)]
    return targets


def _package_script_targets(args):
    """The package.json entries `npm pkg set|delete` and `set-script` change."""
    words = [a for a in args if not a.startswith("-")]
    if words[:2] in (["pkg", "set"], ["pkg", "delete"]):
        return [("package.json", "entry:" + word.split("=", 1)[0]) for word in words[2:]]
    if words[:1] == ["set-script"] and len(words) > 1:
        return [("package.json", "entry:scripts." + words[1])]
    return []


def command_writes(command, program, args, cwd):
    """[(path, kind)] one simple command would write; kind "file", "tree" (anything
    under it) or "entry:scripts.NAME" (one package.json script)."""
    if program in ("tee", "sponge"):
        return [(p, "file") for p in _operands(args)]
    if program in ("sed", "gsed"):
        return _sed_targets(args)
    if program == "perl":
        return _perl_targets(command, args)
    if program in ("awk", "gawk"):
        return _awk_targets(args)
    if program in ("cp", "mv", "install", "ln", "rsync", "scp", "gcp", "gmv"):
        return _copy_targets(program.lstrip("g") if program in ("gcp", "gmv") else program, args, cwd)
    if program in ("rm", "unlink", "shred", "srm", "trash", "trash-put"):
        return [(p, "tree") for p in _operands(args)]
    if program == "truncate":
        return [(p, "file") for p in _operands(args, ("-s", "--size", "-r", "--reference"))]
    if program in ("chmod", "chown", "chgrp", "setfacl", "chattr"):
        return _mode_targets(args)
    if program == "dd":
        return [(a[3:], "file") for a in args if a.startswith("of=")]
    if program == "curl":
        return _curl_targets(args)
    if program == "wget":
        return [(v, "file") for v in _cluster_value(args, "O", "--output-document") if v != "-"]
    if program == "patch":
        return _patch_targets(command, args, cwd)
    if program in ("npm", "pnpm", "yarn", "bun"):
        return _package_script_targets(args)
    if program.startswith(_CODE_PROGRAMS):
        return _interpreter_targets(command, args)
    return []


def _interpreter_targets(command, args):
    """What a one-liner (-c/-e code, or a heredoc fed to the interpreter) writes."""
    targets = []
    code = [args[i + 1] for i, a in enumerate(args[:-1])
            if a in ("-c", "-e", "-E", "--eval", "-r", "-p", "--print") or
            (a.startswith("-") and not a.startswith("--") and a[-1] in "eE" and a[1:2] not in "MmIdDx")]
    for text in code + list(command.heredocs):
        targets += _code_targets(text)
    return targets


def bash_write_targets(commands, cwd, depth=0):
    """[(absolute path, kind, how)] every write the command line would make that the
    reader recognizes; `cd DIR` moves the directory later paths resolve against."""
    found = []
    for command in commands:
        for op, target in command.redirs:
            if op in (">", ">>", ">|", "&>", "&>>", "<>") or (
                    op == ">&" and not target.isdigit() and target != "-"):
                found.append((os.path.join(cwd, os.path.expanduser(target)), "file", "a redirection (%s)" % op))
        program, args, _, _, nested = command_program(command.words)
        if nested is not None:
            inner = nested_commands(nested, depth, _WRAPPED_DEPTH)
            if inner:
                found += bash_write_targets(inner, cwd, depth + 1)
            continue
        if program in ("cd", "pushd") and not command.nested:
            if args and args[0] not in ("-", "--"):
                cwd = os.path.join(cwd, os.path.expanduser(args[0]))
            continue
        if program == "git":
            targets, git_cwd = _git_targets(args, cwd)
            found += [(os.path.join(git_cwd, os.path.expanduser(p)), kind, "git " + " ".join(args[:1]))
                      for p, kind in targets]
            continue
        for path, kind in command_writes(command, program, args, cwd):
            found.append((os.path.join(cwd, os.path.expanduser(path)), kind, program))
    return found


# -------------------------------------------------------------------- hooks ----

# Claude Code calls these with a JSON payload on stdin. A hook never fails loudly:
# with no session, a malformed payload or any error it exits 0 and stays silent.


def payload_object(data):
    """The JSON object Claude Code sends on stdin (bytes or text); {} for anything else,
    so a hook or the status line never fails on what it is given."""
    try:
        payload = json.loads(data.decode("utf-8", "replace") if isinstance(data, bytes) else data)
    except (ValueError, RecursionError):
        return {}
    return payload if isinstance(payload, dict) else {}


def read_payload(stream=None):
    stream = stream or sys.stdin
    try:
        data = stream.buffer.read() if hasattr(stream, "buffer") else stream.read()
    except (ValueError, OSError):
        return {}
    return payload_object(data)


def payload_cwd(payload):
    """The payload's directory when it is one that exists, else ours."""
    cwd = payload.get("cwd")
    return cwd if isinstance(cwd, str) and os.path.isdir(cwd) else os.getcwd()


def loop_at(cwd):
    """The loop `cwd` belongs to, or None when it has no log or cannot be found (a
    broken config means defaults, and loop.config_error says so: a typo must
    not switch the guard off)."""
    try:
        loop = find_loop(cwd, lenient=True)
        return loop if loop.exists() else None
    except (AutotuneError, OSError):
        return None


def loop_state(loop):
    """The loaded state of a loop that has a config line, or None (unreadable, or not
    initialized)."""
    try:
        loaded = load_state(loop)
    except (AutotuneError, OSError):
        return None
    return loaded if loaded.state.config is not None else None


def payload_loop(payload):
    """(loop, loaded state) of the loop in the payload's directory, or (None, None)."""
    loop = loop_at(payload_cwd(payload))
    loaded = loop_state(loop) if loop is not None else None
    return (loop, loaded) if loaded is not None else (None, None)


def tail_entries(loop, start, count, kinds=("result",)):
    """The last `count` log entries of the given kinds after byte offset `start`,
    read from the end of the file (cost independent of the log's length)."""
    found = []
    with open(loop.log_path, "rb") as handle:
        for raw in lines_backward(handle, start):
            if len(found) >= count:
                break
            entry = parse_line(raw) if raw.strip() else None
            if entry is not None and entry.get("type") in kinds:
                found.append(entry)
    return list(reversed(found))


def resume_prompt(loop, state):
    action, advice = next_action(state)
    best = (state.best or {}).get("metric")
    unit = (state.config or {}).get("metric_unit") or ""
    return ("Continue the autotune loop in %s: it is active (%s, %d runs in segment %d, best %s). "
            "Re-read autotune.md and `autotune explain`, then keep going: one focused change, "
            "`autotune run`, `autotune log --status auto --description ... --asi '{...}'`. "
            "Next action: %s — %s Stop only when `autotune explain` says the loop is stopped, "
            "paused or complete." % (loop.workdir, state.health, state.n_exp, state.segment,
                            fmt_metric(best, unit), action, advice))


def hook_stop(payload):
    loop, loaded = payload_loop(payload)
    if loop is None:
        return None
    state = clock_state(loop, loaded.state, time.time())
    mode = loop.settings.auto_resume
    if (mode == "off" or not state.active or state.health in ("paused", "stopped", "completed")
            or state.n_exp == 0):
        return None
    session_id = payload.get("session_id")
    owner = state.session_id
    if mode == "prompt":
        if owner and session_id != owner:
            return None
        return {"systemMessage": "autotune: the loop in %s is still active (%d runs, %s). Resume "
                "it with `claude --agent autotune` or `autotune start`; stop it with `autotune "
                "stop`.%s" % (loop.workdir, state.n_exp, state.health, (
                    " Its config is broken, so defaults apply: %s Run `autotune doctor`." %
                    loop.config_error) if loop.config_error else "")}
    if not owner or session_id != owner:
        return None  # never hijack a session that does not run the loop
    settings = loop.settings
    if mode == "continue":
        streak = state.stop_streak + 1 if payload.get("stop_hook_active") is True else 1
        if streak > settings.max_consecutive_blocks or state.stop_blocks >= settings.max_blocks:
            total = state.stop_blocks >= settings.max_blocks
            return resume_cap_message(loop, state, "total" if total else "consecutive", (
                "%d automatic resumes in this segment (resume.maxBlocks)" % settings.max_blocks if total
                else "%d automatic resumes in a row (resume.maxConsecutiveBlocks)"
                % settings.max_consecutive_blocks))
        entry = {"type": "hook", "event": "stop", "action": "block", "streak": streak,
                 "session_id": session_id, "timestamp": utc_now()}
        if not _append_quietly(loop, entry):
            return None
        return {"decision": "block", "reason": resume_prompt(loop, state)}
    if mode == "headless":
        return headless_resume(loop, state, session_id)
    return None


def resume_cap_message(loop, state, cap, what):
    """The Stop hook's last message when it stops resuming because it reached a cap: said
    once (a `capped` hook line remembers it), silent after."""
    if state.resume_capped == cap or not _append_quietly(loop, {
            "type": "hook", "event": "stop", "action": "capped", "cap": cap, "timestamp": utc_now()}):
        return None
    return {"systemMessage": "autotune: stopped resuming the loop in %s: it reached its cap of %s. "
            "The loop is still active (%d runs, %s): continue it with `claude --agent autotune` or "
            "`autotune start`, or raise the cap in %s." % (
                loop.workdir, what, state.n_exp, state.health, CONFIG_FILE)}


def _append_quietly(loop, entry):
    try:
        with LogLock(loop) as lock:
            loaded = load_state(loop)
            if loaded.torn:
                return False
            append_entries(lock, loop, loaded, [entry])
        return True
    except (AutotuneError, OSError):
        return False


def headless_resume(loop, state, caller=None):
    """Starts `claude -p ... --agent autotune` detached: at most maxResumes, spaced by
    minMinutesBetween, never while the last one it started is still running."""
    import shutil
    import subprocess
    import uuid
    settings = loop.settings
    if state.resume_count >= settings.max_resumes:
        return resume_cap_message(loop, state, "headless", "%d headless resumes (resume.maxResumes)"
                                  % settings.max_resumes)
    if state.resume_at and time.time() - state.resume_at < settings.resume_interval_min * 60:
        return None
    pid_file = loop.cache("headless.pid", create=True)
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
    log_path = loop.cache("headless.log", create=True)
    with open(log_path, "ab") as log_handle:
        proc = subprocess.Popen([claude, "-p", resume_prompt(loop, state), "--agent", "autotune",
                                 "--session-id", new_id], cwd=loop.workdir,
                                stdin=subprocess.DEVNULL, stdout=log_handle, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    write_atomic(pid_file, ("%d %s" % (proc.pid, new_id)).encode())
    _append_quietly(loop, {"type": "resume", "via": "headless", "pid": proc.pid,
                              "session_id": new_id, "timestamp": utc_now()})
    return {"systemMessage": "autotune: resumed the loop in a headless session (resume %d of %d, "
            "pid %d, output in %s)." % (state.resume_count + 1, settings.max_resumes, proc.pid, log_path)}


# ------------------------------------------------------------ command guard ----

def classify_run_command(command, commands=False):
    """Whether a Bash command runs `autotune run`, and whether it does so plainly.

    Returns (invokes_run, plain, run_args): plain means a single simple command whose
    program is autotune (bin/autotune, autotune.py via python, or run-experiment.sh),
    with no operators, redirections, substitutions, assignments or wrappers around it.
    A command that merely mentions `autotune run` in its data (a commit message, a
    grep pattern) does not invoke it. The command is judged without its surrounding
    blank space (`autotune run` followed by a newline is plain): `commands` is
    shell_parse of that text when the caller has read it already (None when it does
    not parse), False to read it here."""
    import re
    if not isinstance(command, str):
        return False, False, []
    if "autotune" not in command and "run-experiment" not in command:
        return False, True, []
    mentions = re.search(r"(?:autotune(?:\.py)?['\"]?\s+(?:\S+\s+)*?run\b|run-experiment)", command)
    if commands is False:
        commands = shell_parse(command.strip())
    if commands is None:
        return (True, False, []) if mentions else (False, True, [])
    found = run_invocations(commands)
    if not found:
        for simple in commands if mentions else ():
            program, args, _, _, nested = command_program(simple.words)
            if program in _SHELL_PROGRAMS and nested is None and not args:
                return True, False, []  # `echo "autotune run" | bash`: a shell reading its stdin
            if program.startswith(_CODE_PROGRAMS) and any(
                    a in ("-c", "-e", "-E", "--eval") for a in args) and re.search(
                    r"autotune\S*['\"]?(?:\s*,\s*['\"]|\s+)run\b|run-experiment", " ".join(args)):
                return True, False, []  # os.system('autotune run') and the like
        return False, True, []
    args, plain = found[0]
    plain = (plain and len(found) == 1 and len(commands) == 1 and not commands[0].redirs
             and not commands.operators)
    return True, plain, args


def _run_command_values(args):
    values = []
    for i, arg in enumerate(args):
        if arg == "--command":
            values.append(args[i + 1] if i + 1 < len(args) else "")
        elif arg.startswith("--command="):
            values.append(arg[len("--command="):])
    return values


# A Bash command without any of these words cannot write a file the guard knows how to
# recognize nor run the benchmark: the hook answers it without reading the loop.
_BASH_HINT = (r"[>]|\b(?:tee|sponge|g?sed|perl|g?awk|g?cp|g?mv|install|ln|rsync|scp|unlink|s?rm|shred|"
              r"trash(?:-put)?|truncate|ch(?:mod|own|grp|attr)|setfacl|dd|curl|wget|patch|git|npm|pnpm|yarn|"
              r"bun|python[\d.]*|pypy3?|"
              r"node|ruby|php|deno|bash|sh|zsh|dash|ksh|eval|xargs|autotune|run-experiment)\b")
_EDIT_TOOLS = ("Edit", "Write", "MultiEdit", "NotebookEdit")


def hook_pre_tool_use(payload):
    """Denies what would move the judge of an active loop: a write (Edit, Write, or a
    Bash command) to autotune's records, the benchmark, its config or a protected input,
    and an `autotune run` that is not called on its own."""
    import re
    tool = payload.get("tool_name")
    tool_input = payload.get("tool_input") if isinstance(payload.get("tool_input"), dict) else {}
    cwd = payload_cwd(payload)
    if tool == "Bash":
        command = tool_input.get("command")
        if not isinstance(command, str) or not re.search(_BASH_HINT, command):
            return None
        reason = bash_denial(command, Guards(cwd))
    elif tool in _EDIT_TOOLS:
        path = tool_input.get("file_path") or tool_input.get("notebook_path")
        if not isinstance(path, str) or not path or "\0" in path:
            return None
        full = os.path.join(cwd, os.path.expanduser(path))
        reason = Guards(cwd).reason(full, "file", None, lambda: edited_content(full, tool, tool_input))
    else:
        return None
    if not reason:
        return None
    return {"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "deny",
                                   "permissionDecisionReason": reason}}


def edited_content(path, tool, tool_input):
    """The bytes a Write/Edit/MultiEdit would leave in `path`, or None when unknown."""
    if tool == "Write":
        content = tool_input.get("content")
        return content.encode("utf-8", "surrogateescape") if isinstance(content, str) else None
    data = _read_bytes(path)
    if data is None or tool not in ("Edit", "MultiEdit"):
        return None
    text = data.decode("utf-8", "surrogateescape")
    edits = tool_input.get("edits") if tool == "MultiEdit" else [tool_input]
    for edit in edits if isinstance(edits, list) else []:
        if not isinstance(edit, dict):
            return None
        old, new = edit.get("old_string"), edit.get("new_string")
        if not isinstance(old, str) or not isinstance(new, str) or old not in text:
            return None
        text = text.replace(old, new) if edit.get("replace_all") is True else text.replace(old, new, 1)
    return text.encode("utf-8", "surrogateescape")


def bash_denial(command, guards):
    """Why a Bash command must not run while a loop is active, or None. The command is
    read once: the writes are looked for in it as Bash reads it, and the run check reads
    the same words unless blank space around the command changes them (then it reads
    the trimmed text, as classify_run_command does)."""
    commands = shell_parse(command)
    invokes, plain, args = classify_run_command(
        command, commands if command == command.strip() else False)
    if invokes:
        guard = guards.at(guards.cwd)
        if guard is not None:
            if not plain:
                return ("autotune: `autotune run` must be called on its own, as `autotune run` "
                        "(optionally --command ./autotune.sh, --timeout, --repeat): no other "
                        "commands, pipes, redirections, substitutions, variable assignments or "
                        "wrappers around it (to change directory, run `cd DIR` as a command of "
                        "its own first).")
            workdir = guard.loop.workdir
            for value in _run_command_values(args):
                if os.path.isfile(os.path.join(workdir, BENCH_FILE)) and not is_benchmark_command(value, workdir):
                    return ("autotune: %s is not the benchmark. While autotune.sh exists the loop "
                            "measures only ./autotune.sh; run `autotune run` without --command." %
                            json.dumps(value))
        if plain:
            return None
    if commands is None:
        return None  # Bash cannot run it either
    for path, kind, how in bash_write_targets(commands, guards.cwd):
        if "\0" in path:
            continue  # not a path Bash could open
        reason = guards.reason(path, kind, how)
        if reason:
            return reason
    return None


def glob_regex(pattern):
    """A `protect` glob as a compiled regex over relative paths: `**` spans directories,
    `*` and `?` stay within one, [abc] is a class."""
    import re
    out, i, n = [], 0, len(pattern)
    while i < n:
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2:]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1:end]
            out.append("[%s%s]" % ("^" if body.startswith("!") else "", re.escape(body.lstrip("!"))))
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out).rstrip("/") + r"(?:/.*)?\Z")


def _glob_prefix(pattern):
    """The directory part of a glob before its first wildcard ("tests/**" -> "tests")."""
    parts = []
    for part in pattern.split("/"):
        if any(c in part for c in "*?["):
            break
        parts.append(part)
    return "/".join(parts)


def real_target(path):
    """Where a write to `path` lands: symlinks followed, also for a file not created yet."""
    if os.path.lexists(path):
        return os.path.realpath(path)
    return os.path.join(os.path.realpath(os.path.dirname(path) or "."), os.path.basename(path))


class Guard(object):
    """What an active loop protects from the agent's tools, for the PreToolUse hook:
    autotune's own records always; from the baseline on, the benchmark, checks, holdout,
    config and the protected inputs (the `protect` globs and what defines the commands
    the benchmark calls). Paths are compared after following symlinks, and hard links
    are recognized by their inode."""

    def __init__(self, loop, state):
        self.loop, self.state = loop, state
        self.root = os.path.realpath(loop.workdir)
        self.names = guarded_files(loop, state)
        inputs = state.inputs if (state.n_exp and isinstance(state.inputs, dict)) else {}
        self.files, self.entries = set(), {}
        for key in inputs:
            name, _, part = key.partition("#")
            if part:
                self.entries.setdefault(os.path.normpath(name), []).append(key)
            else:
                self.files.add(os.path.normpath(key))
        globs = loop.settings.protect if state.n_exp else []
        self.globs = [(g, glob_regex(g), _glob_prefix(g)) for g in globs]

    def _inodes(self):
        found = {}
        for rel in list(self.names) + sorted(self.files)[:500]:
            try:
                st = os.stat(os.path.join(self.root, rel))
                found[(st.st_dev, st.st_ino)] = rel
            except OSError:
                pass
        return found

    def reason(self, path, kind="file", how=None, content=None):
        """Why a write of `kind` to `path` must be denied, or None. `content`, when
        known (an Edit or Write), lets a file with protected entries (package.json's
        scripts) be edited where the entries stay the same."""
        real = real_target(path)
        rel = os.path.relpath(real, self.root).replace(os.sep, "/")
        inside = rel != ".." and not rel.startswith("../")
        if inside and kind == "tree":
            found = self._tree_reason(rel, how)
            if found and found[1] != rel:  # a directory that holds protected files
                return ("autotune: %s on %s would reach %s; name the files you mean instead "
                        "(to undo an experiment, `autotune log --status discard` reverts it). %s" % (
                            how or "this command", rel, found[1], found[0][len("autotune: "):]))
            if found:
                return found[0]
        elif inside:
            found = self._file_reason(rel, kind, content, how)
            if found:
                return found
        cache = os.path.realpath(os.path.dirname(self.loop.cache_dir))  # <git dir>/autotune
        if real == cache or real.startswith(cache + os.sep) or (
                kind == "tree" and cache.startswith(real.rstrip(os.sep) + os.sep)):
            return ("autotune: %s is autotune's private cache of the loop (the benchmark lock, "
                    "the snapshot index, the last run); only autotune writes it." % path)
        try:
            st = os.stat(real)
        except OSError:
            return None
        if st.st_nlink > 1:
            linked = self._inodes().get((st.st_dev, st.st_ino))
            if linked:
                base = self._file_reason(linked, "file", None, how) or guard_reason(linked, self.state)
                return base.replace("autotune: ", "autotune: %s is a hard link to %s: " % (
                    path, linked), 1)
        return None

    def _file_reason(self, rel, kind, content, how):
        if rel in self.names:
            return guard_reason(rel, self.state)
        if rel in self.files:
            return self._input_reason(rel, how, self._pattern_of(rel))
        if rel in self.entries:
            keys = self.entries[rel]
            if kind.startswith("entry:"):
                entry = kind[len("entry:"):]
                stem = entry.split(".", 1)[-1]
                touched = [k for k in keys if k.partition("#")[2] in (
                    entry, "scripts." + stem[3:] if stem.startswith("pre") else None,
                    "scripts." + stem[4:] if stem.startswith("post") else None)]
                return self._input_reason(touched[0], how) if touched else None
            data = content() if callable(content) else content
            if data is not None:
                changed = [k for k in keys if _input_digest_of(data, k.partition("#")[2])
                           != self.state.inputs.get(k)]
                return self._input_reason(changed[0], how) if changed else None
            return self._input_reason(keys[0], how)
        for pattern, regex, _ in self.globs:
            if regex.match(rel):
                return self._input_reason(rel, how, pattern)
        return None

    def _tree_reason(self, rel, how):
        """(reason, first protected path) for an operation on everything under `rel`."""
        under = lambda name: rel == "." or name == rel or name.startswith(rel.rstrip("/") + "/")
        for name in self.names:
            if under(name):
                return guard_reason(name, self.state), name
        for name in sorted(self.files) + sorted(self.entries):
            if under(name):
                return self._input_reason(name, how, self._pattern_of(name)), name
        for pattern, regex, prefix in self.globs:
            if rel == "." or under(prefix) or regex.match(rel) or prefix.startswith(rel.rstrip("/") + "/"):
                return self._input_reason(rel, how, pattern), prefix or rel
        return None

    def _pattern_of(self, rel):
        return next((pattern for pattern, regex, _ in self.globs if regex.match(rel)), None)

    def _input_reason(self, key, how, pattern=None):
        why = ("it matches `protect` %s in %s" % (json.dumps(pattern), CONFIG_FILE) if pattern
               else "it defines a command the benchmark or checks call")
        return ("autotune: %s is a protected input of the active segment %d (%s), hashed at its "
                "baseline: a change to it would move the judge, not measure the code%s. Change "
                "the code under test instead; to change it, `autotune stop`, change it, then start "
                "a new segment with `autotune init`." % (
                    key, self.state.segment, why, (" (denied: %s)" % how) if how else ""))


class Guards(object):
    """The guards of the loops a tool call may touch: the one of the session's cwd and
    the one of each target's own directory (a loop in a subdirectory is guarded from its
    parent too). Each loop is read once per hook call."""

    def __init__(self, cwd):
        self.cwd = cwd
        self.by_dir, self.by_root = {}, {}

    def at(self, directory):
        probe = directory
        while probe and not os.path.isdir(probe):
            parent = os.path.dirname(probe)
            if parent == probe:
                return None
            probe = parent
        if probe not in self.by_dir:
            loop = loop_at(probe)
            self.by_dir[probe] = self._loop_guard(loop) if loop is not None else None
        return self.by_dir[probe]

    def _loop_guard(self, loop):
        """The guard of an active loop, None for any other, read once per loop: the
        directories of one loop share it without reading its log again."""
        root = os.path.realpath(loop.workdir)
        if root not in self.by_root:
            loaded = loop_state(loop)
            self.by_root[root] = (Guard(loop, loaded.state)
                                  if loaded is not None and loaded.state.active else None)
        return self.by_root[root]

    def for_path(self, path):
        guards = []
        for guard in (self.at(self.cwd), self.at(os.path.dirname(real_target(path)))):
            if guard is not None and guard not in guards:
                guards.append(guard)
        return guards

    def reason(self, path, kind="file", how=None, content=None):
        for guard in self.for_path(path):
            found = guard.reason(path, kind, how, content)
            if found:
                return found
        return None


GUARDED_UNTIL_BASELINE = INTEGRITY_FILES + (CONFIG_FILE,)
GUARDED_ALWAYS = (LOG_FILE, STATE_FILE)


def guarded_files(loop, state):
    """What the agent may not change during an active segment: autotune's own records, a
    copy of autotune.py inside the working directory, and, once the baseline is logged,
    the benchmark, checks, holdout and config (changing them would move the goalposts)."""
    names = list(GUARDED_ALWAYS)
    if state.n_exp:
        names += GUARDED_UNTIL_BASELINE
    me = os.path.realpath(os.path.abspath(__file__))
    if os.path.dirname(me) == os.path.realpath(loop.workdir):
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


# -------------------------------------------------- Claude Code integration ----

def hook_session_start(payload):
    """The session that runs the loop gets the picture and "continue the loop"; any other
    session in the directory gets one line saying a loop is active and whose it is."""
    loop, loaded = payload_loop(payload)
    if loop is None or not loaded.state.active:
        return None
    state = loaded.state
    if runs_the_loop(payload, state):
        context = session_summary(loop, loaded)
    else:
        context = ("autotune: an optimization loop is active in %s (segment %d, %d runs, %s), "
                   "run by %s; this session is not asked to continue it. To work on it, start "
                   "`autotune start` (or `claude --agent autotune`); to look at it, `autotune "
                   "explain`." % (loop.workdir, state.segment, state.n_exp, state.health,
                                  ("session %s" % state.session_id) if state.session_id
                                  else "no Claude session yet"))
    return {"hookSpecificOutput": {"hookEventName": "SessionStart", "additionalContext": context}}


def runs_the_loop(payload, state):
    """The session that initialized or last logged the loop, a headless resume autotune
    started (its id is in the log), or a session started as the autotune agent
    (`autotune start` sets AUTOTUNE_AGENT; `claude --agent autotune` reports agent_type)."""
    session_id = payload.get("session_id")
    if state.session_id and session_id == state.session_id:
        return True
    agent = payload.get("agent_type")
    if isinstance(agent, str) and agent.split(":")[-1] == "autotune":
        return True
    return os.environ.get("AUTOTUNE_AGENT") == "1"


def session_summary(loop, loaded, recent=6):
    """A compact picture of the loop from the files on disk, for a fresh agent."""
    state = loaded.state
    data = explain_data(loop, loaded)
    unit = data.get("unit") or ""
    lines = ["autotune: an optimization loop is active in %s (segment %d of %d)." % (
        loop.workdir, state.segment, state.segments)]
    lines.append("Objective: %s — %s%s, %s is better." % (
        data.get("name"), data.get("metric"), (" (%s)" % unit) if unit else "", data.get("direction")))
    objective = _markdown_section(loop.path(NOTES_FILE), "objective")
    if objective:
        lines.append("From autotune.md: " + _one_line(objective, 300))
    lines.append("State: %s, %s mode; %s." % (state.health, state.mode, data["why"]))
    lines.append("Next action: %s — %s" % (data["next"], data["next_text"]))
    if data["best"] is not None:
        conf = data.get("confidence") or {}
        lines.append("Best: %s (%s) at %s, %s; confidence %s." % (
            fmt_metric(data["best"], unit), headline_text(data.get("best_pct"), data.get("verified"),
                                                          " vs baseline %s" % _fmt(data["baseline"])),
            data.get("best_commit"), json.dumps(_one_line(data.get("best_description") or "", 100),
                                                ensure_ascii=False),
            conf.get("label", "-")))
    rows = tail_entries(loop, state.config_offset or 0, recent)
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
    ideas = open_ideas(loop.path(IDEAS_FILE))
    if ideas:
        lines.append("Open ideas (autotune.ideas.md): " + " | ".join(ideas[:8]))
    lines.append("Resume: read autotune.md, run `autotune explain`, then continue the loop.")
    if loop.config_error:
        lines.append("Warning: %s (defaults apply until a person fixes it)." % loop.config_error)
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
        print_text("autotune hook %s: %s: %s" % (event, type(exc).__name__, exc), sys.stderr)
        answer = None
    if answer:  # Claude Code shows this text to a person: no control reaches their terminal
        print_json(clean_data(answer, keep="\n"))
    return 0


def statusline_text(payload, colors):
    """The status line: the loop's health and counters, then Claude's session facts."""
    parts = []
    workspace = payload.get("workspace") if isinstance(payload.get("workspace"), dict) else {}
    cwd = workspace.get("current_dir") or payload.get("cwd")
    loop, loaded = payload_loop({"cwd": cwd}) if isinstance(cwd, str) else (None, None)
    if loop is not None:
        state = loaded.state
        health = strip_controls(state.health or "running", "")
        text = "%s %s" % (HEALTH_ICON.get(health, "●"), health)
        if health == "stopped":
            text += " (autotune resume)"
        parts.append("autotune " + colors.paint(HEALTH_COLOR.get(health, "bold"), text)
                     + (colors.yellow(" ⚠ config") if loop.config_error else ""))
        parts.append("#%d" % state.n_exp)
        parts.append("keep %d · no-imp %d · crash %d" % (state.keep_streak, state.no_improve,
                                                        state.crash_streak))
        parts.append("heals %d/%d" % (state.heals, loop.settings.max_heals))
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
    try:
        raw = sys.stdin.buffer.read(4 << 20)
    except (ValueError, OSError):
        raw = b""
    payload = payload_object(raw)
    # colour by default, as before (Claude Code renders it); NO_COLOR or --no-color turn it off
    colors = Colors(sys.stdout, force="NO_COLOR" not in os.environ and not args.no_color)
    try:
        line = statusline_text(payload, colors)
    except Exception as exc:
        if os.environ.get("AUTOTUNE_DEBUG"):
            raise
        line = "autotune: status unavailable (%s)" % type(exc).__name__
    print_text(line, painted=colors.enabled)
    if args.chain:  # the user's own status line: its colours stay, nothing else of control
        print_text(strip_controls(chained_statusline(args.chain, raw), sgr=True), painted=True)
    return 0


def chained_statusline(command, payload):
    """Runs the user's other status-line command (their own settings, like the benchmark
    the one other command autotune hands to a shell) through the shell, as the old bash
    scripts did: `~`, pipes and variables work. It gets the same payload on stdin, and is
    killed with its process group after 5 s."""
    import signal
    import subprocess
    try:
        proc = subprocess.Popen(command, shell=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    except (OSError, ValueError) as exc:
        return "(status-line command failed: %s)" % type(exc).__name__
    try:
        out, _ = proc.communicate(payload, timeout=5)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid, signal.SIGKILL)
        try:
            out, _ = proc.communicate(timeout=1)
        except subprocess.TimeoutExpired:  # a child that left the group holds the pipe
            out = b""
    return out.decode("utf-8", "replace").rstrip("\n")


AGENT_SUBCOMMANDS = ("init", "run", "log", "explain", "status", "dashboard", "report", "export",
                     "rebaseline", "verify", "restore", "doctor", "stop", "version", "setup-permissions",
                     "detect")


def launchers(root):
    """The ways to call autotune from a shell: the plugin's bin/ (bare on the Bash tool's
    PATH, or absolute), or a copied autotune.py."""
    if os.path.isfile(os.path.join(root, "bin", "autotune")):
        return ["autotune", os.path.join(root, "bin", "autotune")]
    return ["python3 autotune.py", "python3 " + os.path.join(root, "autotune.py")]


def permission_rules(root):
    """Allow rules for what the agent runs: the loop's subcommands (not clear, resume or
    repair, which are the person's), the benchmark, and read-only git."""
    every = launchers(root)
    every += [l for l in ("python3 autotune.py", "python3 " + os.path.join(root, "autotune.py"))
              if l not in every]  # a copied autotune.py, and the plugin's own as the agent runs it
    rules = ["Bash(%s %s*)" % (launcher, command) for launcher in every for command in AGENT_SUBCOMMANDS]
    if os.path.isdir(os.path.join(root, "bin")):
        scripts = ("init-experiment.sh", "run-experiment.sh", "log-experiment.sh", "dashboard.sh")
        rules += ["Bash(%s*)" % name for name in scripts[:3]]
        # the skill of the old bash scripts ran them as `bash <plugin>/bin/NAME.sh ...`
        rules += ["Bash(bash %s*)" % os.path.join(root, "bin", name) for name in scripts]
    return rules + ["Bash(./autotune.sh)", "Bash(bash autotune.sh)", "Bash(./autotune.checks.sh)",
                    "Bash(./autotune.holdout.sh)", "Bash(git checkout -b autotune/*)",
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
        except (ValueError, UnicodeDecodeError, OSError, RecursionError) as exc:
            fail("bad_settings", "%s is not valid JSON (%s); fix it first, nothing was changed." % (
                path, "nested too deeply" if isinstance(exc, RecursionError) else exc))
        if not isinstance(settings, dict):
            fail("bad_settings", "%s does not hold a JSON object; nothing was changed." % path)
    permissions = settings.setdefault("permissions", {})
    if not isinstance(permissions, dict):
        fail("bad_settings", "%s: permissions is not an object; nothing was changed." % path)
    allow = permissions.setdefault("allow", [])
    if not isinstance(allow, list):
        fail("bad_settings", "%s: permissions.allow is not a list; nothing was changed." % path)
    root = os.path.dirname(os.path.realpath(os.path.abspath(__file__)))
    wanted = permission_rules(root)
    project = project_commands(target) if args.with_project_commands else None
    if project:
        wanted += [rule for command in project for rule in ("Bash(%s)" % command, "Bash(%s *)" % command)]
    added = [rule for rule in wanted if rule not in allow]
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
    if project is not None:
        result["project_commands"] = project
    if args.json:
        print_json(result)
    else:
        print_text("autotune: %s %s" % (path, ("added %d rule%s" % (len(added), "" if len(added) == 1 else "s"))
                                  if added else "already had every rule")
            + ("; status line set" if statusline else ""))
        if project is not None:
            print_text("autotune: the project's commands allowed: %s" % (
                ", ".join(project) if project else "none found (no package.json scripts, Makefile, "
                "pyproject/tox, Cargo.toml or go.mod commands, and no --benchmark/--checks at init)"))
    return 0


def project_commands(target):
    """The benchmark's and checks' commands to allow with --with-project-commands: what
    `init` was given (--benchmark, --checks) and the build, test and benchmark commands it
    proposed from the project's files, in that order, each once."""
    loop = find_loop(target, lenient=True)
    commands = []
    if loop.exists():
        try:
            config = load_state(loop).state.config or {}
        except (AutotuneError, OSError):
            config = {}
        given = config.get("commands") if isinstance(config.get("commands"), dict) else {}
        commands += [given[key] for key in ("benchmark", "checks") if isinstance(given.get(key), str)]
    proposed = project_report(loop)["proposed"]
    commands += [item["command"] for kind in ("build", "test", "benchmark") for item in proposed[kind]]
    return [c for i, c in enumerate(commands) if c.strip() and c not in commands[:i]]


# ---------------------------------------------------------------------- CLI ----

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
    p.add_argument("--size", metavar="GLOB", action="append",
                   help="with --scaffold: autotune.sh prints the total gzip -9 size of the files "
                        "matching GLOB (repeatable), raw and brotli bytes as secondary metrics; "
                        "--benchmark CMD is then the build, run first")


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


def build_nothing(p):
    pass


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


def build_verify(p):
    p.add_argument("--pairs", type=_positive_int, help="pairs of executions (default %d)" % VERIFY_PAIRS)
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
    p.add_argument("--dir", metavar="DIR", help="the project directory (default: here)")
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
    p.add_argument("--color", action="store_true", help="ANSI colors (the default; kept for old settings)")
    p.add_argument("--no-color", action="store_true", help="no ANSI colors (also with NO_COLOR set)")


def build_setup_permissions(p):
    build_json_only(p)
    p.add_argument("dir", nargs="?", help="the project directory (default: here)")
    p.add_argument("--statusline", action="store_true", help="also set autotune's status line there")
    p.add_argument("--with-project-commands", action="store_true",
                   help="also allow the project's build, test and benchmark commands (those init "
                        "was given and proposed), listed in the answer")
    p.add_argument("--force", action="store_true", help="replace an existing statusLine")


COMMANDS = {
    # name: (function, parser builder, one-line help)
    "init": (cmd_init, build_init, "start a session (a new segment): name, metric, direction"),
    "detect": (cmd_detect, build_nothing, "the project's toolchains, lockfiles and own build/test/benchmark commands"),
    "run": (cmd_run, build_run, "run the benchmark (and checks): metrics, verdict, suggested status"),
    "log": (cmd_log, build_log, "record a result: keep commits, discard/crash/checks_failed revert"),
    "explain": (cmd_explain, build_json_only, "what state the loop is in, why, and what to do next"),
    "status": (cmd_status, build_json_only, "a short status of the session"),
    "stop": (cmd_stop, build_stop, "stop the loop (data kept; `resume` continues it)"),
    "resume": (cmd_resume, build_json_only, "make a stopped or paused loop active again"),
    "repair": (cmd_repair, build_json_only, "put the loop in repair mode (manual_repair)"),
    "rebaseline": (cmd_rebaseline, build_rebaseline, "re-measure the kept code to refresh the noise estimate"),
    "verify": (cmd_verify, build_verify, "measure the baseline commit beside the best one: the honest headline"),
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
                    "benchmark, keep what improves the metric, revert the rest.",
                    epilog="`autotune help COMMAND` shows the options of one command.")
    parser.add_argument("--version", "-v", action="version", version="autotune %s" % VERSION)
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND", parser_class=Parser)
    for name, (_, builder, summary) in COMMANDS.items():
        if only is not None and name != only:
            continue
        builder(sub.add_parser(name, help=summary, description=summary))
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    _INVOCATION[:] = argv
    if argv[:1] == ["help"]:  # the old bash scripts' spelling
        argv = argv[1:2] + ["--help"] if argv[1:2] and argv[1] in COMMANDS else ["--help"]
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
            print_json({"error": exc.code, "message": exc.message})
        else:
            text = exc.message if exc.message.startswith("autotune") else "autotune: " + exc.message
            print_text(text, sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        print_text("autotune: interrupted", sys.stderr)
        return getattr(exc, "exit_code", 130)
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug: say so in one line, the traceback on request
        if os.environ.get("AUTOTUNE_DEBUG"):
            raise
        message = "internal error: %s: %s (set AUTOTUNE_DEBUG=1 for the traceback)" % (
            type(exc).__name__, exc)
        if wants_json:
            print_json({"error": "internal", "message": message})
        else:
            print_text("autotune: " + message, sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())


