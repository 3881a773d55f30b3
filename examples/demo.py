#!/usr/bin/env python3
"""`make demo`: a complete autotune loop on a bundled example, in one command.

A scripted agent stands in for Claude. It copies examples/project (wordfreq: the most
frequent words of a text) to a temporary directory, makes it a git repository, and
drives the real CLI (`python3 autotune.py ...`, reading its JSON) through the edits in
examples/edits/, in order: a baseline, real improvements (kept: committed), a
regression (discarded: reverted), a crash, a change that fails the correctness checks,
enough non-improvements to plateau and heal, and a dead-code removal kept for being simpler.
After each result it does what autotune's `next` says (diagnose, rebaseline, shrink_scope,
...), and shows autotune's own diagnosis of a failure. At the end it prints
`autotune explain`, the dashboard and the git log, and writes the HTML report.

    python3 examples/demo.py [--keep DIR] [--quiet]

--keep DIR  work in DIR (new or empty) and leave it there: DIR/project is the git
            repository of the loop, DIR/report.html the report. Without it, the
            project is deleted at the end and only the report is kept.
--quiet     print only the summary (and errors).

Standard library only; no network, no Claude; the repository itself is not touched.
Exit status 0 when every step did what the edit expected, 1 otherwise (CI notices).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
AUTOTUNE = os.path.join(ROOT, "autotune.py")
PROJECT = os.path.join(HERE, "project")
EDITS = os.path.join(HERE, "edits")
WIDTH = 100
ROW = "%3s  %-13s %-14s %6s %8s  %-10s %-13s %s"

NAME = "wordfreq: fewer Python lines per call"
METRIC = "lines"
BASELINE = {
    "title": "baseline",
    "description": "baseline: the naive first version",
    "hypothesis": "Measure the unchanged code first: every later verdict compares against it.",
    "expect": "keep",
}


class DemoError(Exception):
    """A step did not do what the demo expects: the demo fails (exit 1)."""


def clean_env():
    """The environment of every command: nothing inherited that changes git or autotune."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GIT_", "AUTOTUNE", "CLAUDE")) and k != "PYTHON"}
    env.update(PYTHON=sys.executable, PYTHONDONTWRITEBYTECODE="1", GIT_CONFIG_NOSYSTEM="1",
               GIT_TERMINAL_PROMPT="0")
    return env


