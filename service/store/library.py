"""The library: named questions about a model's modules (``cypher/queries/library/*.cypher``), run by name.

The ``.cypher`` files take plain partition ids; this module adds what a person types: ``partition='latest'``
(the model's newest partition of one graph: its weights unless ``edges`` names an activation graph), model lists
given as ``"a,b"``, a layer by name (or by index, spelled ``layer_index``), and errors that say what is missing
instead of an empty table. :func:`show_library_query` prints a statement as it would run, its parameters written
in, so it can be pasted into cypher-shell or Neo4j Browser. The CLI (``neuronmap query …``) is a thin layer over
:func:`library_queries`, :func:`run_library_query` and :func:`show_library_query`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from neuronmap.cypher import Store, catalog
from neuronmap.cypher.catalog import NamedQuery, QueryParam
from neuronmap.options import LATEST
from neuronmap.results import Rows
from neuronmap.service.errors import (
    AssessmentNotFoundError,
    LibraryQueryInputError,
    ModelNotFoundError,
    NeuronNotFoundError,
    NoPartitionError,
    PartitionNotFoundError,
    WeightRelationshipsMissingError,
)
from neuronmap.service.store.pull import find_layer, layer_label

PREFIX = "library."
WEIGHT = "weight"
_PARTITION_DOC = "a partition id, or 'latest': the model's newest partition of the edges graph (needs model)"
_MODEL_DOC = "the model's name; needed to resolve partition 'latest', else checked against the partition's"
_EDGES_DOC = "the graph whose newest partition 'latest' means: weight, or an activation graph's name"


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
    takes_partition = any(_is_partition_param(p) for p in query.params)
    if "model" not in declared and takes_partition:
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
    if "edges" not in declared and takes_partition:
        params.append(LibraryParam(name="edges", type="str", default=WEIGHT, has_default=True, doc=_EDGES_DOC))
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


class LibraryRows(Rows):
    """The rows of a library query, with what was resolved to get them.

    ``model`` is the model the rows describe (None for a query over several); ``resolved`` maps each partition
    parameter given as ``'latest'`` (or left to default to it) to the id it resolved to, so callers can say which
    partition they used.
    """

    def __init__(
        self,
        rows: Iterable[dict[str, Any]] = (),
        *,
        query: str = "",
        columns: Sequence[str] = (),
        model: str | None = None,
        edges: str = WEIGHT,
        resolved: dict[str, str] | None = None,
    ) -> None:
        super().__init__(rows, query=query, columns=columns)
        self.model = model
        self.edges = edges
        self.resolved = dict(resolved or {})


@dataclass(frozen=True)
class PreparedQuery:
    """A library query with its parameters resolved, ready to run: :func:`prepare_library_query`'s answer."""

    query: LibraryQuery
    values: dict[str, Any]  # every parameter as the library sees it (model and edges included)
    params: dict[str, Any]  # what the statement runs with: exactly its declared parameters, defaults filled in
    model: str | None
    edges: str
    resolved: dict[str, str] = field(default_factory=dict)  # partition parameter → the id 'latest' became


def graph_name(edges: str | None) -> str:
    """``weight graph`` or ``activation graph 'NAME'``: the graph a partition was cut from, for messages."""
    return "weight graph" if (edges or WEIGHT) == WEIGHT else f"activation graph {edges!r}"


def describe_latest(model: str | None, partition: str, edges: str = WEIGHT) -> str:
    """The line a command prints after resolving ``'latest'``: which partition it used, and why."""
    owner = f"{model}'s" if model else "the model's"
    return f"partition latest = {partition}: the newest partition of {owner} {graph_name(edges)}"


def resolve_partition(store: Store, model: str | None, partition_or_latest: str, *, edges: str = WEIGHT) -> str:
    """Turn ``'latest'`` into the model's newest partition of one graph, and check that an explicit id exists.

    Parameters
    ----------
    store : Store
    model : str or None
        The model the partition must belong to; required for ``'latest'``.
    partition_or_latest : str
        A partition id, or ``'latest'``.
    edges : str, default "weight"
        The graph whose newest partition ``'latest'`` means: ``"weight"`` (the model's weights), or the name of
        one of its activation graphs. An explicit id is taken as it is, whatever its graph.

    Returns
    -------
    str
        The partition's id.

    Raises
    ------
    ModelNotFoundError
        ``'latest'`` for a model the store does not hold.
    NoPartitionError
        ``'latest'`` for a model without a partition of that graph (a PartitionNotFoundError); the message names
        the graphs it does have partitions of.
    PartitionNotFoundError
        No partition has that id, or it belongs to another model than ``model``.
    LibraryQueryInputError
        ``'latest'`` without a model.
    """
    return _lookup(store, model, partition_or_latest, edges)[0]


