"""Class activation maps from gradients: Grad-CAM and Grad-CAM++.

Both weight the K feature maps A^k (B, K, h, w) of one layer by how much the target score
depends on them and sum:

    Grad-CAM   (Selvaraju et al. 2017):    L = ReLU(sum_k a_k A^k),  a_k = mean_ij g^k_ij
    Grad-CAM++ (Chattopadhay et al. 2018): L = ReLU(sum_k w_k A^k),
               w_k = sum_ij alpha^k_ij ReLU(g^k_ij),
               alpha^k_ij = g^2 / (2 g^2 + sum_ab A^k_ab g^3)  (g = g^k_ij)

where g^k_ij = dS/dA^k_ij is the gradient of the target score S.

The map has the layer's resolution (h, w); by default it is upsampled to the input's. For a
sequence layer with tokens (B, L, D) (``layout="channels_last"``) the channels are the D
features and the map has one value per token, (B, L).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice
from .._forward import root_module
from .._guards import eval_mode, removing_hooks
from ._core import check_batch_size, check_inputs, check_output

__all__ = ["grad_cam", "grad_cam_plus_plus", "layer_gradients", "find_layer", "LAYOUTS"]

INTERPOLATIONS = ("bilinear", "nearest", "bicubic", "area")


def find_layer(model: nn.Module, layer, fn: str = "find_layer") -> tuple[str, nn.Module]:
    """Return (name, module) for ``layer`` given as a submodule of ``model`` or its name
    (as in ``model.named_modules()``, e.g. ``"conv3"`` or ``"features.4"``)."""
    named = dict(model.named_modules())
    if isinstance(layer, str):
        if layer not in named or layer == "":
            options = ", ".join(repr(n) for n in list(named)[1:12])
            raise ValueError(f"{fn}: `layer` must name a submodule of the model (e.g. {options}), "
                             f"got {layer!r}")
        return layer, named[layer]
    if isinstance(layer, nn.Module):
        for name, module in named.items():
            if module is layer:
                return name, module
        raise ValueError(f"{fn}: `layer` must be a submodule of the model, got a "
                         f"{type(layer).__name__} that is not in it")
    raise TypeError(f"{fn}: `layer` must be an nn.Module or its name, got {type(layer).__name__}")


LAYOUTS = ("channels_first", "channels_last", "sequence_first")


def layer_gradients(model, x: torch.Tensor, target, layer, *,
                    output=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return a layer's output A (as the layer computed it) and the gradient dS/dA of the target
    score S.

    Runs one forward and one backward pass in eval mode with a temporary forward hook on
    ``layer`` (a module or its name); the hook is removed and the mode restored afterwards.
    The hook keeps the layer's output and hands its successors a copy, so in-place successors
    (``out += identity``, ``ReLU(inplace=True)``) cannot change A or dS/dA (Captum does the
    same). No parameter needs ``requires_grad``: frozen backbones work.

    Args:
        model: an ``nn.Module`` or any callable forward; ``output`` picks the class scores
            from dict/tuple outputs (a key, an index or a function; see `deepscope._forward`).
        x: inputs (B, ...) (integer token ids are accepted: no input gradient is taken).
        target: an int or a LongTensor (B,).
        layer: a submodule of the model or its name.

    Returns:
        ``(A, dS/dA)``, both of the layer's output shape.
    """
    fn = "layer_gradients"
    model, x, target, max_target = check_inputs(model, x, target, fn, output=output,
                                                adapt=True, floating=False)
    return _layer_gradients(model, x, target, max_target, layer, fn)


def _find(model, layer, fn):
    """Resolve ``layer`` against the model's own module tree (the root behind an adapter)."""
    root = root_module(model)
    if root is None:
        if not isinstance(layer, nn.Module):
            raise TypeError(f"{fn}: `layer` must be an nn.Module when `model` is a plain "
                            f"function (names need a module to look in), got "
                            f"{type(layer).__name__}")
        return type(layer).__name__, layer
    return find_layer(root, layer, fn)


def _layer_gradients(model, x, target, max_target, layer, fn):
    name, module = _find(model, layer, fn)
    seen: list[torch.Tensor] = []

    def keep(_module, _args, output):
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"{fn}: layer {name!r} must output a tensor, "
                            f"got {type(output).__name__}")
        if not output.requires_grad:  # a frozen backbone: the gradient starts here
            output = output.detach().requires_grad_(True)
        seen.append(output)
        with torch.enable_grad():
            return output.clone()  # successors, in-place ones too, work on a copy

    with eval_mode(model), removing_hooks() as handles, torch.enable_grad():
        handles.append(module.register_forward_hook(keep))
        out = check_output(model(x.detach()), len(x), max_target, fn)
        if len(seen) != 1:
            raise ValueError(f"{fn}: layer {name!r} must run exactly once per forward pass, "
                             f"got {len(seen)} calls")
        activation = seen[0]
        score = out.gather(1, target[:, None]).sum()
        grads = None
        if score.requires_grad:
            (grads,) = torch.autograd.grad(score, activation, allow_unused=True)
        if grads is None:
            raise ValueError(f"{fn}: the score does not depend on layer {name!r} through "
                             "autograd (is its output detached, or used under no_grad?)")
    return activation.detach(), grads


