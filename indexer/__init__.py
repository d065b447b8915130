"""Turns folders of images into library rows and vectors: scan -> decode -> encode -> write.

    from searchkit import Library
    from searchkit.indexer import Indexer
    lib = Library.open("~/photos-lib", model="searchkit-lite", create=True)
    report = Indexer(lib).run(["~/Pictures"])
"""

from .pipeline import IndexReport, Indexer

__all__ = ["IndexReport", "Indexer"]
