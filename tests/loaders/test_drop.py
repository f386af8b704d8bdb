"""Drop, replace and leases against the real Neo4j: bounded batches, the 'deleting' state, one writer at a time.

The scale check (ten 3.96M-edge models dropped and replaced on the default heap) is bench/drop.py; here tiny
batch sizes force the same many-batch paths on small models.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import threading
import time

import numpy as np
import pytest

from neuronmap.loaders.errors import BadNameError, LeaseLostError, ModelBusyError
from neuronmap.loaders.ingest import lease as leases
from neuronmap.loaders.ingest.activations import delete_activation_graph, graph_status, ingest_activation_graph
from neuronmap.loaders.ingest.names import MAX_NAME_CHARS
from neuronmap.loaders.ingest.weights import delete_model, edge_batches, ingest, model_status
from neuronmap.service.errors import ActivationGraphNotReadyError, ModelNotReadyError
from neuronmap.service.store.activation_pull import pull_activation_graph
from neuronmap.service.store.pull import pull_subgraph
from neuronmap.service.store.writeback import new_partition_id, write_partition
from tests.loaders.test_ingest import Crash, layered_graph, stored_adjacency


class Flaky:
    """The store, except that the named query raises Crash once it has run ``after`` times (a killed batch loop)."""

    def __init__(self, store, name: str, after: int) -> None:
        self.store, self.name, self.after, self.calls = store, name, after, 0

    def run(self, name, /, **params):
        if name == self.name:
            self.calls += 1
            if self.calls > self.after:
                raise Crash(f"injected before {name} #{self.calls}")
        return self.store.run(name, **params)

    def __getattr__(self, attribute):
        return getattr(self.store, attribute)


def counts(store, model):
    return store.run("admin.model_counts", model=model)[0]


def exact(graph):
    return {
        "n_layers": len(graph.layers),
        "n_neurons": graph.n_neurons,
        "n_edges": graph.n_edges,
        "n_block_edges": graph.n_edges,
    }


def with_partition(store, model, graph):
    partition = new_partition_id(model)
    labels = np.arange(graph.n_neurons) % 3
    write_partition(store, model, partition, {"k": 3}, labels, np.arange(graph.n_neurons))
    return partition


# -- item 6: every transaction sized by the relationships it touches -------------------------------------------


def test_a_wide_neuron_is_split_across_write_batches(store, model_id):
    graph = layered_graph([2, 25, 3])  # each input neuron has 25 edges, more than a batch
    batches = list(edge_batches(graph, 10))
    assert max(count for *_, count in batches) <= 10
    assert all(sum(len(row["dst"]) for row in rows) == count for _, _, rows, count in batches)
    assert sum(count for *_, count in batches) == graph.n_edges
    assert ingest(store, model_id, graph, batch_size=10) == graph.n_edges
    assert counts(store, model_id) == exact(graph)
    assert abs(stored_adjacency(store, model_id, graph.n_neurons) - graph.adjacency()).max() == 0.0


def test_drop_deletes_relationships_in_bounded_batches_then_everything_else(store, model_id):
    graph = layered_graph([6, 30, 5])
    other = model_id + "-other"
    ingest(store, model_id, graph)
    ingest(store, other, layered_graph([4, 4]))
    partition = with_partition(store, model_id, graph)
    seen: list[int] = []
    assert delete_model(store, model_id, batch_size=7, on_batch=seen.append) == graph.n_neurons
    assert max(seen) <= 7 and sum(seen) == graph.n_edges  # the partition went whole, before the edges
    assert len(seen) == math.ceil((graph.n_edges + 1) / 7)  # the last batch is the short one
    assert model_status(store, model_id) is None
    assert counts(store, model_id) == {"n_layers": 0, "n_neurons": 0, "n_edges": 0, "n_block_edges": 0}
    assert store.run("admin.partition_ids", model=model_id) == []
    assert store.run("admin.partition_labels", partition=partition) == []
    assert leases.read_lease(store, model_id) is None
    assert counts(store, other) == {"n_layers": 2, "n_neurons": 8, "n_edges": 16, "n_block_edges": 16}  # untouched


def test_the_one_statement_delete_leaves_nothing_either(store, model_id):
    graph = layered_graph([6, 30, 5])
    ingest(store, model_id, graph)
    with_partition(store, model_id, graph)
    assert store.run("admin.delete_model", model=model_id) == [{"deleted": graph.n_neurons}]
    assert model_status(store, model_id) is None
    assert counts(store, model_id) == {"n_layers": 0, "n_neurons": 0, "n_edges": 0, "n_block_edges": 0}
    assert store.run("admin.partition_ids", model=model_id) == []


# -- item 8b: 'deleting' first, analysis refuses it, a rerun finishes -------------------------------------------


def test_a_drop_stopped_midway_leaves_a_deleting_model_that_analysis_refuses_and_a_rerun_finishes(store, model_id):
    graph = layered_graph([6, 30, 5])
    ingest(store, model_id, graph)
    partition = with_partition(store, model_id, graph)
    with pytest.raises(Crash):
        delete_model(Flaky(store, "admin.delete_model_edges", after=2), model_id, batch_size=10)
    assert model_status(store, model_id) == "deleting"
    left = counts(store, model_id)
    assert left["n_neurons"] == graph.n_neurons and left["n_edges"] == graph.n_edges - 20  # half gone...
    with pytest.raises(ModelNotReadyError, match="'deleting'.*neuronmap drop"):
        pull_subgraph(store, model_id)  # ...and nobody may take it for a model
    with pytest.raises(ModelNotReadyError, match="'deleting'"):
        write_partition(store, model_id, new_partition_id(model_id), {"k": 2}, np.zeros(3), np.arange(3))
    assert store.run("admin.partition_labels", partition=partition) == []  # partitions went whole, first
    assert leases.read_lease(store, model_id) is None  # the stopped run gave its lease up
    assert delete_model(store, model_id, batch_size=10) == graph.n_neurons  # the rerun finishes
    assert model_status(store, model_id) is None
    assert counts(store, model_id) == {"n_layers": 0, "n_neurons": 0, "n_edges": 0, "n_block_edges": 0}


def test_a_replace_stopped_in_its_delete_phase_is_finished_by_a_plain_rerun(store, model_id):
    old, new = layered_graph([6, 30, 5]), layered_graph([5, 7, 2], seed=3)
    ingest(store, model_id, old)
    with pytest.raises(Crash):
        ingest(Flaky(store, "admin.delete_model_edges", after=1), model_id, new, replace=True, delete_batch=10)
    assert model_status(store, model_id) == "deleting"
    with pytest.raises(ModelNotReadyError):
        pull_subgraph(store, model_id)
    assert ingest(store, model_id, new) == new.n_edges  # no --replace needed to finish a half-deleted model
    assert model_status(store, model_id) == "ready"
    assert counts(store, model_id) == exact(new)


def test_an_activation_graph_goes_in_bounded_batches_and_a_stopped_removal_is_refused_then_finished(store, model_id):
    from neuronmap.loaders import graph_from_module
    from neuronmap.loaders.activations import compute_correlations, sparsify
    from neuronmap.loaders.datasets import load_dataset
    from tests.loaders.test_activations import digits_net

    net = digits_net()
    ingest(store, model_id, graph_from_module(net))
    x = load_dataset("digits").x_test[:200]
    edges = sparsify(compute_correlations(net, x, device="cpu"), top_k=3)
    ingest_activation_graph(store, model_id, "acts", edges)
    ingest_activation_graph(store, model_id, "other", edges)
    with pytest.raises(Crash):
        delete_activation_graph(Flaky(store, "activations.delete_edges", after=2), model_id, "acts", batch_size=5)
    assert graph_status(store, model_id, "acts") == "deleting"
    assert store.run("activations.graph_counts", model=model_id, graph="acts") == [{"n_edges": edges.n_edges - 10}]
    with pytest.raises(ActivationGraphNotReadyError, match="'deleting'"):
        pull_activation_graph(store, model_id, "acts")
    assert delete_activation_graph(store, model_id, "acts", batch_size=5) == edges.n_edges - 10
    assert graph_status(store, model_id, "acts") is None
    assert store.run("activations.graph_counts", model=model_id, graph="other") == [{"n_edges": edges.n_edges}]
    # A model drop marks its activation graphs 'deleting' in its first transaction too.
    with pytest.raises(Crash):
        delete_model(Flaky(store, "admin.delete_model_edges", after=0), model_id)
    assert graph_status(store, model_id, "other") == "deleting"
    delete_model(store, model_id)
    assert graph_status(store, model_id, "other") is None


# -- item 8: one run at a time, and a dead run's lease is taken over --------------------------------------------


def test_a_second_run_is_refused_at_once_naming_the_running_one(store, model_id):
    graph = layered_graph([3, 3])
    with leases.hold(store, model_id, "ingest"):
        started = time.monotonic()
        with pytest.raises(
            ModelBusyError, match=rf"being ingested by another run \(`neuronmap ingest`, pid {os.getpid()}"
        ):
            ingest(store, model_id, graph)
        assert time.monotonic() - started < 5
        with pytest.raises(ModelBusyError):
            leases.check_free(store, model_id)
    assert model_status(store, model_id) is None  # the refused run wrote nothing
    ingest(store, model_id, graph)
    with leases.hold(store, model_id, "drop"):
        with pytest.raises(ModelBusyError, match="being dropped"):
            ingest(store, model_id, graph, replace=True)
    assert counts(store, model_id) == exact(graph)


def test_a_dead_or_expired_holders_lease_is_taken_over_and_a_live_one_is_not(store, model_id):
    graph = layered_graph([3, 3])
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid on this host that no longer runs: an ingest that was SIGKILLed
    host = socket.gethostname()
    claim = dict(model=model_id, graph="", op="ingest")
    store.run("ingest.claim_lease", **claim, token=f"{host}/{dead.pid}/1/x", host=host, pid=dead.pid, ttl=3600)
    assert ingest(store, model_id, graph) == graph.n_edges  # at once, no waiting for the lease to run out
    store.run("ingest.claim_lease", **claim, token="elsewhere/1/1/y", host="elsewhere", pid=1, ttl=3600)
    with pytest.raises(ModelBusyError, match="pid 1 on elsewhere"):
        ingest(store, model_id, graph, replace=True)  # another host's live run: refused
    store.run("ingest.release_lease", model=model_id, graph="", token="elsewhere/1/1/y")
    store.run("ingest.claim_lease", **claim, token="elsewhere/1/1/z", host="elsewhere", pid=1, ttl=1)
    time.sleep(1.5)
    assert ingest(store, model_id, graph, replace=True) == graph.n_edges  # ...unless its lease ran out
    assert leases.read_lease(store, model_id) is None


def test_the_heartbeat_keeps_a_lease_and_a_run_whose_lease_was_taken_stops(store, model_id):
    with leases.hold(store, model_id, "ingest", ttl=2) as lease:
        time.sleep(3)
        row = leases.read_lease(store, model_id)
        assert row is not None and not row["expired"] and row["token"] == lease.token
        store.run("ingest.release_lease", model=model_id, graph="", token=lease.token)  # taken over
        time.sleep(1)
        with pytest.raises(LeaseLostError, match="took over the lease"):
            lease.check()


def test_two_concurrent_replaces_of_one_name_one_wins_and_the_ready_copy_is_never_lost(store, model_id):
    first, a, b = layered_graph([4, 4]), layered_graph([6, 6, 6], seed=1), layered_graph([5, 5], seed=2)
    ingest(store, model_id, first)
    writing, go_on = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def slow(_: int) -> None:
        writing.set()
        assert go_on.wait(60)

    def run_a() -> None:
        try:
            outcome["a"] = ingest(store, model_id, a, replace=True, batch_size=5, workers=1, on_batch=slow)
        except BaseException as error:  # noqa: BLE001 - reported below
            outcome["a"] = error

    thread = threading.Thread(target=run_a)
    thread.start()
    assert writing.wait(60)
    started = time.monotonic()
    with pytest.raises(ModelBusyError, match="being ingested by another run"):
        ingest(store, model_id, b, replace=True)
    assert time.monotonic() - started < 5
    go_on.set()
    thread.join(60)
    assert outcome["a"] == a.n_edges
    [row] = store.run("ingest.model_status", model=model_id)
    assert row == {"status": "ready", "failure": None}  # the refused run left no failure behind
    assert counts(store, model_id) == exact(a)


def test_concurrent_ingests_of_two_names_both_finish(store, model_id):
    graphs = {model_id: layered_graph([8, 8, 8], seed=4), model_id + "-b": layered_graph([7, 9], seed=5)}
    for name in graphs:
        ingest(store, name, layered_graph([2, 2]))
    errors: list[BaseException] = []

    def run(name: str) -> None:
        try:
            ingest(store, name, graphs[name], replace=True, batch_size=4, delete_batch=3)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(name,)) for name in graphs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    for name, graph in graphs.items():
        assert model_status(store, name) == "ready" and counts(store, name) == exact(graph)
    delete_model(store, model_id + "-b")


# -- item 8d: names ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, rule",
    [
        ("", "empty or only white space"),
        ("  \u3000 ", "empty or only white space"),
        ("a\nb", r"control characters \(U\+000A\)"),
        ("bell\x07", "control characters"),
        ("x" * 12_000, f"longer than {MAX_NAME_CHARS} characters"),
    ],
)
def test_bad_names_are_refused_before_anything_is_written(store, name, rule):
    with pytest.raises(BadNameError, match=rule):
        ingest(store, name, layered_graph([2, 2]))
    assert model_status(store, name[:MAX_NAME_CHARS]) is None


def test_a_long_printable_name_is_fine(store, model_id):
    name = (model_id + "-" + "é" * MAX_NAME_CHARS)[:MAX_NAME_CHARS]
    ingest(store, name, layered_graph([2, 2]))
    assert model_status(store, name) == "ready"
    delete_model(store, name)
