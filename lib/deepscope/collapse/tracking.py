"""Record penultimate features during training and measure collapse along the way.

`record_features` is a context manager that hooks layers and collects what they compute; the
hooks are removed on exit, also when the block raises. `extract_features` runs a model over data
in eval mode and returns the classifier's input (the penultimate features) and the logits.
`CollapseTracker` is a `deepscope.train.fit` callback that measures NC1-NC4 on the training set
at chosen epochs and keeps small snapshots of the geometry for figures and explorers. Between
measurements the model carries no hook.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from .._checks import check_int, check_labels, check_module, check_tensor, model_device
from .._forward import check_output_adapter, select_output
from .._guards import eval_mode, removing_hooks
from .etf import FixedETFHead
from .metrics import CollapseMetrics, class_means, collapse_metrics, nc1

__all__ = [
    "find_classifier",
    "record_features",
    "extract_features",
    "layer_features",
    "nc1_by_layer",
    "Snapshot",
    "CollapseHistory",
    "CollapseTracker",
]

#: The key under which `record_features` stores the classifier's input.
CLASSIFIER_INPUT = "classifier_input"


def _describe_layer(name: str, module: nn.Module) -> str:
    shape = (f"{module.in_features}->{module.out_features}"
             if hasattr(module, "in_features") and hasattr(module, "out_features") else "")
    return f"{name!r} ({type(module).__name__} {shape})".replace(" )", ")")


def _last_of_sequential(model: nn.Module) -> nn.Module:
    """Follow the last child of nested ``nn.Sequential`` containers: what runs last."""
    while isinstance(model, nn.Sequential) and len(model):
        model = model[-1]
    return model


def _tensors_in(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict) or hasattr(out, "values"):
        return [t for t in out.values() if isinstance(t, torch.Tensor)]
    if isinstance(out, (tuple, list)):
        return [t for t in out if isinstance(t, torch.Tensor)]
    return []


def _traced_classifier(model, candidates, example):
    """Return the candidate whose output *is* (an entry of) the model's output on ``example``."""
    produced: dict[int, str] = {}
    with torch.no_grad(), eval_mode(model), removing_hooks() as handles:
        for name, module in candidates:
            handles.append(module.register_forward_hook(
                lambda _m, _a, out, name=name: produced.__setitem__(id(out), name)))
        out = model(example)
    hits = [produced[id(t)] for t in _tensors_in(out) if id(t) in produced]
    return hits[0] if len(hits) == 1 else None


def find_classifier(model: nn.Module, classifier: str | nn.Module | None = None, *,
                    example: torch.Tensor | None = None) -> nn.Module:
    """Return the classifier layer of a model: ``classifier`` (a submodule or its name), else
    the ``nn.Linear`` or `FixedETFHead` that is unambiguously the last layer.

    Guessing only where it cannot be wrong: the only candidate layer; the last layer of an
    ``nn.Sequential`` (followed into nested ones); or, given an ``example`` input batch, the
    candidate whose output is the model's output (found with one forward pass in eval mode).
    Anything else raises a ``ValueError`` that names the candidates, so registration order
    (a head registered before the body, a projector after the head) can never pick the wrong
    layer silently.

    Its ``weight`` (C, d) and ``bias`` (C,) or None are what NC2-NC4 compare with the features.
    """
    fn = "find_classifier"
    check_module(model, fn)
    if classifier is not None:
        return _resolve(model, classifier, "classifier", fn)
    candidates = [(n, m) for n, m in model.named_modules()
                  if isinstance(m, (nn.Linear, FixedETFHead))]
    if not candidates:
        raise ValueError(f"{fn}: `model` must contain an nn.Linear classifier, found none; "
                         "pass `classifier=` explicitly")
    if len(candidates) == 1:
        return candidates[0][1]
    last = _last_of_sequential(model)
    if any(m is last for _, m in candidates):
        return last
    if example is not None:
        name = _traced_classifier(model, candidates, example)
        if name is not None:
            return dict(candidates)[name]
    listed = ", ".join(_describe_layer(n, m) for n, m in candidates[:8])
    more = f" and {len(candidates) - 8} more" if len(candidates) > 8 else ""
    how = ("none of them produces the model's output on the example" if example is not None
           else "pass `example=` an input batch to find the one whose output is the model's")
    raise ValueError(f"{fn}: cannot tell which layer is the classifier among {listed}{more}; "
                     f"pass `classifier=` one of these names ({how})")


