"""Where the numerics run and how they are seeded: the one home of device resolution and seed streams.

Every GPU path has the same CPU path; ``resolve_device("auto")`` picks CUDA when torch sees it. Seeds are
``numpy.random.SeedSequence`` trees, so one integer reproduces a whole run (each null sample, each restart) whatever
the device, and a sample's stream does not depend on how many were drawn before it.
"""

from __future__ import annotations

import numpy as np
import torch

from neuronmap.errors import DeviceError, SeedError

RandomState = int | np.random.SeedSequence | None


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; ``"cuda"`` without CUDA raises :class:`DeviceError`."""
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as error:
            raise DeviceError(str(device), "not a device name; use 'auto', 'cpu' or 'cuda'.") from error
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(str(device), "this torch build sees no CUDA device. Use device='cpu' or 'auto'.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(str(device), f"only {torch.cuda.device_count()} CUDA device(s) are visible.")
    elif dev.type != "cpu":
        raise DeviceError(str(device), "neuronmap runs on 'cpu' or 'cuda'.")
    return dev


def seed_sequence(random_state: RandomState) -> np.random.SeedSequence:
    """The root SeedSequence: fresh OS entropy for None (its ``.entropy`` reproduces the run)."""
    if isinstance(random_state, np.random.SeedSequence):
        return random_state
    if random_state is not None and (not isinstance(random_state, (int, np.integer)) or random_state < 0):
        raise SeedError(f"random_state must be a non-negative int or None, got {random_state!r}.")
    return np.random.SeedSequence(None if random_state is None else int(random_state))


def sample_seeds(random_state: RandomState, n_samples: int) -> list[np.random.SeedSequence]:
    """One child SeedSequence per sample, the same for the same root whatever was spawned before."""
    root = seed_sequence(random_state)
    # Rebuild the root so earlier spawn() calls on a caller's SeedSequence do not shift the children.
    root = np.random.SeedSequence(root.entropy, spawn_key=root.spawn_key, pool_size=root.pool_size)
    return root.spawn(n_samples)


def torch_generator(seed: np.random.SeedSequence | int | None) -> torch.Generator:
    """A CPU torch.Generator seeded from a SeedSequence (or an int; None = fresh entropy)."""
    if not isinstance(seed, np.random.SeedSequence):
        seed = seed_sequence(seed)
    # The fourth 64-bit word: numpy's PCG64 for the same child is seeded from the leading words.
    state = int(seed.generate_state(4, np.uint64)[3]) & ((1 << 63) - 1)
    return torch.Generator().manual_seed(state)


def numpy_generator(seed: np.random.SeedSequence | int | None) -> np.random.Generator:
    """A numpy Generator from a SeedSequence (or an int; None = fresh entropy)."""
    return np.random.default_rng(seed if isinstance(seed, np.random.SeedSequence) else seed_sequence(seed))
