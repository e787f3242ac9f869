"""Model builders of the book: plain ``nn.Sequential`` stacks with named layers.

Layers carry readable names (``fc1``, ``conv2``, ``relu2``...) so that other modules can address
them, e.g. ``grad_cam(model, x, target, layer="conv3")``.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from ._checks import check_choice, check_int

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "softplus": nn.Softplus}


def _hidden_sizes(hidden, fn: str) -> tuple[int, ...]:
    if isinstance(hidden, int):
        hidden = (hidden,)
    try:
        return tuple(check_int(h, "hidden", fn) for h in hidden)
    except TypeError as err:
        raise TypeError(
            f"{fn}: `hidden` must be an int or a sequence of ints, got {hidden!r}"
        ) from err


def mlp(
    in_features: int,
    hidden: int | tuple[int, ...] = (256, 256),
    out_features: int = 10,
    *,
    activation: str = "relu",
    batch_norm: bool = False,
    bias: bool = True,
) -> nn.Sequential:
    """Build a multilayer perceptron that flattens its input first.

    Layers are named ``flatten, fc1, [bn1,] act1, fc2, ..., fc{L+1}``; the last linear layer is
    the classifier, the output of the last activation the penultimate features.

    Args:
        in_features: input size after flattening (64 for 8x8 digits).
        hidden: width of each hidden layer (an int for one layer).
        out_features: number of outputs (classes).
        activation: ``"relu"``, ``"tanh"``, ``"gelu"`` or ``"softplus"``.
        batch_norm: insert ``BatchNorm1d`` after each hidden linear layer.
        bias: give linear layers a bias (bias-free ReLU nets are positively homogeneous).

    Returns:
        ``nn.Sequential`` mapping (B, ...) with prod(...) = in_features to (B, out_features).
    """
    fn = "mlp"
    in_features = check_int(in_features, "in_features", fn)
    out_features = check_int(out_features, "out_features", fn)
    check_choice(activation, "activation", fn, tuple(_ACTIVATIONS))
    sizes = (in_features, *_hidden_sizes(hidden, fn))
    layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        layers.append((f"fc{i}", nn.Linear(a, b, bias=bias)))
        if batch_norm:
            layers.append((f"bn{i}", nn.BatchNorm1d(b)))
        layers.append((f"act{i}", _ACTIVATIONS[activation]()))
    layers.append((f"fc{len(sizes)}", nn.Linear(sizes[-1], out_features, bias=bias)))
    return nn.Sequential(OrderedDict(layers))


class ResidualBlock(nn.Module):
    """One block of `residual_mlp`: h -> h + relu(bn(fc(h))) with ``skip``, else relu(bn(fc(h)))."""

    def __init__(self, width: int, skip: bool, batch_norm: bool):
        super().__init__()
        self.fc = nn.Linear(width, width)
        self.bn = nn.BatchNorm1d(width) if batch_norm else nn.Identity()
        self.act = nn.ReLU()
        self.skip = bool(skip)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn(self.fc(h)))
        return h + out if self.skip else out


def residual_mlp(
    in_features: int,
    width: int = 32,
    depth: int = 10,
    out_features: int = 10,
    *,
    skip: bool = True,
    batch_norm: bool = True,
) -> nn.Sequential:
    """Build a deep MLP of ``depth`` equal-width blocks, with or without skip connections: the
    notebook-scale version of Li et al.'s (2018, section 6) ResNet vs "ResNet-noshort" contrast.

    Layers: ``flatten``, ``stem`` (Linear in_features -> width), ``stem_act`` (ReLU), blocks
    ``block1`` ... ``block{depth}`` (`ResidualBlock`: Linear, BatchNorm1d, ReLU, and the identity
    added back when ``skip``), ``fc`` (Linear width -> out_features). The same seed gives the
    same weights with and without skips, so the two differ only in the connections.

    Returns:
        ``nn.Sequential`` mapping (B, ...) with prod(...) = in_features to (B, out_features).
    """
    fn = "residual_mlp"
    in_features = check_int(in_features, "in_features", fn)
    width = check_int(width, "width", fn)
    depth = check_int(depth, "depth", fn)
    out_features = check_int(out_features, "out_features", fn)
    layers: list[tuple[str, nn.Module]] = [
        ("flatten", nn.Flatten()), ("stem", nn.Linear(in_features, width)), ("stem_act", nn.ReLU())]
    layers += [(f"block{i}", ResidualBlock(width, skip, batch_norm)) for i in range(1, depth + 1)]
    layers.append(("fc", nn.Linear(width, out_features)))
    return nn.Sequential(OrderedDict(layers))


def small_cnn(
    in_channels: int = 1,
    num_classes: int = 10,
    *,
    channels: tuple[int, ...] = (16, 32, 32),
    batch_norm: bool = False,
    pool_every: int = 1,
    head: str = "gap",
    input_size: int | tuple[int, int] | None = None,
) -> nn.Sequential:
    """Build a small convolutional classifier: 3x3 conv blocks, global average pooling, linear.

    Block ``i`` is ``conv{i}`` (3x3, padding 1), optional ``bn{i}``, ``relu{i}``, and a 2x2 max
    pool ``pool{i}`` after every ``pool_every``-th block except the last, so the last conv layer
    keeps spatial resolution for Grad-CAM. Then, with ``head="gap"`` (the default), ``gap``
    (global average pooling), ``flatten`` and ``fc``: works for any input size of at least
    2**(number of pools) pixels. With ``head="flatten"``, ``flatten`` and ``fc`` read the last
    feature maps whole (C * h * w features, like VGG's head), so the classifier can use *where*
    a feature is; it needs ``input_size`` (H or (H, W)) and trains much faster on 28x28 digits.

    Returns:
        ``nn.Sequential`` mapping (B, in_channels, H, W) to (B, num_classes).
    """
    fn = "small_cnn"
    in_channels = check_int(in_channels, "in_channels", fn)
    num_classes = check_int(num_classes, "num_classes", fn)
    pool_every = check_int(pool_every, "pool_every", fn)
    check_choice(head, "head", fn, ("gap", "flatten"))
    widths = _hidden_sizes(channels, fn)
    if head == "flatten":
        if input_size is None:
            raise ValueError(f"{fn}: `input_size` (H or (H, W)) is required with "
                             f"head='flatten', got None")
        pools = sum(1 for i in range(1, len(widths)) if i % pool_every == 0)
        hw = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        if len(hw) != 2:
            raise ValueError(f"{fn}: `input_size` must be an int or a pair (H, W), "
                             f"got {input_size!r}")
        h, w = (check_int(v, "input_size", fn) // 2**pools for v in hw)
        if h < 1 or w < 1:
            raise ValueError(f"{fn}: `input_size` must be >= {2**pools} for {pools} pooling "
                             f"layers, got {input_size!r}")
    layers: list[tuple[str, nn.Module]] = []
    previous = in_channels
    for i, width in enumerate(widths, start=1):
        layers.append((f"conv{i}", nn.Conv2d(previous, width, 3, padding=1)))
        if batch_norm:
            layers.append((f"bn{i}", nn.BatchNorm2d(width)))
        layers.append((f"relu{i}", nn.ReLU()))
        if i < len(widths) and i % pool_every == 0:
            layers.append((f"pool{i}", nn.MaxPool2d(2)))
        previous = width
    if head == "flatten":
        layers += [("flatten", nn.Flatten()), ("fc", nn.Linear(previous * h * w, num_classes))]
        return nn.Sequential(OrderedDict(layers))
    layers += [
        ("gap", nn.AdaptiveAvgPool2d(1)),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(previous, num_classes)),
    ]
    return nn.Sequential(OrderedDict(layers))


def cnn1d(
    length: int = 40,
    num_classes: int = 10,
    *,
    in_channels: int = 1,
    channels: int = 25,
    kernel_sizes: tuple[int, ...] = (5, 3, 3),
    stride: int = 2,
) -> nn.Sequential:
    """Build a strided 1-D convolutional classifier, the CNN baseline of MNIST-1D.

    Block ``i`` is ``conv{i}`` (``kernel_sizes[i-1]``, stride ``stride``, padding 1) and
    ``relu{i}``; then ``flatten`` and a linear classifier ``fc`` on all positions (no pooling, so
    the classifier sees where each feature is). The defaults are Greydanus & Kobak's (2024)
    ``ConvBase``: 25 channels, kernels 5/3/3, stride 2, on signals of length 40 (5,210
    parameters).

    Returns:
        ``nn.Sequential`` mapping (B, in_channels, length) to (B, num_classes).
    """
    fn = "cnn1d"
    length, num_classes = check_int(length, "length", fn), check_int(num_classes, "num_classes", fn)
    in_channels, channels = (check_int(in_channels, "in_channels", fn),
                             check_int(channels, "channels", fn))
    stride = check_int(stride, "stride", fn)
    kernels = _hidden_sizes(kernel_sizes, fn)
    layers: list[tuple[str, nn.Module]] = []
    previous, size = in_channels, length
    for i, k in enumerate(kernels, start=1):
        layers.append((f"conv{i}", nn.Conv1d(previous, channels, k, stride=stride, padding=1)))
        layers.append((f"relu{i}", nn.ReLU()))
        size = (size + 2 - k) // stride + 1
        if size < 1:
            raise ValueError(f"{fn}: a signal of length {length} is too short for kernels "
                             f"{kernels} at stride {stride}")
        previous = channels
    layers += [("flatten", nn.Flatten()), ("fc", nn.Linear(channels * size, num_classes))]
    return nn.Sequential(OrderedDict(layers))


class TinyTransformer(nn.Module):
    """A decoder-only (causal) transformer language model (Vaswani et al. 2017; GPT-style,
    pre-norm). Input (B, T) token ids with T <= context; output (B, T, vocab_size) logits."""

    def __init__(self, vocab_size: int, context: int, d_model: int, n_layers: int, n_heads: int):
        super().__init__()
        self.context = context
        self.embed = nn.Embedding(vocab_size, d_model)
        self.position = nn.Parameter(torch.zeros(context, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, dim_feedforward=4 * d_model, dropout=0.0,
            activation="gelu", batch_first=True, norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)
        nn.init.normal_(self.position, std=1 / math.sqrt(d_model))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 2 or tokens.shape[1] > self.context:
            raise ValueError(
                f"TinyTransformer: expected token ids of shape (B, T) with T <= {self.context}, "
                f"got {tuple(tokens.shape)}"
            )
        t = tokens.shape[1]
        h = self.embed(tokens) + self.position[:t]
        causal = nn.Transformer.generate_square_subsequent_mask(t, device=tokens.device)
        h = self.blocks(h, mask=causal, is_causal=True)
        return self.head(self.norm(h))


def tiny_transformer(
    vocab_size: int, context: int = 32, *, d_model: int = 32, n_layers: int = 2, n_heads: int = 2
) -> TinyTransformer:
    """Build a `TinyTransformer` causal language model (for the scaling-law chapter).

    Returns:
        A module mapping token ids (B, T), T <= context, to logits (B, T, vocab_size).
    """
    fn = "tiny_transformer"
    args = [check_int(v, k, fn) for k, v in
            (("vocab_size", vocab_size), ("context", context), ("d_model", d_model),
             ("n_layers", n_layers), ("n_heads", n_heads))]
    if args[2] % args[4]:
        raise ValueError(f"{fn}: `d_model` ({d_model}) must be divisible by `n_heads` ({n_heads})")
    return TinyTransformer(*args)


def count_parameters(model: nn.Module, *, trainable_only: bool = True) -> int:
    """Return the number of (trainable) parameters of a model."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
