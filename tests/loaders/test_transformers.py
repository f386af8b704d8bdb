"""Transformers as neuron graphs (methods.md §10): exact edge values per family, top-k, refusals, the store round
trip, and a planted-module transformer that comes apart.

Every model is a random-init tiny config built from a ``transformers`` config class and saved with
``save_pretrained``; nothing is downloaded. The reference values are an independent ``einsum`` over the tensors
read straight from the safetensors files, in float64, with each family's storage orientation spelt out.
"""

from __future__ import annotations

import doctest
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file
from sklearn.metrics import adjusted_rand_score

from neuronmap.loaders.errors import CheckpointError, LoadError
from neuronmap.loaders.ingest.weights import ingest, model_status
from neuronmap.loaders.transformers import (
    MissingTensorError,
    RemoteCodeError,
    TransformerOptionError,
    UnsupportedTransformerError,
    detect_family,
    fraction_of_partition,
    graph_from_transformer,
    load_transformer,
    read_transformer,
    virtual_edges,
    within_cluster_fraction,
)
from neuronmap.service.clustering.blockgraph import BlockGraph
from neuronmap.service.clustering.spectral import spectral_clustering
from neuronmap.service.errors import DisconnectedGraphWarning
from neuronmap.service.store.pull import pull_subgraph

N_BLOCKS = 3
D_MODEL = 16


def _randomise(model: torch.nn.Module, seed: int) -> None:
    """Every parameter random (norm scales too, so that folding γ shows), as a trained model's would be."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.5)


def _tiny(family: str):
    common = dict(vocab_size=40, bos_token_id=0, eos_token_id=1)
    if family == "gpt2":
        config = transformers.GPT2Config(
            n_layer=N_BLOCKS, n_embd=D_MODEL, n_head=2, n_inner=24, n_positions=16, **common
        )
        return transformers.GPT2LMHeadModel(config)
    if family == "gpt_neox":
        config = transformers.GPTNeoXConfig(
            num_hidden_layers=N_BLOCKS,
            hidden_size=D_MODEL,
            num_attention_heads=2,
            intermediate_size=20,
            max_position_embeddings=16,
            use_parallel_residual=True,
            **common,
        )
        return transformers.GPTNeoXForCausalLM(config)
    config = transformers.LlamaConfig(
        num_hidden_layers=N_BLOCKS,
        hidden_size=D_MODEL,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention
        intermediate_size=12,
        max_position_embeddings=16,
        **common,
    )
    return transformers.LlamaForCausalLM(config)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    """gpt2 in one file; gpt_neox (parallel residual) in shards; llama (SwiGLU, GQA) stored in bfloat16."""
    root = tmp_path_factory.mktemp("transformers")
    paths = {}
    for seed, family in enumerate(("gpt2", "gpt_neox", "llama")):
        model = _tiny(family)
        _randomise(model, seed)
        if family == "llama":
            model = model.to(torch.bfloat16)
        paths[family] = root / family
        model.save_pretrained(paths[family], max_shard_size="20KB" if family == "gpt_neox" else "1GB")
    return paths


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for file in sorted(path.glob("*.safetensors")):
        tensors.update({name: value.double() for name, value in load_file(file).items()})
    return tensors


def _edges(subscripts: str, *operands: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The einsum, and the same einsum of the absolute values: the sum of |terms| each edge is made of."""
    return (
        torch.einsum(subscripts, *operands).numpy(),
        torch.einsum(subscripts, *(x.abs() for x in operands)).numpy(),
    )