def _lookup(store: Store, model: str | None, partition_or_latest: str, edges: str) -> tuple[str, str]:
    """(the partition's id, its model)."""
    if partition_or_latest == LATEST:
        if not model:
            raise LibraryQueryInputError(
                "Partition 'latest' needs the model it belongs to: pass model (-p model NAME), or give a partition id."
            )
        _check_model(store, model)
        partitions = store.run("admin.list_partitions", model=model)  # newest first
        of_graph = [row for row in partitions if (row["edges"] or WEIGHT) == edges]
        if not of_graph:
            others = sorted({row["edges"] or WEIGHT for row in partitions}, key=lambda graph: (graph != WEIGHT, graph))
            raise NoPartitionError(model, edges=edges, others=others)
        return str(of_graph[0]["id"]), model
    rows = store.run("library.partition_stats", partition=partition_or_latest)
    if not rows or (model and rows[0]["model"] != model):
        raise PartitionNotFoundError(partition_or_latest, model)
    return partition_or_latest, str(rows[0]["model"])


def prepare_library_query(store: Store, name: str, /, **params: Any) -> PreparedQuery:
    """Check and resolve a library query's parameters as :func:`run_library_query` does, without running it.

    Returns
    -------
    PreparedQuery
        ``params`` holds the statement's parameters, ``'latest'`` resolved and defaults filled in.

    Raises
    ------
    As :func:`run_library_query`, before the statement runs.
    """
    query = library_query(name)
    given = {key: value for key, value in params.items() if value is not None}
    for key in given:
        query.param(key)  # an unknown parameter fails here, naming the known ones
    values = {p.name: p.default for p in query.params if p.has_default and p.default is not None}
    values.update(given)
    named = catalog.get(query.query)
    declared = {p.name for p in named.params}
    model = values.get("model")
    edges = str(values.get("edges") or WEIGHT)
    resolved: dict[str, str] = {}
    owners: set[str] = set()
    for key, value in list(values.items()):
        if key.startswith("partition") and key in declared and value is not None:
            partition, owner = _resolve(store, query, model, str(value), edges, explicit=key in given)
            values[key] = partition
            if partition is not None and value == LATEST:
                resolved[key] = partition
            owners |= {owner} if owner else set()
    prepare = _PREPARE.get(query.name)
    if prepare is not None:
        prepare(store, values)
    statement = named.check({key: value for key, value in values.items() if key in declared})
    owner = model or (owners.pop() if len(owners) == 1 else None)
    if query.name in _WALKS_WEIGHT_EDGES and edges == WEIGHT and owner is not None:
        _check_weight_relationships(store, owner, query.name)
    return PreparedQuery(query=query, values=values, params=statement, model=owner, edges=edges, resolved=resolved)


def run_library_query(store: Store, name: str, /, **params: Any) -> LibraryRows:
    """Run a library query by name, resolving what the ``.cypher`` file takes only as plain values.

    Parameters
    ----------
    store : Store
    name : str
        ``module_span``, ``module-span`` or ``library.module_span``; :func:`library_queries` lists them.
    **params
        The query's parameters as :func:`library_queries` lists them. ``None`` means "the default", so unset
        click options can be passed straight through. Partition parameters take an id or ``'latest'`` (with
        ``model``): the newest partition of the ``edges`` graph, ``"weight"`` unless it names an activation
        graph. ``models`` takes a list or ``'a,b'`` (default: every ready model); ``layer`` takes a layer's name,
        ``layer_index`` its index.

    Returns
    -------
    LibraryRows
        A list with one dict per row, keyed by the query's columns; ``.to_frame()`` gives a DataFrame, and
        ``.resolved`` the partition ids that ``'latest'`` stood for.

    Raises
    ------
    neuronmap.cypher.UnknownQueryError, neuronmap.cypher.QueryParameterError
        An unknown query, or parameters that do not match its header.
    ModelNotFoundError, PartitionNotFoundError, NeuronNotFoundError, LibraryQueryInputError
        When the rows would otherwise come back empty for a reason the caller should hear about.
    AssessmentNotFoundError
        ``important_modules`` or ``coherent_modules`` on a partition that has no such assessment; the message
        names the model's partitions that have one.

    Examples
    --------
    >>> partition = nm.cluster(store, model, nm.ClusterConfig(n_clusters=4))
    >>> rows = nm.run_query(store, "module-span", model=model, partition="latest")
    >>> sorted(row["cluster"] for row in rows)
    [0, 1, 2, 3]
    >>> sum(row["size"] for row in rows) == partition.n_neurons - partition.n_isolated
    True
    >>> rows.resolved["partition"] == partition.id
    True
    >>> rows.to_frame().columns[:3].tolist()
    ['cluster', 'size', 'first_layer']
    """
    prepared = prepare_library_query(store, name, **params)
    rows = store.run(prepared.query.query, **prepared.params)
    check = _CHECK.get(prepared.query.name)
    if check is not None:
        check(store, prepared.values, rows)
    return LibraryRows(
        rows,
        query=prepared.query.name,
        columns=prepared.query.columns,
        model=prepared.model,
        edges=prepared.edges,
        resolved=prepared.resolved,
    )


