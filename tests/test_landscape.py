"""deepscope.landscape: directions, slices, interpolation, and the promise that no function
changes the user's model (also when the loss function raises midway)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from deepscope import landscape as L
from deepscope import models
from torch import nn

from tests.conftest import requires_cuda


def problem(seed=0, n=48, d=5, classes=3, hidden=(7,), dtype=torch.float64, **kw):
    """A tiny classifier and data, float64 so exact comparisons are meaningful."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    y = torch.randint(0, classes, (n,), generator=g)
    torch.manual_seed(seed)
    model = models.mlp(d, hidden, classes, **kw).to(dtype)
    return model, x, y


def state_of(model):
    return ({n: p.detach().clone() for n, p in model.named_parameters()},
            {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
            {n: b.clone() for n, b in model.named_buffers()},
            [m.training for m in model.modules()])


def assert_same_state(model, before):
    params, grads, buffers, modes = before
    for n, p in model.named_parameters():
        assert torch.equal(p, params[n]), n  # bitwise
        assert (p.grad is None) == (grads[n] is None), n
        if p.grad is not None:
            assert torch.equal(p.grad, grads[n]), n
    for n, b in model.named_buffers():
        assert torch.equal(b, buffers[n]), n
    assert [m.training for m in model.modules()] == modes


def loaded_loss(model, point, x, y):
    """The reference: copy a point into a deep copy of the model and evaluate it plainly."""
    clone = copy.deepcopy(model).eval()
    with torch.no_grad():
        for n, p in clone.named_parameters():
            p.copy_(point[n])
        return F.cross_entropy(clone(x), y).item()


# --------------------------------------------------------------------------------------------
# Directions


def test_random_direction_is_seeded_and_filter_normalised():
    model, _, _ = problem(hidden=(6, 4))
    d = L.random_direction(model, seed=3)
    again = L.random_direction(model, seed=3)
    other = L.random_direction(model, seed=4)
    weights = L.trainable_parameters(model)
    assert list(d) == list(weights)
    assert all(torch.equal(d[n], again[n]) for n in d)
    assert not torch.equal(d["fc1.weight"], other["fc1.weight"])
    for n, w in weights.items():
        if w.dim() > 1:  # every filter (row) has the norm of the weights' filter
            torch.testing.assert_close(d[n].norm(dim=1), w.norm(dim=1), rtol=1e-12, atol=0)
        else:
            assert torch.count_nonzero(d[n]) == 0  # biases are not moved by default


def test_filter_normalize_on_convolutions_and_bias_rules():
    torch.manual_seed(0)
    cnn = models.small_cnn(1, 4, channels=(3, 5))
    weights = L.trainable_parameters(cnn)
    raw = {n: torch.randn_like(w) for n, w in weights.items()}
    raw_copy = {n: t.clone() for n, t in raw.items()}
    d = L.filter_normalize(raw, cnn)
    for n, w in weights.items():
        assert torch.equal(raw[n], raw_copy[n])  # input untouched
        if w.dim() == 4:  # one filter per output channel
            torch.testing.assert_close(d[n].flatten(1).norm(dim=1), w.flatten(1).norm(dim=1))
            # the direction of each filter is kept
            cos = F.cosine_similarity(d[n].flatten(1), raw[n].flatten(1), dim=1)
            torch.testing.assert_close(cos, torch.ones_like(cos))
    bias = "conv1.bias"
    assert torch.equal(L.filter_normalize(raw, cnn, biases="weights")[bias], weights[bias])
    torch.testing.assert_close(L.filter_normalize(raw, cnn, biases="filter")[bias].abs(),
                               weights[bias].abs())
    layer = L.random_direction(cnn, seed=0, normalize="layer")
    torch.testing.assert_close(layer["conv2.weight"].norm(), weights["conv2.weight"].norm())
    raw_dir = L.random_direction(cnn, seed=0, normalize=None)
    assert torch.count_nonzero(raw_dir[bias]) == len(raw_dir[bias])
    assert L.random_direction(cnn)["fc.weight"].shape == weights["fc.weight"].shape  # unseeded


def test_direction_errors_name_what_was_expected():
    model, _, _ = problem()
    weights = L.trainable_parameters(model)
    with pytest.raises(ValueError, match="`normalize` must be one of 'filter', 'layer', 'none'"):
        L.random_direction(model, seed=0, normalize="batch")
    with pytest.raises(ValueError, match="`biases` must be one of"):
        L.filter_normalize(weights, model, biases="keep")
    with pytest.raises(ValueError, match=r"`direction` must have the trainable parameters of "
                                         r"`model` \(4 tensors\), got missing \['fc2.bias'\]"):
        L.filter_normalize({n: t for n, t in weights.items() if n != "fc2.bias"}, model)
    bad = dict(weights, **{"fc1.weight": torch.zeros(2, 2, dtype=torch.float64)})
    with pytest.raises(ValueError, match=r"`direction\['fc1.weight'\]` must have shape \(7, 5\)"):
        L.filter_normalize(bad, model)
    with pytest.raises(TypeError, match="`direction` must be a dict"):
        L.filter_normalize([1, 2], model)
    with pytest.raises(TypeError, match="`reference` must be an nn.Module or a dict"):
        L.filter_normalize(weights, 3)
    with pytest.raises(TypeError, match="`model` must be a torch.nn.Module, got str"):
        L.random_direction("model", seed=0)
    with pytest.raises(ValueError, match="`seed` must be >= 0, got -1"):
        L.random_direction(model, seed=-1)
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="at least one trainable parameter"):
        L.random_direction(frozen, seed=0)
    with pytest.raises(TypeError, match="must be a floating-point tensor"):
        L.filter_normalize({n: t.long() for n, t in weights.items()}, model)


