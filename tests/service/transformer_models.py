"""Tiny language models for the transformer assessment tests, built in-process (nothing downloaded)."""

from __future__ import annotations

import functools

import numpy as np
import torch

from neuronmap.examples.two_task_gpt2 import (  # noqa: F401  (one_thread and the sizes are used by the tests)
    CONTEXT,
    D_MODEL,
    N_BLOCKS,
    N_INNER,
    VOCAB,
    TwoTaskModel,
    one_thread,
    train_two_task_gpt2,
)
from neuronmap.service.assessment.layout import SubClusterRef


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


@functools.cache
def planted_two_task(steps: int = 120, seed: int = 0) -> TwoTaskModel:
    """The planted two-task GPT-2 of ``neuronmap.examples.two_task_gpt2`` (half h of its residual stream, and MLP
    neurons 16h…16h+15 of every block, can only solve task h), trained once per test session."""
    return train_two_task_gpt2(steps, seed)


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