class Demo(object):
    def __init__(self, workspace, quiet):
        self.workspace = workspace
        self.project = os.path.join(workspace, "project")
        self.report = os.path.join(workspace, "report.html")
        self.quiet = quiet
        self.env = clean_env()
        self.rows = []

    # ---------------------------------------------------------------- output --

    def say(self, text=""):
        if not self.quiet:
            print(text)
            sys.stdout.flush()

    def command(self, text):
        self.say("$ " + text)

    # --------------------------------------------------------------- running --

    def proc(self, argv, what, check=True, timeout=120):
        try:
            proc = subprocess.run(argv, cwd=self.project, env=self.env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DemoError("%s did not finish within %d s" % (what, timeout))
        out = proc.stdout.decode("utf-8", "replace")
        err = proc.stderr.decode("utf-8", "replace")
        if check and proc.returncode != 0:
            raise DemoError("%s failed (exit %d): %s" % (what, proc.returncode, (err or out).strip()[-800:]))
        return out

    def git(self, *args):
        return self.proc(["git"] + list(args), "git " + args[0])

    def autotune(self, *args):
        """An agent-facing command: its one JSON object (an `error` fails the demo)."""
        out = self.proc([sys.executable, AUTOTUNE] + list(args), "autotune " + args[0], check=False)
        try:
            data = json.loads(out)
        except ValueError:
            raise DemoError("autotune %s printed no JSON object: %r" % (args[0], out[-500:]))
        if "error" in data:
            raise DemoError("autotune %s refused: %s: %s" % (args[0], data["error"], data.get("message")))
        return data

    def autotune_text(self, *args):
        return self.proc([sys.executable, AUTOTUNE] + list(args), "autotune " + args[0]).rstrip("\n")

    # ---------------------------------------------------------------- set-up --

    def setup(self):
        shutil.copytree(PROJECT, self.project, ignore=shutil.ignore_patterns(
            "__pycache__", "*.pyc", "autotune.jsonl", ".autotune.state"))
        self.command("git init   # a copy of examples/project in %s" % self.project)
        self.git("init", "-q")
        self.git("symbolic-ref", "HEAD", "refs/heads/main")
        for key, value in (("user.name", "autotune demo"), ("user.email", "demo@autotune.invalid"),
                           ("commit.gpgsign", "false"), ("core.autocrlf", "false")):
            self.git("config", key, value)
        self.git("add", "-A")
        self.git("commit", "-q", "--no-verify", "-m", "wordfreq: the example project")
        self.command('autotune init --name "%s" --metric %s --direction lower --scaffold' % (NAME, METRIC))
        init = self.autotune("init", "--name", NAME, "--metric", METRIC, "--direction", "lower", "--scaffold")
        if init.get("status") != "initialized":
            raise DemoError("autotune init answered %r" % init)
        self.say("  segment %s, metric %s (lower is better), templates written: %s (the example brings its own)"
                 % (init["segment"], METRIC, ", ".join(init.get("scaffolded") or []) or "none"))
        self.say()

    # ------------------------------------------------------------ the loop ----

    def edits(self):
        names = sorted(n for n in os.listdir(EDITS) if n.endswith(".patch"))
        if not names:
            raise DemoError("no edits in %s" % EDITS)
        return [read_edit(os.path.join(EDITS, n)) for n in names]

    def loop(self):
        self.say("The scripted agent, for each edit in examples/edits/: `git apply` it, `autotune run`,")
        self.say("`autotune log --status auto --description ... --asi ...`, then do what `next` says.")
        self.say()
        self.say(ROW % ("#", "verdict", "status", METRIC, "vs best", "health", "next", "edit"))
        self.say("-" * WIDTH)
        self.experiment(None, BASELINE)
        for edit in self.edits():
            self.experiment(edit["file"], edit)

    def experiment(self, patch, edit):
        if patch:
            self.proc(["git", "apply", "--whitespace=nowarn", patch], "git apply %s" % os.path.basename(patch))
        run = self.autotune("run")
        asi = {"hypothesis": edit["hypothesis"], "observation": observe(run)}
        if patch:
            asi["edit"] = "examples/edits/" + os.path.basename(patch)
        log = self.autotune("log", "--status", "auto", "--description", edit["description"],
                            "--asi", json.dumps(asi, ensure_ascii=False))
        self.rows.append((run, log))
        vs_best = (run.get("evidence") or {}).get("delta_pct")
        metric = None if log["status"] == "crash" else log.get("metric")
        self.say(clip(ROW % (log["index"], run.get("verdict") or "-", log["status"], fmt(metric),
                             "-" if vs_best is None else "%+.1f%%" % vs_best, log["health"], log["next"],
                             edit.get("title") or edit["description"])))
        for warning in run.get("warnings") or []:
            self.aside("warning", warning)
        if (run.get("status_rule") or {}).get("rule") in ("simpler", "not_simpler"):
            self.aside("rule", run["status_rule"]["why"])
        if log["status"] != edit["expect"]:
            raise DemoError("experiment %d (%s): expected status %s, autotune logged %s (verdict %s)" % (
                log["index"], edit["description"], edit["expect"], log["status"], run.get("verdict")))
        self.notes(log, run, edit)
        self.follow(log, run)

    def aside(self, label, text):
        """An indented, wrapped line under the experiment: what the agent reads or does."""
        self.say(textwrap.fill(text, width=WIDTH, initial_indent="     ↳ %s: " % label,
                               subsequent_indent=" " * 7, break_on_hyphens=False))

    def follow(self, log, run):
        """Do what autotune suggests next, as the agent's operating manual says."""
        action = log["next"]
        if action == "continue":
            return
        self.aside("why", self.explain_json("explain")["why"])
        if action == "diagnose" and log.get("diagnosis"):
            # autotune's own diagnosis: the last error line, and the edit or the environment
            self.aside("autotune", log["diagnosis"]["text"])
            self.aside("diagnose", "the agent notes the idea %s" % (
                "as a dead end: it changes the results" if run.get("checks") is False
                else "for a retry with the bug fixed"))
        elif action == "diagnose":
            note = ("Diagnosis (plateau): the calls metric says normalize() runs once per token, two "
                    "lines each time: the next idea targets that call.")
            add_note(os.path.join(self.project, "autotune.md"), "## Scope", "- " + note)
            self.aside("diagnose", "wrote to autotune.md: " + note)
        elif action == "rebaseline":
            again = self.autotune("rebaseline")
            self.aside("rebaseline", "`autotune rebaseline`: %d samples of the kept code, median %s, drift %s%%%s; "
                       "the best is real, so the plateau is about the ideas: try another kind" % (
                           again["n"], fmt(again["metric"]), fmt(again.get("drift_pct") or 0),
                           ", deterministic" if again.get("deterministic") else ""))
        elif action == "shrink_scope":
            note = "Scope narrowed (shrink_scope): one function at a time, starting with normalize()."
            add_note(os.path.join(self.project, "autotune.md"), "## Scope", "- " + note)
            self.aside("shrink_scope", "wrote to autotune.md: " + note)
        elif action == "reset_worktree":
            dirty = self.git("status", "--porcelain", "--untracked-files=no", "--", "wordfreq.py").strip()
            self.aside("reset_worktree", "the tree is clean" if not dirty else "the tree is dirty: " + dirty)
        else:
            raise DemoError("the loop stopped (next=%s, health %s, reason %s)" % (
                action, log["health"], log["reason"]))

    def explain_json(self, command):
        out = self.proc([sys.executable, AUTOTUNE, command, "--json"], "autotune " + command)
        return json.loads(out)

    def notes(self, log, run, edit):
        """The agent keeps autotune.md current: wins, dead ends, the current best."""
        path = os.path.join(self.project, "autotune.md")
        metric = "-" if log["status"] == "crash" else fmt(log["metric"])
        entry = "- #%d %s (%s %s)" % (log["index"], edit["description"], METRIC, metric)
        if log["status"] == "keep":
            add_note(path, "## Wins", entry)
        else:
            add_note(path, "## Dead ends", "%s: %s, %s" % (entry, log["status"], asi_short(run)))
        set_section(path, "## Current best", "%s %s at %s (baseline %s)" % (
            METRIC, fmt(log["best"]), self.git("rev-parse", "--short", "HEAD").strip(), fmt(log["baseline"])))

    # -------------------------------------------------------------- the end ---

    def finish(self):
        self.say()
        self.command("autotune explain")
        self.say(self.autotune_text("explain"))
        self.say()
        self.command("autotune dashboard")
        self.say(self.autotune_text("dashboard"))
        self.say()
        self.command("autotune report --html %s" % self.report)
        self.say(self.autotune_text("report", "--html", self.report))
        self.say()
        self.command("git log --oneline")
        self.say(self.git("log", "--oneline").rstrip("\n"))
        if not os.path.isfile(self.report):
            raise DemoError("the report %s was not written" % self.report)


def read_edit(path):
    """An edit is a patch with a header: `Description:`, `Hypothesis:`, `Expect:` lines."""
    fields = {"file": path}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith(("--- ", "diff ")):
                break
            key, sep, value = line.partition(":")
            if sep and key.strip():
                fields[key.strip().lower()] = value.strip()
    missing = [k for k in ("description", "hypothesis", "expect") if not fields.get(k)]
    if missing:
        raise DemoError("%s: missing header field(s) %s" % (path, ", ".join(missing)))
    return fields


def observe(run):
    """The observation the agent writes down, from what `run` measured."""
    if run.get("crashed"):
        return "crashed: %s (%s)" % ((run.get("diagnosis") or {}).get("line") or last_line(run.get("output")),
                                     run.get("reason"))
    if run.get("checks") is False:
        return "%s %s, but the checks failed (%s)" % (
            METRIC, fmt(run["primary"]), ", ".join(failed_tests(run.get("chk_out"))) or last_line(run.get("chk_out")))
    delta = (run.get("evidence") or {}).get("delta_pct")
    calls = (run.get("metrics") or {}).get("calls")
    text = "%s %s" % (METRIC, fmt(run["primary"]))
    if delta is not None:
        text += " (%+.1f%% vs best, %s)" % (delta, run.get("verdict"))
    if calls is not None:
        text += ", calls %s" % fmt(calls)
    return text


def asi_short(run):
    if run.get("crashed"):
        return last_line(run.get("output"))
    if run.get("checks") is False:
        return "the checks failed"
    return run.get("verdict") or "-"


def failed_tests(text):
    """The names of the failed tests in unittest's output."""
    names = []
    for line in (text or "").splitlines():
        if line.startswith("FAILED: "):
            names.append(line.split()[1])
    return names


def clip(line):
    return line if len(line) <= WIDTH else line[:WIDTH - 1] + "…"


def last_line(text):
    lines = [l.strip() for l in (text or "").splitlines() if l.strip()]
    return lines[-1] if lines else "(no output)"


def fmt(value):
    if value is None:
        return "-"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def add_note(path, heading, line):
    """Appends `line` at the end of the section `heading` of a Markdown file."""
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    if heading not in lines:
        lines += ["", heading]
    i = lines.index(heading) + 1
    while i < len(lines) and not lines[i].startswith("## "):
        i += 1
    while i > 0 and not lines[i - 1].strip():
        i -= 1
    lines.insert(i, line)
    if i + 1 < len(lines) and lines[i + 1].startswith("## "):
        lines.insert(i + 1, "")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def set_section(path, heading, text):
    """Replaces the body of the section `heading` of a Markdown file."""
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    if heading not in lines:
        lines += ["", heading, ""]
    start = lines.index(heading) + 1
    end = start
    while end < len(lines) and not lines[end].startswith("## "):
        end += 1
    lines[start:end] = [text, ""]
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def summary(demo, seconds):
    runs = [log for _, log in demo.rows]
    counts = {}
    for log in runs:
        counts[log["status"]] = counts.get(log["status"], 0) + 1
    first, last = runs[0], runs[-1]
    change = (last["best"] - first["metric"]) / abs(first["metric"]) * 100 if first["metric"] else 0
    heals = [log["recovery"] for log in runs if (log.get("reason") or "").startswith("heal:")]
    return ("demo: %d experiments in %.1f s: %s; healed with %s; %s %s -> %s (%+.1f%%)" % (
        len(runs), seconds, ", ".join("%d %s" % (counts[s], s) for s in
                                      ("keep", "discard", "crash", "checks_failed") if s in counts),
        " then ".join(heals) or "nothing", METRIC, fmt(first["metric"]), fmt(last["best"]), change))


def main(argv=None):
    ap = argparse.ArgumentParser(description="Run a complete autotune loop on examples/project "
                                 "with a scripted agent (no Claude, no network).")
    ap.add_argument("--keep", metavar="DIR", help="work in DIR (new or empty) and leave the project there")
    ap.add_argument("--quiet", action="store_true", help="print only the summary")
    args = ap.parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")  # arrows and dots on any terminal encoding
    started = time.monotonic()
    if args.keep:
        workspace = os.path.abspath(args.keep)
        if os.path.exists(workspace) and (not os.path.isdir(workspace) or os.listdir(workspace)):
            print("demo: %s exists and is not an empty directory; give a new one to --keep" % workspace,
                  file=sys.stderr)
            return 2
        os.makedirs(workspace, exist_ok=True)
    else:
        workspace = tempfile.mkdtemp(prefix="autotune-demo-")
    demo = Demo(workspace, args.quiet)
    if shutil.which("git") is None:
        print("demo: git is not installed; autotune needs it", file=sys.stderr)
        return 1
    try:
        demo.say("autotune demo: a scripted agent drives the real CLI and real git on examples/project")
        demo.say()
        demo.setup()
        demo.loop()
        demo.finish()
    except (DemoError, OSError) as exc:
        print("demo: FAILED: %s" % exc, file=sys.stderr)
        print("demo: the project is left in %s for inspection" % demo.project, file=sys.stderr)
        return 1
    seconds = time.monotonic() - started
    demo.say()
    print(summary(demo, seconds))
    print("demo: report: %s" % demo.report)
    if args.keep:
        print("demo: project: %s (try: cd %s && python3 %s dashboard)" % (demo.project, demo.project, AUTOTUNE))
    else:
        shutil.rmtree(demo.project, ignore_errors=True)
        print("demo: the project copy was deleted (--keep DIR keeps it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
