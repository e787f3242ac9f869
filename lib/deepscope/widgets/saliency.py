"""Explorers of the saliency chapter (factories built on `deepscope.widgets.core.explorer`)."""

from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt
import torch

from .. import saliency
from .._checks import check_int, check_labels, check_module, check_tensor
from .._guards import eval_mode
from ..plotting.saliency import attribution_overlay
from .core import explorer

__all__ = ["saliency_explorer", "EXPLORER_METHODS"]

#: Methods the explorer offers: label -> function (model, x, target, sigma, samples) -> map.
EXPLORER_METHODS = {
    "gradient": lambda m, x, t, s, n, layer: saliency.gradient(m, x, t),
    "gradient x input": lambda m, x, t, s, n, layer: saliency.input_x_gradient(m, x, t),
    "SmoothGrad": lambda m, x, t, s, n, layer: saliency.smoothgrad(m, x, t, s, n, seed=0),
    "integrated gradients": lambda m, x, t, s, n, layer: saliency.integrated_gradients(
        m, x, t, steps=max(n, 1)),
    "Grad-CAM": lambda m, x, t, s, n, layer: saliency.grad_cam(m, x, t, layer)[:, None],
}


def saliency_explorer(model, x: torch.Tensor, y: torch.Tensor, *, layer=None,
                      sigma: float = 0.15, samples: int = 16):
    """Explore attribution maps of a classifier: pick an image, a method, SmoothGrad's noise
    level sigma and the number of samples n (also IG's number of steps).

    Args:
        model: classifier mapping (N, C, H, W) images to (N, classes) scores.
        x: float images (N, C, H, W).
        y: labels (N,); the maps explain the predicted class.
        layer: a conv layer (module or name) to add Grad-CAM to the methods (None: no Grad-CAM).
        sigma, samples: initial noise level and sample count.

    Returns:
        An `explorer` with controls ``index``, ``method``, ``sigma`` and ``samples``; its state
        holds ``index``, ``label``, ``prediction``, ``method``, ``sigma``, ``samples``, ``map``
        (the (H, W) map as a tensor, channels summed), ``peak`` (row, col of max |map|) and
        ``total`` (the map's sum).
    """
    fn = "saliency_explorer"
    check_module(model, fn)
    check_tensor(x, "x", fn, ndim=4, like="(N, C, H, W)")
    y = check_labels(y, len(x), fn, name="y")
    samples = check_int(samples, "samples", fn)
    methods = dict(EXPLORER_METHODS)
    if layer is None:
        methods.pop("Grad-CAM")
    else:
        saliency.find_layer(model, layer, fn)
    with torch.no_grad(), eval_mode(model):
        predictions = model(x).argmax(1).cpu()

    def render(values):
        i, method = values["index"], values["method"]
        target = int(predictions[i])
        attribution = methods[method](model, x[i:i + 1], target, values["sigma"],
                                      values["samples"], layer)[0].detach().cpu()
        amap = attribution.sum(0)
        fig, (ax_img, ax_map) = plt.subplots(1, 2, figsize=(5.2, 2.7))
        ax_img.imshow(x[i].detach().cpu().sum(0).numpy(), cmap="gray_r")
        ax_img.set_title(f"label {int(y[i])}, predicted {target}", fontsize=9)
        ax_img.axis("off")
        signed = method not in ("Grad-CAM",)
        attribution_overlay(x[i], amap, ax=ax_map, signed=signed, title=method)
        fig.tight_layout()
        flat = int(amap.abs().flatten().argmax())
        state = {"index": i, "label": int(y[i]), "prediction": target, "method": method,
                 "sigma": values["sigma"], "samples": values["samples"], "map": amap,
                 "peak": divmod(flat, amap.shape[1]), "total": float(amap.sum())}
        return fig, state

    controls = {
        "index": W.IntSlider(value=0, min=0, max=len(x) - 1, description="image",
                             continuous_update=False),
        "method": W.Dropdown(options=list(methods), value="gradient", description="method"),
        "sigma": W.FloatSlider(value=sigma, min=0.01, max=0.6, step=0.01, description="σ",
                               continuous_update=False),
        "samples": W.IntSlider(value=samples, min=1, max=128, description="n",
                               continuous_update=False),
    }
    return explorer(controls, render, title="Saliency maps: which pixels move the score?")
