"""Measure the spread of the learning proof's recall (tests/trainer/test_loop.py) across model
seeds, data-order seeds and torch thread counts, and what a broken learner scores.

Not a test: run it when changing the proof's settings or bounds and put the numbers in the
test's docstring. ``python -m tests.trainer.measure_learning_margin [--runs 5]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from searchkit.encoders import load_encoder
from searchkit.testing import make_tiny_clip
from searchkit.trainer.data import PairData, PairSplit, load_pairs
from searchkit.trainer.loop import finetune
from searchkit.trainer.synthetic import write_shapes_dataset

from .test_loop import PROOF_CONFIG, PROOF_MODEL


def shuffled_captions(data: PairData, seed: int) -> PairData:
    """Training captions permuted across images: nothing true left to learn."""
    import numpy as np
    pairs = data.train.pairs
    order = np.random.default_rng(seed).permutation(len(pairs))
    train = [replace(p, caption=pairs[j].caption) for p, j in zip(pairs, order)]
    return PairData(PairSplit("train", train), data.validation)


def one_run(root: Path, data: PairData, model_seed: int, train_seed: int, threads: int,
            **overrides) -> dict:
    torch.set_num_threads(threads)
    model_dir = root / f"clip-{model_seed}"
    if not model_dir.exists():
        make_tiny_clip(model_dir, seed=model_seed, **PROOF_MODEL)
    cfg = replace(PROOF_CONFIG, seed=train_seed, **overrides)
    res = finetune(load_encoder(str(model_dir)), data, cfg, output=None)
    return {"model_seed": model_seed, "train_seed": train_seed, "threads": threads,
            **{k: str(v) for k, v in overrides.items()},
            "before_t2i": res.before.domain.text_to_image.r1,
            "t2i": res.after.domain.text_to_image.r1, "i2t": res.after.domain.image_to_text.r1,
            "best_epoch": res.best_epoch,
            "curve_t2i": [e.domain.text_to_image.r1 for e in res.epochs]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5, help="(model seed, data seed) pairs")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = load_pairs(str(write_shapes_dataset(root / "shapes",
                                                   {"train": 10, "validation": 2})))
        rows = [one_run(root, data, s, s, t) for s in range(args.runs) for t in args.threads]
        rows.append(one_run(root, data, 0, 0, 1, lr=0.0))
        rows.append(one_run(root, shuffled_captions(data, 0), 0, 0, 1))
    for r in rows:
        print(json.dumps(r))
    good = [r for r in rows[:-2]]
    for key in ("t2i", "i2t"):
        vals = sorted(r[key] for r in good)
        print(f"{key} R@1 over {len(vals)} runs: min {vals[0]:.2f} median "
              f"{vals[len(vals) // 2]:.2f} max {vals[-1]:.2f}")
    print(f"broken: lr=0 t2i {rows[-2]['t2i']:.2f} i2t {rows[-2]['i2t']:.2f}; shuffled captions "
          f"t2i {rows[-1]['t2i']:.2f} i2t {rows[-1]['i2t']:.2f}")


if __name__ == "__main__":
    main()
