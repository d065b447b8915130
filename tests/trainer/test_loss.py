import math

import torch
import torch.nn.functional as F

from searchkit.trainer.loss import (MAX_LOGIT_SCALE, ClipLoss, SigLipLoss, clamp_logit_scale_, loss_for,
                          similarity_logits)


def _pair(n=6, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)


def test_clip_loss_matches_reference_formula():
    img, txt = _pair()
    scale = torch.tensor(1 / 0.07)
    a, b = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    logits = scale * a @ b.t()
    y = torch.arange(6)
    ref = (F.cross_entropy(logits, y) + F.cross_entropy(logits.t(), y)) / 2
    assert torch.allclose(ClipLoss()(img, txt, scale), ref, atol=1e-6)


def test_clip_loss_is_symmetric_in_its_inputs():
    img, txt = _pair()
    assert torch.allclose(ClipLoss()(img, txt, 10.0), ClipLoss()(txt, img, 10.0), atol=1e-6)


def test_clip_loss_low_for_aligned_pairs_high_for_shuffled():
    img, _ = _pair()
    aligned = ClipLoss()(img, img.clone(), 50.0)
    shuffled = ClipLoss()(img, img.roll(1, 0), 50.0)
    assert aligned < 0.1 < math.log(6) < shuffled


def test_logit_scale_is_clamped_at_100_and_gets_gradients_below():
    img, txt = _pair()
    big = similarity_logits(img, txt, 1e4)
    capped = similarity_logits(img, txt, MAX_LOGIT_SCALE)
    assert torch.allclose(big, capped)
    log_scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    ClipLoss()(img, txt, log_scale.exp()).backward()
    assert log_scale.grad is not None and log_scale.grad.abs() > 0
    p = torch.nn.Parameter(torch.tensor(9.0))
    clamp_logit_scale_(p)
    assert math.isclose(p.item(), math.log(100), rel_tol=1e-6)


def test_siglip_loss_matches_reference_and_prefers_aligned():
    img, txt = _pair(4)
    a, b = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    logits = 10.0 * a @ b.t() - 10.0
    labels = 2 * torch.eye(4) - 1
    ref = -F.logsigmoid(labels * logits).sum() / 4
    assert torch.allclose(SigLipLoss()(img, txt, 10.0, -10.0), ref, atol=1e-6)
    assert SigLipLoss()(img, img, 10.0, -5.0) < SigLipLoss()(img, img.roll(1, 0), 10.0, -5.0)


def test_loss_for_kinds():
    assert isinstance(loss_for("clip"), ClipLoss)
    assert isinstance(loss_for("siglip"), SigLipLoss)
    try:
        loss_for("nope")
    except ValueError as e:
        assert "nope" in str(e)
    else:
        raise AssertionError("unknown kind accepted")
