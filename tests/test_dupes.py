"""`searchkit dupes` (issue 14): exact and near-duplicate groups, the keep rules, filters, the
k-NN graph against all pairs, the JSON shape, the CLI's exit codes and literal names, and the
duplicate count a search hit carries."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from searchkit import Library, Query
from searchkit import dupes
from searchkit.cli.main import app
from searchkit.errors import QueryError
from searchkit.spec import parse_filters
from searchkit.store import STATUS_OK, FileRow, Store

DIM = 16
NOW = time.time()


# ---- a library of rows with chosen vectors (no model is loaded) ---------------------------
def unit(i: int, dim: int = DIM) -> np.ndarray:
    v = np.zeros(dim, np.float32)
    v[i] = 1.0
    return v


def at_cosine(c: float, base: int, other: int, dim: int = DIM) -> np.ndarray:
    """A unit vector whose cosine with ``unit(base)`` is ``c`` (it leans towards ``other``)."""
    return (c * unit(base, dim) + np.sqrt(1 - c * c) * unit(other, dim)).astype(np.float32)


def row(path: str, vector: np.ndarray, content: str | None = None, size: int = 1000,
        wh: tuple[int, int] = (100, 100), mtime: float = NOW,
        taken: datetime | None = None) -> FileRow:
    v = np.asarray(vector, np.float32)
    v = v / np.linalg.norm(v)
    return FileRow(path=path, size=size, mtime_ns=int(mtime * 1e9), content_hash=content,
                   width=wh[0], height=wh[1], format="JPEG", taken_at=taken, camera_make=None,
                   camera_model=None, status=STATUS_OK, reason=None, skip_source=None,
                   vector=v.astype(np.float32).tobytes(), indexed_at=NOW)


class FakeEncoder:
    """The library's model as far as a search by stored vectors ("like") needs one."""
    name = "fake-model"

    def __init__(self, dim: int = DIM):
        self.dim = dim

    def fingerprint(self) -> str:
        return "fake-fingerprint"

    def encode_texts(self, texts) -> np.ndarray:
        return np.tile(unit(0, self.dim), (len(texts), 1))

    def encode_pixels(self, pixels) -> np.ndarray:
        return np.tile(unit(0, self.dim), (len(pixels), 1))

    def unknown_texts(self, texts) -> list[bool]:
        return [False] * len(texts)


def make_library(directory: Path, rows: list[FileRow], dim: int = DIM,
                 encoder: FakeEncoder | None = None) -> Library:
    store = Store(directory)
    directory.mkdir(parents=True, exist_ok=True)
    store.create(FakeEncoder.name, FakeEncoder(dim).fingerprint(), dim)
    store.upsert_rows(rows)
    return Library.open(directory, encoder=encoder)


def groups_of(report) -> list[set[str]]:
    return [{m.path for m in g.members} for g in report.groups]


def ids_by_path(lib: Library) -> dict[str, int]:
    from sqlalchemy import select

    from searchkit.store import File
    with lib.store.session() as s:
        return dict(s.execute(select(File.path, File.id)).all())


# ---- exact copies ------------------------------------------------------------------------
def test_files_with_one_content_hash_form_one_group_whatever_the_threshold(tmp_path):
    # distinct vectors on purpose: exact copies are grouped by content hash, not by vector
    lib = make_library(tmp_path / "lib", [
        row("/p/a.jpg", unit(0), "h1"), row("/p/b.jpg", unit(1), "h1"),
        row("/p/c.jpg", unit(2), "h1"), row("/p/d.jpg", unit(3), "h2"),
        row("/p/e.jpg", unit(4), "h3")])
    report = lib.dupes(threshold=1.0)
    assert groups_of(report) == [{"/p/a.jpg", "/p/b.jpg", "/p/c.jpg"}]
    g = report.groups[0]
    assert g.kind == "exact" and g.contents == 1
    assert all(m.same_content and m.similarity == 1.0 for m in g.members)
    assert report.files_in_groups == 3 and report.redundant == 2
    assert groups_of(lib.dupes(exact_only=True)) == groups_of(report)


def test_exact_only_reads_no_vector_and_finds_no_near_duplicate(tmp_path):
    lib = make_library(tmp_path / "lib", [
        row("/p/a.jpg", unit(0), "h1"), row("/p/b.jpg", unit(0), "h2"),
        row("/p/c.jpg", unit(1), "h3"), row("/p/d.jpg", unit(1), "h3")])
    report = lib.dupes(exact_only=True)
    assert groups_of(report) == [{"/p/c.jpg", "/p/d.jpg"}]
    assert report.compared == 0 and report.index == "none"
    assert groups_of(lib.dupes()) == [{"/p/a.jpg", "/p/b.jpg"}, {"/p/c.jpg", "/p/d.jpg"}] or \
        groups_of(lib.dupes()) == [{"/p/c.jpg", "/p/d.jpg"}, {"/p/a.jpg", "/p/b.jpg"}]


