"""Checking maps: sanity checks (randomization), localization scores, removal (ROAD, ROAR,
DiffROAR) and the robust models the chapter compares (PGD)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from deepscope import data, models
from deepscope import saliency as S
from scipy.stats import spearmanr
from torch import nn

# ---------------------------------------------------------------------------- sanity checks

def test_rank_correlation_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, size=(5, 30)).astype(float)  # many ties
    b = a + rng.normal(size=(5, 30))
    ours = S.rank_correlation(torch.from_numpy(a), torch.from_numpy(b))
    want = [spearmanr(a[i], b[i]).statistic for i in range(5)]
    assert np.allclose(ours.numpy(), want, atol=1e-12)
    signed = torch.tensor([[-3.0, 1.0, 2.0]])
    assert S.rank_correlation(signed, signed.abs())[0] < 1
    assert S.rank_correlation(signed, signed.abs(), absolute=True)[0] == pytest.approx(1.0)
    assert torch.isnan(S.rank_correlation(torch.ones(1, 4), torch.rand(1, 4)))[0]
    with pytest.raises(ValueError, match=r"`a` and `b` must have the same shape"):
        S.rank_correlation(torch.zeros(2, 3), torch.zeros(2, 4))


def test_edge_detector_ignores_the_model(cnn, images):
    edges = S.edge_detector(cnn, images)
    assert edges.shape == images.shape and (edges >= 0).all()
    assert torch.equal(S.edge_detector(None, images, 3), edges)
    flat = torch.full((1, 1, 5, 5), 0.7)
    assert S.edge_detector(None, flat).abs().max() < 1e-6


def test_cascading_randomization_restores_weights_and_rng(cnn, images):
    state = {k: v.clone() for k, v in cnn.state_dict().items()}
    rng = torch.get_rng_state()
    result = S.cascading_randomization(cnn, images, 3, S.gradient, progress=False)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(state[k], v) for k, v in cnn.state_dict().items())
    assert result.layers == ["fc", "conv3", "conv2", "conv1"] == S.randomizable_layers(cnn)
    assert result.correlation.shape == (4, 4) and len(result.maps) == 5
    assert torch.equal(result.maps[0], S.gradient(cnn, images, 3))
    assert result.correlation[-1].mean() < 0.5  # fully random network, different map
    again = S.cascading_randomization(cnn, images, 3, S.gradient, progress=False)
    assert torch.equal(again.correlation, result.correlation)
    control = S.cascading_randomization(cnn, images, 3, S.edge_detector, progress=False)
    assert torch.allclose(control.correlation, torch.ones(4, 4, dtype=torch.float64))


def test_independent_randomization_changes_one_layer_at_a_time(cnn, images):
    result = S.model_randomization(cnn, images, 3, S.gradient, cascading=False,
                                   layers=["conv1", cnn.fc], progress=False)
    assert result.layers == ["conv1", "fc"]
    first = S.model_randomization(cnn, images, 3, S.gradient, layers=["conv1"], progress=False)
    assert torch.equal(first.maps[1], result.maps[1])
    with pytest.raises(ValueError, match="`layer` must name a submodule"):
        S.model_randomization(cnn, images, 3, S.gradient, layers=["conv7"])
    with pytest.raises(TypeError, match="`attribution` must be a callable"):
        S.model_randomization(cnn, images, 3, "gradient")
    with pytest.raises(ValueError, match="at least one layer"):
        S.model_randomization(nn.Sequential(nn.Flatten()), images, 0, S.edge_detector)
    with pytest.raises(ValueError, match="`cascading` must be one of True, got False"):
        S.cascading_randomization(cnn, images, 3, S.gradient, cascading=False)


# ---------------------------------------------------------------------------- localization

def test_heatmap_reductions():
    a = torch.tensor([[[[1.0, -2.0]], [[-3.0, 0.5]]]])  # (1, 2, 1, 2)
    assert S.heatmap(a, "abs").tolist() == [[[4.0, 2.5]]]
    assert S.heatmap(a, "sum").tolist() == [[[-2.0, -1.5]]]
    assert S.heatmap(a, "max_abs").tolist() == [[[3.0, 2.0]]]
    assert S.heatmap(a, "positive").tolist() == [[[1.0, 0.5]]]
    assert S.heatmap(a[:, 0]).shape == (1, 1, 2)
    with pytest.raises(ValueError, match="`reduce` must be one of 'abs'"):
        S.heatmap(a, "mean")


def test_pointing_energy_and_iou_on_known_maps():
    mask = torch.zeros(2, 6, 6, dtype=torch.bool)
    mask[:, 1:3, 1:3] = True
    maps = torch.zeros(2, 6, 6)
    maps[0, 2, 2] = 5.0  # inside
    maps[1, 4, 4] = 5.0  # outside, 2 px from the box
    maps[:, 1:3, 1:3] += 1.0
    assert S.pointing_game(maps, mask).tolist() == [True, False]
    assert S.pointing_game(maps, mask, tolerance=1).tolist() == [True, False]
    assert S.pointing_game(maps, mask, tolerance=2).tolist() == [True, True]
    assert S.mask_energy(maps, mask).tolist() == pytest.approx([1.0, 4 / 9])
    assert S.mask_iou(maps, mask).tolist() == pytest.approx([1.0, 3 / 5])
    assert S.mask_iou(maps, mask, top=1).tolist() == pytest.approx([0.25, 0.0])
    assert S.pointing_game(maps[:, None], mask[:, None]).tolist() == [True, False]
    with pytest.raises(TypeError, match="`mask` must be a bool tensor"):
        S.pointing_game(maps, mask.float())
    with pytest.raises(ValueError, match=r"`mask` must have the maps' shape \(2, 6, 6\)"):
        S.mask_energy(maps, mask[:, :3])
    with pytest.raises(ValueError, match="`maps` must have one channel"):
        S.mask_iou(torch.zeros(2, 3, 6, 6), mask)


def test_blank_maps_are_counted_not_dropped():
    mask = torch.zeros(3, 4, 4, dtype=torch.bool)
    mask[:, 0, 0] = True
    maps = torch.zeros(3, 4, 4)
    maps[1, 2, 2] = 1.0
    maps[2] = 0.3  # constant but not zero: blank too (no peak, no ranking)
    assert S.blank_maps(maps).tolist() == [True, False, True]
    assert S.blank_maps(maps[:, None]).tolist() == [True, False, True]
    assert S.blank_maps(maps + 1e-9 * torch.rand(3, 4, 4), atol=1e-6).tolist() == [True, False,
                                                                                   True]
    # what the other scores make of a blank map: why it must be counted separately
    assert S.pointing_game(maps, mask).tolist() == [True, False, True]  # argmax = first pixel
    assert torch.isnan(S.mask_energy(maps, mask)[0])
    assert torch.isnan(S.rank_correlation(maps, torch.rand(3, 4, 4))[0])
    with pytest.raises(ValueError, match="blank_maps: `atol` must be a number >= 0, got -1"):
        S.blank_maps(maps, atol=-1)
    with pytest.raises(ValueError, match="blank_maps: `maps` must have at least 2"):
        S.blank_maps(torch.zeros(3))


# ---------------------------------------------------------------------------- removal

def test_rank_features_breaks_ties_randomly_but_reproducibly():
    scores = torch.zeros(1, 100)
    scores[0, 50] = 1.0
    order = S.rank_features(scores, seed=0)
    assert order[0, 0] == 50 and sorted(order[0].tolist()) == list(range(100))
    assert torch.equal(order, S.rank_features(scores, seed=0))
    assert not torch.equal(order, S.rank_features(scores, seed=1))
    assert order[0, 1:11].tolist() != list(range(10))  # not positional


def test_keep_and_remove_features_counts():
    x = torch.rand(3, 2, 4, 4)
    pixel_scores = torch.rand(3, 4, 4)
    kept = S.keep_features(x, pixel_scores, 5, fill=-1.0)
    assert ((kept != -1).sum((1, 2, 3)) == 10).all()  # 5 pixels x 2 channels
    top = pixel_scores.flatten(1).topk(5, dim=1).indices
    assert torch.equal(kept[:, 0].flatten(1).gather(1, top), x[:, 0].flatten(1).gather(1, top))
    bottom = S.keep_features(x, pixel_scores, 5, which="bottom", fill=-1.0)
    assert not torch.equal(bottom, kept)
    removed = S.remove_features(x, x, 0.25, fill=0.0)
    assert ((removed == 0).sum((1, 2, 3)) == 8).all()
    smallest = x.flatten(1).sort(1).values[:, :24]  # MoRF removed the 8 largest values
    assert torch.equal(removed.flatten(1).sort(1).values[:, 8:], smallest)
    lerf = S.remove_features(x, x, 0.25, order="lerf", fill=0.0)
    assert lerf.flatten(1).sort(1).values[:, 8:].min() >= x.flatten(1).sort(1).values[:, 7].min()
    with pytest.raises(ValueError, match=r"`scores` must have the shape of `x` \(3, 2, 4, 4\) or, "
                       r"per pixel, \(3, 4, 4\), got \(3, 16\)"):
        S.remove_features(x, torch.rand(3, 16), 0.5)
    with pytest.raises(ValueError, match=r"`fraction` must be in \[0, 1\], got 1.5"):
        S.remove_features(x, x, 1.5)
    with pytest.raises(ValueError, match="`order` must be one of 'morf', 'lerf'"):
        S.remove_features(x, x, 0.5, order="random")


def test_noisy_linear_imputation_recovers_a_linear_ramp_inside():
    rows, cols = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    ramp = (0.1 * rows + 0.05 * cols)[None, None].double()
    remove = torch.zeros(1, 8, 8, dtype=torch.bool)
    remove[0, 2:6, 3:6] = True
    filled = S.noisy_linear_impute(ramp, remove, noise=0.0)
    assert torch.allclose(filled, ramp, atol=1e-6)
    noisy = S.noisy_linear_impute(ramp, remove, noise=0.05, seed=0)
    assert torch.equal(noisy[:, :, ~remove[0]], ramp[:, :, ~remove[0]])  # known pixels kept
    assert 0.02 < (noisy - ramp)[:, :, remove[0]].std() < 0.09
    assert torch.equal(noisy, S.noisy_linear_impute(ramp, remove, noise=0.05, seed=0))


def test_noisy_linear_imputation_is_bounded_and_handles_full_removal():
    x = torch.rand(2, 3, 6, 6)
    remove = torch.rand(2, 6, 6) < 0.5
    filled = S.noisy_linear_impute(x, remove, noise=0.0)
    assert filled.dtype == x.dtype and filled.shape == x.shape
    assert filled.min() >= x.min() - 1e-6 and filled.max() <= x.max() + 1e-6  # maximum principle
    everything = S.noisy_linear_impute(x, torch.ones(2, 6, 6, dtype=torch.bool), noise=0.0)
    assert everything.abs().max() < 1e-6
    per_channel = S.noisy_linear_impute(x, torch.rand(2, 3, 6, 6) < 0.3, noise=0.0)
    assert per_channel.shape == x.shape
    assert S.noisy_linear_impute(x[:, 0], remove, noise=0.0).shape == (2, 6, 6)
    with pytest.raises(TypeError, match="`remove` must be a bool tensor"):
        S.noisy_linear_impute(x, remove.float())
    with pytest.raises(ValueError, match=r"`remove` must have shape \(2, 3, 6, 6\) or "
                       r"\(2, 6, 6\), got \(2, 5, 5\)"):
        S.noisy_linear_impute(x, remove[:, :5, :5])


def test_noisy_linear_imputation_solves_each_plane_on_its_own():
    # one block-diagonal solve for the batch equals one solve per image and channel; the
    # neighbours of a pixel never come from another image or channel
    torch.manual_seed(0)
    x = torch.rand(5, 2, 7, 9, dtype=torch.float64)
    remove = torch.rand(5, 2, 7, 9) < 0.6
    batch = S.noisy_linear_impute(x, remove, noise=0.0)
    for b in range(5):
        for c in range(2):
            alone = S.noisy_linear_impute(x[b:b + 1, c:c + 1], remove[b:b + 1, c:c + 1],
                                          noise=0.0)
            assert torch.allclose(batch[b, c], alone[0, 0], atol=1e-12)
    # a removed pixel is the weighted mean of its neighbours (the defining equation)
    filled = batch[0, 0].numpy()
    r, c = [int(v) for v in torch.nonzero(remove[0, 0] & (torch.arange(7)[:, None] % 6 > 0)
                                          & (torch.arange(9)[None] % 8 > 0))[0]]
    mean = sum(w * filled[r + dr, c + dc] for (dr, dc), w in S.NEIGHBOUR_WEIGHTS)
    assert abs(filled[r, c] - mean) < 1e-6


def signal_model():
    """A linear classifier that reads only the first row of a 4x4 image."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).double()
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.zero_()
        model[1].weight[1, :4] = 1.0
        model[1].weight[0, :4] = -1.0
    return model


