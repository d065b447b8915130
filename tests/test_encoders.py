import numpy as np
import pytest
import torch
from PIL import Image

from searchkit.encoders import EncoderError, list_models, load_encoder, resolve


def images():
    noise = np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    return [Image.new("RGB", (50, 40), (255, 0, 0)), Image.new("RGB", (40, 90), (0, 0, 255)),
            Image.fromarray(noise)]


def test_embeddings_equal_transformers_own(tiny_clip_dir, tiny_encoder):
    """Same model + processor as transformers: published quality carries over."""
    from transformers import CLIPModel, CLIPProcessor
    model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    proc = CLIPProcessor.from_pretrained(tiny_clip_dir)
    texts = ["a red bicycle leaning on a wall", "a dog"]
    with torch.no_grad():
        out = model(**proc(images=images(), text=texts, return_tensors="pt", padding=True))
    assert np.allclose(tiny_encoder.encode_images(images()), out.image_embeds.numpy(), atol=1e-5)
    assert np.allclose(tiny_encoder.encode_texts(texts), out.text_embeds.numpy(), atol=1e-5)


def test_outputs_are_normalised_float32_of_one_dim(tiny_encoder):
    for v in (tiny_encoder.encode_images(images()), tiny_encoder.encode_texts(["a", "b c"])):
        assert v.dtype == np.float32 and v.shape[1] == tiny_encoder.dim
        assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert tiny_encoder.encode_texts([]).shape == (0, tiny_encoder.dim)


def test_fingerprint_tracks_weights(tiny_clip_dir, tmp_path):
    from searchkit.testing import make_tiny_clip
    a = load_encoder(str(tiny_clip_dir)).fingerprint()
    assert a == load_encoder(str(tiny_clip_dir)).fingerprint()
    assert a != load_encoder(str(make_tiny_clip(tmp_path / "b", seed=3))).fingerprint()


def test_registry_and_resolution(tmp_path):
    names = {m.name for m in list_models()}
    assert {"clip-vit-b32", "siglip-base"} <= names
    assert resolve("clip-vit-b32") == ("hf", "openai/clip-vit-base-patch32")
    assert resolve("google/siglip-base-patch16-224")[0] == "hf"
    with pytest.raises(EncoderError, match="unknown model"):
        resolve("no-such-model")
    with pytest.raises(EncoderError, match="not a model directory"):
        resolve(str(tmp_path))


def test_siglip_family_adapter():
    from transformers import SiglipConfig, SiglipModel

    from searchkit.encoders.hf import HFDualModel
    cfg = SiglipConfig(text_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                        num_attention_heads=2, vocab_size=99),
                       vision_config=dict(hidden_size=32, intermediate_size=37,
                                          num_hidden_layers=1, num_attention_heads=2,
                                          image_size=32, patch_size=8))
    m = HFDualModel(SiglipModel(cfg).eval())
    assert m.loss_kind == "siglip" and m.logit_bias is not None
    with torch.no_grad():
        assert m.encode_image(torch.randn(2, 3, 32, 32)).shape == (2, 32)
        assert m.encode_text(torch.randint(0, 99, (2, 64))).shape == (2, 32)
    assert m.projection_parameters()
