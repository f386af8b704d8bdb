"""Batched k-means (k-means++ and Lloyd, as sklearn's KMeans) over many point sets and restarts at once."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from neuronmap.service.clustering.threads import _map_independent
from neuronmap.service.errors import ClusteringInputError

KMEANS_GROUP_ELEMENTS = {"cpu": 1 << 21, "cuda": 1 << 28}  # distance entries per k-means group
KMEANS_CHUNK_ELEMENTS = 1 << 17  # distance entries per slice of a Lloyd step on a CPU (512 kB in float32)


def _rand(generators: Sequence[torch.Generator], shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    out = torch.stack([torch.rand(shape, generator=g, dtype=torch.float64) for g in generators])
    return out.to(device=device)



def kmeans_batched(x: torch.Tensor, valid: torch.Tensor | None, n_clusters: int, n_init: int,
                   generators: Sequence[torch.Generator], *, max_iter: int = 300, tol: float = 1e-4,
                   workers: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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
    # Units of work small enough to stay in cache on a CPU (big fresh tensors every Lloyd step cost page faults
    # there), and at least one per worker thread: whole point sets when several fit, else slices of the restarts.
    cap = KMEANS_GROUP_ELEMENTS["cuda" if x.device.type == "cuda" else "cpu"]
    runs_per_unit = max(1, cap // max(1, n * max(k, d)))
    workers = workers or torch.get_num_threads()
    # Several point sets: feed every worker. One point set: its restarts stay in one unit while they fit, as
    # splitting them over threads made k-means slower (measured 1.3× on 2 cores): the per-step ops are small, and
    # two threads issuing them contend for the interpreter lock more than they gain.
    if x.device.type == "cpu" and g_count > 1 and g_count * n_init < 2 * runs_per_unit * workers:
        runs_per_unit = max(1, min(runs_per_unit, -(-g_count * n_init // workers)))
    units = []
    if n_init <= runs_per_unit:
        per = max(1, runs_per_unit // n_init)
        units = [(lo, min(g_count, lo + per), 0, n_init) for lo in range(0, g_count, per)]
    else:
        units = [(g, g + 1, lo, min(n_init, lo + runs_per_unit)) for g in range(g_count)
                 for lo in range(0, n_init, runs_per_unit)]
    # Cache-sized slices pay on a CPU when one unit runs alone (1.4× on k-means of 5k points); with units on
    # several threads the extra small ops cost more than they save (measured), so those take whole point sets.
    chunk = KMEANS_CHUNK_ELEMENTS if x.device.type == "cpu" and len(units) == 1 else None
    parts = _map_independent(
        lambda unit: _kmeans_group(x[unit[0]:unit[1]], None if valid is None else valid[unit[0]:unit[1]], k,
                                   u[unit[0]:unit[1], unit[2]:unit[3]], max_iter=max_iter, tol=tol,
                                   chunk_elements=chunk),
        units, x.device, workers)
    labels = torch.empty(g_count, n, dtype=torch.int64, device=x.device)
    inertia = torch.full((g_count,), math.inf, dtype=torch.float64, device=x.device)
    n_iter = torch.zeros(g_count, dtype=torch.int64, device=x.device)
    for (lo, hi, _, _), (lab, ine, nit) in zip(units, parts):  # the lowest inertia wins; the first on ties
        better = ine < inertia[lo:hi]
        labels[lo:hi] = torch.where(better.unsqueeze(1), lab, labels[lo:hi])
        inertia[lo:hi] = torch.where(better, ine, inertia[lo:hi])
        n_iter[lo:hi] = torch.where(better, nit, n_iter[lo:hi])
    return labels, inertia, n_iter


def _kmeans_group(x: torch.Tensor, valid: torch.Tensor | None, n_clusters: int, u: torch.Tensor, *, max_iter: int,
                  tol: float, chunk_elements: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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

    def lift_centres(c: torch.Tensor, with_norm: bool) -> torch.Tensor:  # (G, m, d) → (G, m, d + 1|2)
        parts = [-2 * c, (c * c).sum(-1, keepdim=True)]
        if with_norm:
            parts.append(torch.ones_like(parts[1]))
        return torch.cat(parts, -1)

    # --- greedy k-means++, batched over (G, R)
    trials = 2 + int(np.log(k))
    first_valid = valid.to(torch.int64).argmax(1)  # a fallback index when every point is already a centre

    def pick(cum: torch.Tensor, fraction: torch.Tensor) -> torch.Tensor:
        total = cum[..., -1:]
        idx = torch.searchsorted(cum, (fraction * total).contiguous()).clamp_max(n - 1)
        empty = (total <= 0).expand_as(idx)
        return torch.where(empty, first_valid.view(-1, *([1] * (idx.dim() - 1))).expand_as(idx), idx)

    def gather_points(idx: torch.Tensor) -> torch.Tensor:  # (G, m) → (G, m, d)
        return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, d))

    cum_valid = torch.cumsum(w.to(torch.float64), 1).unsqueeze(1).expand(g_count, r_count, n).contiguous()
    idx0 = pick(cum_valid, u[:, :, :1])[:, :, 0]  # (G, R)
    centers_idx = torch.empty(g_count, r_count, k, dtype=torch.int64, device=device)
    centers_idx[:, :, 0] = idx0
    closest = torch.bmm(lift_centres(gather_points(idx0), True), xt_full).clamp_min_(0).mul_(w.unsqueeze(1))
    for c in range(1, k):
        cum = torch.cumsum(closest, 2, dtype=torch.float64)
        cand = pick(cum, u[:, :, 1 + (c - 1) * trials: 1 + c * trials])  # (G, R, T)
        dist = torch.bmm(lift_centres(gather_points(cand.reshape(g_count, -1)), True), xt_full)
        new = dist.view(g_count, r_count, trials, n).clamp_min_(0)
        torch.minimum(new, closest.unsqueeze(2), out=new)
        best = new.sum(-1).argmin(-1)  # (G, R): the trial that lowers the potential most
        closest = torch.gather(new, 2, best[:, :, None, None].expand(-1, -1, 1, n)).squeeze(2)
        centers_idx[:, :, c] = torch.gather(cand, 2, best.unsqueeze(-1)).squeeze(-1)
    centers = gather_points(centers_idx.view(g_count, -1)).view(g_count * r_count, k, d)

    # --- Lloyd, one row per run, converged runs compacted away. Distances are laid out (run, k, n) so that the
    # reduction over k vectorises along n; the one-hot is that tensor compared in place with its minimum; the
    # sums and the sizes come out of one GEMM against [x, 1], whose rows are 0 for invalid points. The runs of
    # one point set stay contiguous, so each set needs one (runs·k, d+1) × (d+1, n) GEMM, not one per run.
    runs = g_count * r_count
    owner = torch.arange(g_count, device=device).repeat_interleave(r_count)
    final = centers.clone()
    n_iter = torch.zeros(runs, dtype=torch.int64, device=device)
    active = torch.arange(runs, device=device)
    xs = torch.cat([x, w.unsqueeze(-1)], -1)  # (G, n, d + 1)
    xts = xt_full[:, :d + 1].contiguous()  # (G, d + 1, n)
    tola, owner_a = tol_g[owner], owner
    counted = float(count[owner].sum())  # valid points over the active runs: each is in exactly one cluster
    ca = centers

    def spans(owners: torch.Tensor) -> list[tuple[int, int, int]]:  # (point set, first row, end row)
        sets, counts = torch.unique_consecutive(owners, return_counts=True)
        ends = np.cumsum(counts.tolist())
        return [(g, int(e - c), int(e)) for g, c, e in zip(sets.tolist(), counts.tolist(), ends)]

    groups = spans(owner_a)
    # The E- and M-steps may go through the points in slices whose distance block stays in the cache: distances,
    # their minimum over the centres, the one-hot and its GEMM against [x, 1] then touch the block while it is hot.
    chunk_elements = chunk_elements or n * runs * k
    dist_buffer = x.new_empty(max(1, min(runs * k * n, chunk_elements + 256 * k * runs)))
    for it in range(1, max_iter + 1):
        cz = lift_centres(ca, False)  # (A, k, d + 1)
        agg = cz.new_zeros(ca.shape[0], k, d + 1)
        for g, lo, hi in groups:
            rows = (hi - lo) * k
            czg, aggg = cz[lo:hi].reshape(rows, d + 1), agg[lo:hi].view(rows, d + 1)
            step = min(n, max(256, chunk_elements // rows))
            for start in range(0, n, step):
                stop_ = min(n, start + step)
                dist = dist_buffer[:rows * (stop_ - start)].view(rows, stop_ - start)
                torch.mm(czg, xts[g, :, start:stop_], out=dist)  # ‖c‖² − 2c·x, ‖x‖² left out
                per_run = dist.view(hi - lo, k, stop_ - start)
                per_run.eq_(per_run.amin(1, keepdim=True))  # in place: 1.0 where a centre is nearest
                aggg.addmm_(dist, xs[g, start:stop_])
        sizes = agg[:, :, d]
        total, smallest = torch.stack([sizes.sum(), sizes.amin()]).tolist()  # one sync for both rare cases
        if total > counted + 0.5:  # a point equidistant from two (coincident) centres was counted twice
            for row in torch.nonzero(sizes.sum(1) > count[owner_a] + 0.5).flatten().tolist():
                g = int(owner_a[row])
                exact = cz[row] @ xts[g]
                onehot = torch.zeros_like(exact).scatter_(0, exact.argmin(0, keepdim=True), 1.0)
                agg[row] = onehot @ xs[g]
            sizes = agg[:, :, d]
            smallest = float(sizes.amin())
        new = agg[:, :, :d] / sizes.clamp_min(1e-30).unsqueeze(-1)
        if smallest <= 0:  # sklearn: move each empty centre to the points farthest from theirs
            empty = sizes <= 0
            for row in torch.nonzero(empty.any(1)).flatten().tolist():
                g = int(owner_a[row])
                mind = (cz[row] @ xts[g]).amin(0)  # (n,)
                far = torch.where(valid[g], mind + xsq[g], torch.full_like(xsq[g], -math.inf))
                holes = torch.nonzero(empty[row]).flatten()
                new[row, holes] = x[g, torch.topk(far, holes.numel()).indices]
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
            groups = spans(owner_a)

    # --- a last E-step for every run, then the run with the lowest inertia of every point set
    cf = lift_centres(final.view(g_count, r_count * k, d), False)
    dist = torch.bmm(cf, xt_full[:, :d + 1]).view(g_count, r_count, k, n)
    inertia = ((dist.amin(2) + xsq.unsqueeze(1)).clamp_min(0) * w.unsqueeze(1)).sum(2, dtype=torch.float64)  # (G, R)
    best = inertia.argmin(1)
    winner = torch.gather(dist, 1, best.view(g_count, 1, 1, 1).expand(-1, 1, k, n)).squeeze(1)  # (G, k, n)
    labels = torch.where(valid, winner.argmin(1), -1)
    return labels, inertia.gather(1, best.unsqueeze(1)).squeeze(1), n_iter.view(g_count, r_count).gather(
        1, best.unsqueeze(1)).squeeze(1)

