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

Precision and devices: the solvers run on the device of the start vector, in float32 for
float16/bfloat16 operators (float64 for float64), and decompose the small tridiagonal matrix
in float64 on the CPU. Between two convergence checks (`default_check_every`) they never wait
for the device.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch

from .._checks import check_float, check_int, check_tensor
from .._warnings import ConvergenceWarning

__all__ = ["power_iteration", "lanczos", "ritz_pairs", "default_check_every", "work_dtype"]

MatVec = Callable[[torch.Tensor], torch.Tensor]


def _start(v0: torch.Tensor, fn: str) -> torch.Tensor:
    check_tensor(v0, "v0", fn, ndim=1, like="(n,)")
    v0 = v0.to(torch.promote_types(v0.dtype, torch.float32))
    norm = v0.norm()
    size = float(norm)
    if not math.isfinite(size) or size == 0.0:
        raise ValueError(f"{fn}: `v0` must be a finite, non-zero start vector, got norm {size}")
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


def default_check_every(device) -> int:
    """Return how many steps an iterative solver runs between two convergence checks.

    A check reads a few numbers back to the host; on an accelerator that stalls the queue of
    work, so `power_iteration` and `lanczos` check every 8 steps there (at most 7 extra
    products per run). On the CPU there is no host boundary: they check every step.
    """
    return 1 if torch.device(device).type == "cpu" else 8


def _check_every(check_every, device, fn: str) -> int:
    if check_every is None:
        return default_check_every(device)
    return check_int(check_every, "check_every", fn)


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Return the dtype the solvers work in for operators of ``dtype``: float32 for float16 and
    bfloat16 (and float32), float64 for float64. Products stay in the operator's dtype."""
    return torch.promote_types(dtype, torch.float32)


