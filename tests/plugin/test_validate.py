"""The plugin as the real Claude Code CLI (2.1.197, pinned; installed into .tools/claude
on first use) sees it (issue 3, point 1): both validations pass (also --strict), `plugin
details` lists the agent, the skill and the three hooks, and a copy with a broken
hooks.json fails the validation of plugin.json. Plus the static facts the validator does
not check (reference section 1): the hook scripts exist and call the right event, the
agent's and skill's names match their files, the two manifests agree.
"""

import json
import os
import re

import pytest

from conftest import ROOT
from support.plugin_helpers import copy_plugin, require_claude

EVENTS = {"Stop": "stop", "PreToolUse": "pre-tool-use", "SessionStart": "session-start"}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    from support.claude_cli import ClaudeSandbox
    return ClaudeSandbox(tmp_path_factory.mktemp("claude-config"), claude=require_claude())


def validate(sandbox, target, strict=False):
    return sandbox.cli(["plugin", "validate"] + (["--strict"] if strict else []) + [str(target)], cwd=ROOT)


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("target", [".", ".claude-plugin/plugin.json"])
def test_the_real_cli_validates_the_plugin(sandbox, target, strict):
    run = validate(sandbox, target, strict)
    assert run.returncode == 0, (run.stdout, run.stderr)
    assert "Validation passed" in run.stdout, run.stdout
    assert "warning" not in run.stdout.lower(), run.stdout
    manifest = "marketplace" if target == "." else "plugin"
    assert "Validating %s manifest" % manifest in run.stdout, run.stdout


def test_plugin_details_lists_the_agent_the_skill_and_three_hooks(sandbox):
    run = sandbox.cli(["--plugin-dir", ROOT, "plugin", "details", "autotune"], cwd=ROOT)
    assert run.returncode == 0, (run.stdout, run.stderr)
    out = run.stdout
    with open(os.path.join(ROOT, ".claude-plugin", "plugin.json")) as handle:
        version = json.load(handle)["version"]
    assert out.startswith("autotune %s\n" % version), out
    assert re.search(r"^\s*Skills \(1\)\s+autotune\s*$", out, re.M), out
    assert re.search(r"^\s*Agents \(1\)\s+autotune\s*$", out, re.M), out
    hooks = re.search(r"^\s*Hooks \(3\)\s+([A-Za-z, ]+?)\s*(\(|$)", out, re.M)
    assert hooks, out
    assert sorted(h.strip() for h in hooks.group(1).split(",")) == sorted(EVENTS), out


def test_plugin_loads_without_errors(sandbox):
    run = sandbox.cli(["--plugin-dir", ROOT, "plugin", "list", "--json"], cwd=ROOT)
    (entry,) = [p for p in json.loads(run.stdout) if p.get("installPath") == ROOT]
    assert entry["id"] == "autotune@inline" and entry["enabled"] is True, entry
    assert not entry.get("errors"), entry


def _break_hooks(copy, how):
    path = os.path.join(copy, "hooks", "hooks.json")
    with open(path) as handle:
        text = handle.read()
    if how == "truncated":
        text = text[: len(text) // 2]
    elif how == "unknown-event":
        data = json.loads(text)
        data["hooks"]["Stopp"] = data["hooks"].pop("Stop")
        text = json.dumps(data, indent=2)
    with open(path, "w") as handle:
        handle.write(text)


@pytest.mark.parametrize("how,message", [
    ("truncated", "Invalid JSON syntax"),
    ("unknown-event", "hooks.Stopp: Invalid key in record"),
])
def test_a_broken_hooks_json_fails_validation(sandbox, tmp_path, how, message):
    copy = copy_plugin(tmp_path / "plugin")
    good = validate(sandbox, os.path.join(copy, ".claude-plugin", "plugin.json"))
    assert good.returncode == 0, (good.stdout, good.stderr)  # the copy itself is fine
    _break_hooks(copy, how)
    bad = validate(sandbox, os.path.join(copy, ".claude-plugin", "plugin.json"))
    assert bad.returncode == 1, (bad.stdout, bad.stderr)
    assert message in bad.stdout, bad.stdout
    # why `make plugin-check` runs both: the directory form checks the marketplace file
    # and does not look at hooks.json (reference section 1)
    assert validate(sandbox, copy).returncode == 0
    if how == "truncated":  # and at run time the plugin loads with no hooks at all
        run = sandbox.cli(["--plugin-dir", copy, "plugin", "list", "--json"], cwd=copy)
        (entry,) = [p for p in json.loads(run.stdout) if p.get("installPath") == copy]
        assert any("Hook load failed" in e for e in entry.get("errors", [])), entry


# -------------------------------------------------- what the validator does not check ----

def _load(rel):
    with open(os.path.join(ROOT, rel)) as handle:
        return json.load(handle)


def _frontmatter(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as handle:
        text = handle.read()
    match = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    assert match, "%s has no frontmatter" % rel
    fields = {}
    for line in match.group(1).splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip().strip('"')
    return fields, text[match.end():]


def test_hook_commands_exist_and_call_their_event():
    hooks = _load("hooks/hooks.json")["hooks"]
    assert sorted(hooks) == sorted(EVENTS)
    for event, entries in hooks.items():
        for entry in entries:
            for hook in entry["hooks"]:
                assert hook["type"] == "command" and isinstance(hook.get("timeout"), (int, float))
                match = re.match(r'^"?\$\{CLAUDE_PLUGIN_ROOT\}/(hooks/[\w.-]+\.sh)"?$', hook["command"])
                assert match, hook["command"]
                script = os.path.join(ROOT, match.group(1))
                assert os.access(script, os.X_OK), script
                with open(script) as handle:
                    body = [l for l in handle.read().splitlines() if l.strip() and not l.startswith("#")]
                assert len(body) == 1, "a one-line wrapper: %r" % body
                assert re.search(r"\bhook %s\s*$" % re.escape(EVENTS[event]), body[0]), body[0]
    assert set(hooks["PreToolUse"][0]["matcher"].split("|")) >= {"Bash", "Edit", "Write", "MultiEdit",
                                                                 "NotebookEdit"}
    assert set(hooks["SessionStart"][0]["matcher"].split("|")) == {"startup", "resume", "clear", "compact"}


def test_agent_and_skill_names_match_their_files():
    agent, body = _frontmatter("agents/autotune.md")
    assert agent["name"] == "autotune" and len(agent["description"]) > 40
    assert "${CLAUDE_PLUGIN_ROOT}" in body, "the agent tells how to reach autotune without PATH"
    skill, _ = _frontmatter("skills/autotune/SKILL.md")
    assert skill.get("name", "autotune") == "autotune"
    assert re.match(r"^[a-z0-9-]{1,64}$", skill.get("name", "autotune"))
    assert len(skill["description"]) > 40


def test_the_two_manifests_agree():
    plugin = _load(".claude-plugin/plugin.json")
    market = _load(".claude-plugin/marketplace.json")
    (entry,) = market["plugins"]
    assert entry["name"] == plugin["name"] == "autotune"
    assert entry["source"] == "./"
    assert entry.get("version", plugin["version"]) == plugin["version"]
