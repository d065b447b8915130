"""Synthetic image folders for tests: good images and every kind of bad input."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

COLORS = [(220, 30, 30), (30, 200, 40), (30, 40, 220), (240, 220, 20), (20, 20, 20),
          (250, 250, 250), (200, 30, 200), (30, 200, 200)]


def solid(path: Path, color=(200, 0, 0), size=(48, 40), fmt=None, **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt, **save)
    return path


def make_photos(folder: Path, n: int, size=(40, 32), offset: int = 0) -> list[Path]:
    """n distinct small JPEGs (distinct content: a marked pixel per image, shifted by offset)."""
    out = []
    for i in range(offset, offset + n):
        im = Image.new("RGB", size, COLORS[i % len(COLORS)])
        im.putpixel((i % size[0], (i // size[0]) % size[1]), (i % 256, (i * 7) % 256, 99))
        im.putpixel((0, 0), (offset % 256, offset // 256 % 256, 7))
        p = folder / f"sub{i % 3}" / f"img_{i:04d}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        im.save(p, quality=95)
        out.append(p)
    return out


@dataclass
class Hostile:
    good: dict[str, tuple[int, int]] = field(default_factory=dict)   # path -> (width, height)
    bad: set[str] = field(default_factory=set)


def make_hostile(folder: Path) -> Hostile:
    """Every kind of input the indexer must survive (see the core engine issue)."""
    h = Hostile()
    folder.mkdir(parents=True, exist_ok=True)

    def good(p: Path, wh: tuple[int, int]) -> None:
        h.good[str(p)] = wh

    good(solid(folder / "plain.jpg", (10, 200, 10), (50, 40)), (50, 40))
    good(solid(folder / "with space é ü 写真.png", (10, 10, 200), (30, 30)), (30, 30))
    good(solid(folder / "new\nline.png", (100, 10, 20), (20, 24)), (20, 24))
    good(solid(folder / "no_extension_but_png", (5, 5, 5), (16, 16), fmt="PNG"), (16, 16))
    good(solid(folder / "a.webp", (1, 100, 200), (33, 22), fmt="WEBP"), (33, 22))
    good(solid(folder / "a.bmp", (1, 100, 200), (31, 21)), (31, 21))
    good(solid(folder / "a.tiff", (1, 200, 2), (30, 20)), (30, 20))
    cmyk = folder / "cmyk.jpg"
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(cmyk)
    good(cmyk, (40, 30))
    p16 = folder / "sixteen.png"
    Image.new("I;16", (30, 20), 40000).save(p16)
    good(p16, (30, 20))
    pal = Image.new("P", (24, 24), 0)
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    pal.info["transparency"] = 0
    pal.save(folder / "palette_alpha.png", transparency=0)
    good(folder / "palette_alpha.png", (24, 24))
    frames = [Image.new("RGB", (20, 20), c) for c in COLORS[:3]]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:], duration=50,
                   loop=0)
    good(folder / "anim.gif", (20, 20))
    rot = Image.new("RGB", (60, 40), (200, 100, 0))
    exif = rot.getexif()
    exif[0x0112] = 6  # rotate 90: displayed 40 x 60
    rot.save(folder / "rotated.jpg", exif=exif.tobytes())
    good(folder / "rotated.jpg", (40, 60))

    buf = io.BytesIO()
    Image.new("RGB", (200, 200), (9, 9, 9)).save(buf, "JPEG")
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    h.bad.add(str(folder / "truncated.jpg"))
    (folder / "empty.jpg").write_bytes(b"")
    h.bad.add(str(folder / "empty.jpg"))
    (folder / "text.jpg").write_text("this is not an image\n")
    h.bad.add(str(folder / "text.jpg"))
    Image.new("1", (20000, 20000)).save(folder / "huge.png")
    h.bad.add(str(folder / "huge.png"))
    (folder / "notes.txt").write_text("ignored: not an image by name or content")
    loop = folder / "loopdir"
    loop.mkdir()
    os.symlink(folder, loop / "back_to_top")
    os.symlink(folder / "missing_target.jpg", folder / "dangling.jpg")
    if os.geteuid() != 0:  # root reads anything
        locked = solid(folder / "locked.jpg", (1, 2, 3))
        locked.chmod(0)
        h.bad.add(str(locked))
    return h


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    """``n`` random unit vectors of ``dim`` float32 (reproducible from ``seed``)."""
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


SCORE_TIE = 1e-5   # scores this close are equal: engines sum inner products their own way


def by_score_then_path(hits: list[tuple[float, str]]) -> list[tuple[float, str]]:
    """(score, path) pairs best first, as two engines can both give them: scores within
    ``SCORE_TIE`` of each other (copies) in path order, since engines number rows differently."""
    rest = sorted(hits, key=lambda h: -h[0])
    ranked: list[tuple[float, str]] = []
    while rest:
        tied = [h for h in rest if rest[0][0] - h[0] <= SCORE_TIE]
        ranked += sorted(tied, key=lambda h: h[1])
        rest = rest[len(tied):]
    return ranked


def assert_same_ranking(got: list[tuple[float, str]], want: list[tuple[float, str]]) -> None:
    """The same paths in the same order, with the same scores (within ``SCORE_TIE``)."""
    assert [p for _, p in got] == [p for _, p in want]
    assert [s for s, _ in got] == pytest.approx([s for s, _ in want], abs=SCORE_TIE)
