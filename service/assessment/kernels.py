"""The native lesion kernels (``lesion_kernels.c``): compiled on first use with the machine's compiler, cached, loaded
with ctypes.

They fuse what the torch path of a lesioned MLP tail does in separate passes (gather, batched product, ReLU, last
Linear, argmax, class counts) and skip a ReLU layer's zeros; with AMX, one more hidden Linear runs in bfloat16 parts
with a certified error bound (``DeepHidden``). An accelerator only: where they cannot be built, ``lesion_kernels()``
returns None and the torch path runs; ``NEURONMAP_NATIVE_KERNELS=0`` (``Settings.native_kernels``) turns them off. They
need a C compiler on PATH (cc, gcc or clang) and a CPU with AVX-512; AMX (bfloat16 tiles) adds the deeper kernel. The
build is cached per source, compiler and CPU (``-march=native``) under neuronmap's home, written atomically, so
concurrent first uses do not see half a library.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from neuronmap.service.config import Settings

log = logging.getLogger(__name__)

_SOURCE = "lesion_kernels.c"
_FLAGS = ("-O2", "-march=native", "-shared", "-fPIC", "-std=gnu11")
MAX_OUTPUTS = 64  # MAX_OUT in the C source: a last Linear with more outputs runs on torch
_P = ctypes.c_void_p
_I = ctypes.c_int64


def _cpu_signature() -> str:
    """What ``-march=native`` depends on: the CPU's model and flags (Linux), else the platform's name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}"


