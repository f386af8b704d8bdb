"""Coherence of a transformer's modules (methods.md §11.3), three methods, each against random same-size sets of
the same block:

- ``examples``: the top-k contexts by the set's mean activation, the token at each one's peak and a window around
  it; statistics: the entropy of the peak tokens (lower is coherent), the mean activation of the top contexts and
  the mean pairwise cosine similarity of the windows' bags of tokens (higher is coherent);
- ``logits`` (weight-only): the set's direct effect on the logits, Σ_i W_out[i] · diag(γ_f) · W_U;
- ``inputs`` (weight-only): the embedding's direct read, W_E · diag(γ) · W_in, averaged over the set.

For the weight-only methods the statistics are the entropy of softmax of the token scores (lower is coherent) and
the concentration, the softmax mass of the top tokens (higher is coherent). The per-sub-cluster p-value combines a
method's statistics by Bonferroni, as the MLPs' coherence does (methods.md §6.3).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from neuronmap.options import TokenCoherenceMethod
from neuronmap.results import BriefRepr, SubclusterTable
from neuronmap.service.assessment.coherence.results import (
    CoherenceConfig,
    against_random,
    effect,
    qualifying,
    selection_weights,
    subcluster_sets,
)
from neuronmap.service.assessment.common import finite_mean, none_if_nan
from neuronmap.service.assessment.layout import SubClusterRef
from neuronmap.service.assessment.transformer.sites import MlpSites, mlp_sites
from neuronmap.service.stats import adjust_pvalues, chi2_uniformity_pvalue, entropy_nats, fisher_combined_pvalue

TokenMethod = TokenCoherenceMethod
STATISTICS: dict[str, tuple[tuple[str, str], ...]] = {  # method → (statistic, direction of coherence)
    "examples": (("entropy", "less"), ("activation", "greater"), ("similarity", "greater")),
    "examples+tasks": (
        ("entropy", "less"),
        ("activation", "greater"),
        ("similarity", "greater"),
        ("task_entropy", "less"),
    ),
    "logits": (("entropy", "less"), ("concentration", "greater")),
    "inputs": (("entropy", "less"), ("concentration", "greater")),
}


class TokenCoherenceConfig(CoherenceConfig):
    """The size rule, tests and seed of ``CoherenceConfig``, and what each method looks at."""

    dataset: str = "two-task"
    n_null: int = Field(default=100, ge=1)
    k: int = Field(default=16, ge=2)  # examples: top contexts per set
    window: int = Field(default=4, ge=0)  # examples: tokens each side of the peak
    top_tokens: int = Field(default=10, ge=1)  # logits/inputs: tokens in the concentration and the saved list
    batch_size: int = Field(default=64, ge=1)


class TokenSubClusterCoherence(BaseModel):
    """One sub-cluster's statistics in one method, each against its random sets; what it responds to."""

    model_config = ConfigDict(extra="allow")  # entropy, null_entropy_mean, p_entropy, … per statistic

    cluster: int
    layer: int
    layer_name: str
    size: int
    block: int
    p_value: float  # min(1, n_statistics × the smallest statistic p-value)
    p_adjusted: float = 1.0
    statistic: str
    top_tokens: list[str] = []  # logits/inputs: the highest-scoring tokens; examples: the peak tokens
    top_token_ids: list[int] = []
    windows: list[str] = []  # examples: the window around each top context's peak, the peak in [brackets]
    top_contexts: list[int] = []  # examples: indices of the top contexts

    def stored_properties(self) -> dict[str, Any]:
        return self.model_dump(exclude={"cluster", "layer", "layer_name", "size"}, exclude_none=True)


class TokenCoherenceResult(BriefRepr, SubclusterTable, BaseModel):
    """One token coherence method over every qualifying MLP sub-cluster of a transformer's partition."""

    _brief_fields = ("assessment", "model", "partition", "method", "n_null", "n_coherent", "fisher_p")

    assessment: str | None = None
    model: str = ""
    partition: str = ""
    kind: str = "transformer"
    method: str  # coherence_examples, coherence_logits or coherence_inputs
    dataset: str | None = None
    n_contexts: int | None = None
    n_null: int
    seed: int
    device: str
    subclusters: list[TokenSubClusterCoherence]
    skipped: list[str]
    n_coherent: int
    alpha: float
    fisher_p: float | None
    network: dict[str, float | None]  # fisher_p_<statistic>, chi2_p_<statistic>, effect_<statistic>
    seconds: float

    def stored_properties(self) -> dict[str, Any]:
        props = self.model_dump(exclude={"assessment", "model", "partition", "subclusters", "method", "network"})
        return {**props, **self.network}


