"""Hostile input through the indexer (issue 15, items 1 and 2): no file can exhaust memory, stop
a folder or cost its batch."""

from __future__ import annotations

import dataclasses
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select
from typer.testing import CliRunner

from searchkit.indexer import Indexer, writer
from searchkit.indexer.scan import FileStat
from searchkit import Library
from searchkit.encoders.transform import MAX_ASPECT_RATIO
from searchkit.errors import SearchkitError
from searchkit.fsinfo import NOT_UTF8_REASON, storable_mtime_ns, text_path
from searchkit.imageio import ImageMeta
from searchkit.store import SKIP_SCAN, SKIP_STORE, STATUS_OK, Changes, File
from tests.helpers import make_photos

FAR_FUTURE_NS = int(datetime(2400, 1, 1, tzinfo=timezone.utc).timestamp()) * 10 ** 9


@pytest.fixture
def lib(tmp_path, tiny_encoder):
    return Library.open(tmp_path / "lib", encoder=tiny_encoder, create=True)


def rows(lib) -> dict[str, File]:
    with lib.store.session() as s:
        return {f.path: f for f in s.scalars(select(File))}


def ok_paths(lib) -> set[str]:
    return {p for p, f in rows(lib).items() if f.status == STATUS_OK}


def bad_name(folder: Path, stem: bytes) -> str:
    """An image whose file name is not valid UTF-8 (as Python's os functions name it)."""
    path = os.fsencode(folder) + b"/" + stem + b"\xff.png"
    Image.new("RGB", (30, 20), (250, 120, 0)).save(path)
    return os.fsdecode(path)


def far_future(path: Path) -> None:
    os.utime(path, ns=(FAR_FUTURE_NS, FAR_FUTURE_NS))
    if os.stat(path).st_mtime_ns != FAR_FUTURE_NS:
        pytest.skip("this file system cannot date a file in 2400")


def test_tall_thin_image_does_not_blow_up_memory(tmp_path, lib, monkeypatch):
    folder = tmp_path / "p"
    good = make_photos(folder, 3)
    Image.new("L", (1, 65535), 200).save(folder / "tall.png")
    Image.new("L", (65535, 1), 60).save(folder / "wide.png")
    size = lib.encoder.image_size
    limit = MAX_ASPECT_RATIO * size * size
    requested: list[tuple[int, int]] = []
    real = Image.Image.resize

    def resize(im, out, *args, **kwargs):  # refuse a regression before it allocates
        requested.append(tuple(out))
        assert out[0] * out[1] <= limit, f"resize to {out}"
        return real(im, out, *args, **kwargs)
    monkeypatch.setattr(Image.Image, "resize", resize)
    r = Indexer(lib, workers=2).run([str(folder)])
    assert r.skipped == [] and requested
    indexed = rows(lib)
    assert ok_paths(lib) == {str(p) for p in good} | {str(folder / "tall.png"),
                                                       str(folder / "wide.png")}
    assert (indexed[str(folder / "tall.png")].width, indexed[str(folder / "tall.png")].height) \
        == (1, 65535)


def test_file_name_not_utf8_does_not_stop_the_folder(tmp_path, lib):
    folder = tmp_path / "p"
    good = make_photos(folder, 6)
    bad = [bad_name(folder, b"bad"), bad_name(folder / "sub1", b"also")]
    bad_dir = os.fsencode(folder) + b"/dir\xfe"
    os.mkdir(bad_dir)
    Image.new("RGB", (20, 20)).save(bad_dir + b"/inside.png")
    bad.append(os.fsdecode(bad_dir + b"/inside.png"))

    r = Indexer(lib, commit_every=2, encode_batch=2).run([str(folder)])
    assert ok_paths(lib) == {str(p) for p in good}  # every good image, whatever the batches
    shown = {text_path(p) for p in bad}
    assert {s.path for s in r.skipped} == shown
    assert all(s.reason == NOT_UTF8_REASON for s in r.skipped)
    assert str(folder / "bad\\xff.png") in shown  # printable: the bytes as ls -b shows them
    assert {rows(lib)[p].skip_source for p in shown} == {SKIP_SCAN}

    again = Indexer(lib).run()  # the next run neither re-processes nor stops
    assert (again.added, again.encoded, again.removed, again.unchanged) == (0, 0, 0, len(good))
    assert {s.path for s in again.skipped} == shown
    assert ok_paths(lib) == {str(p) for p in good}


