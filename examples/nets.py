"""Factories for the networks of the papers and the offline data sets, for ``--arch`` and the tests.

Each factory takes no arguments (``--arch neuronmap.examples.nets:mlp_4x256``), sets ``input_shape`` (without the
batch dim) so the loaders can trace it, and initialises like the reference code: Glorot-uniform weights and zero
biases (methods.md, porting notes), not PyTorch's Kaiming default.
"""

from __future__ import annotations

import torch
from torch import nn


def glorot_init(module: nn.Module) -> nn.Module:
    """Glorot-uniform weights and zero biases for every Linear and Conv2d of ``module``; returns ``module``."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)  # Keras' glorot_uniform: the same fan-in + fan-out rule
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def _with_input_shape(module: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    module.input_shape = shape  # type: ignore[assignment]  # stub: Module.__setattr__ takes tensors/modules only
    return glorot_init(module)


def mlp_4x256() -> nn.Module:
    """The papers' MNIST MLP: 784 → 256×4 → 10 with ReLU, reading (1, 28, 28) images through a Flatten."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = 28 * 28
    for _ in range(4):
        layers += [nn.Linear(width, 256), nn.ReLU()]
        width = 256
    layers.append(nn.Linear(width, 10))
    return _with_input_shape(nn.Sequential(*layers), (1, 28, 28))


def digits_mlp() -> nn.Module:
    """64 → 64 → 64 → 10 for scikit-learn's 8×8 digits, flattened to 64 features."""
    net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    return _with_input_shape(net, (64,))


def digits_cnn() -> nn.Module:
    """A small CNN with BatchNorm for the 8×8 digits: two 3×3 convs of 16 channels, a 2×2 pool, 32 dense units."""
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 32),
        nn.ReLU(),
        nn.Linear(32, 10),
    )
    return _with_input_shape(net, (1, 8, 8))


def small_cnn() -> nn.Module:
    """The papers' small CNN on 1×28×28: Conv64-Conv64-Pool2-Conv64-Pool2 (3×3 same, ReLU) → Dense128 → 10."""
    net = nn.Sequential(
        nn.Conv2d(1, 64, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )
    return _with_input_shape(net, (1, 28, 28))


class ResidualBlock(nn.Module):
    """x + fc2(relu(fc1(x))): the add makes the next layer read both x's layer and fc2."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.relu(self.fc1(x)))


class ResidualMLP(nn.Module):
    """16 → stem 32 → residual block (32) → 10."""

    input_shape = (16,)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(16, 32)
        self.block = ResidualBlock(32)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.block(torch.relu(self.stem(x)))))


def residual_mlp() -> nn.Module:
    """A tiny residual MLP; see ``ResidualMLP``."""
    return glorot_init(ResidualMLP())


class ConvBlock(nn.Module):
    """relu(x + bn2(conv2(relu(bn1(conv1(x)))))), a ResNet basic block without downsampling."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(h)))


class ResidualCNN(nn.Module):
    """3×8×8 → stem conv 8 → residual block → depthwise conv → global mean → 10."""

    input_shape = (3, 8, 8)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = ConvBlock(8)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block(torch.relu(self.stem(x)))
        h = torch.relu(self.depthwise(h))
        return self.head(h.mean(dim=(2, 3)))


def residual_cnn() -> nn.Module:
    """A tiny residual conv net with BatchNorm and a depthwise conv; see ``ResidualCNN``."""
    return glorot_init(ResidualCNN())
