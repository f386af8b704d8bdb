"""Sparse weight blocks: a ``BlockGraph`` block, or a stack of S of them, held as CSR instead of a dense matrix.

A GPT-2-small virtual graph is 66 blocks of 3072 × 3072; dense that is 2.5 GB per copy, while its top-32 edges
are 6.5M (methods.md §10.4). ``SparseStack`` keeps a stack of S sparse (n_src × n_dst) matrices as one
block-diagonal CSR matrix of (S·n_src × S·n_dst) and the CSR of its transpose, so that a product with all S
samples is one sparse matmul each way. It answers what the clustering code asks of a dense stack (``shape``,
``sum``, ``to``, ``mT``, ``index_select``, ``torch.bmm``, ``Tensor.baddbmm_``, ``@``), so the operator, the
n-cut and the nulls run unchanged on it. ``batched=False`` is a single 2-D block (S = 1), as a ``BlockGraph``
holds it; ``unsqueeze(0)`` and ``[s]`` move between the two views.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeGuard, cast

import numpy as np
import scipy.sparse as sp
import torch

from neuronmap.service.errors import ClusteringInputError


def _csr(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A torch CSR matrix from coordinates sorted by (row, col), without repeats."""
    counts = torch.bincount(rows, minlength=shape[0])
    crow = torch.zeros(shape[0] + 1, dtype=torch.int64, device=rows.device)
    crow[1:] = torch.cumsum(counts, 0)
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state": what is used here works
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, cols, values, shape, check_invariants=False)


