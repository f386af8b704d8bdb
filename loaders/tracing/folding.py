"""Fold an inference-mode BatchNorm into the Linear or Conv whose output it normalises.

BatchNorm with running statistics is the affine map y = (x − μ)·s + β per unit, with s = γ/√(σ² + ε), so
``W[j, ...] *= s_j`` and ``b' = (b − μ)·s + β`` give the same outputs with one layer fewer. The scale is signed,
as in the reference's ImageNet path: a negative γ gives negative edges. The reference's CIFAR path meant to
apply this scale and, through a typo, never did (methods.md §1.2); neuronmap applies it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BatchNormParams:
    """What an inference-mode BatchNorm applies, per feature; γ and β are None when ``affine=False``."""

    path: str
    running_mean: torch.Tensor  # (n,)
    running_var: torch.Tensor  # (n,)
    eps: float
    weight: torch.Tensor | None = None  # γ, (n,)
    bias: torch.Tensor | None = None  # β, (n,)

    @property
    def num_features(self) -> int:
        return int(self.running_mean.shape[0])


def fold_batchnorm(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: BatchNormParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight and bias of ``bn(layer(x))`` as one layer, in float64.

    Parameters
    ----------
    weight : torch.Tensor of shape (out, ...)
        A Linear's (out, in) or a Conv's (out, in/groups, kh, kw) weight.
    bias : torch.Tensor of shape (out,) or None
        None for layers built with ``bias=False``.
    bn : BatchNormParams
        The BatchNorm over the layer's ``out`` units or channels.

    Returns
    -------
    weight : torch.Tensor, float64, same shape as ``weight``
    bias : torch.Tensor of shape (out,), float64
    """
    w = weight.detach().to(device="cpu", dtype=torch.float64)
    n_out = w.shape[0]
    b = torch.zeros(n_out, dtype=torch.float64) if bias is None else bias.detach().to("cpu", torch.float64)
    mean = bn.running_mean.detach().to("cpu", torch.float64)
    var = bn.running_var.detach().to("cpu", torch.float64)
    gamma = torch.ones(n_out, dtype=torch.float64) if bn.weight is None else bn.weight.detach().to("cpu", torch.float64)
    beta = torch.zeros(n_out, dtype=torch.float64) if bn.bias is None else bn.bias.detach().to("cpu", torch.float64)
    scale = gamma / torch.sqrt(var + bn.eps)  # (out,)
    folded = w * scale.reshape(-1, *([1] * (w.dim() - 1)))  # scale output unit/channel j
    return folded, (b - mean) * scale + beta
