"""Explorers of the collapse chapter (factories built on `deepscope.widgets.core.explorer`)."""

from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt
import torch

from .._checks import check_choice, check_float, check_int
from .core import explorer

__all__ = ["collapse_explorer", "ufm_explorer"]


def _mean_cosine(centred: torch.Tensor) -> float:
    """Average pairwise cosine of the rows of (C, d) (the ETF has -1/(C-1))."""
    unit = centred / centred.norm(dim=1, keepdim=True).clamp_min(1e-300)
    cos = unit @ unit.T
    c = cos.shape[0]
    return float((cos.sum() - cos.diagonal().sum()) / (c * (c - 1)))


def collapse_explorer(history, *, plane: str = "etf") -> W.VBox:
    """Explore a recorded training run epoch by epoch: the class means, kept features and
    classifier rows in the ETF (or PCA) plane, beside the NC1 and NC2 curves with the chosen
    epoch marked.

    Args:
        history: a `deepscope.collapse.CollapseHistory` (``tracker.history``) with snapshots.
        plane: the initial projection, ``"etf"`` or ``"pca"``.

    Returns:
        An `explorer` with controls ``epoch`` (a slider over the measured epochs) and ``plane``;
        its state holds ``epoch``, ``train_error``, ``nc1``, ``etf_distance``, ``self_duality``,
        ``ncc_mismatch`` and ``mean_cosine`` (of the centred means; -1/(C-1) for an ETF).
    """
    from ..collapse import CollapseHistory
    from ..plotting.collapse import plot_snapshot

    fn = "collapse_explorer"
    if not isinstance(history, CollapseHistory):
        raise TypeError(f"{fn}: `history` must be a collapse.CollapseHistory (tracker.history), "
                        f"got {type(history).__name__}")
    if not history.snapshots:
        raise ValueError(f"{fn}: `history` holds no snapshots; train with a CollapseTracker "
                         "as the callback first")
    check_choice(plane, "plane", fn, ("etf", "pca"))
    epochs = list(history.epoch)
    nc1_curve = history.series("nc1")
    etf_curve = history.series("etf_distance_means")

    def render(values):
        i = epochs.index(values["epoch"])
        snapshot, metrics = history.snapshots[i], history.metrics[i]
        fig, (ax_plane, ax_curve) = plt.subplots(1, 2, figsize=(9, 4))
        plot_snapshot(snapshot, plane=values["plane"], ax=ax_plane,
                      title=f"epoch {snapshot.epoch}: class means, features, classifier")
        ax_curve.plot(epochs, nc1_curve, label="NC1")
        ax_curve.plot(epochs, etf_curve, label="NC2: ETF distance of means")
        ax_curve.scatter([epochs[i]] * 2, [nc1_curve[i], etf_curve[i]], color="black", zorder=3)
        ax_curve.set(xscale="log" if epochs[0] > 0 else "linear", yscale="log", xlabel="epoch",
                     title=f"training error {history.train_error[i]:.3f}")
        ax_curve.legend(fontsize=8)
        fig.tight_layout()
        centred = snapshot.means - snapshot.global_mean
        state = {
            "epoch": snapshot.epoch,
            "train_error": history.train_error[i],
            "nc1": metrics.nc1,
            "etf_distance": metrics.etf_distance_means,
            "self_duality": metrics.self_duality,
            "ncc_mismatch": metrics.ncc_mismatch,
            "mean_cosine": _mean_cosine(centred),
        }
        return fig, state

    slider = W.SelectionSlider(options=epochs, value=epochs[0], description="epoch",
                               continuous_update=False)
    choice = W.ToggleButtons(options=["etf", "pca"], value=plane, description="plane")
    return explorer({"epoch": slider, "plane": choice}, render,
                    title="Neural collapse, epoch by epoch")


