"""Pieces of the searchkit-lite recipe that can be checked without the real towers."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from searchkit.encoders.composite import load_composite, make_tiny_composite
from trainer.recipes.lite_text import round_to_half, tail_features, tower_prefix, tuned_parameters
from trainer.recipes.searchkit_lite import RELU6_MAX, imagenet_synth_pooled


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
    assert (p[np.arange(15), target] >= 0.8).all()
    again = imagenet_synth_pooled(fake, real, per_class=3, seed=1, target_p=0.8, steps=500)
    np.testing.assert_array_equal(x, again)


def test_cached_prefix_plus_tuned_tail_equals_the_whole_text_tower(tmp_path):
    enc = load_composite(make_tiny_composite(tmp_path / "m"), device="cpu")
    tower = enc.model.text_tower
    texts = ["a red car", "the dog", "a photo of a blue house , tree", "cat"]
    first = len(tower.encoder.layer) - 1
    prefix = tower_prefix(enc, texts, first, tmp_path / "cache")
    assert list(tmp_path.joinpath("cache").iterdir())           # cached for the next run
    with torch.no_grad():
        whole = tower(**enc.tokenize(texts))
    np.testing.assert_allclose(tail_features(tower, first, prefix, [0, 1, 2, 3]), whole,
                               atol=2e-3)                        # prefix is stored in float16
    tuned = tuned_parameters(tower, first)
    assert tuned and all(p in set(tower.encoder.layer[-1].parameters()) for p in tuned)
    with torch.no_grad():
        tuned[0].add_(1e-4)
    round_to_half(tuned)
    assert torch.equal(tuned[0], tuned[0].half().float())