# -- token scores ----------------------------------------------------------------------------------------------------


def _embedding(model: nn.Module, getter: str) -> torch.Tensor:
    """The (vocab, d_model) weight of the model's input or output embedding, float32 on the CPU."""
    module = getattr(model, getter)()
    return module.weight.detach().float().cpu()


def _centred(x: torch.Tensor, sites: MlpSites) -> torch.Tensor:
    """Rows centred over d_model for a LayerNorm reader (what LayerNorm removes first), as-is for RMSNorm."""
    return x - x.mean(dim=-1, keepdim=True) if sites.weights.norm == "layernorm" else x


@torch.no_grad()
def logit_scores(model: nn.Module, sites: MlpSites, block: int) -> torch.Tensor:
    """(d_mlp, vocab): each neuron's direct effect on the logits, W_out[i] · diag(γ_f) · W_U (methods.md §11.3)."""
    weight = sites.final_norm.weight
    assert isinstance(weight, torch.Tensor)
    gamma = weight.detach().float().cpu()
    unembed = _embedding(model, "get_output_embeddings")
    return (_centred(sites.weights.blocks[block].w_out, sites) * gamma) @ unembed.T


@torch.no_grad()
def input_scores(model: nn.Module, sites: MlpSites, block: int) -> torch.Tensor:
    """(d_mlp, vocab): the embedding's direct read by each neuron, W_E · diag(γ) · W_in; gated MLPs combine the
    gate's and the up projection's reads as sqrt(gate² + up²), as the virtual graph does."""
    mlp = sites.weights.blocks[block]
    embed = _centred(_embedding(model, "get_input_embeddings"), sites)
    reads = [(embed * mlp.gamma) @ w for w in mlp.w_in.values()]
    return (reads[0] if len(reads) == 1 else torch.hypot(*reads)).T


def token_statistics(scores: torch.Tensor, top: int) -> tuple[np.ndarray, np.ndarray]:
    """(entropy, concentration) of each row of (M, vocab) token scores, read as shares of its total |score|: the
    entropy (nats) of |s|/Σ|s| and the share of its ``top`` largest tokens. Both ignore the scores' scale, which
    grows with the set's size.

    >>> e, c = token_statistics(torch.tensor([[1.0, -1.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0]]), 1)
    >>> [round(float(v), 4) for v in e], [round(float(v), 4) for v in c]
    ([0.6931, 0.0], [0.5, 1.0])
    """
    magnitude = scores.double().abs()
    p = magnitude / magnitude.sum(dim=-1, keepdim=True).clamp_min(1e-300)
    entropy = -(p * torch.log(p.clamp_min(1e-300))).sum(dim=-1)
    return entropy.numpy(), p.topk(min(top, p.shape[-1]), dim=-1).values.sum(dim=-1).numpy()


# -- data-set examples ------------------------------------------------------------------------------------------------


@torch.no_grad()
def hidden_activations(
    model: nn.Module, sites: MlpSites, ids: torch.Tensor, blocks: Sequence[int], batch_size: int
) -> dict[int, torch.Tensor]:
    """Per block: the MLP hidden activations (n_contexts, L, d_mlp) on the CPU, captured by pre-hooks."""
    out: dict[int, list[torch.Tensor]] = {b: [] for b in blocks}
    handles = []
    for b in blocks:

        def hook(module: nn.Module, args: tuple[Any, ...], b: int = b) -> None:
            out[b].append(args[0].detach().float().cpu())

        handles.append(sites.writers[b].register_forward_pre_hook(hook))
    try:
        device = next(model.parameters()).device
        for start in range(0, ids.shape[0], batch_size):
            model(input_ids=ids[start : start + batch_size].to(device))
    finally:
        for handle in handles:
            handle.remove()
    return {b: torch.cat(chunks) for b, chunks in out.items()}


def example_statistics(
    acts: torch.Tensor, ids: torch.Tensor, sets: Sequence[np.ndarray], k: int, vocab: int
) -> dict[str, Any]:
    """Per set (rows): the top-k contexts by mean activation, their peak positions and tokens, and the statistics
    entropy (of the peak tokens), activation (mean over the top contexts) and similarity (of the windows)."""
    weights = selection_weights(sets, acts.shape[-1], torch.device("cpu"))  # (M, d_mlp)
    per_token = acts @ weights.T  # (n, L, M): the set's mean activation at each token
    score = per_token.mean(dim=1)  # (n, M)
    k = min(k, score.shape[0])
    top = score.topk(k, dim=0).indices.T  # (M, k)
    rows = torch.arange(len(sets))[:, None]
    peaks = per_token[top, :, rows].argmax(dim=-1)  # (M, k)
    peak_tokens = ids[top, peaks]  # (M, k)
    counts = torch.zeros(len(sets), vocab, dtype=torch.float64).scatter_add_(
        1, peak_tokens, torch.ones_like(peak_tokens, dtype=torch.float64)
    )
    return {
        "top": top,
        "peaks": peaks,
        "peak_tokens": peak_tokens,
        "entropy": entropy_nats(counts.numpy(), axis=1),
        "activation": score[top, rows].mean(dim=1).double().numpy(),
    }


