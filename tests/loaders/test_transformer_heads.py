"""Attention heads as units (``--heads``, methods.md §10.6): every head edge against an independent loop over the
stored tensors, the layer structure and pair rule per family (sequential, parallel residual, grouped-query), top-k,
a planted model whose heads come apart with their halves, and the ingest → pull round trip through the real Neo4j.

Models are tiny random-init configs built from ``transformers`` config classes and saved with ``save_pretrained``.
The references read the safetensors files, slice each head out by hand in each family's storage layout, and loop
over heads in float64.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from click.testing import CliRunner
from safetensors.torch import load_file
from sklearn.metrics import adjusted_rand_score

from neuronmap.cypher.adhoc import AdHocStatement
from neuronmap.loaders.transformers import (
    TransformerOptionError,
    build_graph,
    graph_from_transformer,
    head_edges,
    load_transformer,
    read_transformer,
)
from neuronmap.service.cli import cli
from neuronmap.service.clustering.blockgraph import BlockGraph
from neuronmap.service.clustering.spectral import spectral_clustering
from neuronmap.service.errors import DisconnectedGraphWarning
from neuronmap.service.store.pull import pull_subgraph
from neuronmap.service.store.transformers import block_layers

N_BLOCKS, D_MODEL = 3, 16
PREFIX = {"gpt2": "transformer.h", "gpt_neox": "gpt_neox.layers", "llama": "model.layers"}
ATTENTION = {"gpt2": "attn", "gpt_neox": "attention", "llama": "self_attn"}
N_HEAD = {"gpt2": 2, "gpt_neox": 4, "llama": 4}


def _randomise(model: torch.nn.Module, seed: int) -> None:
    """Every parameter random, the norms' γ too, so that folding γ_attn and γ shows in the edges."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.5)


def _tiny(family: str, parallel: bool = True):
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
            num_attention_heads=4,
            intermediate_size=20,
            max_position_embeddings=16,
            use_parallel_residual=parallel,
            **common,
        )
        return transformers.GPTNeoXForCausalLM(config)
    config = transformers.LlamaConfig(
        num_hidden_layers=N_BLOCKS,
        hidden_size=D_MODEL,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query: heads 0, 1 read KV head 0; heads 2, 3 read KV head 1
        intermediate_size=12,
        max_position_embeddings=16,
        **common,
    )
    return transformers.LlamaForCausalLM(config)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("transformer-heads")
    paths = {}
    for seed, family in enumerate(("gpt2", "gpt_neox", "llama")):
        model = _tiny(family)
        _randomise(model, 10 + seed)
        paths[family] = root / family
        model.save_pretrained(paths[family])
    return paths


# ---------------------------------------------------------------------------------------------- the reference


