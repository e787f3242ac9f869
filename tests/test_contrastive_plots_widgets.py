"""Figures and the temperature explorer of the contrastive chapter, driven headless."""

import math

import numpy as np
import pytest
import torch
from deepscope import contrastive as C
from deepscope import plotting, widgets


def test_plotting_names_are_exported():
    for name in ("plot_circle", "plot_angle_density", "plot_sphere", "plot_alignment_uniformity",
                 "plot_embedding_spectrum", "plot_anchor_gradients"):
        assert name in plotting.contrastive.__all__ and callable(getattr(plotting, name))
    assert widgets.contrastive.__all__ == ["temperature_explorer"]
    # star-imported beside the other chapters' figures: no name may shadow another chapter's
    for other in ("collapse", "core", "landscape", "saliency", "scaling"):
        clash = set(plotting.contrastive.__all__) & set(getattr(plotting, other).__all__)
        assert not clash, (other, clash)
        assert not set(widgets.contrastive.__all__) & set(getattr(widgets, other).__all__)
    assert plotting.plot_circle is plotting.contrastive.plot_circle


def test_circle_and_angle_density():
    z = torch.randn(40, 2)
    labels = torch.arange(40) % 4
    fig = plotting.plot_circle(z, labels, title="t")
    ax = fig.axes[0]
    offsets = ax.collections[0].get_offsets()
    radii = np.linalg.norm(offsets, axis=1)
    assert len(offsets) == 40 and radii.min() >= 1 - 1e-9 and radii.max() <= 1.04 + 1e-9
    assert ax.get_title() == "t"
    assert plotting.plot_circle(z.numpy()).axes[0].collections[0].get_offsets().shape == (40, 2)
    fig = plotting.plot_angle_density(z, labels)
    assert len(fig.axes[0].get_legend().get_texts()) == 5  # 4 classes + all
    with pytest.raises(ValueError, match=r"plot_circle: `z` must have shape \(N, 2\)"):
        plotting.plot_circle(torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"`labels` must have shape \(40,\)"):
        plotting.plot_circle(z, labels[:3])


def test_sphere():
    fig = plotting.plot_sphere(torch.randn(30, 3), torch.arange(30) % 3)
    assert fig.axes[0].name == "3d"
    with pytest.raises(ValueError, match=r"plot_sphere: `z` must have shape \(N, 3\)"):
        plotting.plot_sphere(torch.randn(5, 2))


def test_alignment_uniformity_plane():
    fig = plotting.plot_alignment_uniformity({
        "trained": ([0.9, 0.5, 0.3], [-0.5, -2.0, -3.0]),
        "random": (0.02, -0.05),
    })
    ax = fig.axes[0]
    xs = np.concatenate([line.get_xdata() for line in ax.lines])
    assert -3.0 in xs and -0.05 in xs
    with pytest.raises(ValueError, match="has 2 alignment values but 1 uniformity values"):
        plotting.plot_alignment_uniformity({"bad": ([1.0, 2.0], [0.5])})
    with pytest.raises(ValueError, match="non-empty mapping"):
        plotting.plot_alignment_uniformity({})


def test_spectrum():
    fig = plotting.plot_embedding_spectrum({"a": torch.tensor([1.0, 1e-3, 0.0]),
                                            "b": np.array([2.0, 1.0])})
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [1.0, 1e-3, 1e-12], rtol=1e-6)  # floor
    with pytest.raises(ValueError, match="non-empty mapping"):
        plotting.plot_embedding_spectrum([1.0])


def test_anchor_gradients_figure():
    anchor, positive, negatives = C.circle_toy(8, seed=0)
    result = C.anchor_gradients(anchor, positive, negatives, 0.3)
    fig = plotting.plot_anchor_gradients(anchor, positive, negatives, result, title="x")
    assert len(fig.axes) == 3  # circle, weights, colour bar
    with pytest.raises(ValueError, match="expected 2-D points"):
        plotting.plot_anchor_gradients(torch.randn(3), torch.randn(3), torch.randn(4, 3), result)


def test_temperature_explorer_state_follows_slider():
    box = widgets.temperature_explorer(n_negatives=40, seed=1, temperature=1.0)
    assert box.state["renders"] == 1 and len(box.state["weights"]) == 40
    warm = dict(box.state)
    assert sum(warm["weights"]) == pytest.approx(1.0, abs=1e-5)
    box.controls["temperature"].value = 0.05
    cold = box.state
    assert cold["renders"] == 2 and cold["temperature"] == pytest.approx(0.05, rel=0.01)
    assert cold["max_weight"] > warm["max_weight"] and cold["entropy"] < warm["entropy"]
    assert cold["hardest"] == warm["hardest"]  # the same negative, weighted more
    _, _, negatives = C.circle_toy(40, seed=1)
    assert cold["hardest"] == int((negatives @ torch.tensor([1.0, 0.0])).argmax())
    assert 0 <= cold["entropy"] <= math.log(40)
    assert box.figure is not None and "0.05" in box.figure._suptitle.get_text()


def test_temperature_explorer_custom_points_and_bad_input():
    negatives = torch.tensor([[0.0, 2.0], [-3.0, 0.0], [1.0, 1.0]])  # normalised inside
    box = widgets.temperature_explorer(negatives, anchor=torch.tensor([1.0, 0.0]),
                                       positive=torch.tensor([1.0, 0.1]))
    assert box.state["hardest"] == 2
    with pytest.raises(ValueError, match="expected points on the circle"):
        widgets.temperature_explorer(torch.randn(4, 3), anchor=torch.randn(3),
                                     positive=torch.randn(3))
    with pytest.raises(ValueError, match=r"`temperature` must lie in \[0.02, 5.0\], got 9.0"):
        widgets.temperature_explorer(temperature=9)
    with pytest.raises(ValueError, match="`min_temperature` must be > 0"):
        widgets.temperature_explorer(min_temperature=0)
