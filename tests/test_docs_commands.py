"""Every autotune command the plugin's documents name exists and works (issue 3, point 2).

1. Each `autotune ...` line of the fenced shell blocks of agents/autotune.md,
   skills/autotune/SKILL.md and README.md (if present) is run, in document order, with
   bash, the way the agent's Bash tool runs it (the plugin's bin/ appended to PATH), in a
   scratch repository set up so the sequence makes sense; each must exit 0 without an
   error object. The harness only adds what a reader would do between the lines (a
   `run` before a `log` that needs one) and says so in the failure report.
2. Every inline code span `autotune <cmd> --flags`, and every bare `--flag` span in a
   passage about a command, names a subcommand and flags that `autotune <cmd> --help`
   knows.
3. The JSON fields the agent manual documents for run, log and explain --json appear
   in what those commands print.
4. The JSON config example of the skill is a valid autotune.config.json.

A small negative test proves the extractor and checker catch a bad document.
"""

import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import AUTOTUNE, ROOT, clean_env, make_project

DOCS = ["agents/autotune.md", "skills/autotune/SKILL.md", "README.md"]
SHELL_LANGS = ("", "bash", "sh", "shell", "console", "zsh")
PREFIXES = (  # ways the documents call autotune; all mean `autotune ...`
    "autotune ", "${CLAUDE_PLUGIN_ROOT}/bin/autotune ", "bin/autotune ",
    "python3 ${CLAUDE_PLUGIN_ROOT}/autotune.py ", "python3 autotune.py ",
)


def read_doc(rel):
    path = os.path.join(ROOT, rel)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return handle.read()


# ----------------------------------------------------------------- extraction ----

FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")


def split_markdown(text):
    """Yields ("fence", lang, lineno, lines) and ("text", None, lineno, line) in order."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match:
            indent, fence, lang = match.group(1), match.group(2), match.group(3).lower()
            body, start = [], i + 1
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(fence[:3]):
                line = lines[i]
                body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
                i += 1
            yield ("fence", lang, start + 1, body)
            i += 1
            continue
        yield ("text", None, i + 1, lines[i])
        i += 1


def normalize(command):
    """`${CLAUDE_PLUGIN_ROOT}/bin/autotune x` and friends -> `autotune x`; else None."""
    command = command.strip()
    if command.startswith("$ "):
        command = command[2:]
    for prefix in PREFIXES:
        if command.startswith(prefix):
            rest = command[len(prefix):].strip()
            if not re.match(r"^([a-z][a-z-]*|<[^>]+>|-)", rest):
                return None  # e.g. the dashboard's header "autotune · ..." quoted as output
            return "autotune " + rest
    return None


def fenced_commands(text):
    """[(lineno, lang, shell line)] of the fenced shell blocks, continuation lines joined."""
    out = []
    for kind, lang, lineno, body in split_markdown(text):
        if kind != "fence" or lang not in SHELL_LANGS:
            continue
        pending, first = "", None
        for offset, line in enumerate(body):
            stripped = line.strip()
            if not stripped or (stripped.startswith("#") and not pending):
                continue
            if stripped.startswith("$ "):
                stripped = stripped[2:]
            first = lineno + offset if not pending else first
            if stripped.endswith("\\"):
                pending += stripped[:-1] + " "
                continue
            out.append((first, lang, pending + stripped))
            pending = ""
    return out


SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*)$")
PLACEHOLDER = re.compile(r"^(<.*>|\.\.\.|[A-Z][A-Z_]*|N)$")


def _tokens(command):
    """The words of the first simple command (a pipe or `&&` ends what autotune reads)."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    for i, word in enumerate(words):
        if word in ("|", "||", "&&", ";", ">", ">>"):
            return words[:i]
    return words