def _resolve(model: nn.Module, layer, name: str, fn: str) -> nn.Module:
    """Return the submodule ``layer`` names (or is); raise a ValueError listing the names."""
    named = dict(model.named_modules())
    if isinstance(layer, str):
        if layer in named and layer != "":
            return named[layer]
        known = ", ".join(repr(k) for k in named if k) or "none"
        raise ValueError(f"{fn}: `{name}` must name a submodule of the model ({known}), "
                         f"got {layer!r}")
    if isinstance(layer, nn.Module):
        if any(m is layer for m in named.values()):
            return layer
        raise ValueError(f"{fn}: `{name}` must be a submodule of the model, got a "
                         f"{type(layer).__name__} that is not part of it")
    raise TypeError(f"{fn}: `{name}` must be a layer name or an nn.Module, "
                    f"got {type(layer).__name__}")


def _layer_list(layers) -> list:
    if layers is None or isinstance(layers, (str, nn.Module)):
        return [layers]
    return list(layers)


@contextmanager
def record_features(
    model: nn.Module, layers: str | nn.Module | None | Sequence = None, *,
    classifier: str | nn.Module | None = None, example: torch.Tensor | None = None,
) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Collect, while the block runs, what chosen layers compute on every forward pass.

    Each record is a copy taken when the layer runs, so later in-place operations
    (``out += identity``, ``ReLU(inplace=True)``) cannot change it.

    Args:
        model: the network.
        layers: a layer (name or submodule), None for the input of the classifier (the
            penultimate features, see `find_classifier`), or a sequence of these.
        classifier, example: how to find the classifier for None (see `find_classifier`).

    Yields:
        A dict key -> list of detached tensors of shape (B, F) (outputs flattened per sample),
        one per forward pass. Keys are layer names (or ``"classifier_input"`` for None). The
        hooks are removed when the block exits, also on an exception.
    """
    fn = "record_features"
    check_module(model, fn)
    names = {id(m): n for n, m in model.named_modules()}
    targets = []
    for layer in _layer_list(layers):
        if layer is None:
            head = find_classifier(model, classifier, example=example)
            targets.append((CLASSIFIER_INPUT, head, True))
        else:
            module = _resolve(model, layer, "layers", fn)
            targets.append((names[id(module)], module, False))
    records: dict[str, list[torch.Tensor]] = {key: [] for key, _, _ in targets}
    with removing_hooks() as handles:
        for key, module, on_input in targets:
            store = records[key]
            if on_input:
                def pre_hook(_module, args, store=store):
                    store.append(args[0].detach().flatten(1).clone())
                handles.append(module.register_forward_pre_hook(pre_hook))
            else:
                def hook(_module, _args, output, store=store):
                    store.append(output.detach().flatten(1).clone())
                handles.append(module.register_forward_hook(hook))
        yield records


def _check_inputs(model, x, fn, batch_size):
    check_module(model, fn)
    check_tensor(x, "x", fn, min_ndim=2, like="(N, ...)")
    if len(x) == 0:
        raise ValueError(f"{fn}: `x` must hold at least one sample, got none")
    return check_int(batch_size, "batch_size", fn)


@torch.no_grad()
def layer_features(model: nn.Module, x: torch.Tensor, layers, *, batch_size: int = 2048,
                   classifier: str | nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Run ``model`` over ``x`` in eval mode and return each chosen layer's output.

    Args:
        model: the network (its mode and hooks are left as they were).
        x: inputs (N, ...), moved in batches to the model's device.
        layers: as in `record_features`.
        batch_size: samples per forward pass.
        classifier: the classifier, for a None in ``layers`` (default: `find_classifier`,
            given the first inputs as its example).

    Returns:
        A dict key -> features (N, F) on the model's device (copies taken as each layer ran).
    """
    batch_size = _check_inputs(model, x, "layer_features", batch_size)
    device = model_device(model)
    with eval_mode(model), record_features(model, layers, classifier=classifier,
                                           example=x[:2].to(device)) as records:
        for start in range(0, len(x), batch_size):
            model(x[start : start + batch_size].to(device))
    return {key: torch.cat(parts) for key, parts in records.items()}


