"""Text in images (issue 14): ``index --ocr``, the text stored by content with its full-text
index (schema 4), the ``text_contains`` filter, and the hybrid ranking.

The unit tests hand the indexer a fake engine that "reads" a text chosen by the image's size;
one integration test runs the real RapidOCR on a few rendered images when it is installed.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from sqlalchemy import select, text
from typer.testing import CliRunner

from searchkit import Filters, Library, Query, hybrid, ocr, store
from searchkit.cli.main import app
from searchkit.indexer import Indexer
from searchkit.ocr import OcrResult, TextBox
from searchkit.spec import FieldError, parse_filters
from tests.helpers import make_photos, solid

TEXTS = {(60, 40): "SALE 42.50", (61, 40): "Café au lait", (62, 40): "BICYCLE repair shop",
         (63, 40): "price 42,50", (64, 40): "x 142.50 total"}
FAILS = (65, 40)   # the fake engine fails on images of this size


class FakeOcr:
    """Reads ``TEXTS[image.size]`` (nothing for other sizes); fails on ``FAILS``; counts."""
    name = "fake 1"

    def __init__(self):
        self.calls = 0
        self._lock = threading.Lock()

    def read(self, image: Image.Image) -> OcrResult:
        with self._lock:
            self.calls += 1
        if image.size == FAILS:
            raise RuntimeError("engine exploded")
        text = TEXTS.get(image.size, "")
        return OcrResult((TextBox(text, ((0, 0), (1, 0), (1, 1), (0, 1)), 0.9),) if text else ())


def texted(folder: Path) -> dict[str, Path]:
    """One PNG per entry of TEXTS (distinct colours), by its text, plus a failing one."""
    out = {}
    for i, (size, text) in enumerate(sorted(TEXTS.items())):
        out[text] = solid(folder / f"t{i}.png", (40 * i, 200 - 30 * i, 90), size)
    out["fails"] = solid(folder / "fails.png", (1, 2, 3), FAILS)
    return out


@pytest.fixture
def lib(tmp_path, tiny_encoder):
    return Library.open(tmp_path / "lib", encoder=tiny_encoder, create=True)


@pytest.fixture
def engine():
    return FakeOcr()


@pytest.fixture
def indexed(tmp_path, lib, engine):
    """A library with OCR on: the texted images and a few photos without text."""
    root = tmp_path / "imgs"
    files = texted(root)
    make_photos(root / "photos", 4)
    lib.set_ocr(True)
    report = Indexer(lib, ocr=engine).run([str(root)])
    return root, files, report


def names(hits) -> list[str]:
    return [Path(h.path).name for h in hits]


def contains_filter(lib, needle: str) -> set[str]:
    return set(names(lib.search(Query.text("x"), k=50, filters=Filters(text_contains=needle),
                                hybrid=False)))


# ---- matching: pure functions ---------------------------------------------------------------
def test_words_split_where_fts_unicode61_splits():
    assert ocr.words("SALE 42.50 (c)2024 Café_au-lait") == ["SALE", "42", "50", "c", "2024",
                                                          "Café", "au", "lait"]
    assert ocr.phrase_query('42.50 "x"') == '"42 50 x" *'
    assert ocr.phrase_query(" -- $ ") is None


def test_contains_ignores_case_accents_and_whitespace_but_not_punctuation():
    assert ocr.contains("SALE\n42.50", "sale 42.50")
    assert ocr.contains("Café au lait", "CAFE AU")
    assert not ocr.contains("price 42,50", "42.50")
    assert not ocr.contains(None, "x")


def test_query_words_leave_out_common_words_and_repeats():
    assert ocr.query_words(["a photo of the Bicycle", "bicycle SHOP"]) == ["bicycle", "shop"]


def test_a_text_match_lifts_an_image_and_images_without_text_still_rank():
    clip, scores = [1, 2, 3, 4], [0.9, 0.8, 0.7, 0.6]
    assert hybrid.fuse(clip, scores, [], {}, 4) == clip  # no text match: CLIP's order
    assert hybrid.fuse(clip, scores, [4], {}, 4) == [4, 1, 2, 3]
    # found by its text beyond the CLIP candidates: it counts as CLIP's 5th, so it beats
    # CLIP's best (which shows no word); with no text match, CLIP's best would have stayed
    assert hybrid.fuse(clip, scores, [9], {9: 0.1}, 5) == [9, 1, 2, 3, 4]
    assert hybrid.rrf_scores([[1, 2], [2]]) == {1: 1 / 61, 2: 1 / 62 + 1 / 61}


# ---- the filter's parser ----------------------------------------------------------------------
def test_text_contains_is_trimmed_blank_is_no_filter_and_long_is_an_error():
    assert parse_filters(text_contains="  42.50 ").text_contains == "42.50"
    assert not parse_filters(text_contains="   ").active()
    with pytest.raises(FieldError) as e:
        parse_filters(text_contains="x" * 201)
    assert e.value.field == "text_contains"


# ---- indexing ---------------------------------------------------------------------------------
def test_index_with_ocr_stores_each_text_and_counts_it(lib, indexed, engine):
    _, files, report = indexed
    assert (report.texts_read, report.texts_failed) == (10, 1)  # 6 texted + 4 photos
    assert engine.calls == 10
    st = lib.status()
    assert (st.ocr, st.ocr_with_text, st.ocr_failed) == (True, 5, 1)
    by_name = {Path(h.path).name: h.id for h in lib.search(Query.text("x"), k=50)}
    texts = lib.store.ocr_texts(list(by_name.values()))
    assert texts[by_name[files["SALE 42.50"].name]] == "SALE 42.50"


def test_an_ocr_failure_keeps_the_image_indexed_with_the_reason(lib, indexed):
    _, files, report = indexed
    assert report.skipped == []
    assert files["fails"].name in names(lib.search(Query.text("x"), k=50))
    with lib.store.session() as s:
        error = s.execute(select(store.OcrText.error).where(
            store.OcrText.error.is_not(None))).scalar_one()
    assert error == "RuntimeError: engine exploded"


@pytest.mark.parametrize("needle,expected", [
    ("42.50", {"SALE 42.50"}),  # at a word's start: not in 142.50
    ("sale 42.5", {"SALE 42.50"}), ("42,50", {"price 42,50"}), ("cafe", {"Café au lait"}),
    ("BICYCLE REPAIR", {"BICYCLE repair shop"}), ("repair bicycle", set()), ("lait!", set()),
])
def test_text_contains_finds_the_text_as_written_ignoring_case(lib, indexed, needle, expected):
    _, files, _ = indexed
    assert contains_filter(lib, needle) == {files[t].name for t in expected}


def test_text_contains_without_letters_or_digits_checks_every_text(lib, indexed):
    _, files, _ = indexed
    assert contains_filter(lib, ",") == {files["price 42,50"].name}


def test_unchanged_files_are_not_read_again_and_a_changed_one_is(lib, indexed, engine):
    root, files, _ = indexed
    report = Indexer(lib, ocr=engine).run()
    assert (report.texts_read, engine.calls) == (0, 10)
    solid(files["SALE 42.50"], (5, 5, 5), (62, 40))  # now the size that reads BICYCLE
    report = Indexer(lib, ocr=engine).run()
    assert (report.updated, report.texts_read, engine.calls) == (1, 1, 11)
    assert files["SALE 42.50"].name in contains_filter(lib, "bicycle")
    assert contains_filter(lib, "sale") == set()  # the old text left with the old content


def test_turning_ocr_on_reads_indexed_images_without_encoding_them_again(tmp_path, lib, engine,
                                                                          monkeypatch):
    root = tmp_path / "imgs"
    texted(root)
    Indexer(lib, ocr=engine).run([str(root)])  # OCR off: nothing read
    assert engine.calls == 0 and lib.status().ocr_with_text == 0
    before = {h.path: lib.stored_vector(h.id).copy() for h in lib.search(Query.text("x"), k=50)}
    encoded = []
    real = lib.encoder.encode_pixels
    monkeypatch.setattr(lib.encoder, "encode_pixels", lambda p: encoded.append(len(p)) or real(p))
    lib.set_ocr(True)
    report = Indexer(lib, ocr=engine).run()
    assert (report.texts_read, report.encoded, encoded, report.unchanged) == (6, 0, [], 6)
    after = {h.path: lib.stored_vector(h.id) for h in lib.search(Query.text("x"), k=50)}
    assert after.keys() == before.keys()
    assert all(np.array_equal(after[p], before[p]) for p in before)
    assert lib.status().ocr_with_text == 5
    lib.set_ocr(False)  # off: nothing more is read, what was read stays searchable
    solid(root / "new.png", (9, 9, 9), (60, 40))
    assert Indexer(lib, ocr=engine).run().texts_read == 0
    assert contains_filter(lib, "42.50") == {"t0.png"}


def test_copies_share_the_text_and_a_moved_file_keeps_it(lib, indexed, engine):
    root, files, _ = indexed
    shutil.copy(files["SALE 42.50"], root / "copy.png")
    files["Café au lait"].rename(root / "moved.png")
    report = Indexer(lib, ocr=engine).run()
    assert (report.duplicates, report.moved, report.texts_read) == (1, 1, 0)
    assert contains_filter(lib, "42.50") == {files["SALE 42.50"].name, "copy.png"}
    assert contains_filter(lib, "cafe") == {"moved.png"}


def test_a_deleted_file_takes_its_text_out_of_the_full_text_index(lib, indexed, engine):
    root, files, _ = indexed
    files["BICYCLE repair shop"].unlink()
    Indexer(lib, ocr=engine).run()
    assert contains_filter(lib, "bicycle") == set()
    assert lib.store.ocr_ranking(["bicycle"], 10) == []
    with lib.store.session() as s:  # the text itself is gone, and the index agrees
        assert "BICYCLE repair shop" not in set(s.scalars(select(store.OcrText.text)))
        s.execute(text("INSERT INTO ocr_fts (ocr_fts) VALUES ('integrity-check')"))
    lib.forget(root)
    assert lib.status().ocr_with_text == 0 and lib.store.ocr_hashes() == set()


def test_text_is_read_by_many_workers_once_per_content(tmp_path, lib, engine):
    root = tmp_path / "imgs"
    files = texted(root)
    for i in range(5):
        shutil.copy(files["SALE 42.50"], root / f"copy{i}.png")
    lib.set_ocr(True)
    report = Indexer(lib, workers=4, encode_batch=2, commit_every=3, ocr=engine).run([str(root)])
    assert (report.texts_read, engine.calls, report.duplicates) == (6, 6, 5)
    assert len(contains_filter(lib, "sale")) == 6


def test_a_library_with_ocr_on_indexes_without_the_engine_and_says_why(lib, tmp_path,
                                                                        monkeypatch):
    texted(tmp_path / "imgs")
    lib.set_ocr(True)
    monkeypatch.setattr(ocr, "available", lambda: False)
    report = Indexer(lib).run([str(tmp_path / "imgs")])
    assert report.added == 6 and report.texts_read == 0
    assert "searchkit[ocr]" in report.ocr_problem


# ---- hybrid ranking ---------------------------------------------------------------------------
def test_hybrid_lifts_the_image_whose_text_holds_the_query_word(lib, indexed):
    _, files, _ = indexed
    q = Query.text("a bicycle")
    clip_only = lib.search(q, k=50, hybrid=False)
    fused = lib.search(q, k=50)  # on by default: the library has text
    assert names(fused)[0] == files["BICYCLE repair shop"].name
    assert sorted(names(fused)) == sorted(names(clip_only))  # images without text still rank
    assert [h.score for h in clip_only] == sorted((h.score for h in clip_only), reverse=True)
    score = {h.path: h.score for h in clip_only}
    assert all(h.score == pytest.approx(score[h.path], abs=1e-5) for h in fused)  # cosine


def test_hybrid_takes_a_text_match_from_beyond_the_clip_candidates(lib, indexed):
    _, files, _ = indexed
    ids = {Path(h.path).name: h.id for h in lib.search(Query.text("x"), k=50)}
    bike, other = ids[files["BICYCLE repair shop"].name], ids[files["fails"].name]
    qv = lib.query_vector(Query.text("bicycle"))
    scores, top = lib._lift_by_text(qv, np.asarray([2.0], np.float32), np.asarray([other]),
                                    ["bicycle"], 2, None)
    assert top.tolist() == [bike, other]  # the text match, though CLIP did not list it
    assert scores[0] == pytest.approx(float(lib.stored_vector(bike) @ qv), abs=1e-5)


def test_hybrid_keeps_to_the_filters_and_skips_image_and_negative_terms(lib, indexed):
    root, files, _ = indexed
    hits = lib.search(Query.text("bicycle"), k=50,
                      filters=Filters(path_prefix=str(root / "photos")))
    assert files["BICYCLE repair shop"].name not in names(hits) and len(hits) == 4
    q = Query(texts=[("zebra", 1.0)], negatives=[("bicycle", 1.0)])
    assert names(lib.search(q, k=50)) == names(lib.search(q, k=50, hybrid=False))


def test_hybrid_is_off_by_default_without_text(lib, tmp_path, engine):
    make_photos(tmp_path / "p", 3)
    Indexer(lib, ocr=engine).run([str(tmp_path / "p")])
    assert lib.store.has_ocr_text() is False
    words = lib._hybrid_words(Query.text("bicycle"), None)
    assert words == [] and lib._hybrid_words(Query.text("bicycle"), True) == ["bicycle"]


# ---- schema 4 ---------------------------------------------------------------------------------
def as_schema_3(directory: Path) -> None:
    """Take a library back to what schema 3 has: no text table, index or triggers."""
    c = sqlite3.connect(directory / store.DB_NAME)
    for name in store.OCR_TRIGGERS:
        c.execute(f"DROP TRIGGER {name}")
    c.execute("DROP TABLE ocr_fts")
    c.execute("DROP TABLE ocr_text")
    c.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    c.commit()
    c.close()


def test_a_schema_3_library_upgrades_to_4_without_losing_a_row(tmp_path, tiny_encoder, engine):
    directory = tmp_path / "lib"
    first = Library.open(directory, encoder=tiny_encoder, create=True)
    texted(tmp_path / "imgs")
    Indexer(first).run([str(tmp_path / "imgs")])
    before = names(first.search(Query.text("x"), k=50))
    as_schema_3(directory)
    assert store.Store(directory).schema_matches(3) and not store.Store(directory).schema_matches()
    lib = Library.open(directory, encoder=tiny_encoder)
    assert lib.info.schema_version == store.SCHEMA_VERSION == 4
    assert lib.store.schema_matches()
    assert names(lib.search(Query.text("x"), k=50)) == before
    lib.set_ocr(True)
    assert Indexer(lib, ocr=engine).run().texts_read == 6
    assert contains_filter(lib, "42.50") == {"t0.png"}


# ---- command line and web ---------------------------------------------------------------------
def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_index_ocr_without_the_extra_is_one_line_and_writes_nothing(tmp_path, tiny_clip_dir,
                                                                         monkeypatch):
    monkeypatch.setattr(ocr, "available", lambda: False)
    make_photos(tmp_path / "p", 2)
    r = cli("index", tmp_path / "p", "--library", tmp_path / "lib", "--model", tiny_clip_dir,
            "--ocr")
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert r.output.strip().startswith("error:") and "searchkit[ocr]" in r.output
    assert not (tmp_path / "lib").exists()


def test_cli_text_contains_no_hybrid_and_status(tmp_path, lib, indexed):
    _, files, _ = indexed
    r = cli("search", "x", "--library", lib.directory, "--text-contains", "42.50", "--json")
    assert r.exit_code == 0, r.output
    assert [Path(h["path"]).name for h in json.loads(r.stdout)] == [files["SALE 42.50"].name]
    r = cli("search", "bicycle", "--library", lib.directory, "--paths", "-k", "1")
    assert r.stdout.strip().endswith(files["BICYCLE repair shop"].name)
    r = cli("similar", files["fails"], "--library", lib.directory, "--text-contains", "cafe",
            "--no-hybrid", "--paths")
    assert r.stdout.strip().endswith(files["Café au lait"].name)
    r = cli("status", "--library", lib.directory)
    assert "OCR on: text found in 5 images, 1 could not be read" in r.stdout
    r = cli("status", "--library", lib.directory, "--json")
    assert json.loads(r.stdout)["ocr_with_text"] == 5


def test_web_text_contains_and_hybrid_parameters(lib, indexed):
    from fastapi.testclient import TestClient

    from searchkit.web import create_app
    _, files, _ = indexed
    with TestClient(create_app(lib)) as client:
        r = client.get("/api/search", params={"q": "x", "k": 50, "text_contains": "cafe"})
        assert [Path(h["path"]).name for h in r.json()["hits"]] == [files["Café au lait"].name]
        lifted = client.get("/api/search", params={"q": "bicycle", "k": 1}).json()["hits"]
        plain = client.get("/api/search", params={"q": "bicycle", "k": 50,
                                                  "hybrid": "false"}).json()["hits"]
    assert Path(lifted[0]["path"]).name == files["BICYCLE repair shop"].name
    assert [h["path"] for h in plain] == [h.path for h in lib.search(Query.text("bicycle"),
                                                                     k=50, hybrid=False)]


# ---- the real engine ---------------------------------------------------------------------------
def rendered(path: Path, text: str) -> Path:
    font = ImageFont.truetype("DejaVuSans.ttf", 32)
    im = Image.new("RGB", (420, 120), (250, 250, 245))
    ImageDraw.Draw(im).text((20, 40), text, font=font, fill=(10, 10, 10))
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path


@pytest.mark.integration
def test_rapidocr_reads_rendered_words_offline(tmp_path, tiny_encoder):
    if not ocr.available():
        pytest.skip("rapidocr is not installed (searchkit[ocr])")
    try:
        ImageFont.truetype("DejaVuSans.ttf", 32)
    except OSError:
        pytest.skip("no DejaVuSans font")
    rendered(tmp_path / "imgs" / "sale.png", "SALE 42.50")
    rendered(tmp_path / "imgs" / "bike.png", "Bicycle repair")
    lib = Library.open(tmp_path / "lib", encoder=tiny_encoder, create=True)
    lib.set_ocr(True)
    report = Indexer(lib, workers=2).run([str(tmp_path / "imgs")])
    assert (report.texts_read, report.texts_failed) == (2, 0)
    assert contains_filter(lib, "42.50") == {"sale.png"}
    assert names(lib.search(Query.text("bicycle"), k=1)) == ["bike.png"]
