"""Libraries on Milvus: ``--library milvus://HOST:PORT/COLLECTION`` (a server) or
``milvus:///ABSOLUTE/PATH/FILE.db/COLLECTION`` (a Milvus Lite file), with the ``searchkit[milvus]``
extra. The engine: :mod:`searchkit.milvus.engine`; locations, credentials and TLS:
:mod:`searchkit.milvus.config`; filters: :mod:`searchkit.milvus.filters`.

Nothing here imports ``pymilvus`` until a Milvus location is opened.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import SearchkitError
from .config import MilvusLocation, MilvusSettings, load_settings, parse_location

if TYPE_CHECKING:
    from .engine import MilvusEngine

CONNECT_TIMEOUT_S = 10.0
INSTALL_HINT = "Milvus libraries need the milvus extra: pip install 'searchkit[milvus]'"


def open_milvus_engine(location: str, create: bool = False, **options) -> "MilvusEngine":
    """The engine of the library at a ``milvus://`` ``location``; without ``create`` it must
    exist. ``options`` go to :class:`~searchkit.milvus.engine.MilvusEngine` (index
    thresholds, for tests)."""
    where = parse_location(location)
    settings = load_settings(where)
    missing = SearchkitError(f"no library at {location}: index a folder first "
                             f"(searchkit index PATH --library {location})")
    if where.is_lite and not create and not Path(where.lite_file).exists():  # 3.x: a folder
        raise missing
    client = connect(where, settings)
    from .engine import MilvusEngine
    engine = MilvusEngine(where, settings, client, **options)
    if not create and not engine.exists():
        engine.close()
        raise missing
    return engine


def connect(where: MilvusLocation, settings: MilvusSettings):
    """A ``pymilvus.MilvusClient`` for ``where`` (a Lite file's folder is made)."""
    try:
        from pymilvus import MilvusClient
        from pymilvus.exceptions import MilvusException
    except ImportError:
        raise SearchkitError(INSTALL_HINT) from None
    kwargs = settings.client_kwargs(where)
    kwargs["timeout"] = min(CONNECT_TIMEOUT_S, settings.timeout)
    if where.is_lite:
        Path(where.lite_file).parent.mkdir(parents=True, exist_ok=True)
    try:
        return MilvusClient(**kwargs)
    except MilvusException as e:
        message = " ".join(str(getattr(e, "message", None) or e).split())
        if where.is_lite:
            raise SearchkitError(f"cannot open the Milvus Lite library {where.lite_file}: "
                                 f"{message} (one process at a time can use a Milvus Lite "
                                 "folder: is another searchkit command using it?)") from None
        raise SearchkitError(f"cannot connect to Milvus at {where.server}: {message}") from None
