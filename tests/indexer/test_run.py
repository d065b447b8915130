"""One index run (issue 11, item 3): a content is decoded and encoded once per run, however many
files hold it; where a skip was found has its own column."""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

import searchkit.indexer.prepare
from searchkit.indexer import Indexer
from searchkit import Library
from searchkit.store import SKIP_DECODE, SKIP_SCAN, STATUS_OK, STATUS_SKIPPED, File
from tests.helpers import make_photos, solid


@pytest.fixture
def lib(tmp_path, tiny_encoder):
    return Library.open(tmp_path / "lib", encoder=tiny_encoder, create=True)


@dataclass
class Calls:
    decoded: int = 0   # images preprocessed for the encoder
    encoded: int = 0   # images through the encoder


@pytest.fixture
def calls(lib, monkeypatch) -> Calls:
    counts = Calls()
    encoder = lib.encoder
    real_preprocess, real_encode = encoder.preprocess, encoder.encode_pixels

    def preprocess(image):
        counts.decoded += 1
        return real_preprocess(image)

    def encode_pixels(pixels):
        counts.encoded += len(pixels)
        return real_encode(pixels)
    monkeypatch.setattr(encoder, "preprocess", preprocess)
    monkeypatch.setattr(encoder, "encode_pixels", encode_pixels)
    return counts


def rows(lib) -> dict[str, File]:
    with lib.store.session() as s:
        return {f.path: f for f in s.scalars(select(File))}


@pytest.mark.parametrize("workers,encode_batch", [(1, 32), (4, 1), (4, 32)])
@pytest.mark.parametrize("twin_name", ["aaa_first.jpg", "zzz_last.jpg"])
def test_two_identical_new_files_are_encoded_once(tmp_path, lib, calls, workers, encode_batch,
                                                  twin_name):
    photos = make_photos(tmp_path / "p", 3)
    twin = photos[0].parent / twin_name  # decided before or after the file it copies
    shutil.copy(photos[0], twin)
    r = Indexer(lib, workers=workers, encode_batch=encode_batch).run([str(tmp_path / "p")])
    assert (calls.decoded, calls.encoded, r.encoded) == (3, 3, 3)
    assert (r.added, r.duplicates, r.skipped) == (4, 1, [])
    stored = rows(lib)
    assert stored[str(twin)].vector == stored[str(photos[0])].vector
    assert stored[str(twin)].content_hash == stored[str(photos[0])].content_hash


def test_many_copies_across_batches_and_commits_are_encoded_once(tmp_path, lib, calls):
    original = solid(tmp_path / "p" / "original.png", (10, 120, 30))
    copies = [tmp_path / "p" / f"sub{i % 3}" / f"copy{i}.png" for i in range(7)]
    for c in copies:
        c.parent.mkdir(exist_ok=True)
        shutil.copy(original, c)
    make_photos(tmp_path / "p", 5)
    r = Indexer(lib, workers=4, encode_batch=2, commit_every=3).run([str(tmp_path / "p")])
    assert (calls.decoded, calls.encoded) == (6, 6)
    assert (r.added, r.duplicates) == (13, 7)
    stored = rows(lib)
    assert {stored[str(c)].vector for c in copies} == {stored[str(original)].vector}
    assert all(f.status == STATUS_OK for f in stored.values())

    again = Indexer(lib).run()  # a later run copies from the store, decoding nothing
    shutil.copy(original, tmp_path / "p" / "late_copy.png")
    r = Indexer(lib, workers=2).run()
    assert again.encoded == 0 and (r.added, r.duplicates, r.encoded) == (1, 1, 0)
    assert calls.decoded == 6


def test_twins_of_an_undecodable_file_are_skipped_without_decoding_them(tmp_path, lib,
                                                                        monkeypatch):
    buf = io.BytesIO()
    Image.new("RGB", (200, 200), (9, 9, 9)).save(buf, "JPEG")
    broken = buf.getvalue()[: len(buf.getvalue()) // 3]
    names = ["a.jpg", "b.jpg", "c.jpg"]
    for name in names:
        (tmp_path / "p").mkdir(exist_ok=True)
        (tmp_path / "p" / name).write_bytes(broken)
    opened: list[int] = []
    real_open = searchkit.indexer.prepare.open_image

    def open_image(data, **kwargs):
        opened.append(len(data))
        return real_open(data, **kwargs)
    monkeypatch.setattr(searchkit.indexer.prepare, "open_image", open_image)
    r = Indexer(lib, workers=3).run([str(tmp_path / "p")])
    assert len(opened) == 1
    assert [s.path for s in r.skipped] == [str(tmp_path / "p" / n) for n in names]
    assert len({s.reason for s in r.skipped}) == 1 and r.skipped[0].reason
    assert {f.skip_source for f in rows(lib).values()} == {SKIP_DECODE}


def test_duplicate_of_content_replaced_earlier_in_the_run_is_encoded_from_its_own_file(
        tmp_path, lib, calls):
    """b.png holds what a.png held; a.png changed. b's worker knows the content and does not
    decode it, but a's new row replaces the only row holding it before b is decided."""
    folder = tmp_path / "p"
    a = solid(folder / "a.png", (200, 10, 10))
    Indexer(lib).run([str(folder)])
    old_vector = rows(lib)[str(a)].vector
    shutil.copy(a, folder / "b.png")
    solid(a, (10, 10, 200), size=(50, 40))
    r = Indexer(lib, workers=1, encode_batch=1, commit_every=1).run()
    assert (r.updated, r.added, r.duplicates, r.encoded) == (1, 1, 0, 2)
    stored = rows(lib)
    assert np.allclose(np.frombuffer(stored[str(folder / "b.png")].vector, np.float32),
                       np.frombuffer(old_vector, np.float32), atol=1e-6)
    assert stored[str(a)].vector != old_vector


def test_unchanged_scan_problem_is_not_written_again(tmp_path, lib):
    folder = tmp_path / "p"
    make_photos(folder, 2)
    empty = folder / "empty.jpg"
    empty.write_bytes(b"")
    Indexer(lib).run([str(folder)])
    first = rows(lib)[str(empty)]
    assert (first.status, first.reason, first.skip_source, first.content_hash) == \
        (STATUS_SKIPPED, "empty file", SKIP_SCAN, None)
    version = lib.store.vectors_version()

    r = Indexer(lib).run()
    again = rows(lib)[str(empty)]
    assert (again.id, again.indexed_at) == (first.id, first.indexed_at)
    assert lib.store.vectors_version() == version  # nothing written at all
    assert [s.path for s in r.skipped] == [str(empty)]

    empty.write_bytes(b"\xff\xd8\xff not a jpeg after all")  # now a decode problem
    Indexer(lib).run()
    now = rows(lib)[str(empty)]
    assert (now.status, now.skip_source) == (STATUS_SKIPPED, SKIP_DECODE)
    assert now.reason != "empty file"
    empty.write_bytes(b"")  # and a scan problem again
    Indexer(lib).run()
    back = rows(lib)[str(empty)]
    assert (back.reason, back.skip_source) == ("empty file", SKIP_SCAN)
