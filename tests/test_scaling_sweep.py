"""deepscope.scaling sweeps: the Markov-chain language, exact loss, schedules, the sweep runner."""

import math

import numpy as np
import pytest
import torch
from deepscope import scaling
from torch import nn

from tests.conftest import requires_cuda


@pytest.fixture(scope="module")
def chain():
    return scaling.markov_chain(16, sharpness=2.0, decay=1.0, seed=0)


class _Table(nn.Module):
    """A model whose logits for token i are a fixed row of a table."""

    def __init__(self, logits):
        super().__init__()
        self.logits = nn.Parameter(logits.clone())

    def forward(self, tokens):
        return self.logits[tokens]


def test_markov_chain_is_a_valid_chain_with_known_entropy(chain):
    P, pi = chain.transition, chain.stationary
    assert P.shape == (16, 16) and P.dtype == torch.float64
    torch.testing.assert_close(P.sum(1), torch.ones(16, dtype=torch.float64))
    torch.testing.assert_close(pi @ P, pi, atol=1e-12, rtol=0)
    assert float(pi.sum()) == pytest.approx(1.0)
    assert 0 < chain.entropy_rate < math.log(16)
    # sharper logits, lower entropy; identical seeds, identical chains
    sharper = scaling.markov_chain(16, sharpness=4.0, seed=0)
    assert sharper.entropy_rate < chain.entropy_rate
    assert torch.equal(scaling.markov_chain(16, sharpness=2.0, seed=0).transition, P)
    # the logit matrix has the planted power-law spectrum (up to the row-wise softmax shift)
    logits = torch.log(P)
    centered = logits - logits.mean(1, keepdim=True)
    s = torch.linalg.svdvals(centered)
    assert float(s[1] / s[3]) == pytest.approx(2.0, rel=0.35)


def test_sample_pairs_follow_the_chain(chain):
    x, y = scaling.sample_pairs(chain, 200_000, seed=1, chunk=4096)
    assert x.dtype == y.dtype == torch.long and x.shape == y.shape == (200_000,)
    freq = torch.bincount(x, minlength=16).double() / len(x)
    assert float((freq - chain.stationary).abs().max()) < 0.01
    counts = torch.zeros(16, 16, dtype=torch.float64)
    counts.index_put_((x, y), torch.ones(len(x), dtype=torch.float64), accumulate=True)
    empirical = counts / counts.sum(1, keepdim=True)
    assert float((empirical - chain.transition).abs().max()) < 0.03
    x2, _ = scaling.sample_pairs(chain, 1000, seed=1)
    assert torch.equal(x2, scaling.sample_pairs(chain, 1000, seed=1)[0])


def test_markov_loss_is_exact_and_bounded_by_the_entropy(chain):
    perfect = _Table(torch.log(chain.transition).float())
    assert scaling.markov_loss(perfect, chain) == pytest.approx(chain.entropy_rate, abs=1e-5)
    uniform = _Table(torch.zeros(16, 16))
    assert scaling.markov_loss(uniform, chain) == pytest.approx(math.log(16), abs=1e-6)
    # a Monte Carlo estimate of the cross-entropy agrees with the exact value
    torch.manual_seed(0)
    model = scaling.bigram_mlp(16, 4)
    x, y = scaling.sample_pairs(chain, 100_000, seed=2)
    with torch.no_grad():
        mc = float(nn.functional.cross_entropy(model(x), y))
    exact = scaling.markov_loss(model, chain)
    assert exact > chain.entropy_rate and exact == pytest.approx(mc, abs=0.02)
    model.train()
    scaling.markov_loss(model, chain)
    assert model.training  # mode restored
    with pytest.raises(ValueError, match=r"markov_loss: `model` must map token ids \(16,\)"):
        scaling.markov_loss(_Table(torch.zeros(16, 8)), chain)
    with pytest.raises(TypeError, match="markov_loss: `model` must be a torch.nn.Module"):
        scaling.markov_loss("model", chain)


