"""How far from its bounds a correct estimator's chi-square statistic stays (SmoothGrad drawing
its own noise, Hutchinson's trace): the calibration of the grader's statistical checks.

    python -m tools.estimator_tails --seeds 0-99 --repeats 20

For each grading seed, the check's own case is built (`smoothgrad_statistics_case`,
`hutchinson_case`) and the master's function is run ``--repeats`` times as the check runs it
(10 calls at 4 and 10 at 64 samples for SmoothGrad; 30 seeds at 4 and 30 at 64 samples for
Hutchinson); each statistic, divided by its degrees of freedom, must lie between the check's
bounds (chi-square quantiles at 1e-7 and 1 - 1e-7). Prints the range and quantiles of the
observed ratios beside the bounds, and the fraction outside (the false-failure rate per group).
"""

from __future__ import annotations

import argparse
import functools
import sys

import numpy as np
import torch
from scipy.stats import chi2

from .calibrate_grader import answer_namespace, parse_seeds


def _summary(name: str, ratios: list[float], low: float, high: float) -> str:
    r = np.array(ratios)
    outside = float(((r < low) | (r > high)).mean())
    q = np.quantile(r, [0.001, 0.5, 0.999])
    return (f"{name:<34} n={len(r):>5}  min {r.min():.3f}  q0.001 {q[0]:.3f}  median {q[1]:.3f}"
            f"  q0.999 {q[2]:.3f}  max {r.max():.3f}  bounds [{low:.3f}, {high:.3f}]  "
            f"outside {outside:.4f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0-99")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    from deepscope.grading import CaseContext, load_assignment
    from deepscope.grading.assignments import landscape, saliency
    from deepscope.grading.runner import check_seed

    torch.set_num_threads(1)
    seeds = parse_seeds(args.seeds)

    a1 = load_assignment("01_saliency")
    smoothgrad = answer_namespace(a1)["smoothgrad"]
    name = a1.question("smoothgrad").checks[1].name
    groups: dict[int, list[float]] = {4: [], 64: []}
    bounds = {}
    for seed in seeds:
        ctx = CaseContext(seed=check_seed(seed, "smoothgrad", name))
        model, x, t, sigma, mean, whiten, rank = saliency.smoothgrad_statistics_case(ctx)
        dof = 10 * rank
        bounds[dof] = (chi2.ppf(1e-7, dof) / dof, chi2.isf(1e-7, dof) / dof)
        for _ in range(args.repeats):
            for n in (4, 64):
                maps = torch.stack([smoothgrad(model, x, t, sigma=sigma, samples=n).reshape(-1)
                                    for _ in range(10)])
                stat = saliency.smoothgrad_statistic(maps, n, mean, whiten)
                groups[n].append(stat / dof)
    low = max(b[0] for b in bounds.values())   # the tightest bounds over the drawn ranks
    high = min(b[1] for b in bounds.values())
    for n, ratios in groups.items():
        print(_summary(f"smoothgrad, {n} samples", ratios, low, high), flush=True)

    a2 = load_assignment("02_loss_landscapes")
    hutchinson = answer_namespace(a2)["hutchinson_trace"]
    name = a2.question("hutchinson_trace").checks[1].name
    groups = {4: [], 64: []}
    low, high = chi2.ppf(1e-7, 30) / 30, chi2.isf(1e-7, 30) / 30
    rng = np.random.default_rng(0)
    for seed in seeds:
        ctx = CaseContext(seed=check_seed(seed, "hutchinson_trace", name))
        A, trace, variance = landscape.hutchinson_case(ctx)
        like = torch.zeros(A.shape[0], dtype=torch.float64)
        matvec = functools.partial(torch.mv, A)
        for _ in range(args.repeats):
            for n in (4, 64):
                estimates = [hutchinson(matvec, like, samples=n, seed=int(s))
                             for s in rng.integers(1, 2**31 - 1, 30)]
                groups[n].append(landscape.hutchinson_statistic(estimates, n, trace, variance)
                                 / 30)
    for n, ratios in groups.items():
        print(_summary(f"hutchinson_trace, {n} samples", ratios, low, high), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
