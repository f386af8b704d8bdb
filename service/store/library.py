"""The library: named questions about a model's modules (``cypher/queries/library/*.cypher``), run by name.

The ``.cypher`` files take plain partition ids; this module adds what a person types: ``partition='latest'``
(the model's newest partition), model lists given as ``"a,b"``, a layer given by index, and errors that say what
is missing instead of an empty table. The CLI (``neuronmap query …``) is a thin layer over
:func:`library_queries` and :func:`run_library_query`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from neuronmap.cypher import Store, catalog
from neuronmap.cypher.catalog import NamedQuery, QueryParam
from neuronmap.results import Rows
from neuronmap.service.errors import (
    LibraryQueryInputError,
    ModelNotFoundError,
    NeuronNotFoundError,
    NoPartitionError,
    PartitionNotFoundError,
)

PREFIX = "library."
LATEST = "latest"
_PARTITION_DOC = "a partition id, or 'latest': the model's newest partition (needs model)"
_MODEL_DOC = "the model's name; needed to resolve partition 'latest', else checked against the partition's"


class LibraryParam(QueryParam):
    """A library query's parameter; a list may also be cast from ``a,b,c`` (not only from JSON)."""

    def cast(self, text: str) -> Any:
        """Turn a command-line string into this parameter's type (``-p NAME VALUE``)."""
        if self.type.split("[", 1)[0].strip() == "list" and not text.lstrip().startswith("["):
            return [part.strip() for part in text.split(",") if part.strip()]
        return super().cast(text)


class LibraryQuery(BaseModel):
    """One library query as a caller sees it: the parameters it takes from Python or ``-p``, and its columns."""

    model_config = ConfigDict(frozen=True)

    name: str  # short name: module_span (the CLI spells it module-span)
    query: str  # the catalog name: library.module_span
    summary: str
    description: str
    params: tuple[LibraryParam, ...]  # LibraryParam.cast turns a command-line string into the declared type
    columns: tuple[str, ...]

    def param(self, name: str) -> LibraryParam:
        """The named parameter; raises LibraryQueryInputError listing the known ones."""
        for param in self.params:
            if param.name == name:
                return param
        known = ", ".join(p.name for p in self.params)
        raise LibraryQueryInputError(f"Query {self.name!r} has no parameter {name!r}; it takes: {known}.")


def _columns(returns: str) -> tuple[str, ...]:
    # "a: int, b: list[int], c: str" → (a, b, c); commas inside brackets belong to a type
    columns, depth, current = [], 0, ""
    for char in returns + ",":
        depth += char == "["
        depth -= char == "]"
        if char == "," and depth == 0:
            columns.append(current.split(":", 1)[0].strip())
            current = ""
        else:
            current += char
    return tuple(column for column in columns if column)


def _is_partition_param(param: QueryParam) -> bool:
    return param.name == "partition" or param.name.startswith("partition_")


def _describe(query: NamedQuery) -> LibraryQuery:
    params: list[LibraryParam] = []
    declared = {p.name for p in query.params}
    if "model" not in declared and any(_is_partition_param(p) for p in query.params):
        params.append(LibraryParam(name="model", type="str", default=None, has_default=True, doc=_MODEL_DOC))
    for declared_param in query.params:
        param = LibraryParam(**declared_param.model_dump())
        if param.name == "partition" and not param.has_default:
            param = LibraryParam(name="partition", type="str", default=LATEST, has_default=True, doc=_PARTITION_DOC)
        elif param.name == "partition" and query.name == "library.neuron":
            param = param.model_copy(update={"default": LATEST, "doc": param.doc + "; default: the newest, if any"})
        elif _is_partition_param(param):
            param = param.model_copy(update={"doc": param.doc + ", or 'latest' (needs model)"})
        elif param.name == "models":
            param = param.model_copy(
                update={
                    "default": None,
                    "has_default": True,
                    "doc": "the models' names (a list, or 'a,b'); default: every ready model",
                }
            )
        params.append(param)
    return LibraryQuery(
        name=query.name[len(PREFIX) :],
        query=query.name,
        summary=query.summary,
        description=query.description,
        params=tuple(params),
        columns=_columns(query.returns),
    )


