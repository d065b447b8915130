"""Hybrid ranking (issue 14): the words of a text query found in an image's text lift it.

Two rankings of the library are fused by reciprocal rank (RRF, Cormack et al. 2009): the CLIP
ranking (cosine similarity to the query vector) and the ranking of the images whose text
(``index --ocr``) holds the query's words (FTS5 bm25). Each image scores
``sum(1 / (RRF_K + rank))`` over the rankings it appears in (rank 1 = best), and the fused
order is by that score, ties by CLIP similarity. Each ranking gives its best ``depth``
images; an image with no text keeps its CLIP term, so it still ranks. An image found by its
text but beyond the CLIP candidates counts as CLIP's next one (``depth + 1``: the best rank it
can have), so that it is not tied with CLIP's best image for want of a longer CLIP list.

Pure functions; :meth:`searchkit.library.Library.search_with_timings` gathers the rankings.
"""

from __future__ import annotations

from collections.abc import Sequence

RRF_K = 60              # the constant of reciprocal-rank fusion (the paper's value)
HYBRID_DEPTH = 100      # images each ranking gives the fusion (at least the k asked for)


def rrf_scores(rankings: Sequence[Sequence[int]], rrf_k: int = RRF_K) -> dict[int, float]:
    """Each id's fused score over ``rankings`` (each a list of ids, best first)."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, i in enumerate(ranking, start=1):
            scores[i] = scores.get(i, 0.0) + 1.0 / (rrf_k + rank)
    return scores


def fuse(clip: Sequence[int], clip_scores: Sequence[float], text: Sequence[int],
         similarity: dict[int, float], k: int, rrf_k: int = RRF_K) -> list[int]:
    """The ``k`` best ids of the fused order. ``clip``: ids by CLIP similarity (with
    ``clip_scores``); ``text``: ids by text match; ``similarity``: the CLIP similarity of the
    text ids missing from ``clip`` (ties are broken by similarity, then id)."""
    cosine = dict(similarity) | dict(zip(clip, clip_scores))
    fused = rrf_scores([list(clip), list(text)], rrf_k)
    listed = set(clip)
    for i in text:
        if i not in listed:  # beyond the CLIP candidates: at best the next one
            fused[i] += 1.0 / (rrf_k + len(clip) + 1)
    return sorted(fused, key=lambda i: (-fused[i], -cosine.get(i, -2.0), i))[:k]
