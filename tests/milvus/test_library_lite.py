"""Every command on a library kept in Milvus (a Milvus Lite file), against the same commands on
a local library: the same folder gives the same answers, changes of files are followed the same
way, and what only a local library has is refused in one line."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from searchkit.cli.main import app
from tests.helpers import assert_same_ranking, by_score_then_path, make_photos, solid

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")


def run(*args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def ok(*args):
    r = run(*args)
    assert r.exit_code == 0, r.output
    return r


def one_line_error(r, needle: str) -> None:
    assert r.exit_code != 0 and "Traceback" not in r.output, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.output


@pytest.fixture(scope="module")
def two(tmp_path_factory, tiny_clip_dir):
    """The same folder indexed into a local library and into a Milvus Lite one."""
    base = tmp_path_factory.mktemp("engines")
    photos = base / "photos"
    make_photos(photos, 12)
    solid(photos / "blue.png", (0, 0, 255), (64, 64))
    shutil.copy(photos / "blue.png", photos / "blue copy.png")
    local, milvus = base / "local", f"milvus://{base}/lite.db/photos"
    for lib in (local, milvus):
        ok("index", photos, "--library", lib, "--model", tiny_clip_dir)
    return photos, local, milvus


def hits(*args) -> list[tuple[float, str]]:
    """(score, path) best first (see ``by_score_then_path``)."""
    return by_score_then_path([(h["score"], h["path"])
                               for h in json.loads(ok(*args, "--json").stdout)])


@pytest.mark.parametrize("filters", [[], ["--format", "png"], ["--min-width", "50"],
                                     ["--path", "sub1"], ["--format", "jpeg", "--path", "sub2"]])
def test_search_answers_the_same_on_both_engines(two, filters):
    photos, local, milvus = two
    filters = [str(photos / f) if f.startswith("sub") else f for f in filters]
    query = ["search", "a blue square", "-k", "20", *filters]  # all: copies tie at any cutoff
    expected = hits(*query, "--library", local)
    assert expected  # the filter keeps something
    assert_same_ranking(hits(*query, "--library", milvus), expected)


def test_similar_and_status_on_milvus(two):
    photos, local, milvus = two
    assert_same_ranking(hits("similar", photos / "blue.png", "-k", "2", "--library", milvus),
                hits("similar", photos / "blue.png", "-k", "2", "--library", local))
    st = json.loads(ok("status", "--json", "--library", milvus).stdout)
    assert st["indexed"] == 14 and st["directory"] == milvus
    assert st["roots"] == [str(photos)]


def test_index_runs_follow_changes_on_both_engines(tmp_path, tiny_clip_dir):
    photos = tmp_path / "photos"
    made = make_photos(photos, 10)
    libs = [tmp_path / "local", f"milvus://{tmp_path}/lite.db/c"]
    for lib in libs:
        ok("index", photos, "--library", lib, "--model", tiny_clip_dir)
    made[0].unlink()                                   # deleted
    made[1].rename(photos / "renamed.jpg")             # moved
    make_photos(photos / "new", 3, offset=50)          # added
    shutil.copy(made[2], photos / "twin.jpg")          # a duplicate
    reports = [json.loads(ok("index", "--library", lib, "--json").stdout) for lib in libs]
    for r in reports:
        assert (r["added"], r["moved"], r["removed"], r["duplicates"]) == (4, 1, 1, 1), r
    again = [json.loads(ok("index", "--library", lib, "--json").stdout) for lib in libs]
    assert [r["unchanged"] for r in again] == [13, 13]  # a re-run changes nothing
    everything = ["search", "a photo", "-k", "50"]
    local, milvus = (sorted(p for _, p in hits(*everything, "--library", lib)) for lib in libs)
    assert local == milvus and len(milvus) == 13 and str(photos / "renamed.jpg") in milvus
    forgot = [run("forget", photos, "--library", lib) for lib in libs]
    assert all(r.exit_code == 0 for r in forgot), [r.output for r in forgot]
    assert json.loads(ok("status", "--json", "--library", libs[1]).stdout)["indexed"] == 0


def test_export_from_milvus_imports_into_a_local_library(two, tmp_path):
    photos, local, milvus = two
    out = tmp_path / "emb.parquet"
    ok("export", out, "--library", milvus)
    ok("import", out, "--library", tmp_path / "copy")
    query = ["search", "a blue square", "-k", "4"]
    assert_same_ranking(hits(*query, "--library", tmp_path / "copy"), hits(*query, "--library", local))


def test_dupes_on_milvus(two):
    photos, local, milvus = two
    def groups(lib) -> list[list[str]]:  # by path: the engines number rows differently
        report = json.loads(ok("dupes", "--library", lib, "--json").stdout)
        return [sorted(m["path"] for m in g["members"]) for g in report["groups"]]
    found = groups(milvus)
    assert found == groups(local)
    assert any({str(photos / "blue copy.png"), str(photos / "blue.png")} <= set(g) for g in found)


@pytest.mark.parametrize("args, needle", [
    (["check"], "local libraries"),
    (["search", "x", "--text-contains", "exit"], "Milvus"),
])
def test_what_only_a_local_library_has_is_one_line(two, args, needle):
    photos, local, milvus = two
    one_line_error(run(*args, "--library", milvus), needle)


def test_reading_text_in_images_is_refused_on_milvus(two):
    from searchkit import Library
    from searchkit.errors import SearchkitError
    photos, local, milvus = two
    lib = Library.open(milvus)
    with pytest.raises(SearchkitError, match="Milvus"):
        lib.set_ocr(True)
    assert not lib.ocr_on()


def test_another_model_is_the_same_clear_error(two, tiny_clip_dir, tmp_path):
    photos, local, milvus = two
    r = run("index", photos, "--library", milvus, "--model", "searchkit-lite")
    one_line_error(r, "was indexed with model")


def test_the_web_api_serves_a_milvus_library(two, tmp_path):
    """Search, "more like this" by a 63-bit id (given to the page as a string), thumbnails and
    the status page, over a Milvus library."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from searchkit import Library
    from searchkit.web.app import WebConfig, create_app
    photos, local, milvus = two
    lib = Library.open(milvus)
    try:
        client = TestClient(create_app(lib, WebConfig(thumb_dir=str(tmp_path / "thumbs"))))
        hits = client.get("/api/search", params={"q": "a blue square", "k": 3}).json()["hits"]
        assert len(hits) == 3 and all(h["key"] == str(h["id"]) for h in hits)
        assert any(h["id"] > 2**53 for h in hits)  # past JavaScript's exact integers
        like = client.get("/api/search", params={"like": hits[0]["key"], "k": 1}).json()
        assert like["hits"][0]["path"] == hits[0]["path"]
        thumb = client.get(hits[0]["thumb_url"])
        assert thumb.status_code == 200 and thumb.headers["content-type"].startswith("image/")
        assert client.get("/api/status").json()["indexed"] == 14
    finally:
        lib.engine.close()