def library_queries() -> list[LibraryQuery]:
    """Every library query with its summary, parameters (as :func:`run_library_query` takes them) and columns.

    Returns
    -------
    list of LibraryQuery
        Sorted by name, for ``neuronmap query --list``.
    """
    return [_describe(q) for q in catalog.all_queries() if q.name.startswith(PREFIX)]


def library_query(name: str) -> LibraryQuery:
    """Look one query up by ``module_span``, ``module-span`` or ``library.module_span``.

    Raises
    ------
    neuronmap.cypher.UnknownQueryError
        With the nearest names, when there is no such library query.
    """
    short = name.strip().replace("-", "_")
    full = short if short.startswith(PREFIX) else PREFIX + short
    return _describe(catalog.get(full))


def resolve_partition(store: Store, model: str | None, partition_or_latest: str) -> str:
    """Turn ``'latest'`` into the model's newest partition id, and check that an explicit id exists.

    Parameters
    ----------
    store : Store
    model : str or None
        The model the partition must belong to; required for ``'latest'``.
    partition_or_latest : str
        A partition id, or ``'latest'``.

    Returns
    -------
    str
        The partition's id.

    Raises
    ------
    ModelNotFoundError
        ``'latest'`` for a model the store does not hold.
    NoPartitionError
        ``'latest'`` for a model without partitions (a PartitionNotFoundError).
    PartitionNotFoundError
        No partition has that id, or it belongs to another model than ``model``.
    LibraryQueryInputError
        ``'latest'`` without a model.
    """
    if partition_or_latest == LATEST:
        if not model:
            raise LibraryQueryInputError(
                "Partition 'latest' needs the model it belongs to: pass model (-p model NAME), or give a partition id."
            )
        _check_model(store, model)
        partitions = store.run("admin.list_partitions", model=model)  # newest first
        if not partitions:
            raise NoPartitionError(model)
        return str(partitions[0]["id"])
    rows = store.run("library.partition_stats", partition=partition_or_latest)
    if not rows or (model and rows[0]["model"] != model):
        raise PartitionNotFoundError(partition_or_latest, model)
    return partition_or_latest


def run_library_query(store: Store, name: str, /, **params: Any) -> Rows:
    """Run a library query by name, resolving what the ``.cypher`` file takes only as plain values.

    Parameters
    ----------
    store : Store
    name : str
        ``module_span``, ``module-span`` or ``library.module_span``; :func:`library_queries` lists them.
    **params
        The query's parameters as :func:`library_queries` lists them. ``None`` means "the default", so unset
        click options can be passed straight through. Partition parameters take an id or ``'latest'`` (with
        ``model``); ``models`` takes a list or ``'a,b'`` (default: every ready model); ``layer`` takes a name or
        an index.

    Returns
    -------
    Rows
        A list with one dict per row, keyed by the query's columns; ``.to_frame()`` gives a DataFrame.

    Raises
    ------
    neuronmap.cypher.UnknownQueryError, neuronmap.cypher.QueryParameterError
        An unknown query, or parameters that do not match its header.
    ModelNotFoundError, PartitionNotFoundError, NeuronNotFoundError, LibraryQueryInputError
        When the rows would otherwise come back empty for a reason the caller should hear about.

    Examples
    --------
    >>> partition = nm.cluster(store, model, nm.ClusterConfig(n_clusters=4))
    >>> rows = nm.run_query(store, "module-span", model=model, partition="latest")
    >>> sorted(row["cluster"] for row in rows)
    [0, 1, 2, 3]
    >>> sum(row["size"] for row in rows) == partition.n_neurons - partition.n_isolated
    True
    >>> rows.to_frame().columns[:3].tolist()
    ['cluster', 'size', 'first_layer']
    """
    query = library_query(name)
    given = {key: value for key, value in params.items() if value is not None}
    for key in given:
        query.param(key)  # an unknown parameter fails here, naming the known ones
    values = {p.name: p.default for p in query.params if p.has_default and p.default is not None}
    values.update(given)
    declared = {p.name for p in catalog.get(query.query).params}
    model = values.get("model")
    for key, value in list(values.items()):
        if key.startswith("partition") and key in declared and value is not None:
            values[key] = _resolve(store, query, model, key, str(value), explicit=key in given)
    prepare = _PREPARE.get(query.name)
    if prepare is not None:
        prepare(store, values)
    rows = store.run(query.query, **{key: value for key, value in values.items() if key in declared})
    check = _CHECK.get(query.name)
    if check is not None:
        check(store, values, rows)
    return Rows(rows, query=query.name, columns=query.columns)


