"""Matrix-free eigensolvers for symmetric operators given as a matrix-vector product.

The Hessian of a network is never formed: we only have v -> H v (`hessian_operator`). Two
classic methods extract eigenvalues from such products:

- `power_iteration` (von Mises 1929): v <- H v / ||H v||; converges to the eigenvector of the
  largest |eigenvalue| at rate |lambda_2 / lambda_1| per step. With deflation (projecting out
  the eigenvectors already found) it finds the next ones. Simple, slow when eigenvalues are close.
- `lanczos` (Lanczos 1950; Golub & Van Loan, Matrix Computations, ch. 10): builds an
  orthonormal basis Q of the Krylov space {v, Hv, H^2 v, ...} in which H is tridiagonal,
  T = Q^T H Q. The eigenvalues of T (Ritz values) approach the extreme eigenvalues of H much
  faster than power iteration (at a rate set by the square root of the relative gap), and the
  eigen-decomposition of T with v random is a quadrature rule for the spectral density (`slq`).
  We re-orthogonalise fully against Q, which keeps it stable in floating point.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from .._checks import (
    check_finite,
    check_float,
    check_int,
    check_like,
    check_nonempty,
    check_tensor,
)
from .._warnings import ConvergenceWarning

__all__ = ["power_iteration", "lanczos", "ritz_pairs"]

MatVec = Callable[[torch.Tensor], torch.Tensor]


def _start(v0: torch.Tensor, fn: str) -> torch.Tensor:
    check_tensor(v0, "v0", fn, ndim=1, like="(n,)")
    norm = v0.norm()
    if not torch.isfinite(norm) or float(norm) == 0.0:
        raise ValueError(f"{fn}: `v0` must be a finite, non-zero start vector, got norm {norm}")
    return v0 / norm


def _check_matvec(matvec, v: torch.Tensor, fn: str) -> torch.Tensor:
    if not callable(matvec):
        raise TypeError(f"{fn}: `matvec` must be callable v -> A v, got {type(matvec).__name__}")
    w = matvec(v)
    if not isinstance(w, torch.Tensor) or w.shape != v.shape:
        got = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
        raise ValueError(f"{fn}: `matvec` must return a vector of shape {tuple(v.shape)}, "
                         f"got {got}")
    return w


def power_iteration(
    matvec: MatVec,
    v0: torch.Tensor,
    *,
    k: int = 1,
    max_iter: int = 1000,
    tol: float = 1e-7,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Find the k eigenvalues of largest magnitude of a symmetric operator by power iteration
    with deflation.

    For j = 1..k: start from ``v0`` with the eigenvectors found so far projected out; repeat
    w = A v, project out the found eigenvectors, lambda = <v, w> (the Rayleigh quotient),
    v = w / ||w||, until |lambda_new - lambda_old| <= tol * |lambda_new|.

    Args:
        matvec: v -> A v for a symmetric A, on vectors of shape (n,).
        v0: start vector (n,); its dtype and device are used throughout.
        k: number of eigenpairs.
        max_iter: iterations per eigenpair (a warning says when one did not converge).
        tol: relative change of the eigenvalue estimate between two iterations that stops.

    Returns:
        ``(eigenvalues (k,), eigenvectors (k, n))`` in the order found (decreasing |lambda|).
    """
    fn = "power_iteration"
    k = check_int(k, "k", fn)
    max_iter = check_int(max_iter, "max_iter", fn)
    tol = check_float(tol, "tol", fn, positive=True)
    start = _start(v0, fn)
    if k > start.numel():
        raise ValueError(f"{fn}: `k` must be <= the dimension {start.numel()}, got {k}")
    _check_matvec(matvec, start, fn)
    values, vectors = [], []

    def deflate(x):
        for u in vectors:
            x = x - (u @ x) * u
        return x

    for j in range(k):
        v = deflate(start)
        if float(v.norm()) < 1e-12:  # v0 lies in the span found so far: perturb it
            v = deflate(torch.roll(start, j) + 1.0 / (j + 1))
        v = v / v.norm()
        value, converged = None, False
        for _ in range(max_iter):
            w = deflate(matvec(v))
            new = v @ w
            norm = w.norm()
            if float(norm) == 0.0:  # v is in the null space: eigenvalue 0
                value, converged = new, True
                break
            v = w / norm
            if value is not None and abs(float(new - value)) <= tol * abs(float(new)):
                value, converged = new, True
                break
            value = new
        if not converged:
            warnings.warn(f"{fn}: eigenpair {j + 1} did not converge in {max_iter} iterations",
                          ConvergenceWarning, stacklevel=2)
        values.append(value)
        vectors.append(v)
    return torch.stack(values), torch.stack(vectors)