def test_road_morf_hurts_a_model_more_with_the_true_ranking():
    torch.manual_seed(0)
    y = torch.randint(0, 2, (200,))
    x = 0.1 * torch.randn(200, 1, 4, 4, dtype=torch.float64)
    x[:, 0, 0] += (2.0 * y - 1)[:, None]
    model = signal_model()
    truth = torch.zeros(200, 4, 4, dtype=torch.float64)
    truth[:, 0] = 1.0
    fractions = (0.0, 0.25, 0.5)
    informed = S.road(model, x, y, truth, fractions, fill=0.0)
    random = S.road(model, x, y, torch.rand(200, 4, 4, dtype=torch.float64), fractions, fill=0.0)
    assert informed[0] == random[0] == 1.0
    assert informed[1] <= 0.6 and random[1] > 0.8
    lerf = S.road(model, x, y, truth, (0.5,), order="lerf")
    assert lerf[0] == 1.0


def test_diffroar_separates_the_informative_block():
    blocks = data.block_digits("train", n=400, seed=0)
    test = data.block_digits("test", n=200, seed=1)
    make = lambda: models.mlp(128, (32,), 10)
    truth_train, truth_test = blocks.mask[:, 0].float(), test.mask[:, 0].float()
    result = S.diffroar(make, (blocks.x, blocks.y), (test.x, test.y), truth_train, truth_test,
                        k=64, fit_kwargs={"epochs": 15, "lr": 3e-3})
    assert result["top"] > 0.6 and result["bottom"] < 0.2 and result["diff"] > 0.4, result
    noise_train, noise_test = torch.rand(400, 16, 8), torch.rand(200, 16, 8)
    control = S.diffroar(make, (blocks.x, blocks.y), (test.x, test.y), noise_train, noise_test,
                         k=64, fit_kwargs={"epochs": 15, "lr": 3e-3})
    assert abs(control["diff"]) < 0.2, control
    accs = S.roar(make, (blocks.x, blocks.y), (test.x, test.y), truth_train, truth_test,
                  fractions=(0.0, 0.5), fit_kwargs={"epochs": 15, "lr": 3e-3})
    assert accs.shape == (2,) and accs[0] > 0.6 and accs[1] < 0.3
    with pytest.raises(TypeError, match="`make_model` must be a callable"):
        S.diffroar("mlp", (blocks.x, blocks.y), (test.x, test.y), truth_train, truth_test, k=4)


