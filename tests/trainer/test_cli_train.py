"""`searchkit finetune`, `evaluate` and `classify` from the command line."""

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from searchkit.cli.main import app


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _json(output: str):
    return json.loads(output[output.index("{"):output.rindex("}") + 1])


def test_evaluate_json_contract(tiny_clip_dir, shapes_dir):
    r = run("evaluate", shapes_dir, "--model", tiny_clip_dir, "--json", "--threads", "1")
    assert r.exit_code == 0, r.output
    body = _json(r.stdout)
    assert body["n"] == 96
    for direction in ("text_to_image", "image_to_text"):
        assert set(body[direction]) == {"R@1", "R@5", "R@10"}
        assert 0 <= body[direction]["R@1"] <= body[direction]["R@5"] <= body[direction]["R@10"] <= 100


def test_finetune_then_evaluate_the_exported_model(tiny_clip_dir, shapes_dir, tmp_path):
    out = tmp_path / "run"
    r = run("finetune", shapes_dir, "--model", tiny_clip_dir, "--output", out, "--epochs", 1,
            "--batch-size", 48, "--chunk-size", 16, "--lr", "1e-3", "--threads", 1,
            "--no-augment", "--json")
    assert r.exit_code == 0, r.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert _json(r.stdout)["final"] == metrics["final"]
    r = run("evaluate", shapes_dir, "--model", out / "model", "--json", "--threads", 1)
    assert r.exit_code == 0, r.output
    assert _json(r.stdout) == metrics["final"]["domain"]


def test_finetune_errors_are_one_line(tiny_clip_dir, tmp_path):
    for args in (["finetune", tmp_path / "nope", "--output", tmp_path / "o", "--model",
                  tiny_clip_dir],
                 ["finetune", tmp_path, "--output", tmp_path / "o", "--model", tiny_clip_dir],
                 ["evaluate", tmp_path, "--model", tiny_clip_dir]):
        r = run(*args)
        assert r.exit_code != 0 and "Traceback" not in r.output
        lines = [ln for ln in r.output.splitlines() if ln.strip()]
        assert lines[-1].startswith("error:"), r.output


def test_classify_accuracy_json(tiny_clip_dir, tmp_path):
    for name, rgb in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
        (tmp_path / name).mkdir()
        Image.new("RGB", (16, 16), rgb).save(tmp_path / name / "a.png")
    (tmp_path / "blue" / "junk.jpg").write_bytes(b"nope")
    r = run("classify", tmp_path, "--accuracy", "--model", tiny_clip_dir, "--json")
    assert r.exit_code == 0, r.output
    body = _json(r.stdout)
    assert body["n"] == 2 and body["top5"] == 100.0 and body["top1"] in (0.0, 50.0, 100.0)
    assert "junk.jpg" in r.output
    r = run("classify", tmp_path / "red" / "a.png", "--labels", "red,blue", "--model",
            tiny_clip_dir)
    assert r.exit_code == 0 and r.stdout.split()[0] in ("red", "blue")


TINY_RUN = ("--epochs", 1, "--batch-size", 48, "--chunk-size", 16, "--lr", "1e-3", "--threads", 1,
            "--no-augment")


def _last_line(output: str) -> str:
    return [ln for ln in output.splitlines() if ln.strip()][-1]


def test_lora_without_peft_fails_before_any_work(no_peft, tiny_clip_dir, shapes_dir, tmp_path):
    out = tmp_path / "run"
    r = run("finetune", shapes_dir, "--model", tiny_clip_dir, "--output", out, "--mode", "lora",
            *TINY_RUN)
    assert r.exit_code != 0 and "Traceback" not in r.output, r.output
    assert _last_line(r.output) == ("error: mode 'lora' needs the peft package, which is not "
                                    "installed: pip install peft")
    assert "reading the dataset" not in r.output and not out.exists()


def test_default_finetune_without_peft_exports_the_model(no_peft, tiny_clip_dir, shapes_dir,
                                                         tmp_path):
    out = tmp_path / "run"
    r = run("finetune", shapes_dir, "--model", tiny_clip_dir, "--output", out, *TINY_RUN)
    assert r.exit_code == 0, r.output
    assert (out / "metrics.json").is_file()
    r = run("evaluate", shapes_dir, "--model", out / "model", "--json", "--threads", 1)
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("failure, code", [(OSError(28, "No space left on device"), 1),
                                           (KeyboardInterrupt(), 130)])
def test_late_failure_keeps_the_checkpoint_and_says_how_to_resume(
        failure, code, tiny_clip_dir, shapes_dir, tmp_path, monkeypatch):
    import searchkit.trainer.loop
    out = tmp_path / "run"
    args = ("finetune", shapes_dir, "--model", tiny_clip_dir, "--output", out, *TINY_RUN)
    export = searchkit.trainer.loop.export

    def fail_export(*a, **kw):
        raise failure
    monkeypatch.setattr(searchkit.trainer.loop, "export", fail_export)
    r = run(*args)
    assert r.exit_code == code and "Traceback" not in r.output, r.output
    last = out / "checkpoints" / "last.pt"
    assert last.is_file()
    line = _last_line(r.output)
    assert str(last) in line and "--resume" in line, r.output
    if code == 1:
        assert line.startswith("error: OSError: [Errno 28] No space left on device;")
        assert "step 10 of 10" in line
    # resuming exports without training again
    monkeypatch.setattr(searchkit.trainer.loop, "export", export)
    monkeypatch.setattr(searchkit.trainer.loop.Trainer, "_step", None)
    r = run(*args, "--resume", "--json")
    assert r.exit_code == 0, r.output
    assert len(json.loads((out / "metrics.json").read_text())["losses"]) == 10


def test_resume_from_an_unreadable_checkpoint_is_one_line(tiny_clip_dir, shapes_dir, tmp_path):
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"\x80\x02 half a checkpoint")
    r = run("finetune", shapes_dir, "--model", tiny_clip_dir, "--output", tmp_path / "run",
            *TINY_RUN, "--resume")
    assert r.exit_code != 0 and "Traceback" not in r.output, r.output
    line = _last_line(r.output)
    assert line.startswith(f"error: checkpoint {last} cannot be read") and "delete it" in line
