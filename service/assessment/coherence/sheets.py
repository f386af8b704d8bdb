"""Image sheets of coherence results: optimised inputs or top data-set examples side by side in one PNG."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def slug(text: str) -> str:
    """``text`` as a file name: runs of other characters become ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text) or "layer"


def _as_image(x: np.ndarray) -> np.ndarray | None:
    """(H, W) or (H, W, 3) in [0, 1] for display, or None when the input is not image-like."""
    if x.ndim == 3 and x.shape[0] in (1, 3):
        return x[0] if x.shape[0] == 1 else np.transpose(x, (1, 2, 0))
    if x.ndim == 2:
        return x
    side = int(round(math.sqrt(x.size)))
    if x.ndim == 1 and side * side == x.size:
        return x.reshape(side, side)
    return None


def save_sheet(path: Path, inputs: Sequence[np.ndarray] | np.ndarray, title: str, columns: int) -> str | None:
    """Save inputs side by side as one image grid (each rescaled to its own range); None when not image-like."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    images = []
    for x in inputs:
        image = _as_image(np.asarray(x, dtype=np.float64))
        if image is None:
            return None
        images.append(image)
    if not images:
        return None
    h, w = images[0].shape[:2]
    channels = images[0].shape[2] if images[0].ndim == 3 else 1
    rows = -(-len(images) // columns)
    pad = max(1, h // 8)
    mosaic = np.ones(((h + pad) * rows - pad, (w + pad) * columns - pad, channels))
    for i, image in enumerate(images):
        lo, hi = float(np.min(image)), float(np.max(image))
        shown: np.ndarray = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
        r, c = divmod(i, columns)
        mosaic[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = shown.reshape(h, w, channels)
    scale = max(1.0, 160.0 / (h + pad))  # at least ~160 px per row of inputs
    figure = Figure(figsize=(max(3.0, mosaic.shape[1] * scale / 100), mosaic.shape[0] * scale / 100 + 0.4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0, 0, 1, mosaic.shape[0] * scale / 100 / figure.get_figheight()))
    axes.imshow(
        mosaic[..., 0] if channels == 1 else mosaic,
        cmap="gray" if channels == 1 else None,
        interpolation="nearest",
        vmin=0,
        vmax=1,
    )
    axes.axis("off")
    figure.suptitle(title, fontsize=8, y=0.99)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, format="png")
    return str(path)
