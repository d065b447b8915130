"""The FastAPI app: JSON API under /api, the page at /, thumbnails and originals by id only."""

from __future__ import annotations

import logging
from contextlib import nullcontext
from importlib import resources
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, File, Form, HTTPException, Path as PathParam, Query, \
    Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, \
    Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from ..errors import DiskFullError, LibraryBusyError, LibraryDamagedError, SearchkitError
from ..imageio import MAX_PIXELS, RAW_FORMATS, SNIFF_BYTES, ImageDecodeError, \
    MissingCodecError, open_image, sniff
from ..library import Library
from ..query import Filters, Query as SearchQuery
from ..spec import FieldError, parse_query_spec
from ..store import File as FileRow
from .batching import DecodeSlots
from .dupes import dupes_routes
from .config import PAGE_HEADERS, THUMB_DIR, WebConfig
from .guards import LOGIN_PATH, TOKEN_COOKIE, BodyLimit, TokenAuth, token_ok
from .params import (MAX_ID, MAX_TERMS, MAX_TEXT, Hybrid, RowId, TextTerm, Weight,
                     filter_params)
from .schemas import ErrorOut, ImageOut, SearchResponse, SkippedOut, StatusOut, Timings, \
    ValidationErrorOut, hit_out, image_out
from .originals import Original, OriginalUnavailable, open_original
from .search import RequestTimings, Searcher
from .thumbs import ThumbnailCache, ThumbnailError

log = logging.getLogger(__name__)

STATIC_DIR = Path(str(resources.files(__package__) / "static"))
MEDIA_TYPES = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png",
               "WEBP": "image/webp", "GIF": "image/gif", "BMP": "image/bmp",
               "TIFF": "image/tiff", "HEIF": "image/heic", "AVIF": "image/avif",
               **dict.fromkeys(RAW_FORMATS, "application/octet-stream")}  # RAW: a download
MAX_SKIPPED_SHOWN = 100
ERRORS = {400: {"model": ErrorOut}, 401: {"model": ErrorOut}, 404: {"model": ErrorOut},
          413: {"model": ErrorOut}, 415: {"model": ErrorOut},
          422: {"model": ValidationErrorOut}}

ImageId = Annotated[int, PathParam(ge=0, le=MAX_ID, description="Image id from a search hit")]
K = Annotated[int, Query(ge=1, description="How many results")]
Threshold = Annotated[float | None, Query(ge=-1, le=1, allow_inf_nan=False,
                                          description="Minimum score")]
LikeIds = Annotated[list[RowId] | None, Query(max_length=MAX_TERMS, description="More like "
                                            "these indexed image ids")]
Negatives = Annotated[list[str] | None, Query(alias="not", max_length=MAX_TERMS,
                                              description="Push results away from this text "
                                              "(repeatable)")]


def create_app(library: Library, config: WebConfig | None = None,
               searcher: Searcher | None = None) -> FastAPI:
    """The server over an opened ``library`` (built once by the caller and passed in)."""
    config = config or WebConfig()
    searcher = searcher or Searcher(library)
    thumb_dir = Path(config.thumb_dir) if config.thumb_dir else library.engine.state_dir / THUMB_DIR
    slots = DecodeSlots(config.decode_slots)
    thumbs = ThumbnailCache(thumb_dir, config.thumb_size, MAX_PIXELS, slots)
    app = FastAPI(title="searchkit", version="0.1.0", docs_url=None, redoc_url=None,
                  description="Semantic image search over a searchkit library: by text, by an "
                              "uploaded image, or both. Images are served by id only.")
    app.state.library, app.state.searcher, app.state.thumbs = library, searcher, thumbs
    app.state.config, app.state.decode_slots = config, slots
    _install_errors(app)
    _search_routes(app, searcher, config, slots)
    _status_route(app, library)
    dupes_routes(app, library)
    _image_routes(app, library, thumbs)
    _page_routes(app, library, config)
    _docs_routes(app)
    app.add_middleware(BodyLimit, limit=config.max_body_bytes,
                       message=f"upload too large (limit {_mb(config.max_upload_bytes)})")
    if config.token:
        app.add_middleware(TokenAuth, token=config.token)
    if config.allowed_hosts:
        from starlette.middleware.trustedhost import TrustedHostMiddleware
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(config.allowed_hosts))
    return app


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):g} MB"


