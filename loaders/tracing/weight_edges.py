"""Edge weights from layer weights: signed ``W.T`` for Linear layers, kernel-slice norms for channels.

A conv kernel of shape (out, in, kh, kw) becomes one edge per (input channel, output channel), weighted by a norm
of the kh×kw slice between them (methods.md §1.2). The same norm turns a Linear that reads a flattened (C, H, W)
map into one edge per (channel, unit), over that unit's H×W weights on the channel.
"""

from __future__ import annotations

from typing import TypeGuard

import numpy as np
import torch

from neuronmap.loaders.errors import OptionError
from neuronmap.options import KernelNorm, choices

KERNEL_NORMS = choices(KernelNorm)


def check_kernel_norm(norm: str) -> KernelNorm:
    """Return ``norm`` if it names a supported kernel-slice norm; raise OptionError otherwise."""
    if not _is_kernel_norm(norm):
        raise OptionError("kernel_norm", norm, KERNEL_NORMS)
    return norm


def _is_kernel_norm(norm: str) -> TypeGuard[KernelNorm]:
    return norm in KERNEL_NORMS


def kernel_slice_norm(kernel: torch.Tensor | np.ndarray, norm: KernelNorm = "entry_l1") -> np.ndarray:
    """One norm per (input, output) channel pair of a conv kernel.

    Parameters
    ----------
    kernel : torch.Tensor or ndarray of shape (out, in, kh, kw)
        PyTorch's Conv2d layout. A Linear weight reshaped to (out, C, H, W) gives its per-channel spatial maps.
    norm : {"entry_l1", "induced1", "spectral2", "fro"}, default="entry_l1"
        - "entry_l1": sum of |k| over the slice, the papers' "L1 norm".
        - "induced1": ``np.linalg.norm(|K|, ord=1)``, the largest column sum of |K|; what the reference code
          computes, for parity with the published numbers.
        - "spectral2": ``np.linalg.norm(|K|, ord=2)``, the largest singular value of |K|, as the reference's
          ``filter_norm=2``.
        - "fro": the Frobenius norm.

    Returns
    -------
    weights : ndarray of shape (in, out), float64, non-negative
    """
    norm = check_kernel_norm(norm)
    k = torch.as_tensor(kernel).detach().to(device="cpu", dtype=torch.float64)
    if k.dim() != 4:
        raise ValueError(f"A kernel has 4 dims (out, in, kh, kw); got shape {tuple(k.shape)}.")
    a = k.abs()  # the reference takes |K| first; it changes only the spectral norm
    if norm == "entry_l1":
        e = a.sum(dim=(-2, -1))
    elif norm == "induced1":
        e = a.sum(dim=-2).amax(dim=-1)  # column sums over kh, then the largest over kw
    elif norm == "spectral2":
        e = torch.linalg.matrix_norm(a, ord=2)  # batched SVD over every (out, in) pair
    else:
        e = torch.linalg.matrix_norm(a, ord="fro")
    return np.ascontiguousarray(e.T.numpy())  # (out, in) -> (in, out)


def conv_edges(kernel: torch.Tensor, groups: int = 1, norm: KernelNorm = "entry_l1") -> np.ndarray:
    """Channel edges of a Conv2d, (in_channels, out_channels); grouped convs give a block-diagonal matrix.

    With ``groups`` g, output channel o reads only the input channels of its group, ``o // (out / g)``;
    the other pairs have no edge (0). Depthwise convs (g = in = out) give a diagonal.
    """
    out_channels, in_per_group = kernel.shape[:2]
    per_group = kernel_slice_norm(kernel, norm)  # (in_per_group, out)
    if groups == 1:
        return per_group
    out_per_group = out_channels // groups
    edges = np.zeros((in_per_group * groups, out_channels))
    group_of_out = np.arange(out_channels) // out_per_group  # (out,)
    rows = group_of_out[None, :] * in_per_group + np.arange(in_per_group)[:, None]  # (in_per_group, out)
    edges[rows, np.broadcast_to(np.arange(out_channels), rows.shape)] = per_group
    return edges


def linear_edges(weight: torch.Tensor) -> np.ndarray:
    """Signed edges of a Linear, (in_features, out_features): ``W.T``, Keras' kernel layout."""
    return np.ascontiguousarray(weight.detach().to(device="cpu", dtype=torch.float64).T.numpy())


def flatten_linear_edges(
    weight: torch.Tensor, map_shape: tuple[int, int, int], norm: KernelNorm = "entry_l1"
) -> np.ndarray:
    """Edges from the channels of a flattened (C, H, W) map into a Linear, (C, out_features).

    Flatten is channel-major in PyTorch, so unit u's weights on channel c are ``W[u].reshape(C, H, W)[c]``;
    the edge is the kernel-slice norm of that H×W map.
    """
    out_features = weight.shape[0]
    return kernel_slice_norm(weight.reshape(out_features, *map_shape), norm)
