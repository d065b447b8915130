"""Where a Milvus library lives and how to connect to it: the location a user names, and the
connection settings (credentials, TLS, database) read from the environment or a config file,
never from the command line.

Locations
    ``milvus://HOST[:PORT]/COLLECTION``            a Milvus server (port 19530 by default)
    ``milvus:///ABSOLUTE/PATH/FILE.db/COLLECTION``  a Milvus Lite file (empty host)

Settings (an environment variable wins over the config file)
    ``SEARCHKIT_MILVUS_TOKEN``                     API token (``user:password`` or a cloud key)
    ``SEARCHKIT_MILVUS_USER`` / ``..._PASSWORD``   user and password (instead of a token)
    ``SEARCHKIT_MILVUS_TLS``                       ``1``: connect with TLS (``https://``)
    ``SEARCHKIT_MILVUS_CA_CERT``                   the server's CA certificate (PEM); implies TLS
    ``SEARCHKIT_MILVUS_SERVER_NAME``               the name the server's certificate holds
    ``SEARCHKIT_MILVUS_DB``                        the database (``default`` when unset)
    ``SEARCHKIT_MILVUS_TIMEOUT``                   seconds a call may take (default 60)
    ``SEARCHKIT_MILVUS_CONFIG``                    the config file (default
                                                   ``~/.config/searchkit/milvus.toml``)

The config file is TOML: the same keys in lower case without the prefix (``token``, ``user``,
``password``, ``tls``, ``ca_cert``, ``server_name``, ``db``, ``timeout``) at the top level, and
optionally a table per server, ``["HOST:PORT"]``, whose keys override the top level's for that
server. Keep it readable by you only (``chmod 600``): it may hold a password.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..engine import MILVUS_SCHEME
from ..errors import SearchkitError

DEFAULT_PORT = 19530
ENV_PREFIX = "SEARCHKIT_MILVUS_"
CONFIG_ENV = "SEARCHKIT_MILVUS_CONFIG"
STATE_ENV = "SEARCHKIT_STATE_DIR"
DEFAULT_TIMEOUT_S = 60.0
# Milvus: a name starts with a letter or "_", then letters, digits and "_", 255 at most: the
# meta collection's name adds "__searchkit_meta" (16)
COLLECTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,238}")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class MilvusLocation:
    """A ``milvus://`` location, parsed."""
    location: str          # as the user wrote it
    collection: str
    host: str = ""         # a server's host and port ...
    port: int = DEFAULT_PORT
    lite_file: str = ""    # ... or a Milvus Lite file (absolute path)

    @property
    def is_lite(self) -> bool:
        return bool(self.lite_file)

    @property
    def server(self) -> str:
        """``HOST:PORT`` (the config file's table name), or the Lite file."""
        return self.lite_file or f"{self.host}:{self.port}"

    def state_name(self, db: str) -> str:
        """A folder name for this machine's state of the library (its write lock, caches):
        readable, and unique per server, database and collection."""
        label = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{self.server}_{db}_{self.collection}")
        digest = hashlib.blake2b(f"{self.server}\0{db}\0{self.collection}".encode(),
                                 digest_size=6).hexdigest()
        return f"{label[-80:]}-{digest}"


def parse_location(location: str) -> MilvusLocation:
    """``milvus://HOST[:PORT]/COLLECTION`` or ``milvus:///PATH/FILE.db/COLLECTION``."""
    if not location.startswith(MILVUS_SCHEME):
        raise SearchkitError(f"not a Milvus location: {location}")
    bad = SearchkitError(f"bad Milvus location {location}: write milvus://HOST:PORT/COLLECTION "
                         "or, for a Milvus Lite file, milvus:///ABSOLUTE/PATH/FILE.db/COLLECTION")
    try:
        parts = urlsplit(location)
        port = parts.port
    except ValueError:
        raise bad from None
    if parts.query or parts.fragment:
        raise bad
    path = unquote(parts.path)
    head, _, collection = path.rpartition("/")
    if not COLLECTION_NAME.fullmatch(collection):
        raise SearchkitError(f"bad Milvus collection name {collection!r} in {location}: letters, "
                             "digits and _ (not starting with a digit), 239 at most")
    if parts.netloc:
        if parts.username or parts.password:
            raise SearchkitError("credentials do not belong in a Milvus location (commands and "
                                 "shell history show it): set SEARCHKIT_MILVUS_TOKEN or "
                                 "SEARCHKIT_MILVUS_USER/PASSWORD, or use the config file")
        if head or not parts.hostname:
            raise bad
        return MilvusLocation(location, collection, host=parts.hostname,
                              port=port or DEFAULT_PORT)
    if not head.startswith("/") or head == "/":
        raise bad
    return MilvusLocation(location, collection, lite_file=head)