# ---- near-duplicates ---------------------------------------------------------------------
@pytest.fixture
def near_lib(tmp_path):
    """a; b at cosine 0.995 with a; c at 0.97 with a (0.995 * 0.97 with b); far: unrelated."""
    return make_library(tmp_path / "lib", [
        row("/p/a.jpg", unit(0), "ha"), row("/p/b.jpg", at_cosine(0.995, 0, 1), "hb"),
        row("/p/c.jpg", at_cosine(0.97, 0, 2), "hc"), row("/p/far.jpg", unit(5), "hf")])


def test_near_duplicates_group_at_or_above_the_threshold_only(near_lib):
    assert groups_of(near_lib.dupes()) == [{"/p/a.jpg", "/p/b.jpg"}]        # default 0.99
    assert groups_of(near_lib.dupes(threshold=0.96)) == [{"/p/a.jpg", "/p/b.jpg", "/p/c.jpg"}]
    assert groups_of(near_lib.dupes(threshold=0.999)) == []
    g = near_lib.dupes(threshold=0.96).groups[0]
    assert g.kind == "near" and g.contents == 3


def test_each_member_carries_its_cosine_with_the_kept_file(near_lib):
    g = near_lib.dupes(threshold=0.96, keep="shortest-path").groups[0]
    assert g.keep.path == "/p/a.jpg"
    sims = {m.path: m.similarity for m in g.members}
    assert sims["/p/a.jpg"] == 1.0
    assert sims["/p/b.jpg"] == pytest.approx(0.995, abs=1e-5)
    assert sims["/p/c.jpg"] == pytest.approx(0.97, abs=1e-5)
    assert [m.path for m in g.members] == ["/p/a.jpg", "/p/b.jpg", "/p/c.jpg"]  # most similar first


def test_exact_copies_join_the_near_duplicates_of_their_content(tmp_path):
    lib = make_library(tmp_path / "lib", [
        row("/p/a.jpg", unit(0), "ha"), row("/q/a copy.jpg", unit(0), "ha"),
        row("/p/b.jpg", at_cosine(0.995, 0, 1), "hb"), row("/p/z.jpg", unit(7), "hz")])
    g, = lib.dupes().groups
    assert {m.path for m in g.members} == {"/p/a.jpg", "/q/a copy.jpg", "/p/b.jpg"}
    assert g.kind == "mixed" and g.contents == 2


def test_a_damaged_vector_leaves_its_row_to_the_exact_groups(tmp_path):
    rows = [row("/p/a.jpg", unit(0), "ha"), row("/p/b.jpg", unit(0), "ha"),
            row("/p/c.jpg", unit(0), "hc")]
    rows[0] = FileRow(**{**rows[0].values(), "vector": b"\x00" * 7})
    lib = make_library(tmp_path / "lib", rows)
    report = lib.dupes()
    assert report.left_out == 1
    assert groups_of(report) == [{"/p/a.jpg", "/p/b.jpg", "/p/c.jpg"}]  # b stands for ha
    sims = {m.path: m.similarity for m in report.groups[0].members}
    assert sims["/p/c.jpg"] == pytest.approx(1.0) or sims["/p/a.jpg"] == pytest.approx(1.0)


# ---- the keep rule -----------------------------------------------------------------------
@pytest.fixture
def keep_lib(tmp_path):
    v = unit(0)
    return make_library(tmp_path / "lib", [
        # most pixels, newest
        row("/photos/2024/big.jpg", v, "h", size=500, wh=(400, 300), mtime=NOW),
        # fewer pixels, most bytes, oldest taken date
        row("/photos/old.jpg", v, "h", size=900, wh=(200, 150), mtime=NOW - 10,
            taken=datetime(2001, 5, 1)),
        # shortest path
        row("/x.jpg", v, "h", size=100, wh=(100, 75), mtime=NOW - 5),
    ])


@pytest.mark.parametrize("rule, kept", [("largest", "/photos/2024/big.jpg"),
                                        ("oldest", "/photos/old.jpg"),
                                        ("newest", "/photos/2024/big.jpg"),
                                        ("shortest-path", "/x.jpg")])
