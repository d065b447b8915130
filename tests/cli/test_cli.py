"""The command line: JSON contracts and one-line errors (never a traceback)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from searchkit.cli.main import app
from tests.helpers import make_photos, solid

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, tiny_clip_dir):
    base = tmp_path_factory.mktemp("cli")
    make_photos(base / "photos", 9)
    solid(base / "photos" / "blue.png", (0, 0, 255), (64, 64))
    lib = base / "lib"
    r = CliRunner().invoke(app, ["index", str(base / "photos"), "--library", str(lib),
                                 "--model", str(tiny_clip_dir)])
    assert r.exit_code == 0, r.output
    return base, lib


def run(*args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def assert_one_line_error(r):
    assert r.exit_code != 0
    assert "Traceback" not in r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output


def test_search_json_is_sorted_objects_with_path_and_score(indexed):
    _, lib = indexed
    r = run("search", "a blue square", "--library", lib, "--json", "-k", "5")
    assert r.exit_code == 0, r.output
    hits = json.loads(r.stdout)
    assert len(hits) == 5 and all({"path", "score"} <= set(h) for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


def test_similar_and_combined_and_table(indexed):
    base, lib = indexed
    r = run("similar", base / "photos" / "blue.png", "--library", lib, "--json", "-k", "1")
    assert json.loads(r.stdout)[0]["path"].endswith("blue.png")
    r = run("search", "blue", "--image", base / "photos" / "blue.png", "--not", "red",
            "--image-weight", "0.5", "--format", "png", "--library", lib)
    assert r.exit_code == 0 and "blue.png" in r.output


def test_env_library_and_status_json(indexed):
    _, lib = indexed
    r = run("status", "--json", env={"SEARCHKIT_LIBRARY": str(lib)})
    st = json.loads(r.stdout)
    assert st["indexed"] == 10 and st["index_state"] == "fresh" and st["skipped_files"] == []


def test_queries_file_json_lines(indexed, tmp_path):
    _, lib = indexed
    qf = tmp_path / "q.txt"
    qf.write_text('a cat\n\n{"text": "a dog", "k": 2}\nthe sea\n')
    r = run("search", "--queries", qf, "--library", lib, "-k", "3")
    lines = r.stdout.strip().splitlines()
    assert r.exit_code == 0 and [len(json.loads(x)) for x in lines] == [3, 2, 3]


@pytest.mark.parametrize("args,needle", [
    (["index", "/no/such/folder"], "does not exist"),
    (["search", ""], "empty"),
    (["search"], "empty query"),
    (["similar", "/no/such.jpg"], "not found"),
    (["search", "x", "--after", "yesterday"], "bad date"),
])
def test_user_errors_are_one_line(indexed, args, needle):
    _, lib = indexed
    r = run(*args, "--library", lib)
    assert_one_line_error(r)
    assert needle in r.output


def test_unknown_model_and_wrong_model(indexed, tmp_path):
    _, lib = indexed
    r = run("index", tmp_path, "--library", tmp_path / "new", "--model", "no-such-model")
    assert_one_line_error(r)
    assert "unknown model" in r.output
    r = run("search", "x", "--library", lib, "--model", "clip-vit-b32")
    assert_one_line_error(r)
    assert "--reindex" in r.output


def test_unreadable_query_image(indexed, tmp_path):
    _, lib = indexed
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    r = run("similar", tmp_path / "bad.png", "--library", lib)
    assert_one_line_error(r)
    assert "cannot read query image" in r.output


def test_missing_library(tmp_path):
    assert_one_line_error(run("search", "x", "--library", tmp_path / "none"))


def test_reindex_switches_model(indexed, tmp_path):
    from searchkit.testing import make_tiny_clip
    base, _ = indexed
    lib = tmp_path / "lib"
    other = make_tiny_clip(tmp_path / "other", seed=5)
    assert run("index", base / "photos", "--library", lib, "--model", other).exit_code == 0
    first = json.loads(run("status", "--json", "--library", lib).stdout)["model_fingerprint"]
    third = make_tiny_clip(tmp_path / "third", seed=6)
    r = run("index", "--library", lib, "--model", third, "--reindex", "--json")
    assert r.exit_code == 0, r.output
    st = json.loads(run("status", "--json", "--library", lib).stdout)
    assert st["model_name"] == str(third) and st["model_fingerprint"] != first
    assert st["indexed"] == 10


@pytest.mark.integration
def test_busy_library_and_search_during_index(tmp_path, tiny_clip_dir):
    """A second `index` fails at once; searching while an index run goes works. The run holds
    the write lock until the test says go (a line on each side, no sleep)."""
    make_photos(tmp_path / "p", 40, size=(64, 48))
    lib = tmp_path / "lib"
    assert run("index", tmp_path / "p" / "sub0", "--library", lib, "--model",
               tiny_clip_dir).exit_code == 0
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests/cli/hold_index_driver.py"),
                             str(lib), str(tiny_clip_dir), str(tmp_path / "p")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=env, text=True)
    try:
        assert proc.stdout.readline().strip() == "holding"
        busy = run("index", tmp_path / "p", "--library", lib)
        searches = [run("search", "a photo", "--library", lib, "--json") for _ in range(3)]
    finally:
        proc.stdin.close()  # "go": the driver's readline returns at the end of its input
        proc.wait(timeout=120)
    assert proc.returncode == 0 and proc.stdout.read().strip() == "done"
    assert_one_line_error(busy)
    assert "library is busy" in busy.output
    for s in searches:
        assert s.exit_code == 0 and len(json.loads(s.stdout)) == 10
    assert json.loads(run("status", "--json", "--library", lib).stdout)["indexed"] == 40


def test_forget_a_folder(tmp_path, tiny_clip_dir):
    make_photos(tmp_path / "a", 3)
    make_photos(tmp_path / "b", 2, offset=50)
    lib = tmp_path / "lib"
    for d in ("a", "b"):
        assert run("index", tmp_path / d, "--library", lib, "--model", tiny_clip_dir).exit_code == 0
    assert_one_line_error(run("forget", tmp_path / "c", "--library", lib))
    assert run("forget", tmp_path / "a", "--library", lib).exit_code == 0
    st = json.loads(run("status", "--json", "--library", lib).stdout)
    assert st["indexed"] == 2 and st["roots"] == [str(tmp_path / "b")]
    assert st["index_state"] == "fresh"


# ---- names reach the terminal literally and whole ----------------------------------------------
HOSTILE_NAMES = ["[", "x]", "IMG_1 [edited].jpg", "[link=file:/etc/passwd]x[/link].jpg",
                 "esc\x1b[31mred.jpg", "osc\x1b]8;;http:/e.vil\x07click.jpg", "[bold]b[/].jpg"]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, tiny_clip_dir):
    """A library whose file names are terminal markup and escape codes, one path very deep."""
    base = tmp_path_factory.mktemp("hostile")
    root = base / "photos [/x]"
    paths = [root / "deep" / ("sub folder " * 12).strip() / "IMG_2 [final].jpg"]
    paths += [root / name for name in HOSTILE_NAMES[2:]]
    for i, p in enumerate(paths):
        solid(p, (30 * i, 90, 200), fmt="JPEG")
    (root / "broken [x]\x1b[2J.jpg").write_bytes(b"not an image")
    lib = base / "lib"
    r = run("index", root, "--library", lib, "--model", tiny_clip_dir)
    assert r.exit_code == 0, r.output
    assert f"skipped {root}/broken [x]\\x1b[2J.jpg: " in r.output and "\x1b" not in r.output
    return lib, root, [str(p) for p in paths]


def shown(path: str) -> str:
    return path.replace("\x1b", "\\x1b").replace("\x07", "\\x07")


def test_search_prints_markup_names_literally_and_paths_whole(hostile):
    lib, _, paths = hostile
    r = run("search", "a photo", "--library", lib, "-k", "20")
    assert r.exit_code == 0, r.output
    assert "\x1b" not in r.output and "\x07" not in r.output
    for p in paths:  # piped: one line per hit, the whole path in it
        assert any(shown(p) in line for line in r.output.splitlines()), (p, r.output)


def test_status_prints_folder_names_literally(hostile):
    lib, root, _ = hostile
    r = run("status", "--library", lib)
    assert r.exit_code == 0, r.output
    assert f"folder    {root}" in r.output
    assert f"  {root}/broken [x]\\x1b[2J.jpg: " in r.output and "\x1b" not in r.output


def test_paths_output_is_one_whole_path_per_line_best_first(hostile):
    lib, _, paths = hostile
    r = run("search", "a photo", "--library", lib, "-k", "20", "--paths")
    assert r.exit_code == 0, r.output
    assert sorted(r.stdout.splitlines()) == sorted(shown(p) for p in paths)
    as_json = json.loads(run("search", "a photo", "--library", lib, "-k", "20", "--json").stdout)
    assert [shown(h["path"]) for h in as_json] == r.stdout.splitlines()


def test_error_messages_show_names_literally(tmp_path):
    r = run("similar", tmp_path / "[/x]\x1b[2J.jpg", "--library", tmp_path / "lib")
    assert_one_line_error(r)
    assert "[/x]\\x1b[2J.jpg" in r.output and "\x1b" not in r.output


# ---- odd but plausible input: one line and exit 2, or a sensible answer ------------------------
@pytest.mark.parametrize("args,option", [
    (["--min-width", "99999999999999999999"], "--min-width"),
    (["--min-height", "-3"], "--min-height"),
    (["--threshold", "nan"], "--threshold"),
    (["--text-weight", "inf"], "--text-weight"),
    (["--date-field", "bogus"], "--date-field"),
    (["--after", "2024-13"], "--after"),
    (["--format", "exe"], "--format"),
    (["-k", "0"], "-k"),
])
def test_bad_option_values_are_one_line_naming_the_option(indexed, args, option):
    _, lib = indexed
    r = run("search", "x", *args, "--library", lib)
    assert_one_line_error(r)
    assert r.exit_code == 2 and f"error: {option}:" in r.output


@pytest.mark.parametrize("args,expected", [
    (["--before", "9999"], 10), (["--before", "9999-12-31"], 10),
    (["--after", "0001-01-01"], 10), (["--after", "9999"], 0),
])
def test_far_date_bounds_are_valid_filters(indexed, args, expected):
    _, lib = indexed
    r = run("search", "x", *args, "--date-field", "modified", "--library", lib, "--json",
            "-k", "50")
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)) == expected


@pytest.mark.parametrize("line,needle", [
    (b'{"text": 5}', "text: must be text"),
    (b'{"image": 5}', "image: must be the path"),
    (b'{"k": 1e999}', "k: must be a whole number"),
    (b'{"text": "a", "txt": "b"}', "txt: unknown key"),
    (b'{"text": ', "not a JSON object"),
    (b"caf\xe9 au lait", "not UTF-8"),
])
def test_bad_queries_file_lines_are_one_line_naming_file_and_line(indexed, tmp_path, line,
                                                                  needle):
    _, lib = indexed
    qf = tmp_path / "q.txt"
    qf.write_bytes(b"a cat\n" + line + b"\nthe sea\n")
    r = run("search", "--queries", qf, "--library", lib)
    assert_one_line_error(r)
    assert r.exit_code == 2 and f"{qf}:2:" in r.output and needle in r.output


def test_queries_file_takes_lists_and_a_string_not_is_one_term(indexed, tmp_path):
    _, lib = indexed
    qf = tmp_path / "q.txt"
    qf.write_text('{"text": ["a"], "k": 2}\n{"text": "sea", "not": "people", "k": 3}\n')
    r = run("search", "--queries", qf, "--library", lib)
    assert r.exit_code == 0, r.output
    first, second = (json.loads(x) for x in r.stdout.splitlines())
    same = json.loads(run("search", "sea", "--not", "people", "-k", "3", "--json",
                          "--library", lib).stdout)
    assert len(first) == 2 and second == same


def test_a_query_of_only_unknown_words_warns_on_stderr(tmp_path):
    from searchkit.testing import make_tiny_composite
    model = make_tiny_composite(tmp_path / "model")
    make_photos(tmp_path / "p", 3)
    lib = tmp_path / "lib"
    assert run("index", tmp_path / "p", "--library", lib, "--model", model).exit_code == 0
    r = run("search", "😀🎉", "--library", lib, "--json")
    assert r.exit_code == 0 and len(json.loads(r.stdout)) == 3
    assert [ln for ln in r.stderr.splitlines() if ln.strip()] == [
        "warning: the model knows no word of '😀🎉': to it, such queries all look alike "
        "(results unrelated to them)"]
    qf = tmp_path / "q.txt"
    qf.write_text('a red cat\n{"text": "x", "not": "' + "w" * 10_000 + '"}\n')
    r = run("search", "--queries", qf, "--library", lib)
    assert r.exit_code == 0 and len(r.stdout.splitlines()) == 2
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 2 and all(f"{qf}:2: " in w for w in warnings)
