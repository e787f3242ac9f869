"""deepscope.collapse during training: feature hooks, the tracker, the UFM, figures, explorers."""

import math

import pytest
import torch
from deepscope import collapse, data, models, plotting, train, widgets
from torch import nn


@pytest.fixture(scope="module")
def digits():
    x, y = data.digits("train")
    return x[:300], y[:300]


def _net(seed=0, width=32):
    torch.manual_seed(seed)
    return models.mlp(64, (width, width), 10, batch_norm=True)


def _no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# --------------------------------------------------------------------------------------------
# Hooks and features


def test_extract_features_returns_the_classifier_input_and_restores_the_model(digits):
    x, _ = digits
    net = _net()
    net.train()
    features, logits = collapse.extract_features(net, x, batch_size=128)
    net.eval()
    with torch.no_grad():
        expected = net[:-1](x)
        assert torch.allclose(features, expected, atol=1e-6)
        assert torch.allclose(logits, net(x), atol=1e-6)
    net.train()
    assert features.shape == (300, 32) and net.training and _no_hooks(net)
    by_name, _ = collapse.extract_features(net, x, "act1")
    with torch.no_grad(), torch.no_grad():
        net.eval()
        assert torch.allclose(by_name, net[:4](x), atol=1e-6)


def test_record_features_removes_its_hooks_also_on_error(digits):
    x, _ = digits
    net = _net()
    with collapse.record_features(net, ["fc1", None, net.act2]) as records:
        net(x[:10])
        net(x[10:15])
        assert not _no_hooks(net)
    assert list(records) == ["fc1", "classifier_input", "act2"]
    assert [r.shape for r in records["fc1"]] == [(10, 32), (5, 32)]
    with pytest.raises(RuntimeError, match="boom"):
        with collapse.record_features(net, "act1"):
            raise RuntimeError("boom")
    assert _no_hooks(net)
    with pytest.raises(RuntimeError, match="mat1 and mat2"):
        collapse.extract_features(net, torch.randn(4, 7))
    assert _no_hooks(net) and net.training


def test_layers_and_classifier_are_resolved_with_clear_errors(digits):
    x, y = digits
    net = _net()
    assert collapse.find_classifier(net) is net.fc3
    assert collapse.find_classifier(net, "fc2") is net.fc2
    with pytest.raises(ValueError, match=r"`layers` must name a submodule of the model \("):
        with collapse.record_features(net, "conv9"):
            pass
    with pytest.raises(ValueError, match="not part of it"):
        collapse.extract_features(net, x, nn.ReLU())
    with pytest.raises(TypeError, match="layer name or an nn.Module, got int"):
        collapse.find_classifier(net, 3)
    with pytest.raises(ValueError, match="must contain an nn.Linear classifier"):
        collapse.find_classifier(nn.Sequential(nn.ReLU()))
    with pytest.raises(TypeError, match="`model` must be a torch.nn.Module"):
        collapse.extract_features("net", x)
    with pytest.raises(ValueError, match="at least one sample"):
        collapse.extract_features(net, x[:0])
    with pytest.raises(ValueError, match="`batch_size` must be >= 1"):
        collapse.layer_features(net, x, ["act1"], batch_size=0)
    with pytest.raises(ValueError, match=r"`labels` must have shape \(300,\)"):
        collapse.nc1_by_layer(net, x, y[:5], ["act1"])


def test_nc1_by_layer_matches_nc1_of_each_layer(digits):
    x, y = digits
    net = _net()
    values = collapse.nc1_by_layer(net, x, y, ["act1", "act2", None])
    assert list(values) == ["act1", "act2", "classifier_input"]
    feats = collapse.layer_features(net, x, ["act1"])
    assert values["act1"] == pytest.approx(collapse.nc1(feats["act1"], y))
    assert values["act2"] == pytest.approx(values["classifier_input"])


# --------------------------------------------------------------------------------------------
# The tracker


