"""Measure a scaling law of your own: a synthetic language with known entropy, tiny models, and a
sweep runner that trains them over sizes and token counts and records (N, D, C, loss).

The language is a random first-order Markov chain over ``V`` tokens. Its entropy rate
H = -sum_i pi_i sum_j P_ij log P_ij (pi the stationary distribution) is the best loss any model
can reach: the irreducible term E of the law is known exactly. The logit matrix log P is built
with singular values decaying as k^-decay, so a model whose bottleneck has width w (rank w) misses
a tail of the spectrum that shrinks as a power of w: a finite model pays a power-law penalty.
Training is single-epoch on fresh samples with a cosine schedule matched to each run's length, as
Hoffmann et al. (2022) did; compute is C = 6 N D. Test loss is the exact expected cross-entropy
under the chain (no sampling noise): sum_i pi_i sum_j P_ij (-log q_j|i).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .. import models, train
from .._checks import check_finite, check_float, check_int, check_module, check_tensor, model_device
from .._guards import eval_mode
from .chinchilla import FLOP_PER_PARAMETER_TOKEN
from .schedules import lr_schedule, scheduled_adam

__all__ = [
    "MarkovChain", "OneHot", "markov_chain", "sample_pairs", "markov_loss", "bigram_mlp",
    "isoflop_configs", "run_sweep", "markov_sweep",
]


class MarkovChain(NamedTuple):
    """A first-order Markov chain: transitions P (V, V), stationary pi (V,), entropy rate (nats)."""

    transition: torch.Tensor
    stationary: torch.Tensor
    entropy_rate: float


class OneHot(nn.Module):
    """Map token ids (B,) to one-hot float vectors (B, V)."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(tokens, self.vocab_size).float()

    def extra_repr(self) -> str:
        return f"vocab_size={self.vocab_size}"


def markov_chain(
    vocab_size: int = 64, *, sharpness: float = 2.0, decay: float = 1.0, seed: int = 0
) -> MarkovChain:
    """Build a random Markov chain whose logits have a power-law singular spectrum.

    Logits Z = U diag(s) W^T with U, W random orthogonal (V, V) and s_k proportional to
    k^-decay, scaled so that the entries of Z have root-mean-square ``sharpness``;
    P = softmax(Z) row-wise. Larger ``sharpness`` means a lower entropy rate.

    Returns:
        `MarkovChain` (float64 tensors; the entropy rate in nats per token).
    """
    fn = "markov_chain"
    V = check_int(vocab_size, "vocab_size", fn, minimum=2)
    sharpness = check_float(sharpness, "sharpness", fn, positive=True)
    decay = check_float(decay, "decay", fn, nonnegative=True)
    g = torch.Generator().manual_seed(check_int(seed, "seed", fn, minimum=0))
    U, _ = torch.linalg.qr(torch.randn(V, V, generator=g, dtype=torch.float64))
    W, _ = torch.linalg.qr(torch.randn(V, V, generator=g, dtype=torch.float64))
    s = torch.arange(1, V + 1, dtype=torch.float64) ** -decay
    s = s * (sharpness * V / s.norm())  # ||Z||_F = ||s||, so RMS(Z) = ||s|| / V = sharpness
    P = torch.softmax((U * s) @ W.T, dim=1)
    # stationary distribution: solve pi (P - I) = 0 with sum(pi) = 1 (unique: P > 0 entrywise)
    system = (P - torch.eye(V, dtype=torch.float64)).T
    system[-1] = 1.0
    rhs = torch.zeros(V, dtype=torch.float64)
    rhs[-1] = 1.0
    pi = torch.linalg.solve(system, rhs)
    H = float(-(pi[:, None] * P * torch.log(P)).sum())
    return MarkovChain(P, pi, H)


