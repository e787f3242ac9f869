"""Contrastive losses and what their gradients do: InfoNCE / NT-Xent, SupCon, negative weights.

Conventions (used by the notebooks, the assignment and the tests):

- Embeddings are float tensors of shape (N, D), one row per example. Unless ``normalize=False``
  they are L2-normalised inside, so similarities are cosines in [-1, 1].
- ``info_nce`` is SimCLR's NT-Xent (Chen et al. 2020, eq. 1): the 2N views of a batch are all
  anchors; each has one positive (its other view) and 2N-2 negatives (every other view);
  similarity with itself is excluded. The loss is the mean over the 2N anchors.
- For one anchor u with positive v+ and negatives v_1..v_K (similarities s = u.v):

      L = -s+/tau + log(exp(s+/tau) + sum_k exp(s_k/tau))
      dL/dv_k = p_k u / tau,   p = softmax([s+, s_1, ..., s_K] / tau)

  so each negative is pushed away in proportion to its softmax weight: a small temperature puts
  the weight on the hardest (most similar) negatives (Wang & Liu 2021). `negative_weights`
  returns the weights among the negatives, softmax(s_k / tau) over k.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .._checks import (
    check_finite,
    check_float,
    check_int,
    check_labels,
    check_like,
    check_nonempty,
    check_not_meta,
    check_same_shape,
    check_tensor,
)


def check_embeddings(z, name: str, fn: str, *, min_rows: int = 1) -> torch.Tensor:
    """Return ``z`` after checking it is a floating (N, D) tensor with N >= ``min_rows``."""
    check_tensor(z, name, fn, ndim=2, like="(N, D)")
    if len(z) < min_rows:
        raise ValueError(f"{fn}: `{name}` must have at least {min_rows} rows, got shape "
                         f"{tuple(z.shape)}")
    return check_finite(z, name, fn)


def _check_views(z1, z2, fn: str) -> None:
    check_embeddings(z1, "z1", fn)
    check_embeddings(z2, "z2", fn)
    check_same_shape(z1, z2, ("z1", "z2"), fn)
    check_like(z2, z1, "z2", fn, "z1")
    if len(z1) < 2:
        raise ValueError(
            f"{fn}: `z1` and `z2` must hold at least 2 pairs (a batch of N pairs gives each "
            f"anchor 2N-2 negatives), got shape {tuple(z1.shape)}"
        )


def info_nce(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5, *, normalize: bool = True
) -> torch.Tensor:
    """Compute SimCLR's NT-Xent loss of two batches of paired views (Chen et al. 2020, eq. 1).

    Row i of ``z1`` and row i of ``z2`` are two views of example i. All 2N rows are anchors;
    anchor i's positive is its other view and its 2N-2 negatives are all remaining rows (the
    anchor itself is excluded from the denominator)::

        l(i, j) = -log( exp(s_ij / tau) / sum_{k != i} exp(s_ik / tau) ),   s = cosine similarity

    Args:
        z1, z2: embeddings of shape (N, D), N >= 2.
        temperature: tau > 0.
        normalize: L2-normalise the rows first (cosine similarity); False uses dot products.

    Returns:
        A 0-dim tensor: the mean of l over the 2N anchors (differentiable). When all 2N
        embeddings are equal it is exactly log(2N - 1).
    """
    fn = "info_nce"
    _check_views(z1, z2, fn)
    temperature = check_float(temperature, "temperature", fn, positive=True)
    return _nt_xent(z1, z2, temperature, normalize)


def _nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float, normalize: bool = True):
    """`info_nce` without its input checks (for training loops: no host sync per step)."""
    n = len(z1)
    z = torch.cat([z1, z2])
    if normalize:
        z = F.normalize(z, dim=1)
    logits = (z @ z.T) / temperature
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    index = torch.arange(n, device=z.device)
    positives = torch.cat([index + n, index])
    return F.cross_entropy(logits, positives)


def supcon(
    z: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1, *, normalize: bool = True
) -> torch.Tensor:
    """Compute the supervised contrastive loss L^sup_out (Khosla et al. 2020, eq. 2).

    Every row is an anchor; its positives are all *other* rows with the same label, its
    denominator runs over all other rows::

        L_i = -1/|P(i)| sum_{p in P(i)} log( exp(s_ip / tau) / sum_{a != i} exp(s_ia / tau) )

    Anchors without any positive are left out of the mean. With two views per example and the
    example index as label this equals `info_nce` of the two views.

    Args:
        z: embeddings (M, D); stack the views of a batch, e.g. ``torch.cat([z1, z2])``.
        labels: integer labels (M,).
        temperature: tau > 0.
        normalize: L2-normalise the rows first.

    Returns:
        A 0-dim tensor: the mean of L_i over the anchors that have a positive.
    """
    fn = "supcon"
    check_embeddings(z, "z", fn, min_rows=2)
    labels = check_labels(labels, len(z), fn).to(z.device)
    temperature = check_float(temperature, "temperature", fn, positive=True)
    if normalize:
        z = F.normalize(z, dim=1)
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = ((z @ z.T) / temperature).masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (labels[:, None] == labels[None, :]) & ~self_mask
    count = positive.sum(1)
    has_positive = count > 0
    if not bool(has_positive.any()):
        raise ValueError(
            f"{fn}: `labels` must give at least one anchor a positive (two rows with the same "
            f"label), got {len(z)} distinct labels"
        )
    mean_log_prob = log_prob.masked_fill(~positive, 0.0).sum(1)[has_positive] / count[
        has_positive
    ]
    return -mean_log_prob.mean()


def negative_weights(similarities: torch.Tensor, temperature: float) -> torch.Tensor:
    """Return the weights softmax(s / tau) with which InfoNCE pushes each negative away.

    For one anchor, the gradient on negative k is p_k u / tau with p_k = (1 - p+) *
    softmax(s / tau)_k (module docstring): these weights say which negatives the loss attends to.
    As tau -> 0 they concentrate on the hardest negative; as tau -> inf they become uniform
    (Wang & Liu 2021, "relative penalty").

    Args:
        similarities: (..., K) similarities of an anchor to its K negatives. ``-inf`` masks an
            entry out (weight 0, softmax's convention, e.g. an anchor's similarity to itself);
            NaN and ``+inf`` raise, and so does a row masked out entirely.
        temperature: tau > 0.

    Returns:
        A tensor of the shape of ``similarities`` whose last dimension sums to 1.
    """
    fn = "negative_weights"
    check_tensor(similarities, "similarities", fn, min_ndim=1, like="(..., K)")
    check_not_meta(check_nonempty(similarities, "similarities", fn, "row"), "similarities", fn)
    if similarities.is_floating_point():
        masked = torch.isneginf(similarities)
        # one host read-back: any NaN/+inf, any row without an unmasked entry
        bad, empty = torch.stack([(~(torch.isfinite(similarities) | masked)).any(),
                                  masked.all(-1).any()]).tolist()
        if bad:
            check_finite(similarities.masked_fill(masked, 0.0), "similarities", fn,
                         "-inf masks an entry; NaN and +inf are not similarities")
        if empty:
            raise ValueError(f"{fn}: `similarities` has a row whose entries are all -inf "
                             "(masked out): its weights are undefined")
    temperature = check_float(temperature, "temperature", fn, positive=True)
    return torch.softmax(similarities / temperature, dim=-1)


def weight_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Return the Shannon entropy (nats) of weights along the last dimension, 0 log 0 = 0.

    log K for uniform weights over K negatives, 0 when one negative takes all the weight.
    Shape (..., K) -> (...).
    """
    check_tensor(weights, "weights", "weight_entropy", min_ndim=1, like="(..., K)")
    check_finite(check_nonempty(weights, "weights", "weight_entropy", "row"), "weights",
                 "weight_entropy")
    return -torch.special.xlogy(weights, weights).sum(-1)


