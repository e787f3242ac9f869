"""The schedule-aware loss-curve law (Tissue et al. 2024) and `loss_curve`."""

import numpy as np
import pytest
import torch
from deepscope import scaling


def test_annealing_areas_closed_forms():
    S1, S2 = scaling.annealing_areas(np.ones(5))
    np.testing.assert_allclose(S1, [1, 2, 3, 4, 5])
    np.testing.assert_allclose(S2, 0)
    # one drop of 0.5 at step 3: without momentum m = 0.5 at that step only
    lrs = np.array([1.0, 1.0, 0.5, 0.5, 0.5])
    S1, S2 = scaling.annealing_areas(lrs, decay=0.0)
    np.testing.assert_allclose(S1, np.cumsum(lrs))
    np.testing.assert_allclose(S2, [0, 0, 0.5, 0.5, 0.5])
    # with momentum lambda the drop keeps paying: m_i = 0.5 lambda^(i - 3)
    _, S2 = scaling.annealing_areas(lrs, decay=0.5)
    np.testing.assert_allclose(S2, [0, 0, 0.5, 0.75, 0.875])
    with pytest.raises(ValueError, match="annealing_areas: `lrs` must be >= 0, got -1"):
        scaling.annealing_areas([1.0, -1.0])
    with pytest.raises(ValueError, match=r"`decay` must be in \[0, 1\), got 1.0"):
        scaling.annealing_areas([1.0], decay=1.0)


def _planted_curves(law, T=600, every=10, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    curves = {}
    for kind in ("constant", "cosine", "wsd"):
        lrs = scaling.schedule_rates(scaling.lr_schedule(kind, T), T)
        steps = np.arange(every, T + 1, every)
        loss = law.predict(lrs, steps) * np.exp(noise * rng.standard_normal(len(steps)))
        curves[kind] = (lrs, steps, loss)
    return curves


def test_fit_annealing_law_recovers_a_planted_law_and_predicts_wsd():
    planted = scaling.AnnealingLaw(L0=2.0, A=3.0, alpha=0.6, C=2e-3, decay=0.98)
    curves = _planted_curves(planted)
    fit = scaling.fit_annealing_law([curves["constant"], curves["cosine"]])
    assert fit.decay == 0.98  # the momentum of the grid that generated the curves
    assert fit.L0 == pytest.approx(2.0, rel=1e-3) and fit.alpha == pytest.approx(0.6, rel=1e-3)
    assert fit.C == pytest.approx(2e-3, rel=1e-3) and fit.objective < 1e-10
    lrs, steps, wsd = curves["wsd"]
    np.testing.assert_allclose(fit.predict(lrs, steps), wsd, rtol=1e-5)
    # with noise the fit still predicts the unseen schedule's final loss closely
    noisy = _planted_curves(planted, noise=0.003, seed=1)
    fit = scaling.fit_annealing_law([noisy["constant"], noisy["cosine"]], decay=0.98)
    final = planted.predict(lrs, steps)[-1]
    assert fit.predict(lrs, steps)[-1] == pytest.approx(final, rel=0.01)
    np.testing.assert_allclose(scaling.annealing_loss([1.0, 4.0], [0.0, 1.0], (1, 2, 1.0, 0.5)),
                               [3.0, 1.0])


def test_fit_annealing_law_bad_input():
    lrs = np.ones(10)
    steps = np.array([2, 4, 6, 8])
    loss = np.array([3.0, 2.5, 2.2, 2.1])
    with pytest.raises(ValueError, match="`curves` must hold at least one"):
        scaling.fit_annealing_law([])
    with pytest.raises(ValueError, match="`steps` must be <= the schedule's length 10, got 12"):
        scaling.fit_annealing_law([(lrs, [2, 12], [3.0, 2.0])])
    with pytest.raises(ValueError, match="need at least 4 points to fit 4 parameters, got 3"):
        scaling.fit_annealing_law([(lrs, steps[:3], loss[:3])])
    with pytest.raises(ValueError, match="arrays must have the same length"):
        scaling.fit_annealing_law([(lrs, steps, loss[:3])])
    with pytest.raises(ValueError, match="`losses` must be > 0"):
        scaling.fit_annealing_law([(lrs, steps, -loss)])
    starts_at_zero = np.concatenate([[0.0], np.ones(9)])
    with pytest.raises(ValueError, match="the forward area must be > 0"):
        scaling.fit_annealing_law([(starts_at_zero, [1, 4, 6, 8], loss)])
    with pytest.raises(ValueError, match="annealing_loss: arrays must have the same length"):
        scaling.annealing_loss([1.0, 2.0], [0.0], (1, 1, 1, 1))


def test_loss_curve_trains_on_fresh_samples_under_a_schedule():
    chain = scaling.markov_chain(16, seed=0)
    torch.manual_seed(0)
    model = scaling.bigram_mlp(16, 8)
    sample = lambda n, s: scaling.sample_pairs(chain, n, seed=s)  # noqa: E731
    evaluate = lambda m: scaling.markov_loss(m, chain)  # noqa: E731
    start = evaluate(model)
    steps, losses = scaling.loss_curve(model, sample, evaluate,
                                       scaling.lr_schedule("cosine", 200), 200, lr=0.05,
                                       batch_size=64, eval_every=50)
    np.testing.assert_array_equal(steps, [50, 100, 150, 200])
    assert losses.shape == (4,) and losses[-1] < losses[0] < start
    assert losses[-1] > chain.entropy_rate
    rates = scaling.schedule_rates(scaling.lr_schedule("wsd", 10, decay_frac=0.5), 10)
    np.testing.assert_allclose(rates[:5], 1.0)
    assert rates[-1] == pytest.approx(0.2)  # the rate of step 10: (10 - 1 - 5) / 5 of the way
    with pytest.raises(ValueError, match=r"`steps` \(30\) must be a multiple of `eval_every`"):
        scaling.loss_curve(model, sample, evaluate, lambda t: 1.0, 30, eval_every=20)
    with pytest.raises(TypeError, match="loss_curve: `model` must be a torch.nn.Module"):
        scaling.loss_curve(None, sample, evaluate, lambda t: 1.0, 20)
