"""Curvature of the loss at the model's parameters: Hessian-vector products, the top
eigenvalues, the trace and the spectral density of the Hessian, all without forming it.

The Hessian is that of L(theta) = mean loss over ``data`` with respect to the trainable
parameters, the model in eval mode (dropout off, batch norm with its running statistics).

- `hvp`: H v by double back-propagation (Pearlmutter 1994): H v = d/dtheta <grad L, v>.
- `top_eigenvalues`: Lanczos (default) or power iteration with deflation on v -> H v.
- `hessian_matrix`: the exact Hessian, for small models and tests.

Models as researchers have them: ``output=`` picks the tensor passed to ``loss_fn`` from dict or
tuple outputs; attention runs with the math kernel of scaled dot-product attention while
gradients are built (`math_attention`: the fused kernels have no double backward), so
``nn.Transformer*`` models work. Precision: products are computed in the model's dtype; the
solvers (Lanczos, power iteration, Ritz values) work in float32 for float16/bfloat16 models and
in float64 for float64 ones (`deepscope.landscape.linalg.work_dtype`), and eigenvalues come
back in float64. Random start vectors and probes are drawn on the model's device.

Parameters are never written: gradients are taken with respect to detached copies of the
weights passed through ``torch.func.functional_call``, so ``.grad`` and the weights of the
user's model are untouched, also when ``loss_fn`` raises.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

from .._checks import check_choice, check_float, check_int, check_module
from .._forward import check_output_adapter
from .._guards import eval_mode
from .._warnings import ConvergenceWarning
from ._core import (
    _frozen_state,
    as_point,
    as_vector,
    check_loss_fn,
    check_point,
    data_batches,
    loss_at,
    math_attention,
    on_device,
    trainable_parameters,
)
from .linalg import _lanczos, _ritz_host, power_iteration, work_dtype

__all__ = [
    "HessianOperator",
    "hessian_operator",
    "loss_gradient",
    "hvp",
    "hessian_matrix",
    "top_eigenvalues",
]


class HessianOperator:
    """The map v -> H v for the Hessian of the loss at the model's current parameters.

    With ``data`` a single pair ``(x, y)`` the gradient's graph is built once and every product
    is one backward pass through it (``create_graph`` + ``retain_graph``); with an iterable of
    batches each product runs forward and double-backward per batch and averages (weighted by
    batch size); those batches stay where they are and move to the device one at a time
    (streamed, never all at once). Vectors are flat, shape (P,), in the order of the model's
    trainable parameters (`as_vector` / `as_point` convert).

    Attributes: ``dim`` (P), ``dtype`` (the model's: products are computed in it),
    ``work_dtype`` (what the solvers use: float32 for float16/bfloat16), ``device``,
    ``params`` (the point, a dict), ``calls`` (the number of products computed so far).
    """

    def __init__(self, model: nn.Module, loss_fn: Callable, data, *, fn: str = "hessian_operator",
                 output=None):
        check_module(model, fn)
        self.loss_fn = check_loss_fn(loss_fn, fn)
        self.output = check_output_adapter(output, fn)
        self.fn = fn
        self.model = model
        self.params = trainable_parameters(model)
        first = next(iter(self.params.values()))
        self.dim = sum(p.numel() for p in self.params.values())
        self.dtype, self.device = first.dtype, first.device
        self.work_dtype = work_dtype(self.dtype)
        batches = data_batches(data, fn, None)
        self.batches = [on_device(batches[0], self.device)] if len(batches) == 1 else batches
        self.frozen = _frozen_state(model)
        self.calls = 0
        self._graph = self._gradient_graph(self.batches) if len(self.batches) == 1 else None

    def _gradient_graph(self, batches):
        leaves = {n: p.detach().requires_grad_(True) for n, p in self.params.items()}
        with torch.enable_grad(), eval_mode(self.model), math_attention():
            loss = loss_at(self.model, leaves, self.frozen, self.loss_fn, batches,
                           output=self.output, fn=self.fn)
            grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=True)
        return list(leaves.values()), grads, loss.detach()

    def _views(self, v: torch.Tensor):
        out, offset = [], 0
        for p in self.params.values():
            n = p.numel()
            out.append(v[..., offset : offset + n].reshape(*v.shape[:-1], *p.shape))
            offset += n
        return out

    def _product(self, graph, v, batched):
        leaves, grads, _ = graph
        views = self._views(v)
        live = [i for i, g in enumerate(grads) if g.requires_grad]  # others: constant gradient
        hv = [None] * len(leaves)
        if live:
            with math_attention():
                parts = torch.autograd.grad([grads[i] for i in live], leaves,
                                            grad_outputs=[views[i] for i in live],
                                            retain_graph=True, is_grads_batched=batched,
                                            allow_unused=True)
            hv = list(parts)
        return torch.cat([(torch.zeros_like(view) if h is None else h).reshape(*v.shape[:-1], -1)
                          for h, view in zip(hv, views)], dim=-1)

    def _apply(self, v: torch.Tensor, batched: bool) -> torch.Tensor:
        if v.shape[-1] != self.dim:
            raise ValueError(f"hessian_operator: vectors must have {self.dim} entries (the "
                             f"trainable parameters), got shape {tuple(v.shape)}")
        v = v.to(device=self.device, dtype=self.dtype, non_blocking=self.device.type != "cpu")
        self.calls += v.shape[0] if batched else 1
        if self._graph is not None:
            return self._product(self._graph, v, batched)
        total = sum(len(x) for x, _ in self.batches)
        out = 0
        for batch in self.batches:
            out = out + self._product(self._gradient_graph([batch]), v, batched) * (
                len(batch[0]) / total)
        return out

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        """Return H v for v of shape (P,)."""
        return self._apply(v, batched=False)

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """Return (H V^T)^T for V of shape (M, P), M products in one batched backward pass."""
        return self._apply(V, batched=True)

    def gradient(self) -> torch.Tensor:
        """Return the gradient of the loss, flat (P,)."""
        if self._graph is not None:
            return torch.cat([g.detach().reshape(-1) for g in self._graph[1]])
        total = sum(len(x) for x, _ in self.batches)
        return sum(torch.cat([g.detach().reshape(-1) for g in self._gradient_graph([b])[1]])
                   * (len(b[0]) / total) for b in self.batches)


def hessian_operator(model: nn.Module, loss_fn: Callable, data, *,
                     output=None) -> HessianOperator:
    """Return the Hessian of the loss as a matrix-free operator v (P,) -> H v (P,).

    Use it with `power_iteration` / `lanczos`, or call `HessianOperator.matmat` for many
    vectors. See `HessianOperator`; ``output`` as in `hvp`.
    """
    return HessianOperator(model, loss_fn, data, output=output)


def loss_gradient(model: nn.Module, loss_fn: Callable, data, *, output=None) -> torch.Tensor:
    """Return the gradient of the mean loss with respect to the trainable parameters, flat (P,).

    The model's ``.grad`` fields are not touched. Use `as_point` for a dict.
    """
    return HessianOperator(model, loss_fn, data, fn="loss_gradient", output=output).gradient()


def hvp(model: nn.Module, loss_fn: Callable, data, v, *, output=None):
    """Return the Hessian-vector product H v (Pearlmutter 1994) at the model's parameters.

    Args:
        model, loss_fn, data: the loss L(theta) = mean of ``loss_fn(model(x), y)``.
        v: a flat vector (P,) or a dict name -> tensor with the trainable parameters' shapes.
        output: picks the tensor passed to ``loss_fn`` from a model returning a dict, a tuple
            or an object: a key, an index or a function (`deepscope._forward`); None passes the
            outputs as they are.

    Returns:
        H v in the form of ``v`` (a flat (P,) tensor or a dict), in the model's dtype.
    """
    fn = "hvp"
    op = HessianOperator(model, loss_fn, data, fn=fn, output=output)
    if isinstance(v, torch.Tensor):
        if v.shape != (op.dim,):
            raise ValueError(f"{fn}: `v` must have shape ({op.dim},) (the trainable "
                             f"parameters), got {tuple(v.shape)}")
        return op(v)
    point = check_point(v, op.params, "v", fn)
    return {n: t.clone() for n, t in as_point(op.params, op(as_vector(point))).items()}


def hessian_matrix(model: nn.Module, loss_fn: Callable, data, *, batch_size: int = 64,
                   max_params: int = 5000, output=None) -> torch.Tensor:
    """Return the exact Hessian (P, P), one Hessian-vector product per basis vector.

    Args:
        model, loss_fn, data: the loss.
        batch_size: basis vectors per batched backward pass.
        max_params: refuse models larger than this (the matrix has P^2 entries).
        output: the output adapter, as in `hvp`.
    """
    fn = "hessian_matrix"
    op = HessianOperator(model, loss_fn, data, fn=fn, output=output)
    max_params = check_int(max_params, "max_params", fn)
    if op.dim > max_params:
        raise ValueError(f"{fn}: the model has {op.dim} trainable parameters, more than "
                         f"`max_params` = {max_params}; use top_eigenvalues, hessian_trace or "
                         "spectral_density, which never form the matrix")
    batch_size = check_int(batch_size, "batch_size", fn)
    eye = torch.eye(op.dim, dtype=op.dtype, device=op.device)
    H = torch.cat([op.matmat(chunk) for chunk in eye.split(batch_size)])
    return (H + H.T) / 2  # symmetric up to rounding; make it exactly so for eigvalsh


def device_generator(device, seed, fn: str) -> torch.Generator:
    """Return a generator on ``device`` seeded with ``seed`` (None: a fresh random seed), so
    random vectors are drawn where they are used, never on the host and copied over."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(check_int(seed, "seed", fn, minimum=0))
    return generator


def _start_vector(op: HessianOperator, seed, fn: str, rademacher=False) -> torch.Tensor:
    """Draw a Gaussian (or Rademacher) start vector (P,) on the model's device, in the dtype
    the solvers work in (float32 for float16/bfloat16 models, else the model's)."""
    generator = device_generator(op.device, seed, fn)
    if rademacher:
        return torch.randint(0, 2, (op.dim,), generator=generator, device=op.device,
                             dtype=op.work_dtype) * 2 - 1
    return torch.randn(op.dim, generator=generator, device=op.device, dtype=op.work_dtype)


def top_eigenvalues(
    model: nn.Module,
    loss_fn: Callable,
    data,
    k: int = 1,
    *,
    method: str = "lanczos",
    max_iter: int | None = None,
    tol: float = 1e-4,
    seed: int | None = 0,
    v0: torch.Tensor | None = None,
    return_vectors: bool = False,
    output=None,
    check_every: int | None = None,
):
    """Return the k largest eigenvalues of the Hessian of the loss.

    ``method="lanczos"`` (default): Lanczos with full re-orthogonalisation, started from the
    normalised gradient plus a normalised Gaussian vector, stopped when each of the k largest
    Ritz pairs (theta_i, u_i) has residual ||H u_i - theta_i u_i|| = |beta_m s_{m,i}| <= tol *
    |theta_i|. The residual bounds the distance to an eigenvalue, so with the default ``tol``
    the relative error is <= 1e-4 (in practice far smaller: the error of a Ritz value is about
    residual^2 / gap). Largest means largest *algebraic* value.

    ``method="power"``: power iteration with deflation (`power_iteration`, as PyHessian does);
    stops when the eigenvalue changes by less than ``tol`` relative; finds the eigenvalues of
    largest *magnitude* (the same near a minimum, where negative ones are small).

    Either method warns with `deepscope.ConvergenceWarning` when it stops at ``max_iter``
    without meeting ``tol`` (the values returned are then estimates of unknown accuracy).

    Precision: products are computed in the model's dtype, everything else in float32 for a
    float16/bfloat16 model (float64 for a float64 one) and the Ritz values in float64. The
    rounding of half-precision products limits the attainable residual to about the dtype's
    resolution (2**-8 for bfloat16): ask for ``tol`` above it.

    Args:
        model, loss_fn, data: the loss L(theta) = mean of ``loss_fn(model(x), y)``.
        k: number of eigenvalues.
        method: ``"lanczos"`` or ``"power"``.
        max_iter: Lanczos steps (default min(P, 100 + 4 k)), or power iterations per eigenpair
            (default 1000).
        tol: the stopping tolerance described above.
        seed: seed of the Gaussian part of the start vector (None: random); drawn on the
            model's device.
        v0: a start vector (P,) instead (e.g. the top eigenvector at a nearby point: a warm
            start converges in a few steps).
        return_vectors: also return the unit eigenvectors.
        output: picks the tensor passed to ``loss_fn`` from dict/tuple outputs (see `hvp`).
        check_every: steps between convergence tests, the only host syncs (None: every step on
            the CPU, every 8 on an accelerator; see `linalg.default_check_every`).

    Returns:
        Eigenvalues (k,) in decreasing order, float64 on the CPU; with ``return_vectors`` also
        the eigenvectors (k, P), flat, on the model's device in the solvers' dtype (`as_point`
        turns one into a dict).
    """
    fn = "top_eigenvalues"
    check_choice(method, "method", fn, ("lanczos", "power"))
    op = HessianOperator(model, loss_fn, data, fn=fn, output=output)
    k = check_int(k, "k", fn)
    if k > op.dim:
        raise ValueError(f"{fn}: `k` must be <= the number of trainable parameters {op.dim}, "
                         f"got {k}")
    tol = check_float(tol, "tol", fn, positive=True)
    if check_every is not None:
        check_every = check_int(check_every, "check_every", fn)
    if v0 is None:
        # Start from the gradient plus a random vector of the same norm: after a short warm-up
        # the gradient lies mostly in the top eigenspace (Gur-Ari et al. 2018), which saves a
        # few products; the random half keeps every direction present.
        noise = _start_vector(op, seed, fn)
        gradient = op.gradient().to(op.work_dtype)
        norm = gradient.norm()
        v0 = noise / noise.norm() + (gradient / norm if float(norm) > 0 else 0)
    elif not isinstance(v0, torch.Tensor) or v0.shape != (op.dim,):
        got = tuple(v0.shape) if isinstance(v0, torch.Tensor) else type(v0).__name__
        raise ValueError(f"{fn}: `v0` must be a vector of shape ({op.dim},), got {got}")
    else:
        v0 = v0.detach().to(device=op.device, dtype=op.work_dtype)
    if method == "power":
        iters = check_int(max_iter, "max_iter", fn) if max_iter is not None else 1000
        values, vectors = power_iteration(op, v0, k=k, max_iter=iters, tol=tol,
                                          check_every=check_every)  # warns when it stops short
        order = values.argsort(descending=True)
        values, vectors = values[order], vectors[order]
    else:
        iters = check_int(max_iter, "max_iter", fn) if max_iter is not None else 100 + 4 * k
        iters = min(iters, op.dim)

        def residuals(alpha, beta):
            """Return the top-k Ritz values and |beta_m s_{m,i}| (float64, CPU)."""
            theta, s = _ritz_host(alpha, beta[:-1])
            return theta[-k:], (beta[-1] * s[-1, -k:]).abs()

        def converged(alpha, beta):
            if len(alpha) < k + 1:
                return False
            theta, residual = residuals(alpha, beta)
            return bool((residual <= tol * theta.abs()).all())

        alpha, beta, Q = _lanczos(op, v0, iters, stop=converged, check_every=check_every,
                                  fn=fn)
        if len(alpha) < k:
            raise ValueError(f"{fn}: the Krylov space has dimension {len(alpha)} < k = {k} "
                             "(the Hessian has fewer distinct eigenvalues); use a smaller k")
        alpha_h, beta_h = alpha.to("cpu", torch.float64), beta.to("cpu", torch.float64)
        theta_k, residual = residuals(alpha_h, beta_h)
        exhausted = len(alpha) == op.dim  # the whole space: the Ritz values are exact
        if not exhausted and not bool((residual <= tol * theta_k.abs()).all()):
            worst = float((residual / theta_k.abs().clamp_min(1e-300)).max())
            warnings.warn(f"{fn}: Lanczos stopped after max_iter = {len(alpha)} steps with a "
                          f"relative residual of {worst:.2g} > tol = {tol:g}; the eigenvalues "
                          "may be inaccurate (raise max_iter or tol)", ConvergenceWarning,
                          stacklevel=2)
        theta, s = _ritz_host(alpha_h, beta_h[:-1])
        values = theta.flip(0)[:k]
        vectors = None
        if return_vectors:
            vectors = s.flip(1)[:, :k].T.to(device=Q.device, dtype=Q.dtype) @ Q
    values = values.detach().to("cpu", torch.float64)
    if return_vectors:
        vectors = vectors / vectors.norm(dim=1, keepdim=True)
        return values, vectors.detach()
    return values