def ufm_explorer(num_classes: int = 4, dim: int = 8, *, weight_decay: float = 5e-3,
                 loss: str = "ce", n_per_class: int = 20, steps: int = 400,
                 seed: int = 0) -> W.VBox:
    """Explore the unconstrained-features model: choose the number of classes C, the feature
    dimension d, the weight decay and the loss; see the trained features, class means and
    classifier in the ETF plane, and the collapse metrics (`deepscope.collapse.train_ufm`).

    Args:
        num_classes, dim, weight_decay, loss: the initial control values (weight decay from
            0, 1e-4, 1e-3, 5e-3, 1e-2, 5e-2).
        n_per_class, steps, seed: fixed settings of every `train_ufm` run (each redraw trains
            one, in well under a second for the default sizes; results are cached).

    Returns:
        An `explorer` with controls ``num_classes``, ``dim``, ``weight_decay`` and ``loss``;
        its state holds ``metrics`` (a dict of `collapse_metrics`), ``mean_cosine`` of the
        centred means and ``etf_cosine`` = -1/(C-1).
    """
    from ..collapse import train_ufm
    from ..plotting.collapse import plot_class_means

    fn = "ufm_explorer"
    num_classes = check_int(num_classes, "num_classes", fn, minimum=2)
    dim = check_int(dim, "dim", fn)
    if num_classes > 10 or dim > 16:
        raise ValueError(f"{fn}: the explorer offers num_classes <= 10 and dim <= 16, "
                         f"got {num_classes} and {dim}")
    decays = [0.0, 1e-4, 1e-3, 5e-3, 1e-2, 5e-2]
    weight_decay = check_float(weight_decay, "weight_decay", fn, nonnegative=True)
    if weight_decay not in decays:
        raise ValueError(f"{fn}: `weight_decay` must be one of {decays}, got {weight_decay}")
    check_choice(loss, "loss", fn, ("ce", "mse"))
    n_per_class = check_int(n_per_class, "n_per_class", fn, minimum=2)
    steps = check_int(steps, "steps", fn)
    cache: dict[tuple, object] = {}

    def render(values):
        key = (values["num_classes"], values["dim"], values["weight_decay"], values["loss"])
        if key not in cache:
            cache[key] = train_ufm(key[0], key[1], n_per_class, weight_decay=key[2],
                                   loss=key[3], steps=steps, seed=seed)
        result = cache[key]
        means = torch.stack([result.features[result.labels == k].mean(0)
                             for k in range(key[0])])
        centre = result.features.mean(0)
        fig, (ax_plane, ax_bar) = plt.subplots(1, 2, figsize=(9, 4))
        plot_class_means(means, centre, weight=result.weight, features=result.features,
                         labels=result.labels, ax=ax_plane,
                         title=f"UFM: C={key[0]}, d={key[1]}, wd={key[2]:g}, {key[3]}")
        m = result.metrics.as_dict()
        names = ["nc1", "equinorm_means", "equiangular_means", "etf_distance_means",
                 "self_duality"]
        shown = [max(m[k], 1e-16) if m[k] == m[k] else float("nan") for k in names]
        ax_bar.bar(range(len(names)), shown, color="tab:blue")
        ax_bar.set(yscale="log", ylim=(1e-16, 10), xticks=range(len(names)),
                   title="collapse metrics (0 = perfect collapse)")
        ax_bar.set_xticklabels(["NC1", "equinorm", "equiangular", "ETF dist.", "NC3"],
                               rotation=30)
        fig.tight_layout()
        state = {"metrics": m, "mean_cosine": _mean_cosine(means - centre),
                 "etf_cosine": -1.0 / (key[0] - 1), "loss": result.loss[-1]}
        return fig, state

    controls = {
        "num_classes": W.IntSlider(value=num_classes, min=2, max=10, description="classes C",
                                   continuous_update=False),
        "dim": W.IntSlider(value=dim, min=1, max=16, description="dim d",
                           continuous_update=False),
        "weight_decay": W.SelectionSlider(options=decays, value=weight_decay,
                                          description="weight decay", continuous_update=False),
        "loss": W.ToggleButtons(options=["ce", "mse"], value=loss, description="loss"),
    }
    return explorer(controls, render, title="The unconstrained-features model")