def test_bigram_mlp_shapes_and_parameter_count():
    model = scaling.bigram_mlp(16, 8)
    assert model(torch.tensor([0, 3, 15])).shape == (3, 16)
    assert sum(p.numel() for p in model.parameters()) == 16 * 8 + 8 + 8 * 16 + 16
    assert "vocab_size=16" in repr(model)
    deep = scaling.bigram_mlp(16, 8, depth=2)
    assert sum(p.numel() for p in deep.parameters()) == 16 * 8 + 8 + 8 * 8 + 8 + 8 * 16 + 16
    with pytest.raises(ValueError, match="bigram_mlp: `width` must be >= 1, got 0"):
        scaling.bigram_mlp(16, 0)
    with pytest.raises(ValueError, match="markov_chain: `vocab_size` must be >= 2, got 1"):
        scaling.markov_chain(1)
    with pytest.raises(ValueError, match="markov_chain: `sharpness` must be > 0, got 0.0"):
        scaling.markov_chain(8, sharpness=0.0)


def test_lr_schedules():
    cos = scaling.lr_schedule("cosine", 100, warmup=10)
    assert cos(0) == pytest.approx(0.1) and cos(9) == pytest.approx(1.0)
    assert cos(10) == pytest.approx(1.0) and cos(55) == pytest.approx(0.5)
    assert cos(100) == pytest.approx(0.0, abs=1e-12)
    assert scaling.lr_schedule("cosine", 100, final=0.1)(100) == pytest.approx(0.1)
    const = scaling.lr_schedule("constant", 50)
    assert {const(t) for t in range(50)} == {1.0}
    wsd = scaling.lr_schedule("wsd", 100, warmup=5, decay_frac=0.2)
    assert wsd(50) == 1.0 and wsd(79) == 1.0 and wsd(90) == pytest.approx(0.5)
    assert wsd(100) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="`kind` must be one of 'constant', 'cosine', 'wsd'"):
        scaling.lr_schedule("linear", 10)
    with pytest.raises(ValueError, match="lr_schedule: `warmup` must be < `total_steps` \\(10\\)"):
        scaling.lr_schedule("cosine", 10, warmup=10)
    with pytest.raises(ValueError, match=r"`decay_frac` must be in \(0, 1\], got 2.0"):
        scaling.lr_schedule("wsd", 10, decay_frac=2.0)


def test_scheduled_optimizer_follows_the_schedule():
    layer = nn.Linear(2, 1)
    make = scaling.scheduled_adam(0.1, scaling.lr_schedule("cosine", 4))
    opt = make(layer.parameters())
    rates = []
    for _ in range(4):
        rates.append(opt.param_groups[0]["lr"])
        layer(torch.ones(1, 2)).sum().backward()
        opt.step()
        opt.zero_grad()
    assert rates[0] == pytest.approx(0.1) and rates[2] == pytest.approx(0.05)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert layer.weight.grad is None
    with pytest.raises(ValueError, match="scheduled_adam: `lr` must be > 0, got -1.0"):
        scaling.scheduled_adam(-1.0, lambda t: 1.0)


def test_isoflop_configs():
    n_params = lambda w: 100 * w  # noqa: E731
    configs = scaling.isoflop_configs([1, 2, 4], [6e4, 1.2e5], n_params, min_tokens=20,
                                      max_tokens=150)
    assert configs == [(1, 100), (2, 50), (4, 25), (2, 100), (4, 50)]
    for size, D in configs:
        assert 6 * n_params(size) * D in (6e4, 1.2e5)
    with pytest.raises(ValueError, match="`max_tokens` must be >= `min_tokens` \\(20\\), got 5"):
        scaling.isoflop_configs([1], [1e5], n_params, min_tokens=20, max_tokens=5)
    with pytest.raises(ValueError, match="`sizes` and `budgets` must not be empty"):
        scaling.isoflop_configs([], [1e5], n_params)
    with pytest.raises(ValueError, match="isoflop_configs: `budgets` must be > 0"):
        scaling.isoflop_configs([1], [-1.0], n_params)
    # sizes centred on an expected optimum: the per_budget nearest in log N to centre(C)
    ladder = [1, 2, 4, 8, 16, 32]
    centred = scaling.isoflop_configs(ladder, [1e5, 1e7], n_params, per_budget=3,
                                      centre=lambda C: 100 * (C / 1e5) ** 0.5)
    assert [s for s, _ in centred] == [1, 2, 4, 4, 8, 16]  # around N = 100, then N = 1000
    budgets = [min((1e5, 1e7), key=lambda c: abs(6 * n_params(s) * d / c - 1)) for s, d in centred]
    assert budgets == [1e5] * 3 + [1e7] * 3
    with pytest.raises(ValueError, match="give `per_budget` and `centre` together"):
        scaling.isoflop_configs(ladder, [1e5], n_params, per_budget=3)


