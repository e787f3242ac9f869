"""Judging a representation: embed a dataset, fit a linear probe, count nearest neighbours.

The linear probe is the standard evaluation of self-supervised encoders (Chen et al. 2020,
sec. 4): freeze the encoder, fit a multinomial logistic regression on its features of the
training set, report accuracy on the test set. Nothing here changes the encoder: it is run in
eval mode (restored afterwards) without gradients.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import (
    check_dataset,
    check_finite,
    check_float,
    check_int,
    check_labels,
    check_module,
    check_nonempty,
    check_tensor,
    model_device,
)
from .._guards import eval_mode


@torch.no_grad()
def embed(encoder: nn.Module, x: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
    """Return ``encoder(x)`` computed in eval mode, without gradients, ``batch_size`` rows at a
    time, on the encoder's device. Shapes: x (N, ...) -> (N, D) (outputs are flattened)."""
    fn = "embed"
    check_module(encoder, fn, "encoder")
    check_tensor(x, "x", fn, min_ndim=1)
    check_dataset(encoder, check_nonempty(x, "x", fn), "x", fn)
    batch_size = check_int(batch_size, "batch_size", fn)
    device = model_device(encoder)
    with eval_mode(encoder):
        parts = [encoder(x[i : i + batch_size].to(device)).flatten(1)
                 for i in range(0, len(x), batch_size)]
    return torch.cat(parts)


def _check_split(split, name: str, fn: str):
    if not isinstance(split, (tuple, list)) or len(split) != 2:
        raise TypeError(f"{fn}: `{name}` must be a pair (x, y) of tensors, got "
                        f"{type(split).__name__}")
    x, y = split
    check_tensor(x, f"{name}[0]", fn, min_ndim=1)
    check_finite(check_nonempty(x, f"{name}[0]", fn), f"{name}[0]", fn)
    return x, check_labels(y, len(x), fn, name=f"{name}[1]")


class ProbeResult(NamedTuple):
    """`linear_probe` result: accuracies in [0, 1] and the fitted classifier."""

    train_accuracy: float
    test_accuracy: float
    classifier: nn.Linear


def linear_probe(
    encoder: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    weight_decay: float = 1e-3,
    max_iter: int = 200,
    batch_size: int = 1024,
) -> ProbeResult:
    """Fit a linear classifier on frozen features and return its train and test accuracy.

    Features ``encoder(x)`` are standardised with the training mean and std, then a multinomial
    logistic regression (cross-entropy + ``weight_decay`` * ||W||^2 / 2) is fitted full-batch with
    L-BFGS (strong Wolfe line search) from zero, on the encoder's device. Deterministic.

    Args:
        encoder: maps inputs (B, ...) to features (B, D); ``nn.Flatten()`` probes raw pixels.
        train, test: pairs (x, y) with x (N, ...) and integer labels y (N,).
        weight_decay: L2 penalty on the weights (>= 0).
        max_iter: L-BFGS iterations.
        batch_size: rows per forward pass of the encoder.

    Returns:
        `ProbeResult` (train_accuracy, test_accuracy, classifier); the classifier acts on
        standardised features.
    """
    fn = "linear_probe"
    check_module(encoder, fn, "encoder")
    x_train, y_train = _check_split(train, "train", fn)
    x_test, y_test = _check_split(test, "test", fn)
    weight_decay = check_float(weight_decay, "weight_decay", fn, nonnegative=True)
    max_iter = check_int(max_iter, "max_iter", fn)
    f_train = embed(encoder, x_train, batch_size=batch_size)
    f_test = embed(encoder, x_test, batch_size=batch_size)
    device = f_train.device
    y_train, y_test = y_train.to(device), y_test.to(device)
    mean, std = f_train.mean(0), f_train.std(0).clamp_min(1e-6)
    f_train, f_test = (f_train - mean) / std, (f_test - mean) / std
    classes = int(torch.cat([y_train, y_test]).max()) + 1
    classifier = nn.Linear(f_train.shape[1], classes).to(device=device, dtype=f_train.dtype)
    nn.init.zeros_(classifier.weight)
    nn.init.zeros_(classifier.bias)
    optimizer = torch.optim.LBFGS(classifier.parameters(), max_iter=max_iter,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(classifier(f_train), y_train)
        loss = loss + weight_decay / 2 * classifier.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    classifier.requires_grad_(False)
    with torch.no_grad():
        train_acc = (classifier(f_train).argmax(1) == y_train).float().mean()
        test_acc = (classifier(f_test).argmax(1) == y_test).float().mean()
    return ProbeResult(float(train_acc), float(test_acc), classifier)


def knn_accuracy(
    encoder: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    k: int = 5,
    batch_size: int = 1024,
) -> float:
    """Return the accuracy of a k-nearest-neighbour vote on cosine similarity of the features
    (Wu et al. 2018's monitor of self-supervised training; ties go to the smaller class index).

    Args:
        encoder: maps inputs (B, ...) to features (B, D).
        train, test: pairs (x, y) with x (N, ...) and integer labels y (N,).
        k: neighbours per test point, 1 <= k <= len(train).
        batch_size: rows per forward pass of the encoder.
    """
    fn = "knn_accuracy"
    check_module(encoder, fn, "encoder")
    x_train, y_train = _check_split(train, "train", fn)
    x_test, y_test = _check_split(test, "test", fn)
    k = check_int(k, "k", fn)
    if k > len(x_train):
        raise ValueError(f"{fn}: `k` must be <= the {len(x_train)} training points, got {k}")
    f_train = F.normalize(embed(encoder, x_train, batch_size=batch_size), dim=1)
    f_test = F.normalize(embed(encoder, x_test, batch_size=batch_size), dim=1)
    y_train, y_test = y_train.to(f_train.device), y_test.to(f_train.device)
    classes = int(torch.cat([y_train, y_test]).max()) + 1
    neighbours = (f_test @ f_train.T).topk(k, dim=1).indices
    votes = F.one_hot(y_train[neighbours], classes).sum(1)
    return float((votes.argmax(1) == y_test).float().mean())
