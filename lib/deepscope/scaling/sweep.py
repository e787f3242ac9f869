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

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from .. import models, train
from .._checks import check_float, check_int, check_module, model_device
from .._guards import eval_mode
from .chinchilla import FLOP_PER_PARAMETER_TOKEN
from .runner import INIT_LOCK, run_sweep
from .schedules import lr_schedule, scheduled_adam

__all__ = [
    "MarkovChain", "OneHot", "markov_chain", "sample_pairs", "markov_loss", "bigram_mlp",
    "isoflop_configs", "TrainSpec", "MarkovSpec", "train_run", "markov_run", "markov_sweep",
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
    device = model_device(model)
    V = chain.transition.shape[0]
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
    min_tokens: int = 1, max_tokens: int | None = None, per_budget: int | None = None,
    centre: Callable[[float], float] | None = None,
) -> list[tuple]:
    """Return IsoFLOP runs: for each budget C and size s, (s, D) with D = round(C / (6 N(s)))
    tokens, in budget order. ``n_params(size)`` gives N.

    Two ways to choose each budget's sizes (Hoffmann et al. 2022 trained ~9 per budget around
    the optimum): keep the sizes whose D lies in [``min_tokens``, ``max_tokens``] (a token
    band); and/or, with ``per_budget`` and ``centre`` (C -> the expected optimal N, e.g. from a
    pilot sweep), keep the ``per_budget`` sizes whose N is nearest to centre(C) in log.
    """
    fn = "isoflop_configs"
    min_tokens = check_int(min_tokens, "min_tokens", fn)
    if max_tokens is not None and check_int(max_tokens, "max_tokens", fn) < min_tokens:
        raise ValueError(f"{fn}: `max_tokens` must be >= `min_tokens` ({min_tokens}), "
                         f"got {max_tokens}")
    if not len(sizes) or not len(budgets):
        raise ValueError(f"{fn}: `sizes` and `budgets` must not be empty")
    if (per_budget is None) != (centre is None):
        raise ValueError(f"{fn}: give `per_budget` and `centre` together, got "
                         f"per_budget={per_budget!r}, centre={centre!r}")
    if per_budget is not None:
        per_budget = check_int(per_budget, "per_budget", fn)
    configs = []
    for C in budgets:
        C = check_float(C, "budgets", fn, positive=True)
        chosen = list(sizes)
        if per_budget is not None:
            target = math.log(check_float(centre(C), "centre(C)", fn, positive=True))
            nearest = sorted(chosen, key=lambda s: abs(math.log(n_params(s)) - target))
            keep = set(map(id, nearest[:per_budget]))
            chosen = [s for s in chosen if id(s) in keep]
        for size in chosen:
            D = round(C / (FLOP_PER_PARAMETER_TOKEN * n_params(size)))
            if D >= min_tokens and (max_tokens is None or D <= max_tokens):
                configs.append((size, D))
    return configs


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    """What every run of a sweep of your own models shares (`train_run`).

    ``build_model(size) -> nn.Module``, ``sample(n, seed) -> (x, y)`` (n fresh examples) and
    ``evaluate(model) -> float`` (test loss); with a process or Dask executor they must be
    picklable: module-level functions or `functools.partial` of them, not lambdas.
    ``lr``, ``batch_size``, ``warmup_frac``: Adam's peak rate, minibatch and warm-up fraction of
    the cosine schedule; ``seed``: of the weights (each size starts from the same draw), the
    data and the shuffling; ``device``: where to train ("cpu", "cuda", ...; None: CPU)."""

    build_model: Callable
    sample: Callable
    evaluate: Callable
    lr: float = 0.1
    batch_size: int = 256
    warmup_frac: float = 0.05
    seed: int = 0
    device: str | None = None

    def __post_init__(self):
        _check_optimisation(self.lr, self.batch_size, self.warmup_frac, self.seed,
                            type(self).__name__)


@dataclasses.dataclass(frozen=True)
class MarkovSpec:
    """What every run of a Markov-chain sweep shares (`markov_run`): the chain, the depth of the
    `bigram_mlp`, and the optimisation (as in `TrainSpec`)."""

    chain: MarkovChain
    depth: int = 1
    lr: float = 0.1
    batch_size: int = 256
    warmup_frac: float = 0.05
    seed: int = 0
    device: str | None = None

    def __post_init__(self):
        name = type(self).__name__
        if not isinstance(self.chain, MarkovChain):
            raise TypeError(f"{name}: `chain` must be a MarkovChain (from `markov_chain`), got "
                            f"{type(self.chain).__name__}")
        check_int(self.depth, "depth", name)
        _check_optimisation(self.lr, self.batch_size, self.warmup_frac, self.seed, name)


def _check_optimisation(lr, batch_size, warmup_frac, seed, fn):
    check_float(lr, "lr", fn, positive=True)
    check_int(batch_size, "batch_size", fn)
    check_int(seed, "seed", fn, minimum=0)
    warmup_frac = check_float(warmup_frac, "warmup_frac", fn, nonnegative=True)
    if warmup_frac >= 1:
        raise ValueError(f"{fn}: `warmup_frac` must be < 1, got {warmup_frac}")


