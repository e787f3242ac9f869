"""The four neural-collapse measurements NC1-NC4 of Papyan, Han & Donoho (2020).

Notation (features ``H`` of shape (N, d), labels y with C classes, classifier ``W`` (C, d), ``b``):

- class means ``mu_c`` and the global mean ``mu_G`` (the average of all N features);
- centred means ``M~`` with rows ``mu_c - mu_G``;
- within-class covariance ``Sigma_W = 1/N sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T``;
- between-class covariance ``Sigma_B = 1/C sum_c (mu_c - mu_G)(mu_c - mu_G)^T``.

NC1 (variability collapse) ``Tr(Sigma_W Sigma_B^+) / C``; NC2 (simplex ETF) equinorm,
equiangularity and the distance of the normalised Gram matrix to the ETF's; NC3 (self-duality)
``|W/|W| - M~/|M~||``; NC4 (nearest class centre) the fraction of samples on which the classifier
and the nearest class mean disagree. Everything is computed in float64 on the features' device
(float32 on MPS, which has no float64).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from .._checks import check_finite, check_labels, check_like, check_nonempty, check_tensor

__all__ = [
    "class_means",
    "covariances",
    "nc1",
    "equinorm",
    "equiangularity",
    "etf_distance",
    "self_duality",
    "ncc_mismatch",
    "CollapseMetrics",
    "collapse_metrics",
]


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float32 if x.device.type == "mps" else torch.float64


def _check_features_labels(features, labels, fn, num_classes=None):
    """Validate (N, d) features and (N,) labels; return them (float64), C and the class counts."""
    check_tensor(features, "features", fn, ndim=2, like="(N, d)")
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{fn}: `labels` must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dim() == 1 and labels.shape[0] != features.shape[0]:
        raise ValueError(
            f"{fn}: `features` and `labels` must have the same length, "
            f"got {features.shape[0]} features and {labels.shape[0]} labels"
        )
    labels = check_labels(labels, features.shape[0], fn, num_classes=num_classes)
    if features.shape[0] == 0:
        raise ValueError(f"{fn}: `features` must hold at least one sample per class, got none")
    check_finite(features, "features", fn, "did training diverge?")
    c = int(labels.max()) + 1 if num_classes is None else num_classes
    if c < 2:
        raise ValueError(f"{fn}: need at least 2 classes, got labels of {c} class")
    counts = torch.bincount(labels, minlength=c)
    small = (counts < 2).nonzero().flatten().tolist()
    if small:
        raise ValueError(
            f"{fn}: `labels` must give every class at least 2 samples (a within-class "
            f"spread), got {counts[small[0]].item()} in class {small[0]}"
            + (f" (and {len(small) - 1} more such classes)" if len(small) > 1 else "")
        )
    return features.detach().to(_work_dtype(features)), labels.to(features.device), c, counts


def class_means(features: torch.Tensor, labels: torch.Tensor,
                num_classes: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the class means and the global mean of features.

    Args:
        features: (N, d) float tensor.
        labels: (N,) integer tensor with values in [0, C); every class needs >= 2 samples.
        num_classes: C (default: ``labels.max() + 1``).

    Returns:
        ``(means, global_mean)`` of shapes (C, d) and (d,), in float64.
    """
    h, y, c, counts = _check_features_labels(features, labels, "class_means", num_classes)
    means = torch.zeros(c, h.shape[1], dtype=h.dtype, device=h.device).index_add_(0, y, h)
    return means / counts.to(h)[:, None], h.mean(0)