def test_tracker_records_collapse_during_fit_and_leaves_no_hook(digits):
    x, y = digits
    net = _net()
    tracker = collapse.CollapseTracker(x, y, at=[1, 10, 60], keep_per_class=3)
    train.fit(net, (x, y), epochs=60, batch_size=None, optimizer="sgd", lr=0.1,
              weight_decay=5e-3, progress=False, callback=tracker)
    h = tracker.history
    assert h.epoch == [1, 10, 60] and len(h.metrics) == len(h.snapshots) == 3
    assert _no_hooks(net) and net.training
    nc1 = h.series("nc1")
    assert nc1[-1] < 0.5 * nc1[0]
    assert h.series("train_error")[-1] < h.series("train_error")[0]
    snap = h.snapshots[-1]
    assert snap.features.shape == (30, 32) and torch.bincount(snap.labels).tolist() == [3] * 10
    assert snap.means.shape == (10, 32) and snap.weight.shape == (10, 32)
    features, _ = collapse.extract_features(net, x)
    again = collapse.collapse_metrics(features, y, net.fc3.weight, net.fc3.bias)
    assert again.as_dict() == pytest.approx(h.at(60).as_dict())
    assert h.zero_error_epoch() in (None, 10, 60)
    with pytest.raises(ValueError, match="epoch 5 was not measured"):
        h.at(5)
    with pytest.raises(ValueError, match="`name` must be one of train_error, nc1"):
        h.series("nc9")


def test_tracker_schedule_zero_error_epoch_and_bad_input(digits):
    x, y = digits
    tracker = collapse.CollapseTracker(x, y, every=2, keep_per_class=0)
    assert tracker.scheduled(4) and not tracker.scheduled(3)
    net = _net()
    assert tracker(3, net) is None and tracker.history.epoch == []
    tracker(4, net)
    assert tracker.history.snapshots[0].features.shape == (0, 32)
    tracker.history.train_error[:] = [0.0]
    assert tracker.history.zero_error_epoch() == 4
    with pytest.raises(ValueError, match=r"`labels` must have shape \(300,\), got \(3,\)"):
        collapse.CollapseTracker(x, y[:3])
    with pytest.raises(ValueError, match="`every` must be >= 1, got 0"):
        collapse.CollapseTracker(x, y, every=0)


# --------------------------------------------------------------------------------------------
# The unconstrained-features model


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_ufm_with_weight_decay_collapses_to_a_simplex_etf(loss):
    """Zhu et al. (2021): K = 4 classes, d = 8, 50 samples per class, weight decay."""
    result = collapse.train_ufm(4, 8, 50, loss=loss, weight_decay=5e-3, steps=1000, seed=1)
    m = result.metrics
    assert m.nc1 < 1e-3, m.nc1
    assert m.etf_distance_means < 1e-2 and m.etf_distance_weights < 1e-2, m
    assert m.self_duality < 1e-2, m.self_duality
    assert m.ncc_mismatch == 0
    assert result.features.shape == (200, 8) and result.weight.shape == (4, 8)
    assert result.labels.tolist() == sorted(result.labels.tolist())


def test_ufm_needs_room_and_weight_decay():
    cramped = collapse.train_ufm(4, 2, 20, steps=600).metrics  # d < C - 1: no ETF fits
    assert cramped.nc1 < 1e-6 and cramped.etf_distance_means > 0.3
    free = collapse.train_ufm(4, 8, 20, loss="mse", weight_decay=0.0, steps=600).metrics
    assert free.nc1 > 1e-3 and free.etf_distance_means > 0.05


def test_ufm_record_loss_and_imbalance():
    result = collapse.train_ufm(3, 4, [10, 10, 3], steps=300, record_every=100, bias=False)
    assert result.steps == [100, 200, 300] and len(result.history) == 3
    assert result.bias is None and torch.bincount(result.labels).tolist() == [10, 10, 3]
    assert result.series("loss") == result.loss and len(result.series("nc1")) == 3
    assert result.loss[-1] <= result.loss[0]
    value = collapse.ufm_loss(result.features, result.weight, None, result.labels,
                              weight_decay=5e-3)
    assert float(value) == pytest.approx(result.loss[-1])


