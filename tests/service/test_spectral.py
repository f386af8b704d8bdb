"""Spectral clustering: planted modules are found, n-cut matches sklearn, the solvers agree, seeds reproduce."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans, SpectralClustering
from sklearn.metrics import adjusted_rand_score

from neuronmap.device import torch_generator
from neuronmap.errors import NeuronmapError, SeedError
from neuronmap.service.clustering import eigensolvers, kmeans, operators, spectral
from neuronmap.service.clustering.blockgraph import BlockGraph
from neuronmap.service.clustering.ncut import ncut
from neuronmap.service.clustering.spectral import kmeans_batched, spectral_clustering
from neuronmap.service.errors import ClusteringInputError, DeviceError, DisconnectedGraphWarning

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SOLVERS = ["dense", "lanczos", "lobpcg"]


def planted(
    sizes: list[int],
    n_modules: int,
    seed: int,
    *,
    inside: float = 1.0,
    across: float = 0.02,
    density: float = 1.0,
    skips: list[tuple[int, int]] = (),
) -> tuple[BlockGraph, np.ndarray]:
    """A layered net whose neurons belong to planted modules: strong weights inside a module, weak across."""
    rng = np.random.default_rng(seed)
    modules = [rng.permutation(np.arange(size) % n_modules) for size in sizes]
    blocks = []
    for src, dst in [(i, i + 1) for i in range(len(sizes) - 1)] + list(skips):
        same = modules[src][:, None] == modules[dst][None, :]
        w = rng.uniform(0.5, 1.5, (sizes[src], sizes[dst])) * np.where(same, inside, across)
        if density < 1:
            w *= rng.random(w.shape) < density
        blocks.append((src, dst, torch.as_tensor(w)))
    return BlockGraph(sizes, blocks), np.concatenate(modules)


def glorot(sizes: list[int], seed: int, density: float = 1.0) -> BlockGraph:
    """|Glorot-uniform| weights, optionally pruned at random: an untrained MLP-like graph."""
    rng = np.random.default_rng(seed)
    blocks = []
    for i in range(len(sizes) - 1):
        limit = np.sqrt(6 / (sizes[i] + sizes[i + 1]))
        w = np.abs(rng.uniform(-limit, limit, (sizes[i], sizes[i + 1])))
        if density < 1:
            w *= rng.random(w.shape) < density
        blocks.append((i, i + 1, torch.as_tensor(w)))
    return BlockGraph(sizes, blocks)


def sklearn_ncut(graph: BlockGraph, k: int, **kwargs) -> float:
    reduced, _ = graph.drop_isolated()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        labels = SpectralClustering(k, affinity="precomputed", random_state=0, **kwargs).fit(reduced.to_scipy()).labels_
    return ncut(reduced, labels)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("solver", SOLVERS)
def test_planted_modules_are_recovered(solver, device):
    graph, truth = planted([120, 90, 90, 60], n_modules=4, seed=1)
    result = spectral_clustering(graph, 4, eigen_solver=solver, random_state=0, device=device)
    assert adjusted_rand_score(truth, result.labels.numpy()) >= 0.99
    assert result.eigen_solver == solver and result.operator == "gram"
    assert result.eigen_residual < 1e-3
    assert result.labels.device.type == "cpu" and result.labels.dtype == torch.int64


def test_planted_modules_with_skip_connections_use_the_full_operator():
    # a skip over two layers makes the graph non-bipartite: no Gram reduction, the adjacency operator instead
    graph, truth = planted([100, 80, 80, 60], n_modules=5, seed=2, skips=[(0, 2)])
    for solver in SOLVERS:
        result = spectral_clustering(graph, 5, eigen_solver=solver, random_state=0)
        assert result.operator == "adjacency"
        assert adjusted_rand_score(truth, result.labels.numpy()) >= 0.99


@pytest.mark.parametrize("form", ["dense", "sparse"])
def test_tensor_adjacency_input(form):
    graph, truth = planted([80, 60, 60], n_modules=3, seed=3)
    adjacency = graph.to_dense() if form == "dense" else graph.to_sparse()
    result = spectral_clustering(adjacency, 3, random_state=0)
    assert adjusted_rand_score(truth, result.labels.numpy()) >= 0.99
    lanczos = spectral_clustering(adjacency, 3, random_state=0, eigen_solver="lanczos")
    assert adjusted_rand_score(truth, lanczos.labels.numpy()) >= 0.99


@pytest.mark.parametrize(
    ("name", "graph", "k"),
    [
        ("glorot-mlp", glorot([200, 100, 100, 30], seed=4), 8),
        ("pruned-mlp", glorot([150, 120, 120, 60, 10], seed=5, density=0.3), 6),
        ("planted-noisy", planted([150, 100, 100, 50], n_modules=6, seed=6, across=0.4)[0], 6),
        ("skip-connections", planted([120, 80, 80, 40], n_modules=4, seed=7, across=0.5, skips=[(0, 2)])[0], 4),
    ],
)
def test_ncut_is_as_good_as_sklearn(name, graph, k):
    ours = ncut(graph, spectral_clustering(graph, k, random_state=0).labels)
    theirs = sklearn_ncut(graph, k)
    assert ours <= theirs * 1.01, f"{name}: neuronmap {ours:.4f} vs sklearn {theirs:.4f}"


def test_ncut_is_as_good_as_sklearn_with_the_iterative_solver_on_a_large_graph():
    # > 3000 neurons, both sides of the bipartition above DENSE_MAX_SIZE: "auto" must pick the iterative solver
    graph, _ = planted([1100, 2100, 1100], n_modules=10, seed=8, across=0.3, density=0.03)
    result = spectral_clustering(graph, 10, random_state=0)
    assert result.eigen_solver == "lanczos"
    ours = ncut(graph, result.labels)
    theirs = sklearn_ncut(graph, 10, eigen_solver="lobpcg")  # sklearn's faster solver here; same n-cut as arpack
    assert ours <= theirs * 1.01


@pytest.mark.parametrize(
    "graph",
    [
        glorot([150, 100, 100, 20], seed=9),
        planted([100, 80, 80, 40], n_modules=4, seed=10, across=0.3, skips=[(0, 2)])[0],
    ],
    ids=["bipartite", "skip"],
)
def test_dense_and_iterative_solvers_agree_on_eigenvalues(graph):
    results = {s: spectral_clustering(graph, 6, eigen_solver=s, random_state=0, dtype=torch.float64) for s in SOLVERS}
    for solver in ("lanczos", "lobpcg"):
        torch.testing.assert_close(results[solver].eigenvalues, results["dense"].eigenvalues, atol=1e-5, rtol=0)
    # and against the full Laplacian spectrum
    a = graph.to_dense()
    d = a.sum(1).rsqrt()
    laplacian = torch.eye(a.shape[0], dtype=a.dtype) - d[:, None] * a * d[None, :]
    torch.testing.assert_close(results["dense"].eigenvalues, torch.linalg.eigvalsh(laplacian)[:6], atol=1e-8, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_same_seed_same_labels(device):
    graph = glorot([120, 80, 80, 20], seed=11)
    for solver in SOLVERS:
        first = spectral_clustering(graph, 7, eigen_solver=solver, random_state=123, device=device)
        second = spectral_clustering(graph, 7, eigen_solver=solver, random_state=123, device=device)
        assert torch.equal(first.labels, second.labels)


def test_isolated_neurons_get_minus_one():
    graph, truth = planted([60, 40, 40], n_modules=3, seed=12)
    blocks = [(s, d, w.clone()) for s, d, w in graph.blocks]
    blocks[0][2][5, :] = 0.0  # input neuron 5 loses every edge
    blocks[0][2][:, 7] = 0.0  # hidden neuron 7 keeps only its outgoing edges
    blocks[1][2][7, :] = 0.0  # … and loses those too
    graph = BlockGraph(graph.sizes, blocks)
    result = spectral_clustering(graph, 3, random_state=0)
    isolated = [5, 60 + 7]
    assert result.labels[isolated].tolist() == [-1, -1]
    assert result.n_isolated == 2
    kept = np.setdiff1d(np.arange(graph.n_nodes), isolated)
    assert bool((result.labels[kept] >= 0).all())
    assert adjusted_rand_score(truth[kept], result.labels.numpy()[kept]) >= 0.99


def test_disconnected_graph_warns_and_proceeds():
    a, _ = planted([30, 20], n_modules=2, seed=13)
    b, _ = planted([30, 20], n_modules=2, seed=14)
    w = torch.zeros(60, 40, dtype=torch.float64)
    w[:30, :20] = a.blocks[0][2]
    w[30:, 20:] = b.blocks[0][2]
    graph = BlockGraph([60, 40], [(0, 1, w)])
    with pytest.warns(DisconnectedGraphWarning, match="2 connected components"):
        result = spectral_clustering(graph, 4, random_state=0)
    assert result.n_components == 2
    assert set(result.labels[:30].tolist()).isdisjoint(result.labels[30:60].tolist())


def test_connected_graph_does_not_warn():
    graph = glorot([50, 30, 10], seed=15)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert spectral_clustering(graph, 3, random_state=0).n_components == 1


def test_float64_fallback_when_the_residual_is_poor(monkeypatch):
    monkeypatch.setattr(spectral, "FALLBACK_RESIDUAL", 0.0)  # every float32 residual counts as poor
    graph, truth = planted([80, 60, 60], n_modules=3, seed=16)
    result = spectral_clustering(graph, 3, random_state=0, eigen_solver="lanczos")
    assert result.dtype == "float64"
    assert result.eigen_residual < 1e-6
    assert adjusted_rand_score(truth, result.labels.numpy()) >= 0.99


def test_parity_uses_the_reference_restarts():
    small = glorot([40, 30, 10], seed=17)
    assert spectral_clustering(small, 3, random_state=0, parity=True).n_init == 25
    assert spectral_clustering(small, 3, random_state=0).n_init == 10
    big = glorot([1100, 1000], seed=18, density=0.01)
    assert spectral_clustering(big, 3, random_state=0, parity=True).n_init == 100


def test_errors():
    graph = glorot([5, 4, 3], seed=19)
    with pytest.raises(ClusteringInputError, match="more than the 12 neurons"):
        spectral_clustering(graph, 13)
    with pytest.raises(ClusteringInputError, match="eigen_solver"):
        spectral_clustering(graph, 2, eigen_solver="arpack")
    with pytest.raises(ClusteringInputError, match="n_clusters"):
        spectral_clustering(graph, 0)
    with pytest.raises(ClusteringInputError, match="negative"):
        spectral_clustering(-graph.to_dense(), 2)
    asymmetric = graph.to_dense()
    asymmetric[0, 5] += 1.0
    with pytest.raises(ClusteringInputError, match="symmetric"):
        spectral_clustering(asymmetric, 2)
    with pytest.raises(ClusteringInputError, match="no edges"):
        spectral_clustering(BlockGraph([3, 3], [(0, 1, torch.zeros(3, 3))]), 2)
    with pytest.raises(SeedError, match="random_state"):  # neuronmap.device checks seeds for every caller
        spectral_clustering(graph, 2, random_state=-1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_device_error():
    with pytest.raises(DeviceError, match="cuda") as info:
        spectral_clustering(glorot([5, 4], seed=20), 2, device="cuda")
    assert isinstance(info.value, NeuronmapError) and isinstance(info.value, RuntimeError)


@pytest.mark.parametrize("device", DEVICES)
def test_kmeans_batched_matches_sklearn_inertia(device):
    rng = np.random.default_rng(21)
    points = torch.as_tensor(rng.normal(size=(3, 400, 5)), dtype=torch.float32, device=device)
    valid = torch.ones(3, 400, dtype=torch.bool, device=device)
    valid[1, :50] = False  # masked points take no part and get −1
    labels, inertia, _ = kmeans_batched(points, valid, 6, 10, [torch_generator(i) for i in range(3)])
    assert labels.shape == (3, 400)
    assert labels[1, :50].eq(-1).all() and labels[1, 50:].ge(0).all()
    for g in range(3):
        x = points[g][valid[g]].double().cpu().numpy()
        reference = KMeans(6, n_init=10, random_state=0).fit(x).inertia_
        assert float(inertia[g]) <= reference * 1.01


def test_kmeans_separates_blobs_and_handles_duplicate_points():
    rng = np.random.default_rng(22)
    centres = rng.normal(scale=20, size=(4, 3))
    truth = np.repeat(np.arange(4), 50)
    points = centres[truth] + rng.normal(size=(200, 3))
    points[:10] = points[0]  # exact duplicates: k-means++ may pick coincident centres
    labels, _, _ = kmeans_batched(torch.as_tensor(points[None], dtype=torch.float32), None, 4, 5, [torch_generator(0)])
    assert adjusted_rand_score(truth, labels[0].numpy()) == 1.0


def test_one_cluster_and_tiny_graphs():
    graph = glorot([6, 4], seed=23)
    one = spectral_clustering(graph, 1, random_state=0)
    assert one.labels.tolist() == [0] * 10
    pair = spectral_clustering(BlockGraph([1, 1], [(0, 1, torch.ones(1, 1))]), 2, random_state=0)
    assert sorted(pair.labels.tolist()) == [0, 1]


def test_model_graph_and_edge_list_inputs_agree():
    from neuronmap.loaders.records import EdgeBlock, LayerRecord, ModelGraph

    graph, truth = planted([50, 40, 30], n_modules=3, seed=24)
    layers = [
        LayerRecord(
            index=i,
            name=f"l{i}",
            kind="input" if i == 0 else "linear",
            role=("input", "hidden", "output")[i],
            size=s,
            shape=[s],
        )
        for i, s in enumerate(graph.sizes)
    ]
    signs = np.random.default_rng(0)
    blocks = [EdgeBlock(s, d, w.numpy() * signs.choice([-1.0, 1.0], size=w.shape)) for s, d, w in graph.blocks]
    model = ModelGraph(layers=layers, blocks=blocks, biases=[None, np.zeros(40), np.zeros(30)])
    from_model = spectral_clustering(model, 3, random_state=0)
    src, dst, w = model.edges()
    from_edges = spectral_clustering(BlockGraph.from_edges(graph.sizes, src, dst, w), 3, random_state=0)
    assert torch.equal(from_model.labels, from_edges.labels)
    assert adjusted_rand_score(truth, from_model.labels.numpy()) >= 0.99


def layered_problem(graph: BlockGraph, dtype: torch.dtype = torch.float64) -> operators.LayeredProblem:
    blocks = [(s, d, w.unsqueeze(0)) for s, d, w in graph.blocks]
    return operators.LayeredProblem(graph.sizes, blocks, dtype, graph.layer_sides())


@pytest.mark.parametrize("skips", [[], [(0, 2)]], ids=["bipartite", "skip"])
def test_operator_products_match_the_normalised_adjacency(skips):
    # The operator applies D^-½ to the vectors rather than to the blocks, and after prepare_products it uses
    # contiguous copies of the transposed blocks: every path must give D^-½AD^-½x (and BᵀB on the Gram side).
    graph, _ = planted([30, 20, 25, 10], n_modules=3, seed=25, across=0.3, density=0.5, skips=skips)
    problem = layered_problem(graph)
    a = graph.to_dense()
    d = a.sum(1).rsqrt()
    m = d[:, None] * a * d[None, :]
    x = torch.randn(1, graph.n_nodes, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(problem.m_dense()[0], m)
    views = problem.m_apply(x)
    problem.prepare_products()
    assert problem.weights_t is not None and all(wt.is_contiguous() for wt in problem.weights_t)
    torch.testing.assert_close(problem.m_apply(x), views)
    torch.testing.assert_close(views[0], m @ x[0])
    if not skips:
        small, large = problem.small_idx, problem.large_idx
        b = m[large][:, small]  # the bipartite block in side order
        v = x[:, small]
        torch.testing.assert_close(problem.gram_apply(v)[0], b.T @ b @ v[0])
        torch.testing.assert_close(problem.gram_dense()[0], b.T @ b)
        torch.testing.assert_close(problem.b_apply(v)[0], b @ v[0])


@pytest.mark.parametrize("operator", ["gram", "adjacency"])
def test_iterative_residual_is_the_true_residual_of_m(operator):
    # The iterative path reports its own residuals instead of spending a product on checking them; for the Gram
    # operator they are those of the lifted eigenvectors of M.
    graph = glorot([300, 260, 280, 60], seed=26, density=0.5)
    problem = layered_problem(graph, torch.float32)
    eig = eigensolvers.eigenpairs(problem, 8, "lanczos", [torch_generator(0)], 1e-4, allow_gram=operator == "gram")
    assert eig.solver == "lanczos" and eig.operator == operator
    v, mu = eig.vectors.double(), eig.mu.double()
    a = graph.to_dense()
    d = a.sum(1).rsqrt()
    m = d[:, None] * a * d[None, :]
    explicit = (m @ v[0] - v[0] * mu[0]).norm(dim=0).max()
    assert float(eig.residual[0]) <= 1e-4
    assert abs(float(explicit) - float(eig.residual[0])) < 2e-5


def test_orthonormalize_cleans_columns_inside_the_span():
    generator = torch.Generator().manual_seed(0)
    against = torch.linalg.qr(torch.randn(1, 200, 6, generator=generator)).Q
    x = torch.randn(1, 200, 4, generator=generator)
    x[:, :, 1] = against[:, :, :3].sum(2) + 1e-9 * x[:, :, 1]  # almost entirely in span(against)
    q = eigensolvers._orthonormalize(x, against)
    torch.testing.assert_close(q.mT @ q, torch.eye(4).unsqueeze(0), atol=1e-5, rtol=0)
    assert float((against.mT @ q).abs().max()) < 1e-5


@pytest.mark.parametrize("n_sets", [1, 3])
def test_kmeans_in_cache_sized_slices_gives_the_same_result(n_sets):
    rng = np.random.default_rng(27)
    points = torch.as_tensor(rng.normal(size=(n_sets, 1500, 6)), dtype=torch.float32)
    valid = torch.ones(n_sets, 1500, dtype=torch.bool)
    valid[0, :40] = False
    k, runs = 7, 5
    u = 1.0 - kmeans._rand(
        [torch_generator(i) for i in range(n_sets)], (runs, 1 + (k - 1) * (2 + int(np.log(k)))), points.device
    )
    whole = kmeans._kmeans_group(points, valid, k, u, max_iter=300, tol=1e-4)
    sliced = kmeans._kmeans_group(points, valid, k, u, max_iter=300, tol=1e-4, chunk_elements=2000)
    assert torch.equal(whole[0], sliced[0]) and torch.equal(whole[2], sliced[2])
    torch.testing.assert_close(whole[1], sliced[1])