def lanczos(
    matvec: MatVec,
    v0: torch.Tensor,
    iters: int,
    *,
    stop: Callable[[torch.Tensor, torch.Tensor], bool] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the Lanczos iteration with full re-orthogonalisation.

    Builds Q = [q_1, ..., q_m] (q_1 = v0 / ||v0||) and the tridiagonal T = Q^T A Q with
    diagonal alpha_j = <q_j, A q_j> and off-diagonal beta_j = ||r_j||, where r_j = A q_j -
    alpha_j q_j - beta_{j-1} q_{j-1} (made orthogonal to every earlier q, twice) and q_{j+1} =
    r_j / beta_j. Stops after ``iters`` steps, when beta_j vanishes (an invariant subspace was
    found: the Ritz values are then exact eigenvalues), or when ``stop(alpha, beta)`` says so.

    Args:
        matvec: v -> A v for a symmetric A, on vectors of shape (n,).
        v0: start vector (n,), non-zero.
        iters: maximum number of steps m (at most n).
        stop: optional test called after each step with the alpha (m,) and beta (m,) so far
            (beta[-1] couples to the next, not yet computed, vector); return True to stop.

    Returns:
        ``(alpha (m,), beta (m - 1,), Q (m, n))``: T has diagonal alpha and off-diagonals beta.
    """
    fn = "lanczos"
    iters = check_int(iters, "iters", fn)
    q = _start(v0, fn)
    iters = min(iters, q.numel())
    w = _check_matvec(matvec, q, fn)
    basis = torch.empty(iters, q.numel(), dtype=q.dtype, device=q.device)
    basis[0] = q
    alphas, betas = [], []
    for j in range(iters):
        if j > 0:
            w = matvec(q)
        alphas.append(q @ w)
        Q = basis[: j + 1]
        r = w - Q.T @ (Q @ w)  # full re-orthogonalisation (covers alpha q_j and beta q_{j-1})
        r = r - Q.T @ (Q @ r)  # twice is enough (Kahan, Parlett)
        betas.append(r.norm())
        alpha_t, beta_t = torch.stack(alphas), torch.stack(betas)
        if j + 1 == iters or float(beta_t[-1]) <= 1e-10 * float(alpha_t.abs().max() + 1e-30):
            break  # the one host sync per step: the stopping rule of an iterative solver
        if stop is not None and stop(alpha_t, beta_t):
            break
        q = r / beta_t[-1]
        basis[j + 1] = q
    m = len(alphas)
    return torch.stack(alphas), torch.stack(betas[: m - 1]) if m > 1 else \
        torch.zeros(0, dtype=q.dtype, device=q.device), basis[:m]


def ritz_pairs(alpha: torch.Tensor, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the eigenvalues (ascending) and eigenvectors of the tridiagonal matrix T with
    diagonal ``alpha`` (m,) and off-diagonals ``beta`` (m - 1,): the Ritz values of Lanczos and,
    as the squared first components of the eigenvectors, the weights of its quadrature rule."""
    fn = "ritz_pairs"
    check_finite(check_nonempty(check_tensor(alpha, "alpha", fn, ndim=1), "alpha", fn, "entry"),
                 "alpha", fn)
    if not isinstance(beta, torch.Tensor) or beta.shape != (len(alpha) - 1,):
        got = tuple(beta.shape) if isinstance(beta, torch.Tensor) else type(beta).__name__
        raise ValueError(f"{fn}: `beta` must have shape ({len(alpha) - 1},) (one fewer than "
                         f"`alpha`), got {got}")
    check_like(beta, alpha, "beta", fn, "alpha")
    T = torch.diag(alpha)
    if len(beta):
        T = T + torch.diag(beta, 1) + torch.diag(beta, -1)
    return torch.linalg.eigh(T)