def test_ufm_loss_matches_its_formula():
    g = torch.Generator().manual_seed(0)
    h, w, b = (torch.randn(6, 3, generator=g), torch.randn(2, 3, generator=g),
               torch.randn(2, generator=g))
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    z = h @ w.T + b
    penalty = 0.1 / 2 * w.pow(2).sum() + 0.2 / 2 * h.pow(2).sum() + 0.3 / 2 * b.pow(2).sum()
    ce = nn.functional.cross_entropy(z, y) + penalty
    mse = (z - nn.functional.one_hot(y, 2)).pow(2).sum(1).mean() / 2 + penalty
    kwargs = dict(weight_decay=0.1, feature_decay=0.2, bias_decay=0.3)
    assert float(collapse.ufm_loss(h, w, b, y, **kwargs)) == pytest.approx(float(ce))
    assert float(collapse.ufm_loss(h, w, b, y, loss="mse", **kwargs)) == pytest.approx(float(mse))


def test_ufm_bad_input():
    with pytest.raises(ValueError, match="`n_per_class` must be >= 2, got 1"):
        collapse.train_ufm(3, 4, 1)
    with pytest.raises(ValueError, match="a sequence of 3 ints .* got 2 values"):
        collapse.train_ufm(3, 4, [5, 5])
    with pytest.raises(ValueError, match="`loss` must be one of 'ce', 'mse', got 'hinge'"):
        collapse.train_ufm(3, 4, 5, loss="hinge")
    with pytest.raises(ValueError, match="`weight_decay` must be >= 0"):
        collapse.train_ufm(3, 4, 5, weight_decay=-1.0)
    with pytest.raises(ValueError, match="`steps` must be >= 1, got 0"):
        collapse.train_ufm(3, 4, 5, steps=0)
    h, w, y = torch.randn(4, 3), torch.randn(2, 3), torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"`weight` must have shape \(C, 3\), got \(2, 5\)"):
        collapse.ufm_loss(h, torch.randn(2, 5), None, y)
    with pytest.raises(ValueError, match=r"`bias` must have shape \(2,\), got \(3,\)"):
        collapse.ufm_loss(h, w, torch.zeros(3), y)
    with pytest.raises(ValueError, match=r"`labels` must be < 2"):
        collapse.ufm_loss(h, w, None, torch.tensor([0, 1, 2, 1]))


# --------------------------------------------------------------------------------------------
# Figures and explorers


@pytest.fixture(scope="module")
def tracked(digits):
    x, y = digits
    net = _net()
    tracker = collapse.CollapseTracker(x, y, at=[1, 5, 20], keep_per_class=4)
    train.fit(net, (x, y), epochs=20, batch_size=None, optimizer="sgd", lr=0.1,
              progress=False, callback=tracker)
    return tracker.history


def test_plot_collapse_draws_four_panels_for_runs_and_ufm(tracked):
    fig = plotting.plot_collapse(tracked)
    assert len(fig.axes) == 4 and fig.axes[0].get_yscale() == "log"
    assert list(fig.axes[0].lines[0].get_xdata()) == [1, 5, 20]
    ufm = collapse.train_ufm(3, 4, 5, steps=40, record_every=20)
    fig2 = plotting.plot_collapse(ufm, label="ufm")
    assert fig2.axes[3].get_xlabel() == "step"
    assert plotting.plot_collapse(ufm, axes=fig2.axes, label="again") is fig2
    with pytest.raises(ValueError, match="`axes` must be 4 axes, got 2"):
        plotting.plot_collapse(ufm, axes=fig2.axes[:2])
    with pytest.raises(TypeError, match="must be a collapse.CollapseHistory"):
        plotting.plot_collapse([1, 2])
    with pytest.raises(ValueError, match="no measurements"):
        plotting.plot_collapse(collapse.CollapseHistory())


