"""Explorers of the contrastive chapter (factories built on `deepscope.widgets.core.explorer`)."""

from __future__ import annotations

import ipywidgets as W
import numpy as np
import torch

from .._checks import check_float, check_tensor
from ..contrastive.geometry import circle_toy
from ..contrastive.losses import anchor_gradients, weight_entropy
from ..plotting.contrastive import plot_anchor_gradients
from .core import explorer

__all__ = ["temperature_explorer"]


def temperature_explorer(
    negatives: torch.Tensor | None = None,
    *,
    anchor: torch.Tensor | None = None,
    positive: torch.Tensor | None = None,
    n_negatives: int = 32,
    seed: int = 0,
    temperature: float = 0.5,
    min_temperature: float = 0.02,
    max_temperature: float = 5.0,
) -> W.VBox:
    """Explore how the InfoNCE temperature decides which negatives get pushed, on points on the
    circle: a log-scale slider for tau; the figure shows each negative's weight softmax(s/tau)
    and the gradient-descent move of every point (`plot_anchor_gradients`).

    Args:
        negatives: (K, 2) points (normalised inside); None builds `circle_toy` with
            ``n_negatives`` and ``seed``.
        anchor, positive: (2,) points; default: the toy's (angle 0 and 0.35 rad).
        temperature: the slider's start value, in [min_temperature, max_temperature].

    Returns:
        An `explorer` with control ``temperature``; its state holds ``temperature``,
        ``weights`` (K floats), ``max_weight``, ``hardest`` (index of the heaviest negative),
        ``entropy`` (nats), ``positive_weight`` and ``loss``.
    """
    fn = "temperature_explorer"
    toy_anchor, toy_positive, toy_negatives = circle_toy(n_negatives, seed=seed)
    anchor = toy_anchor if anchor is None else anchor
    positive = toy_positive if positive is None else positive
    negatives = toy_negatives if negatives is None else negatives
    check_tensor(anchor, "anchor", fn, ndim=1, like="(2,)")
    check_tensor(positive, "positive", fn, ndim=1, like="(2,)")
    check_tensor(negatives, "negatives", fn, ndim=2, like="(K, 2)")
    if anchor.shape != (2,) or positive.shape != (2,) or negatives.shape[1] != 2:
        raise ValueError(f"{fn}: expected points on the circle: `anchor` and `positive` of shape "
                         f"(2,), `negatives` (K, 2), got {tuple(anchor.shape)}, "
                         f"{tuple(positive.shape)}, {tuple(negatives.shape)}")
    low = check_float(min_temperature, "min_temperature", fn, positive=True)
    high = check_float(max_temperature, "max_temperature", fn, positive=True)
    temperature = check_float(temperature, "temperature", fn, positive=True)
    if not low <= temperature <= high:
        raise ValueError(f"{fn}: `temperature` must lie in [{low}, {high}], got {temperature}")
    unit = lambda t: torch.nn.functional.normalize(t.detach().float().cpu(), dim=-1)  # noqa: E731
    anchor, positive, negatives = unit(anchor), unit(positive), unit(negatives)

    def render(values):
        tau = float(values["temperature"])
        result = anchor_gradients(anchor, positive, negatives, tau)
        fig = plot_anchor_gradients(anchor, positive, negatives, result,
                                    title=f"temperature τ = {tau:.3g}")
        weights = result.weights
        state = {
            "temperature": tau,
            "weights": weights.tolist(),
            "max_weight": float(weights.max()),
            "hardest": int(weights.argmax()),
            "entropy": float(weight_entropy(weights)),
            "positive_weight": float(result.positive_weight),
            "loss": float(result.loss),
        }
        return fig, state

    slider = W.FloatLogSlider(value=temperature, base=10, min=float(np.log10(low)),
                              max=float(np.log10(high)), step=0.05, description="τ",
                              continuous_update=False, readout_format=".3g")
    return explorer({"temperature": slider}, render,
                    title="Temperature: which negatives does InfoNCE push?")
