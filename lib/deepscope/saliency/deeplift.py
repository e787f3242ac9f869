"""DeepLIFT with the rescale rule (Shrikumar, Greenside & Kundaje 2017).

DeepLIFT explains the difference f(x) - f(x') from a reference x' by propagating *multipliers*
m = delta out / delta in backwards, layer by layer, through a chain rule for multipliers. Linear
layers (Linear, Conv, average pooling, batch norm in eval mode) keep their gradient; each
elementwise nonlinearity y = g(z) replaces its derivative by the secant slope

    m = (g(z) - g(z')) / (z - z')      (the derivative g'(z) where |z - z'| < 1e-10),

and max pooling routes delta out to the maxima of x and of x' (Captum's rule). The attribution is
(x - x') * m, and it sums exactly to f(x) - f(x') ("summation-to-delta"), with no quadrature.

How: one forward pass of the batch [x; x'] with hooks on the nonlinear modules; each hook keeps
the module's output but swaps in a backward pass that applies the rescale multiplier. Like
Captum's ``DeepLift``, it sees only nonlinearities that are modules (``nn.ReLU``...), each used
once per forward pass: a ``torch.relu`` call inside ``forward`` is treated as linear, which breaks
summation-to-delta (check it with ``return_delta=True``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._forward import root_module
from .._guards import eval_mode, removing_hooks
from ._core import check_inputs, resolve_baseline, target_gradients, target_scores

__all__ = ["deeplift", "DEEPLIFT_ELEMENTWISE"]

#: Elementwise nonlinear modules that get the rescale rule.
DEEPLIFT_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.Sigmoid, nn.Tanh, nn.Softplus,
                        nn.GELU, nn.SiLU)
EPS = 1e-10


class _Rescale(torch.autograd.Function):
    """Identity on the stored output; backward multiplies by the rescale multiplier."""

    @staticmethod
    def forward(ctx, z, y, multiplier):
        ctx.save_for_backward(multiplier)
        return y.detach().clone()

    @staticmethod
    def backward(ctx, grad):
        (multiplier,) = ctx.saved_tensors
        return grad * multiplier, None, None


_POOLS = {nn.MaxPool1d: (F.max_pool1d, F.max_unpool1d),
          nn.MaxPool2d: (F.max_pool2d, F.max_unpool2d),
          nn.MaxPool3d: (F.max_pool3d, F.max_unpool3d)}


class _MaxPoolRescale(torch.autograd.Function):
    """Max pooling of [x; x'] whose backward routes delta out through both argmax patterns."""

    @staticmethod
    def forward(ctx, z, y, module):
        half = len(z) // 2
        pool, unpool = _POOLS[type(module)]
        _, indices = pool(z, module.kernel_size, module.stride, module.padding, module.dilation,
                          module.ceil_mode, True)
        ctx.save_for_backward(z, y, indices)
        ctx.module, ctx.unpool, ctx.half = module, unpool, half
        return y.detach().clone()

    @staticmethod
    def backward(ctx, grad):
        z, y, indices = ctx.saved_tensors
        m, h = ctx.module, ctx.half
        size = list(z.shape[-(indices.dim() - 2):])
        unpool = lambda g, idx: ctx.unpool(g, idx, m.kernel_size, m.stride, m.padding, size)
        g = grad[:h]
        y_x, y_ref = y[:h], y[h:]
        top = torch.maximum(y_x, y_ref)
        routed = unpool(g * (top - y_ref), indices[:h]) + unpool(g * (y_x - top), indices[h:])
        delta_in = z[:h] - z[h:]
        plain = unpool(g, indices[:h])
        grad_x = torch.where(delta_in.abs() < EPS, plain, routed / delta_in)
        return torch.cat([grad_x, torch.zeros_like(grad_x)]), None, None


def _hook_module(module, handles, inputs):
    """Register the hooks that apply DeepLIFT's rules to one module."""

    def keep_input(mod, args):
        inputs[mod] = args[0]
        return (args[0].clone(),)  # an in-place module then works on the copy

    def rescale(mod, args, output):
        z = inputs.pop(mod)
        if type(mod) in _POOLS:
            return _MaxPoolRescale.apply(z, output, mod)
        half = len(z) // 2
        with torch.enable_grad():
            zz = z.detach().clone().requires_grad_(True)
            # .forward skips the hooks; `zz * 1` lets an in-place module act on a non-leaf
            (slope,) = torch.autograd.grad(mod.forward(zz * 1).sum(), zz)
        delta_in = z[:half] - z[half:]
        delta_out = (output[:half] - output[half:]).detach()
        safe = torch.where(delta_in.abs() < EPS, torch.ones_like(delta_in), delta_in)
        secant = torch.where(delta_in.abs() < EPS, slope[:half], delta_out / safe)
        return _Rescale.apply(z, output, torch.cat([secant, secant]).detach())

    handles.append(module.register_forward_pre_hook(keep_input))
    handles.append(module.register_forward_hook(rescale))


def deeplift(model, x: torch.Tensor, target, baseline=None, *, return_delta: bool = False,
             output=None):
    """Return DeepLIFT (rescale rule) attributions of the target score relative to a baseline.

    Implements Shrikumar, Greenside & Kundaje (2017), "Learning important features through
    propagating activation differences", with the rescale rule for the nonlinear modules in
    `DEEPLIFT_ELEMENTWISE` and max pooling (module docstring); matches
    ``captum.attr.DeepLift(model)`` (its default rescale rule) on such models.

    Args:
        model: classifier mapping (B, ...) to (B, C) built from modules (see module docstring).
        x: float inputs (B, ...).
        target: an int or a LongTensor (B,).
        baseline: the reference x': None (zeros), a number, or a tensor of shape x.shape[1:] or
            x.shape.
        return_delta: also return sum_i A_i - (f(x) - f(x')) per image (zero up to rounding
            when every nonlinearity is a hooked module).
        output: picks the class scores from dict/tuple outputs: a key, an index or a function
            (see `deepscope._forward`). ``model`` may be a module's bound method too, but not a
            plain function: the rules need the modules.

    Returns:
        Attributions of the shape of ``x`` (and the gap (B,) with ``return_delta``).
    """
    fn = "deeplift"
    model, x, target, max_target = check_inputs(model, x, target, fn, output=output,
                                                adapt=True)
    if root_module(model) is None:
        raise TypeError(f"{fn}: `model` must be an nn.Module or a bound method of one (the "
                        "rescale rule hooks its nonlinear modules), got a plain function")
    reference = resolve_baseline(baseline, x, fn, allow_many=False)[0].expand_as(x)
    chosen = [m for m in model.modules()
              if isinstance(m, DEEPLIFT_ELEMENTWISE) or type(m) in _POOLS]
    both = torch.cat([x, reference])
    with eval_mode(model), removing_hooks() as handles:
        inputs: dict = {}
        for module in chosen:
            _hook_module(module, handles, inputs)
        calls = {}
        handles += [m.register_forward_hook(
            lambda mod, a, o: calls.__setitem__(mod, calls.get(mod, 0) + 1)) for m in chosen]
        grads = target_gradients(model, both, torch.cat([target, target]), max_target, fn)
        reused = [type(m).__name__ for m, n in calls.items() if n > 1]
        if reused:
            raise ValueError(f"{fn}: each nonlinear module must be called once per forward "
                             f"pass (give every use its own module), got {reused[0]} called "
                             f"{max(calls.values())} times")
    attributions = (x - reference) * grads[: len(x)]
    if not return_delta:
        return attributions
    with torch.no_grad(), eval_mode(model):
        fx = target_scores(model, x, target, max_target, fn)
        fr = target_scores(model, reference, target, max_target, fn)
    return attributions, attributions.flatten(1).sum(1) - (fx - fr)