# ---------------------------------------------------------------------------- robustness

def test_pgd_respects_the_threat_model_and_raises_the_loss(cnn, images):
    y = torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        clean = F.cross_entropy(cnn(images), y)
    for norm, eps in (("linf", 0.1), ("l2", 0.5)):
        adv = S.pgd_attack(cnn, images, y, eps, norm=norm, steps=10, seed=0)
        delta = (adv - images).flatten(1)
        size = delta.abs().max(1).values if norm == "linf" else delta.norm(dim=1)
        assert (size <= eps + 1e-9).all() and adv.min() >= 0 and adv.max() <= 1
        with torch.no_grad():
            assert F.cross_entropy(cnn(adv), y) > clean
    again = S.pgd_attack(cnn, images, y, 0.1, seed=0)
    assert torch.equal(again, S.pgd_attack(cnn, images, y, 0.1, seed=0))
    unclamped = S.pgd_attack(cnn, images, y, 0.1, clamp=None, random_start=False, steps=1,
                             step_size=0.1)
    step = (unclamped - images).abs()  # one signed-gradient step of size eps, no projection
    assert step.max() == pytest.approx(0.1) and (step[step > 0] == pytest.approx(0.1))
    with pytest.raises(ValueError, match="`eps` must be > 0, got 0.0"):
        S.pgd_attack(cnn, images, y, 0.0)
    with pytest.raises(ValueError, match="`norm` must be one of 'linf', 'l2', got 'l1'"):
        S.pgd_attack(cnn, images, y, 0.1, norm="l1")
    with pytest.raises(ValueError, match=r"`y` must have shape \(4,\)"):
        S.pgd_attack(cnn, images, y[:2], 0.1)