def _build(source: Path, target: Path, compiler: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(handle)
    try:
        done = subprocess.run([compiler, *_FLAGS, "-o", staging, str(source)], capture_output=True, text=True)
        if done.returncode != 0:
            raise OSError(f"{compiler} failed: {done.stderr.strip()[-500:]}")
        os.replace(staging, target)  # atomic: another process sees the old file or the whole new one
    finally:
        if os.path.exists(staging):
            os.unlink(staging)


@lru_cache(maxsize=1)
def lesion_kernels(cache_dir: Path | None = None) -> LesionKernels | None:
    """The compiled kernels, or None where they cannot be built here or are turned off with
    ``NEURONMAP_NATIVE_KERNELS=0`` (the caller uses torch instead)."""
    settings = Settings.from_env()
    if not settings.native_kernels:
        log.debug("NEURONMAP_NATIVE_KERNELS=0: lesions run on torch only")
        return None
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        log.debug("no C compiler on PATH: lesions run on torch only")
        return None
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
        ref = resources.files(__package__).joinpath(_SOURCE)
        with resources.as_file(ref) as source:
            key = hashlib.sha256(
                b"\0".join(
                    s.encode() if isinstance(s, str) else s
                    for s in (source.read_bytes(), version, " ".join(_FLAGS), _cpu_signature())
                )
            ).hexdigest()[:16]
            target = (cache_dir or settings.home / "kernels") / f"lesion_kernels-{key}.so"
            if not target.exists():
                _build(source, target, compiler)
        library = ctypes.CDLL(str(target))
        library.has_avx512.restype = ctypes.c_int64
        if not library.has_avx512():
            log.debug("no AVX-512 on this CPU: the lesion kernels would be slower than torch")
            return None
        library.enable_amx.restype = ctypes.c_int64
        return LesionKernels(library, amx=bool(library.enable_amx()))
    except OSError as error:
        log.debug("native lesion kernels unavailable (%s): lesions run on torch only", error)
        return None


def _ptr(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


class LesionKernels:
    """Typed wrappers around the compiled library.

    Attributes
    ----------
    amx : bool
        Whether ``lesion_counts_deep`` can run: the build has AMX (bfloat16 tiles) and the OS granted the tile state.
    """

    def __init__(self, library: ctypes.CDLL, *, amx: bool = False) -> None:
        self._counts = library.lesion_counts
        self._counts.restype = _I
        self._counts.argtypes = [_I, _I, _I, _I, _I, _I, _P, _P, _P, _P, _I, ctypes.c_float, _P, _P, _I, _I, _P, _I, _P]
        self.amx = amx
        if amx:
            self._deep = library.lesion_counts_deep
            self._deep.restype = _I
            self._deep.argtypes = [
                _I,
                _I,
                _I,
                _I,
                _I,
                _I,
                _P,
                _P,
                _P,
                _P,
                _I,
                ctypes.c_float,
                _P,
                _P,
                _P,
                _P,
                _I,
                _P,
                _P,
                _I,
                ctypes.c_float,
                ctypes.c_float,
                ctypes.c_float,
                _P,
                _I,
                _P,
                _P,
            ]
            self._product = library.amx_hidden_product
            self._product.restype = _I
            self._product.argtypes = [_I, _I, _P, _P, _P, _P]

    def lesion_counts(
        self,
        h: torch.Tensor,
        wt: torch.Tensor,
        idx: torch.Tensor,
        base: torch.Tensor,
        *,
        subtract: bool,
        wout: torch.Tensor | None,
        bout: torch.Tensor | None,
        n_out: int,
        y: torch.Tensor,
        n_classes: int,
        threads: int,
    ) -> np.ndarray:
        """Correct predictions per class of every lesion row of ``idx``; see ``lesion_kernels.c``.

        Parameters
        ----------
        h : (B, C) float32, the lesioned layer's values as the next Linear reads them
        wt : (C, H) float32, that Linear's weight transposed, H a multiple of 16 (zero columns)
        idx : (M, s) int64, units per lesion padded with C
        base : (B, H) float32 (the intact Linear output; ``subtract``) or (1, H) (its bias; complement form)
        wout, bout : (n_out ≤ 64 padded to a multiple of 4 with zero rows, H) and (n_out,) float32 of the Linear after
            a ReLU, or None when the first Linear is the output layer (then ``n_out`` of the H columns are logits)
        y : (B,) int64 labels
        threads : lesions are split into this many ranges, each on its own thread (ctypes releases the GIL)

        Returns
        -------
        numpy.ndarray of shape (M, n_classes), int64
        """
        _check(h, wt, idx, base, wout, bout)
        _check_labels(y, n_classes)
        (b, c), (m, s), width = h.shape, idx.shape, wt.shape[1]
        if wout is not None and (
            wout.shape[1] != width or wout.shape[0] % 4 or not n_out <= wout.shape[0] <= MAX_OUTPUTS
        ):
            raise ValueError(f"wout must be (n_out ≤ {MAX_OUTPUTS} padded to a multiple of 4, H)")
        counts = np.zeros((m, n_classes), dtype=np.int64)
        base_stride = width if base.shape[0] == b and b > 1 else 0
        out_width = n_out if wout is not None else width

        def run(lo: int, hi: int) -> None:
            self._counts(
                lo,
                hi,
                b,
                c,
                width,
                s,
                _ptr(h),
                _ptr(wt),
                _ptr(idx),
                _ptr(base),
                base_stride,
                -1.0 if subtract else 1.0,
                _ptr(wout),
                _ptr(bout),
                out_width,
                n_out,
                _ptr(y),
                n_classes,
                counts.ctypes.data,
            )

        _in_threads(run, m, threads)
        return counts

    def lesion_counts_deep(
        self,
        h: torch.Tensor,
        wt: torch.Tensor,
        idx: torch.Tensor,
        base: torch.Tensor,
        *,
        subtract: bool,
        hidden: DeepHidden,
        wout: torch.Tensor,
        bout: torch.Tensor,
        n_out: int,
        y: torch.Tensor,
        n_classes: int,
        threads: int,
    ) -> tuple[np.ndarray, int]:
        """Like ``lesion_counts`` with one more hidden step, ReLU → ``hidden`` → ReLU → (wout, bout), on AMX.

        ``wt`` has H a multiple of 32 columns and ``wout`` ``hidden.width`` columns. Returns the counts and how many
        (lesion, input) pairs the certificate sent to float32 (see ``DeepHidden``).
        """
        if not self.amx:
            raise RuntimeError("lesion_counts_deep needs AMX; check LesionKernels.amx first")
        _check(h, wt, idx, base, wout, bout, hidden.wt)
        _check_labels(y, n_classes)
        (b, c), (m, s), width = h.shape, idx.shape, wt.shape[1]
        if (
            width % 32
            or hidden.wt.shape[0] != width
            or wout.shape[1] != hidden.width
            or wout.shape[0] % 4
            or not n_out <= wout.shape[0] <= MAX_OUTPUTS
        ):
            raise ValueError(
                "inconsistent shapes for lesion_counts_deep: wt (C, H), H a multiple of 32, the hidden "
                f"Linear (H → H2), wout (n_out ≤ {MAX_OUTPUTS} padded to a multiple of 4, H2)"
            )
        counts = np.zeros((m, n_classes), dtype=np.int64)
        fallbacks = np.zeros(m + 1, dtype=np.int64)  # one slot per range start: each thread writes its own
        base_stride = width if base.shape[0] == b and b > 1 else 0

        def run(lo: int, hi: int) -> None:
            done = self._deep(
                lo,
                hi,
                b,
                c,
                width,
                s,
                _ptr(h),
                _ptr(wt),
                _ptr(idx),
                _ptr(base),
                base_stride,
                -1.0 if subtract else 1.0,
                _ptr(hidden.hi),
                _ptr(hidden.lo),
                _ptr(hidden.wt),
                _ptr(hidden.bias),
                hidden.width,
                _ptr(wout),
                _ptr(bout),
                n_out,
                hidden.coef_h,
                hidden.coef_h2,
                hidden.coef_abs,
                _ptr(y),
                n_classes,
                counts.ctypes.data,
                fallbacks[lo:].ctypes.data,
            )
            if done == -2:
                raise MemoryError("lesion_counts_deep could not allocate its scratch rows")
            if done != 0:
                raise ValueError("lesion_counts_deep refused its operands")

        _in_threads(run, m, threads)
        return counts, int(fallbacks.sum())

    def hidden_product(self, a: torch.Tensor, hidden: DeepHidden) -> torch.Tensor:
        """(rows, H2) float32: ``hidden``'s product with the rows of ``a`` (rows ≤ 32, H a multiple of 32) as
        ``lesion_counts_deep`` computes it on AMX, without the bias: for checking it against an emulation."""
        if not self.amx:
            raise RuntimeError("hidden_product needs AMX; check LesionKernels.amx first")
        if (
            a.dtype != torch.float32
            or a.device.type != "cpu"
            or a.dim() != 2
            or a.shape[0] > 32
            or a.shape[1] != hidden.wt.shape[0]
        ):
            raise ValueError("a must be float32 CPU (rows ≤ 32, H) with the hidden Linear's padded H")
        rows = a.new_zeros(32, a.shape[1])  # contiguous, the kernel's 32 rows
        rows[: a.shape[0]] = a
        out = a.new_empty(32, hidden.width)
        if self._product(a.shape[1], hidden.width, _ptr(rows), _ptr(hidden.hi), _ptr(hidden.lo), _ptr(out)) != 0:
            raise ValueError("amx_hidden_product refused its operands")
        return out[: a.shape[0]]


@dataclass(frozen=True)
class DeepHidden:
    """A hidden Linear (H → H2) prepared for ``lesion_counts_deep``, with the certificate's coefficients.

    The kernel computes the Linear on AMX as a_hi·w_hi + a_lo·w_hi + a_hi·w_lo (bfloat16 parts, float32 sums) and
    bounds the error of every logit against exact arithmetic on the same input a ≥ 0 (a ReLU output):

    - splitting, with u = 2⁻⁸ (bfloat16 rounding): a = a_hi + a_lo + r with |a_lo| ≤ u(1+u)|a| and |r| ≤ u²|a|,
      the same for w, so the four terms left out (a_hi·r_w, a_lo·w_lo, a_lo·r_w, r_a·w) add up to at most
      u²(3 + 4u + 2u²)·|a||w|;
    - the tile unit's float32 sums of 3H products: γ(3H)·1.02·|a||w|, γ(n) = n·2⁻²⁴ / (1 − n·2⁻²⁴);
    - adding the bias: 2⁻²⁴·(1.02·|a||w| + |b|);
    - the ReLU does not grow an error, and the last Linear (float32, H2 terms and its bias) adds γ(H2 + 1)·(|W_out|
      relu(z) + |b_out|);
    - values below float32's normal range (2⁻¹²⁶), which the bfloat16 conversion and the tile unit flush to zero:
      a flushed a or a_lo loses at most 2⁻¹²⁶·|w| per term, a flushed w_hi or w_lo at most 2⁻¹²⁶·a, and a flushed
      partial sum 2⁻¹²⁶ per addition;
    - a value that is not finite (an overflow) is never certified: the kernel checks every pre-ReLU value and the
      two leading logits.

    Through |W_out| and with a ≥ 0, (|W_out| |W| a)_c ≤ max(|W_out| |W|)·Σa, so every logit is off by at most
    E = coef_h·Σa + coef_h2·Σrelu(z) + coef_abs (each coefficient 1 % larger, for the rounding of E itself and of
    the margin; the flushing terms go into coef_h and coef_abs through the row sums of |W_out| and |W_out| |W|).
    A prediction whose logit leads the others by more than 2E is the exact one; the others are recomputed in float32.
    """

    hi: torch.Tensor = field(repr=False)  # bfloat16 parts of the weight as int16, in AMX's tile layout
    lo: torch.Tensor = field(repr=False)
    wt: torch.Tensor = field(repr=False)  # (H, H2) float32 transposed weight, for the float32 fallback
    bias: torch.Tensor = field(repr=False)  # (H2,) float32
    width: int  # H2, a multiple of 32
    coef_h: float
    coef_h2: float
    coef_abs: float

    @classmethod
    def prepare(
        cls,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        wout: torch.Tensor,
        bout: torch.Tensor | None,
        in_width: int,
    ) -> DeepHidden:
        """``weight`` (H2, H) and ``bias`` of the hidden Linear, ``wout`` (n_out, H2) and ``bout`` of the last one;
        ``in_width`` is H padded to a multiple of 32."""
        out_width = -(-weight.shape[0] // 32) * 32
        padded = weight.new_zeros(out_width, in_width)
        padded[: weight.shape[0], : weight.shape[1]] = weight
        bias_padded = weight.new_zeros(out_width)
        if bias is not None:
            bias_padded[: weight.shape[0]] = bias
        hi = padded.to(torch.bfloat16)
        lo = (padded - hi.to(torch.float32)).to(torch.bfloat16)

        def tiles(part: torch.Tensor) -> torch.Tensor:  # [k/32][n/16][k pair][n][2]: AMX's VNNI layout
            k_blocks, n_blocks = in_width // 32, out_width // 16
            return part.t().reshape(k_blocks, 16, 2, n_blocks, 16).permute(0, 3, 1, 4, 2).contiguous().view(torch.int16)

        u, unit = 2.0**-8, 2.0**-24

        def gamma(n: int) -> float:
            return n * unit / (1 - n * unit)

        w, v = weight.double().abs(), wout.double().abs()
        split = u * u * (3 + 4 * u + 2 * u * u)
        per_product = split + 1.02 * gamma(3 * in_width) + 1.02 * unit
        last = gamma(out_width + 1)
        b = bias.double().abs() if bias is not None else w.new_zeros(w.shape[0])
        c = bout.double().abs().max().item() if bout is not None else 0.0
        g = v @ w  # |W_out| |W|
        tiny = 2.0**-125  # twice the largest value flushed to zero
        coef_abs = (
            unit * (v @ b).max().item()
            + last * c
            + tiny * g.sum(1).max().item()
            + 2.0**-100 * (1 + v.sum(1).max().item()) * 3 * in_width
        )
        return cls(
            hi=tiles(hi),
            lo=tiles(lo),
            wt=padded.t().contiguous(),
            bias=bias_padded,
            width=out_width,
            coef_h=1.01 * (per_product * g.max().item() + tiny * v.sum(1).max().item()),
            coef_h2=1.01 * last * v.max().item(),
            coef_abs=1.01 * coef_abs,
        )


def _check(
    h: torch.Tensor, wt: torch.Tensor, idx: torch.Tensor, base: torch.Tensor, *more: torch.Tensor | None
) -> None:
    """The kernels' layout contract: contiguous float32 CPU operands, int64 indices, H a multiple of 16."""
    for tensor in (h, wt, base, *more):
        if tensor is not None and (
            tensor.dtype != torch.float32 or not tensor.is_contiguous() or tensor.device.type != "cpu"
        ):
            raise ValueError("the lesion kernels take contiguous float32 CPU tensors")
    if idx.dtype != torch.int64 or not idx.is_contiguous():
        raise ValueError("idx must be a contiguous int64 tensor")
    if wt.shape[0] != h.shape[1] or wt.shape[1] % 16 or base.shape[1] != wt.shape[1]:
        raise ValueError(
            "inconsistent shapes for the lesion kernels: h (B, C), wt (C, H), base (B or 1, H), H a multiple of 16"
        )


def _check_labels(y: torch.Tensor, n_classes: int) -> None:
    """The kernels index the counts by label: a label outside 0 … n_classes − 1 would write out of bounds."""
    if not y.is_contiguous() or y.dtype != torch.int64:
        raise ValueError("y must be a contiguous int64 tensor")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise ValueError(f"labels must lie in 0 … {n_classes - 1}")


def _in_threads(run: Callable[[int, int], None], m: int, threads: int) -> None:
    """``run(lo, hi)`` over ranges of the m lesions, on up to ``threads`` threads (ctypes releases the GIL).

    More ranges than threads: lesions come sorted by size, so equal ranges would not be equal work.
    """
    bounds = np.linspace(0, m, min(m, 16 * max(threads, 1)) + 1).round().astype(int)
    ranges = [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
    if threads <= 1 or len(ranges) <= 1:
        for lo, hi in ranges:
            run(lo, hi)
        return
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda r: run(*r), ranges))
