"""The pieces of the Bash reader, the PreToolUse guard and the HTML report, each one
rule in one place: words and their quoting, redirections, nested command lines, the
operands and options of a command, what a copy or an in-place edit writes, one read of
a command per hook call, one read of each loop per hook call, and the report's chart
geometry and segment baseline."""

import os

import pytest

import autotune
from conftest import make_project


# ---------------------------------------------------------------- words ----

def test_a_word_loses_its_quoting_and_keeps_its_substitutions():
    subs = []
    assert autotune._read_word("a'b c'\"d$(e f)\"\\ g h", 0, subs) == ("ab cd$(e f) g", True, 18)
    assert subs == ["e f"]
    assert autotune._read_word("plain;next", 0, []) == ("plain", False, 5)
    assert autotune._read_word("''", 0, []) == ("", True, 2)  # a quoted empty word is a word
    assert autotune._read_word("\\\nx", 0, []) == ("x", False, 3)  # a line continuation is nothing
    assert autotune._read_word("'open", 0, []) is None and autotune._read_word('"open', 0, []) is None


def test_each_quoted_part_reads_like_bash():
    assert autotune._ansi_c_quoted("$'a\\nb\\'c\\\\'", 0) == ("a\nb'c\\", True, 12)
    assert autotune._ansi_c_quoted("$'open", 0) is None
    subs = []
    assert autotune._double_quoted('"x\\$y\\q `z` $((1+2))"', 0, subs) == ("x$y\\q `z` $((1+2))", True, 21)
    assert subs == ["z"]  # an arithmetic $((...)) runs no command
    assert autotune._word_part("\\", 0, []) == ("", False, 2)  # a trailing backslash
    assert autotune._word_part("$x", 0, []) == ("$", False, 1)  # a plain $ is a character


def test_redirections_and_process_substitutions():
    assert autotune._redirection_at("2>>log", 0) == (">>", 1)
    assert autotune._redirection_at("&>out", 0) == ("&>", 0)
    assert autotune._redirection_at("12abc", 0) == (None, 2)
    subs = []
    assert autotune._process_substitution("<(cat a) b", 0, subs) == 8 and subs == ["cat a"]
    assert autotune._process_substitution("<(cat a", 0, []) == -1
    parsed = autotune.shell_parse("diff <(sort a) b > >(tee c.log) 2>&1")
    assert parsed[0].words == ["diff", "<(sort a)", "b"]
    assert parsed[0].redirs == [(">", ">(tee c.log)"), (">&", "1")]
    assert [c.words for c in parsed[1:]] == [["sort", "a"], ["tee", "c.log"]]


def test_a_nested_command_line_is_read_once_the_same_way_and_bounded():
    inner = autotune.nested_commands("cp a b; rm c", 0)
    assert [c.words for c in inner] == [["cp", "a", "b"], ["rm", "c"]] and all(c.nested for c in inner)
    assert autotune.nested_commands("cp a b", 3, autotune._WRAPPED_DEPTH) is not None
    assert autotune.nested_commands("cp a b", 4, autotune._WRAPPED_DEPTH) is None
    assert autotune.nested_commands("'open", 0) is None
    # substitutions nest up to 8 levels, then the line is not read (and not trusted)
    assert autotune.shell_parse("echo " + "$(" * 8 + "cp a b" + ")" * 8) is not None
    assert autotune.shell_parse("echo " + "$(" * 10 + "cp a b" + ")" * 10) is None
    # bash -c and eval are read through 4 levels for writes and for `autotune run`
    deep = "cp a autotune.sh"
    for _ in range(4):
        deep = "bash -c " + autotune._shell_quote(deep)
    assert [p for p, _, _ in autotune.bash_write_targets(autotune.shell_parse(deep), "/w")] == ["/w/autotune.sh"]
    assert autotune.bash_write_targets(autotune.shell_parse("bash -c " + autotune._shell_quote(deep)), "/w") == []
    assert autotune.run_invocations(autotune.shell_parse("eval eval autotune run")) == [([], False)]


# ---------------------------------------------------- operands and writes ----

def test_operands_and_the_options_they_pass_over():
    options = []
    assert autotune._operands(["-t", "dir", "a", "-x", "--", "-b"], ("-t",), options) == ["a", "-b"]
    assert options == [("-t", "dir"), ("-x", None)]
    options = []
    assert autotune._operands(["a", "-t"], ("-t",), options) == ["a"] and options == [("-t", None)]