def test_adversarial_training_buys_robustness_on_a_toy_problem():
    # x = label sign on coordinate 0 (size 1) plus many small, individually weak but jointly
    # predictive coordinates: a standard model leans on the weak ones, which a small
    # perturbation flips; the robust model must use coordinate 0.
    torch.manual_seed(0)
    n, d = 600, 20
    y = torch.randint(0, 2, (n,))
    sign = (2.0 * y - 1)[:, None]
    x = torch.cat([0.6 * sign + 0.05 * torch.randn(n, 1),
                   0.15 * sign + 0.2 * torch.randn(n, d - 1)], dim=1)
    kwargs = {"epochs": 40, "lr": 1e-2, "progress": False}
    torch.manual_seed(1)
    standard = models.mlp(d, (32,), 2)
    from deepscope import train
    train.fit(standard, (x, y), **kwargs)
    torch.manual_seed(1)
    robust = models.mlp(d, (32,), 2)
    history = S.adversarial_fit(robust, (x, y), eps=0.2, steps=5, clamp=None, **kwargs)
    assert len(history.epoch) == 40
    attack = {"steps": 10, "clamp": None, "seed": 0}
    std_acc = S.robust_accuracy(standard, x, y, 0.2, **attack)
    rob_acc = S.robust_accuracy(robust, x, y, 0.2, batch_size=256, **attack)
    assert rob_acc > std_acc + 0.2, (rob_acc, std_acc)
    with pytest.raises(TypeError, match=r"`train` must be a pair \(x, y\) of tensors"):
        S.adversarial_fit(robust, x, eps=0.1)


