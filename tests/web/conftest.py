"""Fixtures for the web tests: one small indexed library per session, apps over it."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers import make_photos, solid


@dataclass
class WebLib:
    library: object
    root: Path
    photos: list[Path]
    rotated: Path
    png: Path
    old: Path


def jpeg_bytes(color=(200, 30, 30), size=(48, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


def make_web_folder(root: Path) -> tuple[list[Path], Path, Path, Path]:
    photos = make_photos(root / "trip", 10)
    rot = Image.new("RGB", (60, 40), (200, 100, 0))
    exif = rot.getexif()
    exif[0x0112] = 6  # rotate 90 on display: 40 x 60
    rotated = root / "cam" / "rotated.jpg"
    rotated.parent.mkdir(parents=True)
    rot.save(rotated, exif=exif.tobytes())
    png = solid(root / "shots" / "blue.png", (0, 0, 255), (64, 32))
    old = solid(root / "shots" / "old.png", (0, 255, 0), (20, 10))
    os.utime(old, (946684800, 946684800))  # 2000-01-01
    return photos, rotated, png, old


@pytest.fixture(scope="session")
def web_lib(tmp_path_factory, tiny_encoder) -> WebLib:
    from searchkit.indexer import Indexer
    from searchkit import Library
    base = tmp_path_factory.mktemp("web")
    photos, rotated, png, old = make_web_folder(base / "photos")
    lib = Library.open(base / "lib", encoder=tiny_encoder, create=True)
    Indexer(lib).run([str(base / "photos")])
    return WebLib(lib, base / "photos", photos, rotated, png, old)


@pytest.fixture(scope="session")
def client(web_lib):
    from fastapi.testclient import TestClient

    from searchkit.web import create_app
    with TestClient(create_app(web_lib.library), raise_server_exceptions=False) as c:
        yield c


def id_of(lib, path: Path) -> int:
    from sqlalchemy import select

    from searchkit.store import File
    with lib.store.session() as s:
        return s.scalars(select(File.id).where(File.path == str(path))).one()
