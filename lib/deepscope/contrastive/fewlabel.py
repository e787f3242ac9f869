"""Few-label evaluation: where a representation's quality shows when labels are scarce.

With every training label, a linear probe on raw digit pixels is already near its ceiling, so a
full-label probe cannot tell a good self-supervised representation from the pixels it started
from. With a few labels per class the probe must rely on the geometry of the features (the
semi-supervised protocol of Chen et al. 2020, sec. 4, with 1% and 10% of ImageNet's labels).
`few_label_probe` fits `linear_probe` on ``k`` random labelled images per class, several times,
and reports the mean test accuracy and each draw's.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from .._checks import check_int, check_module
from .probe import _check_split, linear_probe

__all__ = ["FewLabelResult", "few_label_probe"]


class FewLabelResult(NamedTuple):
    """`few_label_probe` result: mean test accuracy and the accuracy of each draw."""

    accuracy: float
    per_draw: list[float]


def few_label_probe(
    encoder: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    labels_per_class: int = 5,
    draws: int = 5,
    seed: int = 0,
    **probe_kwargs,
) -> FewLabelResult:
    """Return the test accuracy of linear probes fitted on ``labels_per_class`` images per class.

    Each draw picks ``labels_per_class`` training images of every class at random (numpy
    generator seeded by ``seed``; global generators untouched), fits `linear_probe` on their
    features and scores it on the whole test set. The same draws are used for every encoder
    given the same seed and data, so encoders are compared on identical labelled subsets.

    Args:
        encoder: maps inputs (B, ...) to features (B, D); ``nn.Flatten()`` probes raw pixels.
        train, test: pairs (x, y) with x (N, ...) and integer labels y (N,).
        labels_per_class: labelled training images per class (>= 1, at most the smallest
            class's count).
        draws: independent labelled subsets (>= 1).
        seed: seed of the subsets (>= 0).
        **probe_kwargs: passed to `linear_probe` (``weight_decay``, ``max_iter``, ...).

    Returns:
        `FewLabelResult` (accuracy = mean over draws, per_draw).
    """
    fn = "few_label_probe"
    check_module(encoder, fn, "encoder")
    x_train, y_train = _check_split(train, "train", fn)
    _check_split(test, "test", fn)
    k = check_int(labels_per_class, "labels_per_class", fn)
    draws = check_int(draws, "draws", fn)
    seed = check_int(seed, "seed", fn, minimum=0)
    labels = y_train.cpu().numpy()
    classes = np.unique(labels)
    smallest = min(int((labels == c).sum()) for c in classes)
    if k > smallest:
        raise ValueError(f"{fn}: `labels_per_class` must be at most {smallest} (the smallest "
                         f"class's training count), got {k}")
    rng = np.random.default_rng(seed)
    accuracies = []
    for _ in range(draws):
        chosen = np.concatenate([rng.choice(np.flatnonzero(labels == c), k, replace=False)
                                 for c in classes])
        index = torch.as_tensor(chosen, device=x_train.device)
        result = linear_probe(encoder, (x_train[index], y_train[index]), test, **probe_kwargs)
        accuracies.append(result.test_accuracy)
    return FewLabelResult(accuracy=float(np.mean(accuracies)), per_draw=accuracies)
