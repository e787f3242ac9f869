"""The saliency figures and the saliency explorer, driven headless."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from deepscope import data, models, plotting, widgets
from deepscope import saliency as S


@pytest.fixture
def cnn():
    torch.manual_seed(0)
    return models.small_cnn(channels=(4, 8, 8))


def test_attribution_overlay_and_grid(cnn):
    x, y = data.digits("test")
    maps = {"gradient": S.gradient(cnn, x[:3], y[:3]),
            "Grad-CAM": S.grad_cam(cnn, x[:3], y[:3], "conv3")}
    fig = plotting.show_attributions(x[:3], maps, titles=y[:3].tolist(),
                                     signed={"Grad-CAM": False},
                                     boxes=torch.tensor([[1, 1, 5, 5]] * 3))
    assert len(fig.axes) == 9 and fig.axes[1].get_title() == "gradient"
    assert len(fig.axes[1].patches) == 1  # the box
    assert fig.axes[1].images[0].get_cmap().name == "RdBu_r"
    assert fig.axes[2].images[0].get_cmap().name == "magma"
    assert len(fig.axes[1].collections) == 1  # the ink contour
    ax = plotting.attribution_overlay(x[0], maps["gradient"][0], title="t")
    assert ax.get_title() == "t"
    limit = float(maps["gradient"][0].abs().max())
    assert ax.images[0].get_clim() == pytest.approx((-limit, limit))
    rgb = plotting.attribution_overlay(torch.rand(3, 8, 8), torch.rand(8, 8), signed=False)
    assert len(rgb.images) == 2 and rgb.images[1].get_alpha() == 0.6
    with pytest.raises(ValueError, match="must have the same height and width"):
        plotting.attribution_overlay(x[0], torch.zeros(4, 4))
    with pytest.raises(ValueError, match=r"expected an attribution of shape \(H, W\)"):
        plotting.attribution_overlay(x[0], torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="at least one method"):
        plotting.show_attributions(x[:2], {})
    with pytest.raises(ValueError, match="has 3 entries for 2 images"):
        plotting.show_attributions(x[:2], {"g": maps["gradient"]})


def test_randomization_and_removal_plots(cnn):
    x, y = data.digits("test")
    results = {"gradient": S.cascading_randomization(cnn, x[:4], y[:4], S.gradient,
                                                     progress=False),
               "edges": S.cascading_randomization(cnn, x[:4], y[:4], S.edge_detector,
                                                  progress=False)}
    fig = plotting.plot_randomization(results)
    ax = fig.axes[0]
    assert len(ax.lines) == 3  # two methods and the zero line
    assert [t.get_text() for t in ax.get_xticklabels()][:2] == ["original", "+fc"]
    assert np.allclose(ax.lines[1].get_ydata(), 1.0)
    fig = plotting.plot_removal_curves([0.1, 0.5], {"a": torch.tensor([0.9, 0.5]),
                                                    "b": [0.9, 0.8]}, title="ROAD")
    assert len(fig.axes[0].lines) == 2 and fig.axes[0].get_title() == "ROAD"
    with pytest.raises(ValueError, match="has 1 points for 2 fractions"):
        plotting.plot_removal_curves([0.1, 0.5], {"a": [0.9]})
    _, ax = plt.subplots()
    assert plotting.plot_removal_curves([0.1], {"a": [1.0]}, ax=ax) is ax.figure
    _, ax = plt.subplots()
    assert plotting.plot_randomization(results, ax=ax) is ax.figure
    # blank maps: undefined correlations are counted on the figure, not silently averaged away
    corr = results["gradient"].correlation.clone()
    corr[0, :3] = float("nan")
    holes = results["gradient"]._replace(correlation=corr)
    ax = plotting.plot_randomization({"Grad-CAM": holes}).axes[0]
    assert ax.get_legend().get_texts()[0].get_text() == "Grad-CAM (3 undefined)"
    assert [t.get_text() for t in ax.texts] == ["3 blank"]


def test_saliency_explorer_state_follows_controls(cnn):
    x, y = data.digits("test")
    was_training = cnn.training
    box = widgets.saliency_explorer(cnn, x[:6], y[:6], layer="conv3", samples=4)
    assert cnn.training == was_training
    assert set(box.controls) == {"index", "method", "sigma", "samples"}
    assert "Grad-CAM" in box.controls["method"].options
    assert box.state["method"] == "gradient" and box.state["index"] == 0
    gradient_map = box.state["map"]
    assert torch.allclose(gradient_map, S.gradient(cnn, x[:1], box.state["prediction"])[0, 0])
    box.controls["index"].value = 3
    assert box.state["index"] == 3 and box.state["label"] == int(y[3])
    box.controls["method"].value = "SmoothGrad"
    first = box.state["map"].clone()
    want = S.smoothgrad(cnn, x[3:4], box.state["prediction"], box.state["sigma"], 4, seed=0)
    assert torch.allclose(first, want[0, 0])
    box.controls["sigma"].value = 0.4
    assert box.state["sigma"] == 0.4 and not torch.allclose(box.state["map"], first)
    box.controls["method"].value = "integrated gradients"
    box.controls["samples"].value = 32
    ig = S.integrated_gradients(cnn, x[3:4], box.state["prediction"], steps=32)
    assert torch.allclose(box.state["map"], ig[0, 0])
    assert box.state["total"] == pytest.approx(float(ig.sum()), abs=1e-5)
    box.controls["method"].value = "Grad-CAM"
    assert (box.state["map"] >= 0).all() and box.state["renders"] == 7
    r, c = box.state["peak"]
    assert box.state["map"].abs()[r, c] == box.state["map"].abs().max()
    plain = widgets.saliency_explorer(cnn, x[:2], y[:2])
    assert "Grad-CAM" not in plain.controls["method"].options
    with pytest.raises(ValueError, match="`layer` must name a submodule"):
        widgets.saliency_explorer(cnn, x[:2], y[:2], layer="conv8")
    with pytest.raises(ValueError, match=r"`x` must have 4 dimensions \(N, C, H, W\)"):
        widgets.saliency_explorer(cnn, x[:2].flatten(1), y[:2])
