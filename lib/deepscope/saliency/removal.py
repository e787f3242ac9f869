"""Removal-based evaluation: does deleting the pixels a map ranks highest hurt the model most?

- `noisy_linear_impute`: fill removed pixels with the average of their neighbours (a sparse
  linear system) plus a little noise, the imputation of ROAD (Rong et al. 2022), so the *shape*
  of the removed region does not leak the label the way a black mask does.
- `road`: accuracy of the model (no retraining) after removing the most (MoRF) or least (LeRF)
  relevant pixels, for several fractions.
- `roar`, `diffroar`: remove and retrain (Hooker et al. 2019), and DiffROAR, the accuracy when
  retraining on the top-k pixels minus on the bottom-k pixels (Shah, Jain & Netrapalli 2021).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import spsolve

from .._checks import check_choice, check_float, check_int, check_labels, check_tensor
from .._guards import eval_mode
from ..train import evaluate, fit
from ._core import make_generator

__all__ = ["rank_features", "keep_features", "remove_features", "noisy_linear_impute", "road",
           "roar", "diffroar", "NEIGHBOUR_WEIGHTS"]

#: ROAD's neighbour weights: 1/6 for the 4 edge neighbours, 1/12 for the 4 diagonal ones.
NEIGHBOUR_WEIGHTS = tuple([((0, 1), 1 / 6), ((0, -1), 1 / 6), ((1, 0), 1 / 6), ((-1, 0), 1 / 6),
                           ((1, 1), 1 / 12), ((1, -1), 1 / 12), ((-1, 1), 1 / 12),
                           ((-1, -1), 1 / 12)])


def _pixel_scores(x, scores, fn):
    """Return scores as (B, D) over the units that are removed together, and the unit shape."""
    check_tensor(x, "x", fn, min_ndim=2, like="(B, ...)")
    check_tensor(scores, "scores", fn, min_ndim=2)
    if scores.shape == x.shape:
        return scores.flatten(1), tuple(x.shape[1:])
    if x.dim() == 4 and scores.shape == (x.shape[0], *x.shape[2:]):
        return scores.flatten(1), tuple(x.shape[2:])  # a pixel removes every channel
    raise ValueError(f"{fn}: `scores` must have the shape of `x` {tuple(x.shape)} or, per pixel, "
                     f"{(x.shape[0], *x.shape[2:])}, got {tuple(scores.shape)}")


def rank_features(scores: torch.Tensor, *, seed: int = 0) -> torch.Tensor:
    """Return, per image, feature indices from the highest score to the lowest, shape (B, D).

    Scores (B, ...) are flattened; ties are broken by a seeded random permutation (not by
    position, which would bias the order of the many exact zeros of a gradient map).
    """
    fn = "rank_features"
    check_tensor(scores, "scores", fn, min_ndim=2)
    flat = scores.detach().flatten(1)
    generator = make_generator(seed, "cpu", fn)
    perm = torch.randperm(flat.shape[1], generator=generator).to(flat.device)
    order = flat[:, perm].argsort(dim=1, descending=True, stable=True)
    return perm[order]


def _selection(x, scores, count, which, seed, fn):
    flat, unit = _pixel_scores(x, scores, fn)
    order = rank_features(flat, seed=seed)
    chosen = order[:, :count] if which in ("top", "morf") else order[:, order.shape[1] - count:]
    selected = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, chosen, True)
    selected = selected.view(len(x), *unit).to(x.device)
    if len(unit) < x.dim() - 1:
        selected = selected[:, None].expand_as(x)
    return selected


def _fill(x, removed, fill, noise, seed, fn):
    if fill == "linear":
        return noisy_linear_impute(x, removed, noise=noise, seed=seed)
    value = check_float(fill, "fill", fn)
    return torch.where(removed, torch.as_tensor(value, dtype=x.dtype, device=x.device), x)


def keep_features(x, scores, k: int, *, which: str = "top", fill=0.0, noise: float = 0.01,
                  seed: int = 0) -> torch.Tensor:
    """Keep the ``k`` features (pixels when ``scores`` is (B, H, W)) that ``scores`` ranks
    highest (``which="top"``) or lowest (``"bottom"``) and replace every other one by ``fill``:
    a number (0: the black mask of ROAR) or ``"linear"`` (`noisy_linear_impute`).

    Returns:
        A tensor of the shape of ``x``.
    """
    fn = "keep_features"
    check_choice(which, "which", fn, ("top", "bottom"))
    count = check_int(k, "k", fn, minimum=0)
    kept = _selection(x, scores, count, which, seed, fn)
    return _fill(x, ~kept, fill, noise, seed, fn)


def remove_features(x, scores, fraction: float, *, order: str = "morf", fill="linear",
                    noise: float = 0.01, seed: int = 0) -> torch.Tensor:
    """Remove a ``fraction`` of the features: the most relevant first (``order="morf"``) or the
    least relevant (``"lerf"``), replaced by ``fill`` (``"linear"``: ROAD's noisy linear
    imputation; a number: that constant).

    Returns:
        A tensor of the shape of ``x``.
    """
    fn = "remove_features"
    check_choice(order, "order", fn, ("morf", "lerf"))
    fraction = check_float(fraction, "fraction", fn, nonnegative=True)
    if fraction > 1:
        raise ValueError(f"{fn}: `fraction` must be in [0, 1], got {fraction}")
    flat, _ = _pixel_scores(x, scores, fn)
    count = int(round(fraction * flat.shape[1]))
    removed = _selection(x, scores, count, order, seed, fn)
    return _fill(x, removed, fill, noise, seed, fn)


def _impute_planes(values: np.ndarray, unknown: np.ndarray) -> np.ndarray:
    """Solve for the unknown pixels of N planes (N, H, W) at once: each equals the weighted mean
    of its in-image neighbours (known neighbours move to the right-hand side). The systems of
    the planes are independent; they are assembled with array operations into one
    block-diagonal sparse matrix and solved by one call (in the natural order, which keeps the
    factors banded: about 2.5x faster than a solve per plane on 1,800 16x8 planes)."""
    N, H, W = values.shape
    planes, rows, cols = np.nonzero(unknown)
    n = len(rows)
    out = values.copy()
    if n == 0:
        return out
    index = -np.ones((N, H, W), dtype=np.int64)
    index[planes, rows, cols] = np.arange(n)
    diag = np.zeros(n)
    rhs = np.zeros(n)
    I, J, V = [], [], []
    for (dr, dc), w in NEIGHBOUR_WEIGHTS:
        r, c = rows + dr, cols + dc
        inside = (r >= 0) & (r < H) & (c >= 0) & (c < W)
        diag[inside] += w
        src = np.nonzero(inside)[0]
        nb, nr, nc = planes[inside], r[inside], c[inside]
        neighbour = index[nb, nr, nc]
        free = neighbour >= 0
        I.append(src[free])
        J.append(neighbour[free])
        V.append(np.full(free.sum(), -w))
        np.add.at(rhs, src[~free], w * values[nb[~free], nr[~free], nc[~free]])
    I.append(np.arange(n))
    J.append(np.arange(n))
    V.append(diag + 1e-8)  # keeps a region with no known neighbour solvable (it gets 0)
    A = coo_matrix((np.concatenate(V), (np.concatenate(I), np.concatenate(J))), shape=(n, n))
    out[planes, rows, cols] = np.atleast_1d(spsolve(A.tocsc(), rhs, permc_spec="NATURAL"))
    return out


def noisy_linear_impute(x: torch.Tensor, remove: torch.Tensor, *, noise: float = 0.01,
                        seed: int | None = 0) -> torch.Tensor:
    """Replace removed pixels by the solution of a sparse linear system plus Gaussian noise
    (ROAD's "noisy linear imputation", Rong et al. 2022, section 4).

    Each removed pixel equals the weighted mean of its 8 neighbours (weights `NEIGHBOUR_WEIGHTS`,
    renormalised at the border), known neighbours fixed, so the fill is smooth and carries no
    information about the mask's shape; N(0, noise**2) is then added to the filled pixels only.
    Solved with scipy on the CPU, all images in one sparse solve.

    Args:
        x: images (B, C, H, W) or (B, H, W).
        remove: bool, True where a pixel is removed: (B, H, W) (all channels) or x's shape.
        noise: standard deviation of the added noise (>= 0).
        seed: seed of the noise (None: torch's global generator).

    Returns:
        A tensor of the shape, dtype and device of ``x``.
    """
    fn = "noisy_linear_impute"
    check_tensor(x, "x", fn, ndim=(3, 4), like="(B, C, H, W) or (B, H, W)")
    noise = check_float(noise, "noise", fn, nonnegative=True)
    if not isinstance(remove, torch.Tensor) or remove.dtype != torch.bool:
        raise TypeError(f"{fn}: `remove` must be a bool tensor, got "
                        f"{getattr(remove, 'dtype', type(remove).__name__)}")
    images = x if x.dim() == 4 else x[:, None]
    if remove.shape == (images.shape[0], *images.shape[2:]):
        remove = remove[:, None].expand_as(images)
    elif remove.shape == x.shape:
        remove = remove.view_as(images)
    else:
        raise ValueError(f"{fn}: `remove` must have shape {tuple(x.shape)} or "
                         f"{(images.shape[0], *images.shape[2:])}, got {tuple(remove.shape)}")
    values = images.detach().double().cpu().numpy()
    unknown = remove.cpu().numpy()
    B, C, H, W = values.shape
    values = _impute_planes(values.reshape(B * C, H, W), unknown.reshape(B * C, H, W))
    out = torch.from_numpy(values.reshape(B, C, H, W)).to(device=x.device, dtype=x.dtype)
    if noise > 0:
        generator = make_generator(seed, "cpu", fn)
        eps = torch.randn(out.shape, generator=generator, dtype=out.dtype).to(x.device)
        out = torch.where(remove.to(x.device), out + noise * eps, out)
    return out.view_as(x)


def road(model, x: torch.Tensor, y: torch.Tensor, scores: torch.Tensor,
         fractions=(0.1, 0.2, 0.3, 0.5, 0.7, 0.9), *, order: str = "morf", fill="linear",
         noise: float = 0.01, seed: int = 0) -> torch.Tensor:
    """Return the model's accuracy after removing each fraction of pixels ranked by ``scores``
    (ROAD: Remove And Debias, Rong et al. 2022; no retraining).

    A good ranking makes MoRF accuracy fall fast and LeRF accuracy stay high; compare with a
    random ranking (``scores = torch.rand_like(...)``) to see what removal alone does.

    Args:
        model: classifier (B, ...) -> (B, C), evaluated in eval mode (restored).
        x, y: images (B, ...) and labels (B,).
        scores: relevance, x's shape or one per pixel (B, H, W).
        fractions: fractions of pixels to remove, each in [0, 1].
        order: ``"morf"`` (most relevant first) or ``"lerf"`` (least relevant first).
        fill: ``"linear"`` (noisy linear imputation) or a constant.
        noise, seed: of the imputation.

    Returns:
        Accuracies, a float64 tensor of shape (len(fractions),).
    """
    fn = "road"
    y = check_labels(y, len(x), fn, name="y")
    accuracies = []
    with torch.no_grad(), eval_mode(model):
        for fraction in fractions:
            removed = remove_features(x, scores, fraction, order=order, fill=fill, noise=noise,
                                      seed=seed)
            accuracies.append((model(removed).argmax(1) == y.to(x.device)).double().mean())
    return torch.stack(accuracies).cpu()


def _retrain(make_model, train_x, train_y, test_x, test_y, seed, fit_kwargs):
    if not callable(make_model):
        raise TypeError(f"roar: `make_model` must be a callable () -> nn.Module, "
                        f"got {type(make_model).__name__}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_model().to(train_x.device)  # train where the data lives
    kwargs = {"progress": False, "seed": seed, **(fit_kwargs or {})}
    fit(model, (train_x, train_y), **kwargs)
    return evaluate(model, (test_x, test_y))[1]


def roar(make_model: Callable, train, test, scores_train, scores_test, fractions=(0.1, 0.3, 0.5),
         *, order: str = "morf", fill=0.0, seed: int = 0, fit_kwargs: dict | None = None
         ) -> torch.Tensor:
    """Return test accuracies of models retrained after removing each fraction of pixels
    (ROAR, Hooker et al. 2019): removal that hurts a *retrained* model cannot be blamed on a
    distribution shift. Arguments as `diffroar`; ``fractions`` and ``order`` as `road`.

    Returns:
        Accuracies, a float64 tensor of shape (len(fractions),).
    """
    (xtr, ytr), (xte, yte) = train, test
    accuracies = []
    for fraction in fractions:
        a = remove_features(xtr, scores_train, fraction, order=order, fill=fill, seed=seed)
        b = remove_features(xte, scores_test, fraction, order=order, fill=fill, seed=seed + 1)
        accuracies.append(_retrain(make_model, a, ytr, b, yte, seed, fit_kwargs))
    return torch.tensor(accuracies, dtype=torch.float64)


def diffroar(make_model: Callable, train, test, scores_train, scores_test, k: int, *, fill=0.0,
             seed: int = 0, fit_kwargs: dict | None = None) -> dict[str, float]:
    """Return DiffROAR(k) = acc(retrained on the top-k pixels) - acc(retrained on the bottom-k)
    (Shah, Jain & Netrapalli 2021, eq. 2): positive when the ranking puts the discriminative
    pixels first, about 0 for a random ranking.

    Args:
        make_model: ``() -> nn.Module``, a fresh model (built under ``torch.manual_seed(seed)``
            in a forked RNG, so the global generator is untouched, then moved to the data's
            device).
        train, test: ``(x, y)`` pairs.
        scores_train, scores_test: relevance of every train/test image (x's shape or per pixel).
        k: pixels kept per image.
        fill: value of the removed pixels (0: the paper's black mask) or ``"linear"``.
        seed: seed of the model, the shuffling and tie-breaking.
        fit_kwargs: passed to `deepscope.train.fit` (``epochs``, ``lr``...).

    Returns:
        ``{"top": accuracy, "bottom": accuracy, "diff": top - bottom}``.
    """
    (xtr, ytr), (xte, yte) = train, test
    result = {}
    for which in ("top", "bottom"):
        a = keep_features(xtr, scores_train, k, which=which, fill=fill, seed=seed)
        b = keep_features(xte, scores_test, k, which=which, fill=fill, seed=seed + 1)
        result[which] = _retrain(make_model, a, ytr, b, yte, seed, fit_kwargs)
    result["diff"] = result["top"] - result["bottom"]
    return result
