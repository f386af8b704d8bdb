"""Centred average ranks of units over inputs: the ranking half of Spearman's ρ (methods.md §2).

:func:`centered_ranks` is the public entry. The kernels rank on the CPU with numpy's sort of packed integer keys,
a block of units per thread, into float ranks or into the int8 digits that :mod:`.gram` multiplies; on a GPU with
``torch.sort``. Every path equals ``scipy.stats.rankdata(..., axis=1) - (n + 1) / 2`` exactly.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from neuronmap.loaders.errors import ActivationError

RANK_ROWS = 16  # units ranked at once on the CPU: their work arrays stay in the L2 cache …
RANK_VALUES = 1 << 18  # … up to this many values a block (fewer units for long rows; ~46 bytes a value)
GRAM_TILE = 128  # units per row tile of the upper-triangular Gram update, and per transposed tile of values
TRANSPOSE_INPUTS = 128  # inputs per copy while transposing a tile


def _cpu_threads() -> int:
    return max(1, torch.get_num_threads())


# Centred average ranks. Ties share the mean of their positions, as scipy.stats.rankdata(method="average");
# subtracting the mean rank (n+1)/2 leaves half-integers, exact in float32 below 2²³ inputs. The CPU ranks in
# twice those, the *doubled* ranks: a run of ties over sorted positions start..end gets start + end − (n−1), an
# integer in [−(n−1), n−1], halved only when floats are written.


def centered_ranks(values: torch.Tensor) -> torch.Tensor:
    """Rank each row of a (rows, n) float tensor: average ranks of ties, minus (n+1)/2; float32, same device.

    On the CPU this sorts packed integer keys with numpy's vectorised sort, a few rows at a time and on every
    core; on a GPU it uses ``torch.sort``. Both give exactly scipy's ``rankdata(..., axis=1) - (n + 1) / 2``.
    """
    if not bool(torch.isfinite(values).all()):
        raise ActivationError("centered_ranks takes finite values; NaN and inf have no rank.")
    if values.device.type == "cpu" and values.dtype in (torch.float32, torch.float16, torch.bfloat16):
        out = np.empty(tuple(values.shape), dtype=np.float32)
        _rank_rows_numpy(np.ascontiguousarray(values.float().numpy()), out)
        return torch.from_numpy(out)
    return _rank_rows_torch(values)


def _rank_rows_torch(values: torch.Tensor) -> torch.Tensor:
    rows, n = values.shape
    sorted_values, order = torch.sort(values, dim=1, stable=True)
    new = torch.ones_like(sorted_values, dtype=torch.bool)
    new[:, 1:] = sorted_values[:, 1:] != sorted_values[:, :-1]  # -0.0 == 0.0 here, so they tie
    pos = torch.arange(n, device=values.device).expand(rows, n)
    start = torch.where(new, pos, 0).cummax(dim=1).values
    last = torch.ones_like(new)
    last[:, :-1] = new[:, 1:]
    end = torch.where(last, pos, n - 1).flip(1).cummin(dim=1).values.flip(1)
    centred = ((start + end - (n - 1)).to(torch.float64) * 0.5).to(torch.float32)
    return torch.empty_like(centred).scatter_(1, order, centred)


class _RankWork:
    """Per-thread scratch arrays for ranking ``rows`` rows of length n on the CPU, reused for every block."""

    def __init__(self, rows: int, n: int) -> None:
        size = rows * n
        self.bits = np.empty((rows, n), np.int32)  # the keys; at the end the doubled ranks in input order
        self.bottom = np.empty((rows, n), bool)
        self.keys = np.empty(size, np.int32)
        self.packed = np.empty(size, np.int64)
        self.index = np.empty(size, np.int64)
        self.tied = np.empty(size, bool)
        self.start = np.empty(size, np.int32)
        self.end = np.empty(size, np.int32)
        self.flat = np.arange(size, dtype=np.int64)
        self.pos = np.arange(size, dtype=np.int32)


_MAX_FINITE_KEY = 0x7F7FFFFF  # the key of FLT_MAX; −FLT_MAX's is its negation
COMPACT_SHARE = 8  # a block whose bottom runs hold ≥ 1/8 of its values sorts only the other values
SPARSE_TIES = 16  # fewer ties than 1/16 of the sorted values are ranked tie by tie, more by scanning all


class _NonFinite(Exception):
    """A NaN or inf met while ranking: (row, column) of the first one, and how many the block holds."""

    def __init__(self, row: int, column: int, count: int) -> None:
        super().__init__(row, column, count)
        self.row, self.column, self.count = row, column, count


def _float_keys(block: np.ndarray, keys: np.ndarray, sign: np.ndarray) -> None:
    """int32 keys in the order of the float32 values: flip the 31 low bits of negatives, then add 1 to them, so
    that -0.0 lands on +0.0's key (0) and the two zeros tie, as they compare equal."""
    raw = np.ascontiguousarray(block, dtype=np.float32).view(np.int32)
    np.right_shift(raw, 31, out=sign)  # −1 for negatives, 0 otherwise
    np.bitwise_and(sign, np.int32(0x7FFFFFFF), out=keys)
    np.bitwise_xor(raw, keys, out=keys)
    np.subtract(keys, sign, out=keys)


