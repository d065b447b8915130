"""The web page and HTTP API over a library (``searchkit serve``).

    from searchkit import Library
    from searchkit.web import WebConfig, create_app
    app = create_app(Library.open("~/photos-lib"), WebConfig(token="s3cret"))
"""

from .app import create_app
from .config import WebConfig

__all__ = ["WebConfig", "create_app"]
