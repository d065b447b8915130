"""Pieces of the searchkit-lite recipe (recipes/searchkit_lite, not installed) that can be
checked without the real towers and data."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from searchkit.encoders.composite import load_composite
from searchkit.testing import make_tiny_composite
from searchkit.trainer.batches import DEFER, DROP, caption_batches

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # recipes/ is imported from the checkout
    sys.path.insert(0, str(REPO))

from recipes.searchkit_lite import train as recipe  # noqa: E402
from recipes.searchkit_lite.features import RELU6_MAX, imagenet_synth_pooled  # noqa: E402
from recipes.searchkit_lite.text_tail import round_to_half, tail_features, tower_prefix  # noqa: E402
from recipes.searchkit_lite.training import (Pairs, Schedule, Selection, TextTail,  # noqa: E402
                                             Validation, train_heads, train_text_tail)


def test_synthesized_features_are_confident_and_in_range():
    torch.manual_seed(0)
    classifier = nn.Linear(16, 5)          # each class owns a feature, as ImageNet rows roughly do
    with torch.no_grad():
        classifier.weight.mul_(0.3).add_(torch.eye(5, 16))
    fake = SimpleNamespace(model=SimpleNamespace(image_tower=SimpleNamespace(
        net=SimpleNamespace(classifier=classifier))))
    real = np.random.default_rng(0).uniform(0, 2, (40, 16)).astype(np.float32)
    x = imagenet_synth_pooled(fake, real, per_class=3, seed=1, target_p=0.8, steps=500)
    assert x.shape == (15, 16)
    assert x.min() >= 0 and x.max() <= RELU6_MAX
    with torch.no_grad():
        p = classifier(torch.from_numpy(x)).softmax(-1).numpy()
    target = np.repeat(np.arange(5), 3)
    # the ascent stops once its own p reaches 0.8; recomputed here through nn.Linear (another
    # kernel) p may differ in the last bits, so the bound keeps a round-off margin. A broken
    # ascent leaves p near 1/5.
    assert (p[np.arange(15), target] >= 0.8 - 1e-4).all()
    again = imagenet_synth_pooled(fake, real, per_class=3, seed=1, target_p=0.8, steps=500)
    np.testing.assert_array_equal(x, again)


@pytest.fixture()
def tiny(tmp_path):
    return load_composite(make_tiny_composite(tmp_path / "m"), device="cpu")


def test_cached_prefix_plus_tuned_tail_equals_the_whole_text_tower(tiny, tmp_path):
    tower = tiny.model.text_tower
    texts = ["a red car", "the dog", "a photo of a blue house , tree", "cat"]
    first = tower.num_layers - 1
    prefix = tower_prefix(tiny, texts, first, tmp_path / "cache")
    assert list(tmp_path.joinpath("cache").iterdir())           # cached for the next run
    with torch.no_grad():
        whole = tower(**tiny.tokenize(texts))
    np.testing.assert_allclose(tail_features(tower, first, prefix, [0, 1, 2, 3]), whole,
                               atol=2e-3)                        # prefix is stored in float16
    tuned = tower.layer_parameters(first)
    with torch.no_grad():
        tuned[0].add_(1e-4)
    round_to_half(tuned)
    assert torch.equal(tuned[0], tuned[0].half().float())


def test_recipe_batches_drop_a_repeated_caption_from_its_window():
    """The recipe's rule (kept so its weights reproduce) beside the trainer's."""
    caps = ["a", "a", "b", "c", "a", "d", "e"]
    dropped = caption_batches(caps, range(len(caps)), 3, DROP)
    assert dropped == [[0, 2], [3, 4, 5], [6]]
    for batch in dropped + caption_batches(caps, range(len(caps)), 3, DEFER):
        assert len({caps[i] for i in batch}) == len(batch)
    assert caption_batches(caps, range(len(caps)), 3, DEFER)[0] == [0, 2, 3]
    with pytest.raises(ValueError):
        caption_batches(caps, range(len(caps)), 3, "keep")


def _toy_problem(tiny, n: int = 24):
    """Cached features of a toy caption/image problem for the tiny composite."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, tiny.model.image_tower.out_dim)).astype(np.float32)
    words = ["cat", "dog", "car", "tree", "house", "red", "blue", "photo"]
    texts = [f"a {words[i % 8]} {words[(i // 8) % 8]}" for i in range(n)]
    with torch.no_grad():
        T = tiny.model.text_tower(**tiny.tokenize(texts)).numpy()
    pairs = Pairs([np.array([i]) for i in range(n)], [[i] for i in range(n)], [1] * n)
    return X, T, texts, pairs, Validation(X[:8], T[:8], texts[:8])


@pytest.mark.integration  # trains (tiny: under a second)
def test_heads_phase_keeps_its_best_epoch(tiny):
    X, T, _, pairs, val = _toy_problem(tiny)
    best = train_heads(tiny, X, T, pairs, val, Schedule(8, 3, (1e-2,), 0, 0.5))
    assert [h["epoch"] for h in best.history] == [1, 2, 3]
    means = [(h["t2i_r10"] + h["i2t_r10"]) / 2 for h in best.history]
    assert best.epoch == 1 + means.index(max(means))
    for k, v in tiny.model.heads_state().items():
        assert torch.equal(v, best.heads[k])


@pytest.mark.integration  # trains (tiny: under a second)
def test_text_phase_undoes_itself_when_no_epoch_beats_the_heads(tiny, tmp_path):
    X, _, texts, pairs, val = _toy_problem(tiny)
    tower = tiny.model.text_tower
    first = tower.num_layers - 1
    tail = TextTail(first, tower_prefix(tiny, texts, first, tmp_path),
                    tower_prefix(tiny, val.texts, first, tmp_path), list(range(8)))
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    unbeatable = Selection(score=101.0, heads={k: v.clone() for k, v in
                                               tiny.model.heads_state().items()})
    best = train_text_tail(tiny, X, tail, pairs, val, Schedule(8, 2, (1e-2, 1e-2), 1, 0.5),
                           unbeatable)
    assert [h["phase"] for h in best.history] == ["text", "text"]
    for k, v in tiny.model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_missing_recipe_input_is_one_clear_line(tmp_path, caplog):
    code = recipe.main(["--output", str(tmp_path / "out"), "--data", str(tmp_path / "none"),
                        "--cache", str(tmp_path / "cache"), "--no-extra"])
    assert code == 2
    assert any("missing" in r.getMessage() and "align" in r.getMessage()
               for r in caplog.records)
    assert not (tmp_path / "out").exists()


def test_recipe_training_reuses_the_trainer_not_copies():
    """The training modules hold no loss, batcher, image decoder, metric or machine path of
    their own (the trainer's are imported)."""
    names = ("train.py", "training.py", "features.py", "text_tail.py", "evaluate.py")
    source = "\n".join((REPO / "recipes" / "searchkit_lite" / n).read_text() for n in names)
    for own in ("cross_entropy", "def batches(", "Image.open(", "np.argsort", "def labelled_folder",
                "except (ImportError, TypeError)", "/work/", "subprocess"):
        assert own not in source, own
