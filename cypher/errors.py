"""Errors the cypher package raises on purpose; the CLI prints them as one line, without a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from neuronmap.errors import NeuronmapError


class CypherError(NeuronmapError):
    """Base of the errors this package raises on purpose."""


class UnknownQueryError(CypherError, LookupError):
    def __init__(self, name: str, known: Iterable[str]) -> None:
        near = difflib.get_close_matches(name, list(known), n=3)
        hint = f"Did you mean {', '.join(near)}?" if near else "`neuronmap query --list` shows them all."
        super().__init__(f"There is no named query {name!r}. {hint}")
        self.name = name


class QueryHeaderError(CypherError, ValueError):
    """A .cypher file whose header does not follow the documented form."""


class QueryParameterError(CypherError, ValueError):
    def __init__(
        self, name: str, missing: Iterable[str] = (), unexpected: Iterable[str] = (), wrong_type: Iterable[str] = ()
    ) -> None:
        parts = []
        if missing := sorted(missing):
            parts.append(f"missing {', '.join(missing)}")
        if unexpected := sorted(unexpected):
            parts.append(f"unexpected {', '.join(unexpected)}")
        if wrong_type := list(wrong_type):
            parts.append("; ".join(wrong_type))
        if name.startswith("library."):
            hint = f"`neuronmap query {name.removeprefix('library.').replace('_', '-')} --show` lists what it takes."
        else:
            hint = f"Its header in cypher/queries/{name.replace('.', '/')}.cypher lists what it takes."
        super().__init__(f"Query {name!r} got bad parameters: {'; '.join(parts)}. {hint}")
        self.name = name


class StoreUnavailableError(CypherError, ConnectionError):
    """The server cannot be reached, or stopped answering during a statement (``during`` names it)."""

    def __init__(self, uri: str, reason: str, during: str | None = None) -> None:
        if during is None:
            message = f"Cannot reach Neo4j at {uri} ({reason}). Run 'neuronmap db start', or set NEO4J_URI."
        else:
            message = (
                f"Lost Neo4j at {uri} during {during} ({reason}). "
                "'neuronmap db logs' shows why it stopped; 'neuronmap db start' starts it again."
            )
        super().__init__(message)
        self.uri, self.reason, self.during = uri, reason, during


class AdHocStatementError(CypherError, ValueError):
    """Neo4j refused a statement typed for ``neuronmap cypher``: one line, with the server's code."""

    def __init__(self, code: str, message: str, write: bool) -> None:
        first = message.strip().split("\n")[0]
        if code.endswith(".AccessMode") or (not write and "read access mode" in message.lower()):
            text = f"The statement writes, and `neuronmap cypher` runs read-only; add --write to allow writes ({code})."
        else:
            text = f"Neo4j refused the statement ({code}): {first}"
        super().__init__(text)
        self.code = code


class AdHocParameterError(CypherError, ValueError):
    """A ``-p NAME VALUE`` of ``neuronmap cypher`` that cannot be a parameter."""


class StoreAuthError(CypherError, PermissionError):
    def __init__(self, uri: str, user: str) -> None:
        super().__init__(
            f"Neo4j at {uri} refused the credentials of user {user!r}. "
            "Set NEO4J_USERNAME and NEO4J_PASSWORD, or unset NEO4J_URI to use the managed local server."
        )
        self.uri = uri
