"""The library queries against a real Neo4j, each checked against the same figures computed with numpy from the
in-memory ModelGraph; partition resolution and its errors; the compare helpers; and every query's plan."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import neo4j
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from neuronmap.cypher import UnknownQueryError, catalog
from neuronmap.loaders.records import ModelGraph
from neuronmap.service.errors import (
    LibraryQueryInputError,
    ModelNotFoundError,
    NeuronNotFoundError,
    NoPartitionError,
    PartitionNotFoundError,
)
from neuronmap.service.store.compare import (
    adjusted_rand_index,
    compare_partitions,
    contingency_table,
    normalized_mutual_info,
)
from neuronmap.service.store.library import library_queries, library_query, resolve_partition, run_library_query
from tests.service.conftest import LibraryModels, StoredModel, reference_ncut

REL = 1e-9  # sums in Neo4j and numpy add in different orders


# ---------------------------------------------------------------------------------------------- the numpy side


def layer_slice(graph: ModelGraph, layer: int) -> slice:
    return slice(int(graph.offsets[layer]), int(graph.offsets[layer + 1]))


def expected_span(model: StoredModel, labels: np.ndarray) -> list[dict[str, Any]]:
    layer_of = model.graph.layer_of_ordinal()
    rows = []
    for c in np.unique(labels[labels >= 0]):
        per_layer = [int(np.count_nonzero(labels[layer_of == i] == c)) for i in range(len(model.names))]
        present = [i for i, n in enumerate(per_layer) if n]
        top = int(np.argmax(per_layer))
        rows.append(
            {
                "cluster": int(c),
                "size": int(np.count_nonzero(labels == c)),
                "first_layer": model.names[present[0]],
                "last_layer": model.names[present[-1]],
                "n_layers": len(present),
                "thickest_layer": model.names[top],
                "thickest": per_layer[top],
                "per_layer": per_layer,
            }
        )
    return rows


def expected_flow(model: StoredModel, labels: np.ndarray) -> dict[tuple, tuple[float, int]]:
    cells: dict[tuple, tuple[float, int]] = {}
    for block in model.graph.blocks:
        w = np.abs(block.weight)
        src, dst = labels[layer_slice(model.graph, block.src_layer)], labels[layer_slice(model.graph, block.dst_layer)]
        for ca in np.unique(src[src >= 0]):
            for cb in np.unique(dst[dst >= 0]):
                part = w[np.ix_(src == ca, dst == cb)]
                if np.count_nonzero(part):
                    key = (model.names[block.src_layer], model.names[block.dst_layer], int(ca), int(cb))
                    cells[key] = (float(part.sum()), int(np.count_nonzero(part)))
    return cells


def expected_cohesion(model: StoredModel, labels: np.ndarray) -> dict[int, dict[str, float]]:
    keep = labels >= 0
    a = model.graph.adjacency().toarray()[np.ix_(keep, keep)]
    lab, d = labels[keep], a.sum(axis=1)
    rows = {}
    for c in np.unique(lab):
        inside = lab == c
        vol, assoc = d[inside].sum(), a[np.ix_(inside, inside)].sum()
        rows[int(c)] = {
            "within": assoc / 2,
            "cut": vol - assoc,
            "vol": vol,
            "ncut_term": (vol - assoc) / (vol + 1e-8),
            "n_within": np.count_nonzero(a[np.ix_(inside, inside)]) // 2,
            "n_cut": np.count_nonzero(a[np.ix_(inside, ~inside)]),
            "size": int(inside.sum()),
        }
    return rows


def expected_core(model: StoredModel, labels: np.ndarray, limit: int) -> list[dict[str, Any]]:
    a = model.graph.adjacency().toarray()
    layer_of = model.graph.layer_of_ordinal()
    rows = []
    for c in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == c)
        inner = a[np.ix_(members, members)]
        within, n_within = inner.sum(axis=1), np.count_nonzero(inner, axis=1)
        order = [i for i in np.lexsort((members, -within)) if n_within[i] > 0][:limit]
        for rank, i in enumerate(order, start=1):
            n = int(members[i])
            rows.append(
                {
                    "cluster": int(c),
                    "rank": rank,
                    "layer": model.names[layer_of[n]],
                    "unit": n - int(model.graph.offsets[layer_of[n]]),
                    "ordinal": n,
                    "within": within[i],
                    "n_within": int(n_within[i]),
                    "degree": a[n].sum(),
                    "within_share": within[i] / a[n].sum(),
                }
            )
    return rows


def expected_paths(model: StoredModel, labels: np.ndarray) -> list[dict[str, Any]]:
    graph, layer_of = model.graph, model.graph.layer_of_ordinal()
    src, dst, w = graph.edges()
    w = np.abs(w)
    rows = []
    for c in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == c)
        first, last = int(layer_of[members].min()), int(layer_of[members].max())
        inside = (labels[src] == c) & (labels[dst] == c)
        strength: dict[int, float] = {}
        step: dict[int, tuple[int, float]] = {}
        for s, t, weight in zip(src[inside], dst[inside], w[inside]):
            strength[int(s)] = strength.get(int(s), 0.0) + weight
            if int(s) not in step or weight > step[int(s)][1]:
                step[int(s)] = (int(t), float(weight))
        starts = [n for n in strength if layer_of[n] == first]
        node = max(starts, key=lambda n: strength[n]) if starts else int(members[layer_of[members] == first].min())
        walk, weights = [node], []
        while layer_of[walk[-1]] < last and walk[-1] in step:
            nxt, weight = step[walk[-1]]
            walk.append(nxt)
            weights.append(weight)
        rows.append(
            {
                "cluster": int(c),
                "first_layer": model.names[first],
                "last_layer": model.names[last],
                "length": len(walk) - 1,
                "complete": bool(layer_of[walk[-1]] == last),
                "total": float(sum(weights)),
                "weakest": min(weights) if weights else None,
                "path": [f"{model.names[layer_of[n]]}:{n - graph.offsets[layer_of[n]]}" for n in walk],
                "ordinals": walk,
                "weights": weights,
            }
        )
    return rows


def approx_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def close(value: Any) -> Any:
        numeric = isinstance(value, float) or (isinstance(value, list) and all(isinstance(x, float) for x in value))
        return pytest.approx(value, rel=REL) if numeric and (isinstance(value, float) or value) else value

    return [{key: close(value) for key, value in row.items()} for row in rows]


PARTITIONS = ["a1", "a2", "b"]


# ---------------------------------------------------------------------------------------------- the queries


@pytest.mark.parametrize("key", PARTITIONS)
def test_module_span_counts_each_cluster_per_layer(store, library_models, key):
    model, partition = library_models.by_key(key)
    rows = run_library_query(store, "module_span", partition=partition)
    assert rows == expected_span(model, model.partitions[partition])


@pytest.mark.parametrize("key", PARTITIONS)
def test_module_flow_sums_weight_between_clusters_per_layer_pair(store, library_models, key):
    model, partition = library_models.by_key(key)
    labels = model.partitions[partition]
    rows = run_library_query(store, "module-flow", partition=partition)
    cells = expected_flow(model, labels)
    assert [(r["src_layer"], r["dst_layer"], r["src_cluster"], r["dst_cluster"]) for r in rows] == [
        key for key in sorted(cells, key=lambda k: (model.names.index(k[0]), model.names.index(k[1]), k[2], k[3]))
    ]
    for row in rows:
        weight, n_edges = cells[(row["src_layer"], row["dst_layer"], row["src_cluster"], row["dst_cluster"])]
        out_total = sum(
            v[0]
            for k, v in cells.items()
            if k[:2] == (row["src_layer"], row["dst_layer"]) and k[2] == row["src_cluster"]
        )
        in_total = sum(
            v[0]
            for k, v in cells.items()
            if k[:2] == (row["src_layer"], row["dst_layer"]) and k[3] == row["dst_cluster"]
        )
        assert row["n_edges"] == n_edges
        assert row["weight"] == pytest.approx(weight, rel=REL)
        assert row["share_out"] == pytest.approx(weight / out_total, rel=REL)
        assert row["share_in"] == pytest.approx(weight / in_total, rel=REL)


@pytest.mark.parametrize("key", PARTITIONS)
def test_module_cohesion_adds_up_to_the_ncut(store, library_models, key):
    model, partition = library_models.by_key(key)
    labels = model.partitions[partition]
    rows = run_library_query(store, "module_cohesion", partition=partition)
    expected = expected_cohesion(model, labels)
    assert [row["cluster"] for row in rows] == sorted(expected)
    for row in rows:
        want = expected[row["cluster"]]
        assert (row["size"], row["n_within"], row["n_cut"]) == (want["size"], want["n_within"], want["n_cut"])
        for column in ("within", "cut", "vol", "ncut_term"):
            assert row[column] == pytest.approx(want[column], rel=REL), column
    assert sum(row["ncut_term"] for row in rows) == pytest.approx(reference_ncut(model.graph, labels), rel=REL)


@pytest.mark.parametrize("key", PARTITIONS)
def test_module_core_ranks_neurons_by_within_cluster_weight(store, library_models, key):
    model, partition = library_models.by_key(key)
    rows = run_library_query(store, "module_core", partition=partition, limit=3)
    assert rows == approx_rows(expected_core(model, model.partitions[partition], 3))


@pytest.mark.parametrize("key", PARTITIONS)
def test_module_paths_follow_the_heaviest_within_cluster_edge(store, library_models, key):
    model, partition = library_models.by_key(key)
    rows = run_library_query(store, "module_paths", partition=partition)
    assert rows == approx_rows(expected_paths(model, model.partitions[partition]))
    if key != "a2":  # planted modules span every layer, and a greedy walk inside one reaches the end
        assert all(row["complete"] for row in rows)


def test_neuron_shows_memberships_and_strongest_edges_marked_by_the_latest_partition(store, library_models):
    model = library_models.a
    graph = model.graph
    (first, labels_1), (latest, labels_2) = model.partitions.items()
    n = int(graph.offsets[1]) + 3  # fc1:3
    rows = run_library_query(store, "neuron", model=model.name, layer="fc1", unit=3, limit=4)
    assert rows == run_library_query(store, "neuron", model=model.name, layer_index=1, unit=3, limit=4)
    assert rows == run_library_query(store, "neuron", model=model.name, ordinal=n, limit=4)
    assert rows[0] == {
        "kind": "neuron",
        "rank": 0,
        "layer": "fc1",
        "unit": 3,
        "ordinal": n,
        "partition": None,
        "cluster": None,
        "n": None,
        "w": pytest.approx(graph.biases[1][3], rel=REL),
        "within": None,
    }
    assert [(r["kind"], r["partition"], r["cluster"], r["n"]) for r in rows if r["kind"] == "member"] == [
        ("member", latest, labels_2[n], int(np.count_nonzero(labels_2 == labels_2[n]))),
        ("member", first, labels_1[n], int(np.count_nonzero(labels_1 == labels_1[n]))),
    ]
    for kind, weights, offset in [
        ("in", graph.blocks[0].weight[:, 3], graph.offsets[0]),
        ("out", graph.blocks[1].weight[3, :], graph.offsets[2]),
    ]:
        order = [i for i in np.lexsort((np.arange(weights.size), -np.abs(weights))) if weights[i] != 0][:4]
        expected = []
        for rank, i in enumerate(order, start=1):
            other = int(offset + i)
            cluster = int(labels_2[other]) if labels_2[other] >= 0 else None
            expected.append(
                {
                    "kind": kind,
                    "rank": rank,
                    "layer": model.names[graph.layer_of_ordinal()[other]],
                    "unit": int(i),
                    "ordinal": other,
                    "partition": latest,
                    "cluster": cluster,
                    "n": None,
                    "w": pytest.approx(weights[i], rel=REL),
                    "within": None if cluster is None else cluster == labels_2[n],
                }
            )
        assert [r for r in rows if r["kind"] == kind] == expected


def test_neuron_outside_the_marking_partition_gets_no_marks(store, library_models):
    model = library_models.a
    (first, labels_1), (latest, _) = model.partitions.items()
    rows = run_library_query(store, "neuron", model=model.name, layer="input", unit=5, limit=2)
    assert [(r["partition"], r["cluster"]) for r in rows if r["kind"] == "member"] == [(first, labels_1[5])]
    assert [r["within"] for r in rows if r["kind"] == "out"] == [None, None]
    marked = run_library_query(store, "neuron", model=model.name, ordinal=5, limit=2, partition=first)
    assert all(r["within"] is not None for r in marked if r["kind"] == "out")


def test_neuron_errors_name_the_way_out(store, library_models):
    model = library_models.a.name
    with pytest.raises(NeuronNotFoundError, match=r"no neuron 99 in layer 'fc1'.*fc1 \(hidden, Linear, 10\)"):
        run_library_query(store, "neuron", model=model, layer="fc1", unit=99)
    with pytest.raises(NeuronNotFoundError, match="no neuron 3 in layer 'conv9'"):
        run_library_query(store, "neuron", model=model, layer="conv9", unit=3)
    with pytest.raises(LibraryQueryInputError, match="layer and unit.*or ordinal"):
        run_library_query(store, "neuron", model=model, unit=3)
    with pytest.raises(ModelNotFoundError):
        run_library_query(store, "neuron", model=model + "-nope", ordinal=0)
    rows = run_library_query(store, "neuron", model=library_models.unclustered, ordinal=0)  # no partition: no marks
    assert [r["kind"] for r in rows] == ["neuron", "out", "out"] and rows[1]["within"] is None


def test_compare_models_lists_the_newest_or_every_partition(store, library_models):
    a, b = library_models.a, library_models.b
    rows = run_library_query(store, "compare_models", models=[b.name, a.name, library_models.unclustered])
    assert [(r["model"], r["partition"]) for r in rows] == [
        (b.name, list(b.partitions)[0]),
        (a.name, list(a.partitions)[1]),
        (library_models.unclustered, None),
    ]
    assert (rows[1]["n_neurons"], rows[1]["n_edges"], rows[1]["k"]) == (a.graph.n_neurons, a.graph.n_edges, 4)
    assert rows[1]["ncut"] == pytest.approx(reference_ncut(a.graph, list(a.partitions.values())[1]), rel=REL)
    every = run_library_query(store, "compare_models", models=f"{a.name},{b.name}", all_partitions=True)
    assert [r["partition"] for r in every] == [*reversed(a.partitions), *b.partitions]
    first = every[1]
    # the fixture stores its p-value as `percentile`, as partitions stored before the rename do: still read
    assert (first["z"], first["p_value"], first["n_null"]) == (-12.5, pytest.approx(1 / 41), 40)
    with pytest.raises(ModelNotFoundError, match="nope"):
        run_library_query(store, "compare_models", models=[a.name, "nope"])
    assert {r["model"] for r in run_library_query(store, "compare_models")} >= {a.name, b.name}


def test_compare_partitions_table_ari_and_nmi(store, library_models):
    model = library_models.a
    (first, labels_1), (second, labels_2) = model.partitions.items()
    rows = run_library_query(store, "compare_partitions", model=model.name, partition_a=first, partition_b="latest")
    expected: dict[tuple[int, int], int] = {}
    for x, y in zip(labels_1, labels_2):
        expected[(int(x), int(y))] = expected.get((int(x), int(y)), 0) + 1
    assert {(r["cluster_a"], r["cluster_b"]): r["n"] for r in rows} == expected
    result = compare_partitions(store, first, "latest", model=model.name)
    both = (labels_1 >= 0) & (labels_2 >= 0)
    assert result.partition_b == second and result.n_common == int(both.sum())
    assert result.ari == pytest.approx(adjusted_rand_score(labels_1[both], labels_2[both]), rel=1e-12)
    assert result.nmi == pytest.approx(normalized_mutual_info_score(labels_1[both], labels_2[both]), rel=1e-12)
    with pytest.raises(LibraryQueryInputError, match="different models"):
        compare_partitions(store, first, list(library_models.b.partitions)[0])
    same = compare_partitions(store, first, first)
    assert (same.ari, same.nmi) == (1.0, pytest.approx(1.0))


@pytest.mark.parametrize("seed", range(4))
def test_ari_and_nmi_equal_sklearn(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 1 + seed, 60), rng.integers(0, 3, 60)
    b[:30] = a[:30]
    rows = [{"cluster_a": int(x), "cluster_b": int(y), "n": 1} for x, y in zip(a, b)]
    table, _, _ = contingency_table(rows)
    assert adjusted_rand_index(table) == pytest.approx(adjusted_rand_score(a, b), rel=1e-12, abs=1e-15)
    assert normalized_mutual_info(table) == pytest.approx(normalized_mutual_info_score(a, b), rel=1e-12, abs=1e-15)


# ---------------------------------------------------------------------------------------------- resolution


def test_latest_resolves_to_the_newest_partition(store, library_models):
    model = library_models.a
    assert resolve_partition(store, model.name, "latest") == list(model.partitions)[1]
    assert run_library_query(store, "module_span", model=model.name) == run_library_query(
        store, "module_span", partition=list(model.partitions)[1]
    )
    stats = run_library_query(store, "partition_stats", model=model.name, partition=list(model.partitions)[0])
    assert (stats[0]["k"], stats[0]["n_clusters"], len(stats[0]["null_ncuts"])) == (3, 3, 40)


def test_unknown_partitions_and_models_raise_clear_errors(store, library_models):
    a, b = library_models.a, library_models.b
    with pytest.raises(PartitionNotFoundError, match="no partition 'nope/p-0'.*neuronmap partitions"):
        run_library_query(store, "module_span", partition="nope/p-0")
    with pytest.raises(PartitionNotFoundError, match=f"for model '{a.name}'"):
        run_library_query(store, "module_flow", model=a.name, partition=list(b.partitions)[0])
    with pytest.raises(NoPartitionError, match="has no partition yet.*neuronmap cluster"):
        run_library_query(store, "module_cohesion", model=library_models.unclustered)
    with pytest.raises(ModelNotFoundError):
        run_library_query(store, "module_core", model="no-such-model")
    with pytest.raises(LibraryQueryInputError, match="needs the model"):
        run_library_query(store, "module_paths")
    with pytest.raises(LibraryQueryInputError, match="no parameter 'colour'.*partition"):
        run_library_query(store, "module_span", partition=list(a.partitions)[0], colour="red")
    with pytest.raises(UnknownQueryError, match="library.module_span"):
        run_library_query(store, "module_spam")


def test_listing_describes_every_library_query():
    listed = {q.name: q for q in library_queries()}
    assert set(listed) >= {
        "module_span",
        "module_flow",
        "module_cohesion",
        "module_core",
        "neuron",
        "module_paths",
        "compare_models",
        "compare_partitions",
    }
    span = listed["module_span"]
    assert [p.name for p in span.params] == ["model", "partition", "edges"] and span.params[1].default == "latest"
    assert span.params[2].default == "weight"
    assert span.columns[:3] == ("cluster", "size", "first_layer") and "per_layer" in span.columns
    assert library_query("module-core").param("limit").cast("7") == 7
    models = library_query("compare_models").param("models")
    assert models.cast("a, b") == ["a", "b"] and models.cast('["a"]') == ["a"]
    assert all(q.summary and q.columns for q in listed.values())


# ---------------------------------------------------------------------------------------------- plans


def plan_operators(plan: dict[str, Any]) -> set[str]:
    found = {plan["operatorType"].split("@")[0]}
    for child in plan.get("children", []):
        found |= plan_operators(child)
    return found


@pytest.fixture(scope="module")
def driver(connection) -> Iterator[neo4j.Driver]:
    with neo4j.GraphDatabase.driver(
        connection.uri, auth=(connection.user, connection.password.get_secret_value()), notifications_min_severity="OFF"
    ) as driver:
        yield driver


def example_params(library_models: LibraryModels) -> dict[str, dict[str, Any]]:
    a = library_models.a
    first, second = list(a.partitions)
    return {
        "module_span": {"partition": first},
        "module_flow": {"partition": first},
        "module_cohesion": {"partition": first},
        "module_core": {"partition": first, "limit": 5},
        "module_paths": {"partition": first},
        "partition_stats": {"partition": first},
        "neuron": {"model": a.name, "layer": "fc1", "unit": 3, "ordinal": None, "partition": first, "limit": 5},
        "compare_models": {"models": [a.name], "all_partitions": False},
        "compare_partitions": {"partition_a": first, "partition_b": second},
        "important_modules": {"partition": first},
        "coherent_modules": {"partition": first},
    }


@pytest.mark.parametrize("name", [q.name for q in library_queries()])
def test_plans_use_indexes_not_scans(driver, store, library_models, name):
    query = catalog.get(f"library.{name}")
    params = query.check(example_params(library_models)[name])
    with driver.session(database=store.database) as session:
        plan = session.run("EXPLAIN " + query.text, params).consume().plan
    operators = plan_operators(plan)
    assert not operators & {"AllNodesScan", "NodeByLabelScan"}, operators
    assert operators & {"NodeUniqueIndexSeek", "NodeIndexSeek"}, operators
