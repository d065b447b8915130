"""Folders and the paths under them, as text (no file system access).

"Is this path under that root" has one meaning everywhere: the path is the root itself, or it
starts with the root followed by a separator (``/photos`` holds ``/photos/a.jpg``, not
``/photos2/a.jpg``). :func:`is_under` is the test in Python; the store's ``path_under`` is the
same test in SQL, built from :func:`subtree_prefix`.
"""

from __future__ import annotations

import os


def absolute(path: str | os.PathLike) -> str:
    """A folder or file as the library records it: ``~`` expanded, absolute, normalised."""
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def subtree_prefix(root: str) -> str:
    """What every path strictly under ``root`` starts with."""
    return root.rstrip(os.sep) + os.sep


def is_under(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or lies under it."""
    return path == root or path.startswith(subtree_prefix(root))
