"""Shared fixtures: tiny random models built once per test session, synthetic images."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session", autouse=True)
def _private_cache_dir(tmp_path_factory):
    """Exported query encoders (searchkit.encoders.fast_query) go to a per-session cache."""
    os.environ["SEARCHKIT_CACHE_DIR"] = str(tmp_path_factory.mktemp("searchkit-cache"))


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    """A tiny random CLIP (width 32, 2 layers, 32 px) saved with its processor."""
    from searchkit.testing import make_tiny_clip
    return make_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def tiny_encoder(tiny_clip_dir):
    from searchkit.encoders import load_encoder
    return load_encoder(str(tiny_clip_dir))


@pytest.fixture
def small_pages(monkeypatch):
    """Libraries made from here on have 4 KiB SQLite pages, where the rows a test adds need
    new pages: the full-disk tests cap a database at the pages it has (16 KiB pages, the
    default for new libraries, keep room for those few rows)."""
    from searchkit import store
    monkeypatch.setattr(store, "PAGE_SIZE", 4096)
