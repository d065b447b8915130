"""The API's response records (pydantic models: they are also its OpenAPI schema)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from ..query import Hit
from ..store import File


class ImageOut(BaseModel):
    """One indexed image and its metadata."""
    id: int
    key: str = Field(description="The id as a string: a page uses it, since the ids of a "
                     "library on Milvus are 63-bit, past JavaScript's exact integers")
    path: str
    width: int | None
    height: int | None
    format: str | None
    date: str = Field(description="When it was taken (EXIF), else when it was modified: "
                      "ISO 8601 local time without a zone, as cameras record it")
    taken_at: str | None = Field(description="EXIF date taken (ISO 8601 local time)")
    modified_at: str = Field(description="File modification time (ISO 8601 local time)")
    camera_make: str | None
    camera_model: str | None
    thumb_url: str
    image_url: str


class HitOut(ImageOut):
    score: float = Field(description="Cosine similarity to the query (higher is closer)")
    duplicates: int = Field(0, description="Other indexed files with the same content "
                            "(same bytes; see /api/dupes)")


class Timings(BaseModel):
    """Server-side milliseconds: waiting for the encoder, encoding, FAISS, SQLite."""
    queue_ms: float
    encode_ms: float
    faiss_ms: float
    sqlite_ms: float
    total_ms: float


class SearchResponse(BaseModel):
    hits: list[HitOut]
    timings: Timings


class SkippedOut(BaseModel):
    path: str
    reason: str


class StatusOut(BaseModel):
    model_name: str
    dim: int
    indexed: int
    skipped: int
    roots: list[str]
    index_kind: str
    index_state: str
    busy: bool
    formats: list[str] = Field(description="Image formats present in the library")
    skipped_files: list[SkippedOut] = Field(description="The first skipped files")
    problems: list[str] = Field(default_factory=list, description="What is wrong with the "
                                "library, if anything (see `searchkit check`)")


class ErrorOut(BaseModel):
    detail: str = Field(description="What was wrong, in one line")


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorOut(ErrorOut):
    """A parameter failed validation: ``detail`` names the first, ``errors`` lists them all."""
    errors: list[ValidationIssue]


def _urls(file_id: int) -> dict:
    """The id's string and the URLs of its image, as a page uses them."""
    return dict(key=str(file_id), thumb_url=f"/api/images/{file_id}/thumb",
                image_url=f"/api/images/{file_id}/file")


def hit_out(h: Hit) -> HitOut:
    return HitOut(id=h.id, path=h.path, score=round(h.score, 6), width=h.width, height=h.height,
                  format=h.format, date=(h.taken_at or h.modified_at).isoformat(),
                  taken_at=h.taken_at.isoformat() if h.taken_at else None,
                  modified_at=h.modified_at.isoformat(), camera_make=h.camera_make,
                  camera_model=h.camera_model, duplicates=h.duplicates, **_urls(h.id))


def image_out(f: File) -> ImageOut:
    h = Hit.from_row(f, 0.0)
    return ImageOut(**{k: v for k, v in hit_out(h).model_dump().items()
                       if k not in ("score", "duplicates")})


# ---- duplicates (issue 14; GET /api/dupes, searchkit.web.dupes) ---------------------------
class DupeMemberOut(BaseModel):
    """One file of a group of duplicates."""
    id: int
    key: str = Field(description="The id as a string: a page uses it, since the ids of a "
                     "library on Milvus are 63-bit, past JavaScript's exact integers")
    path: str
    size: int | None = Field(description="Bytes (null: not known, an imported row)")
    width: int | None
    height: int | None
    format: str | None
    date: str = Field(description="Taken (EXIF), else modified: ISO 8601 local time")
    taken_at: str | None
    modified_at: str
    content_hash: str | None
    similarity: float | None = Field(description="Cosine similarity with the kept file "
                                     "(null: its stored vector is damaged)")
    same_content: bool = Field(description="Same content (bytes) as the kept file")
    keep: bool = Field(description="The file to keep by the group's rule")
    thumb_url: str
    image_url: str


class DupeGroupOut(BaseModel):
    kind: str = Field(description="exact (one content), near (all different contents) or "
                      "mixed")
    files: int
    contents: int = Field(description="Distinct contents (content hashes) in the group")
    keep: int = Field(description="Id of the file to keep")
    reclaimable_bytes: int = Field(description="Bytes of the other files")
    members: list[DupeMemberOut] = Field(description="The kept file first, then its exact "
                                         "copies, then the rest, most similar first")


class DupesResponse(BaseModel):
    threshold: float
    k: int
    keep_rule: str
    exact_only: bool
    images: int = Field(description="Indexed images within the filters")
    compared: int = Field(description="Contents whose vectors were compared")
    left_out: int = Field(description="Images with a damaged vector (grouped by content only)")
    groups_total: int
    files_in_groups: int
    redundant: int = Field(description="Files in groups other than the kept ones")
    reclaimable_bytes: int
    index: str = Field(description="How neighbours were found: none, flat (exact) or ivf")
    groups: list[DupeGroupOut] = Field(description="The largest groups first, at most limit")


def dupes_out(report) -> DupesResponse:
    """A :class:`searchkit.dupes.DupesReport` as the API returns it (thumbnails by id)."""
    d = report.to_json()
    for g in d["groups"]:
        g["members"] = [dict(m, **_urls(m["id"])) for m in g["members"]]
    return DupesResponse(**d)
