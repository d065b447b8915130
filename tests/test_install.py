"""Every user command, run in a fresh virtual environment made by exactly the README's main
install (its Quick start ``pip install`` steps, read from README.md).

The test extra installs optional packages (peft, ...), so the rest of the suite cannot see a
command that needs a package the main install lacks: `finetune` once trained for 30 minutes
and then died importing peft (issue 15). Here each command runs as a user runs it, on the
repository's sample images and the bundled default model, and must exit 0 without a traceback.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples" / "images"
CAPTIONS = SAMPLES / "captions.jsonl"
# a one-step finetune: half of the 46 captioned samples train, in one batch
ONE_STEP = ("--epochs", "1", "--holdout", "0.5", "--batch-size", "32")


def readme_install_steps() -> list[list[str]]:
    """The ``pip install ...`` steps of the README's Quick start command, in order."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    steps = [shlex.split(s) for s in " ".join(block.split()).split("&&")]
    return [s for s in steps if s[:2] == ["pip", "install"]]


@dataclass
class Env:
    """A virtual environment and how to run its ``searchkit``."""

    bin: Path
    env: dict[str, str]
    cwd: Path

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run([str(self.bin / "searchkit"), *map(str, args)], cwd=self.cwd,
                           env=self.env, capture_output=True, text=True, timeout=600)
        text = p.stdout + p.stderr
        assert "Traceback" not in text, text
        if check:
            assert p.returncode == 0, f"searchkit {' '.join(map(str, args))}:\n{text}"
        return p


def _clean_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "SEARCHKIT_LIBRARY", "SEARCHKIT_TOKEN")}
    env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


@pytest.fixture(scope="module")
def readme_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("readme-install")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = _clean_env(venv)
    steps = readme_install_steps()
    assert any("-e" in s for s in steps), f"no editable install in the README: {steps}"
    for step in steps:
        p = subprocess.run([str(venv / "bin" / "python"), "-m", *step], cwd=REPO, env=env,
                           capture_output=True, text=True)
        assert p.returncode == 0, f"{shlex.join(step)}:\n{p.stdout[-3000:]}{p.stderr[-3000:]}"
    work = root / "work"
    work.mkdir()
    yield Env(venv / "bin", env, work)
    shutil.rmtree(venv, ignore_errors=True)      # 2 GB, mostly torch


@pytest.fixture(scope="module")
def library(readme_env) -> Path:
    lib = readme_env.cwd / "library"
    p = readme_env.run("index", SAMPLES, "--library", lib)
    assert "added 46" in p.stdout + p.stderr, p.stdout + p.stderr
    return lib


COMMANDS = {"index", "search", "similar", "classify", "evaluate", "finetune", "serve", "status",
            "check", "forget", "models", "import", "export", "dupes"}


def test_every_cli_command_is_run_here():
    import typer.main

    from searchkit.cli.main import app
    assert set(typer.main.get_command(app).commands) <= COMMANDS


def test_the_install_is_the_readme_one_without_test_packages(readme_env):
    for module in ("peft", "pytest"):
        p = subprocess.run([str(readme_env.bin / "python"), "-c",
                            f"import importlib.util; print(importlib.util.find_spec({module!r}))"],
                           env=readme_env.env, capture_output=True, text=True, check=True)
        assert p.stdout.strip() == "None", f"{module} is installed: {p.stdout}"


def test_search_similar_status_check_models(readme_env, library):
    p = readme_env.run("search", "a red apple", "--library", library, "--json")
    assert len(json.loads(p.stdout)) == 10
    p = readme_env.run("similar", SAMPLES / "bicycle.jpg", "--library", library, "--json")
    assert json.loads(p.stdout)[0]["path"] == str(SAMPLES / "bicycle.jpg")
    assert json.loads(readme_env.run("status", "--library", library, "--json").stdout)
    readme_env.run("check", "--library", library)
    readme_env.run("models")


def test_export_then_import_into_a_new_library(readme_env, library, tmp_path):
    parquet = tmp_path / "embeddings.parquet"
    readme_env.run("export", parquet, "--library", library)
    readme_env.run("import", parquet, "--library", tmp_path / "copy")
    st = json.loads(readme_env.run("status", "--library", tmp_path / "copy", "--json").stdout)
    assert st["indexed"] == 46


def test_dupes(readme_env, library):
    p = readme_env.run("dupes", "--library", library, "--json")
    assert isinstance(json.loads(p.stdout), (list, dict))


def test_forget(readme_env, tmp_path):
    folder = tmp_path / "two"
    folder.mkdir()
    for name in ("cat.jpg", "frog.jpg"):
        (folder / name).write_bytes((SAMPLES / name).read_bytes())
    readme_env.run("index", folder, "--library", tmp_path / "lib")
    readme_env.run("forget", folder, "--library", tmp_path / "lib")


def test_classify(readme_env):
    p = readme_env.run("classify", SAMPLES / "cat.jpg", SAMPLES / "bicycle.jpg", "--labels",
                       "cat,bicycle,apple", "--json")
    assert p.stdout.strip()


def test_finetune_one_step_then_evaluate_the_export(readme_env):
    run = readme_env.cwd / "finetuned"
    readme_env.run("finetune", CAPTIONS, "--output", run, *ONE_STEP)
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["losses"]) == 1
    readme_env.run("evaluate", CAPTIONS, "--model", run / "model", "--json")


def test_finetune_lora_names_the_missing_package_before_any_work(readme_env):
    run = readme_env.cwd / "lora"
    p = readme_env.run("finetune", CAPTIONS, "--output", run, "--mode", "lora", *ONE_STEP,
                       check=False)
    assert p.returncode != 0
    assert p.stderr.strip().splitlines()[-1] == ("error: mode 'lora' needs the peft package, "
                                                 "which is not installed: pip install peft")
    assert not run.exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str, deadline: float, server: subprocess.Popen) -> dict:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.loads(r.read())
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_serve_answers_status(readme_env, library):
    port = _free_port()
    server = subprocess.Popen([str(readme_env.bin / "searchkit"), "serve", "--library",
                               str(library), "--host", "127.0.0.1", "--port", str(port)],
                              cwd=readme_env.cwd, env=readme_env.env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        status = _get_json(f"http://127.0.0.1:{port}/api/status", time.monotonic() + 120, server)
        assert status["indexed"] == 46
    finally:
        server.send_signal(signal.SIGINT)   # Ctrl-C
        out, _ = server.communicate(timeout=60)
    assert server.returncode == 0 and "Traceback" not in out, out
