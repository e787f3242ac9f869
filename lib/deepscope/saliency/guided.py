"""Modified-backpropagation maps: guided backpropagation and the deconvnet.

Both methods run the ordinary forward pass and change only how the gradient passes each ReLU
y = max(z, 0) on the way back (Springenberg et al. 2015, Fig. 1; Zeiler & Fergus 2014):

    gradient          dz = dy * [z > 0]
    deconvnet         dz = max(dy, 0)                (ignores the forward pass)
    guided backprop   dz = max(dy, 0) * [z > 0]      (both rules at once)

Every other layer (linear, convolution, pooling) backpropagates as usual. The result is
"gradient-like" but not the gradient of any function of the input, and it is famously almost
independent of the top layers' weights: Adebayo et al. (2018, Fig. 2) found guided backprop's
maps unchanged when the classifier was re-initialised, the headline failure of their
randomisation test (chapter 1, notebook 4; Nie, Zhang & Patel 2018 explain why: the rule
reconstructs the image rather than the decision).

How: a forward pre-hook and a forward hook on every ``nn.ReLU`` module swap in an autograd
function whose forward returns the module's output and whose backward applies the rule to the
module's input. Like Captum's ``GuidedBackprop`` and ``Deconvolution``, only ReLUs that are
modules are seen (a ``torch.relu`` call inside ``forward`` keeps the plain gradient rule); a
model without any ``nn.ReLU`` module is refused, since the result would silently be the gradient.
"""

from __future__ import annotations

import torch
from torch import nn

from .._guards import eval_mode, removing_hooks
from ._core import check_batch_size, check_inputs, target_gradients

__all__ = ["guided_backprop", "deconvolution", "MODIFIED_RULES"]

#: The backward rules by name (see the module docstring).
MODIFIED_RULES = ("guided", "deconvnet")


class _GuidedReLU(torch.autograd.Function):
    """Returns the stored ReLU output; backward passes max(grad, 0) * [z > 0] to z."""

    @staticmethod
    def forward(ctx, z, y):
        ctx.save_for_backward(z)
        return y.detach().clone()

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        return grad.clamp_min(0) * (z > 0).to(grad.dtype), None


class _DeconvReLU(torch.autograd.Function):
    """Returns the stored ReLU output; backward passes max(grad, 0) to z."""

    @staticmethod
    def forward(ctx, z, y):
        return y.detach().clone()

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp_min(0), None


def _modified_gradients(model, x, target, rule: str, fn: str, batch_size) -> torch.Tensor:
    model, x, target, max_target = check_inputs(model, x, target, fn)
    batch_size = check_batch_size(batch_size, fn)
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise ValueError(f"{fn}: the model must use nn.ReLU modules (the rule replaces their "
                         f"backward pass), got a model with none; a functional torch.relu is "
                         f"invisible to hooks")
    function = _GuidedReLU if rule == "guided" else _DeconvReLU
    with eval_mode(model), removing_hooks() as handles:
        inputs: dict = {}

        def keep_input(module, args):
            inputs[module] = args[0]
            return (args[0].clone(),)  # an in-place ReLU then overwrites the copy, not z

        def swap(module, args, output):
            return function.apply(inputs.pop(module), output)

        for relu in relus:
            handles.append(relu.register_forward_pre_hook(keep_input))
            handles.append(relu.register_forward_hook(swap))
        size = len(x) if batch_size is None else batch_size
        return torch.cat([target_gradients(model, x[i:i + size], target[i:i + size],
                                           max_target, fn)
                          for i in range(0, len(x), size)])


def guided_backprop(model, x: torch.Tensor, target, *,
                    batch_size: int | None = None) -> torch.Tensor:
    """Return guided backpropagation of the target score (Springenberg, Dosovitskiy, Brox &
    Riedmiller 2015, "Striving for simplicity: the all convolutional net", section 3.4).

    The backward pass through each ``nn.ReLU`` keeps only positive gradients at units that were
    active in the forward pass: dz = max(dy, 0) * [z > 0]. Matches Captum's ``GuidedBackprop``.

    Args:
        model: classifier mapping (B, ...) to (B, C) whose ReLUs are ``nn.ReLU`` modules
            (in-place ones too; a module may be used several times per forward pass).
        x: float inputs (B, ...).
        target: an int or a LongTensor (B,).
        batch_size: most images per backward pass (None: all at once).

    Returns:
        The map, shape of ``x``. The model's mode, weights and hooks are left as they were.
    """
    return _modified_gradients(model, x, target, "guided", "guided_backprop", batch_size)


def deconvolution(model, x: torch.Tensor, target, *,
                  batch_size: int | None = None) -> torch.Tensor:
    """Return the deconvnet map of the target score (Zeiler & Fergus 2014, "Visualizing and
    understanding convolutional networks"; the backward form of Springenberg et al. 2015).

    The backward pass through each ``nn.ReLU`` keeps the positive gradients regardless of the
    forward pass: dz = max(dy, 0). Matches Captum's ``Deconvolution``. Arguments and result as
    `guided_backprop`.
    """
    return _modified_gradients(model, x, target, "deconvnet", "deconvolution", batch_size)
