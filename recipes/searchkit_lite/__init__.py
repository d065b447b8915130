"""The recipe of the bundled searchkit-lite model (see :mod:`.train`); not installed."""