class Stored:
    """One family's tensors from its safetensors files in float64, each head sliced out by hand."""

    def __init__(self, family: str, path: Path) -> None:
        self.family, self.t = family, {}
        for file in sorted(path.glob("*.safetensors")):
            self.t.update({name: value.double() for name, value in load_file(file).items()})
        self.n_head = N_HEAD[family]
        self.d_head = D_MODEL // self.n_head

    def _get(self, block: int, name: str) -> torch.Tensor:
        return self.t[f"{PREFIX[self.family]}.{block}.{name}"]

    def w_out(self, b: int) -> torch.Tensor:  # (d_mlp, d_model)
        if self.family == "gpt2":
            return self._get(b, "mlp.c_proj.weight")  # Conv1D: stored (in, out)
        return self._get(b, "mlp.dense_4h_to_h.weight" if self.family == "gpt_neox" else "mlp.down_proj.weight").T

    def w_in(self, b: int) -> dict[str, torch.Tensor]:  # reader → (d_model, d_mlp)
        if self.family == "gpt2":
            return {"in": self._get(b, "mlp.c_fc.weight")}
        if self.family == "gpt_neox":
            return {"in": self._get(b, "mlp.dense_h_to_4h.weight").T}
        return {"gate": self._get(b, "mlp.gate_proj.weight").T, "up": self._get(b, "mlp.up_proj.weight").T}

    def gamma(self, b: int) -> torch.Tensor:
        return self._get(b, "ln_2.weight" if self.family == "gpt2" else "post_attention_layernorm.weight")

    def gamma_attn(self, b: int) -> torch.Tensor:
        return self._get(b, "ln_1.weight" if self.family == "gpt2" else "input_layernorm.weight")

    def w_v(self, b: int, h: int) -> torch.Tensor:  # (d_model, d_head) of the KV head query head h reads
        dh = self.d_head
        if self.family == "gpt2":  # c_attn (d_model, 3·d_model): columns [q | k | v]
            start = 2 * D_MODEL + h * dh
            return self._get(b, "attn.c_attn.weight")[:, start : start + dh]
        if self.family == "gpt_neox":  # query_key_value (3·d_model, d_model): rows per head [q_h, k_h, v_h]
            start = h * 3 * dh + 2 * dh
            return self._get(b, "attention.query_key_value.weight")[start : start + dh, :].T
        kv = h // 2  # 4 query heads over 2 KV heads
        return self._get(b, "self_attn.v_proj.weight")[kv * dh : (kv + 1) * dh, :].T

    def w_o(self, b: int, h: int) -> torch.Tensor:  # (d_head, d_model)
        cols = slice(h * self.d_head, (h + 1) * self.d_head)
        if self.family == "gpt2":
            return self._get(b, "attn.c_proj.weight")[cols, :]  # Conv1D (in, out)
        name = "attention.dense.weight" if self.family == "gpt_neox" else "self_attn.o_proj.weight"
        return self._get(b, name)[:, cols].T  # nn.Linear (out, in)

    def centre(self, rows: torch.Tensor) -> torch.Tensor:
        return rows - rows.mean(dim=1, keepdim=True) if self.family != "llama" else rows

    def mlp_to_head(self, l1: int, l2: int) -> tuple[np.ndarray, np.ndarray]:
        """(value, scale) of shape (d_mlp, n_head): ‖W_out_c[i] · diag(γ_attn) · W_V[h]‖ and its terms' bound."""
        src, gamma = self.centre(self.w_out(l1)), self.gamma_attn(l2)
        value, scale = np.zeros((src.shape[0], self.n_head)), np.zeros((src.shape[0], self.n_head))
        for h in range(self.n_head):
            w_v = self.w_v(l2, h)
            value[:, h] = torch.einsum("id,d,de->ie", src, gamma, w_v).norm(dim=1).numpy()
            scale[:, h] = torch.einsum("id,d,de->ie", src.abs(), gamma.abs(), w_v.abs()).norm(dim=1).numpy()
        return value, scale

    def head_to_mlp(self, l1: int, l2: int, only: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(value, scale) of shape (n_head, d_mlp): ‖W_O_c[h] · diag(γ) · W_in[:, j]‖, over both readers if gated
        (``only``: one of them)."""
        gamma = self.gamma(l2)
        readers = {name: w for name, w in self.w_in(l2).items() if only in (None, name)}
        n_dst = next(iter(readers.values())).shape[1]
        value, scale = np.zeros((self.n_head, n_dst)), np.zeros((self.n_head, n_dst))
        for h in range(self.n_head):
            w_o = self.centre(self.w_o(l1, h))
            for w_in in readers.values():
                value[h] += (torch.einsum("ed,d,dj->ej", w_o, gamma, w_in) ** 2).sum(dim=0).numpy()
                scale[h] += (torch.einsum("ed,d,dj->ej", w_o.abs(), gamma.abs(), w_in.abs()) ** 2).sum(dim=0).numpy()
        return np.sqrt(value), np.sqrt(scale)


def assert_close(got: np.ndarray, want: tuple[np.ndarray, np.ndarray], rtol: float = 1e-5) -> None:
    """Each norm within rtol of the norm of its terms' magnitudes (float32 rounding), and typically of itself."""
    value, scale = want
    error = np.abs(got - value) / scale
    assert error.max() <= rtol, f"worst relative error {error.max():.2e}"
    assert np.median(np.abs(got - value) / value) <= rtol


def expected_pairs(n_blocks: int, parallel: bool) -> list[tuple[int, int]]:
    """Layer pairs (heads of block b = layer 2b, its MLP = 2b + 1) by the rule of methods.md §10.6."""
    pairs = []
    for l1 in range(n_blocks):
        pairs += [(2 * l1, 2 * l2 + 1) for l2 in range(l1 + int(parallel), n_blocks)]  # head → MLP
        for l2 in range(l1 + 1, n_blocks):
            pairs += [(2 * l1 + 1, 2 * l2), (2 * l1 + 1, 2 * l2 + 1)]  # MLP → head, MLP → MLP
    return sorted(pairs)


# ---------------------------------------------------------------------------------------------- the loader


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "llama"])
def test_every_head_edge_matches_the_formula(saved, family):
    graph = load_transformer(saved[family], top_k=0, heads=True)
    names = [f"{PREFIX[family]}.{b}.{part}" for b in range(N_BLOCKS) for part in (ATTENTION[family], "mlp")]
    assert [layer.name for layer in graph.layers] == names
    assert [layer.role for layer in graph.layers] == ["attention", "hidden"] * N_BLOCKS
    assert [layer.size for layer in graph.layers[::2]] == [N_HEAD[family]] * N_BLOCKS
    assert graph.biases[0] is None and graph.meta.heads is True and graph.meta.graph == "virtual"
    assert [(b.src_layer, b.dst_layer) for b in graph.blocks] == expected_pairs(N_BLOCKS, family == "gpt_neox")

    stored = Stored(family, saved[family])
    plain = {(2 * b.src_layer + 1, 2 * b.dst_layer + 1): b for b in load_transformer(saved[family], top_k=0).blocks}
    for block in graph.blocks:
        l1, l2 = block.src_layer // 2, block.dst_layer // 2
        assert np.count_nonzero(block.weight) == block.weight.size  # top_k=0 keeps every edge
        if block.src_layer % 2 == 0:  # head → MLP
            assert_close(block.weight, stored.head_to_mlp(l1, l2))
            if family == "llama":
                np.testing.assert_allclose(
                    np.hypot(block.parts["v_gate"], block.parts["v_up"]), block.weight, rtol=1e-6
                )
                assert_close(block.parts["v_up"], stored.head_to_mlp(l1, l2, only="up"))
        elif block.dst_layer % 2 == 0:  # MLP → head
            assert_close(block.weight, stored.mlp_to_head(l1, l2))
            if family == "llama":  # heads sharing a KV head read the same value vectors; no gate or up here
                np.testing.assert_array_equal(block.weight[:, 0], block.weight[:, 1])
                assert not block.parts["v_gate"].any() and not block.parts["v_up"].any()
        else:  # MLP → MLP: the virtual graph's own edges
            np.testing.assert_array_equal(block.weight, plain[(block.src_layer, block.dst_layer)].weight)
        assert sorted(block.parts) == (["v_gate", "v_up"] if family == "llama" else [])


