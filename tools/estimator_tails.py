"""How far from its bounds a correct estimator's chi-square statistic stays (SmoothGrad drawing
its own noise, Hutchinson's trace): the calibration of the grader's statistical checks.

    python -m tools.estimator_tails --seeds 0-99 --repeats 20

For each grading seed, the check's own case is built (`smoothgrad_statistics_case`,
`hutchinson_case`) and the master's function is run ``--repeats`` times as the check runs it
(10 calls at 4 and 10 at 64 samples for SmoothGrad; 30 seeds at 4 and 30 at 64 samples for
Hutchinson). Each statistic's tail probability under the check's own null law (the check fails
below its threshold on either side: 1e-9 for SmoothGrad, 1e-7 for Hutchinson) should be
uniform: prints the ratios statistic / mean, the smallest tail probability, the fraction below
1e-3 (0.002 expected) and below the threshold (the false-failure rate per group). For
SmoothGrad it also shows the plain chi-square law without the kurtosis term, which the first
version of the check used.
"""

from __future__ import annotations

import argparse
import functools
import sys

import numpy as np
import torch
from scipy.stats import chi2

from .calibrate_grader import answer_namespace, parse_seeds


def _summary(name: str, ratios: list[float], tails: list[float], fail_at: float) -> str:
    """Ratios (statistic / its mean) and the tail probability of each statistic under its own
    null law: under the null, P(tail < p) = 2 p; the check fails below ``fail_at``."""
    r, p = np.array(ratios), np.array(tails)
    q = np.quantile(r, [0.001, 0.5, 0.999])
    return (f"{name:<32} n={len(r):>5}  statistic/mean: min {r.min():.3f} q0.001 {q[0]:.3f} "
            f"median {q[1]:.3f} q0.999 {q[2]:.3f} max {r.max():.3f};  smallest tail probability "
            f"{p.min():.1e}; tails < 1e-3: {(p < 1e-3).mean():.4f} (null: 0.002); < {fail_at:g} "
            f"(fails): {(p < fail_at).mean():.4f}")


def _tail(cdf: float, sf: float) -> float:
    return float(min(cdf, sf))


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
    tails: dict[int, list[float]] = {4: [], 64: []}
    naive: dict[int, list[float]] = {4: [], 64: []}
    for seed in seeds:
        ctx = CaseContext(seed=check_seed(seed, "smoothgrad", name))
        model, x, t, sigma, mean, whiten, rank, fourth = saliency.smoothgrad_statistics_case(ctx)
        for _ in range(args.repeats):
            for n in (4, 64):
                maps = torch.stack([smoothgrad(model, x, t, sigma=sigma, samples=n).reshape(-1)
                                    for _ in range(10)])
                stat = saliency.smoothgrad_statistic(maps, n, mean, whiten)
                scale, dof = saliency.smoothgrad_null(rank, fourth, n, 10)
                groups[n].append(stat / (10 * rank))
                tails[n].append(_tail(chi2.cdf(stat / scale, dof), chi2.sf(stat / scale, dof)))
                naive[n].append(_tail(chi2.cdf(stat, 10 * rank), chi2.sf(stat, 10 * rank)))
    for n in (4, 64):
        print(_summary(f"smoothgrad, {n} samples", groups[n], tails[n], saliency._TAIL),
              flush=True)
        print(_summary("  (plain chi2, no kurtosis term)", groups[n], naive[n], saliency._TAIL),
              flush=True)

    a2 = load_assignment("02_loss_landscapes")
    hutchinson = answer_namespace(a2)["hutchinson_trace"]
    name = a2.question("hutchinson_trace").checks[1].name
    groups = {4: [], 64: []}
    tails = {4: [], 64: []}
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
                stat = landscape.hutchinson_statistic(estimates, n, trace, variance)
                groups[n].append(stat / 30)
                tails[n].append(_tail(chi2.cdf(stat, 30), chi2.sf(stat, 30)))
    for n in (4, 64):
        print(_summary(f"hutchinson_trace, {n} samples", groups[n], tails[n], landscape._TAIL),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