def test_folder_named_not_utf8_is_a_clear_error(tmp_path, lib):
    folder = os.fsencode(tmp_path) + b"/photos\xff"
    make_photos(Path(os.fsdecode(folder)), 2)
    with pytest.raises(SearchkitError, match="not valid UTF-8") as e:
        Indexer(lib).run([os.fsdecode(folder)])
    assert "photos\\xff" in str(e.value)
    assert rows(lib) == {} and lib.store.roots() == []


def test_far_future_mtime_is_indexed_and_then_unchanged(tmp_path, lib):
    folder = tmp_path / "p"
    good = make_photos(folder, 3)
    far_future(good[0])
    r = Indexer(lib).run([str(folder)])
    assert (r.added, r.skipped) == (3, [])
    row = rows(lib)[str(good[0])]
    assert row.status == STATUS_OK and row.mtime_ns == storable_mtime_ns(FAR_FUTURE_NS)
    assert lib.status().indexed == 3  # the library reads the row back

    again = Indexer(lib).run()
    assert (again.unchanged, again.encoded, again.updated) == (3, 0, 0)


def test_batch_with_a_poisoned_row_keeps_the_others(tmp_path, lib, monkeypatch):
    """A row SQLite refuses costs only itself: it is recorded as skipped with the error, the
    rest of its batch is stored, and the next run leaves it alone."""
    folder = tmp_path / "p"
    photos = make_photos(folder, 8)
    poisoned = str(photos[3])
    real_ok_row = writer.ok_row

    def ok_row(stat, *args, **kwargs):
        row = real_ok_row(stat, *args, **kwargs)
        if stat.path == poisoned:
            row = dataclasses.replace(row, width=2 ** 70)  # no SQLite integer holds it
        return row
    monkeypatch.setattr(writer, "ok_row", ok_row)
    r = Indexer(lib).run([str(folder)])  # one batch holds all eight
    assert ok_paths(lib) == {str(p) for p in photos} - {poisoned}
    assert [s.path for s in r.skipped] == [poisoned]
    assert r.skipped[0].reason.startswith("cannot store: OverflowError")
    assert rows(lib)[poisoned].skip_source == SKIP_STORE

    again = Indexer(lib).run()
    assert (again.unchanged, again.encoded) == (8, 0)


def test_row_that_cannot_even_be_recorded_does_not_cost_the_batch(lib):
    """Last resort: a row whose path itself cannot be stored is left out (the next run meets
    the file again); every other change of its batch is stored."""
    meta = ImageMeta(4, 4, "PNG", None, None, None)
    vec = np.ones(lib.encoder.dim, np.float32) / np.sqrt(lib.encoder.dim)
    good = [writer.ok_row(FileStat(f"/x/{i}.png", 1, 1), f"h{i}", meta, vec) for i in range(3)]
    bad = writer.ok_row(FileStat("/x/bad\udcff.png", 1, 1), "hbad", meta, vec)
    writer.flush(lib.store, Changes(upserts=good[:2] + [bad] + good[2:]))
    assert ok_paths(lib) == {r.path for r in good}


@pytest.mark.integration
def test_index_command_survives_hostile_files(tmp_path, tiny_clip_dir):
    from searchkit.cli.main import app
    folder = tmp_path / "p"
    make_photos(folder, 3)
    Image.new("L", (1, 65535)).save(folder / "tall.png")
    bad_name(folder, b"bad")
    Image.new("RGB", (20, 30), (5, 5, 250)).save(folder / "future.png")
    far_future(folder / "future.png")
    args = ["index", str(folder), "--library", str(tmp_path / "lib"), "--model", str(tiny_clip_dir)]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "added 5" in first.output and "skipped 1" in first.output
    assert f"{folder}/bad\\xff.png" in first.output and NOT_UTF8_REASON in first.output
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0 and "unchanged 5" in second.output, second.output