def _resolve(
    store: Store, query: LibraryQuery, model: str | None, value: str, edges: str, *, explicit: bool
) -> tuple[str | None, str | None]:
    if query.name == "neuron" and value == LATEST and not explicit:
        # The neuron query marks edges by the newest partition when there is one, and simply does not mark
        # them when the model has none yet.
        partitions = store.run("admin.list_partitions", model=model) if model else []
        of_graph = [row for row in partitions if (row["edges"] or WEIGHT) == edges]
        return (str(of_graph[0]["id"]) if of_graph else None), model
    return _lookup(store, model, value, edges)


def layer_labels(store: Store, model: str) -> dict[str, str]:
    """Each layer's name → how tables print it: ``0 (hidden, Linear, 64)``; the output layer says ``output``."""
    return {str(row["name"]): layer_label(row) for row in store.run("admin.model_layers", model=model)}


# ---------------------------------------------------------------------------------------------- --show


_PARAM_REFERENCE = re.compile(r"\$(\w+)")
_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def cypher_literal(value: Any) -> str:
    """A value written as a Cypher literal: ``'text'`` (escaped), numbers, ``true``, ``null``, lists and maps.

    For printing a statement that a person pastes; neuronmap itself only ever runs statements with parameters.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise LibraryQueryInputError(f"{value!r} has no Cypher literal; pass a finite number.")
        return repr(value)
    if isinstance(value, str):
        escaped = "".join(_ESCAPES.get(char, char if char.isprintable() else f"\\u{ord(char):04x}") for char in value)
        return f"'{escaped}'"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(cypher_literal(item) for item in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"`{str(key).replace('`', '``')}`: {cypher_literal(item)}" for key, item in value.items())
        return "{" + items + "}"
    raise LibraryQueryInputError(f"A {type(value).__name__} has no Cypher literal.")


def _header(query: LibraryQuery) -> list[str]:
    """The query file's own ``//`` header, introduced by where it lives."""
    path = Path(catalog.path_of(query.query))
    header = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("//"):
            header.append(line)
        elif line.strip():
            break
    spelled = query.name.replace("_", "-")
    extra = [p.name for p in query.params if p.name not in {q.name for q in catalog.get(query.query).params}]
    lines = [f"// {query.query}: cypher/queries/library/{query.name}.cypher (`neuronmap query {spelled}`)", *header]
    if extra:
        lines.append(
            f"// neuronmap also takes {' and '.join(extra)}, to turn partition 'latest' into an id before it runs "
            "the statement."
        )
    return lines


def library_query_text(name: str, prepared: PreparedQuery | None = None) -> str:
    """A library query as ``neuronmap query NAME --show`` prints it: ``//`` comments, then the statement.

    Without ``prepared``, the statement keeps its ``$parameters``, and the comments say how to set them. With it,
    the resolved parameters (``'latest'`` turned into an id, defaults filled in) are written into the statement as
    literals, so that it runs as it is in cypher-shell, Neo4j Browser or a driver, and returns the rows that
    ``neuronmap query`` returns.
    """
    query = prepared.query if prepared is not None else library_query(name)
    named = catalog.get(query.query)
    lines = _header(query)
    if prepared is None:
        lines.append("//")
        lines.append("// Set its parameters first (cypher-shell, Neo4j Browser), for example:")
        for param in named.params:
            value = cypher_literal(param.default) if param.has_default else "…"
            lines.append(f"//   :param {param.name} => {value}")
        spelled = query.name.replace("_", "-")
        lines.append(f"// or let neuronmap write them in: neuronmap query {spelled} --show --model NAME …")
        lines.append(named.text)
        return "\n".join(lines) + "\n"
    lines.append("//")
    lines.append("// Its parameters, written into the statement below:")
    for param in named.params:
        note = ""
        if param.name in prepared.resolved:
            note = f"   (latest: the newest partition of {prepared.model}'s {graph_name(prepared.edges)})"
        lines.append(f"//   {param.name} = {cypher_literal(prepared.params.get(param.name))}{note}")
    text = _PARAM_REFERENCE.sub(lambda match: cypher_literal(prepared.params.get(match.group(1))), named.text)
    lines.append(text)
    return "\n".join(lines) + "\n"