def _resolve(
    store: Store, query: LibraryQuery, model: str | None, key: str, value: str, *, explicit: bool
) -> str | None:
    if query.name == "neuron" and value == LATEST and not explicit:
        # The neuron query marks edges by the newest partition when there is one, and simply does not mark
        # them when the model has none yet.
        partitions = store.run("admin.list_partitions", model=model) if model else []
        return str(partitions[0]["id"]) if partitions else None
    return resolve_partition(store, model, value)


def _check_model(store: Store, model: str) -> None:
    if not store.run("ingest.model_status", model=model):
        raise ModelNotFoundError(model)


def _prepare_compare_models(store: Store, values: dict[str, Any]) -> None:
    models = values.get("models")
    if models is None:
        models = [row["name"] for row in store.run("admin.list_models") if row["status"] == "ready"]
    elif isinstance(models, str):
        models = [part.strip() for part in models.split(",") if part.strip()]
    values["models"] = list(models)


def _prepare_compare_partitions(store: Store, values: dict[str, Any]) -> None:
    if "partition_a" not in values or "partition_b" not in values:
        return  # the named query's own check reports what is missing
    models = {
        store.run("library.partition_stats", partition=values[key])[0]["model"]
        for key in ("partition_a", "partition_b")
    }
    if len(models) > 1:
        raise LibraryQueryInputError(
            f"Partitions {values['partition_a']!r} and {values['partition_b']!r} belong to "
            f"different models ({', '.join(sorted(models))}); "
            "compare partitions of one model."
        )


def _check_compare_models(store: Store, values: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    found = {row["model"] for row in rows}
    for model in values["models"]:
        if model not in found:
            raise ModelNotFoundError(model)


def _prepare_neuron(store: Store, values: dict[str, Any]) -> None:
    model = values.get("model")
    if not model:
        raise LibraryQueryInputError("Query 'neuron' needs the model: pass model (-p model NAME).")
    _check_model(store, model)
    if values.get("layer") is not None:
        values["layer"] = str(values["layer"])  # a layer index may come as an int from Python
    by_position = values.get("layer") is not None and values.get("unit") is not None
    if values.get("ordinal") is None and not by_position:
        raise LibraryQueryInputError(
            "Query 'neuron' needs either layer and unit (-p layer fc1 -p unit 7) or ordinal (-p ordinal 1047)."
        )


def _check_neuron(store: Store, values: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    if rows:
        return
    where = (
        f"with ordinal {values['ordinal']}"
        if values.get("ordinal") is not None
        else f"{values['unit']} in layer {values['layer']!r}"
    )
    layers = ", ".join(
        f"{row['name']} ({row['size']})" for row in store.run("admin.model_layers", model=values["model"])
    )
    raise NeuronNotFoundError(values["model"], where, layers)


_PREPARE: dict[str, Callable[[Store, dict[str, Any]], None]] = {
    "compare_models": _prepare_compare_models,
    "compare_partitions": _prepare_compare_partitions,
    "neuron": _prepare_neuron,
}
_CHECK: dict[str, Callable[[Store, dict[str, Any], list[dict[str, Any]]], None]] = {
    "compare_models": _check_compare_models,
    "neuron": _check_neuron,
}


def query_names() -> Sequence[str]:
    """The short names of the library queries, e.g. for click's ``Choice``."""
    return [query.name for query in library_queries()]
