"""A library on a real Milvus standalone server (the PyPI ``milvus`` package, started on
127.0.0.1 by tests/milvus/conftest.py): the same commands answer as on a local library, index
runs follow changed, added, moved and deleted files, and an indexer killed with SIGKILL in the
middle of a write loses no acknowledged row and duplicates none when the run is resumed.

What Milvus Lite cannot show: the server's "Bounded" consistency hides fresh writes, and its
``insert`` of an existing key duplicates the row (the engine must upsert by a stable key)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from searchkit.cli.main import app
from tests.helpers import make_photos, solid

pytestmark = pytest.mark.integration   # a server process, and indexers killed with SIGKILL

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("index_driver.py")
N_KILLED = 120            # photos in the SIGKILL test (index_driver: 16 files per batch)
KILL_IN_BATCH = 3         # killed while the third batch is being written
PATH_FIELD = "path"       # the collection's field holding a row's path
QUERY_LIMIT = 16_384      # the most rows one Milvus query returns


@pytest.fixture(autouse=True)
def _state_dir(tmp_path, monkeypatch):
    """Write locks of Milvus libraries in this test's folder (the indexer processes inherit it)."""
    monkeypatch.setenv("SEARCHKIT_STATE_DIR", str(tmp_path / "state"))


# ---- the CLI and what the collection holds ----------------------------------------------------
def ok(*args) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stdout


def hits(library, *command) -> dict[str, float]:
    """Path -> score of a search command's hits; its hits come best first."""
    found = json.loads(ok(*command, "--library", library, "--json"))
    scores = [h["score"] for h in found]
    assert scores == sorted(scores, reverse=True)
    return {h["path"]: h["score"] for h in found}


def same_answers(local: dict[str, float], milvus: dict[str, float]) -> None:
    assert milvus.keys() == local.keys()
    for path, score in local.items():
        assert milvus[path] == pytest.approx(score, abs=1e-4), path


def stored_paths(server, collection: str) -> list[str]:
    """The path of every row of the collection, read with Strong consistency (the server's
    default, Bounded, may not show the last writes yet)."""
    from pymilvus import MilvusClient
    client = MilvusClient(uri=server.client_uri)
    try:
        rows = client.query(collection, filter=f'{PATH_FIELD} != ""',
                            output_fields=[PATH_FIELD], limit=QUERY_LIMIT,
                            consistency_level="Strong")
    finally:
        client.close()
    return [row[PATH_FIELD] for row in rows]


def files_on_disk(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.is_file())


def holds_each_file_once(server, collection: str, folder: Path) -> None:
    assert sorted(stored_paths(server, collection)) == files_on_disk(folder)


# ---- index, search, change, index, search ------------------------------------------------------
def test_index_runs_on_a_milvus_server_follow_changes_like_a_local_library(
        milvus_server, tmp_path, tiny_clip_dir):
    photos = tmp_path / "photos"
    made = make_photos(photos, 20)
    solid(photos / "blue.png", (0, 0, 255), (64, 64))
    libraries = (tmp_path / "local", milvus_server.uri("follow"))

    def index_both() -> None:
        for library in libraries:
            ok("index", photos, "--library", library, "--model", tiny_clip_dir)

    def answers(library) -> dict[str, float]:
        return hits(library, "search", "a blue square", "-k", "100")

    index_both()
    same_answers(answers(libraries[0]), answers(libraries[1]))
    holds_each_file_once(milvus_server, "follow", photos)

    (photos / "blue.png").unlink()                                  # deleted
    solid(photos / "red.png", (255, 0, 0), (64, 64))                # added
    made[1].rename(photos / "moved.jpg")                            # moved
    Image.new("RGB", (48, 40), (0, 160, 0)).save(made[2])           # changed in place
    index_both()

    found = answers(libraries[1])
    assert str(photos / "blue.png") not in found and str(made[1]) not in found
    assert {str(photos / "red.png"), str(photos / "moved.jpg"), str(made[2])} <= found.keys()
    same_answers(answers(libraries[0]), found)
    nearest = hits(libraries[1], "similar", photos / "red.png", "-k", "1")
    assert list(nearest) == [str(photos / "red.png")]
    assert nearest[str(photos / "red.png")] == pytest.approx(1.0, abs=1e-4)
    holds_each_file_once(milvus_server, "follow", photos)
    status = json.loads(ok("status", "--library", libraries[1], "--json"))
    assert status["indexed"] == len(files_on_disk(photos))


# ---- SIGKILL mid-run ---------------------------------------------------------------------------
def start_driver(library: str, model_dir: Path, folder: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, str(DRIVER), library, str(model_dir), str(folder)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def acknowledged_until_batch(proc: subprocess.Popen, batch: int) -> list[str]:
    """Read the driver's reports until it starts writing batch number ``batch``; the paths of
    the rows of every batch the engine acknowledged before it."""
    acknowledged, started = [], 0
    for line in proc.stdout:
        word, _, paths = line.strip().partition(" ")
        if word == "applied":
            acknowledged += json.loads(paths)
        elif word == "applying":
            started += 1
            if started == batch:
                return acknowledged
    raise AssertionError(f"the index run ended before batch {batch} (exit {proc.wait()})")


def test_indexer_killed_mid_write_on_a_milvus_server_loses_and_duplicates_nothing(
        milvus_server, tmp_path, tiny_clip_dir):
    photos = tmp_path / "photos"
    make_photos(photos, N_KILLED)
    library = milvus_server.uri("killed")

    proc = start_driver(library, tiny_clip_dir, photos)
    try:
        acknowledged = acknowledged_until_batch(proc, KILL_IN_BATCH)
    finally:
        proc.kill()                                       # SIGKILL, a write in flight
        proc.wait(timeout=30)
    assert acknowledged

    after_kill = stored_paths(milvus_server, "killed")
    assert len(after_kill) == len(set(after_kill))        # no row twice
    assert set(acknowledged) <= set(after_kill)           # no acknowledged row lost
    assert len(after_kill) < N_KILLED                     # the kill landed mid-run

    resumed = subprocess.run([sys.executable, "-m", "searchkit.cli.main", "index", str(photos),
                              "--library", library], cwd=ROOT, capture_output=True, text=True,
                             timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert resumed.returncode == 0, resumed.stderr
    holds_each_file_once(milvus_server, "killed", photos)
    status = json.loads(ok("status", "--library", library, "--json"))
    assert status["indexed"] == N_KILLED
