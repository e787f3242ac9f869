"""The functional core of `deepscope.landscape`: parameters as dicts, data as batches, and the
batched evaluation of a loss at many points of parameter space.

Nothing here writes into a user's module. A *point* of parameter space is a dict
``{name: tensor}`` over the model's trainable parameters (those with ``requires_grad``), in the
order of ``model.named_parameters()``; a *direction* is a dict of the same names and shapes. The
model is evaluated at a point with ``torch.func.functional_call`` (which swaps tensors in for the
duration of one call and swaps the originals back, also when the call raises), in eval mode
(restored afterwards), so the module's weights, buffers, gradients and mode are never changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn
from torch.func import functional_call, vmap

from .._checks import check_int, check_module, check_tensor, model_device
from .._forward import select_output
from .._guards import eval_mode

Params = dict[str, torch.Tensor]

#: Default work per vmap chunk of parameter points: points x samples of the largest data batch.
SAMPLES_PER_CHUNK = 1 << 14


# --------------------------------------------------------------------------------------------
# Points and directions


def trainable_parameters(model: nn.Module) -> Params:
    """Return the model's trainable parameters as a dict name -> detached tensor (no copy).

    Args:
        model: any ``nn.Module``.

    Returns:
        ``{name: p.detach()}`` for every parameter with ``requires_grad``, in module order. The
        tensors share storage with the model: read them, never write into them.
    """
    fn = "trainable_parameters"
    check_module(model, fn)
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError(f"{fn}: `model` must have at least one trainable parameter, got none")
    return params


def snapshot(model: nn.Module) -> Params:
    """Return a copy of the model's trainable parameters (a point to come back to or to plot).

    Returns:
        ``{name: tensor}``, cloned, so later training does not change it.
    """
    return {n: p.clone() for n, p in trainable_parameters(model).items()}


def _frozen_state(model: nn.Module) -> Params:
    """Buffers and parameters without ``requires_grad``: passed unchanged to functional_call."""
    state = {n: b for n, b in model.named_buffers()}
    state.update({n: p.detach() for n, p in model.named_parameters() if not p.requires_grad})
    return state


def check_point(point, reference: Params, name: str, fn: str) -> Params:
    """Return ``point`` as a dict after checking it has exactly the names, shapes (and a
    floating dtype) of ``reference``; moved to the reference's device and dtype."""
    if isinstance(point, nn.Module):
        point = trainable_parameters(point)
    if not isinstance(point, Mapping):
        raise TypeError(
            f"{fn}: `{name}` must be a dict name -> tensor (like landscape.random_direction "
            f"returns) or a model, got {type(point).__name__}"
        )
    missing = [n for n in reference if n not in point]
    extra = [n for n in point if n not in reference]
    if missing or extra:
        raise ValueError(
            f"{fn}: `{name}` must have the trainable parameters of `model` "
            f"({len(reference)} tensors), got missing {missing[:3]} and unexpected {extra[:3]}"
        )
    out = {}
    for n, ref in reference.items():
        t = check_tensor(point[n], f"{name}[{n!r}]", fn)
        if t.shape != ref.shape:
            raise ValueError(
                f"{fn}: `{name}[{n!r}]` must have shape {tuple(ref.shape)} like the model's "
                f"parameter, got {tuple(t.shape)}"
            )
        out[n] = t.to(device=ref.device, dtype=ref.dtype)
    return out


