"""SIGKILL the indexer at random moments, and inside an incremental index update (a fold, its
save, before the change log is pruned); the library must open, answer with exactly the stored
vectors and resume."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from searchkit.indexer import Indexer
from searchkit import Library
from searchkit.store import STATUS_OK, File, blob_to_vector
from tests.helpers import make_photos

pytestmark = pytest.mark.integration   # indexer processes killed with SIGKILL

N_PHOTOS = 400
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("crash-photos")
    make_photos(folder, N_PHOTOS, size=(64, 48))
    return folder


def start_driver(lib_dir: Path, model_dir: Path, folder: Path, *extra: str
                 ) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests/indexer/crash_driver.py"),
                             str(lib_dir), str(model_dir), str(folder), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def read_until(proc: subprocess.Popen, line: str, times: int = 1) -> bool:
    """Read the driver's reports until ``line`` came ``times`` times; False if it ended."""
    seen = 0
    for got in proc.stdout:
        seen += got.strip() == line
        if seen == times:
            return True
    return False


def kill_during_index(lib_dir: Path, model_dir: Path, folder: Path, rng: random.Random) -> None:
    """Half the kills at a random moment, half right after a random batch was committed."""
    proc = start_driver(lib_dir, model_dir, folder)
    if rng.random() < 0.5:
        time.sleep(rng.uniform(0.0, 1.0))
    else:
        read_until(proc, "committed", times=rng.randint(1, N_PHOTOS // 8 // 2))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def check_consistent(lib_dir: Path, tiny_encoder) -> int:
    """The invariants after a crash; returns the number of committed ok rows."""
    lib = Library.open(lib_dir, encoder=tiny_encoder)
    with lib.store.session() as s:
        rows = s.execute(select(File.id, File.path, File.vector).where(File.status == STATUS_OK)
                         ).all()
        n_paths = s.execute(select(func.count(func.distinct(File.path)))).scalar_one()
        n_rows = s.execute(select(func.count(File.id))).scalar_one()
    assert n_paths == n_rows  # no path twice
    for _, _, vec in rows:
        assert vec is not None and blob_to_vector(vec).shape == (lib.info.dim,)
    index = lib.search_index()
    assert len(index) == len(rows)
    for row_id, _, vec in rows:
        assert np.array_equal(index.reconstruct(row_id), blob_to_vector(vec))
    if rows:
        from searchkit import Query
        row_id = rows[0][0]
        assert lib.search(Query(like=[(row_id, 1.0)]), k=1)[0].score == pytest.approx(1, abs=1e-5)
    return len(rows)


def run_kills(n: int, tmp_path, tiny_clip_dir, tiny_encoder, photos, seed: int) -> None:
    rng = random.Random(seed)
    midway = 0  # kills that landed after some rows were committed and before the last
    for i in range(n):
        lib_dir = tmp_path / f"lib{i}"
        kill_during_index(lib_dir, tiny_clip_dir, photos, rng)
        if not (lib_dir / "library.db").exists():
            continue  # killed before the library was created: nothing to check
        committed = check_consistent(lib_dir, tiny_encoder)
        midway += 0 < committed < N_PHOTOS
        lib = Library.open(lib_dir, encoder=tiny_encoder)
        report = Indexer(lib).run([str(photos)])
        assert report.encoded == N_PHOTOS - committed  # only what was not committed
        assert check_consistent(lib_dir, tiny_encoder) == N_PHOTOS
    assert midway >= 1  # the test proved something about a run cut short


def test_sigkill_at_random_moments(tmp_path, tiny_clip_dir, tiny_encoder, photos):
    run_kills(3, tmp_path, tiny_clip_dir, tiny_encoder, photos, seed=1)


@pytest.mark.slow
def test_sigkill_at_random_moments_many(tmp_path, tiny_clip_dir, tiny_encoder, photos):
    run_kills(20, tmp_path, tiny_clip_dir, tiny_encoder, photos, seed=2)


@pytest.mark.integration
@pytest.mark.parametrize("kill_at", ["save", "prune", "fold"])
def test_sigkill_during_an_incremental_update_leaves_a_library_that_answers_exactly(
        tmp_path, tiny_clip_dir, tiny_encoder, photos, kill_at):
    lib_dir = tmp_path / "lib"
    first = Library.open(lib_dir, encoder=tiny_encoder, create=True)
    Indexer(first).run([str(photos / "sub0")])     # a saved base, then the rest as a delta
    base = check_consistent(lib_dir, tiny_encoder)
    proc = start_driver(lib_dir, tiny_clip_dir, photos, kill_at)
    assert read_until(proc, "updating")   # every row is committed: the update is under way
    if kill_at == "fold":
        time.sleep(random.Random(3).uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert check_consistent(lib_dir, tiny_encoder) == N_PHOTOS > base
    lib = Library.open(lib_dir, encoder=tiny_encoder)
    report = Indexer(lib).run([str(photos)])
    assert report.encoded == 0 and check_consistent(lib_dir, tiny_encoder) == N_PHOTOS
    assert lib.index_state() == "fresh" and not list(lib_dir.glob("*.tmp"))


KILLED_SAVE = """
import os, signal, sys
from searchkit import Library, index
lib = Library.open(sys.argv[1])
index.os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # dies mid-save
lib.rebuild_index(save=True)
"""


@pytest.mark.integration
def test_sigkill_during_index_save_leaves_a_temp_file_that_the_next_run_removes(
        tmp_path, tiny_encoder):
    folder = tmp_path / "photos"
    make_photos(folder, 12)
    lib = Library.open(tmp_path / "lib", encoder=tiny_encoder, create=True)
    Indexer(lib).run([str(folder)])
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(lib.directory)], env=env)
    assert proc.returncode == -signal.SIGKILL
    strays = list(lib.directory.glob("index.faiss.*.tmp"))
    assert len(strays) == 1 and strays[0].stat().st_size > 0
    again = Library.open(lib.directory, encoder=tiny_encoder)
    assert again.index_state() == "fresh"  # the saved pair was not touched
    assert any("1 temp files" in p for p in again.status().problems)
    Indexer(again).run([str(folder)])
    assert not list(lib.directory.glob("*.tmp"))
    assert Library.open(lib.directory, encoder=tiny_encoder).status().problems == []
