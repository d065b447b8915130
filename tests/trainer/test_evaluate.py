"""Evaluation caches: reused while the weights are the same, recomputed when they change."""

import numpy as np
import torch
from PIL import Image

from searchkit.encoders import load_encoder
from searchkit.trainer.evaluate import ImageVectorCache, embed_pair_images, encode_images


def test_cached_vectors_equal_fresh_ones_and_follow_weight_changes(tiny_clip_dir, shapes_data):
    enc = load_encoder(str(tiny_clip_dir))
    pairs = shapes_data.validation.pairs[:10]
    fresh = embed_pair_images(enc, pairs)
    assert np.allclose(fresh, enc.encode_images([Image.open(p.image)
                                                 for p in pairs]), atol=1e-5)
    cache = ImageVectorCache()
    assert np.allclose(embed_pair_images(enc, pairs, cache, "v"), fresh, atol=1e-5)
    with torch.no_grad():   # the head changes: trunk outputs are reused, vectors follow
        enc.model.hf.visual_projection.weight.mul_(-1)
    assert np.allclose(embed_pair_images(enc, pairs, cache, "v"), -fresh, atol=1e-5)
    with torch.no_grad():   # the trunk changes: everything is recomputed
        enc.model.hf.vision_model.post_layernorm.bias.add_(1.0)
    assert np.allclose(embed_pair_images(enc, pairs, cache, "v"), embed_pair_images(enc, pairs),
                       atol=1e-5)


def test_unreadable_images_are_reported_not_raised(tiny_clip_dir, tmp_path):
    enc = load_encoder(str(tiny_clip_dir))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"junk")
    Image.new("RGB", (20, 20), (9, 9, 9)).save(tmp_path / "ok.png")
    out = encode_images(enc, [str(bad), str(tmp_path / "ok.png")], ImageVectorCache(), "x")
    assert out.kept == [1] and out.skipped[0][0] == 0 and out.vectors.shape == (1, enc.dim)


def test_trunk_outputs_persist_on_disk(tiny_clip_dir, shapes_data, tmp_path, monkeypatch):
    import searchkit.trainer.evaluate as ev
    enc = load_encoder(str(tiny_clip_dir))
    pairs = shapes_data.validation.pairs[:6]
    first = embed_pair_images(enc, pairs, ImageVectorCache(tmp_path), "v")
    assert len(list(tmp_path.glob("trunk-*.pt"))) == 1

    def boom(*a, **k):
        raise AssertionError("recomputed")
    monkeypatch.setattr(ev, "_run_images", boom)
    again = embed_pair_images(enc, pairs, ImageVectorCache(tmp_path), "v")
    assert np.array_equal(first, again)
    with torch.no_grad():
        enc.model.hf.vision_model.post_layernorm.bias.add_(1.0)
    try:
        embed_pair_images(enc, pairs, ImageVectorCache(tmp_path), "v")
    except AssertionError as e:
        assert "recomputed" in str(e)
    else:
        raise AssertionError("changed weights reused a stale cache")