def test_sequential_neox_heads_feed_their_own_blocks_mlp():
    model = _tiny("gpt_neox", parallel=False)
    graph = graph_from_transformer(model, top_k=0, heads=True)
    assert [(b.src_layer, b.dst_layer) for b in graph.blocks] == expected_pairs(N_BLOCKS, parallel=False)
    assert graph.layers[0].name == "gpt_neox.layers.0.attention" and graph.layers[0].size == 4


def test_top_k_keeps_the_k_largest_per_unit_and_layer_and_chunks_agree(saved):
    full = {(b.src_layer, b.dst_layer): b.weight for b in load_transformer(saved["llama"], top_k=0, heads=True).blocks}
    k = 2  # of 4 heads (two tied pairs under GQA) or 12 neurons
    for block in load_transformer(saved["llama"], top_k=k, heads=True).blocks:
        dense = full[(block.src_layer, block.dst_layer)]
        kept = block.weight != 0
        assert (kept.sum(axis=1) == k).all()
        magnitude = np.abs(dense)
        assert (np.where(kept, magnitude, np.inf).min(axis=1) >= np.where(kept, -np.inf, magnitude).max(axis=1)).all()
        np.testing.assert_array_equal(block.weight[kept], dense[kept])
    weights = read_transformer(saved["llama"], attention=True)[0]
    whole = list(head_edges(weights, top_k=3))
    for a, b in zip(whole, head_edges(weights, top_k=3, chunk_bytes=1), strict=True):  # one row (or head) at a time
        assert (a.src, a.dst, a.n_candidates) == (b.src, b.dst, b.n_candidates)
        np.testing.assert_array_equal(a.rows, b.rows)
        np.testing.assert_allclose(a.weight, b.weight, rtol=1e-5)


def test_heads_options_are_refused_where_they_do_not_apply(saved):
    with pytest.raises(TransformerOptionError, match="heads applies to graph='virtual'"):
        load_transformer(saved["gpt2"], graph="mlp-in", heads=True)
    weights = read_transformer(saved["gpt2"])[0]  # read without the attention weights
    with pytest.raises(TransformerOptionError, match="attention=True"):
        build_graph(weights, heads=True)


