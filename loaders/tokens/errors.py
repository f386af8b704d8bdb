"""The refusals of the token data loaders: one line naming the file, key or option at fault."""

from __future__ import annotations

from neuronmap.loaders.errors import LoadError


class TokenDataError(LoadError, ValueError):
    """A ``--data`` spec that cannot become token contexts: an unknown kind, a missing file, ids out of range."""