def test_a_copy_destination_comes_from_its_options():
    dest = autotune._copy_destination
    assert dest("cp", [("-t", "d")]) == ("d", False, False)
    assert dest("cp", [("-tdir", None), ("--target-directory=e", None)]) == ("e", False, False)
    assert dest("cp", [("-t", None)]) == ("", False, False)  # -t as the last word
    assert dest("mv", [("-T", None)]) == (None, True, False)
    assert dest("install", [("-d", None)]) == (None, False, True)
    assert dest("rsync", [("-t", None)]) == (None, False, False)  # rsync -t keeps times


def test_copies_write_their_destination(tmp_path):
    (tmp_path / "dir").mkdir()
    cwd = str(tmp_path)
    assert autotune._copy_targets("cp", ["-t", "dir", "a", "b"], cwd) == [("dir/a", "file"), ("dir/b", "file")]
    assert autotune._copy_targets("cp", ["a", "dir"], cwd) == [("dir/a", "file")]
    assert autotune._copy_targets("mv", ["-T", "a", "dir"], cwd) == [("dir", "file"), ("a", "tree")]
    assert autotune._copy_targets("install", ["-d", "x", "y"], cwd) == []
    assert autotune._copy_targets("scp", ["a", "host:b"], cwd) == []


def test_each_program_reader_finds_what_it_writes(tmp_path):
    assert autotune._sed_targets(["-i", "s/a/b/", "f"]) == [("f", "file")]
    assert autotune._sed_targets(["-i", "-e", "s/a/b/", "f", "g"]) == [("f", "file"), ("g", "file")]
    assert autotune._sed_targets(["-n", "p", "f"]) == []
    assert autotune._awk_targets(["-i", "inplace", "{print}", "f", "x=1"]) == [("f", "file")]
    assert autotune._mode_targets(["-R", "-w", "f"]) == [("f", "file")]  # -w is the mode, not an option
    assert autotune._mode_targets(["--reference=a", "f", "g"]) == [("f", "file"), ("g", "file")]
    assert autotune._curl_targets(["-sSLo", "out", "http://h/x"]) == [("out", "file")]
    assert autotune._curl_targets(["--output-dir", "d", "-O", "http://h/a/f.tgz?x=1"]) == [("d/f.tgz", "file")]
    assert autotune._package_script_targets(["pkg", "set", "scripts.test=x", "name=y"]) == [
        ("package.json", "entry:scripts.test"), ("package.json", "entry:name")]
    assert autotune._package_script_targets(["set-script", "bench", "x"]) == [("package.json", "entry:scripts.bench")]
    (tmp_path / "fix.diff").write_text("--- a/src/app.py\n+++ b/src/app.py\n")
    plain = autotune.SimpleCommand()
    assert set(autotune._patch_targets(plain, ["-p1", "-i", "fix.diff"], str(tmp_path))) == {("src/app.py", "file")}
    assert set(autotune._patch_targets(plain, ["-d", "sub", "app.py", "fix.diff"], str(tmp_path))) == {
        ("sub/app.py", "file"), ("sub/src/app.py", "file"), ("sub/a/src/app.py", "file"),
        ("sub/b/src/app.py", "file")}  # no -p: every strip count is a candidate
    assert autotune._patch_targets(plain, ["-o", "out", "x"], str(tmp_path)) == [("out", "file")]
    perl = autotune.shell_parse("perl -pi -e 's/a/b/' f g")[0]
    assert autotune._perl_targets(perl, perl.words[1:]) == [("f", "file"), ("g", "file")]
    assert autotune._read_texts(str(tmp_path), ["fix.diff", "missing"]) == ["--- a/src/app.py\n+++ b/src/app.py\n"]


# ------------------------------------------------------------ the hook ----

def test_the_run_check_reads_the_command_without_surrounding_blank_space():
    assert autotune.classify_run_command("autotune run\n") == (True, True, [])
    assert autotune.classify_run_command("autotune run --timeout 5") == (True, True, ["--timeout", "5"])
    words = autotune.shell_parse("autotune run")
    assert autotune.classify_run_command("autotune run", words) == (True, True, [])
    assert autotune.classify_run_command("cd x && autotune run") == (True, False, [])
    assert autotune.classify_run_command("git commit -m 'autotune run'") == (False, True, [])


@pytest.fixture
def loop(tmp_path):
    project = make_project(tmp_path / "loop")
    os.mkdir(os.path.join(str(project.path), "src"))
    return project