def mentions(text):
    """Every claim the document makes about the CLI, as
    (lineno, subcommand or None, [flags], source text). Sources: fenced autotune lines,
    inline `autotune ...` spans, and bare `--flag` spans, attributed to the command of
    their passage: the last one named in the same paragraph or list item, else the one
    the current heading names, else none (then the flag must exist in some command)."""
    found = []
    heading_cmd = context = None
    for kind, _, lineno, payload in split_markdown(text):
        if kind == "fence":
            for line in payload:
                command = normalize(line)
                if command:
                    sub, flags = _parse(command)
                    found.append((lineno, sub, flags, command))
            context = heading_cmd
            continue
        heading = HEADING.match(payload)
        if heading:
            heading_cmd = None
            for span in SPAN.findall(heading.group(2)):
                command = normalize(span)
                if command:
                    heading_cmd = _parse(command)[0]
            context = heading_cmd
        elif not payload.strip() or re.match(r"^\s*([-*+]|\d+\.)\s", payload):
            context = heading_cmd  # a new paragraph or list item
        for span in SPAN.findall(payload):
            command = normalize(span)
            if command:
                sub, flags = _parse(command)
                found.append((lineno, sub, flags, span))
                if sub:
                    context = sub
            elif span.startswith("-"):
                flags = [t.split("=", 1)[0] for t in _tokens(span) if t.startswith("-")]
                found.append((lineno, context, flags, span))
    return found


def _parse(command):
    tokens = _tokens(command)[1:]
    if not tokens or PLACEHOLDER.match(tokens[0]) or tokens[0].startswith("<"):
        return None, [t.split("=", 1)[0] for t in tokens if t.startswith("-")]
    if tokens[0].startswith("-"):
        return None, [t.split("=", 1)[0] for t in tokens if t.startswith("-")]
    return tokens[0], [t.split("=", 1)[0] for t in tokens[1:] if t.startswith("-") and t != "-"]