def covariances(features: torch.Tensor, labels: torch.Tensor,
                num_classes: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the within-class and between-class covariances ``(Sigma_W, Sigma_B)``, each (d, d).

    ``Sigma_W = 1/N sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T`` and
    ``Sigma_B = 1/C sum_c (mu_c - mu_G)(mu_c - mu_G)^T`` (Papyan et al. 2020, section 2), with
    ``mu_G`` the mean of all N features. Shapes as in `class_means`; result in float64.
    """
    h, y, c, _ = _check_features_labels(features, labels, "covariances", num_classes)
    means, global_mean = class_means(h, y, c)
    within = h - means[y]
    centred = means - global_mean
    return within.T @ within / h.shape[0], centred.T @ centred / c


def _nc1_from(within: torch.Tensor, centred: torch.Tensor, n: int) -> float:
    """Tr(Sigma_W Sigma_B^+) / C from within-class residuals (N, d) and centred means (C, d)."""
    c, d = centred.shape
    # Sigma_B = V diag(s^2 / C) V^T from the SVD of M~; its pseudo-inverse keeps the eigenvalues
    # above torch.linalg.pinv's default cutoff eps * d * (largest eigenvalue).
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    if s.numel() == 0 or s[0] == 0:
        return math.inf
    eps = torch.finfo(s.dtype).eps
    keep = s**2 > eps * d * s[0] ** 2
    projected = within @ vh[keep].T  # (N, r): residuals along the kept eigen-directions
    within_along = (projected**2).sum(0) / n  # v_k^T Sigma_W v_k
    trace = (within_along * c / s[keep] ** 2).sum()
    return float(trace) / c


def nc1(features: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> float:
    """Return NC1 = Tr(Sigma_W Sigma_B^+) / C, the within-class variability relative to the
    between-class spread (Papyan et al. 2020, Figure 6; the /C convention of Zhu et al. 2021).

    The official notebook of Papyan et al. logs ``Tr(Sigma_W Sigma_B^+)`` without the 1/C; ours
    is that value divided by C (so it does not grow with the number of classes). ``Sigma_B^+`` is
    the Moore-Penrose pseudo-inverse with ``torch.linalg.pinv``'s default cutoff.

    Args:
        features: (N, d) float tensor; labels: (N,) ints in [0, C), >= 2 samples per class.

    Returns:
        A float >= 0; 0 exactly when every feature equals its class mean. ``inf`` when all class
        means coincide (Sigma_B = 0).
    """
    h, y, c, _ = _check_features_labels(features, labels, "nc1", num_classes)
    means, global_mean = class_means(h, y, c)
    return _nc1_from(h - means[y], means - global_mean, h.shape[0])


def equinorm(vectors: torch.Tensor) -> float:
    """Return std/mean of the row norms of ``vectors`` (C, d): 0 when all have the same length.

    NC2's equinorm (Papyan et al. 2020, Figure 2), applied to centred class means or to the rows
    of the classifier. The std is the unbiased one (correction 1), as in Papyan et al.'s code.
    """
    check_finite(check_tensor(vectors, "vectors", "equinorm", ndim=2, like="(C, d)"), "vectors",
                 "equinorm")
    if vectors.shape[0] < 2:
        raise ValueError(f"equinorm: `vectors` must have at least 2 rows, got {vectors.shape[0]}")
    norms = vectors.to(_work_dtype(vectors)).norm(dim=1)
    return float(norms.std() / norms.mean())


def _cosines(vectors: torch.Tensor, fn: str) -> torch.Tensor:
    check_finite(check_tensor(vectors, "vectors", fn, ndim=2, like="(C, d)"), "vectors", fn)
    if vectors.shape[0] < 2:
        raise ValueError(f"{fn}: `vectors` must have at least 2 rows, got {vectors.shape[0]}")
    v = vectors.to(_work_dtype(vectors))
    norms = v.norm(dim=1)
    if (norms == 0).any():
        raise ValueError(f"{fn}: `vectors` must be nonzero, got a zero row")
    unit = v / norms[:, None]
    return unit @ unit.T


def equiangularity(vectors: torch.Tensor) -> float:
    """Return the mean over pairs c != c' of |cos(v_c, v_c') + 1/(C-1)| for rows of (C, d).

    NC2's angle criterion (Papyan et al. 2020, Figure 4, "maximal-angle equiangularity"): 0 when
    every pair of vectors has the simplex ETF's cosine -1/(C-1).
    """
    cos = _cosines(vectors, "equiangularity")
    c = cos.shape[0]
    off_diagonal = ~torch.eye(c, dtype=torch.bool, device=cos.device)
    return float((cos[off_diagonal] + 1 / (c - 1)).abs().mean())


def etf_distance(vectors: torch.Tensor) -> float:
    """Return the Frobenius distance between the normalised Gram matrix of rows (C, d) and the
    simplex ETF's: ``| G/|G|_F - (I - 1 1^T/C)/sqrt(C-1) |_F`` with ``G = V V^T``.

    NC2 as Zhu et al. (2021, eq. 8) measure it. It is 0 exactly for a (scaled, rotated) simplex
    ETF and at most 2.
    """
    check_finite(check_tensor(vectors, "vectors", "etf_distance", ndim=2, like="(C, d)"),
                 "vectors", "etf_distance")
    c = vectors.shape[0]
    if c < 2:
        raise ValueError(f"etf_distance: `vectors` must have at least 2 rows, got {c}")
    v = vectors.to(_work_dtype(vectors))
    gram = v @ v.T
    size = gram.norm()
    if size == 0:
        raise ValueError("etf_distance: `vectors` must not all be zero")
    target = torch.eye(c, dtype=v.dtype, device=v.device) - 1.0 / c
    return float((gram / size - target / math.sqrt(c - 1)).norm())


def self_duality(weight: torch.Tensor, centred_means: torch.Tensor) -> float:
    """Return NC3, ``| W/|W|_F - M~/|M~|_F |_F``: how far the classifier rows (C, d) are from the
    centred class means (C, d) up to scale (Papyan et al. 2020, Figure 5; Zhu et al. 2021 eq. 9,
    not squared). 0 when ``W`` is a positive multiple of ``M~``; at most 2."""
    fn = "self_duality"
    check_tensor(weight, "weight", fn, ndim=2, like="(C, d)")
    check_tensor(centred_means, "centred_means", fn, ndim=2, like="(C, d)")
    if weight.shape != centred_means.shape:
        raise ValueError(
            f"{fn}: `weight` and `centred_means` must have the same shape (C, d), "
            f"got {tuple(weight.shape)} and {tuple(centred_means.shape)}"
        )
    check_finite(weight, "weight", fn)
    check_like(centred_means, weight, "centred_means", fn, "weight", dtype=False)
    dtype = _work_dtype(weight)
    w = weight.to(dtype)
    m = centred_means.to(device=w.device, dtype=dtype)
    if w.norm() == 0 or m.norm() == 0:
        raise ValueError(f"{fn}: `weight` and `centred_means` must be nonzero")
    return float((w / w.norm() - m / m.norm()).norm())


def ncc_mismatch(features: torch.Tensor, means: torch.Tensor, weight: torch.Tensor,
                 bias: torch.Tensor | None = None) -> float:
    """Return NC4: the fraction of samples where the classifier's decision
    ``argmax_c (w_c . h + b_c)`` differs from the nearest class mean ``argmin_c |h - mu_c|``
    (Papyan et al. 2020, Figure 7).

    Args:
        features: (N, d); means: (C, d) class means; weight: (C, d); bias: (C,) or None.

    Returns:
        A float in [0, 1].
    """
    fn = "ncc_mismatch"
    check_tensor(features, "features", fn, ndim=2, like="(N, d)")
    check_tensor(means, "means", fn, ndim=2, like="(C, d)")
    check_tensor(weight, "weight", fn, ndim=2, like="(C, d)")
    if weight.shape != means.shape or weight.shape[1] != features.shape[1]:
        raise ValueError(
            f"{fn}: `weight` and `means` must have shape (C, {features.shape[1]}), "
            f"got {tuple(weight.shape)} and {tuple(means.shape)}"
        )
    check_finite(check_nonempty(features, "features", fn), "features", fn)
    check_like(means, features, "means", fn, "features", dtype=False)
    check_like(weight, features, "weight", fn, "features", dtype=False)
    if bias is not None:
        check_like(check_tensor(bias, "bias", fn), features, "bias", fn, "features", dtype=False)
    dtype = _work_dtype(features)
    h = features.to(dtype)
    logits = h @ weight.to(device=h.device, dtype=dtype).T
    if bias is not None:
        check_tensor(bias, "bias", fn, ndim=1, like="(C,)")
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(
                f"{fn}: `bias` must have shape ({weight.shape[0]},), got {tuple(bias.shape)}"
            )
        logits = logits + bias.to(device=h.device, dtype=dtype)
    nearest = torch.cdist(h, means.to(device=h.device, dtype=dtype)).argmin(1)
    return float((logits.argmax(1) != nearest).to(dtype).mean())


@dataclass(frozen=True)
class CollapseMetrics:
    """What `collapse_metrics` measured (floats; classifier entries are NaN without ``weight``).

    - ``nc1``: Tr(Sigma_W Sigma_B^+)/C;
    - ``equinorm_means``, ``equinorm_weights``: std/mean of the norms of the centred means / of
      W's rows;
    - ``equiangular_means``, ``equiangular_weights``: mean |cos + 1/(C-1)| over pairs;
    - ``etf_distance_means``, ``etf_distance_weights``: distance of the normalised Gram to the ETF;
    - ``self_duality``: |W/|W| - M~/|M~||;
    - ``ncc_mismatch``: fraction where classifier and nearest class mean disagree.
    """

    nc1: float
    equinorm_means: float
    equiangular_means: float
    etf_distance_means: float
    equinorm_weights: float = math.nan
    equiangular_weights: float = math.nan
    etf_distance_weights: float = math.nan
    self_duality: float = math.nan
    ncc_mismatch: float = math.nan

    def as_dict(self) -> dict[str, float]:
        """Return the metrics as a plain dict name -> float."""
        return asdict(self)


def collapse_metrics(
    features: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> CollapseMetrics:
    """Measure neural collapse NC1-NC4 of last-layer features and (optionally) the classifier.

    Implements the measurements of Papyan, Han & Donoho (2020, Figures 2-7) with NC1 divided by
    C (Zhu et al. 2021; the official notebook of Papyan et al. omits the /C) and NC2/NC3 as
    distances (Zhu et al. 2021, eqs. 8-9). See `nc1`, `equinorm`, `equiangularity`,
    `etf_distance`, `self_duality` and `ncc_mismatch` for each definition.

    Args:
        features: penultimate features (N, d), float.
        labels: (N,) integer class labels in [0, C); every class needs at least 2 samples.
            C is ``weight.shape[0]`` when a classifier is given, else ``labels.max() + 1``.
        weight: classifier weight (C, d) (e.g. ``model.fc.weight``), or None to skip NC2 on the
            classifier, NC3 and NC4.
        bias: classifier bias (C,) or None.

    Returns:
        A `CollapseMetrics`; an entry that is undefined (a class mean equal to the global mean,
        a zero classifier row) is NaN. For an exact simplex ETF (features equal to their class
        means, W a positive multiple of the centred means) every entry is 0.
    """
    fn = "collapse_metrics"
    num_classes = None
    if weight is not None:
        check_finite(check_tensor(weight, "weight", fn, ndim=2, like="(C, d)"), "weight", fn)
        num_classes = weight.shape[0]
    h, y, c, _ = _check_features_labels(features, labels, fn, num_classes)
    if weight is not None and weight.shape[1] != h.shape[1]:
        raise ValueError(
            f"{fn}: `weight` must have shape (C, {h.shape[1]}) to match features of dimension "
            f"{h.shape[1]}, got {tuple(weight.shape)}"
        )
    if bias is not None and weight is None:
        raise ValueError(f"{fn}: `bias` was given without `weight`")
    means, global_mean = class_means(h, y, c)
    centred = means - global_mean
    values = {
        "nc1": _nc1_from(h - means[y], centred, h.shape[0]),
        "equinorm_means": _or_nan(equinorm, centred),
        "equiangular_means": _or_nan(equiangularity, centred),
        "etf_distance_means": _or_nan(etf_distance, centred),
    }
    if weight is not None:
        w = weight.detach()
        values.update(
            equinorm_weights=_or_nan(equinorm, w),
            equiangular_weights=_or_nan(equiangularity, w),
            etf_distance_weights=_or_nan(etf_distance, w),
            self_duality=_or_nan(self_duality, w, centred),
            ncc_mismatch=ncc_mismatch(h, means, w, None if bias is None else bias.detach()),
        )
    return CollapseMetrics(**values)


def _or_nan(measure, *args) -> float:
    """Return ``measure(*args)``, or NaN where it is undefined (a zero class mean or a zero
    classifier row, e.g. dead features at initialisation or a model decayed to 0)."""
    try:
        return measure(*args)
    except ValueError:
        return math.nan