def test_the_kept_file_is_chosen_by_the_stated_rule(keep_lib, rule, kept):
    g, = keep_lib.dupes(keep=rule).groups
    assert g.keep.path == kept and g.keep.keep
    assert [m.keep for m in g.members] == [True, False, False]
    assert g.reclaimable == sum(m.size for m in g.members) - g.keep.size


def test_largest_breaks_a_pixel_tie_by_bytes_then_by_age(tmp_path):
    v = unit(0)
    lib = make_library(tmp_path / "lib", [
        row("/a.jpg", v, "h", size=100, wh=(10, 10), mtime=NOW),
        row("/b.jpg", v, "h", size=200, wh=(10, 10), mtime=NOW),
        row("/c.jpg", v, "h", size=200, wh=(10, 10), mtime=NOW - 100)])
    assert lib.dupes().groups[0].keep.path == "/c.jpg"


def test_the_default_keep_rule_is_largest(keep_lib):
    assert keep_lib.dupes().groups[0].keep.path == "/photos/2024/big.jpg"
    assert dupes.DEFAULT_KEEP == "largest"


# ---- filters and order -------------------------------------------------------------------
def test_filters_restrict_the_groups_to_the_files_they_pass(tmp_path):
    lib = make_library(tmp_path / "lib", [
        row("/a/1.jpg", unit(0), "h1"), row("/a/2.jpg", unit(0), "h1"),
        row("/b/3.jpg", unit(0), "h1"),
        row("/a/4.jpg", unit(1), "h4"), row("/b/5.jpg", at_cosine(0.999, 1, 2), "h5")])
    everything = groups_of(lib.dupes())
    assert everything == [{"/a/1.jpg", "/a/2.jpg", "/b/3.jpg"}, {"/a/4.jpg", "/b/5.jpg"}]
    under_a = lib.dupes(filters=parse_filters(path="/a"))
    assert groups_of(under_a) == [{"/a/1.jpg", "/a/2.jpg"}]
    assert under_a.images == 3
    assert groups_of(lib.dupes(filters=parse_filters(glob="*/5.jpg"))) == []


def test_largest_groups_come_first_and_limit_lists_only_them(tmp_path):
    rows = [row(f"/p/three{i}.jpg", unit(0), "h3") for i in range(3)]
    rows += [row(f"/p/two{i}.jpg", unit(1), "h2") for i in range(2)]
    rows += [row(f"/p/four{i}.jpg", unit(2), "h4") for i in range(4)]
    lib = make_library(tmp_path / "lib", rows)
    report = lib.dupes()
    assert [len(g.members) for g in report.groups] == [4, 3, 2]
    limited = lib.dupes(limit=1)
    assert [len(g.members) for g in limited.groups] == [4]
    assert (limited.groups_total, limited.files_in_groups) == (3, 9)


