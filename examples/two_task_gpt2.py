"""A tiny two-task GPT-2 end to end without a store (methods.md §11.4): train it on the generated ``two-task`` data
with its residual stream split in halves, cluster its virtual neuron graph, then ask which modules matter (ablation)
and what they respond to (output and input tokens).

    python -m neuronmap.examples.two_task_gpt2
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np
import torch

from neuronmap.loaders.tokens import TokenData, load_token_data

if TYPE_CHECKING:
    from transformers import PreTrainedModel

VOCAB, D_MODEL, HALF, N_INNER, CONTEXT, N_BLOCKS = 64, 32, 16, 32, 12, 2


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread; on a busy 2-core machine two threads spin against each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class TwoTaskModel:
    model: torch.nn.Module  # GPT2LMHeadModel, in eval mode
    data: TokenData
    halves: np.ndarray  # (N_INNER,) the half (= task) each MLP neuron serves, the same in every block


def _same(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a[:, None] == b[None, :]).float()


def train_two_task_gpt2(steps: int = 120, seed: int = 0) -> TwoTaskModel:
    """A 2-block GPT-2 (d_model 32, 32 MLP neurons a block, vocabulary 64) trained on ``two-task`` with its residual
    stream split in halves: token t writes (and is read from) half t mod 2; each head and MLP neurons 0…15 / 16…31
    read and write one half only (masks applied after every Adam step); position embeddings and the biases that
    write the residual stream stay 0. Half 0 can only solve task 0 (even tokens), half 1 task 1."""
    import transformers

    data = load_token_data("two-task", vocab_size=VOCAB, context=CONTEXT, n_contexts=640, heldout=0.1, seed=seed)
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        n_layer=N_BLOCKS,
        n_embd=D_MODEL,
        n_head=2,
        n_inner=N_INNER,
        n_positions=CONTEXT,
        vocab_size=VOCAB,
        bos_token_id=0,
        eos_token_id=1,
    )
    model = transformers.GPT2LMHeadModel(config).train()
    dims, neurons = torch.arange(D_MODEL) // HALF, torch.arange(N_INNER) // (N_INNER // 2)
    masks = {"transformer.wte.weight": _same(torch.arange(VOCAB) % 2, dims)}
    for block in range(N_BLOCKS):
        path = f"transformer.h.{block}."
        masks[path + "attn.c_attn.weight"] = _same(dims, dims).repeat(1, 3)
        masks[path + "attn.c_proj.weight"] = _same(dims, dims)
        masks[path + "mlp.c_fc.weight"] = _same(dims, neurons)
        masks[path + "mlp.c_proj.weight"] = _same(neurons, dims)
    params = dict(model.named_parameters())
    zeroed = [name for name in params if name.endswith(("wpe.weight", "c_proj.bias"))]  # they write both halves

    def constrain() -> None:
        with torch.no_grad():
            for name, mask in masks.items():
                params[name].mul_(mask)
            for name in zeroed:
                params[name].zero_()

    constrain()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-2)
    generator = torch.Generator().manual_seed(seed)
    with one_thread():
        for _ in range(steps):
            batch = data.train[torch.randint(0, data.train.shape[0], (32,), generator=generator)]
            loss = model(input_ids=batch, labels=batch).loss
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            constrain()
    return TwoTaskModel(model=model.eval(), data=data, halves=neurons.numpy())


def main() -> None:
    from sklearn.metrics import adjusted_rand_score

    from neuronmap.loaders.transformers import graph_from_transformer
    from neuronmap.service.assessment.layout import SubClusterRef
    from neuronmap.service.assessment.transformer.coherence import TokenCoherenceConfig, assess_token_coherence
    from neuronmap.service.assessment.transformer.importance import (
        TransformerImportanceConfig,
        assess_transformer_importance,
    )
    from neuronmap.service.clustering.spectral import spectral_clustering

    trained = train_two_task_gpt2()
    graph = graph_from_transformer(cast("PreTrainedModel", trained.model), top_k=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the planted halves share no edge: two connected components, said once
        labels = spectral_clustering(graph, 2, random_state=0).labels.numpy()
    truth = np.tile(trained.halves, N_BLOCKS)
    print(
        f"virtual graph: {graph.n_neurons} MLP neurons, {graph.n_edges} edges; K=2 clusters vs the planted "
        f"halves: adjusted Rand {adjusted_rand_score(truth, labels):.3f}"
    )
    subs, pools = [], {}
    for layer in graph.layers:
        here = labels[graph.offsets[layer.index] : graph.offsets[layer.index + 1]]
        pools[layer.index] = np.arange(layer.size)
        for cluster in np.unique(here):
            units = tuple(int(u) for u in np.flatnonzero(here == cluster))
            subs.append(
                SubClusterRef(
                    cluster=int(cluster), layer=layer.index, layer_name=layer.name, units=units, pool_size=layer.size
                )
            )
    data = trained.data
    with one_thread():
        importance = assess_transformer_importance(
            trained.model,
            data.train,
            data.test,
            subs,
            pools,
            TransformerImportanceConfig(dataset="two-task", n_null=49, small_size=4),
            task_test=data.task_test,
            task_names=data.task_names,
        )
        logits = assess_token_coherence(
            trained.model, "logits", subs, pools, TokenCoherenceConfig(n_null=49, max_fraction=0.9), show=data.token
        )
    print(
        f"intact loss {importance.loss:.3f} nats (count {importance.task_loss[0]:.3f}, "
        f"permute {importance.task_loss[1]:.3f}); 49 random sets per sub-cluster, mean ablation"
    )
    print("layer                 cluster  Δloss count  Δloss permute  p count  p permute  logits p_adj  top tokens")
    for sub, coh in zip(importance.subclusters, logits.subclusters):
        print(
            f"{sub.layer_name:<22}{sub.cluster:>7}  {sub.task_delta_loss[0]:>11.3f}  {sub.task_delta_loss[1]:>13.3f}"
            f"  {sub.p_task_adjusted[0]:>7.3f}  {sub.p_task_adjusted[1]:>9.3f}  {coh.p_adjusted:>12.3f}  "
            f"{' '.join(coh.top_tokens[:6])}"
        )


if __name__ == "__main__":
    main()