def test_a_bash_command_is_read_once_per_hook_call(loop, monkeypatch):
    calls = []
    real = autotune.shell_parse

    def counting(text, nested=False, depth=0):
        if not nested:
            calls.append(text)
        return real(text, nested, depth)

    monkeypatch.setattr(autotune, "shell_parse", counting)
    cwd = str(loop.path)
    reason = autotune.bash_denial("cat autotune.md | tee autotune.jsonl", autotune.Guards(cwd))
    assert reason and "autotune.jsonl" in reason and len(calls) == 1
    del calls[:]
    assert autotune.bash_denial("cd src && autotune run", autotune.Guards(cwd)).startswith("autotune: `autotune run`")
    assert len(calls) == 1
    del calls[:]  # blank space around the command: the run check reads the trimmed text too
    assert autotune.bash_denial("autotune run\n", autotune.Guards(cwd)) is None and len(calls) == 2


def test_each_loop_is_read_once_per_hook_call(loop, monkeypatch):
    reads = []
    real = autotune.load_state
    monkeypatch.setattr(autotune, "load_state", lambda session, *a, **k: reads.append(1) or real(session, *a, **k))
    cwd = str(loop.path)
    guards = autotune.Guards(cwd)
    first = guards.at(cwd)
    assert first is not None and guards.at(os.path.join(cwd, "src")) is first
    assert guards.at(os.path.join(cwd, "src", "new", "file.py")) is first  # not created yet
    assert len(reads) == 1
    assert guards.reason(os.path.join(cwd, "autotune.jsonl")).startswith("autotune: autotune.jsonl")
    assert len(reads) == 1


def test_a_payload_is_an_object_or_nothing(tmp_path):
    assert autotune.payload_object(b'{"cwd": "/x"}') == {"cwd": "/x"}
    assert autotune.payload_object('{"a": 1}') == {"a": 1}
    for junk in (b"", b"  ", b"[1]", b"\xff{", b"[" * 100000, "null"):
        assert autotune.payload_object(junk) == {}
    assert autotune.payload_cwd({"cwd": str(tmp_path)}) == str(tmp_path)
    for bad in ({}, {"cwd": 5}, {"cwd": str(tmp_path / "missing")}, {"cwd": "a\0b"}):
        assert autotune.payload_cwd(bad) == os.getcwd()
    assert autotune.loop_at(str(tmp_path)) is None
    assert autotune.payload_loop({"cwd": str(tmp_path)}) == (None, None)


# -------------------------------------------------------------- report ----

def test_a_segments_baseline_is_its_first_measured_keep_or_discard():
    rows = [{"status": "crash", "metric": 1}, {"status": "checks_failed", "metric": 2},
            {"status": "discard", "metric": "x"}, {"status": "discard", "metric": 7}, {"status": "keep", "metric": 5}]
    assert autotune.segment_baseline(rows) == 7
    assert autotune.segment_baseline([]) is None


def test_the_chart_range_has_a_margin_round_ticks_and_never_overflows():
    low, high, ticks = autotune._chart_range([10.0, 20.0])
    assert low <= 10.0 - 0.8 and high >= 20.0 + 0.8 and ticks == sorted(ticks)
    assert autotune._chart_range([])[:2] == (min(autotune.nice_ticks(-0.08, 1.08)[0], -0.08),
                                                max(autotune.nice_ticks(-0.08, 1.08)[-1], 1.08))
    assert autotune._chart_range([5.0])[2][0] <= 4.0  # one value: a span around it
    low, high, _ = autotune._chart_range([-1e308, 1e308])
    assert low == -1e308 and high == 1e308  # no margin where it would overflow


def test_the_chart_area_places_experiments_and_values():
    area = autotune._ChartArea(960, 340, 4, 0.0, 10.0)
    assert area.plot_w == 880 and area.plot_h == 262
    assert area.x_edge(0) == 64 and area.x_edge(4) == 944 and area.x_at(0) == 64 + 110
    assert area.y_at(10.0) == 38 and area.y_at(0.0) == 300
    assert autotune._best_path(area, [None, 5.0, 5.0, 2.0], 0, 944.0) == \
        "M394.0,169.0 H614.0 V169.0 H834.0 V247.6 H944.0"
    assert autotune._best_path(area, [None, None], 0, 944.0) == ""


def test_chart_groups_join_consecutive_segments_of_one_metric():
    def seg(number, name, unit="ms", direction="lower"):
        return {"number": number, "config": {"metric_name": name, "metric_unit": unit, "direction": direction},
                "results": []}
    segments = [seg(1, "t"), seg(2, "t"), seg(3, "mem"), seg(4, "t"), seg(5, "t", direction="higher")]
    assert [[s["number"] for s in g] for g in autotune._chart_groups(segments)] == [[1, 2], [3], [4], [5]]