@torch.no_grad()
def extract_features(model: nn.Module, x: torch.Tensor, layer: str | nn.Module | None = None, *,
                     batch_size: int = 2048, classifier: str | nn.Module | None = None,
                     output=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the penultimate features and the logits of ``model`` on ``x`` (eval mode).

    Args:
        model: a classifier; its mode and hooks are left as they were.
        x: inputs (N, ...).
        layer: the layer whose output is the feature (name or module); None (default) for the
            input of the classifier, the "last-layer features" of neural collapse.
        batch_size: samples per forward pass.
        classifier: the classifier layer (name or module) whose input is the feature when
            ``layer`` is None; default: `find_classifier` with the first inputs as example
            (it raises, naming the candidates, when it cannot tell).
        output: picks the logits from dict/tuple outputs (a key, an index or a function).

    Returns:
        ``(features, logits)`` of shapes (N, d) and (N, C), on the model's device.
    """
    fn = "extract_features"
    batch_size = _check_inputs(model, x, fn, batch_size)
    output = check_output_adapter(output, fn)
    device = model_device(model)
    logits = []
    with eval_mode(model), record_features(model, layer, classifier=classifier,
                                           example=x[:2].to(device)) as records:
        for start in range(0, len(x), batch_size):
            out = model(x[start : start + batch_size].to(device))
            logits.append(select_output(out, output, fn))
    (features,) = records.values()
    return torch.cat(features), torch.cat(logits)


def nc1_by_layer(model: nn.Module, x: torch.Tensor, y: torch.Tensor, layers: Sequence, *,
                 batch_size: int = 2048,
                 classifier: str | nn.Module | None = None) -> dict[str, float]:
    """Return NC1 (`nc1`) of the outputs of each layer in ``layers``: collapse across depth
    (Papyan 2020 "Traces of class/cross-class structure"; He & Su 2023, progressive collapse).

    Args:
        model, x, batch_size, classifier: as in `layer_features`; y: labels (N,).
        layers: layer names or modules (None for the classifier input).

    Returns:
        A dict layer key -> NC1, in the order given.
    """
    fn = "nc1_by_layer"
    check_tensor(x, "x", fn, min_ndim=2, like="(N, ...)")
    y = check_labels(y, len(x), fn)
    feats = layer_features(model, x, layers, batch_size=batch_size, classifier=classifier)
    return {key: nc1(h, y.to(h.device)) for key, h in feats.items()}


class Snapshot(NamedTuple):
    """The geometry at one epoch, small enough to keep for many epochs (all on the CPU)."""

    epoch: int
    features: torch.Tensor  # (k * C, d) float32: up to k samples per class
    labels: torch.Tensor  # (k * C,) long
    means: torch.Tensor  # (C, d) float64: class means over the whole training set
    global_mean: torch.Tensor  # (d,) float64
    weight: torch.Tensor | None  # (C, d) classifier weight
    bias: torch.Tensor | None  # (C,)


@dataclass
class CollapseHistory:
    """Per-measurement record of a `CollapseTracker` (lists of equal length)."""

    epoch: list[int] = field(default_factory=list)
    train_error: list[float] = field(default_factory=list)
    metrics: list[CollapseMetrics] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)

    def series(self, name: str) -> list[float]:
        """Return one metric over the measured epochs, e.g. ``series("nc1")``."""
        if name == "train_error":
            return list(self.train_error)
        if name not in CollapseMetrics.__dataclass_fields__:
            known = ", ".join(["train_error", *CollapseMetrics.__dataclass_fields__])
            raise ValueError(f"CollapseHistory.series: `name` must be one of {known}, "
                             f"got {name!r}")
        return [getattr(m, name) for m in self.metrics]

    def zero_error_epoch(self) -> int | None:
        """Return the first measured epoch with zero training error (the start of the terminal
        phase of training, Papyan et al. 2020), or None if it was never reached."""
        for epoch, error in zip(self.epoch, self.train_error):
            if error == 0:
                return epoch
        return None

    def at(self, epoch: int) -> CollapseMetrics:
        """Return the metrics measured at ``epoch``."""
        if epoch not in self.epoch:
            raise ValueError(f"CollapseHistory.at: epoch {epoch} was not measured; measured "
                             f"epochs run {self.epoch[:1]}...{self.epoch[-1:]}")
        return self.metrics[self.epoch.index(epoch)]


class CollapseTracker:
    """A `deepscope.train.fit` callback that measures neural collapse on the training set.

    At each scheduled epoch it runs the model over ``(x, y)`` in eval mode (`extract_features`:
    a hook lives only during that pass), computes `collapse_metrics` with the classifier's
    weight and bias, the training error, and keeps a `Snapshot` with up to ``keep_per_class``
    samples per class. Use as ``fit(model, (x, y), callback=tracker)``, or call
    ``tracker(epoch, model)`` yourself; it never stops training. Results: ``tracker.history``.

    Args:
        x, y: training inputs (N, ...) and labels (N,), every class with >= 2 samples.
        layer: the feature layer (None: the classifier's input).
        classifier: the classifier layer (None: `find_classifier`).
        at: the epochs to measure (an iterable of ints); default every ``every``-th epoch.
        every: measure every ``every``-th epoch when ``at`` is None.
        keep_per_class: samples per class kept in each snapshot (0 keeps none).
        batch_size: samples per forward pass.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, layer=None, classifier=None,
                 at: Iterable[int] | None = None, every: int = 1, keep_per_class: int = 20,
                 batch_size: int = 2048):
        fn = "CollapseTracker"
        check_tensor(x, "x", fn, min_ndim=2, like="(N, ...)")
        self.x, self.y = x, check_labels(y, len(x), fn)
        self.layer, self.classifier = layer, classifier
        self.every = check_int(every, "every", fn)
        self.at = None if at is None else {check_int(e, "at", fn, minimum=0) for e in at}
        self.batch_size = check_int(batch_size, "batch_size", fn)
        keep = check_int(keep_per_class, "keep_per_class", fn, minimum=0)
        generator = torch.Generator().manual_seed(0)
        order = torch.randperm(len(self.y), generator=generator)
        y_cpu = self.y.cpu()[order]
        kept = [order[y_cpu == c][:keep] for c in range(int(y_cpu.max()) + 1)]
        self.kept = torch.cat(kept).sort().values if keep else torch.zeros(0, dtype=torch.long)
        self.history = CollapseHistory()

    def scheduled(self, epoch: int) -> bool:
        """Return True when ``epoch`` is one the tracker measures."""
        return epoch in self.at if self.at is not None else epoch % self.every == 0

    def __call__(self, epoch: int, model: nn.Module, history=None) -> None:
        if not self.scheduled(epoch):
            return None
        self.measure(epoch, model)
        return None

    def measure(self, epoch: int, model: nn.Module) -> CollapseMetrics:
        """Measure now (whatever the schedule), record it under ``epoch`` and return it."""
        example = self.x[:2].to(model_device(model))
        head = find_classifier(model, self.classifier, example=example)
        features, logits = extract_features(model, self.x, self.layer, classifier=head,
                                            batch_size=self.batch_size)
        y = self.y.to(features.device)
        bias = head.bias.detach() if getattr(head, "bias", None) is not None else None
        weight = head.weight.detach()
        metrics = collapse_metrics(features, y, weight, bias)
        error = float((logits.argmax(1) != y).float().mean())
        means, global_mean = class_means(features, y, weight.shape[0])
        kept = self.kept.to(features.device)
        snapshot = Snapshot(
            epoch=epoch,
            features=features[kept].float().cpu(),
            labels=y[kept].cpu(),
            means=means.cpu(),
            global_mean=global_mean.cpu(),
            weight=weight.clone().cpu(),
            bias=None if bias is None else bias.clone().cpu(),
        )
        record = self.history
        record.epoch.append(epoch)
        record.train_error.append(error)
        record.metrics.append(metrics)
        record.snapshots.append(snapshot)
        return metrics
