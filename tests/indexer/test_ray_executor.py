"""`searchkit index --executor ray`: embedding in a Ray Data actor pool (issue 13).

The Ray tests start a local Ray instance (loopback, 2 CPUs, no dashboard, usage stats off)
through the executor itself, which shuts it down at the end of each run; each test checks that
nothing of it is left running.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from searchkit import Library
from searchkit.cli.main import app
from searchkit.encoders import load_encoder
from searchkit.indexer import Indexer, writer
from searchkit.indexer.executors import RayOptions, make_executor
from searchkit.indexer.prepare import Decoder
from searchkit.store import STATUS_OK, File
from tests.helpers import make_photos, solid


@pytest.fixture
def lib_factory(tmp_path, tiny_encoder):
    def make(name: str) -> Library:
        return Library.open(tmp_path / name, encoder=tiny_encoder, create=True)
    return make


def ray_executor(**options):
    pytest.importorskip("ray")
    return make_executor("ray", RayOptions(**options))


def children() -> set[tuple[int, str]]:
    """This process's child processes (pid, name), from /proc (Linux)."""
    out = set()
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text() if entry.isdigit() else ""
        except OSError:  # gone meanwhile
            continue
        if stat and int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
            out.add((int(entry), stat.split("(", 1)[1].rsplit(")", 1)[0]))
    return out


@pytest.fixture
def no_ray_left():
    """The test's runs must shut their Ray instance down: no Ray session, and none of the
    processes it started (gcs_server, raylet, ...) still running."""
    before = children()
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():  # stop it all the same, then fail
        ray.shutdown()
        pytest.fail("the Ray executor left Ray running")
    assert children() <= before


def vectors(lib: Library) -> dict[str, np.ndarray]:
    """Every stored file's vector by path; a path stored twice fails here."""
    with lib.store.session() as s:
        files = [(f.id, f.path, f.status) for f in s.scalars(select(File))]
    paths = [path for _, path, _ in files]
    assert len(paths) == len(set(paths))
    return {path: lib.stored_vector(i) for i, path, status in files if status == STATUS_OK}