# ---- the k-NN graph against all pairs ----------------------------------------------------
def planted(n_sources: int, n_random: int, dim: int, seed: int) -> np.ndarray:
    """Random unit vectors plus 1-5 near copies (cosine 0.985-0.999) of some of them."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_sources + n_random, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    out = [x]
    for s in range(n_sources):
        for _ in range(int(rng.integers(1, 6))):
            c = rng.uniform(0.985, 0.999)
            noise = rng.standard_normal(dim).astype(np.float32)
            noise -= noise @ x[s] * x[s]
            noise /= np.linalg.norm(noise)
            out.append((c * x[s] + np.sqrt(1 - c * c) * noise)[None].astype(np.float32))
    return np.concatenate(out)


def all_pairs_groups(vectors: np.ndarray, threshold: float) -> set[frozenset[int]]:
    """The reference: every pair compared."""
    uf = dupes.UnionFind()
    sims = vectors @ vectors.T
    for a, b in zip(*np.nonzero(np.triu(sims >= threshold, 1))):
        uf.union(int(a), int(b))
    return {frozenset(c) for c in uf.components()}


def graph_groups(vectors: np.ndarray, k: int, threshold: float) -> set[frozenset[int]]:
    edges = dupes.neighbour_edges(vectors, k, threshold)
    uf = dupes.UnionFind()
    for a, b in zip(edges.a.tolist(), edges.b.tolist()):
        uf.union(a, b)
    return {frozenset(c) for c in uf.components()}


@pytest.mark.parametrize("exact_max_rows", [100_000, 0], ids=["flat", "ivf"])
def test_the_knn_graph_finds_the_groups_all_pairs_find(monkeypatch, exact_max_rows):
    monkeypatch.setattr(dupes, "EXACT_MAX_ROWS", exact_max_rows)
    # dense enough (16-d) that probing one IVF list misses some pairs: the graph must probe more
    x = planted(n_sources=300, n_random=4000, dim=16, seed=3)
    want = all_pairs_groups(x, 0.98)
    assert len(want) >= 250  # the planted groups (and chains through them) are there
    assert dupes.graph_kind(len(x)) == ("flat" if exact_max_rows else "ivf")
    assert graph_groups(x, dupes.DEFAULT_K, 0.98) == want


def test_the_library_groups_through_ivf_as_all_pairs_do(tmp_path, monkeypatch):
    monkeypatch.setattr(dupes, "EXACT_MAX_ROWS", 0)
    x = planted(n_sources=40, n_random=600, dim=24, seed=5)
    lib = make_library(tmp_path / "lib", [row(f"/p/{i:04d}.jpg", v, f"h{i}")
                                          for i, v in enumerate(x)], dim=24)
    report = lib.dupes(threshold=0.985)
    assert report.index == "ivf" and report.compared == len(x)
    by_path = {f"/p/{i:04d}.jpg": i for i in range(len(x))}
    got = {frozenset(by_path[m.path] for m in g.members) for g in report.groups}
    assert got == all_pairs_groups(x, 0.985)


def test_a_vector_with_more_near_copies_than_k_still_joins_them_all(tmp_path):
    x = planted(n_sources=1, n_random=0, dim=32, seed=0)[:1]
    rng = np.random.default_rng(1)
    copies = x + 0.01 * rng.standard_normal((30, 32)).astype(np.float32)
    lib = make_library(tmp_path / "lib", [row(f"/p/{i}.jpg", v, f"h{i}")
                                          for i, v in enumerate(np.concatenate([x, copies]))],
                       dim=32)
    g, = lib.dupes(k=3).groups
    assert len(g.members) == 31


# ---- options -----------------------------------------------------------------------------
@pytest.mark.parametrize("value", [1.5, -0.1, float("nan"), float("inf"), "0.9", True])
def test_a_threshold_outside_0_to_1_or_not_a_finite_number_is_refused(near_lib, value):
    with pytest.raises(QueryError, match="threshold"):
        near_lib.dupes(threshold=value)


@pytest.mark.parametrize("kw, word", [({"k": 0}, "k"), ({"k": 10_000}, "k"),
                                      ({"keep": "biggest"}, "keep"), ({"limit": 0}, "limit")])
def test_other_bad_options_are_refused_naming_them(near_lib, kw, word):
    with pytest.raises(QueryError, match=word):
        near_lib.dupes(**kw)


# ---- JSON --------------------------------------------------------------------------------
def test_the_report_as_json_has_its_totals_and_each_members_row(near_lib):
    d = near_lib.dupes(threshold=0.96).to_json()
    json.dumps(d)  # plain JSON values only
    assert {k: d[k] for k in ("threshold", "k", "keep_rule", "exact_only", "images",
                              "compared", "groups_total", "files_in_groups", "redundant")} == \
        dict(threshold=0.96, k=dupes.DEFAULT_K, keep_rule="largest", exact_only=False,
             images=4, compared=4, groups_total=1, files_in_groups=3, redundant=2)
    g, = d["groups"]
    assert set(g) == {"kind", "files", "contents", "keep", "reclaimable_bytes", "members"}
    assert g["kind"] == "near" and g["files"] == 3 and g["reclaimable_bytes"] == 2000
    assert set(g["members"][0]) == {"id", "path", "size", "width", "height", "format", "date",
                                    "taken_at", "modified_at", "content_hash", "similarity",
                                    "same_content", "keep"}
    assert [m["keep"] for m in g["members"]] == [True, False, False]
    assert g["keep"] == g["members"][0]["id"]


# ---- a search hit says when it has duplicates --------------------------------------------
def test_a_search_hit_counts_the_other_files_with_its_content(tmp_path):
    lib = make_library(tmp_path / "lib", [
        row("/p/a.jpg", unit(0), "ha"), row("/p/b.jpg", unit(0), "ha"),
        row("/p/c.jpg", unit(0), "ha"), row("/p/d.jpg", at_cosine(0.9, 0, 1), "hd")])
    ids = ids_by_path(lib)
    hits = lib.search(Query(like=[(ids["/p/d.jpg"], 1.0)]), k=4, encoder=FakeEncoder())
    counts = {h.path: h.duplicates for h in hits}
    assert counts == {"/p/a.jpg": 2, "/p/b.jpg": 2, "/p/c.jpg": 2, "/p/d.jpg": 0}
    assert hits[0].to_json()["duplicates"] == 0


# ---- the CLI -----------------------------------------------------------------------------
def run(*args):
    return CliRunner().invoke(app, ["dupes", *[str(a) for a in args]])


def assert_one_line_error(r, *words):
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    for w in words:
        assert w in lines[0], r.output


@pytest.fixture
def cli_lib(tmp_path):
    directory = tmp_path / "lib"
    make_library(directory, [
        row("/p/a.jpg", unit(0), "ha", size=2048, wh=(640, 480)),
        row("/p/odd\x1b[31m\nname [red].jpg", unit(0), "ha", size=1024, wh=(320, 240)),
        row("/p/b.jpg", at_cosine(0.995, 0, 1), "hb"), row("/p/z.jpg", unit(5), "hz")])
    return directory


def test_cli_json_lists_the_groups(cli_lib):
    r = run("--library", cli_lib, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["groups_total"] == 1 and d["threshold"] == dupes.DEFAULT_THRESHOLD
    paths = [m["path"] for m in d["groups"][0]["members"]]
    assert paths[0] == "/p/a.jpg" and "/p/odd\x1b[31m\nname [red].jpg" in paths
    assert "\x1b" not in r.stdout.replace("\\u001b", "")  # escaped: json.loads restores it


def test_cli_table_prints_names_literally_with_controls_escaped(cli_lib):
    r = run("--library", cli_lib)
    assert r.exit_code == 0, r.output
    assert "\x1b" not in r.stdout
    assert "/p/odd\\x1b[31m\\nname [red].jpg" in r.stdout
    assert "/p/a.jpg" in r.stdout and "keep" in r.stdout
    assert "1 group" in r.stdout


def test_cli_keep_and_threshold_options_are_used(cli_lib):
    r = run("--library", cli_lib, "--json", "--keep", "shortest-path", "--threshold", "0.999")
    d = json.loads(r.stdout)
    assert d["keep_rule"] == "shortest-path" and d["threshold"] == 0.999
    assert d["groups"][0]["kind"] == "exact"  # b (0.995) is below 0.999
    r = run("--library", cli_lib, "--json", "--exact-only", "--path", "/q")
    assert r.exit_code == 0 and json.loads(r.stdout)["groups"] == []
    r = run("--library", cli_lib, "--json", "--text-contains", "42.50")  # no text was read
    assert r.exit_code == 0 and json.loads(r.stdout)["groups"] == []


@pytest.mark.parametrize("args, words", [
    (["--threshold", "1.5"], ["--threshold", "between 0 and 1"]),
    (["--threshold", "nan"], ["--threshold", "finite"]),
    (["--threshold", "-0.5"], ["--threshold"]),
    (["--keep", "biggest"], ["--keep", "largest"]),
    (["-k", "0"], ["-k"]),
    (["--after", "2024-13"], ["--after"]),
])
def test_cli_bad_options_are_one_line_errors(cli_lib, args, words):
    assert_one_line_error(run("--library", cli_lib, *args), *words)


def test_cli_without_a_library_is_a_one_line_error(tmp_path):
    assert_one_line_error(run("--library", tmp_path / "none"), "no library")


def test_cli_with_no_duplicates_says_so(tmp_path):
    directory = tmp_path / "lib"
    make_library(directory, [row("/p/a.jpg", unit(0), "ha"), row("/p/b.jpg", unit(1), "hb")])
    r = run("--library", directory)
    assert r.exit_code == 0 and "no duplicates" in r.output


def test_the_search_table_marks_the_hits_that_have_copies(monkeypatch):
    import io
    import sys

    from rich.console import Console

    from searchkit.cli import common
    from searchkit.cli.library_cmds import _print_hits
    from searchkit.query import Hit
    when = datetime(2024, 1, 1)
    hits = [Hit(1, "/p/a.jpg", 0.9, 10, 20, "JPEG", None, when, None, None, 2),
            Hit(2, "/p/b.jpg", 0.8, 10, 20, "JPEG", None, when, None, None)]
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stdout", buf)
    monkeypatch.setattr(common, "out", Console(soft_wrap=True, width=80))  # not a terminal
    _print_hits(hits, "table")
    head, first, second = buf.getvalue().splitlines()
    assert "copies" in head and " x3 " in first and " x" not in second
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stdout", buf)
    _print_hits(hits[1:], "table")  # no hit with copies: no column
    assert "copies" not in buf.getvalue() and "/p/b.jpg" in buf.getvalue()
