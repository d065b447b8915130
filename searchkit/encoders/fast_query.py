"""Fast queries: a composite model's two encoders exported to ONNX and run without torch.

``import torch`` alone takes 2-2.7 s on a small machine, more than the whole budget of a
one-off ``searchkit search "..."`` process. A query needs only inference: the text tower, the
image tower, their heads, the tokenizer and the (numpy) image transform. So after an index run
(which has the torch model loaded anyway) searchkit exports exactly that to ONNX, once per
model, in the user's cache directory; a later ``searchkit search`` / ``similar`` / ``classify``
runs it with ``onnxruntime`` and never imports torch. Models that are not composite ones
(hub CLIP/SigLIP) take the torch path as before.

Safety: an entry is keyed by a *stamp* of every file the model's weights come from (its
config, heads, text patch and tokenizer by content; tower weights, which are large, by path,
size and modification time), and records the weights fingerprint it was exported from. It is
used only when the stamp of the model as installed now matches (and, for a library, the
fingerprint equals the library's), so a changed model falls back to torch, which then reports
the change. Each export is checked against the torch modules it came from on probe texts and
images before it is kept, and written to disk (fsync) before it is renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from . import composite_config as cc
from .registry import resolve
from .transform import ImageTransform, l2_normalize

if TYPE_CHECKING:
    from .composite import CompositeEncoder

log = logging.getLogger(__name__)

CACHE_ENV = "SEARCHKIT_CACHE_DIR"
DISABLE_ENV = "SEARCHKIT_FAST_QUERIES"   # "0" turns the fast path off
ENTRY_FORMAT = 3
TEXT_FILE = "text.onnx"
IMAGE_FILE = "image.onnx"
META_FILE = "meta.json"
PROBE_TEXTS = ("a red bicycle leaning on a wall", "dog", "",
               "two people walking on a beach at sunset with a kite in the sky " * 4)
PROBE_IMAGES = 3
MAX_EXPORT_ERROR = 1e-4  # max |onnx - torch| over the probe embeddings (unit vectors)
KEEP_ENTRIES = 6  # exports kept in the cache (~115 MB each for searchkit-lite), most recently used


def enabled() -> bool:
    return os.environ.get(DISABLE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def cache_root() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser() / "query-encoders"
    from platformdirs import user_cache_dir
    return Path(user_cache_dir("searchkit")) / "query-encoders"


HASH_LIMIT = 8 << 20  # files up to this size are stamped by content, larger ones by stat


def _ref_part(ref: str | None, model_dir: Path) -> str:
    if not ref:
        return "none"
    path = cc.resolve_ref(ref, model_dir)
    st = path.stat()
    if st.st_size <= HASH_LIMIT:
        return f"{ref}:{hashlib.sha256(path.read_bytes()).hexdigest()}"
    # a tower's weights (~20-90 MB): hashing them would cost more than the query itself
    return f"{ref}:{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def model_stamp(model_dir: str | os.PathLike) -> str:
    """A hash of every file a composite model's weights come from (raises if one is missing)."""
    model_dir = Path(model_dir)
    cfg = cc.read_config(model_dir)
    parts = [f"format {ENTRY_FORMAT}",
             (model_dir / cc.CONFIG_NAME).read_text(),
             _ref_part(cc.FILE_PREFIX + cc.HEADS_FILE, model_dir),
             _ref_part(cfg.text.weights, model_dir),
             _ref_part(cfg.text.patch, model_dir),
             _ref_part(cfg.text.tokenizer, model_dir),
             _ref_part(cfg.image.weights, model_dir)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def entry_dir(stamp: str) -> Path:
    return cache_root() / stamp[:32]


class FastQueryError(RuntimeError):
    """The exported encoder cannot run (e.g. a damaged cache entry): use torch instead."""


class FastQueryEncoder:
    """The query half of the :class:`Encoder` interface (``encode_texts``, ``encode_images``,
    ``preprocess``, ``encode_pixels``, ``dim``, ``name``, ``fingerprint``) on onnxruntime."""

    def __init__(self, name: str, directory: Path, meta: dict):
        import onnxruntime as ort
        self.name = name
        self.directory = directory
        self.dim = int(meta["dim"])
        self._fingerprint = str(meta["fingerprint"])
        self.logit_scale = float(meta["logit_scale"])  # exp of the learned log-temperature
        self.batch_size = 64
        t = meta["image"]
        self.transform = ImageTransform(int(t["size"]), tuple(t["mean"]), tuple(t["std"]),
                                        int(t["resample"]), bool(t["crop"]))
        self._ort = ort
        self._sessions: dict[str, object] = {}
        self.tok = cc.load_tokenizer(directory / cc.TOKENIZER_FILE, int(meta["max_tokens"]))

    def _session(self, file: str):
        """Sessions start on first use: a text query never loads the image tower."""
        if file not in self._sessions:
            opts = self._ort.SessionOptions()
            opts.intra_op_num_threads = min(4, os.cpu_count() or 1)
            opts.log_severity_level = 3
            try:
                self._sessions[file] = self._ort.InferenceSession(
                    str(self.directory / file), opts, providers=["CPUExecutionProvider"])
            except Exception as e:  # noqa: BLE001 - a damaged export: drop it, re-export later
                shutil.rmtree(self.directory, ignore_errors=True)
                raise FastQueryError(f"cannot load {self.directory / file}: {e}") from e
        return self._sessions[file]

    def _run(self, file: str, feed: dict) -> np.ndarray:
        session = self._session(file)
        try:
            return session.run(None, feed)[0]
        except Exception as e:  # noqa: BLE001
            raise FastQueryError(f"{self.directory / file} failed: {e}") from e

    def fingerprint(self) -> str:
        return self._fingerprint

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        texts = [str(t) for t in texts]
        outs = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tok.encode_batch(texts[i:i + self.batch_size])
            outs.append(self._run(TEXT_FILE, {
                "input_ids": np.array([e.ids for e in enc], np.int64),
                "attention_mask": np.array([e.attention_mask for e in enc], np.int64)}))
        return _normalised(outs, self.dim)

    def unknown_texts(self, texts: Sequence[str]) -> list[bool]:
        return cc.unknown_only(self.tok, [str(t) for t in texts])

    def preprocess(self, image) -> np.ndarray:
        return self.transform(image)

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.ascontiguousarray(pixels, np.float32)
        outs = [self._run(IMAGE_FILE, {"pixel_values": pixels[i:i + self.batch_size]})
                for i in range(0, len(pixels), self.batch_size)]
        return _normalised(outs, self.dim)

    def encode_images(self, images) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return self.encode_pixels(np.stack([self.preprocess(im) for im in images]))


def _normalised(outs: list[np.ndarray], dim: int) -> np.ndarray:
    return l2_normalize(np.concatenate(outs)) if outs else np.zeros((0, dim), np.float32)


def supported(model: str) -> bool:
    """Whether ``model`` is of a kind this path can export (a composite model)."""
    try:
        return enabled() and resolve(model)[0] == "composite"
    except Exception:  # noqa: BLE001
        return False


def _entry(model: str, fingerprint: str | None) -> tuple[Path, dict] | None:
    loader, source = resolve(model)
    if loader != "composite":
        return None
    directory = entry_dir(model_stamp(source))
    try:
        meta = json.loads((directory / META_FILE).read_text())
    except FileNotFoundError:
        return None
    if meta.get("format") != ENTRY_FORMAT or fingerprint not in (None, meta.get("fingerprint")):
        return None
    return directory, meta


def load(model: str, fingerprint: str | None = None) -> FastQueryEncoder | None:
    """The fast query encoder of ``model`` (a registry name or directory) if one was exported
    from the model's files as they are now (and, given ``fingerprint``, from exactly those
    weights) and onnxruntime is installed; otherwise None (use torch)."""
    if not enabled():
        return None
    try:
        found = _entry(model, fingerprint)
        if found is None:
            return None
        _touch(found[0] / META_FILE)
        return FastQueryEncoder(model, *found)
    except Exception as e:  # noqa: BLE001 - any trouble here only means "use torch"
        log.debug("fast query path unavailable for %s: %s", model, e)
        return None


def available(model: str, fingerprint: str) -> bool:
    """Whether :func:`load` would find an entry (without starting onnxruntime)."""
    try:
        return enabled() and _entry(model, fingerprint) is not None
    except Exception:  # noqa: BLE001
        return False


def _query_modules(encoder: "CompositeEncoder"):
    """CPU float copies of (text side, image side), each ending in L2 normalisation."""
    import copy

    import torch

    class Normalised(torch.nn.Module):
        def __init__(self, tower, head):
            super().__init__()
            self.tower, self.head = copy.deepcopy(tower), copy.deepcopy(head)

        def forward(self, *inputs):
            return torch.nn.functional.normalize(self.head(self.tower(*inputs)), dim=-1)

    m = encoder.model
    return tuple(Normalised(t, h).float().cpu().eval()
                 for t, h in ((m.text_tower, m.text_head), (m.image_tower, m.image_head)))


def export(encoder: "CompositeEncoder", model: str) -> Path | None:
    """Export ``encoder``'s query side for ``model`` unless present; returns the entry or None
    (no composite model, onnx/onnxruntime missing, or the export failed its check)."""
    if not enabled():
        return None
    try:
        loader, source = resolve(model)
        if loader != "composite" or not hasattr(encoder, "tokenizer"):
            return None
        target = entry_dir(model_stamp(source))
        if (target / META_FILE).is_file():
            return target
        import onnx  # noqa: F401  (torch.onnx.export needs it)
        import onnxruntime  # noqa: F401
    except ImportError as e:
        log.info("fast queries need onnx and onnxruntime (%s)", e)
        return None
    except Exception as e:  # noqa: BLE001
        log.warning("cannot prepare fast queries for %s: %s", model, e)
        return None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
    except OSError as e:
        log.warning("fast queries disabled for %s: cannot write %s (%s)", model, target.parent, e)
        return None
    try:
        want_texts, want_images = _export_into(encoder, tmp)
        fast = FastQueryEncoder(model, tmp, json.loads((tmp / META_FILE).read_text()))
        for what, got, want in (
                ("text", fast.encode_texts(PROBE_TEXTS), want_texts),
                ("image", fast.encode_pixels(_probe_pixels(encoder)), want_images)):
            err = float(np.abs(got - want).max())
            if not err <= MAX_EXPORT_ERROR:
                raise ValueError(f"exported {what} encoder differs from torch by {err:.2e}")
        _fsync_tree(tmp)  # complete on disk before it becomes visible
        try:
            tmp.rename(target)
        except OSError:  # another process exported it first
            if not (target / META_FILE).is_file():
                raise
        prune(keep=KEEP_ENTRIES)
        return target
    except Exception as e:  # noqa: BLE001 - never fail the caller over an optimisation
        log.warning("fast queries disabled for %s: %s", model, e)
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fsync_tree(directory: Path) -> None:
    for path in directory.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _touch(path: Path) -> None:
    try:
        os.utime(path)  # marks the entry as used, for prune()
    except OSError:
        pass


def prune(keep: int = KEEP_ENTRIES) -> list[Path]:
    """Remove all but the ``keep`` most recently used exports; returns what was removed."""
    entries = []
    for d in cache_root().iterdir() if cache_root().is_dir() else []:
        try:
            entries.append(((d / META_FILE).stat().st_mtime, d))
        except OSError:
            continue  # an export in progress, or not ours
    entries.sort(reverse=True)
    removed = [d for _, d in entries[keep:]]
    for d in removed:
        shutil.rmtree(d, ignore_errors=True)
    return removed


def _probe_pixels(encoder: "CompositeEncoder") -> np.ndarray:
    from PIL import Image
    rng = np.random.default_rng(0)
    size = encoder.image_size
    images = [Image.fromarray(rng.integers(0, 256, (size + 7 * i, size, 3), dtype=np.uint8))
              for i in range(PROBE_IMAGES)]
    return np.stack([encoder.preprocess(im) for im in images])


def _export_into(encoder: "CompositeEncoder", directory: Path) -> tuple[np.ndarray, np.ndarray]:
    """Write the entry; return what the exported (CPU, float32) torch modules give for the
    probe texts and images, which the ONNX files must reproduce."""
    import warnings

    import torch
    text, image = _query_modules(encoder)
    tokens = encoder.tokenizer(list(PROBE_TEXTS))
    pixels = torch.from_numpy(_probe_pixels(encoder))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(text, (tokens["input_ids"][:2], tokens["attention_mask"][:2]),
                          str(directory / TEXT_FILE), input_names=["input_ids", "attention_mask"],
                          output_names=["embedding"], opset_version=17, dynamo=False,
                          dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                        "attention_mask": {0: "batch", 1: "tokens"},
                                        "embedding": {0: "batch"}})
        torch.onnx.export(image, (pixels[:1],), str(directory / IMAGE_FILE),
                          input_names=["pixel_values"], output_names=["embedding"],
                          opset_version=17, dynamo=False,
                          dynamic_axes={"pixel_values": {0: "batch"}, "embedding": {0: "batch"}})
        want = (text(tokens["input_ids"], tokens["attention_mask"]).numpy(),
                image(pixels).numpy())
    shutil.copyfile(encoder.tokenizer.path, directory / cc.TOKENIZER_FILE)
    t = encoder.transform
    meta = {"format": ENTRY_FORMAT, "fingerprint": encoder.fingerprint(), "dim": encoder.dim,
            "max_tokens": encoder.config.text.max_tokens,
            "logit_scale": float(encoder.model.logit_scale.detach().float().exp()),
            "image": {"size": t.size, "mean": list(t.mean), "std": list(t.std),
                      "resample": int(t.resample), "crop": t.crop}}
    (directory / META_FILE).write_text(json.dumps(meta, indent=2))
    return want
