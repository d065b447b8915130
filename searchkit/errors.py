"""Exceptions a user can cause; the CLI prints them as one line."""

from __future__ import annotations


class SearchkitError(Exception):
    """Base of all user-facing errors."""


class LibraryBusyError(SearchkitError):
    """Another process is writing to the library."""


class ModelMismatchError(SearchkitError):
    """The library was indexed with another model."""


class EncoderError(SearchkitError):
    """A model cannot be loaded or used (unknown name, broken directory, ...)."""


class QueryError(SearchkitError):
    """A query cannot be run (empty, unreadable image, bad filter)."""


class LibraryDamagedError(SearchkitError):
    """A library's files do not read back as written (damaged database, meta or vectors)."""


class DiskFullError(SearchkitError):
    """The disk filled up while writing to a library; what was committed before is kept."""
