"""Fast text queries: a composite model's text side exported to ONNX and run without torch.

``import torch`` alone takes 2-2.7 s on a small machine, more than the whole budget of a
one-off ``searchkit search "..."`` process. A text query needs only the text tower, its head and
the tokenizer, so after an index run (which has the torch model loaded anyway) searchkit exports
exactly that to ONNX once per model, in the user's cache directory. A later text-only query
runs it with ``onnxruntime`` and never imports torch. Image queries, and any model that is not
a composite one, take the torch path as before.

Safety: an entry is keyed by a *stamp* of every file the model's weights come from (its
config, heads, text patch and tokenizer by content; referenced package files by path, size and
mtime), and records the weights fingerprint it was exported from. It is used only when the stamp
of the model as installed now matches and the fingerprint equals the library's, so a changed
model falls back to torch (which then reports the change). Each export is checked against the
torch encoder on probe texts before it is kept.
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

if TYPE_CHECKING:
    from .composite import CompositeEncoder

log = logging.getLogger(__name__)

CACHE_ENV = "SEARCHKIT_CACHE_DIR"
DISABLE_ENV = "SEARCHKIT_FAST_QUERIES"   # "0" turns the fast path off
ENTRY_FORMAT = 1
MODEL_FILE = "text.onnx"
META_FILE = "meta.json"
PROBE_TEXTS = ("a red bicycle leaning on a wall", "dog", "",
               "two people walking on a beach at sunset with a kite in the sky " * 4)
MAX_EXPORT_ERROR = 1e-4  # max |onnx - torch| over the probe embeddings (unit vectors)


def enabled() -> bool:
    return os.environ.get(DISABLE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def cache_root() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser() / "query-encoders"
    from platformdirs import user_cache_dir
    return Path(user_cache_dir("searchkit")) / "query-encoders"


def _ref_part(ref: str | None, model_dir: Path) -> str:
    if not ref:
        return "none"
    path = cc.resolve_ref(ref, model_dir)
    if ref.startswith(cc.FILE_PREFIX):
        return f"{ref}:{hashlib.sha256(path.read_bytes()).hexdigest()}"
    st = path.stat()  # a package file: hashing ~90 MB would cost more than the query
    return f"{ref}:{path}:{st.st_size}:{st.st_mtime_ns}"


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


class FastTextEncoder:
    """Text -> normalised vectors with onnxruntime; the text half of the :class:`Encoder`
    interface (``encode_texts``, ``dim``, ``name``, ``fingerprint``)."""

    def __init__(self, name: str, directory: Path, meta: dict):
        import onnxruntime as ort
        from tokenizers import Tokenizer
        self.name = name
        self.dim = int(meta["dim"])
        self._fingerprint = str(meta["fingerprint"])
        self.batch_size = 64
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = min(4, os.cpu_count() or 1)
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(directory / MODEL_FILE), opts,
                                            providers=["CPUExecutionProvider"])
        self.tok = Tokenizer.from_file(str(directory / cc.TOKENIZER_FILE))
        pad_id = self.tok.token_to_id("[PAD]")
        self.tok.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")
        self.tok.enable_truncation(max_length=int(meta["max_tokens"]))

    def fingerprint(self) -> str:
        return self._fingerprint

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        texts = [str(t) for t in texts]
        outs = [np.zeros((0, self.dim), np.float32)]
        for i in range(0, len(texts), self.batch_size):
            enc = self.tok.encode_batch(texts[i:i + self.batch_size])
            feed = {"input_ids": np.array([e.ids for e in enc], np.int64),
                    "attention_mask": np.array([e.attention_mask for e in enc], np.int64)}
            outs.append(self.session.run(None, feed)[0].astype(np.float32))
        v = np.concatenate(outs)
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def _entry(model: str, fingerprint: str) -> tuple[Path, dict] | None:
    family, source = resolve(model)
    if family != "composite":
        return None
    directory = entry_dir(model_stamp(source))
    try:
        meta = json.loads((directory / META_FILE).read_text())
    except FileNotFoundError:
        return None
    if meta.get("fingerprint") != fingerprint or meta.get("format") != ENTRY_FORMAT:
        return None
    return directory, meta


def load(model: str, fingerprint: str) -> FastTextEncoder | None:
    """The fast text encoder of ``model`` (a registry name or directory) if one was exported
    for exactly these weights and onnxruntime is installed; otherwise None (use torch)."""
    if not enabled():
        return None
    try:
        found = _entry(model, fingerprint)
        return None if found is None else FastTextEncoder(model, *found)
    except Exception as e:  # noqa: BLE001 - any trouble here only means "use torch"
        log.debug("fast text path unavailable for %s: %s", model, e)
        return None


def available(model: str, fingerprint: str) -> bool:
    """Whether :func:`load` would find an entry (without starting onnxruntime)."""
    try:
        return enabled() and _entry(model, fingerprint) is not None
    except Exception:  # noqa: BLE001
        return False


def _text_module(encoder: "CompositeEncoder"):
    import copy

    import torch

    class TextEmbedding(torch.nn.Module):
        def __init__(self, tower, head):
            super().__init__()
            self.tower, self.head = tower, head

        def forward(self, input_ids, attention_mask):
            return torch.nn.functional.normalize(self.head(self.tower(input_ids, attention_mask)),
                                                 dim=-1)

    model = encoder.model
    return TextEmbedding(copy.deepcopy(model.text_tower), copy.deepcopy(model.text_head)) \
        .float().cpu().eval()


def export(encoder: "CompositeEncoder", model: str) -> Path | None:
    """Export ``encoder``'s text side for ``model`` unless present; returns the entry or None
    (no composite model, onnx/onnxruntime missing, or the export failed its check)."""
    if not enabled():
        return None
    try:
        family, source = resolve(model)
        if family != "composite" or not hasattr(encoder, "tokenizer"):
            return None
        target = entry_dir(model_stamp(source))
        if (target / META_FILE).is_file():
            return target
        import onnx  # noqa: F401  (torch.onnx.export needs it)
        import onnxruntime  # noqa: F401
    except ImportError as e:
        log.info("fast text queries need onnx and onnxruntime (%s)", e)
        return None
    except Exception as e:  # noqa: BLE001
        log.warning("cannot prepare fast text queries for %s: %s", model, e)
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
    try:
        _export_into(encoder, tmp)
        meta = json.loads((tmp / META_FILE).read_text())
        check = FastTextEncoder(model, tmp, meta).encode_texts(PROBE_TEXTS)
        err = float(np.abs(check - encoder.encode_texts(PROBE_TEXTS)).max())
        if not err <= MAX_EXPORT_ERROR:
            raise ValueError(f"exported text encoder differs from torch by {err:.2e}")
        try:
            tmp.rename(target)
        except OSError:  # another process exported it first
            if not (target / META_FILE).is_file():
                raise
        return target
    except Exception as e:  # noqa: BLE001 - never fail the caller over an optimisation
        log.warning("fast text queries disabled for %s: %s", model, e)
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _export_into(encoder: "CompositeEncoder", directory: Path) -> None:
    import warnings

    import torch
    module = _text_module(encoder)
    sample = encoder.tokenizer(list(PROBE_TEXTS[:2]))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (sample["input_ids"], sample["attention_mask"]),
                          str(directory / MODEL_FILE), input_names=["input_ids", "attention_mask"],
                          output_names=["embedding"], opset_version=17, dynamo=False,
                          dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                        "attention_mask": {0: "batch", 1: "tokens"},
                                        "embedding": {0: "batch"}})
    shutil.copyfile(encoder.tokenizer.path, directory / cc.TOKENIZER_FILE)
    meta = {"format": ENTRY_FORMAT, "fingerprint": encoder.fingerprint(), "dim": encoder.dim,
            "max_tokens": encoder.config.text.max_tokens}
    (directory / META_FILE).write_text(json.dumps(meta, indent=2))
