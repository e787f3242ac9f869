"""What the InfoNCE loss certifies: a mutual-information lower bound and its large-batch limit.

- `infonce_bound`: the InfoNCE estimate of a lower bound on I(X; Y) between paired views,
  ``log N - L_N`` (van den Oord et al. 2018, eq. 10; Poole et al. 2019, eq. 12). Any critic gives a
  valid bound; the bound can never exceed ``log N`` (McAllester & Stratos 2020), so a batch of N
  pairs cannot certify more than log N nats.
- `infonce_limit`: the two terms of Wang & Isola (2020, Theorem 1), the limit of the contrastive
  loss minus log M as the number of negatives M grows: an alignment term and a uniformity term.

Both use the one-sided, CPC form of the loss: row i of ``z1`` is classified among the N rows of
``z2`` (its own partner and N-1 negatives), with similarities ``s_ij = <z1_i, z2_j> / tau`` of
L2-normalised rows. SimCLR's NT-Xent (`info_nce`) adds same-side negatives and is not this form.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .._checks import check_float
from .losses import _check_views

__all__ = ["InfoNCEBound", "infonce_bound", "InfoNCELimit", "infonce_limit"]


class InfoNCEBound(NamedTuple):
    """`infonce_bound` result (floats, nats): the bound, the loss and the ceiling log N."""

    bound: float
    loss: float
    ceiling: float


def _similarities(z1, z2, temperature, fn):
    _check_views(z1, z2, fn)
    tau = check_float(temperature, "temperature", fn, positive=True)
    u1 = F.normalize(z1.to(torch.float64), dim=1)
    u2 = F.normalize(z2.to(torch.float64), dim=1)
    return u1 @ u2.T / tau


def infonce_bound(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> InfoNCEBound:
    """Return the InfoNCE lower bound on the mutual information between paired views.

    With the critic ``f(x, y) = exp(<z1(x), z2(y)> / tau)`` (unit-norm rows) and a batch of N
    pairs, the one-sided loss ``L_N = -(1/N) sum_i log softmax_j(s_ij)_i`` estimates
    ``E[L_N] >= log N - I(X; Y)`` (van den Oord et al. 2018, eq. 10), so
    ``I(X; Y) >= log N - L_N`` in expectation (Poole et al. 2019, eq. 12). The bound is computed
    in both directions (z1 -> z2 and z2 -> z1; each is a valid bound) and averaged. It lies in
    ``(-inf, log N]``: a value near log N means the batch, not the data, limits the estimate;
    a value at or below 0 certifies nothing (e.g. for shuffled pairs).

    Args:
        z1, z2: paired embeddings (N, D), N >= 2, row i of each a view of example i.
        temperature: tau > 0 of the critic (any tau gives a valid bound).

    Returns:
        `InfoNCEBound` (bound, loss, ceiling = log N), in nats, computed in float64.
    """
    s = _similarities(z1, z2, temperature, "infonce_bound")
    target = torch.arange(len(s), device=s.device)
    loss = 0.5 * (F.cross_entropy(s, target) + F.cross_entropy(s.T, target))
    ceiling = math.log(len(s))
    return InfoNCEBound(bound=ceiling - float(loss), loss=float(loss), ceiling=ceiling)


class InfoNCELimit(NamedTuple):
    """`infonce_limit` result (floats): Wang & Isola's two terms and their sum."""

    alignment_term: float
    uniformity_term: float
    limit: float


def infonce_limit(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> InfoNCELimit:
    """Estimate the large-M limit of the InfoNCE loss minus log M (Wang & Isola 2020, Thm. 1).

    For M negatives drawn from the data, Wang & Isola show that as M -> infinity

        L(f; tau, M) - log M  ->  -(1/tau) E_pos[f(x)^T f(y)]
                                  + E_x[ log E_{x-}[ exp(f(x-)^T f(x) / tau) ] ],

    the first term minimised by perfect alignment, the second by a uniform distribution on the
    sphere (when perfectly aligned, uniform encoders exist). This estimates both expectations on
    a batch: the positive pairs are ``(z1_i, z2_i)``, the negatives of anchor ``z1_i`` are the
    rows ``z2_j``, j != i.

    Args:
        z1, z2: paired embeddings (N, D), N >= 2.
        temperature: tau > 0.

    Returns:
        `InfoNCELimit` (alignment_term, uniformity_term, limit = their sum), float64 estimates.
    """
    s = _similarities(z1, z2, temperature, "infonce_limit")
    n = len(s)
    align = -float(s.diagonal().mean())
    off = s.masked_fill(torch.eye(n, dtype=torch.bool, device=s.device), float("-inf"))
    uniform = float((torch.logsumexp(off, dim=1) - math.log(n - 1)).mean())
    return InfoNCELimit(alignment_term=align, uniformity_term=uniform, limit=align + uniform)