class CLISpec(object):
    """What the CLI accepts, learned from `autotune [<cmd>] --help` (all asked at once, cached)."""

    def __init__(self):
        self.cache = {}

    def _ask(self, subs):
        subs = [sub for sub in subs if sub not in self.cache]
        procs = [(sub, subprocess.Popen([sys.executable, "-I", "-S", AUTOTUNE] + ([sub] if sub else []) +
                                        ["--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        env=clean_env(), cwd=ROOT)) for sub in subs]
        for sub, proc in procs:
            out, _ = proc.communicate(timeout=60)
            text = out.decode("utf-8", "replace")
            if proc.returncode != 0 or "usage:" not in text:
                self.cache[sub] = None
            else:
                self.cache[sub] = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", text))
                if sub is None:
                    self.cache["__subcommands__"] = re.findall(r"^    ([a-z][a-z-]*)\s", text, re.M)

    def options(self, sub):
        if sub not in self.cache:
            self._ask([sub])
        return self.cache[sub]

    def subcommands(self):
        if "__subcommands__" not in self.cache:
            self._ask([None])
        self._ask(self.cache["__subcommands__"])
        return self.cache["__subcommands__"]


def check_mentions(found, spec):
    """Problems (strings) with the claims: unknown subcommands, unknown flags."""
    problems = []
    for lineno, sub, flags, source in found:
        if sub is not None:
            known = spec.options(sub)
            if known is None:
                problems.append("line %d: `%s`: there is no subcommand %r" % (lineno, source, sub))
                continue
        else:
            known = set()
            for name in spec.subcommands():
                known |= spec.options(name) or set()
            known |= spec.options(None) or set()
        for flag in flags:
            if flag not in known:
                problems.append("line %d: `%s`: %s is not a flag of %s" % (
                    lineno, source, flag, "autotune " + sub if sub else "any autotune command"))
    return problems


pytestmark = pytest.mark.together  # the module's fixtures are built once, in one shard


@pytest.fixture(scope="module")
def spec():
    return CLISpec()


# ------------------------------------------------------------ negative proof ----

BAD_DOC = """# A bad manual

Call `autotune frobnicate --now` to win, or `autotune run --bogus-flag 3`.

### `autotune log`
Pass `--status auto` and `--not-a-log-flag`.

```bash
autotune explain --json
autotune status --verbose-please
${CLAUDE_PLUGIN_ROOT}/bin/autotune teleport
git status
```

```json
{"autotune": "not a command"}
```
"""


@pytest.mark.slow
def test_the_checker_catches_a_bad_document(spec):
    found = mentions(BAD_DOC)
    problems = check_mentions(found, spec)
    text = "\n".join(problems)
    assert "there is no subcommand 'frobnicate'" in text
    assert "--bogus-flag is not a flag of autotune run" in text
    assert "--not-a-log-flag is not a flag of autotune log" in text
    assert "--verbose-please is not a flag of autotune status" in text
    assert "there is no subcommand 'teleport'" in text
    assert len(problems) == 5, problems
    assert [c for _, _, c in fenced_commands(BAD_DOC)] == [
        "autotune explain --json", "autotune status --verbose-please",
        "${CLAUDE_PLUGIN_ROOT}/bin/autotune teleport", "git status"]
    good = mentions("Use `autotune run --repeat 3` and `--timeout 5`.\n\n"
                    "### `autotune log`\n`--status auto`, `--asi` and `--force --reason \"why\"`.\n")
    assert check_mentions(good, spec) == []


def test_the_runner_catches_a_failing_document_line(tmp_path):
    scenario = DocScenario(tmp_path, "bad.md")
    scenario.run_line(3, "autotune explain --bogus")
    scenario.run_line(4, "autotune frobnicate")
    assert len(scenario.failures) == 2, scenario.failures


# ------------------------------------------------------------------- running ----

FAKE_PYTEST = """#!/bin/sh
# stands in for pytest in the documents' examples: quick, deterministic, passing
echo "1 passed in 0.01s"
"""

BENCH = """#!/usr/bin/env bash
# the scratch project's benchmark: the doc's metric, from work.py
d=$(sed -n 's/^DELAY_MS = //p' work.py)
echo "METRIC time_ms=$d"
"""


INTERACTIVE = {"start": "launches Claude Code", "clear": "asks for confirmation on a terminal"}


class DocScenario(object):
    """Runs a document's commands in a scratch repository, collecting failures. Between
    the lines it does what a reader would (each step is marked [harness] in the report):
    a benchmark that prints the metric an `init` names (unless the init scaffolds one
    from --benchmark), a `run` before a `log` that needs a measurement, one small change
    before each new experiment, an existing discarded experiment for `restore N` (whose
    number replaces N), and `/path/to/autotune` is this checkout."""

    def __init__(self, tmp_path, doc):
        self.doc = doc
        self.tmp = tmp_path
        fakebin = tmp_path / "fakebin"
        fakebin.mkdir(exist_ok=True)
        (fakebin / "pytest").write_text(FAKE_PYTEST)
        os.chmod(str(fakebin / "pytest"), 0o755)
        if not (fakebin / "python3").exists():
            # the documents' `python3` is this interpreter, not a version manager's shim
            # (a pyenv shim puts its own bin/, with a real pytest, first on PATH)
            os.symlink(sys.executable, str(fakebin / "python3"))
        self.env = clean_env(CLAUDE_PLUGIN_ROOT=ROOT)
        self.env["PATH"] = str(fakebin) + os.pathsep + self.env.get("PATH", "/usr/bin:/bin") + \
            os.pathsep + os.path.join(ROOT, "bin")
        self.project = None
        self.failures = []
        self.outputs = {}      # subcommand -> [parsed JSON outputs]
        self.needs_run = True  # no measurement since the last init/log
        self.logged = False    # an experiment was logged since the last init
        self.delay = 100
        self.transcript = []

    def repo(self, init_session=False, benchmark=BENCH):
        self.project = make_project(self.tmp / "repo", benchmark=benchmark, init=init_session)
        return self.project

    def shell(self, command, note=None):
        cwd = str(self.project.path) if self.project else str(self.tmp)
        proc = subprocess.run(["bash", "-c", command], cwd=cwd, env=self.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=120)
        out = proc.stdout.decode("utf-8", "replace")
        self.transcript.append("%s$ %s  -> rc %d" % ("[harness: %s] " % note if note else "", command,
                                                    proc.returncode))
        data = None
        if out.strip().startswith("{"):
            try:
                data = json.loads(out)
            except ValueError:
                data = None
        normalized = normalize(command)
        sub = _parse(normalized)[0] if normalized else None
        if sub and isinstance(data, dict):
            self.outputs.setdefault(sub, []).append(data)
        return proc, out, data

    def write_benchmark(self, metric):
        self.project.write("autotune.sh", BENCH.replace("time_ms", metric), mode=0o755)
        self.transcript.append("[harness] autotune.sh prints METRIC %s" % metric)

    def change(self, delta=-10):
        self.delay += delta
        self.project.set_delay(self.delay)
        self.transcript.append("[harness] work.py: DELAY_MS = %d" % self.delay)

    def discarded_index(self):
        proc, out, _ = self.shell("git for-each-ref --format='%(refname)' refs/autotune/discarded/",
                                  note="find a discarded experiment")
        refs = out.split()
        segment = self.project.state().get("segment")
        mine = [r for r in refs if r.rsplit("/", 1)[-1].split(".")[0] == str(segment)]
        if not mine:
            self.change(+50)
            self.shell("autotune run", note="an experiment to discard")
            self.shell("autotune log --status discard --description 'harness: a worse idea'",
                       note="an experiment to discard")
            self.needs_run, self.logged = True, True
            return self.discarded_index()
        return mine[-1].rsplit(".", 1)[-1]

    def dirty(self):
        out = self.project.git("status", "--porcelain", "--untracked-files=all")
        return set(line[3:] for line in out.splitlines())

    def undo_restore(self):
        """A reader looks at a restored experiment, then puts the tree back."""
        for name in sorted(self.dirty() - self.before_restore):
            if name in self.project.git("ls-files"):
                self.project.git("checkout", "--", name)
            else:
                os.unlink(str(self.project.path / name))
            self.transcript.append("[harness] undid the restore of %s" % name)

    def prepare(self, sub, tokens, command):
        """What a reader does before this line; returns the command to run (or None)."""
        if sub == "init":
            metric = tokens[tokens.index("--metric") + 1] if "--metric" in tokens else "time_ms"
            if "--scaffold" in tokens and "--benchmark" in tokens:
                for name in ("autotune.sh",) + (("autotune.checks.sh",) if "--checks" in tokens else ()):
                    if os.path.exists(str(self.project.path / name)):
                        os.unlink(str(self.project.path / name))
                        self.transcript.append("[harness] removed %s: the init scaffolds it" % name)
            else:
                self.write_benchmark(metric)
        elif sub == "run" and self.logged and self.needs_run:
            self.change()
        elif sub == "log" and self.needs_run:
            if self.logged:
                self.change()
            self.shell("autotune run", note="measure before logging")
            self.needs_run = False
        elif sub == "restore" and len(tokens) > 2 and tokens[2].isdigit():
            index = self.discarded_index()
            self.before_restore = self.dirty()
            return command.replace(" %s" % tokens[2], " %s" % index, 1)
        elif sub in INTERACTIVE or (sub == "dashboard" and "--watch" in tokens):
            self.transcript.append("[harness] skipped (%s): %s" % (INTERACTIVE.get(sub, "runs until Ctrl-C"),
                                                                  command))
            return None
        return command

    def run_line(self, lineno, command):
        command = command.replace("/path/to/autotune", ROOT)
        normalized = normalize(command)
        sub = _parse(normalized)[0] if normalized else None
        if normalized and self.project is not None:
            command = self.prepare(sub, _tokens(normalized), command)
            if command is None:
                return
        proc, out, data = self.shell(command)
        err = proc.stderr.decode("utf-8", "replace")
        problem = None
        if proc.returncode != 0 or (isinstance(data, dict) and "error" in data):
            problem = "rc %d" % proc.returncode
        elif sub == "run" and isinstance(data, dict) and not data.get("passed"):
            problem = "the benchmark did not produce the metric (%s)" % data.get("reason")
        if problem:
            self.failures.append("%s line %d: `%s` -> %s: %s %s" % (
                self.doc, lineno, command, problem, out.strip()[:400], err.strip()[:400]))
        if sub == "restore" and getattr(self, "before_restore", None) is not None:
            self.undo_restore()
            self.before_restore = None
        if sub == "run":
            self.needs_run = False
        elif sub == "init":
            self.needs_run, self.logged = True, False
        elif sub == "log":
            self.needs_run, self.logged = True, True


def doc_commands(rel):
    text = read_doc(rel)
    if text is None:
        pytest.skip("%s is not present" % rel)
    return text, [(n, lang, c) for n, lang, c in fenced_commands(text)]


def run_document(scenario, commands):
    """The autotune lines, plus the setup lines a reader must run for them to make sense
    (a branch, copying autotune.py); other programs (claude, make, git cherry-pick) are not
    run here."""
    for lineno, _, command in commands:
        if normalize(command) or command.startswith(("git checkout -b ", "cp /path/to/autotune/")):
            scenario.run_line(lineno, command)
    return scenario


def report(scenario):
    return "\n".join(scenario.failures) + "\n\ntranscript:\n" + "\n".join(scenario.transcript)


@pytest.fixture(scope="module")
def agent_run(tmp_path_factory):
    """agents/autotune.md, resumed on an existing loop (what the agent is started on)."""
    text, commands = doc_commands("agents/autotune.md")
    scenario = DocScenario(tmp_path_factory.mktemp("agent-doc"), "agents/autotune.md")
    project = scenario.repo(init_session=True)
    project.loop(100, description="baseline")
    run_document(scenario, commands)
    scenario.failures_of_document = list(scenario.failures)
    # after the document: a kept improvement, a discarded regression and a run with no
    # change, so every JSON field the manual documents has a chance to be printed
    # (the last one measured twice: a run with no change since the last log warns)
    for delta, status in ((-10, "auto"), (+40, "auto"), (0, "discard")):
        if delta:
            scenario.change(delta)
        scenario.shell("autotune run", note="more experiments for the field check")
        scenario.shell("autotune log --status %s --description 'harness %+d'" % (status, delta),
                       note="more experiments for the field check")
        scenario.shell("autotune explain --json", note="more experiments for the field check")
    # and a crash, for the fields of a failure (diagnosis)
    project.write("work.py", "DELAY_MS = oops\n")
    scenario.shell("autotune run", note="a crash for the field check")
    scenario.shell("autotune log --status auto --description 'harness crash'", note="a crash for the field check")
    scenario.shell("autotune explain --json", note="a crash for the field check")
    return text, scenario


@pytest.fixture(scope="module")
def skill_run(tmp_path_factory):
    """skills/autotune/SKILL.md, the wizard, on a repository without a session."""
    text, commands = doc_commands("skills/autotune/SKILL.md")
    scenario = DocScenario(tmp_path_factory.mktemp("skill-doc"), "skills/autotune/SKILL.md")
    scenario.repo(init_session=False)
    os.unlink(str(scenario.project.path / "autotune.sh"))  # the wizard scaffolds it
    scenario.project.git("commit", "-q", "-am", "no benchmark yet")
    return text, run_document(scenario, commands)


@pytest.mark.slow
def test_agent_manual_commands_run(agent_run):
    text, scenario = agent_run
    assert any(n for n, _, c in fenced_commands(text) if normalize(c)), "no command found: extractor broken?"
    assert not scenario.failures_of_document, report(scenario)
    assert not scenario.failures, report(scenario)


@pytest.mark.slow
def test_skill_commands_run(skill_run):
    text, scenario = skill_run
    assert not scenario.failures, report(scenario)
    assert os.path.exists(str(scenario.project.path / "autotune.checks.sh"))


@pytest.mark.slow
def test_readme_commands_run(tmp_path):
    text, commands = doc_commands("README.md")
    scenario = DocScenario(tmp_path, "README.md")
    scenario.repo(init_session=False)
    run_document(scenario, commands)
    assert not scenario.failures, report(scenario)


@pytest.mark.slow
def test_skill_baseline_commits_no_personal_settings(skill_run):
    """The wizard runs setup-permissions between init and the baseline: the personal
    .claude/settings.local.json it writes must not end up in a kept commit."""
    _, scenario = skill_run
    committed = scenario.project.git("log", "--name-only", "--format=").split()
    assert not any(name.startswith(".claude/") for name in committed), committed


@pytest.mark.slow
@pytest.mark.parametrize("rel", DOCS)
def test_inline_commands_and_flags_exist(spec, rel):
    text = read_doc(rel)
    if text is None:
        pytest.skip("%s is not present" % rel)
    found = mentions(text)
    assert found, "no autotune mention found in %s" % rel
    problems = check_mentions(found, spec)
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------ documented JSON ----

def documented_fields(paragraph):
    """Field names in a "JSON fields:" passage: backticked names, except the values listed
    after a field's colon (up to the next ';' or ')')."""
    fields = []
    state, stack = "field", []
    for match in re.finditer(r"`([^`]+)`(:?)|([;()]|\n\s*[-*] |\n\s*\n)", paragraph):
        name, colon, punct = match.groups()
        if punct == "(":
            stack.append(state)
            state = "field"
            continue
        if punct == ")":
            state = stack.pop() if stack else "field"
            continue
        if punct:
            state, stack = "field", ([] if punct.strip() != ";" else stack)
            continue
        if state == "field" and re.match(r"^[a-z_]+$", name):
            fields.append(name)
        if colon:
            state = "value"
    return fields


def section(text, start_pattern, stop_pattern=r"\n#{2,3} |\n```|\n\n(?=[A-Z`])"):
    match = re.search(start_pattern, text)
    assert match, "the manual no longer has %r" % start_pattern
    rest = text[match.end():]
    end = re.search(stop_pattern, rest)
    return rest[:end.start()] if end else rest


def all_keys(obj, into=None):
    into = set() if into is None else into
    if isinstance(obj, dict):
        for key, value in obj.items():
            into.add(key)
            all_keys(value, into)
    elif isinstance(obj, list):
        for value in obj:
            all_keys(value, into)
    return into


@pytest.mark.slow
@pytest.mark.parametrize("command,start", [
    ("run", r"### `autotune run`[\s\S]*?JSON fields:"),
    ("log", r"### `autotune log`[\s\S]*?JSON fields:"),
    ("explain", r"`explain --json` fields:"),
])
def test_documented_json_fields_are_printed(agent_run, command, start):
    text, scenario = agent_run
    fields = documented_fields(section(text, start, r"\n#{2,3} |\n```"))
    assert len(fields) >= 8, fields
    outputs = list(scenario.outputs.get(command, []))
    if command == "explain":
        outputs = [o for o in outputs if "health" in o]
    assert outputs, "the scenario printed no JSON for %s" % command
    keys = set()
    for out in outputs:
        all_keys(out, keys)
    missing = [f for f in fields if f not in keys]
    assert not missing, "documented %s fields never printed: %s (printed: %s)" % (
        command, missing, sorted(keys))


def test_documented_fields_parser():
    para = ("- `checks`: `null` (no checks file), `true` or `false`; `chk_out`: tail\n"
            "- `verdict`: `baseline`, `improved` or `worse`; `suggested_status`: what to log; "
            "`guardrails` and `holdout`: their checks.\n- `checks`: `null`, `true` or `false`; `chk_out`: x\n"
            "- `confidence` (`score`, `label`: `high`, `marginal`), `git` (`action`: commit; `files`), `next`")
    assert documented_fields(para) == ["checks", "chk_out", "verdict", "suggested_status", "guardrails", "holdout", "checks",
                                       "chk_out", "confidence", "score", "label", "git", "action", "files",
                                       "next"]
    wrapped = "`verdict`: `baseline`,\n`improved`; `evidence`: numbers"
    assert documented_fields(wrapped) == ["verdict", "evidence"]


def test_skill_config_example_is_valid(tmp_path):
    text = read_doc("skills/autotune/SKILL.md")
    blocks = [body for kind, lang, _, body in split_markdown(text) if kind == "fence" and lang == "json"]
    assert blocks, "the skill shows no config example"
    for body in blocks:
        config = json.loads("\n".join(body))
        project = make_project(tmp_path / ("repo%d" % blocks.index(body)), init=False, config=config)
        result = project.cli("init", "--name", "x", "--metric", "time_ms", "--direction", "lower")
        assert result.rc == 0 and "error" not in (result.json or {}), result