def test_orthogonalize_and_vector_round_trip():
    model, _, _ = problem()
    d1, d2 = L.random_direction(model, 0), L.random_direction(model, 1)
    d2o = L.orthogonalize(d2, d1)
    assert abs(float(L.as_vector(d2o) @ L.as_vector(d1))) < 1e-10
    back = L.as_point(model, L.as_vector(d1))
    assert all(torch.equal(back[n], d1[n]) for n in d1)
    with pytest.raises(ValueError, match="must be a non-zero direction"):
        L.orthogonalize(d2, {n: torch.zeros_like(t) for n, t in d1.items()})
    with pytest.raises(TypeError, match="`against` must be a dict"):
        L.orthogonalize(d2, 1.0)
    with pytest.raises(ValueError, match=r"`vector` must have 66 entries"):
        L.as_point(model, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(TypeError, match="`point` must be a non-empty dict"):
        L.as_vector([])
    snap = L.snapshot(model)
    with torch.no_grad():
        model.fc1.weight.add_(1.0)
    assert not torch.equal(snap["fc1.weight"], model.fc1.weight)  # a copy, not a view


# --------------------------------------------------------------------------------------------
# Slices


def test_slice_2d_matches_loading_each_point_into_the_module():
    model, x, y = problem()
    theta = L.trainable_parameters(model)
    d1, d2 = L.random_direction(model, seed=1), L.random_direction(model, seed=2)
    xs, ys = torch.linspace(-1, 1, 4), [-0.5, 0.0, 0.25]
    losses, accs = L.slice_2d(model, d1, d2, F.cross_entropy, (x, y), xs, ys, batch_size=5,
                              accuracy=True, progress=False)
    assert losses.shape == (3, 4) and accs.shape == (3, 4) and losses.dtype == torch.float64
    for i, b in enumerate(ys):
        for j, a in enumerate(xs.tolist()):
            point = {n: theta[n] + a * d1[n] + b * d2[n] for n in theta}
            assert losses[i, j].item() == pytest.approx(loaded_loss(model, point, x, y),
                                                        rel=1e-12)
    with torch.no_grad():
        center_acc = (model(x).argmax(1) == y).double().mean()
    assert accs[1, :].max() <= 1 and accs[1, 1:3].min() >= 0
    one = L.slice_2d(model, d1, d2, F.cross_entropy, (x, y), [0.0], [0.0], accuracy=True)
    assert one[1].item() == pytest.approx(center_acc.item())
    loop = L.slice_2d(model, d1, d2, F.cross_entropy, (x, y), xs, ys, vectorize=False,
                      progress=False)
    torch.testing.assert_close(loop, losses, rtol=1e-12, atol=1e-12)
    batches = [(x[:20], y[:20]), (x[20:], y[20:])]  # an iterable of batches: weighted mean
    split = L.slice_2d(model, d1, d2, F.cross_entropy, batches, xs, ys, progress=False)
    torch.testing.assert_close(split, losses, rtol=1e-12, atol=1e-12)


def test_slice_1d_and_interpolate():
    model, x, y = problem(seed=0)
    other, _, _ = problem(seed=1)
    d = L.random_direction(model, seed=0)
    line = L.slice_1d(model, d, F.cross_entropy, (x, y), [0.0, 0.5])
    with torch.no_grad():
        assert line[0].item() == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-12)
    path = L.interpolate(model, other, F.cross_entropy, (x, y), alphas=5)
    with torch.no_grad():
        assert path[0].item() == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-12)
        assert path[-1].item() == pytest.approx(F.cross_entropy(other(x), y).item(), rel=1e-12)
    theta_a, theta_b = L.trainable_parameters(model), L.trainable_parameters(other)
    mid = {n: 0.5 * theta_a[n] + 0.5 * theta_b[n] for n in theta_a}
    assert path[2].item() == pytest.approx(loaded_loss(model, mid, x, y), rel=1e-12)
    as_dict = L.interpolate(model, theta_b, F.cross_entropy, (x, y), alphas=[0.5])
    assert as_dict.item() == pytest.approx(path[2].item(), rel=1e-12)
    losses, accs = L.interpolate(model, other, F.cross_entropy, (x, y), alphas=3, accuracy=True)
    assert accs.shape == (3,)


