"""`searchkit finetune`, `evaluate` and `classify` from the command line."""

import json

from PIL import Image
from typer.testing import CliRunner

from cli.main import app


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
