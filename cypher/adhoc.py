"""Ad hoc Cypher (``neuronmap cypher``): the one kind of statement that is not a named ``.cypher`` file.

A person types the statement, for a question the library does not have. It reaches the server only through
:meth:`neuronmap.cypher.Store.run_ad_hoc`, in READ access mode unless the caller asks for writes, so the server
refuses a write; its values travel as ``$parameters``, typed from the command line by :func:`typed_value`.
Nothing in neuronmap builds statement text here: every statement the project itself runs is a named file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import neo4j.graph
import neo4j.spatial
import neo4j.time
from pydantic import BaseModel, ConfigDict, Field

from neuronmap.cypher.catalog import INT64
from neuronmap.cypher.errors import AdHocParameterError

if TYPE_CHECKING:
    from neuronmap.cypher.store import Store

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class AdHocStatement(BaseModel):
    """A statement as typed, and whether it may write."""

    model_config = ConfigDict(frozen=True)

    text: str = Field(min_length=1)
    write: bool = False


class AdHocResult(BaseModel):
    """The columns in the statement's order, and one dict per record, in plain Python values."""

    columns: list[str]
    rows: list[dict[str, Any]]
    counters: dict[str, int] = {}  # what a write changed: nodes_created, properties_set, … (only those above 0)


def typed_value(name: str, text: str) -> Any:
    """A command-line value as the parameter it most likely means.

    JSON decides: ``5`` is an int, ``0.5`` a float, ``true``/``false``/``null`` what they say, ``[1, 2]`` a list
    and ``{"a": 1}`` a map; ``"5"`` (with the quotes) is the string 5. Anything that is not JSON stays a string,
    so ``-p model mnist-mlp-a`` needs no quotes.

    >>> typed_value("n", "5"), typed_value("xs", "[1, 2.5]"), typed_value("m", "mnist-mlp-a"), typed_value("s", '"5"')
    (5, [1, 2.5], 'mnist-mlp-a', '5')
    """

    def no_constant(constant: str) -> Any:
        raise ValueError(constant)  # NaN and Infinity stay strings

    try:
        value = json.loads(text, parse_constant=no_constant)
    except ValueError:
        return text
    if (problem := _too_big(value)) is not None:
        raise AdHocParameterError(
            f"Parameter {name!r}: {problem} does not fit a Cypher INTEGER (64 bits); pass it as a float ({problem}.0) "
            'or as a string ("…").'
        )
    return value


def _too_big(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if not INT64[0] <= value <= INT64[1] else None
    if isinstance(value, list):
        return next((bad for item in value if (bad := _too_big(item)) is not None), None)
    if isinstance(value, dict):
        return next((bad for item in value.values() if (bad := _too_big(item)) is not None), None)
    return None


def parse_params(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """``-p NAME VALUE`` pairs as a parameter map, each value typed by :func:`typed_value`."""
    params: dict[str, Any] = {}
    for name, text in pairs:
        if not _NAME.match(name):
            raise AdHocParameterError(
                f"Parameter name {name!r} is not a Cypher identifier (letters, digits and _, as in $min_size)."
            )
        params[name] = typed_value(name, text)
    return params


def plain(value: Any) -> Any:
    """A driver value as plain Python: a node is its properties with ``_labels``, a relationship its properties
    with ``_type``, a path its nodes and relationships; times and points become their ISO text."""
    if isinstance(value, neo4j.graph.Node):
        return {"_labels": sorted(value.labels), **{k: plain(v) for k, v in value.items()}}
    if isinstance(value, neo4j.graph.Relationship):
        return {"_type": value.type, **{k: plain(v) for k, v in value.items()}}
    if isinstance(value, neo4j.graph.Path):
        return {"nodes": [plain(n) for n in value.nodes], "relationships": [plain(r) for r in value.relationships]}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, neo4j.time.Date | neo4j.time.Time | neo4j.time.DateTime | neo4j.time.Duration):
        return value.iso_format()
    if isinstance(value, neo4j.spatial.Point):
        return str(value)
    return value


def run_ad_hoc(store: Store, text: str, params: dict[str, Any] | None = None, *, write: bool = False) -> AdHocResult:
    """Run one statement a person typed: read-only unless ``write`` (the server refuses a write in READ mode).

    Raises
    ------
    AdHocStatementError
        Neo4j refused it (a syntax error, a write without ``write``, …): one line with the server's code.
    StoreUnavailableError
        The server cannot be reached.

    Examples
    --------
    >>> run_ad_hoc(store, "RETURN $n + 1 AS m, $xs AS xs", {"n": 41, "xs": [1, 2]}).rows
    [{'m': 42, 'xs': [1, 2]}]
    """
    return store.run_ad_hoc(AdHocStatement(text=text, write=write), params)
