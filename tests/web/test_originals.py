"""Originals and thumbnails are served only while the file on disk is still the file that was
indexed: a symlink, hard link, FIFO or rewrite swapped in at the stored path is a 404 that
names the change, and none of its bytes reach the client (issue 15 item 3)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from searchkit.web import WebConfig, create_app
from tests.helpers import make_photos

from .conftest import id_of

SECRET = b"root:x:0:0:TOP-SECRET-CONTENT:/root:/bin/bash\n" * 40


@dataclass
class Served:
    client: TestClient
    library: object
    photos: list[Path]
    secret: Path

    def file(self, path: Path):
        return self.client.get(f"/api/images/{id_of(self.library, path)}/file")

    def thumb(self, path: Path):
        return self.client.get(f"/api/images/{id_of(self.library, path)}/thumb")


@pytest.fixture
def served(tmp_path, tiny_encoder) -> Served:
    from searchkit.indexer import Indexer
    from searchkit import Library
    photos = make_photos(tmp_path / "photos", 4, size=(64, 48))
    lib = Library.open(tmp_path / "lib", encoder=tiny_encoder, create=True)
    Indexer(lib).run([str(tmp_path / "photos")])
    secret = tmp_path / "secret.txt"
    secret.write_bytes(SECRET)
    app = create_app(lib, WebConfig(thumb_dir=str(tmp_path / "thumbs")))
    return Served(TestClient(app, raise_server_exceptions=False), lib, photos, secret)


def refused(r, secret: bytes = SECRET) -> bool:
    return (r.status_code == 404 and "changed since it was indexed" in r.json()["detail"]
            and secret[:20] not in r.content)


def swap_for_symlink(path: Path, target: Path) -> None:
    path.unlink()
    path.symlink_to(target)


def test_symlink_swapped_in_for_an_image_is_not_served(served):
    photo = served.photos[0]
    assert served.file(photo).status_code == 200
    swap_for_symlink(photo, served.secret)
    assert refused(served.file(photo))
    assert refused(served.thumb(photo))


def test_cached_thumbnail_is_not_served_once_the_file_is_swapped(served):
    photo = served.photos[1]
    assert served.thumb(photo).status_code == 200
    swap_for_symlink(photo, served.secret)
    assert refused(served.thumb(photo))


def test_symlink_to_another_image_is_not_served_as_this_one(served):
    photo, other = served.photos[0], served.photos[2]
    swap_for_symlink(photo, other)
    r = served.file(photo)
    assert refused(r, other.read_bytes())


def test_hard_link_swapped_in_is_not_served(served):
    photo = served.photos[0]
    photo.unlink()
    os.link(served.secret, photo)
    assert refused(served.file(photo))


def test_same_size_and_mtime_with_other_content_is_not_served(served):
    """Only the content hash tells this one: same length, same mtime, valid JPEG magic."""
    photo = served.photos[3]
    st = photo.stat()
    data = bytearray(photo.read_bytes())
    data[-10] ^= 0xFF
    photo.write_bytes(bytes(data))
    os.utime(photo, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert refused(served.file(photo), bytes(data[-40:]))
    assert refused(served.thumb(photo))


def test_changed_file_is_not_served(served):
    photo = served.photos[2]
    photo.write_bytes(photo.read_bytes() + b"appended")
    assert refused(served.file(photo))
    assert refused(served.thumb(photo))


def test_fifo_swapped_in_is_refused_without_blocking(served):
    photo = served.photos[1]
    photo.unlink()
    os.mkfifo(photo)  # a blocking open would hang the request thread until a writer came
    assert refused(served.file(photo))
    assert refused(served.thumb(photo))


def test_deleted_image_says_it_is_gone(served):
    photo = served.photos[0]
    photo.unlink()
    r = served.file(photo)
    assert r.status_code == 404 and "no longer on disk" in r.json()["detail"]


def test_unchanged_image_is_served_whole_with_its_type(served):
    photo = served.photos[0]
    r = served.file(photo)
    assert r.status_code == 200 and r.content == photo.read_bytes()
    assert r.headers["content-type"] == "image/jpeg"
    assert r.headers["content-length"] == str(photo.stat().st_size)
    assert served.thumb(photo).content[:3] == b"\xff\xd8\xff"


def test_image_indexed_through_a_symlink_is_served(tmp_path, tiny_encoder):
    """The indexer follows symlinks, so the server does too: the check is on what opens."""
    from searchkit.indexer import Indexer
    from searchkit import Library
    real = make_photos(tmp_path / "elsewhere", 1)[0]
    (tmp_path / "photos").mkdir()
    link = tmp_path / "photos" / "linked.jpg"
    link.symlink_to(real)
    lib = Library.open(tmp_path / "lib", encoder=tiny_encoder, create=True)
    Indexer(lib).run([str(tmp_path / "photos")])
    c = TestClient(create_app(lib, WebConfig(thumb_dir=str(tmp_path / "thumbs"))))
    i = id_of(lib, link)
    r = c.get(f"/api/images/{i}/file")
    assert r.status_code == 200 and r.content == real.read_bytes()
    assert c.get(f"/api/images/{i}/thumb").status_code == 200
