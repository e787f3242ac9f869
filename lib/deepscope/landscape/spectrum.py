"""Stochastic estimates of the whole Hessian spectrum from Hessian-vector products.

- `hessian_trace`: Hutchinson's estimator E[z^T H z] = tr H for Rademacher z (Hutchinson 1989;
  Avron & Toledo 2011), with its standard error.
- `spectral_density`: stochastic Lanczos quadrature (Golub & Meurant 2010; Ghorbani, Krishnan &
  Xiao 2019, "An investigation into neural net optimization via Hessian eigenvalue density").

The Hessian is that of `deepscope.landscape.curvature` (mean loss over ``data``, eval mode); the
model is never changed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .._checks import check_float, check_int
from .curvature import HessianOperator, _start_vector, device_generator
from .linalg import _ritz_host, lanczos

__all__ = ["hessian_trace", "SpectralDensity", "spectral_density"]


def hessian_trace(
    model: nn.Module,
    loss_fn: Callable,
    data,
    samples: int = 100,
    seed: int | None = None,
    *,
    batch_size: int = 1,
    return_stderr: bool = False,
    output=None,
):
    """Estimate the trace of the Hessian with Hutchinson's estimator.

    tr H = E[z^T H z] for z with i.i.d. Rademacher (+-1) entries (Hutchinson 1989); the
    estimate is the mean of ``samples`` draws and its standard error is the sample standard
    deviation / sqrt(samples).

    Args:
        model, loss_fn, data: the loss.
        samples: number of probe vectors z.
        seed: seed of the probes (None: random).
        batch_size: probes per batched backward pass (more is faster on a GPU).
        return_stderr: also return the standard error.
        output: picks the tensor passed to ``loss_fn`` from dict/tuple outputs (see `hvp`).

    The probes are drawn on the model's device in its dtype (+-1 is exact in every dtype) and
    z^T H z is summed in float32 at least; nothing returns to the host before the end.

    Returns:
        The estimate, a 0-d float64 tensor (CPU); with ``return_stderr`` the pair
        ``(estimate, standard_error)``.
    """
    fn = "hessian_trace"
    op = HessianOperator(model, loss_fn, data, fn=fn, output=output)
    samples = check_int(samples, "samples", fn, minimum=2 if return_stderr else 1)
    batch_size = check_int(batch_size, "batch_size", fn)
    generator = device_generator(op.device, seed, fn)
    values = []
    for start in range(0, samples, batch_size):
        m = min(batch_size, samples - start)
        z = torch.randint(0, 2, (m, op.dim), generator=generator, device=op.device,
                          dtype=op.dtype) * 2 - 1
        hz = op.matmat(z) if m > 1 else op(z[0])[None]
        values.append((z.to(op.work_dtype) * hz.to(op.work_dtype)).sum(dim=1))
    values = torch.cat(values).detach().to("cpu", torch.float64)
    estimate = values.mean()
    if not return_stderr:
        return estimate
    return estimate, values.std(unbiased=True) / math.sqrt(samples)


@dataclass
class SpectralDensity:
    """Stochastic Lanczos quadrature of a Hessian spectrum: for each run r a quadrature rule
    with nodes ``nodes[r]`` (Ritz values) and ``weights[r]`` (summing to 1), so that
    (1/P) sum_i f(lambda_i) ~ mean_r sum_j weights[r, j] f(nodes[r, j])."""

    nodes: torch.Tensor  # (runs, m)
    weights: torch.Tensor  # (runs, m)
    dim: int  # P, the number of eigenvalues

    def density(self, grid=None, sigma: float | None = None, points: int = 400):
        """Return ``(grid, values)``: the spectral density smoothed with a Gaussian kernel of
        width ``sigma`` (default 1% of the node range), phi(t) = mean_r sum_j w_rj N(t;
        theta_rj, sigma^2), on ``grid`` (default ``points`` values covering the nodes +- 5
        sigma). It integrates to 1 over a grid that covers the nodes."""
        lo, hi = float(self.nodes.min()), float(self.nodes.max())
        if sigma is None:
            sigma = max(hi - lo, 1e-12) / 100
        sigma = check_float(sigma, "sigma", "SpectralDensity.density", positive=True)
        if grid is None:
            grid = torch.linspace(lo - 5 * sigma, hi + 5 * sigma, points, dtype=torch.float64)
        grid = torch.as_tensor(grid, dtype=torch.float64)
        z = (grid[:, None, None] - self.nodes[None]) / sigma
        kernel = torch.exp(-0.5 * z**2) / (sigma * math.sqrt(2 * math.pi))
        return grid, (kernel * self.weights[None]).sum(-1).mean(-1)

    def fraction_above(self, threshold: float) -> float:
        """Return the estimated fraction of eigenvalues above ``threshold`` (times ``dim``: the
        estimated count)."""
        return float((self.weights * (self.nodes > threshold)).sum(-1).mean())


def spectral_density(
    model: nn.Module,
    loss_fn: Callable,
    data,
    *,
    iters: int = 80,
    runs: int = 4,
    seed: int | None = 0,
    output=None,
) -> SpectralDensity:
    """Estimate the eigenvalue density of the Hessian by stochastic Lanczos quadrature.

    For each run: Lanczos (`lanczos`, full re-orthogonalisation) for ``iters`` steps from a
    normalised Rademacher vector v gives T = V^T H V = S diag(theta) S^T; then v^T f(H) v ~
    sum_j S_{1j}^2 f(theta_j), and E_v[v^T f(H) v] = (1/P) tr f(H) (Ghorbani et al. 2019,
    section 3; Golub & Meurant 2010). The extreme nodes converge to the extreme eigenvalues.

    Args:
        model, loss_fn, data: the loss.
        iters: Lanczos steps per run (at most P).
        runs: independent start vectors averaged.
        seed: seed of the start vectors (None: random), drawn on the model's device.
        output: picks the tensor passed to ``loss_fn`` from dict/tuple outputs (see `hvp`).

    Returns:
        A `SpectralDensity` (nodes, weights (runs, m) float64 CPU tensors; ``.density()``
        smooths it on a grid).
    """
    fn = "spectral_density"
    op = HessianOperator(model, loss_fn, data, fn=fn, output=output)
    iters = min(check_int(iters, "iters", fn), op.dim)
    runs = check_int(runs, "runs", fn)
    base = None if seed is None else check_int(seed, "seed", fn, minimum=0)
    nodes, weights = [], []
    for r in range(runs):
        v0 = _start_vector(op, None if base is None else base + r, fn, rademacher=True)
        alpha, beta, _ = lanczos(op, v0, iters)
        theta, s = _ritz_host(alpha, beta)
        m = len(theta)
        pad = iters - m  # an invariant subspace ended Lanczos early: pad with zero weights
        nodes.append(torch.cat([theta, theta[-1:].expand(pad)]))
        weights.append(torch.cat([s[0] ** 2, torch.zeros(pad, dtype=s.dtype,
                                                         device=s.device)]))
    to_cpu = lambda ts: torch.stack(ts).detach().to("cpu", torch.float64)
    return SpectralDensity(to_cpu(nodes), to_cpu(weights), op.dim)
