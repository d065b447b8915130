"""The searchkit-lite recipe's extra-pairs builder on a tiny hand-made iconify set (no network)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # recipes/ is not installed: it is imported from the checkout
    sys.path.insert(0, str(REPO))


@pytest.fixture(scope="module")
def mep():
    from recipes.searchkit_lite import extra_pairs
    return extra_pairs


ICON_SET = {
    "prefix": "tiny",
    "width": 32,
    "height": 32,
    "icons": {
        # coloured, matched to emojibase by name -> CLDR label + tags
        "grinning-face": {"body": '<circle cx="16" cy="16" r="14" fill="#ffcc00"/>'},
        # monochrome currentColor, unmatched -> name words; non-square override
        "magic-wand": {"body": '<rect x="0" y="8" width="48" height="16" fill="currentColor"/>',
                       "width": 48},
        # skipped: skin-tone variant, bare code, hidden
        "grinning-face-dark-skin-tone": {"body": '<circle cx="16" cy="16" r="14" fill="#333"/>'},
        "1f600": {"body": '<circle cx="16" cy="16" r="14" fill="#f00"/>'},
        "old-icon": {"body": '<circle cx="16" cy="16" r="14"/>', "hidden": True},
    },
}

EMOJIBASE = [
    {"label": "grinning face", "hexcode": "1F600", "tags": ["face", "grin", "smile"]},
    {"label": "flag: Chile", "hexcode": "1F1E8-1F1F1", "tags": ["CL", "flag"]},
]


def test_convert_emoji_set(mep, tmp_path):
    pytest.importorskip("resvg_py")
    from PIL import Image

    lexicon = mep.EmojiLexicon(EMOJIBASE, {"1F600": ["grinning"]})
    rows = mep.convert_iconify_set(ICON_SET, "tinymoji", "emoji", tmp_path, lexicon)
    assert [r["text"] for r in rows] == ["grinning face", "magic wand"]
    grin, wand = rows
    assert grin == {
        "file_name": f"tinymoji/{mep.file_hash('tinymoji', 'grinning-face')}.jpg",
        "text": "grinning face", "source": "tinymoji", "keywords": ["face", "grin", "smile"],
        "description": "", "category": "tinymoji",
    }
    assert wand["keywords"] == ["magic", "wand"]
    assert len(grin["file_name"].split("/")[1]) == 16 + 4

    with Image.open(tmp_path / grin["file_name"]) as im:
        assert im.format == "JPEG" and im.mode == "RGB"
        assert max(im.size) <= 224
        assert im.getpixel((2, 2)) >= (245, 245, 245)  # transparent corner -> white
        r, g, b = im.getpixel((112, 112))
        assert r > 200 and g > 150 and b < 80  # yellow fill
    with Image.open(tmp_path / wand["file_name"]) as im:
        assert im.size[0] == 224 and abs(im.size[1] - 224 * 32 / 48) <= 1
        assert max(im.getpixel((112, im.size[1] // 2))) < 60  # currentColor -> black
        assert min(im.getpixel((112, 2))) > 240  # background white

    # deterministic: same names, same bytes
    again = mep.convert_iconify_set(ICON_SET, "tinymoji", "emoji", tmp_path / "again", lexicon)
    assert again == rows
    assert (tmp_path / grin["file_name"]).read_bytes() == \
        (tmp_path / "again" / grin["file_name"]).read_bytes()

    mep.write_metadata(rows, tmp_path)
    lines = (tmp_path / "metadata.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == rows


def test_game_icons_rows(mep, tmp_path):
    pytest.importorskip("resvg_py")
    icons = {"width": 512, "height": 512, "icons": {
        "battle-axe": {"body": '<path fill="currentColor" d="M0 0h512v512H0z"/>'},
        "abstract-003": {"body": '<path fill="currentColor" d="M0 0h256v256H0z"/>'},
        "d10": {"body": '<path fill="currentColor" d="M0 0h256v256H0z"/>'},
    }}
    rows = mep.convert_iconify_set(icons, "game-icons", "game", tmp_path)
    assert [(r["text"], r["keywords"], r["category"]) for r in rows] == [
        ("abstract", ["abstract"], "game-icons"),
        ("battle axe", ["battle", "axe"], "game-icons"),
    ]


@pytest.mark.parametrize("name", ["twemoji", "@iconify-json/twemoji", "fluent-emoji-3d", "fluent3d",
                                  "noto", "noto-v1", "@iconify-json/noto-v1", "scikit-image",
                                  "tuxpaint", "Tux Paint", "cifar10", "@fluentui/svg-icons",
                                  "emoji-datasource-twitter", "noto-color-emoji"])
def test_denylist_refuses(mep, tmp_path, name):
    with pytest.raises(mep.DeniedSourceError):
        mep.check_allowed(name)
    with pytest.raises(mep.DeniedSourceError):
        mep.convert_iconify_set(ICON_SET, name, "emoji", tmp_path, mep.EmojiLexicon(EMOJIBASE))
    assert not (tmp_path / name).exists()
    with pytest.raises(mep.DeniedSourceError):
        mep.fetch_package(name, "1.0.0", tmp_path)  # refused before any network use


def test_denylist_allows_sources(mep):
    for name, (package, _, _) in mep.SOURCES.items():
        mep.check_allowed(name, package)
    assert not set(mep.SOURCES) & {"twemoji", "noto", "fluent3d"}
    mep.check_allowed("emojione-monotone", "@iconify-json/streamline-freehand-color")


def test_name_helpers(mep):
    assert mep.is_code_name("1f600") and mep.is_code_name("2") and mep.is_code_name("u+1F600")
    assert not mep.is_code_name("bed") and not mep.is_code_name("3d-glasses")
    assert mep.is_skin_tone_variant("waving-hand-medium-dark-skin-tone")
    assert not mep.is_skin_tone_variant("black-touch-tone-telephone")
    assert mep.strip_variant_suffix("baby-2") == "baby"
    assert mep.strip_variant_suffix("hal-9000") == "hal-9000"
    lex = mep.EmojiLexicon(EMOJIBASE, {"1F600": "grinning"}, alt_names={"alarmclock": "alarm clock"},
                           extra_text=["alarm clock", "grinning cat"])
    assert lex.lookup("flag-for-chile")["label"] == "flag: Chile"
    assert lex.lookup("grinning")["label"] == "grinning face"  # via shortcode
    assert lex.display_name("alarmclock") == "alarm clock"
    assert lex.display_name("grinningcat") == "grinning cat"
    svg = mep.iconify_svg({"body": '<path fill="currentColor" d="M0 0h1v1H0z"/>'})
    assert 'viewBox="0 0 16 16"' in svg and "currentColor" not in svg