def sample_pairs(chain: MarkovChain, n: int, *, seed: int = 0, device=None, chunk: int = 1 << 15):
    """Draw ``n`` independent (token, next token) pairs from the chain in its stationary regime:
    x ~ pi, y ~ P[x]. Returns long tensors x, y of shape (n,) on ``device``."""
    n = check_int(n, "n", "sample_pairs")
    g = torch.Generator().manual_seed(seed)
    x = torch.multinomial(chain.stationary, n, replacement=True, generator=g)
    cdf = chain.transition.cumsum(1)
    V = cdf.shape[0]
    y = torch.empty_like(x)
    for start in range(0, n, chunk):  # inverse-CDF sampling, memory bounded by chunk * V
        xs = x[start : start + chunk]
        u = torch.rand(len(xs), 1, generator=g, dtype=cdf.dtype)
        y[start : start + chunk] = (cdf[xs] < u).sum(1).clamp(max=V - 1)
    return x.to(device), y.to(device)


@torch.no_grad()
def markov_loss(model: nn.Module, chain: MarkovChain) -> float:
    """Return the exact expected next-token cross-entropy of ``model`` on the chain, in nats:
    sum_i pi_i sum_j P_ij (-log softmax(model(i))_j). ``model`` maps token ids (V,) to logits
    (V, V). Its train/eval mode is restored."""
    fn = "markov_loss"
    check_module(model, fn)
    if not isinstance(chain, MarkovChain):
        raise TypeError(f"{fn}: `chain` must be a MarkovChain (from markov_chain), got "
                        f"{type(chain).__name__}")
    check_tensor(chain.transition, "chain.transition", fn, ndim=2, like="(V, V)")
    V = chain.transition.shape[0]
    if chain.transition.shape != (V, V) or tuple(chain.stationary.shape) != (V,):
        raise ValueError(f"{fn}: `chain` must have a transition matrix (V, V) and a stationary "
                         f"distribution (V,), got {tuple(chain.transition.shape)} and "
                         f"{tuple(chain.stationary.shape)}")
    check_finite(chain.transition, "chain.transition", fn)
    check_finite(chain.stationary, "chain.stationary", fn)
    device = model_device(model)
    with eval_mode(model):
        logits = model(torch.arange(V, device=device))
    if logits.shape != (V, V):
        raise ValueError(f"{fn}: `model` must map token ids ({V},) to logits ({V}, {V}), got "
                         f"{tuple(logits.shape)}")
    log_q = torch.log_softmax(logits.double(), dim=1)
    P, pi = chain.transition.to(device), chain.stationary.to(device)
    return float(-(pi[:, None] * P * log_q).sum())


def bigram_mlp(vocab_size: int, width: int, *, depth: int = 1, activation: str = "gelu"):
    """Build a next-token model of the previous token: one-hot, then `deepscope.models.mlp` with
    ``depth`` hidden layers of ``width`` (the bottleneck: its logit matrix has rank <= width+1).
    Maps token ids (B,) to logits (B, vocab_size)."""
    V = check_int(vocab_size, "vocab_size", "bigram_mlp", minimum=2)
    depth = check_int(depth, "depth", "bigram_mlp")
    body = models.mlp(V, (check_int(width, "width", "bigram_mlp"),) * depth, V,
                      activation=activation)
    return nn.Sequential(OrderedDict(onehot=OneHot(V), mlp=body))


def isoflop_configs(
    sizes: Sequence, budgets: Sequence[float], n_params: Callable[[object], int], *,
    min_tokens: int = 1, max_tokens: int | None = None,
) -> list[tuple]:
    """Return IsoFLOP runs: for each budget C and size s, (s, D) with D = round(C / (6 N(s)))
    tokens; runs with D outside [``min_tokens``, ``max_tokens``] are skipped (a band around the
    optimum, as Hoffmann et al. trained ~9 sizes per budget). ``n_params(size)`` gives N."""
    fn = "isoflop_configs"
    min_tokens = check_int(min_tokens, "min_tokens", fn)
    if max_tokens is not None and check_int(max_tokens, "max_tokens", fn) < min_tokens:
        raise ValueError(f"{fn}: `max_tokens` must be >= `min_tokens` ({min_tokens}), "
                         f"got {max_tokens}")
    if not len(sizes) or not len(budgets):
        raise ValueError(f"{fn}: `sizes` and `budgets` must not be empty")
    configs = []
    for C in budgets:
        C = check_float(C, "budgets", fn, positive=True)
        for size in sizes:
            D = round(C / (FLOP_PER_PARAMETER_TOKEN * n_params(size)))
            if D >= min_tokens and (max_tokens is None or D <= max_tokens):
                configs.append((size, D))
    return configs