def power_iteration(
    matvec: MatVec,
    v0: torch.Tensor,
    *,
    k: int = 1,
    max_iter: int = 1000,
    tol: float = 1e-7,
    check_every: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Find the k eigenvalues of largest magnitude of a symmetric operator by power iteration
    with deflation.

    For j = 1..k: start from ``v0`` with the eigenvectors found so far projected out; repeat
    w = A v, project out the found eigenvectors, lambda = <v, w> (the Rayleigh quotient),
    v = w / ||w||, until |lambda_new - lambda_old| <= tol * |lambda_new|.

    The iteration runs in float32 for a float16/bfloat16 ``v0`` (`work_dtype`): each product's
    result is converted, so only the products carry the operator's rounding.

    Args:
        matvec: v -> A v for a symmetric A, on vectors of shape (n,).
        v0: start vector (n,); its device is used throughout.
        k: number of eigenpairs.
        max_iter: iterations per eigenpair (a `deepscope.ConvergenceWarning` says when one did
            not converge).
        tol: relative change of the eigenvalue estimate between two iterations that stops.
        check_every: iterations between two convergence tests, the only host syncs (None:
            `default_check_every` for the device of ``v0``: 1 on the CPU, 8 elsewhere).

    Returns:
        ``(eigenvalues (k,), eigenvectors (k, n))`` in the order found (decreasing |lambda|).
    """
    fn = "power_iteration"
    k = check_int(k, "k", fn)
    max_iter = check_int(max_iter, "max_iter", fn)
    tol = check_float(tol, "tol", fn, positive=True)
    start = _start(v0, fn)
    every = _check_every(check_every, start.device, fn)
    if k > start.numel():
        raise ValueError(f"{fn}: `k` must be <= the dimension {start.numel()}, got {k}")
    dtype = work_dtype(start.dtype)
    start = start.to(dtype)
    _check_matvec(matvec, start, fn)
    tiny = torch.finfo(dtype).tiny
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
        for step in range(max_iter):
            w = deflate(matvec(v).to(dtype))
            new = v @ w
            norm = w.norm()
            # no host sync here: a zero product keeps v (its eigenvalue is 0)
            v = torch.where(norm > 0, w / norm.clamp_min(tiny), v)
            if (step + 1) % every == 0 or step + 1 == max_iter:
                old = new if value is None else value
                now, before, size = torch.stack([new, old, norm]).tolist()  # the one sync
                if size == 0.0 or (value is not None and abs(now - before) <= tol * abs(now)):
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
    check_every: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the Lanczos iteration with full re-orthogonalisation.

    Builds Q = [q_1, ..., q_m] (q_1 = v0 / ||v0||) and the tridiagonal T = Q^T A Q with
    diagonal alpha_j = <q_j, A q_j> and off-diagonal beta_j = ||r_j||, where r_j = A q_j -
    alpha_j q_j - beta_{j-1} q_{j-1} (made orthogonal to every earlier q, twice) and q_{j+1} =
    r_j / beta_j. Stops after ``iters`` steps, when beta_j vanishes (an invariant subspace was
    found: the Ritz values are then exact eigenvalues), or when ``stop(alpha, beta)`` says so.

    The basis, alpha and beta are float32 for a float16/bfloat16 ``v0`` (`work_dtype`), so
    only the products carry the operator's rounding. Both tests run every ``check_every``
    steps, each with one host sync; a vanishing beta found late truncates the run at its step.

    Args:
        matvec: v -> A v for a symmetric A, on vectors of shape (n,).
        v0: start vector (n,), non-zero.
        iters: maximum number of steps m (at most n).
        stop: optional test called with float64 CPU copies of alpha (m,) and beta (m,) so far
            (beta[-1] couples to the next, not yet computed, vector); return True to stop.
        check_every: steps between two tests (None: `default_check_every`: 1 on the CPU, 8
            on an accelerator).

    Returns:
        ``(alpha (m,), beta (m - 1,), Q (m, n))``: T has diagonal alpha and off-diagonals beta.
    """
    alpha, beta, basis = _lanczos(matvec, v0, iters, stop=stop, check_every=check_every)
    return alpha, beta[:-1], basis


def _lanczos(matvec, v0, iters, *, stop=None, check_every=None, fn="lanczos"):
    """`lanczos`, returning all m betas (the last one couples to the next vector)."""
    iters = check_int(iters, "iters", fn)
    q = _start(v0, fn)
    every = _check_every(check_every, q.device, fn)
    dtype = work_dtype(q.dtype)
    q = q.to(dtype)
    iters = min(iters, q.numel())
    w = _check_matvec(matvec, q, fn).to(dtype)
    tiny = torch.finfo(dtype).tiny
    basis = torch.empty(iters, q.numel(), dtype=dtype, device=q.device)
    coefficients = torch.zeros(2, iters, dtype=dtype, device=q.device)  # alpha, beta
    basis[0] = q
    m = iters
    for j in range(iters):
        if j > 0:
            w = matvec(q).to(dtype)
        coefficients[0, j] = q @ w
        Q = basis[: j + 1]
        r = w - Q.T @ (Q @ w)  # full re-orthogonalisation (covers alpha q_j and beta q_{j-1})
        r = r - Q.T @ (Q @ r)  # twice is enough (Kahan, Parlett)
        beta = r.norm()
        coefficients[1, j] = beta
        if (j + 1) % every == 0 or j + 1 == iters:
            host = coefficients[:, : j + 1].to("cpu", torch.float64)  # the one host sync
            alpha_h, beta_h = host[0], host[1]
            scale = alpha_h.abs().cummax(0).values + 1e-30
            vanished = (beta_h <= 1e-10 * scale).nonzero()
            if len(vanished):  # an invariant subspace: the Ritz values are exact
                m = int(vanished[0]) + 1
                break
            if j + 1 == iters or (stop is not None and stop(alpha_h, beta_h)):
                m = j + 1
                break
        basis[j + 1] = r / beta.clamp_min(tiny)
        q = basis[j + 1]
    return coefficients[0, :m], coefficients[1, :m], basis[:m]


def ritz_pairs(alpha: torch.Tensor, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the eigenvalues (ascending) and eigenvectors of the tridiagonal matrix T with
    diagonal ``alpha`` (m,) and off-diagonals ``beta`` (m - 1,): the Ritz values of Lanczos and,
    as the squared first components of the eigenvectors, the weights of its quadrature rule.

    T is tiny (m is at most a few hundred), so it is decomposed on the CPU in float64 whatever
    the dtype and device of ``alpha`` (float16 has no ``eigh``, and a GPU would only wait);
    the results are float64 on the device of ``alpha``.
    """
    theta, s = _ritz_host(alpha, beta)
    return theta.to(alpha.device), s.to(alpha.device)


def _ritz_host(alpha, beta):
    alpha = alpha.detach().to("cpu", torch.float64)
    beta = beta.detach().to("cpu", torch.float64)
    T = torch.diag(alpha)
    if len(beta):
        T = T + torch.diag(beta, 1) + torch.diag(beta, -1)
    return torch.linalg.eigh(T)
