"""One meaning of "this path is under that folder": in Python (searchkit.paths.is_under) and in
SQL (searchkit.store.path_under, which Store.forget uses), checked against each other."""

import pytest

from searchkit.paths import absolute, is_under, subtree_prefix
from searchkit.store import Store


@pytest.mark.parametrize("path,root,under", [
    ("/photos", "/photos", True),
    ("/photos/a.jpg", "/photos", True),
    ("/photos/2024/a.jpg", "/photos/", True),
    ("/photos2/a.jpg", "/photos", False),
    ("/photo", "/photos", False),
    ("/a.jpg", "/", True),
    ("/photos_/a.jpg", "/photos_", True),
    ("/photosx/a.jpg", "/photos_", False),   # _ is a character, not a wildcard
    ("/100%/a.jpg", "/100%", True),
    ("/100x/a.jpg", "/100%", False),          # % too
])
def test_is_under(path, root, under):
    assert is_under(path, root) is under


def test_subtree_prefix_ends_in_exactly_one_separator():
    assert subtree_prefix("/photos") == subtree_prefix("/photos/") == "/photos/"
    assert subtree_prefix("/") == "/"


def test_absolute_expands_home_and_resolves_dots(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert absolute("a/../b/") == str(tmp_path / "b")
    assert absolute("~/pics") == str(tmp_path / "home" / "pics")


ROOTS = ["/photos", "/photos/2024", "/photos2", "/photos_", "/photosX/in", "/100%",
         "/100x", "/pho", "/photos/[x]", "/photos/*", "/Photos", "/PHOTOS/a", "/photos/é",
         "/photos/\U0001f600"]


@pytest.mark.parametrize("forgotten", ["/photos", "/photos_", "/100%", "/photos/[x]",
                                       "/photos/*", "/pho", "/Photos", "/photos/é"])
def test_the_store_forgets_exactly_the_roots_is_under_names(tmp_path, forgotten):
    store = Store(tmp_path)
    store.create("model", "fingerprint", 4)
    store.add_roots(ROOTS, 0.0)
    store.forget(forgotten)
    assert store.roots() == sorted(r for r in ROOTS if not is_under(r, forgotten))
