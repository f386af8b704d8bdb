"""Batched k-means (methods.md §3.3): k-means++ and Lloyd as sklearn's ``KMeans``, over many point sets at once.

All restarts of all point sets run together; the random draws are made up front on the CPU, per point set, so a
set's result depends neither on its batch nor on how the work is split over threads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from neuronmap.service.clustering.threads import map_independent
from neuronmap.service.errors import ClusteringInputError

KMEANS_GROUP_ELEMENTS = {"cpu": 1 << 21, "cuda": 1 << 28}  # distance entries per k-means group
KMEANS_CHUNK_ELEMENTS = 1 << 17  # distance entries per slice of a Lloyd step on a CPU (512 kB in float32)

Unit = tuple[int, int, int, int]  # point sets [lo, hi) × restarts [lo, hi): one piece of independent work


def _rand(generators: Sequence[torch.Generator], shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    out = torch.stack([torch.rand(shape, generator=g, dtype=torch.float64) for g in generators])
    return out.to(device=device)


def kmeans_batched(
    x: torch.Tensor,
    valid: torch.Tensor | None,
    n_clusters: int,
    n_init: int,
    generators: Sequence[torch.Generator],
    *,
    max_iter: int = 300,
    tol: float = 1e-4,
    workers: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """k-means++ and Lloyd on G point sets at once, ``n_init`` restarts each, all restarts batched.

    Parameters
    ----------
    x : torch.Tensor of shape (G, n, d)
        Points; rows where ``valid`` is False are ignored.
    valid : torch.Tensor of shape (G, n), bool, or None
    n_clusters : int
    n_init : int
        Restarts per point set; the one with the lowest inertia wins (sklearn's rule).
    generators : sequence of G torch.Generator
        Random draws per point set (on the CPU), so a set's result does not depend on its batch.
    max_iter, tol : as sklearn's KMeans (tol is relative to the mean per-feature variance).
    workers : int, optional
        CPU threads for independent groups of restarts (default: torch's intra-op thread count).

    Returns
    -------
    labels : (G, n) int64, −1 on invalid rows; inertia : (G,) float64; n_iter : (G,) iterations of the winner.

    Notes
    -----
    Same algorithm as ``sklearn.cluster.KMeans(init="k-means++", algorithm="lloyd")``: greedy k-means++ with
    2 + ⌊ln k⌋ local trials, centred data, stop on unchanged labels or a centre shift ≤ tol, a last E-step, and
    empty clusters moved to the points farthest from their centres.
    """
    g_count, n, d = x.shape
    if len(generators) != g_count:
        raise ClusteringInputError(f"Need one generator per point set: {len(generators)} for {g_count}.")
    k = n_clusters
    trials = 2 + int(np.log(k))
    # Every random number up front, per point set: the result does not depend on how the work is split below.
    u = 1.0 - _rand(generators, (n_init, 1 + (k - 1) * trials), x.device)  # (G, R, ·) in (0, 1]
    workers = workers or torch.get_num_threads()
    units = _work_units(g_count, n_init, n * max(k, d), x.device, workers)
    # Cache-sized slices pay on a CPU when one unit runs alone; with units on several threads the extra small ops
    # cost more than they save, so those take whole point sets.
    chunk = KMEANS_CHUNK_ELEMENTS if x.device.type == "cpu" and len(units) == 1 else None
    parts = map_independent(
        lambda unit: _kmeans_group(
            x[unit[0] : unit[1]],
            None if valid is None else valid[unit[0] : unit[1]],
            k,
            u[unit[0] : unit[1], unit[2] : unit[3]],
            max_iter=max_iter,
            tol=tol,
            chunk_elements=chunk,
        ),
        units,
        x.device,
        workers,
    )
    labels = torch.empty(g_count, n, dtype=torch.int64, device=x.device)
    inertia = torch.full((g_count,), math.inf, dtype=torch.float64, device=x.device)
    n_iter = torch.zeros(g_count, dtype=torch.int64, device=x.device)
    for (lo, hi, _, _), (lab, ine, nit) in zip(units, parts):  # the lowest inertia wins; the first on ties
        better = ine < inertia[lo:hi]
        labels[lo:hi] = torch.where(better.unsqueeze(1), lab, labels[lo:hi])
        inertia[lo:hi] = torch.where(better, ine, inertia[lo:hi])
        n_iter[lo:hi] = torch.where(better, nit, n_iter[lo:hi])
    return labels, inertia, n_iter


def _work_units(g_count: int, n_init: int, entries_per_run: int, device: torch.device, workers: int) -> list[Unit]:
    """Units of work small enough to stay in cache on a CPU (big fresh tensors every Lloyd step cost page faults
    there), and at least one per worker thread: whole point sets when several fit, else slices of the restarts."""
    cap = KMEANS_GROUP_ELEMENTS["cuda" if device.type == "cuda" else "cpu"]
    runs_per_unit = max(1, cap // max(1, entries_per_run))
    # Several point sets: feed every worker. One point set: its restarts stay in one unit while they fit, as
    # splitting them over threads made k-means slower: the per-step ops are small, and two threads issuing them
    # contend for the interpreter lock more than they gain.
    if device.type == "cpu" and g_count > 1 and g_count * n_init < 2 * runs_per_unit * workers:
        runs_per_unit = max(1, min(runs_per_unit, -(-g_count * n_init // workers)))
    if n_init <= runs_per_unit:
        per = max(1, runs_per_unit // n_init)
        return [(lo, min(g_count, lo + per), 0, n_init) for lo in range(0, g_count, per)]
    return [
        (g, g + 1, lo, min(n_init, lo + runs_per_unit))
        for g in range(g_count)
        for lo in range(0, n_init, runs_per_unit)
    ]


@dataclass
class _Points:
    """G point sets, centred, with what every step needs of them."""

    x: torch.Tensor  # (G, n, d), centred; invalid rows are 0
    valid: torch.Tensor  # (G, n) bool
    w: torch.Tensor  # (G, n) 1.0 on valid rows, in x's dtype
    count: torch.Tensor  # (G,) valid rows (at least 1)
    xsq: torch.Tensor  # (G, n) ‖x‖²
    xt_full: torch.Tensor  # (G, d + 2, n) [xᵀ; 1; ‖x‖²]: squared distances as one GEMM against [-2c, ‖c‖², 1]


def _kmeans_group(
    x: torch.Tensor,
    valid: torch.Tensor | None,
    n_clusters: int,
    u: torch.Tensor,
    *,
    max_iter: int,
    tol: float,
    chunk_elements: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """k-means for G point sets with R restarts each, ``u`` (G, R, ·) holding the k-means++ draws.

    ``chunk_elements``: the Lloyd steps go through the points in slices of about this many distances (None: whole
    point sets at once). The result does not depend on it.
    """
    g_count, n, d = x.shape
    k, r_count = n_clusters, u.shape[1]
    device, dtype = x.device, x.dtype
    valid = torch.ones(g_count, n, dtype=torch.bool, device=device) if valid is None else valid
    w = valid.to(dtype)
    count = w.sum(1).clamp_min(1)
    mean = (x * w.unsqueeze(-1)).sum(1) / count.unsqueeze(-1)
    x = (x - mean.unsqueeze(1)) * w.unsqueeze(-1)  # sklearn centres the data first; invalid rows become 0
    xsq = (x * x).sum(-1)  # (G, n)
    tol_g = ((x * x).sum(1) / count.unsqueeze(-1)).mean(1) * tol  # (G,)
    if k == 1:
        labels = torch.where(valid, 0, -1)
        return labels, xsq.sum(1, dtype=torch.float64), torch.ones(g_count, dtype=torch.int64, device=device)
    ones = torch.ones(g_count, 1, n, dtype=dtype, device=device)
    # Squared distances as one GEMM each: [-2c, ‖c‖², 1]·[x; 1; ‖x‖²] (k-means++ needs the true distance).
    xt_full = torch.cat([x.mT, ones, xsq.unsqueeze(1)], 1)  # (G, d + 2, n)
    points = _Points(x, valid, w, count, xsq, xt_full)
    centers = _kmeans_plus_plus(points, k, u)
    final, n_iter = _lloyd(points, centers, r_count, tol_g, max_iter, chunk_elements)
    return _best_run(points, final, n_iter, r_count)


def _lift_centres(c: torch.Tensor, with_norm: bool) -> torch.Tensor:
    """Centres (G, m, d) as [-2c, ‖c‖²] (G, m, d + 1), or [-2c, ‖c‖², 1] (G, m, d + 2) for the true distance."""
    parts = [-2 * c, (c * c).sum(-1, keepdim=True)]
    if with_norm:
        parts.append(torch.ones_like(parts[1]))
    return torch.cat(parts, -1)


def _gather_points(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``idx`` (G, m) of x (G, n, d): (G, m, d)."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[2]))


def _pick(cum: torch.Tensor, fraction: torch.Tensor, first_valid: torch.Tensor) -> torch.Tensor:
    """Indices drawn in proportion to the weights whose cumulative sums are ``cum``; ``first_valid`` when all are 0."""
    total = cum[..., -1:]
    idx = torch.searchsorted(cum, (fraction * total).contiguous()).clamp_max(cum.shape[-1] - 1)
    empty = (total <= 0).expand_as(idx)
    return torch.where(empty, first_valid.view(-1, *([1] * (idx.dim() - 1))).expand_as(idx), idx)


def _kmeans_plus_plus(points: _Points, k: int, u: torch.Tensor) -> torch.Tensor:
    """Greedy k-means++, batched over (G, R): the initial centres (G·R, k, d), each point set's runs contiguous."""
    x, w = points.x, points.w
    g_count, n, d = x.shape
    r_count = u.shape[1]
    trials = 2 + int(np.log(k))
    first_valid = points.valid.to(torch.int64).argmax(1)  # a fallback index when every point is already a centre
    cum_valid = torch.cumsum(w.to(torch.float64), 1).unsqueeze(1).expand(g_count, r_count, n).contiguous()
    idx0 = _pick(cum_valid, u[:, :, :1], first_valid)[:, :, 0]  # (G, R)
    centers_idx = torch.empty(g_count, r_count, k, dtype=torch.int64, device=x.device)
    centers_idx[:, :, 0] = idx0
    closest = torch.bmm(_lift_centres(_gather_points(x, idx0), True), points.xt_full).clamp_min_(0).mul_(w.unsqueeze(1))
    for c in range(1, k):
        cum = torch.cumsum(closest, 2, dtype=torch.float64)
        cand = _pick(cum, u[:, :, 1 + (c - 1) * trials : 1 + c * trials], first_valid)  # (G, R, T)
        dist = torch.bmm(_lift_centres(_gather_points(x, cand.reshape(g_count, -1)), True), points.xt_full)
        new = dist.view(g_count, r_count, trials, n).clamp_min_(0)
        torch.minimum(new, closest.unsqueeze(2), out=new)
        best = new.sum(-1).argmin(-1)  # (G, R): the trial that lowers the potential most
        closest = torch.gather(new, 2, best[:, :, None, None].expand(-1, -1, 1, n)).squeeze(2)
        centers_idx[:, :, c] = torch.gather(cand, 2, best.unsqueeze(-1)).squeeze(-1)
    return _gather_points(x, centers_idx.view(g_count, -1)).view(g_count * r_count, k, d)


def _spans(owners: torch.Tensor) -> list[tuple[int, int, int]]:
    """(point set, first row, end row) of each run of equal owners."""
    sets, counts = torch.unique_consecutive(owners, return_counts=True)
    ends = np.cumsum(counts.tolist())
    return [(g, int(e - c), int(e)) for g, c, e in zip(sets.tolist(), counts.tolist(), ends)]


def _lloyd(
    points: _Points, centers: torch.Tensor, r_count: int, tol_g: torch.Tensor, max_iter: int, chunk_elements: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's iterations, one row of ``centers`` (G·R, k, d) per run: the final centres and each run's iterations.

    Converged runs are compacted away. The runs of one point set stay contiguous, so each set needs one
    (runs·k, d+1) × (d+1, n) GEMM per step, not one per run.
    """
    x, w, count = points.x, points.w, points.count
    g_count, n, d = x.shape
    runs, k = centers.shape[0], centers.shape[1]
    device = x.device
    owner = torch.arange(g_count, device=device).repeat_interleave(r_count)
    final = centers.clone()
    n_iter = torch.zeros(runs, dtype=torch.int64, device=device)
    active = torch.arange(runs, device=device)
    xs = torch.cat([x, w.unsqueeze(-1)], -1)  # (G, n, d + 1)
    xts = points.xt_full[:, : d + 1].contiguous()  # (G, d + 1, n)
    tola, owner_a = tol_g[owner], owner
    counted = float(count[owner].sum())  # valid points over the active runs: each is in exactly one cluster
    ca = centers
    groups = _spans(owner_a)
    # The steps may go through the points in slices whose distance block stays in the cache: distances, their
    # minimum over the centres, the one-hot and its GEMM against [x, 1] then touch the block while it is hot.
    chunk_elements = chunk_elements or n * runs * k
    dist_buffer = x.new_empty(max(1, min(runs * k * n, chunk_elements + 256 * k * runs)))
    for it in range(1, max_iter + 1):
        cz = _lift_centres(ca, False)  # (A, k, d + 1)
        agg = _assignment_sums(cz, groups, xts, xs, dist_buffer, chunk_elements)
        sizes = agg[:, :, d]
        total, smallest = torch.stack([sizes.sum(), sizes.amin()]).tolist()  # one sync for both rare cases
        if total > counted + 0.5:  # a point equidistant from two (coincident) centres was counted twice
            _recount_ties(agg, cz, owner_a, count, xts, xs)
            sizes = agg[:, :, d]
            smallest = float(sizes.amin())
        new = agg[:, :, :d] / sizes.clamp_min(1e-30).unsqueeze(-1)
        if smallest <= 0:
            _refill_empty(new, sizes <= 0, cz, owner_a, points, xts)
        # Unchanged labels give bit-identical centres (shift 0), so the shift test covers sklearn's strict test.
        stop = (new - ca).square_().sum((1, 2)) <= tola
        if it == max_iter:
            stop.fill_(True)
        ca = new
        if bool(stop.any()):  # record the runs that stopped and drop them from the batch
            sel = active[stop]
            final[sel], n_iter[sel] = ca[stop], it
            alive = ~stop
            if not bool(alive.any()):
                break
            active, tola, owner_a, ca = active[alive], tola[alive], owner_a[alive], ca[alive]
            counted = float(count[owner_a].sum())
            groups = _spans(owner_a)
    return final, n_iter


def _assignment_sums(
    cz: torch.Tensor,
    groups: list[tuple[int, int, int]],
    xts: torch.Tensor,
    xs: torch.Tensor,
    dist_buffer: torch.Tensor,
    chunk_elements: int,
) -> torch.Tensor:
    """One E-step and the M-step's sums: per run and cluster, [Σ x, size] (A, k, d + 1) of the points nearest it.

    Distances are laid out (run, k, n) so that the reduction over k vectorises along n; the one-hot is that tensor
    compared in place with its minimum; the sums and the sizes come out of one GEMM against [x, 1], whose rows are
    0 for invalid points.
    """
    runs, k, d1 = cz.shape
    n = xts.shape[2]
    agg = cz.new_zeros(runs, k, d1)
    for g, lo, hi in groups:
        rows = (hi - lo) * k
        czg, aggg = cz[lo:hi].reshape(rows, d1), agg[lo:hi].view(rows, d1)
        step = min(n, max(256, chunk_elements // rows))
        for start in range(0, n, step):
            stop_ = min(n, start + step)
            dist = dist_buffer[: rows * (stop_ - start)].view(rows, stop_ - start)
            torch.mm(czg, xts[g, :, start:stop_], out=dist)  # ‖c‖² − 2c·x, ‖x‖² left out
            per_run = dist.view(hi - lo, k, stop_ - start)
            per_run.eq_(per_run.amin(1, keepdim=True))  # in place: 1.0 where a centre is nearest
            aggg.addmm_(dist, xs[g, start:stop_])
    return agg


def _recount_ties(
    agg: torch.Tensor, cz: torch.Tensor, owner_a: torch.Tensor, count: torch.Tensor, xts: torch.Tensor, xs: torch.Tensor
) -> None:
    """Redo, with one centre per point, the sums of the runs where a tie counted a point twice (in place)."""
    d = xs.shape[2] - 1
    for row in torch.nonzero(agg[:, :, d].sum(1) > count[owner_a] + 0.5).flatten().tolist():
        g = int(owner_a[row])
        exact = cz[row] @ xts[g]
        onehot = torch.zeros_like(exact).scatter_(0, exact.argmin(0, keepdim=True), 1.0)
        agg[row] = onehot @ xs[g]


def _refill_empty(
    new: torch.Tensor, empty: torch.Tensor, cz: torch.Tensor, owner_a: torch.Tensor, points: _Points, xts: torch.Tensor
) -> None:
    """sklearn's rule: move each empty centre to the points farthest from theirs (in place in ``new``)."""
    for row in torch.nonzero(empty.any(1)).flatten().tolist():
        g = int(owner_a[row])
        mind = (cz[row] @ xts[g]).amin(0)  # (n,)
        far = torch.where(points.valid[g], mind + points.xsq[g], torch.full_like(points.xsq[g], -math.inf))
        holes = torch.nonzero(empty[row]).flatten()
        new[row, holes] = points.x[g, torch.topk(far, holes.numel()).indices]


def _best_run(
    points: _Points, final: torch.Tensor, n_iter: torch.Tensor, r_count: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A last E-step for every run, then the run with the lowest inertia of every point set: labels, inertia, n_iter."""
    g_count, n, d = points.x.shape
    k = final.shape[1]
    cf = _lift_centres(final.view(g_count, r_count * k, d), False)
    dist = torch.bmm(cf, points.xt_full[:, : d + 1]).view(g_count, r_count, k, n)
    nearest = (dist.amin(2) + points.xsq.unsqueeze(1)).clamp_min(0)  # (G, R, n)
    inertia = (nearest * points.w.unsqueeze(1)).sum(2, dtype=torch.float64)  # (G, R)
    best = inertia.argmin(1)  # (G,)
    winner = torch.gather(dist, 1, best.view(g_count, 1, 1, 1).expand(-1, 1, k, n)).squeeze(1)  # (G, k, n)
    labels = torch.where(points.valid, winner.argmin(1), -1)
    return (
        labels,
        inertia.gather(1, best.unsqueeze(1)).squeeze(1),
        n_iter.view(g_count, r_count).gather(1, best.unsqueeze(1)).squeeze(1),
    )