def test_planted_heads_come_apart_with_their_halves():
    """Head h of the planted GPT-2 reads and writes half h; with W_O's rows zero-mean within their half, centring
    adds nothing across halves, and heads and MLP neurons split into the two halves at K=2."""
    from tests.loaders.test_transformers import HALF, planted_gpt2

    model, neurons = planted_gpt2()
    with torch.no_grad():
        for block in model.transformer.h:
            w_o = block.attn.c_proj.weight  # (in = head dims, out = residual dims), already zero across halves
            mask = w_o != 0
            w_o.copy_((w_o - w_o.sum(dim=1, keepdim=True) / HALF) * mask)
    # top-8 keeps both heads of a row, so min_weight drops float32's rounding residue of the centring across halves
    graph = graph_from_transformer(model, top_k=8, min_weight=1e-4, heads=True)
    truth = np.tile(np.concatenate([[0, 1], neurons]), N_BLOCKS)  # head h ↔ half h, then the MLP's neurons
    with pytest.warns(DisconnectedGraphWarning, match="2 connected components"):
        labels = spectral_clustering(BlockGraph.from_model_graph(graph), 2, random_state=0).labels.numpy()
    assert adjusted_rand_score(truth, labels) == 1.0


# ---------------------------------------------------------------------------------------------- the store


@pytest.fixture
def run(connection, tmp_path):
    env = {
        "NEO4J_URI": connection.uri,
        "NEO4J_USERNAME": connection.user,
        "NEO4J_PASSWORD": connection.password.get_secret_value(),
        "NEURONMAP_HOME": str(tmp_path / "home"),
        "COLUMNS": "200",
    }
    return lambda *args: CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_cli_ingests_heads_and_pulls_them_back(run, store, model_id, saved):
    result = run("ingest", str(saved["llama"]), "--name", model_id, "--top-k", "3", "--heads")
    assert result.exit_code == 0, result.output
    graph = load_transformer(saved["llama"], top_k=3, heads=True)
    candidates = sum(b.weight.size for b in graph.blocks)
    assert (
        f"6 layers, {3 * (4 + 12)} neurons, {graph.n_edges} edges (top-3 per neuron and block, heads as units, "
        f"of {candidates} candidate edges)" in result.output
    )
    rows = store.run_ad_hoc(
        AdHocStatement(text="MATCH (m:Model {name: $name}) RETURN properties(m) AS p"), {"name": model_id}
    ).rows
    assert (rows[0]["p"]["heads"], rows[0]["p"]["top_k"], rows[0]["p"]["graph"]) == (True, 3, "virtual")

    pulled = pull_subgraph(store, model_id)
    layers = pulled.layers
    assert [(x["name"], x["role"], x["size"]) for x in layers] == [(x.name, x.role, x.size) for x in graph.layers]
    got = {(s, d): w for s, d, w in pulled.graph.blocks}
    want = BlockGraph.from_model_graph(graph)
    assert sorted(got) == [(s, d) for s, d, _ in want.blocks]
    for s, d, w in want.blocks:
        np.testing.assert_allclose(got[(s, d)].numpy(), w.numpy(), rtol=1e-12)
    # a gated head → MLP edge keeps both readers' norms beside w
    edge = store.run_ad_hoc(
        AdHocStatement(
            text="MATCH (a:Neuron {model: $name, layer: 0})-[e:WEIGHT]->(b:Neuron {layer: 1}) "
            "RETURN e.w AS w, e.v_gate AS g, e.v_up AS u LIMIT 1"
        ),
        {"name": model_id},
    ).rows[0]
    assert edge["w"] == pytest.approx(np.hypot(edge["g"], edge["u"]), rel=1e-6) and edge["g"] > 0

    # a block reference takes the block's heads with its MLP
    assert block_layers(layers, "1") == "model.layers.1.self_attn:model.layers.1.mlp"
    assert block_layers(layers, "0:1") == "model.layers.0.self_attn:model.layers.1.mlp"
    refused = run("ingest", str(saved["llama"]), "--name", model_id, "--graph", "mlp-in", "--heads", "--replace")
    assert refused.exit_code != 0 and "heads applies to graph='virtual'" in refused.output.strip().splitlines()[-1]