def assert_same_vectors(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for path in a:
        np.testing.assert_allclose(a[path], b[path], atol=1e-6, err_msg=path)


# ---- fast: the CLI's choices ---------------------------------------------------------------
def test_executor_ray_without_ray_installed_is_one_clear_line(tmp_path, monkeypatch):
    make_photos(tmp_path / "p", 2)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    r = CliRunner().invoke(app, ["index", str(tmp_path / "p"), "--library", str(tmp_path / "lib"),
                                 "--executor", "ray"])
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [
        "error: the ray executor needs Ray: pip install 'searchkit[ray]'"]
    assert not (tmp_path / "lib").exists()  # refused before anything was written


def test_unknown_executor_is_one_clear_line(tmp_path):
    make_photos(tmp_path / "p", 2)
    r = CliRunner().invoke(app, ["index", str(tmp_path / "p"), "--library", str(tmp_path / "lib"),
                                 "--executor", "spark"])
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [
        "error: unknown executor 'spark': use one of local, ray"]
    assert not (tmp_path / "lib").exists()


def test_ray_options_without_the_ray_executor_are_an_error(tmp_path):
    make_photos(tmp_path / "p", 2)
    r = CliRunner().invoke(app, ["index", str(tmp_path / "p"), "--library", str(tmp_path / "lib"),
                                 "--ray-actors", "2"])
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [
        "error: --ray-address, --ray-batch-size and --ray-actors need --executor ray"]


def test_a_ray_worker_refuses_a_model_that_is_not_the_librarys(tiny_clip_dir, tiny_encoder):
    from searchkit.errors import ModelMismatchError
    from searchkit.indexer.ray_executor import EmbedJob
    job = EmbedJob(str(tiny_clip_dir), tiny_encoder.fingerprint(), 10**8, "cpu", 1)
    assert job.load().fingerprint() == tiny_encoder.fingerprint()
    with pytest.raises(ModelMismatchError, match="on a Ray worker is not the library's"):
        dataclasses.replace(job, fingerprint="0" * 64).load()


def test_unreachable_ray_address_is_one_line_before_anything_is_written(tmp_path):
    """Ray itself waits minutes for a cluster that is not there."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    make_photos(tmp_path / "p", 2)
    r = CliRunner().invoke(app, ["index", str(tmp_path / "p"), "--library", str(tmp_path / "lib"),
                                 "--executor", "ray", "--ray-address", f"127.0.0.1:{port}"])
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [
        f"error: cannot reach the Ray cluster at 127.0.0.1:{port}: Connection refused"]
    assert not (tmp_path / "lib").exists()


def test_actor_pool_follows_the_cluster():
    from searchkit.indexer.ray_executor import ENCODE_BATCH, GPU_BATCH, Pool
    assert Pool.for_cluster({"CPU": 16.0, "GPU": 4.0}, RayOptions()) == Pool(4, 1, 4, GPU_BATCH)
    assert Pool.for_cluster({"CPU": 2.0}, RayOptions()) == Pool(1, 0, 2, ENCODE_BATCH)
    assert Pool.for_cluster({"CPU": 16.0}, RayOptions()) == Pool(4, 0, 4, ENCODE_BATCH)
    assert Pool.for_cluster({"CPU": 2.0}, RayOptions(batch_size=8, actors=2)) == Pool(2, 0, 1, 8)
    # more actors than GPUs or cores: they share them (else the pool would wait forever)
    assert Pool.for_cluster({"CPU": 2.0, "GPU": 1.0}, RayOptions(actors=4)) == \
        Pool(4, 0.25, 0.5, GPU_BATCH)
    assert Pool.for_cluster({"CPU": 2.0}, RayOptions(actors=4)).threads == 1


def test_a_file_changed_after_the_driver_hashed_it_is_not_embedded(tmp_path, tiny_encoder):
    """The actor checks the content hash the driver claimed: other bytes would give the row a
    vector that is not its content's."""
    from searchkit.fsinfo import content_hash
    from searchkit.indexer.ray_executor import CHANGED, embed_files
    a, b = make_photos(tmp_path, 2)
    decoder = Decoder(tiny_encoder, 10**8)
    hashes = [content_hash(a.read_bytes()), content_hash(b.read_bytes())]
    shutil.copy(a, b)  # b changes after the driver read it
    out = embed_files(tiny_encoder, decoder, [str(a), str(b)], hashes, threads=2)
    assert out[0].error is None and out[0].vector.shape == (tiny_encoder.dim,)
    assert (out[1].vector, out[1].error) == (None, CHANGED)


# ---- Ray in local mode -----------------------------------------------------------------------
@pytest.mark.parametrize("batch_size", [4])
@pytest.mark.usefixtures("no_ray_left")
@pytest.mark.integration  # not slow (~20 s): the fast tier's one Ray run
def test_ray_executor_vectors_equal_the_local_executor(tmp_path, lib_factory, batch_size):
    photos = make_photos(tmp_path / "p", 13)
    shutil.copy(photos[0], tmp_path / "p" / "twin.jpg")
    (tmp_path / "p" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    local, remote = lib_factory("local"), lib_factory("ray")
    r_local = Indexer(local).run([str(tmp_path / "p")])
    r_ray = Indexer(remote, executor=ray_executor(batch_size=batch_size)).run(
        [str(tmp_path / "p")])
    assert (r_ray.added, r_ray.duplicates, r_ray.encoded) == (14, 1, 13)
    assert (r_ray.added, r_ray.duplicates, r_ray.encoded, r_ray.skipped) == \
        (r_local.added, r_local.duplicates, r_local.encoded, r_local.skipped)
    assert_same_vectors(vectors(local), vectors(remote))
    assert len(vectors(remote)) == 14


@pytest.mark.usefixtures("no_ray_left")
@pytest.mark.integration
@pytest.mark.slow
def test_ray_executor_brings_changed_new_moved_and_deleted_files_up_to_date(tmp_path,
                                                                             lib_factory):
    folder = tmp_path / "p"
    photos = make_photos(folder, 8)
    remote, local = lib_factory("ray"), lib_factory("local")
    executor = ray_executor(batch_size=3)
    Indexer(remote, executor=executor).run([str(folder)])
    solid(photos[1], (1, 2, 3), (30, 30))              # changed
    os.remove(photos[2])                               # deleted
    os.rename(photos[3], folder / "moved.jpg")         # moved
    make_photos(folder / "new", 2, offset=50)          # new
    r = Indexer(remote, executor=executor).run([str(folder)])
    assert (r.added, r.updated, r.moved, r.removed, r.encoded) == (2, 1, 1, 1, 3)
    Indexer(local).run([str(folder)])
    assert_same_vectors(vectors(local), vectors(remote))
    again = Indexer(remote, executor=executor).run([str(folder)])
    assert (again.unchanged, again.encoded) == (9, 0)


@pytest.mark.usefixtures("no_ray_left")
@pytest.mark.integration
@pytest.mark.slow
def test_ray_run_interrupted_after_some_batches_resumes_without_loss_or_duplicates(
        tmp_path, lib_factory, monkeypatch):
    folder = tmp_path / "p"
    make_photos(folder, 20)
    remote, local = lib_factory("ray"), lib_factory("local")
    real_flush, flushed = writer.flush, []

    def flush_then_fail(store, changes):
        if len(flushed) == 2:
            raise KeyboardInterrupt  # the user stops the run after two commits
        real_flush(store, changes)
        flushed.append(len(changes))
    monkeypatch.setattr(writer, "flush", flush_then_fail)
    with pytest.raises(KeyboardInterrupt):
        Indexer(remote, executor=ray_executor(batch_size=4), commit_every=4).run([str(folder)])
    kept = vectors(remote)
    assert 0 < len(kept) == sum(flushed) < 20
    monkeypatch.setattr(writer, "flush", real_flush)
    r = Indexer(remote, executor=ray_executor(batch_size=4)).run([str(folder)])
    assert (r.unchanged, r.added, r.encoded) == (len(kept), 20 - len(kept), 20 - len(kept))
    Indexer(local).run([str(folder)])
    assert_same_vectors(vectors(local), vectors(remote))


@pytest.mark.usefixtures("no_ray_left")
@pytest.mark.integration
@pytest.mark.slow
def test_ray_worker_that_dies_costs_only_its_batch(tmp_path, lib_factory, capsys):
    """The first actor dies in its first batch: Ray starts another, which runs that batch again;
    every file is embedded once and stored once."""
    pytest.importorskip("ray")
    from searchkit.indexer.ray_executor import RayExecutor
    folder = tmp_path / "p"
    make_photos(folder, 12)
    marker = str(tmp_path / "died")

    def dying_once(name, device=None):  # runs in the actor (pickled by value)
        enc = load_encoder(name, device=device)
        real = enc.encode_pixels

        def encode_pixels(pixels):
            if not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)
            return real(pixels)
        enc.encode_pixels = encode_pixels
        return enc
    remote, local = lib_factory("ray"), lib_factory("local")
    r = Indexer(remote, executor=RayExecutor(RayOptions(batch_size=4), dying_once)).run(
        [str(folder)])
    assert os.path.exists(marker)
    assert (r.added, r.encoded) == (12, 12)
    assert "Traceback" not in capsys.readouterr().out  # Ray's notice of the retry is logged
    Indexer(local).run([str(folder)])
    assert_same_vectors(vectors(local), vectors(remote))


@pytest.mark.integration
@pytest.mark.usefixtures("no_ray_left")
def test_local_ray_instance_stays_on_loopback_and_ends_with_the_run():
    from searchkit.indexer.ray_executor import import_ray, ray_session
    ray = import_ray()
    with ray_session(ray, None):
        assert [n["NodeManagerAddress"] for n in ray.nodes()] == ["127.0.0.1"]
        assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
        assert ray.cluster_resources()["CPU"] == os.cpu_count()
    assert not ray.is_initialized()
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ or \
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] != "0"  # put back as it was


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.usefixtures("no_ray_left")
def test_ray_workers_with_another_model_end_the_run_with_one_line(tmp_path, lib_factory):
    """An actor whose model is not the library's fails in its constructor, where Ray keeps only
    the text of the error: the run ends with that one line, nothing stored from the workers."""
    pytest.importorskip("ray")
    from searchkit.indexer.ray_executor import RayExecutor, RayRunError
    make_photos(tmp_path / "p", 3)

    def other_weights(name, device=None):
        enc = load_encoder(name, device=device)
        enc.fingerprint = lambda: "f" * 64
        return enc
    remote = lib_factory("ray")
    with pytest.raises(RayRunError) as e:
        Indexer(remote, executor=RayExecutor(RayOptions(), other_weights)).run(
            [str(tmp_path / "p")])
    assert str(e.value).startswith("a Ray worker failed: model ")
    assert "on a Ray worker is not the library's (weights fingerprint ffffffffffff" in str(e.value)
    assert "\n" not in str(e.value)
    assert vectors(remote) == {}


