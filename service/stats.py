"""Statistics of a value against a null sample: permutation p-values, z-scores, effect sizes, corrections.

The conventions are the reference's (methods.md §4): population standard deviation (ddof=0), and the one-sided
percentile ``(#{null < value} + 1) / (N + 1)``, whose smallest value is ``1 / (N + 1)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from neuronmap.options import Direction, PValueAdjustment, Ties
from neuronmap.service.errors import ClusteringInputError


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


def adjust_pvalues(pvalues: object, method: PValueAdjustment = "bh") -> np.ndarray:
    """Multiple-comparison correction (methods.md §9.5).

    Parameters
    ----------
    pvalues : array-like of shape (m,)
    method : {"bh", "bonferroni"}, default "bh"
        Benjamini–Hochberg step-up false discovery rate (``scipy.stats.false_discovery_control``), or Bonferroni
        family-wise.

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
        if m == 0:
            return np.empty(0)
        from scipy.stats import false_discovery_control

        return np.minimum(np.asarray(false_discovery_control(p, method="bh"), dtype=np.float64), 1.0)
    raise ClusteringInputError(f"method must be 'bh' or 'bonferroni', got {method!r}.")


# -- assessing a partition: lesions and coherence against random same-size sets (methods.md §5, §6) ---------------


def empirical_pvalues(
    values: object, nulls: object, direction: Direction = "less", ties: Ties = "conservative"
) -> np.ndarray:
    """Percentile p-values of many observed statistics, each against its own null sample.

    Parameters
    ----------
    values : array-like of shape (m,)
        The observed statistic per tested set (e.g. the accuracy with a sub-cluster lesioned).
    nulls : array-like of shape (m, n_null)
        The statistic on the random sets drawn for each tested set. NaN entries never count as extreme.
    direction : {"less", "greater"}, default "less"
        ``"less"``: small values are extreme (a lesion that hurts more), ``"greater"``: large values are.
    ties : {"conservative", "strict"}, default "conservative"
        ``"conservative"`` counts ties against the observed value, p = (#{null ≤ value} + 1)/(N + 1) for "less":
        a tied random set is as extreme as the real one, so the test keeps its level on discrete statistics such as
        accuracy. ``"strict"`` is the reference's (#{null < value} + 1)/(N + 1) (methods.md §5, ``p_mean``).

    Returns
    -------
    p : numpy.ndarray of shape (m,)
        In [1/(N+1), 1]; NaN where the observed value is NaN.

    Examples
    --------
    >>> empirical_pvalues([0.5], [[0.4, 0.5, 0.6]]).tolist()   # 0.4 and the tie 0.5 count: (2 + 1)/4
    [0.75]
    >>> empirical_pvalues([0.5], [[0.4, 0.5, 0.6]], ties="strict").tolist()
    [0.5]
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    null = np.asarray(nulls, dtype=np.float64)
    if null.ndim != 2 or null.shape[0] != v.size or null.shape[1] == 0:
        raise ClusteringInputError(
            f"nulls must have shape (m, n_null) with m = {v.size} and n_null ≥ 1; got {null.shape}."
        )
    if direction not in ("less", "greater"):
        raise ClusteringInputError(f"direction must be 'less' or 'greater', got {direction!r}.")
    if ties not in ("conservative", "strict"):
        raise ClusteringInputError(f"ties must be 'conservative' or 'strict', got {ties!r}.")
    with np.errstate(invalid="ignore"):
        if direction == "less":
            extreme = null <= v[:, None] if ties == "conservative" else null < v[:, None]
        else:
            extreme = null >= v[:, None] if ties == "conservative" else null > v[:, None]
    p = (extreme.sum(axis=1) + 1.0) / (null.shape[1] + 1.0)
    p[np.isnan(v)] = np.nan
    return p


def _finite_pvalues(pvalues: object, n_null: int) -> np.ndarray:
    """The finite p-values as a flat float64 array, after checking the null size they were computed with."""
    if n_null < 1:
        raise ClusteringInputError(f"n_null must be at least 1, got {n_null}.")
    p = np.asarray(pvalues, dtype=np.float64).reshape(-1)
    return p[np.isfinite(p)]


def fisher_combined_pvalue(pvalues: object, n_null: int, *, shift: bool = True) -> float:
    """Fisher's combination of percentile p-values into one network-level p-value (methods.md §5).

    Parameters
    ----------
    pvalues : array-like of shape (m,)
        Percentile p-values from nulls of ``n_null`` sets each; NaN entries (untested sets) are left out.
    n_null : int
        N, the random sets behind each p-value.
    shift : bool, default True
        Subtract 1/(2(N+1)) first, as the reference does: a percentile p-value is discrete uniform on
        {1/(N+1), …, 1}, whose mean is 1/2 + 1/(2(N+1)); the shift centres it on 1/2, so Fisher's χ² with 2m
        degrees of freedom is not biased towards 1.

    Returns
    -------
    p : float
        ``scipy.stats.combine_pvalues(p − shift, "fisher")``; NaN when no p-value is finite.

    Examples
    --------
    >>> round(fisher_combined_pvalue([1 / 21, 1 / 21], 20), 6)   # χ²₄ = −4·ln(1/21 − 1/42) = 4·ln 42 = 14.951
    0.004805
    """
    p = _finite_pvalues(pvalues, n_null)
    if p.size == 0:
        return math.nan
    if np.any(p <= 0) or np.any(p > 1):
        raise ClusteringInputError("p-values must lie in (0, 1].")
    from scipy.stats import combine_pvalues

    shifted = p - 1.0 / (2.0 * (n_null + 1)) if shift else p
    return float(combine_pvalues(shifted, method="fisher").pvalue)


def chi2_uniformity_pvalue(pvalues: object, n_null: int) -> float:
    """The reference's χ² "categorical" test: are the percentile ranks uniform over their N + 1 values?

    Each p-value is turned back into its rank r = round(p(N+1) − 1) ∈ {0, …, N}; the ranks are counted in N + 1
    bins and ``scipy.stats.chisquare`` tests the counts against a flat expectation. ⚠ The test is two-sided: it
    reacts to any departure from uniformity, including p-values piled up near 1 (sets that matter *less* than random
    ones), unlike Fisher's one-sided combination. It is reported under this name for parity with the reference,
    next to Fisher (methods.md §5, §9.4). With few p-values and many bins the expected counts are far below 5 and the
    χ² approximation is rough.

    Returns
    -------
    p : float
        NaN when no p-value is finite.

    Examples
    --------
    >>> round(chi2_uniformity_pvalue([1 / 3, 2 / 3, 1.0], 2), 6)   # one rank in each bin: perfectly flat
    1.0
    """
    p = _finite_pvalues(pvalues, n_null)
    if p.size == 0:
        return math.nan
    ranks = np.clip(np.round(p * (n_null + 1) - 1).astype(np.int64), 0, n_null)
    observed = np.bincount(ranks, minlength=n_null + 1).astype(np.float64)
    expected = np.full(n_null + 1, p.size / (n_null + 1))
    from scipy.stats import chisquare

    return float(chisquare(observed, expected).pvalue)


def range_statistic(class_delta: object) -> np.ndarray:
    """The reference's class-specificity of a lesion (methods.md §5): R = max_c(Δ_c/mean Δ) − min_c(Δ_c/mean Δ).

    Parameters
    ----------
    class_delta : array-like of shape (..., n_classes)
        Δ_c = a_c(lesioned) − a_c(intact), the change of each class's recall.

    Returns
    -------
    R : numpy.ndarray of shape (...)
        Large when the lesion hits some classes far more than others. NaN where the mean change is 0 (the lesion
        changed nothing on average, so the ratio is undefined; the reference divides anyway and gets ``inf``).

    Examples
    --------
    >>> round(range_statistic([-0.4, 0.0, -0.2]).item(), 9)   # mean −0.2: ratios 2, 0, 1
    2.0
    """
    d = np.asarray(class_delta, dtype=np.float64)
    mean = d.mean(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(np.abs(mean) > 1e-12, d / np.where(mean == 0, 1.0, mean), np.nan)
    return ratio.max(axis=-1) - ratio.min(axis=-1)  # NaN rows stay NaN


def effect_factor(null_mean: object, observed: object, tiny: float = 1e-12) -> np.ndarray:
    """The reference's effect factor mean(random)/observed, NaN (not ``inf``) where |observed| ≤ ``tiny``."""
    num = np.asarray(null_mean, dtype=np.float64)
    den = np.asarray(observed, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.abs(den) > tiny, num / np.where(den == 0, 1.0, den), np.nan)


def entropy_nats(counts_or_probs: object, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats of counts or probabilities along ``axis`` (each slice normalised to sum 1)."""
    q = np.asarray(counts_or_probs, dtype=np.float64)
    total = q.sum(axis=axis, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(total > 0, q / np.where(total == 0, 1.0, total), 0.0)
        terms = np.where(q > 0, -q * np.log(np.where(q > 0, q, 1.0)), 0.0)
    return terms.sum(axis=axis)