def run_sweep(
    configs: Sequence[tuple],
    build_model: Callable[[object], nn.Module],
    sample: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]],
    evaluate: Callable[[nn.Module], float],
    *,
    lr: float = 0.1,
    batch_size: int = 256,
    warmup_frac: float = 0.05,
    seed: int = 0,
    device=None,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Train one fresh model per config (size, tokens) for a single epoch on ``tokens`` fresh
    samples, Adam with warm-up and a cosine decay to 0 over the run; record its loss.

    Args:
        configs: sequence of (size, D) pairs, e.g. from `isoflop_configs`.
        build_model: size -> a new ``nn.Module`` (built after ``torch.manual_seed(seed)``, so
            every run of a size starts from the same weights).
        sample: (n, seed) -> (x, y) training data of n examples (tokens).
        evaluate: trained model -> test loss (e.g. `markov_loss`).
        lr, batch_size, warmup_frac: optimisation (peak rate, minibatch, warm-up fraction).
        seed: seed of the weights, the data and the shuffling.
        device: where to train (default: CPU); data are moved there once.
        progress: show a progress bar over the runs.

    Returns:
        Dict of arrays of shape (len(configs),): ``size``, ``N`` (parameters), ``D`` (tokens),
        ``C`` = 6 N D, ``loss``, ``seconds`` (training time).
    """
    fn = "run_sweep"
    if not len(configs):
        raise ValueError(f"{fn}: `configs` must hold at least one (size, tokens) pair")
    batch_size = check_int(batch_size, "batch_size", fn)
    warmup_frac = check_float(warmup_frac, "warmup_frac", fn, nonnegative=True)
    if warmup_frac >= 1:
        raise ValueError(f"{fn}: `warmup_frac` must be < 1, got {warmup_frac}")
    rows = {k: [] for k in ("size", "N", "D", "C", "loss", "seconds")}
    bar = tqdm(configs, desc=fn, disable=not progress, leave=False)
    for config in bar:
        if len(config) != 2:
            raise ValueError(f"{fn}: each config must be a pair (size, tokens), got {config!r}")
        size, D = config[0], check_int(config[1], "tokens", fn)
        torch.manual_seed(seed)
        model = check_module(build_model(size), fn, "build_model(size)").to(device)
        N = sum(p.numel() for p in model.parameters() if p.requires_grad)
        x, y = sample(D, seed + 1)
        steps = math.ceil(D / batch_size)
        schedule = lr_schedule("cosine", steps, warmup=min(steps - 1, round(warmup_frac * steps)))
        start = time.perf_counter()
        train.fit(model, (x, y), epochs=1, batch_size=batch_size, seed=seed, progress=False,
                  optimizer=scheduled_adam(lr, schedule))
        seconds = time.perf_counter() - start
        loss = float(evaluate(model))
        for key, value in zip(rows, (size, N, D, FLOP_PER_PARAMETER_TOKEN * N * D, loss,
                                     seconds)):
            rows[key].append(value)
        bar.set_postfix(size=size, D=D, loss=f"{loss:.4f}")
    return {k: np.asarray(v) for k, v in rows.items()}


def markov_sweep(chain: MarkovChain, configs: Sequence[tuple], *, depth: int = 1,
                 **sweep_kwargs) -> dict[str, np.ndarray]:
    """Run `run_sweep` on a Markov chain: `bigram_mlp` of width ``size``, fresh `sample_pairs`,
    exact `markov_loss`. Returns its dict of arrays (size = width)."""
    V = chain.transition.shape[0]
    device = sweep_kwargs.get("device")
    return run_sweep(
        configs,
        lambda width: bigram_mlp(V, width, depth=depth),
        lambda n, seed: sample_pairs(chain, n, seed=seed, device=device),
        lambda model: markov_loss(model, chain),
        **sweep_kwargs,
    )