def show_library_query(store: Store, name: str, /, **params: Any) -> str:
    """The statement of a library query with its parameters resolved and written in (see
    :func:`library_query_text`); the parameters are those of :func:`run_library_query`."""
    return library_query_text(name, prepare_library_query(store, name, **params))


# ---------------------------------------------------------------------------------------------- per query


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


def _layer_list(layers: Sequence[dict[str, Any]]) -> str:
    return "; ".join(f"{layer_label(layer)} at index {layer['index']}" for layer in layers)


def _prepare_neuron(store: Store, values: dict[str, Any]) -> None:
    model = values.get("model")
    if not model:
        raise LibraryQueryInputError("Query 'neuron' needs the model: pass model (-p model NAME).")
    _check_model(store, model)
    layer, index = values.get("layer"), values.get("layer_index")
    if layer is not None or index is not None:
        layers = store.run("admin.model_layers", model=model)
        text = None if layer is None else str(layer)  # a layer is named by its name, also when Python passes an int
        if text is not None and index is None and not text.isdigit() and text not in {l["name"] for l in layers}:
            where = f"{values.get('unit')} in layer {text!r}"
            raise NeuronNotFoundError(model, where, _layer_list(layers))
        found = find_layer(layers, text, index, error=LibraryQueryInputError, index_option="--layer-index")
        values["layer"], values["layer_index"] = str(found["name"]), int(found["index"])
    by_position = values.get("layer") is not None and values.get("unit") is not None
    if values.get("ordinal") is None and not by_position:
        raise LibraryQueryInputError(
            "Query 'neuron' needs either layer and unit (-p layer fc1 -p unit 7; -p layer_index 1 for a layer's "
            "index) or ordinal (-p ordinal 1047)."
        )


def _check_neuron(store: Store, values: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    if rows:
        return
    where = (
        f"with ordinal {values['ordinal']}"
        if values.get("ordinal") is not None
        else f"{values['unit']} in layer {values['layer']!r}"
    )
    raise NeuronNotFoundError(
        values["model"], where, _layer_list(store.run("admin.model_layers", model=values["model"]))
    )


_COHERENCE = ("coherence_features", "coherence_examples", "coherence_logits", "coherence_inputs")


def _check_assessed(methods: Sequence[str]) -> Callable[[Store, dict[str, Any], list[dict[str, Any]]], None]:
    """No rows because the partition was never assessed (rather than nothing passing): say which partitions were."""

    def check(store: Store, values: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        asked = [values["method"]] if values.get("method") else list(methods)
        partition = values.get("partition")
        if rows or partition is None:
            return
        if any(row["method"] in asked for row in store.run("assessment.list_assessments", partition=partition)):
            return  # assessed: nothing passed alpha
        model = store.run("library.partition_stats", partition=partition)[0]["model"]
        assessed = store.run("assessment.assessed_partitions", model=model, methods=asked)
        if assessed:
            where = "; the partitions of {} that have one: {} (pass --partition ID{})".format(
                repr(model),
                ", ".join(f"{row['partition']} ({graph_name(row['edges'])})" for row in assessed),
                ", or --edges NAME for the newest of an activation graph" if values.get("edges") else "",
            )
        else:
            where = f"; no partition of {model!r} has one yet"
        raise AssessmentNotFoundError(f"of {' or '.join(asked)} for partition {partition!r}{where}")

    return check


# The queries that walk single WEIGHT relationships, which a model ingested with --no-relationships lacks.
_WALKS_WEIGHT_EDGES = frozenset({"module_cohesion", "module_core", "module_flow", "module_paths", "neuron"})


def _check_weight_relationships(store: Store, model: str, query: str) -> None:
    rows = store.run("admin.model_storage", model=model)
    if rows and rows[0]["weight_relationships"] is False:
        raise WeightRelationshipsMissingError(model, query.replace("_", "-"))


_PREPARE: dict[str, Callable[[Store, dict[str, Any]], None]] = {
    "compare_models": _prepare_compare_models,
    "compare_partitions": _prepare_compare_partitions,
    "neuron": _prepare_neuron,
}
_CHECK: dict[str, Callable[[Store, dict[str, Any], list[dict[str, Any]]], None]] = {
    "compare_models": _check_compare_models,
    "neuron": _check_neuron,
    "important_modules": _check_assessed(("importance",)),
    "coherent_modules": _check_assessed(_COHERENCE),
}


def query_names() -> Sequence[str]:
    """The short names of the library queries, e.g. for click's ``Choice``."""
    return [query.name for query in library_queries()]