def window_similarity(ids: torch.Tensor, top: torch.Tensor, peaks: torch.Tensor, window: int, vocab: int) -> np.ndarray:
    """(M,) the mean pairwise cosine similarity of the bags of tokens in the windows around each set's peaks."""
    n, length = ids.shape
    offsets = torch.arange(-window, window + 1)
    positions = (peaks[..., None] + offsets).clamp(0, length - 1)  # (M, k, w); a clamped edge repeats a token
    tokens = ids[top[..., None], positions]  # (M, k, w)
    bags = torch.zeros(*tokens.shape[:2], vocab, dtype=torch.float64).scatter_add_(
        2, tokens, torch.ones_like(tokens, dtype=torch.float64)
    )
    bags = bags / bags.norm(dim=-1, keepdim=True)
    gram = bags @ bags.transpose(1, 2)  # (M, k, k)
    k = gram.shape[1]
    return ((gram.sum(dim=(1, 2)) - k) / (k * (k - 1))).numpy()


def _window_text(ids: torch.Tensor, context: int, peak: int, window: int, show: Callable[[int], str]) -> str:
    lo, hi = max(0, peak - window), min(ids.shape[1], peak + window + 1)
    return " ".join(
        f"[{show(int(t))}]" if i == peak else show(int(t)) for i, t in zip(range(lo, hi), ids[context, lo:hi])
    )


# -- the assessment ----------------------------------------------------------------------------------------------------


def summarise_tokens(rows: list[dict[str, Any]], names: Sequence[str], n_null: int, alpha: float) -> dict[str, Any]:
    """Per sub-cluster: the Bonferroni-combined p-value and BH adjustments (in place); per network: the tests."""
    network: dict[str, Any] = {}
    for row in rows:
        best = min(names, key=lambda name: row[f"p_{name}"])
        row["statistic"], row["p_value"] = best, min(1.0, len(names) * row[f"p_{best}"])
    fishers = []
    for key in [f"p_{name}" for name in names] + ["p_value"]:
        p = np.array([row[key] for row in rows], dtype=np.float64)
        adjusted = adjust_pvalues(p, "bh") if p.size else p
        for row, value in zip(rows, adjusted):
            row["p_adjusted" if key == "p_value" else f"{key}_adjusted"] = float(value)
        if key != "p_value":
            name = key[2:]
            network[f"fisher_p_{name}"] = none_if_nan(fisher_combined_pvalue(p, n_null)) if p.size else None
            network[f"chi2_p_{name}"] = none_if_nan(chi2_uniformity_pvalue(p, n_null)) if p.size else None
            network[f"effect_{name}"] = finite_mean([effect(row[f"null_{name}_mean"], row[name]) for row in rows])
            fishers.append(network[f"fisher_p_{name}"])
    found = [f for f in fishers if f is not None]
    return {
        "fisher_p": min(1.0, len(names) * min(found)) if found else None,
        "n_coherent": sum(row["p_adjusted"] < alpha for row in rows),
        "network": network,
    }


def _examples_rows(
    model: nn.Module,
    sites: MlpSites,
    ids: torch.Tensor,
    blocks: Sequence[int],
    sets: Sequence[Sequence[np.ndarray]],
    config: TokenCoherenceConfig,
    show: Callable[[int], str],
    tasks: torch.Tensor | None,
) -> list[dict[str, Any]]:
    acts = hidden_activations(model, sites, ids, sorted(set(blocks)), config.batch_size)
    vocab = int(_embedding(model, "get_output_embeddings").shape[0])
    rows = []
    for block, group in zip(blocks, sets):
        s = example_statistics(acts[block], ids, group, config.k, vocab)
        s["similarity"] = window_similarity(ids, s["top"], s["peaks"], config.window, vocab)
        if tasks is not None:
            top_tasks = tasks[s["top"]]  # (M, k)
            n_tasks = int(tasks.max()) + 1
            counts = torch.zeros(top_tasks.shape[0], n_tasks, dtype=torch.float64)
            counts.scatter_add_(1, top_tasks, torch.ones_like(top_tasks, dtype=torch.float64))
            s["task_entropy"] = entropy_nats(counts.numpy(), axis=1)
        row: dict[str, Any] = {}
        for name, direction in STATISTICS["examples" if tasks is None else "examples+tasks"]:
            row.update(
                against_random(name, np.asarray(s[name]), "less" if direction == "less" else "greater", config.ties)
            )
        top, peaks, tokens = s["top"][0].tolist(), s["peaks"][0].tolist(), s["peak_tokens"][0].tolist()
        row.update(
            top_contexts=top,
            top_token_ids=tokens,
            top_tokens=[show(t) for t in tokens],
            windows=[_window_text(ids, c, p, config.window, show) for c, p in zip(top, peaks)],
        )
        rows.append(row)
    return rows


