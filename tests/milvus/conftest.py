"""A real Milvus standalone server for integration tests (the PyPI package ``milvus``, 2.3.x).

``milvus_server`` starts one server per test session from the binary the ``milvus`` wheel ships
(install ``searchkit[milvus-server]``; the ``test`` extra includes it), with:

- every listen port chosen free by the kernel (two sessions, or a developer's own Milvus on
  19530, do not collide);
- the embedded etcd's client and peer URLs and every component's advertised address on
  127.0.0.1. Milvus 2.3's gRPC servers and its metrics/health HTTP server listen on ``:PORT``
  (all interfaces) and have no listen-address setting in this version: they are on free,
  random ports and the server lives only as long as the test session;
- its data, logs and unpacked binary in a temporary directory;
- a bounded wait until ``/healthz`` answers OK (the server process dying ends the wait at once,
  with the end of its log in the error);
- a stop that always runs (``finally``): SIGTERM, a bounded wait, then SIGKILL of the server and
  of any process it started.

Only tests marked ``@pytest.mark.integration`` use it.
"""

from __future__ import annotations

import os
import platform
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 5.0           # a graceful stop (flushing segments) may take minutes: data here is throwaway
# the components of a standalone server whose advertised address ("ip") the config sets
COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord",
              "dataNode")
ETCD_NAME = "searchkit-test"


@dataclass(frozen=True)
class MilvusServerInfo:
    """Where the test server answers."""
    host: str
    port: int
    health_port: int
    data_dir: Path
    pid: int

    def uri(self, collection: str) -> str:
        """The searchkit library location of ``collection`` on this server."""
        return f"milvus://{self.host}:{self.port}/{collection}"

    @property
    def client_uri(self) -> str:
        """What ``pymilvus.MilvusClient(uri=...)`` takes."""
        return f"http://{self.host}:{self.port}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def etcd_config(path: Path, client_port: int, peer_port: int) -> Path:
    """The embedded etcd's own config: client and peer URLs on loopback and free ports (its
    defaults are localhost:2379/2380 whatever milvus.yaml says, so a second server fails)."""
    client, peer = f"http://{LOOPBACK}:{client_port}", f"http://{LOOPBACK}:{peer_port}"
    path.write_text(
        f"name: {ETCD_NAME}\n"
        f"listen-client-urls: {client}\nadvertise-client-urls: {client}\n"
        f"listen-peer-urls: {peer}\ninitial-advertise-peer-urls: {peer}\n"
        f"initial-cluster: {ETCD_NAME}={peer}\n", encoding="utf-8")
    return path


def server_config(data_dir: Path):
    """A MilvusServerConfig with free ports, loopback addresses and its data in ``data_dir``."""
    from milvus import MilvusServerConfig
    config = MilvusServerConfig(data_dir=str(data_dir))
    ports = {key: free_port() for key in config.configurable_items if key.endswith("_port")}
    config.update(**ports)
    for component in COMPONENTS:
        config.set(f"{component}.ip", LOOPBACK)
    return config


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set environment variables while the server process is started (it copies them)."""
    old = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def log_tail(data_dir: Path, lines: int = 15) -> str:
    tails = []
    for name in ("milvus-stderr.log", "milvus-stdout.log"):
        log = data_dir / "logs" / name
        if log.exists():
            text = log.read_text(encoding="utf-8", errors="replace").splitlines()
            tails.append(f"--- {log}\n" + "\n".join(text[-lines:]))
    return "\n".join(tails)


def wait_healthy(process: subprocess.Popen, health_port: int, data_dir: Path) -> None:
    """Until the health endpoint answers OK, at most START_TIMEOUT_S."""
    url = f"http://{LOOPBACK}:{health_port}/healthz"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Milvus exited with {process.returncode} while starting\n"
                               + log_tail(data_dir))
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if b"OK" in response.read():
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"Milvus not healthy after {START_TIMEOUT_S:.0f} s\n" + log_tail(data_dir))


def descendants(pid: int) -> list[int]:
    """The processes started (directly or not) by ``pid``, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def stop_process_tree(process: subprocess.Popen) -> None:
    """SIGTERM, a bounded wait, then SIGKILL for the server and whatever it started."""
    if process.poll() is None:
        started = descendants(process.pid)
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)
        for pid in started:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def require_server_package() -> None:
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the PyPI Milvus server ships a Linux x86_64 binary only")
    pytest.importorskip("milvus", reason="the Milvus server package is not installed "
                                         "(pip install 'searchkit[milvus-server]')")
    pytest.importorskip("pymilvus", reason="pymilvus is not installed "
                                           "(pip install 'searchkit[milvus]')")


@contextmanager
def running_milvus(data_dir: Path) -> Iterator[MilvusServerInfo]:
    """A Milvus standalone server on loopback with its data in ``data_dir``, stopped on exit."""
    from milvus import MilvusServer
    config = server_config(data_dir)
    etcd = etcd_config(data_dir / "etcd.yaml", config.configs["etcd_port"], free_port())
    server = MilvusServer(config, wait_for_started=False)
    server.webservice_port = free_port()   # the health/metrics HTTP port (METRICS_PORT)
    try:
        with environment(ETCD_CONFIG_PATH=str(etcd)):
            server.start()
        process = server.server_proc
        wait_healthy(process, server.webservice_port, data_dir)
        yield MilvusServerInfo(host=LOOPBACK, port=server.listen_port,
                               health_port=server.webservice_port, data_dir=data_dir,
                               pid=process.pid)
    finally:
        if server.server_proc is not None:
            stop_process_tree(server.server_proc)
        server.stop()   # closes its log files (the process is gone by now)


def pytest_collection_modifyitems(config, items):
    """A test that starts the server must be an integration test (the fast tier skips those)."""
    unmarked = [item.nodeid for item in items
                if "milvus_server" in getattr(item, "fixturenames", ())
                and item.get_closest_marker("integration") is None]
    if unmarked:
        raise pytest.UsageError("these tests use milvus_server but are not marked "
                                "@pytest.mark.integration: " + ", ".join(unmarked))


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory) -> Iterator[MilvusServerInfo]:
    """One real Milvus standalone server for the session's integration tests."""
    require_server_package()
    with running_milvus(tmp_path_factory.mktemp("milvus-server")) as info:
        yield info