def _rank_block(block: np.ndarray, out: np.ndarray, w: _RankWork) -> None:
    """Ranks of each row of ``block`` (c, n) into ``out``: float centred ranks (c, n), where ``out`` may be
    ``block`` itself, or the int8 digits (digits, c, n) of the doubled ranks (see :func:`_split_digits`).

    Keys are sorted packed with their flat position (key high, position low) into int64: numpy's SIMD sort of
    64-bit integers is several times faster than an argsort, and the positions come out with the keys. A row's
    bottom run (the values equal to its minimum, e.g. a ReLU's zeros, often half the row) shares one rank and
    needs no sorting: where such runs are a good part of the block, they are set aside and only the other values
    are sorted.
    """
    c, n = block.shape
    bits = w.bits[:c]
    _float_keys(block, bits, w.start[: c * n].reshape(c, n))  # the block is read here, once: ``out`` may be it
    low, high = bits.min(axis=1), bits.max(axis=1)
    if bool((low < -_MAX_FINITE_KEY).any() or (high > _MAX_FINITE_KEY).any()):  # ±inf, NaN: beyond ±FLT_MAX
        bad = ~np.isfinite(block)
        row, column = np.argwhere(bad)[0]
        raise _NonFinite(int(row), int(column), int(bad.sum()))
    bottom = np.equal(bits, low[:, None], out=w.bottom[:c])
    runs = np.count_nonzero(bottom, axis=1)
    if int(runs.sum()) * COMPACT_SHARE >= c * n:
        index = np.flatnonzero(np.logical_not(bottom, out=bottom))
        keys = np.take(bits.reshape(-1), index, out=w.keys[: index.size])
    else:
        runs[:] = 0
        index, keys = w.flat[: c * n], bits.reshape(-1)
    m = index.size
    packed = w.packed[:m]
    np.copyto(packed, keys)
    np.multiply(packed, np.int64(1 << 32), out=packed)  # key · 2³² (a shift of a negative is undefined in C)
    np.bitwise_or(packed, index, out=packed)
    offsets = np.zeros(c + 1, np.int64)
    np.cumsum(n - runs, out=offsets[1:])
    for row in range(c):
        packed[offsets[row] : offsets[row + 1]].sort()
    # Sorted value g of row r has place g − offsets[r] + runs[r] in its row: without ties its doubled rank is
    # twice that minus (n−1); ties from g = s to e share s + e + 2(runs[r] − offsets[r]) − (n−1).
    doubled = w.start[:m]
    np.add(w.pos[:m], w.pos[:m], out=doubled)
    if m > 1:
        tied = w.tied[:m]  # a sorted value equal to the one before it, in the same row
        sorted_keys = np.right_shift(packed, 32, out=w.index[:m])
        tied[0] = False
        np.equal(sorted_keys[1:], sorted_keys[:-1], out=tied[1:])
        tied[offsets[:-1][runs < n]] = False
        ties = np.flatnonzero(tied)
        if 0 < ties.size * SPARSE_TIES < m:
            _sparse_ties(ties, doubled)
        elif ties.size:
            _tied_ranks(np.logical_not(tied, out=tied), doubled, w)
    np.add(doubled, np.repeat((2 * (runs - offsets[:-1]) - (n - 1)).astype(np.int32), n - runs), out=doubled)
    # Into input order through flat positions (faster than 2-D fancy indexing): the bottom runs first, z values
    # sharing (z−1) − (n−1), then the sorted values over them.
    inorder = bits
    if runs.any():
        inorder[...] = (runs - n)[:, None]
    positions = np.bitwise_and(packed, np.int64(0xFFFFFFFF), out=w.index[:m])
    inorder.reshape(-1)[positions] = doubled
    if out.dtype == np.int8:
        _split_digits(inorder, out)
    else:
        np.multiply(inorder, 0.5, out=out, casting="same_kind")  # half-integers: exact in float32


def _sparse_ties(ties: np.ndarray, twice: np.ndarray) -> None:
    """s + e for the sorted values in runs of ties, s and e the first and last place of the run, from the places
    ``ties`` (ascending) of the values equal to the one before: cost by tie, not by value."""
    first = np.ones(ties.size, bool)  # a tie that starts a run: its place does not follow the last tie's
    np.not_equal(ties[1:], ties[:-1] + 1, out=first[1:])
    starts = np.flatnonzero(first)
    ends = np.append(starts[1:], ties.size) - 1
    s, e = ties[starts] - 1, ties[ends]
    twice[ties] = np.repeat(s + e, ends - starts + 1)
    twice[s] = s + e