def test_markov_sweep_records_runs_and_learns(chain):
    configs = [(2, 2048), (8, 2048), (8, 8192)]
    out = scaling.markov_sweep(chain, configs, lr=0.1, batch_size=128, progress=False)
    assert set(out) == {"size", "N", "N_embedding", "D", "C", "loss", "seconds"}
    np.testing.assert_array_equal(out["size"], [2, 8, 8])
    np.testing.assert_array_equal(out["N"], [16 * 2 * 2 + 2 + 16] + [16 * 8 * 2 + 8 + 16] * 2)
    # the first layer on a one-hot token is an embedding lookup: V * w weights and w biases
    np.testing.assert_array_equal(out["N_embedding"], [16 * 2 + 2, 16 * 8 + 8, 16 * 8 + 8])
    np.testing.assert_array_equal(out["C"], 6 * out["N"] * out["D"])
    H = chain.entropy_rate
    assert np.all(out["loss"] > H) and np.all(out["loss"] < math.log(16))
    # more tokens help the same model; reproducible with the same seed
    assert out["loss"][2] < out["loss"][1]
    again = scaling.markov_sweep(chain, configs[:1], lr=0.1, batch_size=128, progress=False)
    assert again["loss"][0] == out["loss"][0]


def test_markov_sweep_bad_input(chain):
    with pytest.raises(ValueError, match="markov_sweep: `configs` must hold at least one"):
        scaling.markov_sweep(chain, [])
    with pytest.raises(ValueError, match=r"config must be a pair \(size, tokens\), got \(1,\)"):
        scaling.markov_sweep(chain, [(1,)], progress=False)
    with pytest.raises(ValueError, match="MarkovSpec: `warmup_frac` must be < 1, got 1.0"):
        scaling.markov_sweep(chain, [(1, 10)], warmup_frac=1.0)
    with pytest.raises(TypeError, match="MarkovSpec: `chain` must be a MarkovChain"):
        scaling.MarkovSpec(chain.transition)


def test_train_run_trains_your_own_model(chain):
    # the generic run: any model builder, sampler and evaluator (lambdas are fine serially)
    spec = scaling.TrainSpec(lambda w: scaling.bigram_mlp(16, w),
                             lambda n, seed: scaling.sample_pairs(chain, n, seed=seed),
                             lambda m: scaling.markov_loss(m, chain), batch_size=128)
    rows = scaling.run_sweep(scaling.train_run, spec, [(8, 2048)], progress=False)
    same = scaling.markov_sweep(chain, [(8, 2048)], batch_size=128, progress=False)
    for column in ("size", "N", "D", "C", "loss"):
        assert rows[column][0] == same[column][0]
    with pytest.raises(scaling.SweepError, match=r"`build_model\(size\)` must be a torch.nn"):
        scaling.run_sweep(scaling.train_run, scaling.TrainSpec(lambda s: "net", spec.sample,
                                                           spec.evaluate),
                          [(1, 10)], progress=False)
    with pytest.raises(ValueError, match="TrainSpec: `lr` must be > 0, got -1.0"):
        scaling.TrainSpec(None, None, None, lr=-1.0)


@requires_cuda
def test_markov_sweep_on_cuda(chain):
    out = scaling.markov_sweep(chain, [(4, 1024)], device="cuda", progress=False)
    assert out["loss"][0] > chain.entropy_rate
