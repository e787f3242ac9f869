"""Self-supervised training on digits: the encoder builders, a SimCLR trainer, a SimSiam trainer.

An encoder here is an ``nn.Sequential`` with two named children: ``backbone`` (images to the
representation used downstream) and ``head`` (the projection head whose output the loss sees):
``net(x) = net.head(net.backbone(x))``. SimSiam adds a ``predictor`` on top of the head.

Both trainers train in place on the encoder's device, record per-epoch metrics on held-out
images (``track``), restore the train/eval mode they found, and draw batches and augmentations
from one seeded ``torch.Generator`` on that device.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .._checks import (
    check_dataset,
    check_float,
    check_int,
    check_like,
    check_module,
    check_same_shape,
    check_tensor,
    model_device,
)
from .._guards import eval_mode, training_modes
from ..models import _ACTIVATIONS, _hidden_sizes
from .augment import augment_digits
from .geometry import alignment, collapse_indicator, uniformity
from .losses import _nt_xent, check_embeddings


def _linear_stack(sizes, activation: str, batch_norm: bool, last_activation: bool):
    layers: list[tuple[str, nn.Module]] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        last = i == len(sizes) - 1
        layers.append((f"fc{i}", nn.Linear(a, b)))
        if not last or last_activation:
            if batch_norm:
                layers.append((f"bn{i}", nn.BatchNorm1d(b)))
            layers.append((f"act{i}", _ACTIVATIONS[activation]()))
    return layers


def projection_net(
    in_features: int = 64,
    *,
    backbone: int | tuple[int, ...] = (256,),
    rep_dim: int = 64,
    head: int | tuple[int, ...] = (64,),
    out_dim: int = 32,
    activation: str = "relu",
    batch_norm: bool = False,
) -> nn.Sequential:
    """Build an MLP encoder with a projection head, as SimCLR uses (Chen et al. 2020, fig. 2).

    ``backbone``: flatten, linear layers of widths ``backbone``, a last linear layer to
    ``rep_dim`` and an activation (the representation h). ``head``: linear layers of widths
    ``head`` and a last linear layer to ``out_dim`` (the embedding z the loss sees).

    Args:
        in_features: input size after flattening (64 for 8x8 digits).
        backbone: hidden widths of the backbone.
        rep_dim: size of the representation h.
        head: hidden widths of the projection head (``()`` for a single linear layer).
        out_dim: size of the embedding z (2 or 3 to draw it on the circle or sphere).
        activation: ``"relu"``, ``"tanh"``, ``"gelu"`` or ``"softplus"``.
        batch_norm: BatchNorm1d after the hidden linear layers of both parts (as SimSiam).

    Returns:
        ``nn.Sequential(backbone=..., head=...)`` mapping (B, ...) to (B, out_dim).
    """
    fn = "projection_net"
    in_features, rep_dim, out_dim = (check_int(v, k, fn) for k, v in (
        ("in_features", in_features), ("rep_dim", rep_dim), ("out_dim", out_dim)))
    if activation not in _ACTIVATIONS:
        raise ValueError(f"{fn}: `activation` must be one of {', '.join(map(repr, _ACTIVATIONS))}"
                         f", got {activation!r}")
    back = [("flatten", nn.Flatten())] + _linear_stack(
        (in_features, *_hidden_sizes(backbone, fn), rep_dim), activation, batch_norm, True)
    head_sizes = (rep_dim, *_hidden_sizes(head, fn), out_dim)
    return nn.Sequential(OrderedDict(
        backbone=nn.Sequential(OrderedDict(back)),
        head=nn.Sequential(OrderedDict(_linear_stack(head_sizes, activation, batch_norm, False))),
    ))


def predictor_net(dim: int = 32, hidden: int = 16) -> nn.Sequential:
    """Build SimSiam's bottleneck predictor h: dim -> hidden (BN, ReLU) -> dim (Chen & He 2021).

    Returns:
        ``nn.Sequential`` mapping (B, dim) to (B, dim).
    """
    dim, hidden = check_int(dim, "dim", "predictor_net"), check_int(hidden, "hidden",
                                                                     "predictor_net")
    return nn.Sequential(OrderedDict(_linear_stack((dim, hidden, dim), "relu", True, False)))


@dataclass
class ContrastiveHistory:
    """Per-epoch record of a self-supervised run. The metric lists are filled when the trainer
    was given ``track`` images: alignment and uniformity of the embeddings z (Wang & Isola),
    the collapse indicator of z (SimSiam), all on fresh augmented views of ``track``."""

    epoch: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    alignment: list[float] = field(default_factory=list)
    uniformity: list[float] = field(default_factory=list)
    collapse: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _augmenter(augment, fn: str) -> Callable:
    if augment is None:
        augment = {}
    if isinstance(augment, dict):
        options = dict(augment)
        return lambda x, g: augment_digits(x, generator=g, **options)
    if callable(augment):
        return lambda x, g: augment(x)
    raise TypeError(f"{fn}: `augment` must be a dict of augment_digits options or a callable "
                    f"x -> view, got {type(augment).__name__}")


@torch.no_grad()
def _track(net, images, augment, generator, history: ContrastiveHistory) -> None:
    with eval_mode(net):
        z1 = net(augment(images, generator))
        z2 = net(augment(images, generator))
    history.alignment.append(float(alignment(z1, z2)))
    history.uniformity.append(float(uniformity(z1)))
    history.collapse.append(float(collapse_indicator(z1)))


def _train(net, modules, x, step_loss, *, epochs, batch_size, lr, weight_decay, augment, track,
           seed, progress, desc, callback, fn):
    check_module(net, fn, "net")
    check_dataset(net, check_tensor(x, "x", fn, ndim=4, like="(N, C, H, W)"), "x", fn)
    epochs = check_int(epochs, "epochs", fn, minimum=0)
    batch_size = check_int(batch_size, "batch_size", fn, minimum=2)
    lr = check_float(lr, "lr", fn, positive=True)
    weight_decay = check_float(weight_decay, "weight_decay", fn, nonnegative=True)
    if len(x) < 2:
        raise ValueError(f"{fn}: `x` must hold at least 2 images, got shape {tuple(x.shape)}")
    if track is not None:
        check_dataset(net, check_tensor(track, "track", fn, ndim=4, like="(M, C, H, W)"),
                      "track", fn)
    view = _augmenter(augment, fn)
    device = model_device(net)
    x = x.to(device)
    track = track.to(device) if track is not None else None
    generator = torch.Generator(device=device).manual_seed(int(seed))
    params = [p for m in modules for p in m.parameters()]
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    history = ContrastiveHistory()
    modes = training_modes(nn.ModuleList(modules))
    n = len(x)
    size = min(batch_size, n)
    bar = tqdm(range(1, epochs + 1), desc=desc, disable=not progress, leave=False)
    try:
        modes.start()
        for epoch in bar:
            for module in modules:
                module.train()
            order = torch.randperm(n, generator=generator, device=device)
            total = torch.zeros((), device=device)
            steps = 0
            for start in range(0, n - size + 1, size):  # full batches only: equal negatives
                batch = x[order[start : start + size]]
                loss = step_loss(view(batch, generator), view(batch, generator))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach()
                steps += 1
            history.epoch.append(epoch)
            history.loss.append(float(total) / steps)
            if track is not None:
                _track(net, track, view, generator, history)
            bar.set_postfix(loss=f"{history.loss[-1]:.4f}")
            if callback is not None and callback(epoch, net, history):
                break
    finally:
        modes.stop()
        bar.close()
    return history


def train_simclr(
    net: nn.Module,
    x: torch.Tensor,
    *,
    epochs: int = 30,
    batch_size: int = 256,
    temperature: float = 0.5,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    augment: dict | Callable | None = None,
    track: torch.Tensor | None = None,
    seed: int = 0,
    progress: bool = True,
    desc: str = "SimCLR",
    callback: Callable | None = None,
) -> ContrastiveHistory:
    """Train an encoder in place with SimCLR: two augmented views per image, NT-Xent loss
    (`info_nce`) on the embeddings, Adam (Chen et al. 2020).

    Args:
        net: the encoder, mapping images (B, C, H, W) to embeddings (B, D) (e.g.
            `projection_net`).
        x: training images (N, C, H, W), float in [0, 1]; labels are never used.
        epochs: passes over ``x`` (each in full batches of ``batch_size``; a remainder smaller
            than a batch is skipped that epoch, the shuffling changes every epoch).
        batch_size: N pairs per step (2N-2 negatives per anchor), at least 2.
        temperature: the NT-Xent temperature tau.
        lr, weight_decay: Adam's settings.
        augment: options of `augment_digits` (a dict) or a callable images -> one random view.
        track: held-out images on which alignment, uniformity and the collapse indicator of the
            embeddings are recorded after each epoch.
        seed: seed of the batches and augmentations.
        progress: show a progress bar over epochs.
        desc: the progress bar's label.
        callback: ``callback(epoch, net, history)`` after each epoch; True stops early.

    Returns:
        A `ContrastiveHistory`.
    """
    fn = "train_simclr"
    temperature = check_float(temperature, "temperature", fn, positive=True)
    check_module(net, fn, "net")

    def step_loss(v1, v2):
        return _nt_xent(net(v1), net(v2), temperature)

    return _train(net, [net], x, step_loss, epochs=epochs, batch_size=batch_size, lr=lr,
                  weight_decay=weight_decay, augment=augment, track=track, seed=seed,
                  progress=progress, desc=desc, callback=callback, fn=fn)


def simsiam_loss(p1, z2, p2, z1, *, stop_gradient: bool = True) -> torch.Tensor:
    """Return SimSiam's symmetric loss D(p1, z2)/2 + D(p2, z1)/2 with D(p, z) = -cos(p, z)
    (Chen & He 2021, eq. 2-4); ``stop_gradient`` detaches z1, z2 (the paper's key ingredient).

    Shapes: four tensors (B, D). Returns a 0-dim tensor in [-1, 1]."""
    fn = "simsiam_loss"
    views = {"p1": p1, "z2": z2, "p2": p2, "z1": z1}
    for name, t in views.items():
        check_embeddings(t, name, fn)
        check_same_shape(p1, t, ("p1", name), fn)
        check_like(t, p1, name, fn, "p1")
    return _simsiam(p1, z2, p2, z1, stop_gradient)


def _simsiam(p1, z2, p2, z1, stop_gradient: bool) -> torch.Tensor:
    if stop_gradient:
        z1, z2 = z1.detach(), z2.detach()
    return -(F.cosine_similarity(p1, z2, dim=1).mean() + F.cosine_similarity(p2, z1,
                                                                            dim=1).mean()) / 2


def train_simsiam(
    net: nn.Module,
    predictor: nn.Module,
    x: torch.Tensor,
    *,
    stop_gradient: bool = True,
    epochs: int = 30,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    augment: dict | Callable | None = None,
    track: torch.Tensor | None = None,
    seed: int = 0,
    progress: bool = True,
    desc: str = "SimSiam",
    callback: Callable | None = None,
) -> ContrastiveHistory:
    """Train an encoder and predictor in place with SimSiam (Chen & He 2021): no negatives,
    p = predictor(net(view)), loss `simsiam_loss`; with ``stop_gradient=False`` the same
    objective collapses to a constant output.

    Args:
        net: the encoder (images (B, C, H, W) -> z (B, D)), e.g. `projection_net`.
        predictor: maps z (B, D) to p (B, D), e.g. `predictor_net`.
        x: training images (N, C, H, W).
        stop_gradient: detach the target branch (True: SimSiam; False: the collapsing variant).
        epochs, batch_size, lr, weight_decay, augment, track, seed, progress, desc, callback:
            as in `train_simclr`.

    Returns:
        A `ContrastiveHistory` (with ``track``: alignment, uniformity and collapse of z).
    """
    fn = "train_simsiam"
    check_module(net, fn, "net")
    check_module(predictor, fn, "predictor")
    if not isinstance(stop_gradient, bool):
        raise TypeError(f"{fn}: `stop_gradient` must be a bool, got "
                        f"{type(stop_gradient).__name__}")

    def step_loss(v1, v2):
        z1, z2 = net(v1), net(v2)
        return _simsiam(predictor(z1), z2, predictor(z2), z1, stop_gradient)

    return _train(net, [net, predictor], x, step_loss, epochs=epochs, batch_size=batch_size,
                  lr=lr, weight_decay=weight_decay, augment=augment, track=track, seed=seed,
                  progress=progress, desc=desc, callback=callback, fn=fn)