def _tied_ranks(new: np.ndarray, twice: np.ndarray, w: _RankWork) -> None:
    """s + e for each sorted value, s and e the first and last place of its run of equal keys, by a forward and
    a backward scan (for blocks with many ties)."""
    m = new.size
    start, end = w.keys[:m], w.end[:m]  # the gathered keys are packed by now: their array is free
    np.multiply(new, w.pos[:m], out=start)
    np.maximum.accumulate(start, out=start)
    end[-1] = m - 1
    np.multiply(new[1:], w.pos[1:m], out=end[:-1])
    np.subtract(end[:-1], 1, out=end[:-1])
    end[:-1][~new[1:]] = m - 1
    backwards = end[::-1]
    np.minimum.accumulate(backwards, out=backwards)
    np.add(start, end, out=twice)


def _rank_rows_numpy(values: np.ndarray | torch.Tensor, out: np.ndarray) -> None:
    """Rank every row of ``values`` (rows, n) into ``out``, a block of rows at a time per thread.

    ``out`` takes float centred ranks (rows, n), and may be ``values`` itself, or the int8 digits
    (digits, rows, n) of the doubled ranks. ``values`` may be strided (the transpose of an input-major matrix):
    each thread then copies up to GRAM_TILE units at a time into a contiguous tile, TRANSPOSE_INPUTS inputs per
    copy.
    """
    rows, n = values.shape
    if rows == 0 or n == 0:
        return
    if n >= 2**23:
        raise ActivationError(
            f"Spearman ranks of {n:,} inputs would lose precision in float32; use at most "
            f"{2**23 - 1:,} inputs or method='pearson'."
        )
    if isinstance(values, torch.Tensor):
        values = values.numpy()
    strided = values.strides[1] != values.itemsize
    threads = min(_cpu_threads(), max(1, rows // RANK_ROWS))
    bounds = np.linspace(0, rows, threads + 1).astype(int)
    block_rows = max(1, min(RANK_ROWS, RANK_VALUES // n))
    tile_rows = max(block_rows, min(GRAM_TILE, GRAM_TILE * RANK_VALUES // (RANK_ROWS * n)))  # 8 MB at most

    def work(lo: int, hi: int) -> None:
        scratch = _RankWork(min(block_rows, hi - lo), n)
        tile = np.empty((min(tile_rows, hi - lo), n), np.float32) if strided else None
        for t in range(lo, hi, tile_rows):
            u = min(t + tile_rows, hi)
            block = values[t:u] if tile is None else _transpose_into(tile[: u - t], values[t:u])
            for i in range(t, u, block_rows):
                j = min(i + block_rows, u)
                # _rank_block reads its block once, into scratch, before writing: ``out`` may be ``values``.
                try:
                    _rank_block(block[i - t : j - t], out[:, i:j] if out.dtype == np.int8 else out[i:j], scratch)
                except _NonFinite as error:
                    raise _NonFinite(i + error.row, error.column, error.count) from None

    if threads == 1:
        work(0, rows)
        return
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rank") as pool:
        for future in [pool.submit(work, int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]:
            future.result()


def _transpose_into(tile: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Copy strided ``values`` into the contiguous ``tile`` a few inputs at a time. The rows of an input-major
    matrix are often a power of two apart (4 KiB for 1,024 float32 units): walking one long column block misses
    the TLB and the same cache sets at every row, while a short block stays in the L1 cache (5× faster)."""
    for k in range(0, values.shape[1], TRANSPOSE_INPUTS):
        np.copyto(tile[:, k : k + TRANSPOSE_INPUTS], values[:, k : k + TRANSPOSE_INPUTS])
    return tile


def _rank_in_place(data: torch.Tensor, *, use_torch: bool | None = None) -> None:
    """Replace every row of a (n_units, n_inputs) view by its centred ranks (numpy on the CPU, torch on a GPU)."""
    if use_torch is None:
        use_torch = data.device.type != "cpu"
    if not use_torch:
        array = data.numpy()
        _rank_rows_numpy(array, array)
        return
    finite = torch.isfinite(data)
    if not bool(finite.all()):
        row, column = (int(v) for v in torch.nonzero(~finite)[0])
        raise _NonFinite(row, column, int((~finite).sum()))
    n = data.shape[1]
    rows = max(1, min(data.shape[0], (64 << 20) // max(1, 24 * n)))  # sort workspace per block ≈ 64 MB
    for i in range(0, data.shape[0], rows):
        data[i : i + rows] = _rank_rows_torch(data[i : i + rows])


def _split_digits(v: np.ndarray, out: np.ndarray) -> None:
    """Write the int32 (c, w) array ``v`` as ``out.shape[0]`` int8 planes, v = Σ_d 256^d · out[d]; ``v`` is used up.

    Each digit is the low byte of what is left, read as a signed byte, so in [−128, 127]; taking it off leaves a
    multiple of 256: (v − digit) / 256 = (v + 128) >> 8.
    """
    low = v.view(np.int8)[..., 0::4] if np.little_endian else v.view(np.int8)[..., 3::4]
    for d in range(out.shape[0] - 1):
        np.copyto(out[d], low)
        np.add(v, 128, out=v)
        np.right_shift(v, 8, out=v)
    np.copyto(out[-1], v, casting="unsafe")  # within int8: _int8_digits counted enough digits
