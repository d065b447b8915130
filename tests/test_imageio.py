from pathlib import Path

import pytest
from PIL import Image

from searchkit.imageio import ImageDecodeError, open_image, sniff
from tests.helpers import make_hostile


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    return folder, make_hostile(folder)


def test_good_images_decode_to_rgb_with_oriented_size(hostile):
    _, h = hostile
    for path, (w, hgt) in h.good.items():
        im, meta = open_image(Path(path))
        assert im.mode == "RGB", path
        assert (meta.width, meta.height) == (w, hgt), path
        assert im.size == (w, hgt), path


def test_bad_images_raise_with_a_reason(hostile):
    _, h = hostile
    for path in h.bad:
        with pytest.raises(ImageDecodeError) as e:
            open_image(Path(path))
        assert str(e.value), path


def test_pixel_cap_names_the_size(hostile):
    folder, _ = hostile
    with pytest.raises(ImageDecodeError, match="too large.*400000000 pixels"):
        open_image(folder / "huge.png")


def test_transparency_is_flattened_on_white(hostile):
    folder, _ = hostile
    im, _ = open_image(folder / "palette_alpha.png")
    assert im.getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_keeps_brightness(hostile):
    folder, _ = hostile
    im, _ = open_image(folder / "sixteen.png")
    assert abs(im.getpixel((0, 0))[0] - 40000 // 256) <= 1


def test_sniff_by_content():
    assert sniff(b"\x89PNG\r\n\x1a\n....") == "PNG"
    assert sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "WEBP"
    assert sniff(b"hello world") is None


def test_exif_date_and_camera(tmp_path):
    im = Image.new("RGB", (10, 10))
    exif = im.getexif()
    exif[271], exif[272] = "Canon", "EOS 5D"
    exif.get_ifd(0x8769)[36867] = "2021:07:04 10:11:12"
    im.save(tmp_path / "e.jpg", exif=exif.tobytes())
    _, meta = open_image(tmp_path / "e.jpg")
    assert (meta.camera_make, meta.camera_model) == ("Canon", "EOS 5D")
    assert meta.taken_at.year == 2021 and meta.taken_at.hour == 10


@pytest.mark.parametrize("name, size", [("tall.jpg", (1, 65500)), ("wide.jpg", (65500, 1)),
                                        ("tall.png", (1, 65535)), ("wide.png", (65535, 1))])
def test_tall_thin_image_decodes_at_its_own_size(tmp_path, name, size):
    """A 200-byte 1x65535 image passes the pixel cap; decoding (JPEG draft included) must yield
    that image as it is, never a larger one (the preprocessing bounds the rest)."""
    Image.new("L", size, 90).save(tmp_path / name)
    im, meta = open_image((tmp_path / name).read_bytes())
    assert im.size == size and im.mode == "RGB" and (meta.width, meta.height) == size