def test_scale_invariance_of_filter_normalised_slices():
    """Rescaling a ReLU layer by c and the next by 1/c changes nothing the network computes;
    filter-normalised slices see no change, raw slices do (Li et al. 2018)."""
    model, x, y = problem(hidden=(8,), bias=False)
    scaled = copy.deepcopy(model)
    with torch.no_grad():
        scaled.fc1.weight.mul_(10.0)
        scaled.fc2.weight.div_(10.0)
        torch.testing.assert_close(scaled(x), model(x), rtol=1e-12, atol=1e-12)
    alphas = torch.linspace(-1, 1, 9)
    curves = {}
    for normalize in ("filter", "none"):
        curves[normalize] = [
            L.slice_1d(m, L.random_direction(m, seed=5, normalize=normalize), F.cross_entropy,
                       (x, y), alphas) for m in (model, scaled)]
    torch.testing.assert_close(*curves["filter"], rtol=1e-10, atol=1e-10)
    assert (curves["none"][0] - curves["none"][1]).abs().max() > 0.1


def test_slice_errors():
    model, x, y = problem()
    d = L.random_direction(model, seed=0)
    ce = F.cross_entropy
    with pytest.raises(ValueError, match="`xs` must be a non-empty 1-D grid"):
        L.slice_2d(model, d, d, ce, (x, y), [], [0.0])
    with pytest.raises(ValueError, match="`ys` must be a non-empty 1-D grid"):
        L.slice_2d(model, d, d, ce, (x, y), [0.0], torch.zeros(2, 2))
    with pytest.raises(ValueError, match="`alphas` must hold finite numbers"):
        L.slice_1d(model, d, ce, (x, y), [0.0, float("nan")])
    with pytest.raises(TypeError, match="`alphas` must be a 1-D tensor or sequence"):
        L.slice_1d(model, d, ce, (x, y), 0.5)
    with pytest.raises(TypeError, match="`alphas` must be a 1-D sequence of numbers"):
        L.slice_1d(model, d, ce, (x, y), ["a"])
    other = models.mlp(5, (9,), 3).double()
    with pytest.raises(ValueError, match=r"`d2\['fc1.weight'\]` must have shape \(7, 5\)"):
        L.slice_2d(model, d, L.random_direction(other, 0), ce, (x, y), [0.0], [0.0])
    with pytest.raises(ValueError, match=r"`model_b\['fc1.weight'\]` must have shape"):
        L.interpolate(model, other, ce, (x, y))
    with pytest.raises(ValueError, match="`alphas` must be >= 2, got 1"):
        L.interpolate(model, model, ce, (x, y), alphas=1)
    with pytest.raises(TypeError, match="`loss_fn` must be callable"):
        L.slice_1d(model, d, "ce", (x, y), [0.0])
    with pytest.raises(TypeError, match="`data` must be a pair"):
        L.slice_1d(model, d, ce, x, [0.0])
    with pytest.raises(ValueError, match="`data` must hold at least one batch"):
        L.slice_1d(model, d, ce, [], [0.0])
    with pytest.raises(ValueError, match="same, non-zero length, got 48 and 3"):
        L.slice_1d(model, d, ce, (x, y[:3]), [0.0])
    with pytest.raises(TypeError, match="each batch of `data` must be a pair"):
        L.slice_1d(model, d, ce, [x], [0.0])
    with pytest.raises(ValueError, match=r"`loss_fn` must return a scalar tensor .*got \(48,\)"):
        L.slice_1d(model, d, lambda o, t: F.cross_entropy(o, t, reduction="none"), (x, y),
                   [0.0])
    with pytest.raises(ValueError, match="`batch_size` must be >= 1, got 0"):
        L.slice_1d(model, d, ce, (x, y), [0.0], batch_size=0)


