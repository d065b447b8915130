"""Trainer test fixtures: one torch thread (the machine is shared; oversubscription is slow)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory):
    from searchkit.trainer.synthetic import write_shapes_dataset
    return write_shapes_dataset(tmp_path_factory.mktemp("shapes"), {"train": 10, "validation": 2})


@pytest.fixture(scope="session")
def shapes_data(shapes_dir):
    from searchkit.trainer.data import load_pairs
    return load_pairs(str(shapes_dir))


@pytest.fixture()
def no_peft(monkeypatch):
    """peft as if not installed (the README's main install): importing it fails, and modules an
    earlier test imported are hidden."""
    import sys
    for name in [n for n in sys.modules if n == "peft" or n.startswith("peft.")] + ["peft"]:
        monkeypatch.setitem(sys.modules, name, None)
