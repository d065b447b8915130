"""Build extra permissively licensed image-text pairs from npm icon packages (the searchkit-lite
recipe builds them on first use; this module also runs alone).

Output is an imagefolder dataset in the same layout as ``shared/datasets/align``::

    <output>/train/metadata.jsonl   one JSON row per image
    <output>/train/<source>/<hash>.jpg
    <output>/LICENSES.md

Each row is ``{"file_name", "text", "source", "keywords", "description",
"category"}``.  Images are iconify SVG bodies rendered with resvg at 224 px,
flattened on white and saved as JPEG quality 88.

Captions for emoji sets are the CLDR label from ``emojibase-data`` (MIT) when
the icon can be matched (by code point or by name), else the icon name with
hyphens as spaces; keywords are the emojibase tags, else the words of the name.
Skin-tone variants and bare-code names are skipped.  For game-icons the text
is the name, keywords are its words.

Sources held out for evaluation (twemoji, Fluent, Noto, scikit-image data,
Tux Paint, CIFAR) are refused by a denylist on source and package names.

Usage (from the repository root)::

    python -m recipes.searchkit_lite.extra_pairs --output DIR [--cache DIR] [--sources a,b]

Network use: ``npm pack`` of the pinned packages into the cache dir, once.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import re
import shutil
import subprocess
import sys
import tarfile
import time
import unicodedata
from collections import Counter
from pathlib import Path
from typing import NamedTuple, Sequence

IMAGE_SIZE = 224
JPEG_QUALITY = 88

# name -> (npm package, pinned version, kind)
SOURCES: dict[str, tuple[str, str, str]] = {
    "openmoji": ("@iconify-json/openmoji", "1.2.29", "emoji"),
    "emojione-v1": ("@iconify-json/emojione-v1", "1.2.3", "emoji"),
    "emojione": ("@iconify-json/emojione", "1.2.3", "emoji"),
    "fxemoji": ("@iconify-json/fxemoji", "1.2.2", "emoji"),
    "streamline-emojis": ("@iconify-json/streamline-emojis", "1.2.4", "emoji"),
    "game-icons": ("@iconify-json/game-icons", "1.2.4", "game"),
    # colour icon sets and a monochrome emoji style (kind "name": text = the icon's name)
    "flat-color-icons": ("@iconify-json/flat-color-icons", "1.2.3", "name"),
    "streamline-ultimate-color": ("@iconify-json/streamline-ultimate-color", "1.2.2", "name"),
    "streamline-freehand-color": ("@iconify-json/streamline-freehand-color", "1.2.2", "name"),
    "icon-park": ("@iconify-json/icon-park", "1.2.4", "name"),
    "emojione-monotone": ("@iconify-json/emojione-monotone", "1.2.1", "emoji"),
}
# The sets built by default (the bundled model's training data) and the sets whose names make
# the lexicon that reads run-together names; fixed, so that adding a set changes no caption.
DEFAULT_SOURCES = ("openmoji", "emojione-v1", "emojione", "fxemoji", "streamline-emojis",
                   "game-icons")
LEXICON_SOURCES = DEFAULT_SOURCES
EMOJIBASE = ("emojibase-data", "17.0.0")

# Held out for evaluation: never build training pairs from these.
DENYLIST = (
    "twemoji", "twitter", "fluent", "noto", "scikit-image", "skimage",
    "tuxpaint", "tux-paint", "tux_paint", "tux paint", "cifar",
)

# short words that may appear when splitting run-together names
SHORT_WORDS = frozenset(
    "a x of on in up no ok at to by is it oh id vs tv cd dj ox my me do go be or an as we us so "
    "cl ng ab".split())
LOG10 = math.log(10)

SHORTCODE_SETS = ("cldr", "emojibase", "github", "iamcal", "joypixels", "emojibase-legacy")


class DeniedSourceError(ValueError):
    """Raised for a source that is held out for evaluation."""


def check_allowed(*names: str) -> None:
    """Raise DeniedSourceError if any of the names matches the denylist: at the start of a word
    ("@iconify-json/noto-v1", "Tux Paint", "fluentui") or with the separators dropped
    ("tuxpaint"), but not inside another word ("emojione-monotone" is not Noto)."""
    for name in names:
        low = (name or "").lower()
        for bad in DENYLIST:
            word = "[^a-z0-9]*".join(map(re.escape, re.split(r"[^a-z0-9]+", bad)))
            if re.search(rf"(?<![a-z]){word}", low):
                raise DeniedSourceError(f"source {name!r} is held out for evaluation ({bad})")


def _tgz_name(package: str, version: str) -> str:
    return f"{package.lstrip('@').replace('/', '-')}-{version}.tgz"


def fetch_package(package: str, version: str, cache_dir: Path) -> Path:
    """Return the cached tarball of package@version, `npm pack`-ing it if missing."""
    check_allowed(package)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / _tgz_name(package, version)
    if not path.exists():
        subprocess.run(["npm", "pack", f"{package}@{version}", "--pack-destination", str(cache_dir)],
                       check=True, stdout=subprocess.DEVNULL)
    if not path.exists():
        raise FileNotFoundError(path)
    return path


def read_tar_json(tgz: Path, member: str, default=None):
    with tarfile.open(tgz) as tf:
        try:
            f = tf.extractfile(f"package/{member}")
        except KeyError:
            if default is not None:
                return default
            raise
        return json.load(f)


# ---------------------------------------------------------------- text utils

def norm(s: str) -> str:
    """Lowercase ASCII letters and digits only (accents stripped, & -> and)."""
    s = unicodedata.normalize("NFKD", s)
    s = "".join(c for c in s if not unicodedata.combining(c))
    s = s.lower().replace("&", "and")
    return re.sub(r"[^a-z0-9]", "", s)


def norm_hex(h: str) -> str:
    return "-".join(p for p in h.upper().split("-") if p != "FE0F")


_CODE_RE = re.compile(r"(u\+?)?[0-9a-f]+([-_ ][0-9a-f]+)*")


def is_code_name(name: str) -> bool:
    """True for names that are bare codes (only digits/hex with at least one digit)."""
    n = name.lower().strip()
    return not n or (bool(_CODE_RE.fullmatch(n)) and any(c.isdigit() for c in n))


def strip_variant_suffix(name: str) -> str:
    """'baby-2' -> 'baby', 'book2' -> 'book', 'abstract-001' -> 'abstract'; 'hal-9000' kept."""
    return re.sub(r"(?<=[a-z])-?\d{1,3}$", "", name)


def is_skin_tone_variant(key: str) -> bool:
    return "skin-tone" in key or bool(re.search(r"(^|-)tone-?[1-5]($|-)", key))


def name_words(name: str) -> list[str]:
    words = []
    for w in re.split(r"[-_\s]+", name.lower()):
        if w and w not in words:
            words.append(w)
    return words


# ---------------------------------------------------------------- emojibase lexicon

class EmojiLexicon:
    """Offline CLDR labels and tags (emojibase-data) looked up by code point or name."""

    def __init__(self, data: list[dict], shortcodes: dict[str, object] | None = None,
                 alt_names: dict[str, str] | None = None, extra_text: list[str] | None = None):
        self.by_hex: dict[str, dict] = {}
        self.by_label: dict[str, dict] = {}
        self.by_short: dict[str, dict] = {}
        vocab: Counter = Counter()  # word frequencies for segmenting run-together names

        def add_words(text: str) -> None:
            vocab.update(norm(w) for w in re.split(r"[\s_\-:,()]+", text) if norm(w))

        for e in data:
            self.by_hex.setdefault(norm_hex(e["hexcode"]), e)
            self.by_label.setdefault(norm(e["label"]), e)
            add_words(e["label"])
            for t in e.get("tags", []):
                add_words(t)
                vocab[norm(t)] += 1  # also the squashed form ("left-pointing")
        for e in data:  # labels without "(...)" qualifiers, e.g. "A button (blood type)"
            short = re.sub(r"\s*\(.*?\)", "", e["label"])
            self.by_label.setdefault(norm(short), e)
        for hexcode, codes in sorted((shortcodes or {}).items()):
            e = self.by_hex.get(norm_hex(hexcode))
            if e is None:
                continue
            for code in [codes] if isinstance(codes, str) else codes:
                self.by_short.setdefault(norm(code), e)
                add_words(code)
        # hyphenated names from other icon sets: norm -> "words with spaces"
        self.alt_names = dict(alt_names or {})
        for v in self.alt_names.values():
            add_words(v)
        for t in extra_text or []:
            add_words(t)
        self.vocab = Counter({w: c for w, c in vocab.items()
                              if not w.isdigit() and (len(w) > 1 or w in ("a", "x"))})
        self._total = sum(self.vocab.values()) or 1

    @classmethod
    def from_package(cls, tgz: Path, alt_names: dict[str, str] | None = None,
                     extra_text: list[str] | None = None) -> "EmojiLexicon":
        data = read_tar_json(tgz, "en/data.json")
        shortcodes: dict[str, list[str]] = {}
        for name in SHORTCODE_SETS:
            for hexcode, codes in read_tar_json(tgz, f"en/shortcodes/{name}.json", {}).items():
                lst = shortcodes.setdefault(hexcode, [])
                lst.extend([codes] if isinstance(codes, str) else codes)
        return cls(data, shortcodes, alt_names, extra_text)

    def lookup(self, key: str, hexcode: str | None = None) -> dict | None:
        if hexcode:
            e = self.by_hex.get(norm_hex(hexcode))
            if e is not None:
                return e
        for k in dict.fromkeys([key, strip_variant_suffix(key)]):
            n = norm(k)
            m = re.fullmatch(r"flag-for-(.+)", k)
            if m:
                n2 = norm("flag " + m.group(1))
                if n2 in self.by_label:
                    return self.by_label[n2]
            if n in self.by_label:
                return self.by_label[n]
            if n in self.by_short:
                return self.by_short[n]
        return None

    def segment(self, s: str) -> str | None:
        """Split a run-together name ('alarmclock') into known words (unigram model), or None."""
        s = s.lower()
        n = len(s)
        log_total = math.log(self._total)
        best: list[tuple[float, int] | None] = [None] * (n + 1)
        best[0] = (0.0, 0)
        for i in range(1, n + 1):
            for j in range(max(0, i - 30), i):
                if best[j] is None:
                    continue
                w = s[j:i]
                if w in self.vocab:
                    cost = 1.0 + log_total - math.log(self.vocab[w])
                    if len(w) <= 2 and w not in SHORT_WORDS:  # avoid "bl ac km is sing"
                        cost += 8.0
                elif w.isdigit():
                    cost = 4.0
                elif len(w) >= 3:  # unknown word: ~1/10 as likely per extra letter
                    cost = 1.0 + log_total + LOG10 * (len(w) - 1)
                else:
                    continue
                c = best[j][0] + cost
                if best[i] is None or c < best[i][0]:
                    best[i] = (c, j)
        if best[n] is None:
            return None
        words, i = [], n
        while i > 0:
            j = best[i][1]
            words.append(s[j:i])
            i = j
        return " ".join(reversed(words))

    def display_name(self, key: str) -> str:
        """Readable name for an unmatched icon key."""
        base = strip_variant_suffix(key)
        if "-" in base or base in self.vocab or base.isdigit():
            return base.replace("-", " ")
        n = norm(base)
        if n in self.alt_names:
            return self.alt_names[n]
        return self.segment(base) or base


# ---------------------------------------------------------------- SVG rendering

def iconify_svg(icon: dict, default_w: float = 16, default_h: float = 16) -> str:
    """Standalone SVG document for an iconify icon entry; currentColor -> black."""
    left = icon.get("left", 0)
    top = icon.get("top", 0)
    w = icon.get("width", default_w)
    h = icon.get("height", default_h)
    body = icon["body"].replace("currentColor", "#000")
    transforms = []
    hflip, vflip = bool(icon.get("hFlip")), bool(icon.get("vFlip"))
    if hflip or vflip:
        transforms.append(f"translate({(2 * left + w) if hflip else 0} {(2 * top + h) if vflip else 0}) "
                          f"scale({-1 if hflip else 1} {-1 if vflip else 1})")
    rot = int(icon.get("rotate", 0)) % 4
    if rot:
        cx, cy = left + w / 2, top + h / 2
        transforms.insert(0, f"rotate({rot * 90} {cx} {cy})")
        if rot % 2:
            # swap the box around its centre
            left, top, w, h = cx - h / 2, cy - w / 2, h, w
    if transforms:
        body = f'<g transform="{" ".join(transforms)}">{body}</g>'
    return (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'viewBox="{left} {top} {w} {h}" width="{w}" height="{h}">{body}</svg>')


def render_svg(svg: str, size: int = IMAGE_SIZE):
    """Rasterize so the longer side is `size`, flatten on white, return an RGB PIL image."""
    import resvg_py
    from PIL import Image

    m = re.search(r'viewBox="([^"]+)"', svg)
    vw, vh = (float(x) for x in m.group(1).split()[2:4]) if m else (size, size)
    if vw >= vh:
        width, height = size, max(1, round(size * vh / vw))
    else:
        width, height = max(1, round(size * vw / vh)), size
    png = resvg_py.svg_to_bytes(svg_string=svg, width=width, height=height, skip_system_fonts=True)
    img = Image.open(io.BytesIO(bytes(png)))
    img.load()
    img = img.convert("RGBA")
    bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
    out = Image.alpha_composite(bg, img).convert("RGB")
    if max(out.size) > size:
        out.thumbnail((size, size), Image.LANCZOS)
    return out


def file_hash(source: str, key: str) -> str:
    return hashlib.sha1(f"{source}/{key}".encode("utf-8")).hexdigest()[:16]


# ---------------------------------------------------------------- conversion

class Pair(NamedTuple):
    key: str
    text: str
    keywords: list[str]


def emoji_pair(key: str, lexicon: EmojiLexicon, hexcode: str | None = None) -> Pair | None:
    if is_skin_tone_variant(key) or is_code_name(key):
        return None
    e = lexicon.lookup(key, hexcode)
    if e is not None and not e.get("tone"):
        text = e["label"]
        keywords = list(e.get("tags") or []) or name_words(text)
    else:
        text = lexicon.display_name(key)
        keywords = name_words(text)
    if is_code_name(text.replace(" ", "-")):
        return None
    return Pair(key, text, keywords)


def name_pair(key: str) -> Pair | None:
    base = strip_variant_suffix(key)
    if is_code_name(key) or is_code_name(base):
        return None
    text = base.replace("-", " ").strip()
    return Pair(key, text, name_words(text))


def convert_iconify_set(icon_set: dict, source: str, kind: str, train_dir: Path,
                        lexicon: EmojiLexicon | None = None,
                        chars: dict[str, str] | None = None,
                        limit: int | None = None, log_every: int = 1000) -> list[dict]:
    """Render every usable icon of an iconify JSON set; return metadata rows (sorted by key).

    Images go to ``train_dir/<source>/<hash>.jpg``.  `chars` is iconify's
    chars.json (code point hex -> icon name), used to find emojibase entries.
    """
    check_allowed(source, str(icon_set.get("prefix", "")))
    if kind == "emoji" and lexicon is None:
        raise ValueError("emoji sets need a lexicon")
    hex_by_name: dict[str, str] = {}
    for hexcode, name in sorted((chars or {}).items()):
        hex_by_name.setdefault(name, hexcode)
    dw, dh = icon_set.get("width", 16), icon_set.get("height", 16)
    out_dir = train_dir / source
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for key in sorted(icon_set.get("icons", {})):
        icon = icon_set["icons"][key]
        if icon.get("hidden"):
            continue
        pair = emoji_pair(key, lexicon, hex_by_name.get(key)) if kind == "emoji" else name_pair(key)
        if pair is None:
            continue
        rel = f"{source}/{file_hash(source, key)}.jpg"
        try:
            img = render_svg(iconify_svg(icon, dw, dh))
        except ValueError as exc:  # unrenderable SVG
            print(f"  skip {source}/{key}: {exc}", file=sys.stderr)
            continue
        img.save(train_dir / rel, "JPEG", quality=JPEG_QUALITY)
        rows.append({"file_name": rel, "text": pair.text, "source": source,
                     "keywords": pair.keywords, "description": "",
                     "category": "game-icons" if kind == "game" else source})
        if log_every and len(rows) % log_every == 0:
            print(f"  {source}: {len(rows)}", flush=True)
        if limit and len(rows) >= limit:
            break
    return rows


def write_metadata(rows: list[dict], train_dir: Path) -> None:
    with open(train_dir / "metadata.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def write_licenses(out: Path, entries: list[dict], counts: Counter) -> None:
    lines = [
        "# Sources of the data in this folder",
        "",
        "Built by `recipes/searchkit_lite/extra_pairs.py` from npm packages (iconify JSON icon sets).",
        "",
        "| folder | source | images | license |",
        "|---|---|---|---|",
    ]
    for e in entries:
        lines.append(f"| train/{e['source']} | {e['package']} {e['version']} "
                     f"({e['title']} by {e['author']}, {e['url']}) | {counts[e['source']]} | "
                     f"{e['license']} |")
    lines += [
        f"| (captions) | {EMOJIBASE[0]} {EMOJIBASE[1]}: CLDR labels and tags for emoji | - | MIT |",
        "",
        "Images were rendered from SVG at 224 px (resvg), flattened on white and saved "
        f"as JPEG (quality {JPEG_QUALITY}). currentColor was replaced with black.",
        "Emoji text = CLDR label (emojibase) where the icon matches by code point or name, "
        "else the icon name; skin-tone variants and bare-code names were skipped.",
        "game-icons text = icon name with hyphens as spaces.",
        "All rows are in the train split. CC BY / CC BY-SA sets require attribution to the "
        "authors above; CC BY-SA derivatives must keep the same license.",
        "",
    ]
    (out / "LICENSES.md").write_text("\n".join(lines), encoding="utf-8")


def package_license(tgz: Path) -> tuple[str, dict]:
    pkg = read_tar_json(tgz, "package.json")
    info = read_tar_json(tgz, "info.json", {})
    lic = pkg.get("license") or ""
    spdx = (info.get("license") or {}).get("spdx") or ""
    if spdx and spdx != lic:
        lic = f"{lic} (info.json: {spdx})"
    return lic, info


def default_npm_cache() -> Path:
    from platformdirs import user_cache_dir
    return Path(user_cache_dir("searchkit")) / "searchkit-lite-recipe" / "npm"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", type=Path, required=True)
    ap.add_argument("--cache", type=Path, default=None,
                    help=f"npm tarballs (default {default_npm_cache()})")
    ap.add_argument("--sources", default=",".join(DEFAULT_SOURCES),
                    help="comma-separated subset of: " + ", ".join(SOURCES))
    ap.add_argument("--limit", type=int, default=None, help="max images per source (for quick runs)")
    args = ap.parse_args(argv)

    names = [s.strip() for s in args.sources.split(",") if s.strip()]
    for name in names:
        check_allowed(name)
        if name not in SOURCES:
            ap.error(f"unknown source {name!r}")
    build_extra_pairs(args.output, args.cache or default_npm_cache(), names, args.limit)
    return 0


def build_extra_pairs(output: Path, cache: Path, names: Sequence[str] = DEFAULT_SOURCES,
                      limit: int | None = None) -> None:
    """Fetch the pinned packages into ``cache`` and write the dataset to ``output``."""
    t0 = time.time()
    tgzs = {name: fetch_package(SOURCES[name][0], SOURCES[name][1], cache)
            for name in dict.fromkeys([*LEXICON_SOURCES, *names])}
    eb_tgz = fetch_package(*EMOJIBASE, cache)
    icon_sets = {name: read_tar_json(tgz, "icons.json") for name, tgz in tgzs.items()}

    # Hyphenated names of all emoji sets help to read run-together names (fxemoji).
    alt_names: dict[str, str] = {}
    for name in sorted(LEXICON_SOURCES):
        if SOURCES[name][2] != "emoji":
            continue
        for key in sorted(icon_sets[name]["icons"]):
            if "-" in key and not is_skin_tone_variant(key):
                alt_names.setdefault(norm(key), strip_variant_suffix(key).replace("-", " "))
    extra_text = [key.replace("-", " ") for name in sorted(LEXICON_SOURCES)
                  if SOURCES[name][2] == "game"
                  for key in sorted(icon_sets[name]["icons"])]
    lexicon = EmojiLexicon.from_package(eb_tgz, alt_names, extra_text)

    train_dir = output / "train"
    train_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    lic_entries = []
    for name in names:
        package, version, kind = SOURCES[name]
        lic, info = package_license(tgzs[name])
        check_allowed(package, info.get("name", ""), info.get("prefix", ""))
        shutil.rmtree(train_dir / name, ignore_errors=True)
        chars = read_tar_json(tgzs[name], "chars.json", {})
        t1 = time.time()
        print(f"{name}: {package}@{version} license {lic}", flush=True)
        got = convert_iconify_set(icon_sets[name], name, kind, train_dir, lexicon, chars, limit)
        print(f"{name}: {len(got)} images in {time.time() - t1:.0f}s", flush=True)
        rows.extend(got)
        author = info.get("author") or {}
        lic_entries.append({"source": name, "package": package, "version": version,
                            "license": lic, "title": info.get("name", name),
                            "author": author.get("name", "?"), "url": author.get("url", "")})
    write_metadata(rows, train_dir)
    counts = Counter(r["source"] for r in rows)
    write_licenses(output, lic_entries, counts)

    print("\nper-source counts:")
    for name in names:
        print(f"  {name:20s} {counts[name]:6d}  ({lic_entries[names.index(name)]['license']})")
    print(f"  {'total':20s} {len(rows):6d}")
    print(f"wrote {train_dir / 'metadata.jsonl'} in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    sys.exit(main())