# --------------------------------------------------------------------------------------------
# The model is never changed, also when the loss function raises midway


class RaisingLoss:
    """Cross-entropy that raises on its n-th call (vectorize=False makes calls countable)."""

    def __init__(self, n, error=RuntimeError):
        self.n, self.calls, self.error = n, 0, error

    def __call__(self, out, y):
        self.calls += 1
        if self.calls == self.n:
            raise self.error("loss failed midway")
        return F.cross_entropy(out, y)


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_weights_restored_when_loss_raises(error):
    model, x, y = problem()
    model.train()
    model.fc1.weight.grad = torch.ones_like(model.fc1.weight)  # a user's stale gradient
    d1, d2 = L.random_direction(model, 0), L.random_direction(model, 1)
    other, _, _ = problem(seed=1)
    before = state_of(model)
    calls = {
        "slice_2d": lambda f: L.slice_2d(model, d1, d2, f, (x, y), [0, 1, 2], [0, 1],
                                         vectorize=False, progress=False),
        "slice_1d": lambda f: L.slice_1d(model, d1, f, (x, y), [0, 1, 2], vectorize=False),
        "interpolate": lambda f: L.interpolate(model, other, f, (x, y), 4, vectorize=False),
        "hessian_trace": lambda f: L.hessian_trace(model, f, [(x[:9], y[:9]), (x, y)] * 3,
                                                   samples=3),
        "top_eigenvalues": lambda f: L.top_eigenvalues(model, f, [(x, y)] * 3),
        "spectral_density": lambda f: L.spectral_density(model, f, [(x, y)] * 3, iters=4),
        "fit_bezier": lambda f: L.fit_bezier(model, other, f, (x, y), steps=5, progress=False),
    }
    for name, call in calls.items():
        loss = RaisingLoss(3, error)
        with pytest.raises(error, match="loss failed midway"):
            call(loss)
        assert loss.calls == 3, name
        assert_same_state(model, before)


def test_functions_leave_model_bitwise_identical_on_success():
    model, x, y = problem(batch_norm=True)
    model.train()
    with torch.no_grad():
        model(x)  # non-trivial running statistics
    before = state_of(model)
    d1, d2 = L.random_direction(model, 0), L.random_direction(model, 1)
    L.slice_2d(model, d1, d2, F.cross_entropy, (x, y), [0, 1], [0, 1], progress=False)
    L.top_eigenvalues(model, F.cross_entropy, (x, y), k=2)
    L.hessian_trace(model, F.cross_entropy, (x, y), samples=4, batch_size=2)
    L.hvp(model, F.cross_entropy, (x, y), d1)
    L.loss_gradient(model, F.cross_entropy, (x, y))
    L.spectral_density(model, F.cross_entropy, (x, y), iters=5, runs=2)
    assert_same_state(model, before)


@requires_cuda
def test_landscape_computes_on_the_models_device():
    model, x, y = problem()
    d1, d2 = L.random_direction(model, 0), L.random_direction(model, 1)
    cpu = L.slice_2d(model, d1, d2, F.cross_entropy, (x, y), [0, 1], [0, 1], progress=False)
    top_cpu = L.top_eigenvalues(model, F.cross_entropy, (x, y), k=2)
    gpu_model = copy.deepcopy(model).cuda()
    d1g, d2g = L.random_direction(gpu_model, 0), L.random_direction(gpu_model, 1)
    assert d1g["fc1.weight"].is_cuda
    gpu = L.slice_2d(gpu_model, d1g, d2g, F.cross_entropy, (x, y), [0, 1], [0, 1],
                     progress=False)
    torch.testing.assert_close(gpu, cpu, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(L.top_eigenvalues(gpu_model, F.cross_entropy, (x, y), k=2),
                               top_cpu, rtol=1e-6, atol=0)
    assert L.hessian_trace(gpu_model, F.cross_entropy, (x, y), samples=4).isfinite()