def _size_and_tokens(config, fn: str):
    if not isinstance(config, (tuple, list)) or len(config) != 2:
        raise ValueError(f"{fn}: each config must be a pair (size, tokens), got {config!r}")
    return config[0], check_int(config[1], "tokens", fn)


def _train(model, x, y, evaluate, spec) -> float:
    """Train ``model`` for one epoch on (x, y) with Adam, warm-up and a cosine decay to 0 over
    the run; return ``evaluate(model)``."""
    steps = math.ceil(len(x) / spec.batch_size)
    schedule = lr_schedule("cosine", steps,
                           warmup=min(steps - 1, round(spec.warmup_frac * steps)))
    train.fit(model, (x, y), epochs=1, batch_size=spec.batch_size, seed=spec.seed,
              progress=False, optimizer=scheduled_adam(spec.lr, schedule))
    return float(evaluate(model))


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def train_run(spec: TrainSpec, config) -> dict:
    """Train one fresh ``spec.build_model(size)`` on ``tokens`` fresh samples for a single
    epoch (Adam, warm-up, cosine decay to 0 over the run) and return its row: ``size``, ``N``
    (trainable parameters), ``D`` (tokens), ``C`` = 6 N D and ``loss``. ``config`` is
    (size, tokens). A module-level function, so process and Dask executors can run it."""
    fn = "train_run"
    size, D = _size_and_tokens(config, fn)
    with INIT_LOCK:  # the default initialisers draw from the process-wide generator
        torch.manual_seed(spec.seed)
        model = check_module(spec.build_model(size), fn, "build_model(size)")
    model = model.to(spec.device)
    N = _count(model)
    x, y = spec.sample(D, spec.seed + 1)
    loss = _train(model, x, y, spec.evaluate, spec)
    return {"size": size, "N": N, "D": D, "C": FLOP_PER_PARAMETER_TOKEN * N * D, "loss": loss}


def markov_run(spec: MarkovSpec, config) -> dict:
    """Train one `bigram_mlp` of width ``size`` on ``tokens`` fresh pairs of ``spec.chain``
    (as `train_run`) and return its row: ``size``, ``N``, ``N_embedding`` (the first layer's
    weight and bias: on a one-hot input it is an embedding lookup, the parameters Kaplan et al.
    2020 leave out of N), ``D``, ``C`` = 6 N D and the exact ``loss`` (`markov_loss`)."""
    fn = "markov_run"
    width, D = _size_and_tokens(config, fn)
    V = spec.chain.transition.shape[0]
    with INIT_LOCK:
        torch.manual_seed(spec.seed)
        model = bigram_mlp(V, width, depth=spec.depth)
    model = model.to(spec.device)
    N = _count(model)
    embedding = model.mlp.fc1
    x, y = sample_pairs(spec.chain, D, seed=spec.seed + 1, device=spec.device)
    loss = _train(model, x, y, lambda m: markov_loss(m, spec.chain), spec)
    return {"size": width, "N": N, "N_embedding": _count(embedding), "D": D,
            "C": FLOP_PER_PARAMETER_TOKEN * N * D, "loss": loss}


def markov_sweep(
    chain: MarkovChain, configs: Sequence[tuple], *, depth: int = 1, lr: float = 0.1,
    batch_size: int = 256, warmup_frac: float = 0.05, seed: int = 0, device=None,
    executor=None, results_dir=None, threads: int | None = None, errors: str = "raise",
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Train a `bigram_mlp` of width ``size`` on ``tokens`` fresh pairs of ``chain`` for every
    config (size, tokens) and return the rows of `markov_run` as columns, in config order.

    Each run: the same initial weights per width (``seed``), one epoch of fresh samples, Adam
    with warm-up and a cosine decay matched to its length (Hoffmann et al. 2022), the exact
    test loss. ``executor``, ``results_dir``, ``threads``, ``errors`` and ``progress`` are
    `run_sweep`'s: serial by default, or any `concurrent.futures.Executor` (a process pool,
    a Dask cluster), resumable from a results folder.

    Returns:
        Dict of arrays (n,): ``size`` (width), ``N``, ``N_embedding``, ``D``, ``C``, ``loss``,
        ``seconds``.
    """
    fn = "markov_sweep"
    configs = list(configs)
    if not configs:
        raise ValueError(f"{fn}: `configs` must hold at least one (size, tokens) pair")
    for config in configs:
        width, _ = _size_and_tokens(config, fn)
        check_int(width, "size", fn)
    spec = MarkovSpec(chain, depth, lr, batch_size, warmup_frac, seed,
                      None if device is None else str(device))
    return run_sweep(markov_run, spec, configs, executor=executor, results_dir=results_dir,
                     threads=threads, errors=errors, progress=progress, desc=fn)
