"""`deepscope.landscape` against the obvious alternatives.

- `slice_2d` on a 41 x 41 grid against a loop that loads each grid point into the module
  (``vector_to_parameters``) and evaluates it, the way most landscape code works. Twice: on the
  1,400 training digits (each point is a full forward pass: compute-bound on a CPU) and on 64
  digits (per-point overhead dominates: the regime a GPU is in for any data size).
- `slice_2d` against the compute limit: the matmul FLOPs that `slice_2d` itself performs
  (counted once with ``torch.utils.flop_counter.FlopCounterMode``: 1.98 GFLOP on the 1,400
  digits, where the first-layer shortcut leaves 416 of the 2,368 multiply-adds per sample and
  point; the load-each-point loop does 11.1 GFLOP), done as 256 x 256 float32 matmuls, which run
  at this machine's matmul rate, measured in the same run. A ratio near 1 means the slice is
  as fast as its arithmetic allows; the rest is the per-point overhead (activations, the loss).
- `top_eigenvalues` (Lanczos, default tolerance: <= 1e-4 relative error) against PyHessian's
  power iteration (its defaults: 100 iterations at most, 1e-3 relative change), on the same
  trained model and data. Skipped when PyHessian (extra ``oracle``) is not installed.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch.nn.utils import parameters_to_vector, vector_to_parameters
from torch.utils.flop_counter import FlopCounterMode

from . import Benchmark

#: Side of the square float32 matmuls that measure the machine's matmul rate.
PEAK_SIZE = 256


def compute_limit(work):
    """Return ``(limit, flops)``: ``flops`` is the matmul FLOPs of ``work()`` (counted once by
    ``FlopCounterMode``), and ``limit()`` does as many FLOPs in PEAK_SIZE-square float32
    matmuls, so its time is that work at the machine's measured matmul rate."""
    with FlopCounterMode(display=False) as counter:
        work()
    flops = counter.get_total_flops()
    a, b = torch.randn(PEAK_SIZE, PEAK_SIZE), torch.randn(PEAK_SIZE, PEAK_SIZE)
    reps = max(1, round(flops / (2 * PEAK_SIZE**3)))

    def limit():
        for _ in range(reps):
            torch.mm(a, b)

    return limit, flops


def _slice_pair(model, x, y, grid):
    from deepscope import landscape

    d1 = landscape.random_direction(model, 0)
    d2 = landscape.random_direction(model, 1)

    def ours():
        return landscape.slice_2d(model, d1, d2, F.cross_entropy, (x, y), grid, grid,
                                  progress=False)

    def loop():
        params = list(model.parameters())
        theta = parameters_to_vector(params).detach().clone()
        v1, v2 = landscape.as_vector(d1), landscape.as_vector(d2)
        losses = torch.empty(len(grid), len(grid))
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for i, b in enumerate(grid):
                    for j, a in enumerate(grid):
                        vector_to_parameters(theta + a * v1 + b * v2, params)
                        losses[i, j] = F.cross_entropy(model(x), y)
        finally:
            with torch.no_grad():
                vector_to_parameters(theta, params)
            model.train(was_training)
        return losses

    return ours, loop


def benchmarks() -> list[Benchmark]:
    from deepscope import data, landscape, models, train

    x, y = data.digits("train")
    torch.manual_seed(0)
    model = models.mlp(64, (32,), 10)
    train.fit(model, (x, y), epochs=30, lr=3e-3, seed=0, progress=False)
    grid = torch.linspace(-1, 1, 41)
    found = []
    ours, loop = _slice_pair(model, x, y, grid)
    found.append(Benchmark("slice_2d 41x41, MLP 64-32-10, 1400 digits", ours, loop,
                           reference_name="load-each-point loop", target=0.2, repeats=3))
    limit, flops = compute_limit(ours)
    found.append(Benchmark(f"slice_2d 1400 digits ({flops / 1e9:.2f} GFLOP)", ours, limit,
                           reference_name="its FLOPs at peak", repeats=3))
    ours, loop = _slice_pair(model, x[:64], y[:64], grid)
    found.append(Benchmark("slice_2d 41x41, MLP 64-32-10, 64 digits", ours, loop,
                           reference_name="load-each-point loop", target=0.2, repeats=5))
    limit, flops = compute_limit(ours)
    found.append(Benchmark(f"slice_2d 64 digits ({flops / 1e9:.2f} GFLOP)", ours, limit,
                           reference_name="its FLOPs at peak", repeats=5))
    try:
        from pyhessian import hessian
    except ImportError:  # the oracle extra is not installed
        return found
    reference_model = copy.deepcopy(model)

    def ours_top():
        return landscape.top_eigenvalues(model, F.cross_entropy, (x, y), k=1, seed=None)

    def pyhessian_top():
        reference_model.zero_grad(set_to_none=True)
        return hessian(reference_model, F.cross_entropy, data=(x, y), cuda=False).eigenvalues(
            top_n=1)[0]

    found.append(Benchmark("top_eigenvalues k=1, MLP 64-32-10, 1400 digits", ours_top,
                           pyhessian_top, reference_name="PyHessian eigenvalues", target=1.0,
                           repeats=9))
    return found