def reference_edges(family: str, path: Path, l1: int, l2: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The formulas of methods.md §10.2 as einsums over the stored tensors, in float64: name → (value, scale)."""
    t = _tensors(path)
    if family == "gpt2":  # Conv1D stores (in, out): c_fc is (d_model, d_mlp), c_proj is (d_mlp, d_model)
        w_out = t[f"transformer.h.{l1}.mlp.c_proj.weight"]
        centred = w_out - w_out.mean(dim=1, keepdim=True)
        gamma, w_in = t[f"transformer.h.{l2}.ln_2.weight"], t[f"transformer.h.{l2}.mlp.c_fc.weight"]
        return {"w": _edges("id,d,dj->ij", centred, gamma, w_in)}
    if family == "gpt_neox":  # nn.Linear stores (out, in): 4h_to_h is (d_model, d_mlp), h_to_4h is (d_mlp, d_model)
        w_out = t[f"gpt_neox.layers.{l1}.mlp.dense_4h_to_h.weight"]
        centred = w_out - w_out.mean(dim=0, keepdim=True)  # each neuron's output row is a column here
        gamma = t[f"gpt_neox.layers.{l2}.post_attention_layernorm.weight"]
        w_in = t[f"gpt_neox.layers.{l2}.mlp.dense_h_to_4h.weight"]
        return {"w": _edges("di,d,jd->ij", centred, gamma, w_in)}
    w_out = t[f"model.layers.{l1}.mlp.down_proj.weight"]  # RMSNorm: no centring
    gamma = t[f"model.layers.{l2}.post_attention_layernorm.weight"]
    v_gate = _edges("di,d,jd->ij", w_out, gamma, t[f"model.layers.{l2}.mlp.gate_proj.weight"])
    v_up = _edges("di,d,jd->ij", w_out, gamma, t[f"model.layers.{l2}.mlp.up_proj.weight"])
    w = np.sqrt(v_gate[0] ** 2 + v_up[0] ** 2), v_gate[1] + v_up[1]
    return {"w": w, "v_gate": v_gate, "v_up": v_up}


def assert_relative(got: np.ndarray, want: tuple[np.ndarray, np.ndarray], rtol: float = 1e-5) -> None:
    """Each edge within rtol of its value, measured against the sum of |terms| it is made of.

    The edges are computed in float32, so an edge whose terms nearly cancel carries float32's rounding of those
    terms: its error is relative to the terms' magnitude, which is the edge's own magnitude when they do not cancel.
    """
    value, scale = want
    error = np.abs(got - value) / scale
    assert error.max() <= rtol, (
        f"worst relative error {error.max():.2e} at {np.unravel_index(error.argmax(), error.shape)}"
    )
    assert np.median(np.abs(got - value) / np.abs(value)) <= rtol


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "llama"])
def test_every_virtual_edge_matches_the_formula(saved, family):
    graph = load_transformer(saved[family], top_k=0)
    prefix = {"gpt2": "transformer.h", "gpt_neox": "gpt_neox.layers", "llama": "model.layers"}[family]
    assert [layer.name for layer in graph.layers] == [f"{prefix}.{b}.mlp" for b in range(N_BLOCKS)]
    assert {layer.role for layer in graph.layers} == {"hidden"}  # no input layer: the first MLP is layer 0
    assert [(b.src_layer, b.dst_layer) for b in graph.blocks] == [(0, 1), (0, 2), (1, 2)]
    for block in graph.blocks:
        want = reference_edges(family, saved[family], block.src_layer, block.dst_layer)
        assert np.count_nonzero(block.weight) == block.weight.size  # top_k=0 keeps every edge
        assert_relative(block.weight, want["w"])
        if family == "llama":
            assert sorted(block.parts) == ["v_gate", "v_up"]
            assert_relative(block.parts["v_gate"], want["v_gate"])
            assert_relative(block.parts["v_up"], want["v_up"])
        else:
            assert block.parts == {}
    assert graph.n_edges == sum(b.weight.size for b in graph.blocks)


def test_the_model_node_records_where_the_graph_came_from(saved):
    neox = load_transformer(saved["gpt_neox"], top_k=5, min_weight=0.01).meta
    files = sorted(p.name for p in saved["gpt_neox"].glob("*.safetensors"))
    assert len(files) > 1 and neox.weight_files == files  # sharded
    assert neox.weight_sha256 == [hashlib.sha256((saved["gpt_neox"] / f).read_bytes()).hexdigest() for f in files]
    assert (neox.family, neox.graph, neox.top_k, neox.min_weight, neox.dtype) == (
        "gpt_neox",
        "virtual",
        5,
        0.01,
        "float32",
    )
    assert neox.arch == "transformers:GPTNeoXForCausalLM" and neox.source == str(saved["gpt_neox"])
    assert json.loads(neox.config)["use_parallel_residual"] is True
    llama = load_transformer(saved["llama"], graph="mlp-in").meta
    assert (llama.family, llama.dtype, llama.graph, llama.top_k, llama.fold_norm) == (
        "llama",
        "bfloat16",  # stored; computed in float32
        "mlp-in",
        None,
        False,
    )


def test_an_in_process_model_gives_the_same_graph(saved):
    model = transformers.GPT2LMHeadModel.from_pretrained(saved["gpt2"], local_files_only=True, use_safetensors=True)
    from_memory = graph_from_transformer(model, top_k=4)
    from_files = load_transformer(saved["gpt2"], top_k=4)
    assert [layer.name for layer in from_memory.layers] == [layer.name for layer in from_files.layers]
    for a, b in zip(from_memory.blocks, from_files.blocks):
        np.testing.assert_array_equal(a.weight, b.weight)
    assert from_memory.meta.family == "gpt2" and from_memory.meta.weight_sha256 is None
    bare = graph_from_transformer(model.transformer, top_k=4)  # a bare model: its own module paths
    assert bare.layers[0].name == "h.0.mlp"


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_top_k_keeps_exactly_the_k_largest_per_neuron_and_block(saved, family):
    full = {(b.src_layer, b.dst_layer): b.weight for b in load_transformer(saved[family], top_k=0).blocks}
    k = 3
    for block in load_transformer(saved[family], top_k=k).blocks:
        dense = full[(block.src_layer, block.dst_layer)]
        kept = block.weight != 0
        assert (kept.sum(axis=1) == k).all()
        largest = np.argsort(-np.abs(dense), axis=1)[:, :k]
        np.testing.assert_array_equal(
            np.sort(np.flatnonzero(kept.ravel())),
            np.sort((largest + dense.shape[1] * np.arange(dense.shape[0])[:, None]).ravel()),
        )
        np.testing.assert_array_equal(block.weight[kept], dense[kept])
    threshold = float(np.median(np.abs(full[(0, 1)])))
    for block in load_transformer(saved[family], top_k=0, min_weight=threshold).blocks:
        dense = full[(block.src_layer, block.dst_layer)]
        np.testing.assert_array_equal(block.weight != 0, np.abs(dense) >= threshold)


def test_streaming_in_small_chunks_gives_the_same_edges(saved):
    weights = read_transformer(saved["llama"])[0]
    whole = list(virtual_edges(weights, top_k=2))
    chunked = list(virtual_edges(weights, top_k=2, chunk_bytes=1))  # one source neuron at a time
    for a, b in zip(whole, chunked):
        assert (a.src, a.dst, a.n_candidates) == (b.src, b.dst, 12 * 12)
        np.testing.assert_array_equal(a.rows, b.rows)
        np.testing.assert_array_equal(a.cols, b.cols)
        np.testing.assert_allclose(a.weight, b.weight, rtol=1e-6)
        np.testing.assert_allclose(a.parts["v_up"], b.parts["v_up"], rtol=1e-5, atol=1e-7)


def _copy(source: Path, target: Path) -> Path:
    target.mkdir()
    for file in source.iterdir():
        (target / file.name).write_bytes(file.read_bytes())
    return target


def _one_line_error(error: pytest.ExceptionInfo[LoadError], *names: str) -> None:
    message = str(error.value)
    assert "\n" not in message and all(name in message for name in names), message


def test_refusals_are_one_line_and_write_nothing(saved, tmp_path, store, model_id):
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertForMaskedLM"]}))
    with pytest.raises(UnsupportedTransformerError) as error:
        ingest(store, model_id, load_transformer(bert))
    _one_line_error(error, "BertForMaskedLM")
    assert model_status(store, model_id) is None

    remote = _copy(saved["gpt2"], tmp_path / "remote")
    config = json.loads((remote / "config.json").read_text())
    (remote / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "modeling_x.XModel"}}))
    with pytest.raises(RemoteCodeError) as remote_error:
        load_transformer(remote)
    _one_line_error(remote_error, "AutoModel", "trust_remote_code")

    post_ln = _copy(saved["gpt2"], tmp_path / "post_ln")
    (post_ln / "config.json").write_text(json.dumps({**config, "apply_residual_connection_post_layernorm": True}))
    with pytest.raises(UnsupportedTransformerError) as post_error:
        load_transformer(post_ln)
    _one_line_error(post_error, "GPT2LMHeadModel", "post-LN")

    missing = _copy(saved["gpt2"], tmp_path / "missing")
    tensors = load_file(missing / "model.safetensors")
    del tensors["transformer.h.1.mlp.c_fc.weight"]
    save_file(tensors, missing / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(MissingTensorError) as missing_error:
        ingest(store, model_id, load_transformer(missing))
    _one_line_error(missing_error, "'transformer.h.1.mlp.c_fc.weight'")
    assert model_status(store, model_id) is None

    pickled = _copy(saved["gpt2"], tmp_path / "pickled")
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(CheckpointError) as pickle_error:
        load_transformer(pickled)
    _one_line_error(pickle_error, "pytorch_model.bin", "never a pickle")

    gone = _copy(saved["gpt_neox"], tmp_path / "gone")
    next(gone.glob("model-00002-*.safetensors")).unlink()
    with pytest.raises(MissingTensorError) as shard_error:
        load_transformer(gone)
    _one_line_error(shard_error, "model-00002-")

    for options in ({"graph": "heads"}, {"top_k": -1}, {"min_weight": float("nan")}, {"fold_norm": True}):
        with pytest.raises(TransformerOptionError):
            load_transformer(bert, **options)  # options are checked before the directory is read


def test_ingest_and_pull_round_trip(saved, store, model_id):
    graph = load_transformer(saved["llama"], top_k=4)
    assert ingest(store, model_id, graph) == graph.n_edges == 3 * 12 * 4
    pulled = pull_subgraph(store, model_id)
    assert [layer["name"] for layer in pulled.layers] == [layer.name for layer in graph.layers]
    expected = BlockGraph.from_model_graph(graph)
    got = {(s, d): w for s, d, w in pulled.graph.blocks}
    assert sorted(got) == [(b.src_layer, b.dst_layer) for b in graph.blocks]
    for s, d, w in expected.blocks:
        np.testing.assert_allclose(got[(s, d)].numpy(), w.numpy(), rtol=1e-12)
    from neuronmap.cypher.adhoc import AdHocStatement

    statement = AdHocStatement(text="MATCH (m:Model {name: $name}) RETURN properties(m) AS p")
    stored = store.run_ad_hoc(statement, {"name": model_id}).rows[0]["p"]
    assert (stored["family"], stored["graph"], stored["top_k"], stored["dtype"]) == ("llama", "virtual", 4, "bfloat16")
    assert stored["weight_sha256"] == graph.meta.weight_sha256 and "fold_norm" not in stored


# ---------------------------------------------------------------------------------------------- planted modules

HALF, N_INNER = D_MODEL // 2, 32


def planted_gpt2(seed: int = 0):
    """A GPT-2 whose embeddings, attention heads and MLPs each act on one half of the residual stream only.

    Token t writes half t % 2; head h reads and writes half h; MLP neurons 0..15 read and write half 0, 16..31
    half 1. Each neuron's output row is zero-mean within its half, so LayerNorm's centring adds nothing across
    halves and the virtual weights are block diagonal.
    """
    config = transformers.GPT2Config(
        n_layer=N_BLOCKS,
        n_embd=D_MODEL,
        n_head=2,
        n_inner=N_INNER,
        n_positions=16,
        vocab_size=40,
        bos_token_id=0,
        eos_token_id=1,
    )
    model = transformers.GPT2LMHeadModel(config)
    _randomise(model, seed)
    dims = torch.arange(D_MODEL) // HALF  # the half of each residual dim
    neurons = torch.arange(N_INNER) // (N_INNER // 2)  # the module of each MLP neuron
    same = lambda a, b: (a[:, None] == b[None, :]).float()  # noqa: E731
    with torch.no_grad():
        model.transformer.wte.weight.mul_(same(torch.arange(40) % 2, dims))
        model.transformer.wpe.weight.zero_()
        for block in model.transformer.h:
            block.ln_1.weight.abs_(), block.ln_2.weight.abs_()
            block.attn.c_attn.weight.mul_(same(dims, dims).repeat(1, 3))  # Q, K, V: head h ↔ half h
            block.attn.c_proj.weight.mul_(same(dims, dims))
            block.mlp.c_fc.weight.mul_(same(dims, neurons))
            mask = same(neurons, dims)
            w_out = block.mlp.c_proj.weight * mask
            w_out = (w_out - w_out.sum(dim=1, keepdim=True) / HALF) * mask
            block.mlp.c_proj.weight.copy_(w_out)
    return model, neurons.numpy()


def _cluster(graph, *, planted: bool) -> np.ndarray:
    """Spectral clustering at K=2; a planted graph's halves share no edge, and clustering says so."""
    if planted:
        with pytest.warns(DisconnectedGraphWarning, match="2 connected components"):
            return spectral_clustering(graph, 2, random_state=0).labels.numpy()
    return spectral_clustering(graph, 2, random_state=0).labels.numpy()


def test_a_planted_transformer_comes_apart_into_its_halves():
    model, neurons = planted_gpt2()
    graph = graph_from_transformer(model, top_k=8)
    truth = np.tile(neurons, N_BLOCKS)
    labels = _cluster(graph, planted=True)
    assert adjusted_rand_score(truth, labels) == 1.0


def test_mlp_in_scores_the_planted_model_one_and_random_init_near_one_over_k():
    model, neurons = planted_gpt2()
    planted = graph_from_transformer(model, graph="mlp-in")
    assert [layer.role for layer in planted.layers[:2]] == ["residual", "hidden"]
    assert planted.layers[0].name == "transformer.h.0.ln_2" and planted.layers[0].size == D_MODEL
    for block in range(N_BLOCKS):
        weight = np.abs(planted.blocks[block].weight)
        labels = _cluster(BlockGraph([D_MODEL, N_INNER], [(0, 1, torch.as_tensor(weight))]), planted=True)
        score = fraction_of_partition(planted, block, labels)
        assert score.fraction == pytest.approx(1.0) and score.no_structure == 0.5
        assert adjusted_rand_score(np.concatenate([np.arange(D_MODEL) // HALF, neurons]), labels) == 1.0
    # transformers' own random init, wide enough that the best of all 2-way cuts gains little over 1/k
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=2, n_inner=256, n_positions=16, vocab_size=40)
    random_init = graph_from_transformer(transformers.GPT2LMHeadModel(config), graph="mlp-in", fold_norm=True)
    for block in range(2):
        weight = np.abs(random_init.blocks[block].weight)
        labels = _cluster(BlockGraph([64, 256], [(0, 1, torch.as_tensor(weight))]), planted=False)
        score = fraction_of_partition(random_init, block, labels)
        assert score.no_structure <= score.fraction < 0.65, score


def test_within_cluster_fraction_by_hand():
    w = np.array([[1.0, 2.0, 0.0], [0.0, 3.0, 4.0]])
    score = within_cluster_fraction(w, np.array([0, 1]), np.array([0, 0, 1]))
    assert score.fraction == pytest.approx((1 + 4 + 16) / 30) and score.n_clusters == 2
    assert within_cluster_fraction(w, np.array([0, -1]), np.array([0, 0, -1])).fraction == pytest.approx(5 / 30)
    with pytest.raises(TransformerOptionError):
        within_cluster_fraction(w, np.array([0]), np.array([0, 0, 1]))


@pytest.mark.parametrize("function", [detect_family, within_cluster_fraction], ids=lambda f: f.__name__)
def test_docstring_examples(function):
    finder, runner = doctest.DocTestFinder(recurse=False), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(function, function.__name__, globs={"np": np, function.__name__: function}):
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
