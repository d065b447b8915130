"""Pure pieces of the trainer: schedule, batches, augmentations, param groups, WiSE-FT pick."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from searchkit.trainer.augment import AugmentConfig, augment, random_resized_crop_box
from searchkit.trainer.evaluate import EvalPoint, Recall, ReferenceScore, RetrievalMetrics, retrieval_metrics
from searchkit.trainer.loop import TrainConfig, epoch_batches
from searchkit.trainer.optim import param_groups
from searchkit.trainer.schedule import lr_at
from searchkit.trainer.wise import WisePoint, interpolate, pick_alpha


def test_schedule_warmup_then_cosine():
    lrs = [lr_at(s, 100, 1.0, warmup_steps=10, min_lr_ratio=0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[55] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(100, 100, 1.0, 10, 0.1) == pytest.approx(0.1)


def test_epoch_batches_avoid_duplicate_captions_and_are_seeded():
    caps = ["a", "a", "b", "c", "d", "e", "f", "g"]
    b = epoch_batches(caps, 4, seed=1, epoch=0)
    for batch in b:
        assert len({caps[i] for i in batch}) == len(batch)
    assert sorted(i for batch in b for i in batch) == list(range(8))
    # pairs left alone with their own caption cannot form a batch: dropped
    lone = epoch_batches(["a", "a", "a", "b", "c", "d"], 4, seed=1, epoch=0)
    assert [len(x) for x in lone] == [4]
    assert b == epoch_batches(caps, 4, seed=1, epoch=0)
    assert b != epoch_batches(caps, 4, seed=1, epoch=1)


def test_augment_is_deterministic_per_generator_and_off_is_identity_fit():
    im = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), np.uint8))
    cfg = AugmentConfig(grayscale_p=0.5, blur_p=0.5, hue=0.1)
    a = augment(im, 24, cfg, np.random.default_rng([0, 1, 2]))
    b = augment(im, 24, cfg, np.random.default_rng([0, 1, 2]))
    c = augment(im, 24, cfg, np.random.default_rng([0, 1, 3]))
    assert a.size == (24, 24) and np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    off = [np.asarray(augment(im, 24, AugmentConfig.off(), np.random.default_rng(s)))
           for s in (1, 2)]
    assert np.array_equal(*off) and not AugmentConfig.off().enabled
    for s in range(20):
        l, t, r, bt = random_resized_crop_box(60, 40, (0.3, 1.0), (0.75, 1.33),
                                              np.random.default_rng(s))
        assert 0 <= l < r <= 60 and 0 <= t < bt <= 40


def test_param_groups_no_decay_on_norms_biases_temperature():
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)
            self.norm = torch.nn.LayerNorm(4)
            self.logit_scale = torch.nn.Parameter(torch.tensor(2.6))
    m = M()
    groups = {g["name"]: g for g in param_groups(m, 0.2)}
    assert [p.shape for p in groups["decay"]["params"]] == [torch.Size([4, 4])]
    assert groups["decay"]["weight_decay"] == 0.2
    assert len(groups["no_decay"]["params"]) == 4 and groups["no_decay"]["weight_decay"] == 0


def test_recall_counts_same_caption_as_hit():
    img = np.eye(3, dtype=np.float32)
    txt = img[[1, 0, 2]]              # texts 0 and 1 point at each other's image
    distinct = retrieval_metrics(img, txt, ["x", "y", "z"])
    assert distinct.text_to_image.r1 == pytest.approx(33.33)
    repeated = retrieval_metrics(img, txt, ["x", "x", "z"])   # catalog repeats the title
    assert repeated.text_to_image.r1 == 100.0 and repeated.image_to_text.r1 == 100.0
    assert repeated.to_json()["text_to_image"] == {"R@1": 100.0, "R@5": 100.0, "R@10": 100.0}


def _point(r1, ref):
    rec = Recall(r1, r1, r1)
    return EvalPoint("x", RetrievalMetrics(10, rec, rec), ReferenceScore("ref", 10, ref, ref))


def test_wise_auto_respects_reference_floor():
    curve = [WisePoint(0.0, _point(10, 80)), WisePoint(0.5, _point(40, 79)),
             WisePoint(0.8, _point(50, 77.5)), WisePoint(1.0, _point(60, 60))]
    choice = pick_alpha(curve, max_drop=2.0)
    assert choice.alpha == 0.5
    assert pick_alpha(curve, max_drop=3.0).alpha == 0.8
    assert pick_alpha(curve, max_drop=50).alpha == 1.0


def test_interpolate_endpoints_and_midpoint():
    a = {"w": torch.zeros(2), "n": torch.tensor([1])}
    b = {"w": torch.ones(2), "n": torch.tensor([5])}
    assert torch.equal(interpolate(a, b, 0.0)["w"], a["w"])
    assert torch.equal(interpolate(a, b, 1.0)["w"], b["w"])
    assert torch.allclose(interpolate(a, b, 0.25)["w"], torch.full((2,), 0.25))
    assert torch.equal(interpolate(a, b, 0.5)["n"], b["n"])


def test_config_round_trips_through_json():
    cfg = TrainConfig(mode="lora", augment=AugmentConfig(crop_scale=(0.5, 1.0)), wise="auto")
    import json
    assert TrainConfig.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg
