"""The explorer pattern shared by every widget of the book, and the preface's digits explorer."""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as W
import matplotlib.pyplot as plt
import torch
from IPython import get_ipython
from IPython.display import display

from .._checks import check_labels, check_module, check_tensor
from .._guards import eval_mode

__all__ = ["explorer", "digits_explorer"]


def explorer(
    controls: dict[str, W.ValueWidget],
    render: Callable[[dict], tuple[plt.Figure | None, dict]],
    *,
    title: str | None = None,
) -> W.VBox:
    """Build an interactive explorer: controls above an output that ``render`` redraws.

    Args:
        controls: name -> ipywidgets control; every change of a ``.value`` triggers a redraw.
        render: ``render(values) -> (figure, state)`` where ``values`` maps each control name to
            its current value; the figure (or None) is shown in the output and closed, the
            state dict becomes ``box.state``.
        title: optional heading shown above the controls.

    Returns:
        A ``VBox`` with ``.controls``, ``.output``, ``.state`` and ``.figure`` (module docstring).
    """
    output = W.Output()
    children = ([W.HTML(f"<b>{title}</b>")] if title else []) + [
        W.HBox(list(controls.values())), output
    ]
    box = W.VBox(children)
    box.controls, box.output, box.state, box.figure = dict(controls), output, {"renders": 0}, None

    def redraw(_change=None) -> None:
        values = {name: control.value for name, control in box.controls.items()}
        figure, state = render(values)
        renders = box.state["renders"] + 1
        box.state = {**state, "values": values, "renders": renders}
        box.figure = figure
        if get_ipython() is not None:  # in a kernel: draw; headless tests read .state/.figure
            with output:
                output.clear_output(wait=True)
                if figure is not None:
                    display(figure)
        if figure is not None:
            plt.close(figure)

    for control in box.controls.values():
        control.observe(redraw, names="value")
    box.redraw = redraw
    redraw()
    return box


def digits_explorer(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> W.VBox:
    """Explore a digits classifier's predictions: pick an image, see it and the class
    probabilities softmax(model(x_i)).

    Args:
        model: a classifier mapping (B, 1, 8, 8) images to (B, 10) logits.
        x: images (N, 1, H, W), float.
        y: labels (N,), long.

    Returns:
        An `explorer` with control ``index``; its state holds ``index``, ``label``,
        ``prediction`` and ``probabilities`` (a list of 10 floats).
    """
    fn = "digits_explorer"
    check_module(model, fn)
    check_tensor(x, "x", fn, ndim=4, like="(N, 1, H, W)")
    y = check_labels(y, len(x), fn)
    with torch.no_grad(), eval_mode(model):
        probabilities = torch.softmax(model(x), dim=1).cpu()

    def render(values):
        i = values["index"]
        fig, (ax_img, ax_bar) = plt.subplots(1, 2, figsize=(6.5, 2.6))
        ax_img.imshow(x[i, 0].detach().cpu().numpy(), cmap="gray_r")
        ax_img.set_title(f"image {i}, label {int(y[i])}")
        ax_img.axis("off")
        p = probabilities[i]
        prediction = int(p.argmax())
        colors = ["tab:green" if k == prediction else "tab:gray" for k in range(len(p))]
        ax_bar.bar(range(len(p)), p.numpy(), color=colors)
        ax_bar.set(xticks=range(len(p)), ylim=(0, 1), xlabel="class", ylabel="probability",
                   title=f"prediction {prediction}")
        fig.tight_layout()
        state = {"index": i, "label": int(y[i]), "prediction": prediction,
                 "probabilities": p.tolist()}
        return fig, state

    slider = W.IntSlider(value=0, min=0, max=len(x) - 1, description="image",
                         continuous_update=False)
    return explorer({"index": slider}, render, title="What does the classifier see?")
