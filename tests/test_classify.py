"""Zero-shot classification: a fake colour encoder makes the expected labels known."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from searchkit.classify import (ClassifyError, ZeroShotClassifier, accuracy_report,
                                class_text_embeddings, classify_images, evaluate_folder,
                                labelled_folder, parse_labels, subsample_per_class)

COLOURS = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}


class ColourEncoder:
    """Images -> their mean RGB; texts -> the RGB of the colour word they contain."""

    dim = 3

    def __init__(self):
        self.seen_texts: list[str] = []

    def preprocess(self, image):
        return np.asarray(image.convert("RGB").resize((4, 4)), np.float32).mean(axis=(0, 1))

    def encode_pixels(self, pixels):
        x = np.asarray(pixels, np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def encode_texts(self, texts):
        self.seen_texts += list(texts)
        vecs = []
        for t in texts:
            rgb = next((c for name, c in COLOURS.items() if name in t), (100, 100, 100))
            # a template-dependent tilt, so that averaging templates is observable
            vecs.append(np.asarray(rgb, np.float32) + (30 if "drawing" in t else 0))
        v = np.asarray(vecs)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture()
def colour_folder(tmp_path):
    root = tmp_path / "set"
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (16, 16), tuple(max(0, c - 10 * i) for c in rgb)).save(
                root / name / f"{i}.png")
    (root / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return root


def test_parse_labels_and_errors():
    assert parse_labels("cat, dog\nbird,,") == ["cat", "dog", "bird"]
    with pytest.raises(ClassifyError):
        parse_labels(" , ")
    with pytest.raises(ClassifyError, match="duplicate"):
        parse_labels("cat,cat")
    with pytest.raises(ClassifyError, match="no '{}'"):
        class_text_embeddings(ColourEncoder(), ["red"], ["a photo"])


def test_templates_are_averaged_and_renormalised():
    enc = ColourEncoder()
    one = class_text_embeddings(enc, ["red"], ["a photo of {}"])
    two = class_text_embeddings(enc, ["red"], ["a photo of {}", "a drawing of {}"])
    assert enc.seen_texts[-2:] == ["a photo of red", "a drawing of red"]
    assert np.isclose(np.linalg.norm(two), 1.0)
    expected = enc.encode_texts(["a photo of red", "a drawing of red"]).mean(axis=0)
    assert np.allclose(two[0], expected / np.linalg.norm(expected), atol=1e-6)
    assert not np.allclose(one, two)


def test_classify_images_walks_folders_and_skips_bad_files(colour_folder):
    preds, skipped = classify_images(ColourEncoder(), [colour_folder, colour_folder / "nope.png"],
                                     ["red", "green", "blue"], batch_size=2, workers=2)
    assert len(preds) == 9
    for p in preds:
        assert p.label in p.path and 0 < p.probability <= 1
        assert [lab for lab, _ in p.top][0] == p.label and len(p.top) == 3
    reasons = {s.path.rsplit("/", 1)[-1]: s.reason for s in skipped}
    assert set(reasons) == {"broken.png", "nope.png"}


def test_evaluate_folder_accuracy_and_confusions(colour_folder):
    rep = evaluate_folder(ColourEncoder(), colour_folder, templates=["a {} thing"])
    assert (rep.n, rep.top1, rep.top5) == (9, 100.0, 100.0)
    assert [s.path.endswith("broken.png") for s in rep.skipped] == [True]
    # labels in another order and a wrong prompt word: everything called 'blue' is right only
    # for the blue folder
    probs = np.tile([0.1, 0.2, 0.7], (4, 1))
    r = accuracy_report(probs, np.array([0, 1, 2, 2]), ["a", "b", "c"])
    assert r.top1 == 50.0 and r.top5 == 100.0
    assert [(c.true, c.predicted, c.count) for c in r.confusions] == [("a", "c", 1), ("b", "c", 1)]
    assert [pc.top1 for pc in r.per_class] == [0.0, 0.0, 100.0]


def test_labelled_folder_checks_labels(colour_folder):
    labels, paths, truth = labelled_folder(colour_folder)
    assert labels == ["blue", "green", "red"] and len(paths) == 10
    assert truth.tolist().count(2) == 4
    with pytest.raises(ClassifyError, match="purple"):
        labelled_folder(colour_folder, ["red", "purple"])
    p, t = subsample_per_class(paths, truth, 2, seed=1)
    assert len(p) == 6 and sorted(t.tolist()) == [0, 0, 1, 1, 2, 2]
    assert subsample_per_class(paths, truth, 2, seed=1)[0] == p


def test_real_tiny_model_runs_end_to_end(tiny_encoder, colour_folder):
    clf = ZeroShotClassifier(tiny_encoder, ["red", "green", "blue"], ["a {} square", "{}"])
    assert clf.class_vectors.shape == (3, tiny_encoder.dim)
    rep = evaluate_folder(tiny_encoder, colour_folder)
    assert rep.n == 9 and 0 <= rep.top1 <= 100 and rep.top5 == 100.0
