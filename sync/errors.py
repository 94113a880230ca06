"""The sync layer's errors."""

from __future__ import annotations


class SyncError(Exception):
    """A sync operation failed; the message says what happened and what to do next."""


class BadInputError(SyncError):
    """Bad input (an unknown table, a table without a key): nothing was changed. Exit 2."""