class SparseStack:
    """S sparse non-negative (n_src × n_dst) matrices in coordinate form, sorted by (sample, row, col).

    Parameters
    ----------
    sample, rows, cols : torch.Tensor of shape (nnz,), int64
    values : torch.Tensor of shape (nnz,)
    shape : (int, int)
        (n_src, n_dst) of each matrix.
    n_samples : int
    batched : bool
        True: behaves as a (S, n_src, n_dst) stack; False (S = 1): as one (n_src, n_dst) block.
    """

    def __init__(
        self,
        sample: torch.Tensor,
        rows: torch.Tensor,
        cols: torch.Tensor,
        values: torch.Tensor,
        shape: tuple[int, int],
        n_samples: int = 1,
        *,
        batched: bool = False,
    ) -> None:
        self.sample, self.rows, self.cols, self.values = sample, rows, cols, values
        self.n_src, self.n_dst = int(shape[0]), int(shape[1])
        self.n_samples = int(n_samples)
        self.batched = batched
        self._csr: torch.Tensor | None = None
        self._transposed: SparseStack | None = None

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_coo(
        cls, rows: Any, cols: Any, values: Any, shape: tuple[int, int], *, dtype: torch.dtype = torch.float64
    ) -> SparseStack:
        """One 2-D block from coordinates; repeated coordinates add up, zeros are dropped."""
        # scipy's COO → CSR sums repeats and sorts each row in C, several times faster than torch's coalesce
        # (a pull of a GPT-2-small graph builds 66 blocks of 100k edges each).
        matrix = sp.coo_matrix(
            (np.asarray(values, dtype=np.float64), (np.asarray(rows), np.asarray(cols))), shape=shape
        ).tocsr()
        matrix.sum_duplicates()
        matrix.eliminate_zeros()
        counts = np.diff(matrix.indptr)
        r = torch.from_numpy(np.repeat(np.arange(shape[0], dtype=np.int64), counts))
        c = torch.from_numpy(matrix.indices.astype(np.int64))
        v = torch.from_numpy(matrix.data).to(dtype)
        return cls(torch.zeros_like(r), r, c, v, shape)

    @classmethod
    def from_scipy(cls, matrix: sp.spmatrix, *, dtype: torch.dtype = torch.float64) -> SparseStack:
        coo = sp.coo_matrix(matrix)
        return cls.from_coo(coo.row, coo.col, coo.data, (int(coo.shape[0]), int(coo.shape[1])), dtype=dtype)

    def _like(self, sample: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor) -> SparseStack:
        return SparseStack(sample, rows, cols, values, (self.n_src, self.n_dst), self.n_samples, batched=self.batched)

    # ------------------------------------------------------------------ what a dense block or stack answers

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n_samples, self.n_src, self.n_dst) if self.batched else (self.n_src, self.n_dst)

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    @property
    def device(self) -> torch.device:
        return self.values.device

    @property
    def is_sparse_stack(self) -> bool:
        return True

    def numel(self) -> int:
        """The entries stored (the edges), not n_src · n_dst: what memory estimates and emptiness checks need."""
        return int(self.values.numel())

    def dim(self) -> int:
        return 3 if self.batched else 2

    def is_floating_point(self) -> bool:
        return self.values.is_floating_point()

    def to(self, *args: Any, device: Any = None, dtype: torch.dtype | None = None) -> SparseStack:
        for arg in args:
            if isinstance(arg, torch.dtype):
                dtype = arg
            elif arg is not None:
                device = arg
        if (dtype is None or dtype == self.dtype) and (device is None or torch.device(device) == self.device):
            return self
        move = (lambda t: t.to(device)) if device is not None else (lambda t: t)
        values = move(self.values).to(dtype or self.dtype)
        return self._like(move(self.sample), move(self.rows), move(self.cols), values)

    def unsqueeze(self, dim: int) -> SparseStack:
        if dim != 0 or self.batched:
            raise ClusteringInputError("A sparse block is stacked along a new first dimension only.")
        return SparseStack(self.sample, self.rows, self.cols, self.values, (self.n_src, self.n_dst), 1, batched=True)

    def __getitem__(self, index: int) -> SparseStack:
        if not self.batched or not isinstance(index, int):
            raise ClusteringInputError("A sparse stack is indexed by one sample number.")
        keep = self.sample == index % self.n_samples
        rows, cols = self.rows[keep], self.cols[keep]
        return SparseStack(torch.zeros_like(rows), rows, cols, self.values[keep], (self.n_src, self.n_dst))

    def index_select(self, dim: int, index: torch.Tensor) -> SparseStack:
        """The samples ``index`` (dim 0 of a stack), in that order."""
        if dim != 0 or not self.batched:
            raise ClusteringInputError("A sparse stack selects samples (dim 0) only.")
        index = index.to(self.device)
        picked = [torch.nonzero(self.sample == int(s)).flatten() for s in index.tolist()]
        counts = torch.tensor([p.numel() for p in picked], dtype=torch.int64, device=self.device)
        take = torch.cat(picked) if picked else torch.zeros(0, dtype=torch.int64, device=self.device)
        sample = torch.repeat_interleave(torch.arange(len(picked), device=self.device), counts)
        out = SparseStack(
            sample, self.rows[take], self.cols[take], self.values[take], (self.n_src, self.n_dst), len(picked)
        )
        out.batched = True
        return out

    @property
    def mT(self) -> SparseStack:  # noqa: N802 - torch's name
        """The transpose of every sample (built once, and its transpose is this stack again)."""
        if self._transposed is None:
            key = (self.sample * self.n_dst + self.cols) * self.n_src + self.rows
            order = torch.argsort(key)
            shape = (self.n_dst, self.n_src)
            t = SparseStack(
                self.sample[order],
                self.cols[order],
                self.rows[order],
                self.values[order],
                shape,
                self.n_samples,
                batched=self.batched,
            )
            t._transposed = self
            self._transposed = t
        return self._transposed

    @property
    def T(self) -> SparseStack:  # noqa: N802 - torch's name
        return self.mT

    def abs(self) -> SparseStack:
        return self._like(self.sample, self.rows, self.cols, self.values.abs())

    def sum(self, dim: int) -> torch.Tensor:
        """Row sums (the last dimension summed) or column sums, dense: (S, n) for a stack, (n,) for a block."""
        last = self.dim() - 1
        dim = dim % self.dim()
        if dim == last:
            index, size = self.sample * self.n_src + self.rows, self.n_src
        elif dim == last - 1:
            index, size = self.sample * self.n_dst + self.cols, self.n_dst
        else:
            raise ClusteringInputError("A sparse stack sums over rows or columns only.")
        out = torch.zeros(self.n_samples * size, dtype=self.dtype, device=self.device).index_add_(0, index, self.values)
        return out.reshape(self.n_samples, size) if self.batched else out

    def csr(self) -> torch.Tensor | sp.csr_matrix:
        """The block-diagonal CSR matrix of all samples, (S·n_src × S·n_dst): scipy's on the CPU (its sparse-dense
        product measured 27× faster than torch's CSR there), torch's (cuSPARSE) on a GPU."""
        if self._csr is None or self._csr.dtype != _numpy_or_torch_dtype(self):
            shape = (self.n_samples * self.n_src, self.n_samples * self.n_dst)
            rows, cols = self.sample * self.n_src + self.rows, self.sample * self.n_dst + self.cols
            if self.device.type == "cpu":
                counts = np.bincount(rows.numpy(), minlength=shape[0])
                indptr = np.concatenate([[0], np.cumsum(counts)])
                self._csr = sp.csr_matrix((self.values.numpy(), cols.numpy(), indptr), shape=shape)
            else:
                self._csr = _csr(rows, cols, self.values, shape)
        return self._csr

    def bmm(self, x: torch.Tensor) -> torch.Tensor:
        """Every sample times its own right-hand side: x (S, n_dst, b) → (S, n_src, b)."""
        b = x.shape[-1]
        y = self._product(x.reshape(self.n_samples * self.n_dst, b))
        return y.reshape(self.n_samples, self.n_src, b)

    def _product(self, x: torch.Tensor) -> torch.Tensor:
        """CSR @ x for a 2-D x, in the stack's dtype."""
        matrix = self.csr()
        x = x.to(self.dtype)
        if isinstance(matrix, torch.Tensor):
            return matrix @ x
        return torch.from_numpy(np.asarray(matrix @ x.contiguous().numpy()))

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        if self.batched:
            return self.bmm(x)
        vec = x.dim() == 1
        y = self._product(x.unsqueeze(1) if vec else x)
        return y.squeeze(1) if vec else y

    def to_dense(self) -> torch.Tensor:
        out = torch.zeros(self.n_samples, self.n_src, self.n_dst, dtype=self.dtype, device=self.device)
        out.index_put_((self.sample, self.rows, self.cols), self.values, accumulate=True)
        return out if self.batched else out[0]

    def to_scipy(self) -> sp.csr_matrix:
        """One 2-D block as scipy CSR."""
        rows, cols, values = (t.cpu().numpy() for t in (self.rows, self.cols, self.values))
        return sp.csr_matrix((values, (rows, cols)), shape=(self.n_src, self.n_dst))

    def nonzero(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, cols) of a 2-D block's stored nonzero entries."""
        keep = self.values != 0
        return self.rows[keep], self.cols[keep]

    def select(self, keep_rows: torch.Tensor, keep_cols: torch.Tensor) -> SparseStack:
        """A 2-D block restricted to the rows and columns kept (boolean masks), renumbered."""
        new_row = torch.cumsum(keep_rows.to(torch.int64), 0) - 1
        new_col = torch.cumsum(keep_cols.to(torch.int64), 0) - 1
        keep = keep_rows[self.rows] & keep_cols[self.cols]
        rows, cols = new_row[self.rows[keep]], new_col[self.cols[keep]]
        shape = (int(keep_rows.sum()), int(keep_cols.sum()))
        return SparseStack(torch.zeros_like(rows), rows, cols, self.values[keep], shape)

    def shuffled(self, method: str, rngs: Sequence[np.random.Generator]) -> SparseStack:
        """One shuffled copy of a 2-D block per generator, stacked (the nulls of methods.md §4, kept sparse).

        ``layer_nonzero`` permutes the values over the block's own nonzero positions. ``layer`` permutes every
        entry, zeros included: the values land on positions drawn uniformly without replacement among all
        n_src · n_dst, the same distribution without the dense matrix.
        """
        values = self.values
        nnz, n_cells = values.numel(), self.n_src * self.n_dst
        samples, rows, cols, vals = [], [], [], []
        for i, rng in enumerate(rngs):
            perm = torch.from_numpy(rng.permutation(nnz)).to(self.device)
            if method == "layer":
                cells = torch.from_numpy(np.sort(rng.choice(n_cells, size=nnz, replace=False))).to(self.device)
                r, c = cells // self.n_dst, cells % self.n_dst
            else:
                r, c = self.rows, self.cols
            samples.append(torch.full_like(r, i))
            rows.append(r)
            cols.append(c)
            vals.append(values[perm])
        shape = (self.n_src, self.n_dst)
        return SparseStack(
            torch.cat(samples), torch.cat(rows), torch.cat(cols), torch.cat(vals), shape, len(rngs), batched=True
        )

    def as_block(self) -> torch.Tensor:
        """This stack typed as the tensor it stands in for: it answers every call the clustering code makes."""
        return cast(torch.Tensor, self)

    def __repr__(self) -> str:
        return f"SparseStack(shape={self.shape}, nnz={self.numel():,}, dtype={self.dtype}, device={self.device})"

    # ------------------------------------------------------------------ torch functions given a SparseStack

    @classmethod
    def __torch_function__(
        cls, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name == "bmm" and isinstance(args[0], SparseStack):
            return args[0].bmm(args[1])
        if name in ("matmul", "__matmul__") and isinstance(args[0], SparseStack):
            return args[0] @ args[1]
        if name in ("baddbmm_", "addmm_") and isinstance(args[1], SparseStack) and not kwargs:
            return args[0].add_(args[1] @ args[2])
        if name == "nonzero" and isinstance(args[0], SparseStack) and not args[0].batched:
            rows, cols = args[0].nonzero()
            return (rows, cols) if kwargs.get("as_tuple") else torch.stack([rows, cols], 1)
        raise TypeError(f"{name} is not defined for a SparseStack (a sparse weight block).")


def _numpy_or_torch_dtype(stack: SparseStack) -> Any:
    """The dtype the cached CSR of ``stack`` must have: numpy's on the CPU, torch's on a GPU."""
    if stack.device.type == "cpu":
        return np.dtype(str(stack.dtype).removeprefix("torch."))
    return stack.dtype


def is_sparse_block(weight: object) -> TypeGuard[SparseStack]:
    """Whether a BlockGraph block (or a stack) is a ``SparseStack``."""
    return isinstance(weight, SparseStack)
