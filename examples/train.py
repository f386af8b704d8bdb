"""Train small networks quickly on CPU (the demo's models): Adam with Keras' eps, cross-entropy, mini-batches."""

from __future__ import annotations

import torch
from torch import nn

from neuronmap.loaders.datasets import Dataset


def train(
    model: nn.Module, data: Dataset, *, epochs: int = 30, batch_size: int = 64, lr: float = 1e-3, seed: int = 0
) -> float:
    """Train in place and return the test accuracy."""
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, eps=1e-7)  # eps as Keras, as the reference trained
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(data.x_train), generator=generator)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            optimizer.zero_grad()
            loss_fn(model(data.x_train[index]), data.y_train[index]).backward()
            optimizer.step()
    return accuracy(model, data)


@torch.no_grad()
def accuracy(model: nn.Module, data: Dataset) -> float:
    model.eval()
    return float((model(data.x_test).argmax(dim=1) == data.y_test).float().mean())