def _weight_rows(
    model: nn.Module,
    sites: MlpSites,
    method: TokenMethod,
    blocks: Sequence[int],
    sets: Sequence[Sequence[np.ndarray]],
    config: TokenCoherenceConfig,
    show: Callable[[int], str],
) -> list[dict[str, Any]]:
    score_of = logit_scores if method == "logits" else input_scores
    per_block = {b: score_of(model, sites, b) for b in sorted(set(blocks))}
    rows = []
    for block, group in zip(blocks, sets):
        scores = selection_weights(group, per_block[block].shape[0], torch.device("cpu")) @ per_block[block]
        entropy, concentration = token_statistics(scores, config.top_tokens)
        row: dict[str, Any] = {}
        row.update(against_random("entropy", entropy, "less", config.ties))
        row.update(against_random("concentration", concentration, "greater", config.ties))
        ids = scores[0].topk(min(config.top_tokens, scores.shape[1])).indices.tolist()
        row.update(top_token_ids=ids, top_tokens=[show(t) for t in ids])
        rows.append(row)
    return rows


def assess_token_coherence(
    model: nn.Module,
    method: TokenMethod,
    subclusters: Sequence[SubClusterRef],
    pools: Mapping[int, np.ndarray],
    config: TokenCoherenceConfig | None = None,
    *,
    ids: torch.Tensor | None = None,
    tasks: torch.Tensor | None = None,
    show: Callable[[int], str] = str,
    sites: MlpSites | None = None,
) -> TokenCoherenceResult:
    """One coherence method over the qualifying sub-clusters (methods.md §11.3).

    Parameters
    ----------
    model : nn.Module
        The causal LM, in eval mode.
    method : {"examples", "logits", "inputs"}
    subclusters, pools
        As for ``assess_transformer_importance``; the size rule of ``CoherenceConfig`` applies.
    ids : torch.Tensor of shape (n, L), optional
        The contexts; ``examples`` needs them.
    tasks : torch.Tensor of shape (n,), optional
        The contexts' task labels: ``examples`` adds the entropy of the top contexts' tasks (as the MLPs' examples
        score the entropy of the top inputs' labels).
    show : callable
        Token id → text, for the saved top tokens and windows.
    """
    config = config or TokenCoherenceConfig()
    start = time.perf_counter()
    sites = sites or mlp_sites(model)
    subs, skipped = qualifying(subclusters, config)
    blocks = [sites.block_of(sub.layer_name) for sub in subs]
    sets = subcluster_sets(subs, pools, config.n_null, config.random_state)
    if method == "examples":
        if ids is None:
            raise ValueError("examples coherence needs the contexts (ids)")
        rows = _examples_rows(model, sites, ids, blocks, sets, config, show, tasks)
    else:
        rows = _weight_rows(model, sites, method, blocks, sets, config, show)
    key = "examples+tasks" if method == "examples" and tasks is not None else method
    names = [name for name, _ in STATISTICS[key]]
    summary = summarise_tokens(rows, names, config.n_null, config.alpha)
    results = [
        TokenSubClusterCoherence(
            cluster=sub.cluster, layer=sub.layer, layer_name=sub.layer_name, size=sub.size, block=block, **row
        )
        for sub, block, row in zip(subs, blocks, rows)
    ]
    return TokenCoherenceResult(
        method=f"coherence_{method}",
        dataset=config.dataset if method == "examples" else None,
        n_contexts=None if ids is None or method != "examples" else int(ids.shape[0]),
        n_null=config.n_null,
        seed=config.random_state,
        device=str(next(model.parameters()).device),
        subclusters=results,
        skipped=skipped,
        alpha=config.alpha,
        seconds=time.perf_counter() - start,
        **summary,
    )
