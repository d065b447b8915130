"""Gradient caching gives the full-batch gradients."""

import pytest
import torch

from searchkit.encoders import load_encoder
from searchkit.trainer.gradcache import gradcache_step
from searchkit.trainer.loss import model_loss
from searchkit.trainer.modes import apply_mode


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _run(enc, pixels, tokens, chunk):
    model = enc.model
    model.zero_grad(set_to_none=True)
    out = gradcache_step(model, pixels, tokens, lambda i, t: model_loss(model, i, t), chunk)
    return out.loss, _grads(model)


@pytest.mark.parametrize("mode", ["full", "lock-image"])
def test_chunked_gradients_equal_full_batch(tiny_clip_dir, mode):
    enc = load_encoder(str(tiny_clip_dir))
    model = enc.model.float().train()
    apply_mode(model, mode)
    torch.manual_seed(0)
    pixels = torch.randn(12, 3, 32, 32)
    tokens = enc.tokenize([f"caption number {i}" for i in range(12)])
    full_loss, full = _run(enc, pixels, tokens, chunk=12)
    cached_loss, cached = _run(enc, pixels, tokens, chunk=5)
    assert cached_loss == pytest.approx(full_loss, rel=1e-5)
    assert set(full) == set(cached) and "hf.logit_scale" in full
    if mode == "lock-image":
        assert not any(n.startswith("hf.vision_model") for n in full)
    for n in full:
        assert torch.allclose(full[n], cached[n], rtol=1e-4, atol=1e-6), n
    assert any(g.abs().sum() > 0 for g in full.values())


class _DropoutDual(torch.nn.Module):
    """A toy DualModel whose towers use dropout."""

    loss_kind = "clip"

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.img = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.5),
                                       torch.nn.Linear(12, 6))
        self.txt = torch.nn.Sequential(torch.nn.Embedding(20, 6), torch.nn.Dropout(0.5))
        self.logit_scale = torch.nn.Parameter(torch.tensor(2.0))
        self.logit_bias = None

    def encode_image(self, pixel_values):
        return self.img(pixel_values)

    def encode_text(self, input_ids, attention_mask=None):
        return self.txt(input_ids).mean(1)

    def image_module(self):
        return self.img

    def text_module(self):
        return self.txt


def test_dropout_masks_are_replayed_between_passes():
    model = _DropoutDual().train()
    pixels = torch.randn(7, 3, 2, 2)
    tokens = {"input_ids": torch.randint(0, 20, (7, 4))}
    # reference: the same masks as gradcache's first pass (chunks of 3, images then texts)
    torch.manual_seed(5)
    img = torch.cat([model.encode_image(pixels[s]) for s in (slice(0, 3), slice(3, 6), slice(6, 7))])
    txt = torch.cat([model.encode_text(tokens["input_ids"][s])
                     for s in (slice(0, 3), slice(3, 6), slice(6, 7))])
    model_loss(model, img, txt).backward()
    ref = _grads(model)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(5)
    gradcache_step(model, pixels, tokens, lambda i, t: model_loss(model, i, t), 3)
    got = _grads(model)
    for n in ref:
        assert torch.allclose(ref[n], got[n], atol=1e-6), n


def test_precomputed_image_features_give_the_same_text_gradients(tiny_clip_dir):
    """Locked image tower: cached image vectors replace pixels without changing gradients."""
    enc = load_encoder(str(tiny_clip_dir))
    model = enc.model.float().train()
    apply_mode(model, "lock-image")
    torch.manual_seed(0)
    pixels = torch.randn(10, 3, 32, 32)
    tokens = enc.tokenize([f"caption {i}" for i in range(10)])
    loss, ref = _run(enc, pixels, tokens, chunk=10)
    with torch.no_grad():
        feats = model.encode_image(pixels)
    for chunk in (10, 4):
        model.zero_grad(set_to_none=True)
        out = gradcache_step(model, None, tokens, lambda i, t: model_loss(model, i, t), chunk,
                             image_features=feats)
        assert out.loss == pytest.approx(loss, rel=1e-5)
        got = _grads(model)
        assert set(got) == set(ref)
        for n in ref:
            assert torch.allclose(ref[n], got[n], rtol=1e-4, atol=1e-6), n


@pytest.mark.parametrize("source", ["clip", "composite"])
def test_cached_trunk_features_give_the_same_gradients(tiny_clip_dir, tmp_path, source):
    """lock-image-trunk: the head over cached trunk output equals the whole image tower."""
    from searchkit.trainer.towers import split_image
    if source == "composite":
        from searchkit.encoders.composite import make_tiny_composite
        enc = load_encoder(str(make_tiny_composite(tmp_path / "c")))
    else:
        enc = load_encoder(str(tiny_clip_dir))
    model = enc.model.float().train()
    apply_mode(model, "lock-image-trunk")
    for m in model.modules():   # as the trainer does: batch norms keep their statistics
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    split = split_image(model)
    assert not any(p.requires_grad for p in split.trunk_module.parameters())
    torch.manual_seed(0)
    pixels = torch.randn(6, 3, 32, 32)
    tokens = enc.tokenize([f"caption {i}" for i in range(6)])
    loss, ref = _run(enc, pixels, tokens, chunk=6)
    with torch.no_grad():
        trunk = split.trunk(pixels)
    model.zero_grad(set_to_none=True)
    out = gradcache_step(model, trunk, tokens, lambda i, t: model_loss(model, i, t), 4,
                         image_encoder=split.head, image_trainable=True)
    got = _grads(model)
    assert out.loss == pytest.approx(loss, rel=1e-5)
    assert set(got) == set(ref) and any(p is not None for p in split.head.parameters())
    for n in ref:
        assert torch.allclose(ref[n], got[n], rtol=1e-4, atol=1e-6), n