# ---- errors ----------------------------------------------------------------------------------
def _status_code(exc: SearchkitError) -> int:
    """400 for what the request got wrong; 503 for the server's own state (a damaged library,
    a full disk, a busy writer), which no change to the request would fix."""
    return 503 if isinstance(exc, (LibraryDamagedError, DiskFullError, LibraryBusyError)) else 400


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(SearchkitError)
    async def _user_error(request: Request, exc: SearchkitError):
        return JSONResponse({"detail": " ".join(str(exc).split())},
                            status_code=_status_code(exc))

    @app.exception_handler(OriginalUnavailable)
    async def _gone(request: Request, exc: OriginalUnavailable):
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errors = [{"loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())],
                   "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
                  for e in exc.errors()]
        if any(e["loc"] and e["loc"][0] == "path" for e in errors):
            # an id that is not an id names nothing in the library: 404, like any unknown path
            return JSONResponse({"detail": "no such image"}, status_code=404)
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"][1:]) or "request"
        return JSONResponse({"detail": f"{where}: {first['msg']}", "errors": errors},
                            status_code=422)


def _timings_out(t: RequestTimings) -> Timings:
    return Timings(queue_ms=t.queue * 1e3, encode_ms=t.encode * 1e3, faiss_ms=t.faiss * 1e3,
                   sqlite_ms=t.sqlite * 1e3, total_ms=t.total * 1e3)


# ---- search ----------------------------------------------------------------------------------
def _search_routes(app: FastAPI, searcher: Searcher, config: WebConfig,
                   slots: DecodeSlots) -> None:
    def check_k(k: int) -> None:
        if k > config.max_k:
            raise HTTPException(400, f"k must be at most {config.max_k}")

    def respond(query: SearchQuery, k: int, filters: Filters, threshold,
                hybrid: bool | None = None) -> SearchResponse:
        check_k(k)
        hits, timings = searcher.search(query, k, filters, threshold, hybrid)
        return SearchResponse(hits=[hit_out(h) for h in hits], timings=_timings_out(timings))

    @app.get("/api/search", response_model=SearchResponse, responses=ERRORS, tags=["search"])
    def search_text(
        q: TextTerm = None,
        negatives: Negatives = None,
        like: LikeIds = None,
        text_weight: Weight = 1.0,
        not_weight: Weight = 0.5,
        like_weight: Weight = 1.0,
        k: K = 10,
        threshold: Threshold = None,
        hybrid: Hybrid = None,
        filters: Filters = Depends(filter_params),
    ) -> SearchResponse:
        """Search by text, "more like" stored images (``like``), or both; ``not`` terms are
        subtracted. Filters restrict the search itself (not its results)."""
        spec = _query_spec(dict(text=q, **{"not": negatives}, like=like, k=k,
                                     text_weight=text_weight, not_weight=not_weight,
                                     like_weight=like_weight))
        return respond(spec.query, spec.k, filters, threshold, hybrid)

    @app.post("/api/search", response_model=SearchResponse, responses=ERRORS, tags=["search"])
    def search_upload(
        image: Annotated[UploadFile | None, File(description="A query image (JPEG, PNG, WebP, "
                                                  "GIF, BMP or TIFF)")] = None,
        q: Annotated[str | None, Form(max_length=MAX_TEXT)] = None,
        negatives: Annotated[list[str] | None, Form(alias="not", max_length=MAX_TERMS)] = None,
        like: Annotated[list[RowId] | None, Form(max_length=MAX_TERMS)] = None,
        text_weight: Annotated[float, Form(ge=-100, le=100, allow_inf_nan=False)] = 1.0,
        image_weight: Annotated[float, Form(ge=-100, le=100, allow_inf_nan=False)] = 1.0,
        not_weight: Annotated[float, Form(ge=-100, le=100, allow_inf_nan=False)] = 0.5,
        like_weight: Annotated[float, Form(ge=-100, le=100, allow_inf_nan=False)] = 1.0,
        k: K = 10,
        threshold: Threshold = None,
        hybrid: Hybrid = None,
        filters: Filters = Depends(filter_params),
    ) -> SearchResponse:
        """Search by an uploaded image (multipart), optionally combined with text, negative
        terms and stored images, each with its weight. The upload's content decides its
        type (not its name or declared type); size and pixel count are capped. At most
        ``decode_slots`` uploads are read, decoded and encoded at once (the rest wait), so
        memory does not grow with the number of clients."""
        check_k(k)
        with slots.hold() if image is not None else nullcontext():
            upload = _decode_upload(image, config) if image is not None else None
            spec = _query_spec(dict(text=q, image=upload, **{"not": negatives}, like=like,
                                         k=k, text_weight=text_weight,
                                         image_weight=image_weight, not_weight=not_weight,
                                         like_weight=like_weight))
            return respond(spec.query, spec.k, filters, threshold, hybrid)


def _status_route(app: FastAPI, library: Library) -> None:
    @app.get("/api/status", response_model=StatusOut, tags=["library"])
    def status() -> StatusOut:
        """The library's model, counts, folders and index state."""
        st = library.status(with_skipped=True)
        formats = library.formats()
        return StatusOut(model_name=st.model_name, dim=st.dim, indexed=st.indexed,
                         skipped=st.skipped, roots=st.roots, index_kind=st.index_kind,
                         index_state=st.index_state, busy=st.busy, formats=formats,
                         problems=list(st.problems),
                         skipped_files=[SkippedOut(path=f.path, reason=f.reason)
                                        for f in st.skipped_files[:MAX_SKIPPED_SHOWN]])


def _query_spec(params: dict):
    """The request's query terms through the one query-spec parser; errors name the HTTP
    parameter (``q`` is the spec's ``text``)."""
    try:
        return parse_query_spec(params)
    except FieldError as e:
        raise FieldError("q" if e.field == "text" else e.field, e.problem) from None


def _decode_upload(upload: UploadFile, config: WebConfig):
    """The uploaded bytes as an RGB image, or a clear 4xx."""
    data = upload.file.read(config.max_upload_bytes + 1)  # the one copy held in memory
    upload.file.close()
    if len(data) > config.max_upload_bytes:
        raise HTTPException(413, f"upload too large (limit {_mb(config.max_upload_bytes)})")
    if not data:
        raise HTTPException(400, "empty upload: choose an image file")
    if sniff(data[:SNIFF_BYTES]) is None:
        raise HTTPException(415, "not a supported image: the content is not JPEG, PNG, WebP, "
                                 "GIF, BMP, TIFF, HEIC, AVIF or camera RAW")
    try:
        im, _ = open_image(data, max_pixels=config.max_pixels)  # JPEGs at a reduced scale
    except MissingCodecError as e:
        raise HTTPException(415, f"cannot use the uploaded image: {e}") from None
    except ImageDecodeError as e:
        code = 413 if "too large" in str(e) else 400
        raise HTTPException(code, f"cannot use the uploaded image: {e}") from None
    return im


# ---- images by id ----------------------------------------------------------------------------
def _image_routes(app: FastAPI, library: Library, thumbs: ThumbnailCache) -> None:
    def row(image_id: int) -> FileRow:
        f = library.indexed_file(image_id)
        if f is None:
            raise HTTPException(404, f"no image with id {image_id}")
        return f

    @app.get("/api/images/{image_id}", response_model=ImageOut, responses=ERRORS,
             tags=["images"])
    def image_meta(image_id: ImageId) -> ImageOut:
        """An indexed image's metadata."""
        return image_out(row(image_id))

    @app.get("/api/images/{image_id}/thumb", responses={**ERRORS, 200: {
        "content": {"image/jpeg": {}}, "description": "A JPEG thumbnail"}},
        response_class=Response, tags=["images"])
    def image_thumb(image_id: ImageId) -> Response:
        """A JPEG thumbnail, right way up; made once and cached under the library. 404 when
        the file on disk is no longer the one indexed."""
        f = row(image_id)
        try:
            data = thumbs.get(f)
        except ThumbnailError as e:
            raise HTTPException(404, f"image {image_id} cannot be read: {e}") from None
        return Response(data, media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=86400"})

    @app.get("/api/images/{image_id}/file", responses={**ERRORS, 200: {
        "content": {"image/*": {}}, "description": "The original file"}},
        response_class=StreamingResponse, tags=["images"])
    def image_file(image_id: ImageId) -> StreamingResponse:
        """The original file, only while it is still the file that was indexed (a regular
        file of the stored size, mtime, format and content hash; else 404: re-index)."""
        original = open_original(row(image_id))
        try:
            original.verify_content()
        except BaseException:
            original.close()
            raise
        return StreamingResponse(_stream(original), media_type=MEDIA_TYPES[original.row.format],
                                 headers={"Content-Length": str(original.size),
                                          "Cache-Control": "private, max-age=3600",
                                          "X-Content-Type-Options": "nosniff"})


def _stream(original: Original):
    """The checked descriptor's bytes (never the path again), closed when done or dropped."""
    with original:
        yield from original.chunks()


# ---- the page --------------------------------------------------------------------------------
LOGIN_FORM = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>searchkit: sign in
</title><link rel="stylesheet" href="/static/style.css"></head><body class="login">
<form method="post" action="/login"><h1>searchkit</h1><p>{message}</p>
<input type="password" name="token" placeholder="access token" autofocus required>
<button type="submit">Open</button></form></body></html>"""


def _page_routes(app: FastAPI, library: Library, config: WebConfig) -> None:
    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html",
                            headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get(LOGIN_PATH, include_in_schema=False)
    def login_form() -> HTMLResponse:
        return HTMLResponse(LOGIN_FORM.format(message="This server needs its access token."),
                            headers=PAGE_HEADERS)

    @app.post(LOGIN_PATH, include_in_schema=False)
    def login(token: Annotated[str, Form(max_length=4096)] = "") -> Response:
        if not config.token or not token_ok(token, config.token):
            return HTMLResponse(LOGIN_FORM.format(message="Wrong token, try again."),
                                status_code=401)
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return resp


DOCS_ASSETS = "/docs-assets"


def _swagger_assets() -> Path | None:
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    return Path(swagger_ui_bundle.swagger_ui_path)


def _docs_routes(app: FastAPI) -> None:
    """The OpenAPI page at /docs, from local files (``swagger-ui-bundle``), never a CDN."""
    from fastapi.openapi.docs import get_swagger_ui_html
    assets = _swagger_assets()
    if assets is not None:
        app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        if assets is None:
            return HTMLResponse("<!doctype html><title>searchkit API</title><p>The interactive "
                                "API page needs <code>pip install swagger-ui-bundle</code> "
                                "(in <code>searchkit[serve]</code>); the schema is at "
                                "<a href='/openapi.json'>/openapi.json</a>.</p>")
        return get_swagger_ui_html(openapi_url="/openapi.json", title="searchkit API",
                                   swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png")