def test_plot_class_means_puts_an_etf_on_a_regular_polygon(tracked):
    means = 2.0 * collapse.simplex_etf(5, 8, seed=0, dtype=torch.float64)
    fig = plotting.plot_class_means(means, weight=3 * means)
    offsets = fig.axes[0].collections[-1].get_offsets()
    radii = (offsets**2).sum(1) ** 0.5
    assert radii.max() - radii.min() < 1e-9
    assert radii[0] == pytest.approx(2.0 * math.sqrt(2 / 4))
    basis, centre = plotting.project_means(means, plane="pca")
    assert torch.allclose(basis.T @ basis, torch.eye(2, dtype=basis.dtype))
    fig = plotting.plot_snapshot(tracked.snapshots[-1], plane="pca")
    assert fig.axes[0].get_title() == "epoch 20"
    with pytest.raises(ValueError, match="`plane` must be 'etf' or 'pca', got 'tsne'"):
        plotting.plot_class_means(means, plane="tsne")
    with pytest.raises(ValueError, match=r"`weight` must have shape \(5, 8\)"):
        plotting.plot_class_means(means, weight=torch.zeros(4, 8))
    with pytest.raises(ValueError, match="need `labels` of the same length"):
        plotting.plot_class_means(means, features=torch.zeros(3, 8))
    with pytest.raises(ValueError, match=r"shape \(C >= 2, dim\)"):
        plotting.project_means(torch.zeros(1, 3))
    with pytest.raises(TypeError, match="`means` must be a tensor, got list"):
        plotting.plot_class_means([[0.0, 1.0], [1.0, 0.0]])


def test_collapse_explorer_state_follows_the_epoch_slider(tracked):
    box = widgets.collapse_explorer(tracked)
    assert box.state["epoch"] == 1 and box.state["nc1"] == tracked.metrics[0].nc1
    box.controls["epoch"].value = 20
    assert box.state["epoch"] == 20 and box.state["nc1"] == tracked.at(20).nc1
    assert box.state["train_error"] == tracked.train_error[-1]
    assert -1 <= box.state["mean_cosine"] < 0
    box.controls["plane"].value = "pca"
    assert box.state["renders"] == 3 and box.figure is not None
    with pytest.raises(TypeError, match="must be a collapse.CollapseHistory"):
        widgets.collapse_explorer({"epoch": [1]})
    with pytest.raises(ValueError, match="no snapshots"):
        widgets.collapse_explorer(collapse.CollapseHistory())


def test_ufm_explorer_state_follows_its_controls():
    box = widgets.ufm_explorer(3, 4, n_per_class=6, steps=200)
    assert box.state["metrics"]["nc1"] < 1e-6
    assert box.state["mean_cosine"] == pytest.approx(-0.5, abs=1e-3)
    box.controls["num_classes"].value = 5
    assert box.state["etf_cosine"] == pytest.approx(-0.25)
    assert box.state["mean_cosine"] == pytest.approx(-0.25, abs=1e-2)
    box.controls["dim"].value = 2  # d < C - 1: the means cannot spread as an ETF
    assert box.state["metrics"]["etf_distance_means"] > 0.3
    box.controls["loss"].value = "mse"
    box.controls["weight_decay"].value = 0.0
    assert box.state["values"] == {"num_classes": 5, "dim": 2, "weight_decay": 0.0,
                                   "loss": "mse"}
    with pytest.raises(ValueError, match="`weight_decay` must be one of"):
        widgets.ufm_explorer(weight_decay=0.3)
    with pytest.raises(ValueError, match="num_classes <= 10 and dim <= 16"):
        widgets.ufm_explorer(12, 4)


def test_fit_terminal_phase_decays_the_learning_rate_and_calls_back(digits):
    x, y = digits
    net = _net()
    seen = []

    def callback(epoch, model, history):
        seen.append(epoch)
        return epoch == 4  # stop early

    before = [p.detach().clone() for p in net.parameters()]
    history = collapse.fit_terminal_phase(net, (x, y), steps=10, progress=False,
                                          callback=callback)
    assert seen == [1, 2, 3, 4] and history.epoch == [1, 2, 3, 4]
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    # the cosine schedule over 3 steps uses the learning rates 0.1, 0.075, 0.025
    ours, manual = _net(), _net()
    collapse.fit_terminal_phase(ours, (x, y), steps=3, lr=0.1, momentum=0.0, weight_decay=0.0,
                                progress=False)
    manual.train()
    for lr in (0.1, 0.075, 0.025):
        manual.zero_grad()
        nn.functional.cross_entropy(manual(x), y).backward()
        with torch.no_grad():
            for p in manual.parameters():
                p -= lr * p.grad
    for p, q in zip(ours.parameters(), manual.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    with pytest.raises(ValueError, match="`steps` must be >= 1, got 0"):
        collapse.fit_terminal_phase(net, (x, y), steps=0)
    with pytest.raises(ValueError, match="`lr` must be > 0"):
        collapse.fit_terminal_phase(net, (x, y), lr=0.0)
