"""File names reach the terminal literally and whole: never read as markup, control characters
and undecodable bytes made visible, never cut to the width."""

from __future__ import annotations

import io
import re
import sys

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

from searchkit.cli import common
from searchkit.cli.common import Whole, literal, print_json, print_paths, show, visible

# What must never reach a terminal raw: C0 controls (but the line ends we print), DEL, C1
# controls, surrogates (undecodable bytes), line separators, bidirectional overrides.
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\ud800-\udfff\u2028-\u202e\u2066-\u2069]")
NEEDS_ESCAPE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u061c\u200e\u200f\u2028-\u202e"
                          "\u2066-\u2069]")
NAMES = st.text(st.characters(codec=None, exclude_categories=()), min_size=1, max_size=60) | \
    st.text(st.sampled_from("[]/\\ x\x1b\x07\n\t\x9b\u202e\udcff:=link"), min_size=1,
            max_size=40)


def rendered(renderable, width: int = 200, terminal: bool = False) -> str:
    buf = io.StringIO()
    Console(file=buf, width=width, force_terminal=terminal, color_system=None,
            soft_wrap=True).print(renderable)
    return buf.getvalue()


def test_a_name_that_begins_with_a_character_of_no_width_shows_it_escaped():
    # a lone skin-tone modifier or combining mark has nothing to attach to: a terminal (and
    # rich) may show nothing at all, so the name would print empty
    assert visible("\U0001F3FB") == "\\U0001f3fb"
    assert visible("\u0301x") == "\\u0301x"
    assert visible("a\U0001F3FB") == "a\U0001F3FB"       # attached to its base: as it is
    assert rendered(literal("\U0001F3FB"), width=10_000) == "\\U0001f3fb\n"


def test_control_characters_and_undecodable_bytes_are_shown_as_escapes():
    assert visible("a\x1b[31mred\x07") == "a\\x1b[31mred\\x07"
    assert visible("line\nbreak\ttab\rcr") == "line\\nbreak\\ttab\\rcr"
    assert visible("c1\u009b2J del\x7f") == "c1\\u009b2J del\\x7f"
    assert visible("bad\udcffname") == "bad\\xffname"  # the byte os.fsdecode could not decode
    assert visible("rtl\u202eexe.jpg") == "rtl\\u202eexe.jpg"
    assert visible("café [edited] 🐈.jpg") == "café [edited] 🐈.jpg"


def test_markup_in_a_name_is_printed_as_it_is():
    for name in ("[/x].jpg", "IMG_1 [edited].jpg", "[link=file:/etc/passwd]x[/link].jpg",
                 "[bold red]loud[/].png", ":smile:.png"):
        assert rendered(literal(name)) == name + "\n"
        out = io.StringIO()
        show("file ", name, console=Console(file=out, width=20, soft_wrap=True))
        assert out.getvalue() == f"file {name}\n"


def test_a_long_path_folds_whole_in_a_narrow_table_keeping_its_spaces():
    path = "/data/align/validation/openclipart/some folder/IMG_1 [edited] final.jpg"
    t = Table("#", "path", "date", box=None, pad_edge=False)
    t.add_row("1", Whole(path), "2024-01-01")
    header, *rows = rendered(t, width=30, terminal=True).splitlines()
    start, end = header.index("path"), header.index("date")
    column = "".join(row.ljust(end)[start:end - 2] for row in rows)  # 2: the column padding
    assert column.rstrip() == path
    assert "…" not in "".join(rows)


def test_piped_search_output_has_one_line_per_hit_with_the_whole_path(monkeypatch):
    from searchkit.cli.library_cmds import _print_hits
    from searchkit.query import Hit
    from datetime import datetime
    path = "/very/deep/" + "sub/" * 40 + "IMG_1 [edited].jpg"
    hit = Hit(1, path, 0.5, 10, 20, "JPEG", None, datetime(2024, 1, 1), None, None)
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stdout", buf)
    monkeypatch.setattr(common, "out", Console(soft_wrap=True, width=80))  # not a terminal
    _print_hits([hit], "table")
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2 and path in lines[1]


def test_paths_output_is_the_file_systems_bytes_with_controls_escaped(monkeypatch):
    buf = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    monkeypatch.setattr(sys, "stdout", buf)
    print_paths(["/p/IMG_1 [edited].jpg", "/p/bad\udcffname.png", "/p/a\nb\x1b.png"])
    buf.flush()
    assert buf.buffer.getvalue() == (b"/p/IMG_1 [edited].jpg\n/p/bad\xffname.png\n"
                                     b"/p/a\\nb\\x1b.png\n")


def test_json_output_escapes_what_would_act_on_a_terminal(monkeypatch):
    import json
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stdout", buf)
    name = "a\x1b]8;;x\x07\u009b\udcff\u202e é [b].jpg"
    print_json({"path": name})
    assert not RAW_CONTROL.search(buf.getvalue().replace("\n", ""))
    assert json.loads(buf.getvalue())["path"] == name


@settings(max_examples=300, deadline=None)
@given(name=NAMES, width=st.integers(1, 120))
def test_any_name_prints_without_raw_controls_and_with_its_brackets(name, width):
    shown = visible(name)
    for out in (rendered(literal(name), width), rendered(Whole(name), width, terminal=True)):
        assert not RAW_CONTROL.search(out)
        assert out.count("[") == name.count("[") and out.count("]") == name.count("]")
    assert rendered(literal(name), width=10_000) == shown + "\n"
    if not NEEDS_ESCAPE.search(name) and cell_len(name[0]) > 0:
        assert shown == name
    folded = rendered(Whole(name), width, terminal=True).split("\n")[:-1]
    assert "".join(folded) == shown  # folded at any character, nothing lost or cut


def test_classify_prints_labels_and_file_names_literally(tmp_path, tiny_clip_dir):
    from PIL import Image
    from typer.testing import CliRunner

    from searchkit.cli.main import app
    for label, rgb in (("[red]", (255, 0, 0)), ("[link=x]blue", (0, 0, 255))):
        (tmp_path / label).mkdir()
        Image.new("RGB", (16, 16), rgb).save(tmp_path / label / "IMG [edited]\x1b.png")
    (tmp_path / "[red]" / "junk [bold]x.jpg").write_bytes(b"nope")
    r = CliRunner().invoke(app, ["classify", str(tmp_path), "--accuracy", "--model",
                                 str(tiny_clip_dir)])
    assert r.exit_code == 0, r.output
    assert "[red]" in r.output and "[link=x]blue" in r.output and "junk [bold]x.jpg" in r.output
    r = CliRunner().invoke(app, ["classify", str(tmp_path / "[red]" / "IMG [edited]\x1b.png"),
                                 "--labels", "[red],[/blue]", "--model", str(tiny_clip_dir)])
    assert r.exit_code == 0, r.output
    label, _, path = r.stdout.rstrip("\n").split("\t")
    assert label in ("[red]", "[/blue]") and path.endswith("IMG [edited]\\x1b.png")
    assert "\x1b" not in r.output
