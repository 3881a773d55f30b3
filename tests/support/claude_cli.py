"""Locate or install the real Claude Code CLI and run ``claude -p`` sessions offline
against ``fake_anthropic.FakeAnthropic`` (Python standard library only, 3.8+).

    # tests/ has no __init__.py, so pytest puts tests/ on sys.path: import as ``support.*``
    # (``tests.support.*`` also works from the repo root: namespace packages).
    from support.fake_anthropic import FakeAnthropic, tool_use
    from support.claude_cli import find_claude, ClaudeSandbox, write_settings

    claude = find_claude()                 # installs @anthropic-ai/claude-code@2.1.197 into .tools/claude once
    with FakeAnthropic([tool_use("Bash", {"command": "echo hi"}), "done!"]) as fake:
        sb = ClaudeSandbox(tmp_path / "cfg", claude=claude)
        sb.trust(project)                  # .claude.json: onboarding, approved key, project trust
        write_settings(project, allow=["Bash(echo *)"])
        run = sb.run("go", cwd=project, base_url=fake.base_url, plugin_dirs=[plugin])
        assert run.returncode == 0 and run.json["result"] == "done!"

Environment given to the CLI (built from scratch; nothing from the caller's
environment leaks in except PATH, locale, TZ and TMPDIR): HOME and
CLAUDE_CONFIG_DIR = the sandbox folder, DISABLE_TELEMETRY=1,
DISABLE_AUTOUPDATER=1, CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1,
ANTHROPIC_BASE_URL=<fake>, ANTHROPIC_API_KEY=<dummy, not a credential>, plus
whatever ``env=`` adds.

Root note: the CLI refuses ``--dangerously-skip-permissions`` as root; allow tools
with ``allowed_tools=[...]`` (``--allowedTools``) or with project settings rules
(``write_settings``), which apply only once the project is trusted (``trust``).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import time

__all__ = [
    "CLAUDE_VERSION",
    "TOOLS_DIR",
    "DUMMY_API_KEY",
    "ClaudeNotAvailable",
    "ClaudeRun",
    "ClaudeSandbox",
    "find_claude",
    "install_claude",
    "claude_version",
    "claude_env",
    "write_claude_config",
    "write_settings",
    "run_claude",
    "run_cli",
]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: Pinned CLI version (override with AUTOTUNE_CLAUDE_VERSION).
CLAUDE_VERSION = os.environ.get("AUTOTUNE_CLAUDE_VERSION", "2.1.197")
#: Where the CLI is installed (git-ignored). Override with AUTOTUNE_CLAUDE_TOOLS_DIR.
TOOLS_DIR = os.environ.get("AUTOTUNE_CLAUDE_TOOLS_DIR", os.path.join(REPO_ROOT, ".tools", "claude"))
#: A syntactically plausible key; only ever sent to the loopback fake.
DUMMY_API_KEY = "sk-ant-api03-loopback-fake-key-for-tests-only-0000000000000000000000000000AA"

PACKAGE = "@anthropic-ai/claude-code"
_KEEP_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")


class ClaudeNotAvailable(RuntimeError):
    """The CLI is not installed and could not be installed (tests should skip)."""


# --------------------------------------------------------------------------- locate / install


def claude_version(path, timeout=30):
    """``claude --version`` -> "2.1.197" (or None if it does not run)."""
    try:
        p = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=timeout,
                           env=_base_env(), stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if p.returncode != 0 or not p.stdout.strip():
        return None
    return p.stdout.split()[0]


def _candidates(tools_dir):
    nm = os.path.join(tools_dir, "node_modules")
    yield os.path.join(nm, ".bin", "claude")
    # the platform package's binary works even if the postinstall hard-link was skipped
    scope = os.path.join(nm, "@anthropic-ai")
    if os.path.isdir(scope):
        for name in sorted(os.listdir(scope)):
            if name.startswith("claude-code-"):
                yield os.path.join(scope, name, "claude")


def _installed(tools_dir, version):
    for path in _candidates(tools_dir):
        if os.path.isfile(path) and os.access(path, os.X_OK):
            v = claude_version(path)
            if v and (version is None or v == version):
                return path
    return None


def install_claude(version=CLAUDE_VERSION, tools_dir=TOOLS_DIR, timeout=600):
    """``npm install --save-exact @anthropic-ai/claude-code@VERSION`` into ``tools_dir``.

    Returns the path of the working binary. Raises ClaudeNotAvailable on failure.
    Takes ~5 s with a warm npm cache (~235 MB in node_modules).
    """
    npm = shutil.which("npm")
    if not npm:
        raise ClaudeNotAvailable("npm not found on PATH; cannot install %s@%s" % (PACKAGE, version))
    os.makedirs(tools_dir, exist_ok=True)
    pkg_json = os.path.join(tools_dir, "package.json")
    if not os.path.exists(pkg_json):
        with open(pkg_json, "w") as f:
            json.dump({"name": "autotune-test-tools", "private": True}, f)
    cmd = [npm, "install", "--prefix", tools_dir, "--save-exact", "--no-audit", "--no-fund",
           "--loglevel=error", "%s@%s" % (PACKAGE, version)]
    env = dict(os.environ)
    env.setdefault("DISABLE_AUTOUPDATER", "1")
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ClaudeNotAvailable("npm install failed: %r" % (exc,))
    if p.returncode != 0:
        raise ClaudeNotAvailable("npm install failed (rc %d): %s" % (p.returncode, p.stderr[-2000:]))
    path = _installed(tools_dir, version)
    if path is None:  # postinstall skipped? run it by hand once
        install_cjs = os.path.join(tools_dir, "node_modules", "@anthropic-ai", "claude-code", "install.cjs")
        node = shutil.which("node")
        if node and os.path.exists(install_cjs):
            subprocess.run([node, install_cjs], cwd=os.path.dirname(install_cjs), capture_output=True,
                           timeout=120, stdin=subprocess.DEVNULL)
            path = _installed(tools_dir, version)
    if path is None:
        raise ClaudeNotAvailable("installed %s@%s but no working binary under %s" % (PACKAGE, version, tools_dir))
    return path


def _locked(tools_dir):
    """An exclusive lock on ``<tools_dir>.lock`` (parallel test workers install once)."""
    import fcntl  # POSIX only; imported here so the module still imports elsewhere

    class _Lock(object):
        def __enter__(self):
            os.makedirs(os.path.dirname(os.path.abspath(tools_dir)), exist_ok=True)
            self.f = open(os.path.abspath(tools_dir) + ".lock", "w")
            fcntl.flock(self.f, fcntl.LOCK_EX)
            return self

        def __exit__(self, *exc):
            fcntl.flock(self.f, fcntl.LOCK_UN)
            self.f.close()
            return False

    return _Lock()


def find_claude(install=True, version=CLAUDE_VERSION, tools_dir=TOOLS_DIR):
    """Path of a working ``claude`` binary of the pinned version.

    Order: $AUTOTUNE_CLAUDE_BIN (used as is, any version); ``tools_dir``; then
    ``install_claude`` if ``install``. Raises ClaudeNotAvailable otherwise.
    """
    env_bin = os.environ.get("AUTOTUNE_CLAUDE_BIN")
    if env_bin:
        if claude_version(env_bin):
            return env_bin
        raise ClaudeNotAvailable("AUTOTUNE_CLAUDE_BIN=%s does not run" % env_bin)
    path = _installed(tools_dir, version)
    if path:
        return path
    if not install:
        raise ClaudeNotAvailable("%s@%s not installed in %s" % (PACKAGE, version, tools_dir))
    with _locked(tools_dir):
        return _installed(tools_dir, version) or install_claude(version, tools_dir)


# --------------------------------------------------------------------------- config files


def _base_env():
    return {k: os.environ[k] for k in _KEEP_ENV if k in os.environ}


def claude_env(config_dir, base_url=None, api_key=DUMMY_API_KEY, extra=None):
    """The complete environment for a sandboxed CLI run (see module docstring)."""
    env = _base_env()
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update({
        "HOME": config_dir,
        "CLAUDE_CONFIG_DIR": config_dir,
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "ANTHROPIC_API_KEY": api_key,
    })
    if base_url:
        env["ANTHROPIC_BASE_URL"] = base_url
    if extra:
        for k, v in extra.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
    return env


def write_claude_config(config_dir, trusted_dirs=(), api_key=DUMMY_API_KEY, extra=None):
    """Create or update ``<config_dir>/.claude.json`` with the keys a headless run needs.

    * ``hasCompletedOnboarding: true`` (no first-run wizard; needed for the TUI),
    * ``customApiKeyResponses.approved`` holding the key's last 20 characters
      (otherwise the TUI asks whether to use the env key),
    * ``projects[<dir>].hasTrustDialogAccepted: true`` for each trusted dir (without
      it, rules in the project's ``.claude/settings*.json`` are dropped and writes
      into the cwd are refused).
    Existing content (the CLI rewrites this file on every run) is kept.
    """
    os.makedirs(config_dir, exist_ok=True)
    path = os.path.join(config_dir, ".claude.json")
    data = {}
    if os.path.exists(path):
        try:
            with open(path) as f:
                data = json.load(f)
        except ValueError:
            data = {}
    data["hasCompletedOnboarding"] = True
    data.setdefault("numStartups", 1)
    responses = data.setdefault("customApiKeyResponses", {})
    approved = responses.setdefault("approved", [])
    responses.setdefault("rejected", [])
    if api_key[-20:] not in approved:
        approved.append(api_key[-20:])
    projects = data.setdefault("projects", {})
    for d in trusted_dirs:
        for key in {os.path.abspath(str(d)), os.path.realpath(str(d))}:
            entry = projects.setdefault(key, {})
            entry["hasTrustDialogAccepted"] = True
            entry.setdefault("allowedTools", [])
            entry.setdefault("hasCompletedProjectOnboarding", True)
    if extra:
        data.update(extra)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)
    return path


def write_settings(project_dir, allow=(), deny=(), ask=(), extra=None, local=True):
    """Write ``<project>/.claude/settings.local.json`` (or ``settings.json`` when
    ``local=False``) with ``permissions.allow|deny|ask`` rules plus ``extra`` keys
    (e.g. ``{"env": {...}}`` or ``{"statusLine": {...}}``). Returns the path.
    Effective only when the project is trusted (``write_claude_config``)."""
    d = os.path.join(str(project_dir), ".claude")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "settings.local.json" if local else "settings.json")
    data = {"permissions": {"allow": list(allow), "deny": list(deny), "ask": list(ask)}}
    if extra:
        data.update(extra)
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
    return path


# --------------------------------------------------------------------------- running


class ClaudeRun(object):
    """Outcome of one CLI process: ``args``, ``returncode``, ``stdout``, ``stderr``,
    ``duration`` (s), ``timed_out``, ``json`` (parsed stdout for
    ``--output-format json``; for ``stream-json`` the final ``result`` event, with
    every line in ``events``; else None) and shortcuts ``result``, ``session_id``,
    ``permission_denials``, ``is_error``."""

    def __init__(self, args, returncode, stdout, stderr, duration, timed_out=False):
        self.args = args
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.duration = duration
        self.timed_out = timed_out
        self.json = None
        self.events = []  # --output-format stream-json: one parsed object per line
        s = (stdout or "").strip()
        if s.startswith("{") or s.startswith("["):
            try:
                self.json = json.loads(s)
            except ValueError:
                for line in s.splitlines():
                    try:
                        self.events.append(json.loads(line))
                    except ValueError:
                        pass
                # the final "result" event carries the same fields as --output-format json
                results = [e for e in self.events if isinstance(e, dict) and e.get("type") == "result"]
                self.json = results[-1] if results else None

    def _get(self, key, default=None):
        return self.json.get(key, default) if isinstance(self.json, dict) else default

    @property
    def result(self):
        return self._get("result")

    @property
    def session_id(self):
        return self._get("session_id")

    @property
    def permission_denials(self):
        return self._get("permission_denials", [])

    @property
    def is_error(self):
        return self._get("is_error")

    def __repr__(self):
        return "<ClaudeRun rc=%s %.2fs timed_out=%s result=%r stderr=%r>" % (
            self.returncode, self.duration, self.timed_out, self.result, (self.stderr or "")[-300:])


def _descendants(pid):
    """All descendant pids of ``pid`` (Linux /proc walk; [] elsewhere)."""
    children = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _kill_tree(proc):
    """SIGKILL the CLI, its process group, and every descendant. The Bash tool runs
    commands in their own process group, so killing the group alone leaves them."""
    pids = _descendants(proc.pid)
    for sig_target in [("pg", proc.pid)] + [("pid", p) for p in pids]:
        try:
            if sig_target[0] == "pg":
                os.killpg(sig_target[1], signal.SIGKILL)
            else:
                os.kill(sig_target[1], signal.SIGKILL)
        except OSError:
            pass


def run_cli(claude, args, cwd, env, timeout=120, input=None):
    """Run ``claude *args`` in a new session; on timeout SIGKILL it and every
    descendant (hooks, Bash-tool shells) and return a ClaudeRun with
    ``timed_out=True`` (returncode -9). Never raises on timeout."""
    argv = [claude] + [str(a) for a in args]
    t0 = time.time()
    proc = subprocess.Popen(argv, cwd=str(cwd), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(input=input, timeout=timeout)
        return ClaudeRun(argv, proc.returncode, out, err, time.time() - t0)
    except subprocess.TimeoutExpired:
        _kill_tree(proc)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            out, err = "", ""
        return ClaudeRun(argv, -9, out, err, time.time() - t0, timed_out=True)


def run_claude(prompt, cwd, base_url, config_dir, claude=None, plugin_dirs=(), allowed_tools=None,
               output_format="json", args=(), env=None, timeout=120, trust=True, api_key=DUMMY_API_KEY):
    """One headless session: ``claude -p PROMPT --output-format json [--plugin-dir D]...
    [--allowedTools T...] *args`` in ``cwd`` with the sandbox env (``claude_env``).

    ``trust=True`` (default) writes ``.claude.json`` so ``cwd`` is trusted and its
    ``.claude/settings.local.json`` rules apply. ``prompt=None`` omits the prompt
    (then pass it via ``args``). Returns ClaudeRun.
    """
    claude = claude or find_claude()
    config_dir = str(config_dir)
    write_claude_config(config_dir, trusted_dirs=[cwd] if trust else (), api_key=api_key)
    argv = ["-p"]
    if prompt is not None:
        argv.append(prompt)
    if output_format:
        argv += ["--output-format", output_format]
        if output_format == "stream-json":
            argv.append("--verbose")
    for d in plugin_dirs:
        argv += ["--plugin-dir", str(d)]
    if allowed_tools:
        argv += ["--allowedTools"] + list(allowed_tools)
    argv += list(args)
    return run_cli(claude, argv, cwd, claude_env(config_dir, base_url, api_key, env), timeout=timeout)


class ClaudeSandbox(object):
    """A scratch HOME/CLAUDE_CONFIG_DIR plus the binary, so tests don't repeat
    themselves. ``run(prompt, cwd, base_url, **kw)`` = ``run_claude`` with this
    config dir; ``cli(args, cwd, ...)`` runs any other subcommand (``plugin
    validate``, ``--plugin-dir D plugin details NAME`` ...) with the same env."""

    def __init__(self, config_dir, claude=None, api_key=DUMMY_API_KEY):
        self.config_dir = str(config_dir)
        os.makedirs(self.config_dir, exist_ok=True)
        self.claude = claude or find_claude()
        self.api_key = api_key

    def trust(self, *dirs):
        return write_claude_config(self.config_dir, trusted_dirs=dirs, api_key=self.api_key)

    def env(self, base_url=None, extra=None):
        return claude_env(self.config_dir, base_url, self.api_key, extra)

    def run(self, prompt, cwd, base_url, **kw):
        kw.setdefault("claude", self.claude)
        kw.setdefault("api_key", self.api_key)
        return run_claude(prompt, cwd, base_url, self.config_dir, **kw)

    def cli(self, args, cwd=None, base_url=None, env=None, timeout=60):
        return run_cli(self.claude, list(args), cwd or self.config_dir, self.env(base_url, env), timeout=timeout)

    def transcript_dir(self, cwd):
        """``<config>/projects/<real cwd, every non-alphanumeric char -> "-">``, where
        the session JSONL transcripts go (``<session_id>.jsonl``)."""
        return os.path.join(self.config_dir, "projects", re.sub(r"[^A-Za-z0-9]", "-", os.path.realpath(str(cwd))))

    def transcript(self, cwd, session_id):
        """Parsed lines of one session's transcript JSONL ([] if missing)."""
        path = os.path.join(self.transcript_dir(cwd), "%s.jsonl" % session_id)
        out = []
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    line = line.strip()
                    if line:
                        try:
                            out.append(json.loads(line))
                        except ValueError:
                            pass
        return out
