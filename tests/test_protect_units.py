"""Pure pieces of issue 11: glob matching of `protect`, the judge fingerprint, what
defines the commands a benchmark calls, and the Bash reader's words and targets."""

import os

import autotune
from conftest import make_project


def test_protect_globs_match_like_the_config_says():
    rx = autotune.glob_regex
    assert rx("tests/**").match("tests/unit/test_a.py") and rx("tests/**").match("tests/a.py")
    assert not rx("tests/**").match("src/tests.py") and not rx("tests/**").match("tests2/a.py")
    assert rx("**/*.csv").match("a.csv") and rx("**/*.csv").match("data/x/a.csv")
    assert rx("data/*.csv").match("data/a.csv") and not rx("data/*.csv").match("data/x/a.csv")
    assert rx("data/[ab].txt").match("data/a.txt") and not rx("data/[ab].txt").match("data/c.txt")
    assert rx("benchmark/data").match("benchmark/data/big.bin")  # a directory protects its contents


def test_the_judge_covers_whole_sections_and_ignores_comments_and_budgets():
    recorded = autotune.judge_of({"evaluator": {"alpha": 0.05, "_why": "x"}, "maxIterations": 5,
                                  "guardrails": {"mem": {"max": 5}}})
    assert recorded == {"evaluator": {"alpha": 0.05}, "guardrails": {"mem": {"max": 5}}}
    same = {"evaluator": {"alpha": 0.05, "_why": "changed comment"}, "maxIterations": 50,
            "budget": {"maxMinutes": 3}, "guardrails": {"mem": {"max": 5}}, "resume": {"maxResumes": 1}}
    assert autotune.judge_changes(recorded, same) == []
    changed = dict(same, evaluator={"alpha": 0.05, "mode": "interleaved"})  # a key added later
    assert [c[0] for c in autotune.judge_changes(recorded, changed)] == ["evaluator.mode"]
    assert "evaluator.mode (absent) -> \"interleaved\"" in autotune.changes_text(
        autotune.judge_changes(recorded, changed))


def test_called_tools_read_the_benchmark_not_its_comments():
    calls = autotune.called_tools("# make it faster with npm ci\nnpm run -s build && npm test\n"
                                  "python -m pytest -q\ncargo bench\n./scripts/prep.sh\nnpm install\n")
    assert calls["npm"] == {"build", "test"} and "make" not in calls
    assert "pytest" in calls and "cargo" in calls and calls["script"] == {"scripts/prep.sh"}


def test_indirect_inputs_are_the_definitions_not_the_dependencies(tmp_path):
    project = make_project(tmp_path / "repo", init=False)
    project.write("pyproject.toml", "[project]\nname = \"x\"\ndependencies = [\"numpy\"]\n\n"
                                    "[tool.pytest.ini_options]\naddopts = \"-q\"\n")
    project.write("Makefile", "include rules.mk\ncheck:\n\tpytest\n")
    project.write("rules.mk", "X = 1\n")
    session = autotune.Loop(str(project.path), None, autotune.Settings())
    keys = autotune.indirect_inputs(session, ["make check\npytest -x\n"])
    assert "Makefile" in keys and "rules.mk" in keys
    assert "pyproject.toml#[tool.pytest.ini_options]" in keys and "pyproject.toml" not in keys
    before = autotune._input_digest(session, "pyproject.toml#[tool.pytest.ini_options]")
    project.write("pyproject.toml", project.read("pyproject.toml").replace("numpy", "numpy>=2"))
    assert autotune._input_digest(session, "pyproject.toml#[tool.pytest.ini_options]") == before
    project.write("pyproject.toml", project.read("pyproject.toml").replace("-q", "-q -k nothing"))
    assert autotune._input_digest(session, "pyproject.toml#[tool.pytest.ini_options]") != before


def test_the_bash_reader_keeps_data_apart_from_commands():
    parse = autotune.shell_parse
    (commit,) = parse("git commit -m 'docs: `autotune run` > all'")
    assert commit.words == ["git", "commit", "-m", "docs: `autotune run` > all"] and not commit.redirs
    heredoc = parse("cat > out.txt <<'EOF'\nit's > autotune.jsonl\nEOF\necho done")
    assert [c.words for c in heredoc] == [["cat"], ["echo", "done"]]
    assert heredoc[0].redirs == [(">", "out.txt"), ("<<", "EOF")]
    nested = parse('echo "$(autotune run)"')
    assert nested[1].words == ["autotune", "run"] and nested[1].nested
    assert parse("echo 'unclosed") is None
    assert autotune.command_program(["env", "X=1", "timeout", "-k", "5", "60", "python3", "-m",
                                     "autotune", "run"])[:3] == ("autotune", ["run"], True)
    targets = autotune.bash_write_targets(parse("cd sub && cp -t .. /tmp/a/autotune.sh"), "/w")
    assert [(os.path.normpath(p), k) for p, k, _ in targets] == [("/w/autotune.sh", "file")]