def test_remaining_bad_input_messages(cnn, images):
    with pytest.raises(ValueError, match="`sigma` must be > 0"):
        S.vargrad(cnn, images, 0, -1.0)
    with pytest.raises(ValueError, match="`samples` must be >= 1, got 0"):
        S.smoothgrad_sq(cnn, images, 0, 0.1, 0)
    with pytest.raises(ValueError, match="`layer` must name a submodule"):
        S.layer_gradients(cnn, images, 0, "nope")
    with pytest.raises(ValueError, match=r"`x` must have 4 dimensions \(B, C, H, W\)"):
        S.edge_detector(cnn, images[:, 0])
    with pytest.raises(TypeError, match="`model` must be a torch.nn.Module, got str"):
        S.randomizable_layers("cnn")
    with pytest.raises(TypeError, match="`scores` must be a torch.Tensor, got list"):
        S.rank_features([[1.0, 2.0]])
    with pytest.raises(ValueError, match="`which` must be one of 'top', 'bottom', got 'middle'"):
        S.keep_features(images, images, 3, which="middle")
    with pytest.raises(ValueError, match="`k` must be >= 0, got -1"):
        S.keep_features(images, images, -1)
    with pytest.raises(TypeError, match="`fill` must be a real number, got str"):
        S.keep_features(images, images, 3, fill="mean")
    with pytest.raises(TypeError, match="`y` must be an integer tensor"):
        S.road(cnn, images, torch.zeros(4), images, (0.5,))
    with pytest.raises(ValueError, match="`batch_size` must be >= 1, got 0"):
        S.robust_accuracy(cnn, images, torch.zeros(4, dtype=torch.long), 0.1, batch_size=0)
    with pytest.raises(ValueError, match="`tolerance` must be >= 0, got -1"):
        S.pointing_game(images[:, 0], images[:, 0] > 0.5, tolerance=-1)