class AnchorGradients(NamedTuple):
    """`anchor_gradients` result for one anchor (D the embedding size, K the negatives)."""

    loss: torch.Tensor  # 0-dim
    positive_weight: torch.Tensor  # 0-dim: p+, the softmax weight of the positive
    weights: torch.Tensor  # (K,): softmax(s_k / tau) among the negatives
    grad_anchor: torch.Tensor  # (D,): dL/du
    grad_positive: torch.Tensor  # (D,): dL/dv+
    grad_negatives: torch.Tensor  # (K, D): dL/dv_k


def anchor_gradients(
    anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, temperature: float
) -> AnchorGradients:
    """Compute one anchor's InfoNCE loss and, in closed form, its gradient on every point.

    With s = u.v (dot products of the vectors as given: pass unit vectors for cosines) and
    p = softmax([s+, s_1..s_K] / tau)::

        L       = -s+/tau + log(exp(s+/tau) + sum_k exp(s_k/tau))
        dL/du   = (-(1 - p+) v+ + sum_k p_k v_k) / tau
        dL/dv+  = -(1 - p+) u / tau,     dL/dv_k = p_k u / tau

    Gradient descent moves each point along minus its gradient: the positive towards the
    anchor, each negative away from it with strength p_k.

    Args:
        anchor: u, shape (D,).
        positive: v+, shape (D,).
        negatives: v_1..v_K, shape (K, D), K >= 1.
        temperature: tau > 0.

    Returns:
        `AnchorGradients` (loss, positive_weight, weights (K,), grad_anchor (D,),
        grad_positive (D,), grad_negatives (K, D)).
    """
    fn = "anchor_gradients"
    check_finite(check_tensor(anchor, "anchor", fn, ndim=1, like="(D,)"), "anchor", fn)
    check_same_shape(anchor, check_tensor(positive, "positive", fn), ("anchor", "positive"), fn)
    check_embeddings(negatives, "negatives", fn)
    check_like(positive, anchor, "positive", fn, "anchor")
    check_like(negatives, anchor, "negatives", fn, "anchor")
    if negatives.shape[1] != anchor.shape[0]:
        raise ValueError(
            f"{fn}: `negatives` must have shape (K, {anchor.shape[0]}) to match `anchor`, got "
            f"{tuple(negatives.shape)}"
        )
    temperature = check_float(temperature, "temperature", fn, positive=True)
    s_pos = anchor @ positive
    s_neg = negatives @ anchor
    logits = torch.cat([s_pos[None], s_neg]) / temperature
    p = torch.softmax(logits, dim=0)
    loss = torch.logsumexp(logits, dim=0) - logits[0]
    grad_anchor = (-(1 - p[0]) * positive + p[1:] @ negatives) / temperature
    return AnchorGradients(
        loss=loss,
        positive_weight=p[0],
        weights=torch.softmax(s_neg / temperature, dim=0),
        grad_anchor=grad_anchor,
        grad_positive=-(1 - p[0]) * anchor / temperature,
        grad_negatives=p[1:, None] * anchor[None, :] / temperature,
    )


def collapsed_info_nce(batch_size: int) -> float:
    """Return log(2N - 1), the NT-Xent of a batch of N pairs whose 2N embeddings are all equal
    (every similarity the same, at any temperature): the loss of a collapsed encoder."""
    batch_size = check_int(batch_size, "batch_size", "collapsed_info_nce", minimum=2)
    return math.log(2 * batch_size - 1)