def processes_using(folder: str) -> list[int]:
    """Pids whose command line names ``folder`` or that hold a file open in it (Ray's agents
    rename themselves but keep their logs open), from /proc (Linux)."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        if int(entry) == os.getpid():
            continue
        try:
            named = folder.encode() in Path(f"/proc/{entry}/cmdline").read_bytes()
            fds = [] if named else os.listdir(f"/proc/{entry}/fd")
            holds = any(os.readlink(f"/proc/{entry}/fd/{fd}").startswith(folder) for fd in fds)
        except OSError:  # gone meanwhile, or not ours to look at
            continue
        if named or holds:
            found.append(int(entry))
    return found


@pytest.fixture
def ray_head():
    """A Ray head node of its own (``ray start --head``) on 127.0.0.1, without token
    authentication (Ray's token file stays out of ~/.ray); yields its address and the
    environment a driver needs for it. Stopped afterwards by the pids of the processes that use
    its temp folder (never ``ray stop``, which would stop every Ray on the machine)."""
    import signal
    import socket
    import subprocess
    import tempfile
    import time
    pytest.importorskip("ray")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="skrayhead", dir="/tmp")  # short: Ray's socket paths
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
           "RAY_USAGE_STATS_ENABLED": "0"}
    try:
        subprocess.run([str(Path(sys.executable).parent / "ray"), "start", "--head", "--port",
                        str(port), "--num-cpus", "2", "--include-dashboard=false",
                        "--disable-usage-stats", "--temp-dir", temp],
                       env=env, check=True, capture_output=True, timeout=180)
        yield f"127.0.0.1:{port}", env
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in processes_using(temp):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            for _ in range(50):
                if not processes_using(temp):
                    break
                time.sleep(0.2)
        assert not processes_using(temp)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.integration
@pytest.mark.slow
def test_index_with_ray_address_embeds_on_that_cluster_and_leaves_it_running(
        tmp_path, lib_factory, ray_head, tiny_clip_dir):
    """`searchkit index --executor ray --ray-address`, as a user runs it (its own process)."""
    import subprocess
    from searchkit.indexer.ray_executor import check_reachable
    address, env = ray_head
    make_photos(tmp_path / "p", 6)
    p = subprocess.run([sys.executable, "-m", "searchkit.cli.main", "index", str(tmp_path / "p"),
                        "--library", str(tmp_path / "remote"), "--model", str(tiny_clip_dir),
                        "--executor", "ray", "--ray-address", address, "--ray-batch-size", "4",
                        "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stdout + p.stderr
    report = json.loads(p.stdout)
    assert (report["added"], report["encoded"]) == (6, 6)
    local = lib_factory("local")
    Indexer(local).run([str(tmp_path / "p")])
    assert_same_vectors(vectors(local), vectors(Library.open(tmp_path / "remote")))
    check_reachable(address)  # the run disconnected; the cluster is the user's and still up
