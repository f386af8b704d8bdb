"""The Gram matrix of centred ranks (Spearman) and of centred values (Pearson), accumulated in float64 or, on the
CPU where ``torch._int_mm`` works, exactly in int8 digit products summed in int64 (methods.md §2).

:func:`_spearman_gram` ranks a (n_units, n_inputs) view of the values into a copy when one fits, else in place
and chunk by chunk; the knobs below are module globals so tests and the benchmark can force each path.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from neuronmap.loaders.activations.ranks import GRAM_TILE, _NonFinite, _rank_in_place, _rank_rows_numpy, _split_digits

GRAM_CHUNK_BYTES = 128 << 20  # working copy of one chunk of inputs while accumulating the Gram matrix
GRAM_TILE_MIN_INPUTS = 4096  # the tiled upper-triangle update pays only for long rows: small tiles run below BLAS
RANK_COPY_BYTES = 1 << 30  # ranks copied (int8 digits or float64) up to this size leave the values untouched
INT8_GRAM: bool | None = None  # None: int8 products wherever torch._int_mm works on the CPU; True/False force it
INT8_CHUNK = 1 << 16  # inputs per int8 product: |a·b| ≤ 2¹⁴ per input keeps each int32 sum within 2³⁰


def _add_gram_upper_(out: torch.Tensor, a: torch.Tensor) -> None:
    """out += a aᵀ, for a of shape (n_units, k) in float64; only the upper block triangle is guaranteed.

    The Gram matrix is symmetric, so on the CPU, for many units and long rows, only row tiles × the columns from
    the tile on are multiplied (about 56% of the flops for 1,024 units) and the strict lower part of ``out`` is
    left stale. Short rows (a batch of a few thousand inputs) run faster as one full product, and so does a GPU.
    """
    p, k = a.shape
    strided = a.stride(0) != 1 and a.stride(1) != 1  # BLAS takes either layout, but not a general stride
    if a.device.type != "cpu" or p <= 2 * GRAM_TILE or k < GRAM_TILE_MIN_INPUTS or strided:
        out.addmm_(a, a.T)
        return
    for i in range(0, p, GRAM_TILE):
        out[i : i + GRAM_TILE, i:].addmm_(a[i : i + GRAM_TILE], a[i:].T)


def _symmetric_from_upper(upper: torch.Tensor) -> torch.Tensor:
    return torch.triu(upper) + torch.triu(upper, 1).T


# The exact int8 Gram matrix. A doubled rank v is an integer, written as signed base-256 digits,
# v = Σ_d 256^d · a_d with a_d in [−128, 127]; then Σ_k v_ik v_jk = Σ_{d,e} 256^(d+e) Σ_k a_dik a_ejk, and every
# inner sum is one torch._int_mm of int8 digit planes into int32 (AMX or VNNI on recent x86, several times
# float64's speed). Inner sums stop after INT8_CHUNK inputs, so none exceeds int32; they add up in int64, which
# holds the whole sum exactly (:func:`_int8_digits` checks), and the result is converted to float64 once. Ranks
# and Gram are thus exact integers; only the final normalisation rounds.


def _int8_matmul_works() -> bool:
    """Whether ``torch._int_mm`` multiplies int8 matrices exactly on this CPU (older torch lacks it); probed once."""
    global _INT8_MATMUL
    if _INT8_MATMUL is None:
        a = (torch.arange(32 * 48) % 256 - 128).to(torch.int8).reshape(32, 48)  # every int8, −128 included
        try:
            product = torch._int_mm(a, a.T)
            _INT8_MATMUL = product.dtype == torch.int32 and torch.equal(product.long(), a.long() @ a.long().T)
        except (AttributeError, RuntimeError, NotImplementedError, TypeError):
            _INT8_MATMUL = False
    return _INT8_MATMUL


_INT8_MATMUL: bool | None = None


def _use_int8(device: torch.device) -> bool:
    if device.type != "cpu":
        return False  # a GPU's float64 products are fast enough, and _int_mm there wants other shapes
    return _int8_matmul_works() if INT8_GRAM is None else INT8_GRAM


def _int8_digits(n: int) -> int | None:
    """How many signed base-256 digits the doubled ranks of n inputs need, or None where their Gram matrix could
    pass int64 (beyond about a million inputs: float64 then)."""
    top, digits = n - 1, 1
    while top > 127:
        top = (top + 128) >> 8  # the largest digit left after taking the low one off |v| ≤ top
        digits += 1
    # The digits' weighted magnitudes Σ_d 256^d·|a_d| stay below n − 1 + 256^(digits−1), so no partial sum of a
    # Gram entry passes n times its square.
    return digits if n * (n - 1 + 256 ** (digits - 1)) ** 2 < 2**63 else None


def _padded(size: int) -> int:
    # torch._int_mm wants sizes that are multiples of 8 and above 16 on some devices and versions; zero rows
    # and inputs add nothing to the products.
    return max(32, -(-size // 8) * 8)


def _add_int8_products_(same: torch.Tensor, cross: torch.Tensor | None, planes: torch.Tensor) -> None:
    """same += Σ_d 256^(2d) A_d A_dᵀ and cross += Σ_{d<e} 256^(d+e) A_d A_eᵀ (int64), for digit planes A_d."""
    digits = planes.shape[0]
    for d in range(digits):
        for e in range(d, digits):
            # A_e A_dᵀ is (A_d A_eᵀ)ᵀ: each pair of digits is multiplied once, its transpose added at the end.
            target = same if d == e else cross
            target.add_(torch._int_mm(planes[d], planes[e].T), alpha=256 ** (d + e))  # type: ignore[union-attr]  # cross is None only when d == e


def _int8_gram_from(same: torch.Tensor, cross: torch.Tensor | None, p: int) -> torch.Tensor:
    if cross is not None:
        same += cross
        same += cross.T
    # Doubled ranks: a quarter of their products is the Gram of the centred ranks (a power of 2, so exact).
    gram = same.to(torch.float64).mul_(0.25)  # exact below 2⁵³; above, rounded once
    return gram if gram.shape[0] == p else gram[:p, :p].clone()


def _spearman_gram_int8(units: torch.Tensor, digits: int, memory_limit: int) -> torch.Tensor:
    """:func:`_spearman_gram` with int8 products; exactly the float64 one wherever that one is exact."""
    p, n = units.shape
    size = _padded(p)
    same = torch.zeros(size, size, dtype=torch.int64)
    cross = torch.zeros(size, size, dtype=torch.int64) if digits > 1 else None
    if _ranks_fit(units, torch.device("cpu"), memory_limit):
        # Rank straight into the digit planes; the values are left as they are.
        planes = torch.empty(digits, size, _padded(n), dtype=torch.int8)
        planes[:, p:] = 0
        planes[:, :p, n:] = 0
        _rank_rows_numpy(units, planes[:, :p, :n].numpy())
        for k in range(0, n, INT8_CHUNK):
            _add_int8_products_(same, cross, planes[:, :, k : k + INT8_CHUNK])
        return _int8_gram_from(same, cross, p)
    # Too many values for a copy: rank them in place, then take the digits of one chunk of inputs at a time.
    _rank_in_place(units)
    chunk = max(8, min(INT8_CHUNK, max(256, GRAM_CHUNK_BYTES // max(1, (4 + digits) * p))) // 8 * 8)
    doubled = np.empty(p * min(chunk, n), dtype=np.int32)
    planes = torch.zeros(digits, size, _padded(min(chunk, n)), dtype=torch.int8)
    for k in range(0, n, chunk):
        width = min(chunk, n - k)
        part = planes[:, :, : _padded(width)]
        part[:, :, width:] = 0  # the last chunk's padding may hold the previous chunk's digits
        v = doubled[: p * width].reshape(p, width)
        np.multiply(units[:, k : k + width].numpy(), 2, out=v, casting="unsafe")  # half-integers: exact
        _split_digits(v, part[:, :p, :width].numpy())
        _add_int8_products_(same, cross, part)
    return _int8_gram_from(same, cross, p)


def _ranks_fit(units: torch.Tensor, device: torch.device, memory_limit: int) -> bool:
    """Whether the CPU may rank into a separate copy (int8 digits or float64), leaving the values as they are."""
    p, n = units.shape
    digits = _int8_digits(n) if _use_int8(device) else None
    size = digits * _padded(p) * _padded(n) if digits else 8 * p * n
    return device.type == "cpu" and units.device.type == "cpu" and size <= min(RANK_COPY_BYTES, memory_limit)


def _spearman_gram(units: torch.Tensor, device: torch.device, memory_limit: int) -> torch.Tensor:
    """Σ over inputs of the products of centred ranks, in float64, for a (n_units, n_inputs) view of the values.

    On the CPU, where ``torch._int_mm`` works (``INT8_GRAM``), the doubled ranks are multiplied as int8 digits
    (see above), exactly. Otherwise the products are float64: when a float64 copy of the ranks fits
    ``RANK_COPY_BYTES`` and ``memory_limit``, the values are left untouched: tiles of units are ranked into that
    copy from the last tile to the first, and as soon as tile i is ranked its row of the upper block triangle,
    G[i, i:], is multiplied on a second thread. Ranking is mostly numpy work that holds the GIL while BLAS
    releases it, so the two share the cores. On either path, more values than that (or a GPU's) are replaced by
    their ranks in place and the products are accumulated over chunks of inputs, so a spilled buffer is read
    chunk by chunk.
    """
    p, n = units.shape
    digits = _int8_digits(n) if _use_int8(device) and units.device.type == "cpu" else None
    if digits is not None:
        return _spearman_gram_int8(units, digits, memory_limit)
    gram = torch.zeros(p, p, dtype=torch.float64, device=device)
    if _ranks_fit(units, device, memory_limit):
        ranks = torch.empty(p, n, dtype=torch.float64)
        out = ranks.numpy()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="gram") as pool:
            pending = []
            for i in reversed(range(0, p, GRAM_TILE)):
                j = min(i + GRAM_TILE, p)
                try:
                    _rank_rows_numpy(units[i:j], out[i:j])
                except _NonFinite as error:
                    raise _NonFinite(i + error.row, error.column, error.count) from None
                pending.append(pool.submit(gram[i:j, i:].addmm_, ranks[i:j], ranks[i:].T))  # G[i, i:]
            for future in pending:
                future.result()
        return _symmetric_from_upper(gram)
    _rank_in_place(units)
    chunk = max(256, GRAM_CHUNK_BYTES // max(1, 8 * p))
    work = torch.empty(p, min(chunk, n), dtype=torch.float64, device=device)  # reused: no fresh pages per chunk
    for k in range(0, n, chunk):
        width = min(chunk, n - k)
        part = work[:, :width]
        part.copy_(units[:, k : k + width])
        _add_gram_upper_(gram, part)
    return _symmetric_from_upper(gram)
