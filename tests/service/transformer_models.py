"""Tiny language models for the transformer assessment tests, built in-process (nothing downloaded)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from neuronmap.loaders.tokens import TokenData, load_token_data
from neuronmap.service.assessment.layout import SubClusterRef

VOCAB, D_MODEL, HALF, N_INNER, CONTEXT, N_BLOCKS = 64, 32, 16, 32, 12, 2


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread; on a shared 2-core machine two threads spin against each other
    (20 training steps: 0.7 s on one thread, 17 s on two, measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def tiny_gpt2(seed: int = 0, **overrides: int):
    import transformers

    torch.manual_seed(seed)
    config = dict(n_layer=N_BLOCKS, n_embd=D_MODEL, n_head=2, n_inner=N_INNER, n_positions=CONTEXT, vocab_size=VOCAB)
    config.update(overrides)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**config, bos_token_id=0, eos_token_id=1))
    return model.eval()


def tiny_llama(seed: int = 0):
    import transformers

    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        num_hidden_layers=N_BLOCKS,
        hidden_size=D_MODEL,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=N_INNER,
        max_position_embeddings=CONTEXT,
        vocab_size=VOCAB,
        bos_token_id=0,
        eos_token_id=1,
    )
    return transformers.LlamaForCausalLM(config).eval()


def _same(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a[:, None] == b[None, :]).float()


@dataclass(frozen=True)
class Planted:
    model: torch.nn.Module
    data: TokenData
    halves: np.ndarray  # (N_INNER,) the half (= task) each MLP neuron serves, the same in every block


@functools.cache
def planted_two_task(steps: int = 120, seed: int = 0) -> Planted:
    """A GPT-2 trained on the two-task data with its residual stream split in halves: token t writes and is read
    from half t mod 2, each head and MLP neurons 0…15 / 16…31 read and write one half only (the masks are applied
    after every step). Half 0 can only solve task 0 (even tokens), half 1 task 1. Built once per test session."""
    data = load_token_data("two-task", vocab_size=VOCAB, context=CONTEXT, n_contexts=640, heldout=0.1, seed=seed)
    model = tiny_gpt2(seed).train()
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
    return Planted(model=model.eval(), data=data, halves=neurons.numpy())


def subclusters_of(labels: np.ndarray, n_blocks: int = N_BLOCKS) -> tuple[list[SubClusterRef], dict[int, np.ndarray]]:
    """The sub-clusters of a partition that labels every block's MLP neurons the same way (layer = block)."""
    subs, pools = [], {}
    for block in range(n_blocks):
        pools[block] = np.arange(labels.size)
        for cluster in np.unique(labels):
            units = tuple(int(u) for u in np.flatnonzero(labels == cluster))
            subs.append(
                SubClusterRef(
                    cluster=int(cluster),
                    layer=block,
                    layer_name=f"transformer.h.{block}.mlp",
                    units=units,
                    pool_size=labels.size,
                )
            )
    return subs, pools
