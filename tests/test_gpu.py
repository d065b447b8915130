"""GPU paths: run where a GPU is at hand (CI has none: skipped there with the reason)."""

import numpy as np
import pytest
import torch

from searchkit import index as fi

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
needs_faiss_gpu = pytest.mark.skipif(fi.gpu_count() == 0,
                                     reason="faiss has no GPU here (install the gpu extra)")


@needs_cuda
def test_hub_style_encoder_runs_fp16_on_cuda_and_matches_cpu(tiny_clip_dir):
    from PIL import Image

    from searchkit.encoders import load_encoder
    gpu, cpu = load_encoder(str(tiny_clip_dir)), load_encoder(str(tiny_clip_dir), device="cpu")
    assert gpu.device.startswith("cuda") and gpu.fp16
    assert gpu.fingerprint() == cpu.fingerprint()  # a library moves between machines
    ims = [Image.new("RGB", (40, 40), (200, 10, 10))]
    assert np.allclose(gpu.encode_images(ims), cpu.encode_images(ims), atol=2e-2)
    assert np.allclose(gpu.encode_texts(["a cat"]), cpu.encode_texts(["a cat"]), atol=2e-2)


@needs_faiss_gpu
def test_faiss_search_runs_on_gpu_and_agrees_with_cpu():
    rng = np.random.default_rng(0)
    v = rng.standard_normal((5000, 64)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    ids = np.arange(5000, dtype=np.int64) * 2
    idx = fi.SearchIndex(fi.build(ids, v, kind="flat"), fi.Stamp(0, 5000, 64, "", "flat"))
    assert idx.device == "gpu"
    _, gpu_ids = idx.search(v[3], 10)
    _, cpu_ids = idx.cpu.search(v[3:4], 10)
    assert list(gpu_ids) == list(cpu_ids[0])
    _, filtered = idx.search(v[3], 5, allowed=ids[:100])  # selectors fall back to the CPU copy
    assert set(filtered) <= set(ids[:100])
