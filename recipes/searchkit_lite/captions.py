"""Caption sets: every training image (or ImageNet pseudo-image) gets several captions.

Each function is pure: rows in, caption lists out. The first caption of each set is the primary
one (the align title, or "a photo of a {name}." for an ImageNet class).
"""

from __future__ import annotations

from .data import AlignRow, ImagenetClass, Synset, hypernym_names

MAX_KEYWORDS = 6
MAX_DESCRIPTION_CHARS = 200
HYPERNYM_DEPTH = 2
PHOTO_TEMPLATE = "a photo of a {}."
IMAGENET_TEMPLATES = ("a photo of a {}.", "a {}.", "a picture of a {}.", "a close-up photo of a {}.")
ALIGN_TEMPLATES = ("a drawing of {}.", "an icon of {}.")


def align_captions(row: AlignRow, extra: bool) -> list[str]:
    """The title, then (when ``extra``) keywords, description, category and templated titles."""
    caps = [row.text]
    if not extra:
        return caps
    title = row.text.strip()
    caps += [t.format(title) for t in ALIGN_TEMPLATES]
    kws = [k for k in row.keywords if k and k.lower() != title.lower()][:MAX_KEYWORDS]
    if kws:
        caps.append(", ".join(kws))
        caps.append(f"{title}: {', '.join(kws)}")
    desc = row.description.strip()
    if desc and len(desc) <= MAX_DESCRIPTION_CHARS and desc.lower() != title.lower():
        caps.append(desc)
    if row.category:
        caps.append(f"{title} ({row.category.replace('/', ', ')})")
    return _unique(caps)


def imagenet_captions(cls: ImagenetClass, wordnet: dict[str, Synset] | None,
                      templates: bool) -> list[str]:
    """Captions of one ImageNet class: its names in templates, plus WordNet when given."""
    names = list(cls.names)
    caps = [PHOTO_TEMPLATE.format(names[0])]
    tmpl = IMAGENET_TEMPLATES if templates else (PHOTO_TEMPLATE,)
    for name in names[:3]:
        caps += [t.format(name) for t in tmpl]
    if wordnet is not None:
        synset = wordnet.get(cls.synset.lstrip("n"))
        hypers = hypernym_names(wordnet, cls.synset.lstrip("n"), HYPERNYM_DEPTH)
        if hypers:
            caps.append(f"a photo of a {names[0]}, a kind of {hypers[0]}.")
            caps.append(PHOTO_TEMPLATE.format(hypers[0]))
        if len(hypers) > 1:
            caps.append(f"a {names[0]}, a {hypers[0]}, a {hypers[1]}.")
        if synset is not None and synset.gloss:
            caps.append(f"{names[0]}: {synset.gloss}")
    return _unique(caps)


def _unique(items: list[str]) -> list[str]:
    seen, out = set(), []
    for s in items:
        s = " ".join(s.split())
        if s and s not in seen:
            seen.add(s)
            out.append(s)
    return out
