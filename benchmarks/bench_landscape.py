"""`deepscope.landscape` against the obvious alternatives.

- `slice_2d` on a 41 x 41 grid against a loop that loads each grid point into the module
  (``vector_to_parameters``) and evaluates it, the way most landscape code works. Twice: on the
  1,400 training digits (each point is a full forward pass: compute-bound on a CPU) and on 64
  digits (per-point overhead dominates: the regime a GPU is in for any data size).
- `top_eigenvalues` (Lanczos, default tolerance: <= 1e-4 relative error) against PyHessian's
  power iteration (its defaults: 100 iterations at most, 1e-3 relative change), on the same
  trained model and data. Skipped when PyHessian (extra ``oracle``) is not installed.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from . import Benchmark


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
    ours, loop = _slice_pair(model, x[:64], y[:64], grid)
    found.append(Benchmark("slice_2d 41x41, MLP 64-32-10, 64 digits", ours, loop,
                           reference_name="load-each-point loop", target=0.2, repeats=5))
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