def _channels_first(t: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "channels_last":
        return t.movedim(-1, 1)
    if layout == "sequence_first":
        return t.permute(1, 2, 0)
    return t


def _cam(kind, model, x, target, layer, relu, upsample, interpolation, batch_size, output,
         layout):
    fn = kind
    model, x, target, max_target = check_inputs(model, x, target, fn, output=output,
                                                adapt=True, floating=False)
    check_choice(interpolation, "interpolation", fn, INTERPOLATIONS)
    check_choice(layout, "layout", fn, LAYOUTS)
    batch_size = check_batch_size(batch_size, fn) or len(x)
    maps = []
    for lo in range(0, len(x), batch_size):
        xb, tb = x[lo:lo + batch_size], target[lo:lo + batch_size]
        A, G = _layer_gradients(model, xb, tb, max_target, layer, fn)
        want = {"channels_first": "(B, K, h, w) or (B, K, L)",
                "channels_last": "(B, L, K) or (B, h, w, K)",
                "sequence_first": "(L, B, K)"}[layout]
        batch_dim = 1 if layout == "sequence_first" else 0
        if A.dim() < 3 or (layout == "sequence_first" and A.dim() != 3) or \
                A.shape[batch_dim] != len(xb):
            hint = ("; (L, B, D) activations of a Transformer with batch_first=False need "
                    "layout='sequence_first'" if A.dim() == 3 and batch_dim == 0 else "")
            raise ValueError(f"{fn}: `layer` must output feature maps {want} for layout "
                             f"{layout!r} with batch size B = {len(xb)}, got shape "
                             f"{tuple(A.shape)}{hint}")
        A, G = _channels_first(A, layout), _channels_first(G, layout)
        spatial = tuple(range(2, A.dim()))
        if kind == "grad_cam":
            weights = G.mean(dim=spatial, keepdim=True)
        else:
            g2, g3 = G * G, G * G * G
            denominator = 2 * g2 + A.sum(dim=spatial, keepdim=True) * g3
            alpha = torch.where(denominator != 0, g2 / torch.where(denominator != 0,
                                                                    denominator, 1.0), 0.0)
            weights = (alpha * torch.relu(G)).sum(dim=spatial, keepdim=True)
        cam = (weights * A).sum(dim=1, keepdim=True)
        if relu:
            cam = torch.relu(cam)
        if (upsample and layout == "channels_first" and A.dim() == x.dim()
                and A.shape[2:] != x.shape[2:]):
            smooth = interpolation in ("bilinear", "bicubic")
            mode = "linear" if smooth and cam.dim() == 3 else interpolation  # 1-D maps
            cam = F.interpolate(cam, size=x.shape[2:], mode=mode,
                                align_corners=False if smooth else None)
        maps.append(cam[:, 0])
    return torch.cat(maps)


def grad_cam(model, x: torch.Tensor, target, layer, *, relu: bool = True, upsample: bool = True,
             interpolation: str = "bilinear", batch_size: int | None = None, output=None,
             layout: str = "channels_first") -> torch.Tensor:
    """Return Grad-CAM maps of the target score at ``layer`` (Selvaraju et al. 2017, eq. 1-2).

    The layer's output is captured as the layer computed it (successors get a copy), so maps at
    a layer followed by in-place operations, as inside a ResNet block, are right; frozen
    backbones need no parameter gradients.

    Args:
        model: classifier mapping (B, C, H, W) to (B, classes): an ``nn.Module`` or any
            callable forward (then give ``layer`` as a module).
        x: images (B, C, H, W), or any (B, ...) input, token ids included.
        target: an int or a LongTensor (B,).
        layer: the module (or its name, e.g. ``"conv3"``) whose output feature maps (B, K, h, w)
            are weighted; usually the last convolutional block.
        relu: apply the ReLU of the paper (Captum's ``LayerGradCam`` omits it unless
            ``relu_attributions=True``; the unrectified map shows negative evidence too).
        upsample: resize the (h, w) map to the input's (H, W) with ``interpolation``
            (``"bilinear"``, ``"nearest"``, ``"bicubic"`` or ``"area"``; Captum's
            ``LayerAttribution.interpolate`` defaults to ``"nearest"``).
        batch_size: most images per forward pass.
        output: picks the class scores from a model returning a dict, a tuple or an object: a
            key, an index or a function (see `deepscope._forward`); None for a tensor.
        layout: where the layer's channels are: ``"channels_first"`` (B, K, *positions), CNN
            feature maps; ``"channels_last"`` (B, *positions, K), e.g. the tokens (B, L, D) of a
            Transformer with ``batch_first=True``; ``"sequence_first"`` (L, B, K), a Transformer
            with ``batch_first=False``. The weights average the gradient over positions, and the
            map has one value per position: a per-token map (B, L) for sequences.
            Upsampling applies to ``"channels_first"`` maps only.

    Returns:
        One map per image: (B, H, W) when upsampled, else (B, *positions) at the layer's
        resolution ((B, L) for a sequence layer).
    """
    return _cam("grad_cam", model, x, target, layer, relu, upsample, interpolation, batch_size,
                output, layout)


def grad_cam_plus_plus(model, x: torch.Tensor, target, layer, *, relu: bool = True,
                       upsample: bool = True, interpolation: str = "bilinear",
                       batch_size: int | None = None, output=None,
                       layout: str = "channels_first") -> torch.Tensor:
    """Return Grad-CAM++ maps (Chattopadhay et al. 2018, eq. 19 with the exponential trick).

    Weights w_k = sum_ij alpha_ij ReLU(dS/dA_ij) with alpha from the module docstring: with
    Y = exp(S) the higher derivatives are powers of the first. The paper's common factor exp(S)
    rescales each image's map by a positive constant and is dropped, as in common
    implementations. Arguments and shapes as `grad_cam`.
    """
    return _cam("grad_cam_plus_plus", model, x, target, layer, relu, upsample, interpolation,
                batch_size, output, layout)
