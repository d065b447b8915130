"""The API's response records (pydantic models: they are also its OpenAPI schema)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from ..query import Hit
from ..store import File


class ImageOut(BaseModel):
    """One indexed image and its metadata."""
    id: int
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
    return dict(thumb_url=f"/api/images/{file_id}/thumb", image_url=f"/api/images/{file_id}/file")


def hit_out(h: Hit) -> HitOut:
    return HitOut(id=h.id, path=h.path, score=round(h.score, 6), width=h.width, height=h.height,
                  format=h.format, date=(h.taken_at or h.modified_at).isoformat(),
                  taken_at=h.taken_at.isoformat() if h.taken_at else None,
                  modified_at=h.modified_at.isoformat(), camera_make=h.camera_make,
                  camera_model=h.camera_model, **_urls(h.id))


def image_out(f: File) -> ImageOut:
    h = Hit.from_row(f, 0.0)
    return ImageOut(**{k: v for k, v in hit_out(h).model_dump().items() if k != "score"})
