"""Data sources: CSV / JSONL files of path + caption, filters, splits, hold-out."""

import json

import pytest
from PIL import Image

from searchkit.trainer.data import DataConfig, DataError, load_pairs, load_split, with_where


@pytest.fixture()
def files(tmp_path):
    img = tmp_path / "img"
    img.mkdir()
    for i in range(6):
        Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(img / f"{i}.png")
    return tmp_path


def test_csv_with_relative_paths_and_holdout(files):
    rows = ["path,title,src"] + [f"img/{i}.png,item {i},{'a' if i % 2 else 'b'}" for i in range(6)]
    (files / "pairs.csv").write_text("\n".join(rows) + "\n")
    cfg = DataConfig(caption_column="title", holdout=0.34, seed=1)
    data = load_pairs(str(files / "pairs.csv"), cfg)
    assert len(data.train.pairs) == 4 and len(data.validation.pairs) == 2
    assert all(p.image.startswith(str(files / "img")) for p in data.train.pairs)
    only_a = load_pairs(str(files / "pairs.csv"), with_where(cfg, ["src=a"]))
    assert {p.caption for p in only_a.train.pairs + only_a.validation.pairs} == \
        {"item 1", "item 3", "item 5"}
    not_a = load_pairs(str(files / "pairs.csv"), with_where(cfg, ["src!=a"]))
    assert {p.caption for p in not_a.train.pairs + not_a.validation.pairs} == \
        {"item 0", "item 2", "item 4"}
    with pytest.raises(DataError, match="caption column"):
        load_pairs(str(files / "pairs.csv"))
    with pytest.raises(DataError, match="column=value"):
        with_where(cfg, ["nonsense"])


def test_jsonl_file_and_load_split(files):
    with open(files / "pairs.jsonl", "w") as f:
        for i in range(6):
            f.write(json.dumps({"image": str(files / "img" / f"{i}.png"), "text": f"x {i}",
                                "keywords": "red, small"}) + "\n")
    split = load_split(str(files / "pairs.jsonl"))
    assert len(split.pairs) == 6 and split.bad == []
    data = load_pairs(str(files / "pairs.jsonl"), DataConfig(keyword_column="keywords"))
    assert data.train.pairs[0].keywords == ("red", "small")


def test_missing_dataset_is_a_data_error(tmp_path):
    with pytest.raises(DataError):
        load_pairs(str(tmp_path / "nope"))
    with pytest.raises(DataError, match="metadata"):
        load_pairs(str(tmp_path))