@dataclass(frozen=True)
class MilvusSettings:
    """How to connect: credentials, TLS and database (environment, then config file)."""
    token: str = ""
    user: str = ""
    password: str = ""
    tls: bool = False
    ca_cert: str = ""
    server_name: str = ""
    db: str = ""
    timeout: float = DEFAULT_TIMEOUT_S

    def client_kwargs(self, where: MilvusLocation) -> dict:
        """The arguments of ``pymilvus.MilvusClient`` for ``where``."""
        if where.is_lite:
            return {"uri": where.lite_file, "timeout": self.timeout}
        tls = self.tls or bool(self.ca_cert)
        kwargs: dict = {"uri": f"{'https' if tls else 'http'}://{where.host}:{where.port}",
                        "timeout": self.timeout}
        if self.token:
            kwargs["token"] = self.token
        elif self.user:
            kwargs.update(user=self.user, password=self.password)
        if self.db:
            kwargs["db_name"] = self.db
        if self.ca_cert:
            kwargs["server_pem_path"] = self.ca_cert
        if self.server_name:
            kwargs["server_name"] = self.server_name
        return kwargs


def config_path() -> Path:
    configured = os.environ.get(CONFIG_ENV)
    if configured:
        return Path(configured).expanduser()
    from platformdirs import user_config_dir
    return Path(user_config_dir("searchkit")) / "milvus.toml"


def load_settings(where: MilvusLocation) -> MilvusSettings:
    """The settings for ``where``: the config file's top level, its ``["HOST:PORT"]`` table,
    then the environment (each overriding the one before)."""
    values: dict[str, object] = {}
    path = config_path()
    if path.is_file():
        data = _read_toml(path)
        values.update({k: v for k, v in data.items() if not isinstance(v, dict)})
        table = data.get(where.server)
        if isinstance(table, dict):
            values.update(table)
        _check_keys(values, str(path))
    elif os.environ.get(CONFIG_ENV):
        raise SearchkitError(f"{CONFIG_ENV} names {path}, which is not a file")
    for f in fields(MilvusSettings):
        env = os.environ.get(ENV_PREFIX + f.name.upper())
        if env is not None:
            values[f.name] = env
    return _typed(values, str(path))


def _read_toml(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the milvus extra brings tomli
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise SearchkitError(f"reading {path} needs tomli on Python 3.10: "
                                 "pip install 'searchkit[milvus]'") from None
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except (OSError, ValueError) as e:
        raise SearchkitError(f"cannot read the Milvus config file {path}: {e}") from None


def _check_keys(values: dict, source: str) -> None:
    known = {f.name for f in fields(MilvusSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SearchkitError(f"unknown setting {unknown[0]!r} in the Milvus config file "
                             f"{source} (known: {', '.join(sorted(known))})")


def _typed(values: dict, source: str) -> MilvusSettings:
    out = MilvusSettings()
    for name, value in values.items():
        try:
            if name == "tls":
                value = _flag(value)
            elif name == "timeout":
                value = float(value)
                if value <= 0:
                    raise ValueError
            else:
                value = str(value)
        except ValueError:
            raise SearchkitError(f"Milvus setting {name} has a bad value {value!r} (from the "
                                 f"environment or {source})") from None
        out = replace(out, **{name: value})
    if out.ca_cert and not Path(out.ca_cert).expanduser().is_file():
        raise SearchkitError(f"the Milvus CA certificate {out.ca_cert} is not a file")
    return out


def _flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(text)


def state_dir() -> Path:
    """Where this machine keeps the state (write locks, caches) of Milvus libraries."""
    configured = os.environ.get(STATE_ENV)
    if configured:
        return Path(configured).expanduser() / "milvus"
    from platformdirs import user_cache_dir
    return Path(user_cache_dir("searchkit")) / "milvus"
