"""Errors the service raises on purpose; the CLI prints them as one line, without a traceback."""

from __future__ import annotations


class ServiceError(Exception):
    """Base of the errors the service package raises on purpose."""


class LocalServerError(ServiceError, RuntimeError):
    """The managed local Neo4j could not be fetched, started or reached."""


class ModelNotFoundError(ServiceError, LookupError):
    def __init__(self, model: str) -> None:
        super().__init__(f"There is no model {model!r} in the store. `neuronmap models` lists them.")
        self.model = model
