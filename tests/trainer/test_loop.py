"""The proofs: learning from scratch, exact resume, bad data, export, LoRA, WiSE-FT, composite."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from searchkit.encoders import load_encoder
from searchkit.testing import make_tiny_clip
from searchkit.trainer.augment import AugmentConfig
from searchkit.trainer.data import DataConfig, PairData, PairSplit, load_pairs
from searchkit.trainer.evaluate import ReferenceSet, evaluate_pairs
from searchkit.trainer.loop import FINETUNED_SUBDIR, METRICS_FILE, MODEL_SUBDIR, TrainConfig, TrainError, finetune

FAST = dict(weight_decay=0.0, warmup_steps=5, workers=2)


def _spread(pairs, n: int, per_caption: int):
    """The first n of pairs reordered so that consecutive ones have different captions."""
    return [p for j in range(per_caption) for p in pairs[j::per_caption]][:n]


def _subset(data: PairData, n_train: int, n_val: int) -> PairData:
    return PairData(PairSplit("train", _spread(data.train.pairs, n_train, 10)),
                    PairSplit("validation", _spread(data.validation.pairs, n_val, 2)))


# the learning proof's model and settings (tests/trainer/measure_learning_margin.py measures them)
PROOF_MODEL = dict(width=64, projection_dim=32)
PROOF_CONFIG = TrainConfig(epochs=30, batch_size=64, chunk_size=64, lr=1e-3, warmup_steps=20,
                           weight_decay=0.0, workers=2, augment=AugmentConfig.off())


@pytest.fixture(scope="module")
def clip64_dir(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("clip64"), **PROOF_MODEL)


@pytest.mark.integration
def test_tiny_model_learns_shapes_from_scratch(clip64_dir, shapes_data):
    """Validation R@1 rises from near chance to far above it (48 captions, 96 held-out images).

    Measured (measure_learning_margin.py: model/data seeds 0-4 x torch threads 1, 2) best-epoch
    R@1 text->image 89.58-100 (median 95.83), image->text 81.25-92.71 (median 89.58); this
    seed is the lowest (89.58 on one thread, 91.67 on two; another machine's OpenBLAS also gave
    89.58). A broken learner stays near chance: lr=0 gives 0.00 / 2.08, shuffled captions
    6.25 / 2.08. The bounds sit ~15 points under the worst run and ~60 over broken learning.
    """
    enc = load_encoder(str(clip64_dir))
    res = finetune(enc, shapes_data, PROOF_CONFIG, output=None)
    assert res.before.domain.text_to_image.r1 <= 20
    assert res.after.domain.text_to_image.r1 >= 75
    assert res.after.domain.image_to_text.r1 >= 65
    # the model in hand is the best epoch's
    assert evaluate_pairs(enc, shapes_data.validation.pairs) == res.after.domain


def test_resume_continues_the_same_loss_curve(tiny_clip_dir, shapes_data, tmp_path):
    data = _subset(shapes_data, 120, 24)
    cfg = TrainConfig(epochs=2, batch_size=32, chunk_size=12, lr=1e-3,
                      augment=AugmentConfig(), keyword_p=0.3, **FAST)
    whole = finetune(load_encoder(str(tiny_clip_dir)), data, cfg, tmp_path / "whole")
    stopped = finetune(load_encoder(str(tiny_clip_dir)), data, cfg, tmp_path / "split",
                       max_steps=5)
    assert not stopped.completed and len(stopped.losses) == 5
    assert 5 < len(whole.losses)
    resumed = finetune(load_encoder(str(tiny_clip_dir)), data, cfg, tmp_path / "split",
                       resume=True)
    assert resumed.completed
    np.testing.assert_allclose(resumed.losses, whole.losses, rtol=1e-5, atol=1e-6)
    assert resumed.after.domain == whole.after.domain
    other = TrainConfig(**{**cfg.__dict__, "lr": 5e-3})
    with pytest.raises(TrainError, match="other settings"):
        finetune(load_encoder(str(tiny_clip_dir)), data, other, tmp_path / "split", resume=True)


@pytest.fixture()
def bad_dataset(tmp_path):
    root = tmp_path / "bad"
    (root / "train").mkdir(parents=True)
    rows = []
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), np.uint8)).save(root / "train" / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "text": f"picture {i}"})
    (root / "train" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (root / "train" / "empty.png").write_bytes(b"")
    Image.new("RGB", (32, 32)).save(root / "train" / "nocap.png")
    rows += [{"file_name": "missing.png", "text": "gone"},
             {"file_name": "corrupt.jpg", "text": "corrupt"},
             {"file_name": "empty.png", "text": "empty file"},
             {"file_name": "nocap.png", "text": "   "},
             {"file_name": "0.png", "text": None}]
    with open(root / "train" / "metadata.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return root


def test_bad_rows_are_skipped_and_reported(tiny_clip_dir, bad_dataset, tmp_path):
    data = load_pairs(str(bad_dataset), DataConfig(holdout=0.25, seed=3))
    assert len(data.train.pairs) + len(data.validation.pairs) == 12
    assert not {p.caption for p in data.train.pairs} & {p.caption for p in data.validation.pairs}
    reasons = {b.key.rsplit("/", 1)[-1]: b.reason for b in data.bad}
    assert reasons["missing.png"] == "file not found"
    assert "decode" in reasons["corrupt.jpg"] or "image" in reasons["corrupt.jpg"]
    assert reasons["empty.png"] == "empty file"
    assert reasons["nocap.png"] == "empty caption"
    assert len(data.bad) == 5
    cfg = TrainConfig(epochs=1, batch_size=4, chunk_size=4, lr=1e-3, **FAST)
    res = finetune(load_encoder(str(tiny_clip_dir)), data, cfg, tmp_path / "out")
    assert res.completed and len(res.skipped) == 5
    metrics = json.loads((tmp_path / "out" / METRICS_FILE).read_text())
    assert metrics["skipped"]["count"] == 5
    assert data.train.pairs == load_pairs(str(bad_dataset), DataConfig(holdout=0.25, seed=3)).train.pairs


def test_lora_wise_export_round_trip(tiny_clip_dir, shapes_data, tmp_path):
    """LoRA merged into plain weights, WiSE-FT auto on a reference set, model dir loads back."""
    ref_root = tmp_path / "ref"
    for name, rgb in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
        (ref_root / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (32, 32), tuple(max(0, c - 20 * i) for c in rgb)).save(
                ref_root / name / f"{i}.png")
    data = _subset(shapes_data, 96, 24)
    cfg = TrainConfig(epochs=2, batch_size=32, chunk_size=32, lr=5e-3, mode="lora",
                      wise="auto", wise_alphas=(0.0, 0.5, 1.0), **FAST)
    enc = load_encoder(str(tiny_clip_dir))
    res = finetune(enc, data, cfg, tmp_path / "out", reference=ReferenceSet(str(ref_root)))
    assert [p.alpha for p in res.wise.curve] == [0.0, 0.5, 1.0]
    base_ref = res.wise.curve[0].point.reference.top1
    assert res.final.reference.top1 >= base_ref - 2
    assert res.before.reference is not None and res.after.reference is not None
    back = load_encoder(str(tmp_path / "out" / MODEL_SUBDIR))
    assert not any("lora" in k for k in back.model.state_dict())
    assert evaluate_pairs(back, data.validation.pairs) == res.final.domain
    unmixed = load_encoder(str(tmp_path / "out" / FINETUNED_SUBDIR))
    assert evaluate_pairs(unmixed, data.validation.pairs) == res.after.domain
    metrics = json.loads((tmp_path / "out" / METRICS_FILE).read_text())
    assert metrics["wise"]["alpha"] == res.wise.alpha
    assert set(metrics) >= {"before", "after", "final", "epochs", "config"}


def test_trainer_works_on_a_composite_model(shapes_data, tmp_path):
    from searchkit.encoders.composite import make_tiny_composite
    src = make_tiny_composite(tmp_path / "comp")
    data = _subset(shapes_data, 32, 16)
    cfg = TrainConfig(epochs=1, batch_size=16, chunk_size=8, lr=1e-3, mode="lock-image-trunk",
                      augment=AugmentConfig.off(), **FAST)
    enc = load_encoder(str(src))
    trunk_before = {k: v.clone() for k, v in enc.model.image_tower.state_dict().items()}
    head_before = enc.model.image_head.weight.detach().clone()
    res = finetune(enc, data, cfg, tmp_path / "out")
    assert res.completed and len(res.losses) == 2
    for k, v in enc.model.image_tower.state_dict().items():
        assert torch.equal(v, trunk_before[k]), k
    assert not torch.equal(enc.model.image_head.weight, head_before)
    back = load_encoder(str(tmp_path / "out" / MODEL_SUBDIR))
    assert evaluate_pairs(back, data.validation.pairs) == res.final.domain
