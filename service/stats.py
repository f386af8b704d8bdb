"""Statistics of a value against a null sample: permutation p-values, z-scores, effect sizes, corrections.

The conventions are the reference's (methods.md §4): population standard deviation (ddof=0), and the one-sided
percentile ``(#{null < value} + 1) / (N + 1)``, whose smallest value is ``1 / (N + 1)``.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

from .errors import ClusteringInputError

Direction = Literal["less", "greater"]


def _null_array(null: object) -> np.ndarray:
    arr = null.detach().cpu().numpy() if isinstance(null, torch.Tensor) else np.asarray(null)
    arr = np.asarray(arr, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ClusteringInputError("The null sample is empty; draw at least one shuffled network.")
    if not np.isfinite(arr).all():
        raise ClusteringInputError(f"The null sample has {int((~np.isfinite(arr)).sum())} non-finite values.")
    return arr


def percentile_pvalue(value: float, null: object, direction: Direction = "less") -> float:
    """One-sided permutation p-value of ``value`` against a null sample.

    Parameters
    ----------
    value : float
        The observed statistic (for clusterability, the real network's n-cut).
    null : array-like of shape (n_null,)
        The statistic on null networks.
    direction : {"less", "greater"}, default "less"
        ``"less"``: small values are extreme (a low n-cut means clusterable), p = (#{null < value} + 1)/(N + 1).
        ``"greater"``: p = (#{null > value} + 1)/(N + 1).

    Returns
    -------
    p : float in [1/(N+1), 1]

    Examples
    --------
    >>> percentile_pvalue(0, np.arange(100)) == 1 / 101
    True
    """
    arr = _null_array(null)
    if direction == "less":
        count = int(np.sum(arr < value))
    elif direction == "greater":
        count = int(np.sum(arr > value))
    else:
        raise ClusteringInputError(f"direction must be 'less' or 'greater', got {direction!r}.")
    return (count + 1) / (arr.size + 1)


def z_score(value: float, null: object) -> float:
    """(value − mean(null)) / sd(null) with the population sd (ddof=0); NaN when the null has no spread."""
    arr = _null_array(null)
    sd = float(arr.std(ddof=0))
    if sd == 0.0:
        return math.nan
    return (float(value) - float(arr.mean())) / sd


def cohens_d(a: object, b: object) -> float:
    """Cohen's d between two samples, (mean a − mean b) / pooled sd (ddof=1); NaN when both are constant."""
    x, y = _null_array(a), _null_array(b)
    if x.size < 2 or y.size < 2:
        raise ClusteringInputError("Cohen's d needs at least two values in each sample.")
    pooled = math.sqrt(((x.size - 1) * x.var(ddof=1) + (y.size - 1) * y.var(ddof=1)) / (x.size + y.size - 2))
    if pooled == 0.0:
        return math.nan
    return (float(x.mean()) - float(y.mean())) / pooled


def adjust_pvalues(pvalues: object, method: Literal["bonferroni", "bh"] = "bh") -> np.ndarray:
    """Multiple-comparison correction (methods.md §9.5).

    Parameters
    ----------
    pvalues : array-like of shape (m,)
    method : {"bh", "bonferroni"}, default "bh"
        Benjamini–Hochberg step-up false discovery rate, or Bonferroni family-wise.

    Returns
    -------
    adjusted : numpy.ndarray of shape (m,), clipped to [0, 1], in the input order
    """
    p = np.asarray(pvalues, dtype=np.float64).reshape(-1)
    if p.size and (np.any(p < 0) or np.any(p > 1) or not np.isfinite(p).all()):
        raise ClusteringInputError("p-values must lie in [0, 1].")
    m = p.size
    if method == "bonferroni":
        return np.minimum(p * m, 1.0)
    if method == "bh":
        order = np.argsort(p)
        scaled = p[order] * m / np.arange(1, m + 1)
        scaled = np.minimum.accumulate(scaled[::-1])[::-1]  # step-up: enforce monotonicity from the top
        out = np.empty(m)
        out[order] = np.minimum(scaled, 1.0)
        return out
    raise ClusteringInputError(f"method must be 'bh' or 'bonferroni', got {method!r}.")