def as_vector(point: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Flatten a dict of tensors into one vector (P,), in the dict's order."""
    if not isinstance(point, Mapping) or not point:
        raise TypeError(f"as_vector: `point` must be a non-empty dict name -> tensor, "
                        f"got {type(point).__name__}")
    return torch.cat([t.reshape(-1) for t in point.values()])


def as_point(model_or_point, vector: torch.Tensor) -> Params:
    """Split a vector (P,) into a dict shaped like the model's trainable parameters (views).

    Args:
        model_or_point: an ``nn.Module`` or a dict whose names and shapes to follow.
        vector: a 1-D tensor with P = the total number of trainable parameters.
    """
    fn = "as_point"
    reference = (trainable_parameters(model_or_point) if isinstance(model_or_point, nn.Module)
                 else dict(model_or_point))
    check_tensor(vector, "vector", fn, ndim=1)
    total = sum(t.numel() for t in reference.values())
    if vector.numel() != total:
        raise ValueError(f"{fn}: `vector` must have {total} entries (the trainable parameters), "
                         f"got {vector.numel()}")
    out, offset = {}, 0
    for n, t in reference.items():
        out[n] = vector[offset : offset + t.numel()].view(t.shape)
        offset += t.numel()
    return out


# --------------------------------------------------------------------------------------------
# Data and losses


def data_batches(data, fn: str, device: torch.device | None,
                 ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Return the data as a list of (x, y) batches on ``device`` (None: where they are).

    ``data`` is a pair ``(x, y)`` of tensors (one batch: the whole set) or an iterable of
    ``(x, y)`` batches such as a DataLoader. The loss of the whole data is the mean of the batch
    losses weighted by batch size (exact when ``loss_fn`` averages over its batch). The
    iterable is read once, so every pass sees the same batches (a shuffling DataLoader would
    otherwise change the loss between two products). With ``device=None`` the batches stay
    where they are and the caller moves one at a time (`on_device`), so the device never holds
    more than one batch of a large dataset.
    """
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        batches = [tuple(data)]
    elif isinstance(data, torch.Tensor) or not isinstance(data, Iterable):
        raise TypeError(f"{fn}: `data` must be a pair (x, y) of tensors or an iterable of (x, y) "
                        f"batches, got {type(data).__name__}")
    else:
        batches = list(data)
    if not batches:
        raise ValueError(f"{fn}: `data` must hold at least one batch, got none")
    out = []
    for i, batch in enumerate(batches):
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise TypeError(f"{fn}: each batch of `data` must be a pair (x, y), got "
                            f"{type(batch).__name__} at position {i}")
        x, y = batch
        check_tensor(x, "data x", fn, min_ndim=1, floating=False)
        check_tensor(y, "data y", fn, min_ndim=1, floating=False)
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(f"{fn}: `data` inputs and targets must have the same, non-zero "
                             f"length, got {len(x)} and {len(y)}")
        out.append((x, y) if device is None else on_device((x, y), device))
    return out


def on_device(batch, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the batch ``(x, y)`` on ``device``: an upload to an accelerator does not block the
    host (copies *to* the CPU do, so their values are there when read)."""
    x, y = batch
    upload = torch.device(device).type != "cpu"
    return x.to(device, non_blocking=upload), y.to(device, non_blocking=upload)


@contextmanager
def math_attention() -> Iterator[None]:
    """Run attention as plain differentiable PyTorch inside the block; restore the settings after.

    Two switches: scaled dot-product attention uses its math kernel (the fused flash,
    memory-efficient and cuDNN kernels have no double backward, so Hessian-vector products
    through ``nn.MultiheadAttention`` / ``nn.Transformer*`` fail with them;
    ``torch.nn.attention.sdpa_kernel``), and the fused inference "fast path" of
    ``nn.TransformerEncoderLayer`` / ``nn.MultiheadAttention`` is off (it has no ``vmap`` rule:
    vectorised landscape slices would fall back to a slow per-point loop). Both previous
    settings are restored on exit, also after an exception.
    """
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3: the CUDA-only switch of that time
        context = torch.backends.cuda.sdp_kernel(enable_flash=False, enable_math=True,
                                                 enable_mem_efficient=False)
    else:
        context = sdpa_kernel(SDPBackend.MATH)
    mha = getattr(torch.backends, "mha", None)
    fastpath = mha.get_fastpath_enabled() if mha is not None else None
    with context:
        try:
            if mha is not None:
                mha.set_fastpath_enabled(False)
            yield
        finally:
            if mha is not None:
                mha.set_fastpath_enabled(fastpath)


def pair_data(data, fn: str, device: torch.device, name: str = "data"):
    """Return ``(x, y)`` on ``device`` after checking ``data`` is one pair of tensors."""
    if not (isinstance(data, (tuple, list)) and len(data) == 2
            and all(isinstance(t, torch.Tensor) for t in data)):
        raise TypeError(f"{fn}: `{name}` must be a pair (x, y) of tensors, "
                        f"got {type(data).__name__}")
    return data_batches(data, fn, device)[0]


def check_loss_fn(loss_fn, fn: str) -> Callable:
    """Return ``loss_fn`` after checking it is callable as ``loss_fn(outputs, targets)``."""
    if not callable(loss_fn):
        raise TypeError(f"{fn}: `loss_fn` must be callable as loss_fn(outputs, targets), "
                        f"got {type(loss_fn).__name__}")
    return loss_fn


def _accuracy(out, y: torch.Tensor) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        return torch.full((), float("nan"), dtype=torch.float32, device=y.device)
    if out.dim() == 2 and y.dim() == 1 and not y.is_floating_point():
        return (out.argmax(-1) == y).to(out.dtype).mean()
    return torch.full((), float("nan"), dtype=out.dtype, device=out.device)


def loss_at(model, params: Params, frozen: Params, loss_fn, batches, *, accuracy=False,
            output=None, fn: str = "loss_at"):
    """Return the mean loss (and accuracy) of ``model`` at ``params`` over ``batches``.

    Differentiable with respect to ``params``; the caller puts the model in eval mode.
    ``output`` (a key, an index or a function; `deepscope._forward`) picks the tensor passed to
    ``loss_fn`` from dict/tuple outputs; None passes the outputs as they are. Batches that are
    not on the parameters' device are moved there one at a time.
    """
    total = sum(len(x) for x, _ in batches)
    device = next(iter(params.values())).device if params else None
    loss = acc = 0.0
    for x, y in batches:
        if device is not None:
            x, y = on_device((x, y), device)
        out = functional_call(model, {**frozen, **params}, (x,))
        if output is not None:
            out = select_output(out, output, fn)
        value = loss_fn(out, y)
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"`loss_fn` must return a scalar tensor (the mean loss of a batch), "
                             f"got {got}")
        loss = loss + value.reshape(()) * (len(x) / total)
        if accuracy:
            acc = acc + _accuracy(out, y) * (len(x) / total)
    return (loss, acc) if accuracy else loss


#: First layers whose output is linear in (weight, bias): f(x; sum c_k W_k) = sum c_k f(x; W_k).
LINEAR_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _linear_stem(model: nn.Module, names: list[str]):
    """Split ``model`` into (head, body) when it is an ``nn.Sequential`` whose first layer with
    parameters is one of `LINEAR_LAYERS` (zero padding), preceded only by stateless layers
    (Flatten...), and all of that layer's parameters are among ``names``; else return None."""
    if not isinstance(model, nn.Sequential):
        return None
    for i, (name, child) in enumerate(model.named_children()):
        params = [f"{name}.{p}" for p, _ in child.named_parameters()]
        if not params:
            if any(True for _ in child.buffers()):
                return None
            continue
        linear = type(child) in LINEAR_LAYERS and getattr(child, "padding_mode", "zeros") == "zeros"
        if linear and all(p in names for p in params):
            return model[: i + 1], model[i + 1 :]
        return None
    return None


def evaluate_combinations(
    model: nn.Module,
    anchors: list[Params],
    coefficients: torch.Tensor,
    loss_fn: Callable,
    data,
    *,
    fn: str,
    batch_size: int | None = None,
    accuracy: bool = False,
    vectorize: bool = True,
    progress=None,
    output=None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Evaluate the loss at the points ``sum_k coefficients[m, k] * anchors[k]``, m = 1..M.

    Every slice, interpolation and path of the chapter is such a linear combination: a 2-D
    slice is theta + a d1 + b d2 (anchors theta, d1, d2; coefficients (1, a, b)), a quadratic
    Bezier curve has Bernstein coefficients over its three control points.

    Args:
        model: the architecture; its own weights are not used unless they are an anchor.
        anchors: K dicts with the trainable parameters' names and shapes.
        coefficients: (M, K) tensor.
        loss_fn, data: as everywhere in the chapter. Batches are moved to the model's device
            one at a time, each once: the outer loop runs over the data.
        batch_size: points evaluated together (``torch.func.vmap``); bounds memory. None: as
            many as make about `SAMPLES_PER_CHUNK` forward passes of one sample per chunk.
        accuracy: also return the accuracy at each point (NaN unless outputs are class scores).
        vectorize: False evaluates the points one by one (for loss functions vmap cannot
            batch, e.g. ones that call ``.item()``).
        progress: an optional tqdm bar to advance by the number of points done.
        output: the output adapter passed to `loss_at`.

    Returns:
        ``(losses, accuracies)``: tensors (M,) on the model's device (accuracies None unless
        asked).
    """
    device = model_device(model)
    batches = data_batches(data, fn, None)
    frozen = _frozen_state(model)
    if batch_size is None:
        largest = max(len(x) for x, _ in batches)
        batch_size = max(1, min(256, SAMPLES_PER_CHUNK // largest))
    batch_size = check_int(batch_size, "batch_size", fn)
    coefficients = coefficients.to(device=device, dtype=next(iter(anchors[0].values())).dtype)
    names = list(anchors[0])
    total = sum(len(x) for x, _ in batches)
    split = _linear_stem(model, names) if vectorize else None
    if split is not None:
        head, body = split
        head_names = [n for n in names if n in dict(head.named_parameters())]
        body_frozen = {n: t for n, t in frozen.items() if n not in dict(head.named_buffers())}

    def evaluate(batch):
        """Return the function c -> (loss[, accuracy]) on one batch (on the device)."""
        if split is None:
            def one(c):
                point = {n: sum(c[k] * a[n] for k, a in enumerate(anchors)) for n in names}
                result = loss_at(model, point, frozen, loss_fn, [batch], accuracy=accuracy,
                                 output=output, fn=fn)
                return _stack(result, c)
            return one
        # The first layer is linear in its parameters, so its output at sum_k c_k theta_k is
        # sum_k c_k (its output at theta_k): K passes through it serve all M points, and only
        # the rest of the network runs per point (exact up to float rounding).
        x, y = batch
        stem = torch.stack([functional_call(head, {n: a[n] for n in head_names}, (x,))
                            for a in anchors])

        def one(c):
            body_point = {n: sum(c[k] * a[n] for k, a in enumerate(anchors))
                          for n in names if n not in head_names}
            result = loss_at(body, body_point, body_frozen, loss_fn,
                             [(torch.tensordot(c, stem, dims=1), y)], accuracy=accuracy,
                             output=output, fn=fn)
            return _stack(result, c)
        return one

    def _stack(result, c):
        result = result if accuracy else (result,)
        return torch.stack([torch.as_tensor(r, dtype=c.dtype, device=c.device).reshape(())
                            for r in result])

    values = None
    with torch.no_grad(), eval_mode(model), math_attention():
        for batch in batches:
            batch = on_device(batch, device)
            one = evaluate(batch)
            batched = vmap(one) if vectorize else (
                lambda cs, one=one: torch.stack([one(c) for c in cs]))
            part = torch.cat([batched(chunk) for chunk in _advance(coefficients.split(
                batch_size), progress, len(batches))]) * (len(batch[0]) / total)
            values = part if values is None else values + part
    return values[:, 0], (values[:, 1] if accuracy else None)


def _advance(chunks, progress, passes: int):
    """Yield ``chunks``, advancing the progress bar by each chunk's points / ``passes``."""
    for chunk in chunks:
        yield chunk
        if progress is not None:
            progress.update(len(chunk) / passes if passes > 1 else len(chunk))
