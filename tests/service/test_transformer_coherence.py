"""Transformer coherence (methods.md §11.3): the weight-only token scores by hand, the data-set example statistics
by hand, and the planted two-task GPT-2 against a random partition of it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuronmap.service.assessment.transformer.coherence import (
    TokenCoherenceConfig,
    assess_token_coherence,
    example_statistics,
    input_scores,
    logit_scores,
    token_statistics,
    window_similarity,
)
from neuronmap.service.assessment.transformer.sites import mlp_sites
from tests.service.transformer_models import one_thread, planted_two_task, subclusters_of, tiny_gpt2, tiny_llama


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_token_scores_match_the_formulas(family):
    model = tiny_gpt2(3) if family == "gpt2" else tiny_llama(3)
    sites = mlp_sites(model)
    base = model.base_model
    block = base.h[1] if family == "gpt2" else base.layers[1]
    embed = model.get_input_embeddings().weight.detach()
    unembed = model.get_output_embeddings().weight.detach()
    if family == "gpt2":
        w_out = block.mlp.c_proj.weight.detach()  # Conv1D: (d_mlp, d_model)
        w_out = w_out - w_out.mean(dim=1, keepdim=True)  # LayerNorm removes the mean first
        want_logits = w_out @ torch.diag(base.ln_f.weight.detach()) @ unembed.T
        centred = embed - embed.mean(dim=1, keepdim=True)
        want_inputs = (centred @ torch.diag(block.ln_2.weight.detach()) @ block.mlp.c_fc.weight.detach()).T
    else:
        w_out = block.mlp.down_proj.weight.detach().T
        want_logits = w_out @ torch.diag(base.norm.weight.detach()) @ unembed.T
        gamma = torch.diag(block.post_attention_layernorm.weight.detach())
        gate = embed @ gamma @ block.mlp.gate_proj.weight.detach().T
        up = embed @ gamma @ block.mlp.up_proj.weight.detach().T
        want_inputs = torch.sqrt(gate**2 + up**2).T
    torch.testing.assert_close(logit_scores(model, sites, 1), want_logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(input_scores(model, sites, 1), want_inputs, rtol=1e-4, atol=1e-5)


def test_example_statistics_by_hand():
    # 4 contexts of 3 tokens, one neuron; set = that neuron. Context means: 1, 3, 2, 0 → top-2 contexts 1, 2.
    acts = torch.tensor([[1.0, 1.0, 1.0], [0.0, 9.0, 0.0], [0.0, 0.0, 6.0], [0.0, 0.0, 0.0]])[..., None]
    ids = torch.tensor([[0, 1, 2], [3, 4, 5], [3, 4, 4], [0, 0, 0]])
    s = example_statistics(acts, ids, [np.array([0])], k=2, vocab=6)
    assert s["top"].tolist() == [[1, 2]] and s["peaks"].tolist() == [[1, 2]]
    assert s["peak_tokens"].tolist() == [[4, 4]] and s["entropy"].tolist() == [0.0]
    assert s["activation"][0] == pytest.approx(2.5)
    # windows of ±1: {3, 4, 5} and {4, 4} (the clamped edge repeats the last token): cosine 2/(√3·√4)
    sim = window_similarity(ids, s["top"], s["peaks"], 1, 6)
    assert sim[0] == pytest.approx(2 / (np.sqrt(3) * 2))
    entropy, concentration = token_statistics(torch.tensor([[3.0, -1.0, 0.0, 0.0]]), 1)
    assert entropy[0] == pytest.approx(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25)))
    assert concentration[0] == pytest.approx(0.75)


@pytest.fixture(scope="module")
def planted():
    return planted_two_task()


def _coherence(planted, labels, method, n_null=49):
    subs, pools = subclusters_of(labels)
    config = TokenCoherenceConfig(n_null=n_null, max_fraction=0.9, k=8)
    data = planted.data
    with one_thread():
        return assess_token_coherence(
            planted.model, method, subs, pools, config, ids=data.test, tasks=data.task_test, show=data.token
        )


@pytest.mark.parametrize("method", ["logits", "inputs"])
def test_planted_halves_write_and_read_their_own_tokens_and_random_halves_do_not(planted, method):
    result = _coherence(planted, planted.halves, method)
    assert result.method == f"coherence_{method}" and result.n_coherent == 4 and result.fisher_p < 0.001
    for sub in result.subclusters:
        parity = [int(t[1:]) % 2 for t in sub.top_tokens]
        assert parity == [sub.cluster] * 10, "half h's top tokens are its own task's (even for 0, odd for 1)"
        assert sub.p_adjusted < 0.05
    control = _coherence(planted, np.random.default_rng(0).permutation(planted.halves), method)
    assert control.n_coherent == 0


def test_examples_save_readable_windows(planted):
    result = _coherence(planted, planted.halves, "examples", n_null=9)
    assert result.method == "coherence_examples" and result.n_contexts == planted.data.test.shape[0]
    for sub in result.subclusters:
        assert len(sub.windows) == len(sub.top_tokens) == 8
        assert all(f"[{token}]" in window for token, window in zip(sub.top_tokens, sub.windows))
        assert sub.task_entropy == 0.0, "a planted half's top contexts are all its own task's"
        assert all(int(t[1:]) % 2 == sub.cluster for t in sub.top_tokens)
    props = result.stored_properties()
    assert {"fisher_p_task_entropy", "fisher_p_similarity", "n_coherent", "kind"} <= set(props)
