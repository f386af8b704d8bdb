"""The root of every error neuronmap raises on purpose.

``LoadError`` (loaders), ``CypherError`` (cypher) and ``ServiceError`` (service) all derive from
:class:`NeuronmapError`, so the CLI prints any of them as one line and a library user can catch them all at once.
Each concrete error also derives from the builtin that fits (sklearn's double base).
"""

from __future__ import annotations


class NeuronmapError(Exception):
    """Base of the errors neuronmap raises on purpose; the CLI prints them as one line, without a traceback."""


class DeviceError(NeuronmapError, RuntimeError):
    """The requested compute device is not available."""

    def __init__(self, device: str, reason: str) -> None:
        super().__init__(f"Cannot compute on device {device!r}: {reason}")
        self.device = device


class SeedError(NeuronmapError, ValueError):
    """A random_state that is neither a non-negative int nor None."""
