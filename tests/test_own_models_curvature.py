"""Curvature on researchers' models: Transformers (the math attention kernel under double
backward, restored after), float16/bfloat16 models (solvers in float32), and the GPU hot
paths checked on the CPU: probes drawn on the model's device in its dtype, no host round trip
between convergence checks, data streamed one batch at a time, and a warning whenever an
iterative method stops short of its tolerance."""

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from deepscope import ConvergenceWarning, data, landscape, models, saliency, train
from deepscope.landscape import linalg
from deepscope.landscape._core import math_attention

from tests.conftest import requires_cuda
from tests.own_models import resnet, transformer


def attention_flags():
    b = torch.backends.cuda
    return (b.flash_sdp_enabled(), b.mem_efficient_sdp_enabled(), b.math_sdp_enabled(),
            b.cudnn_sdp_enabled(), torch.backends.mha.get_fastpath_enabled())


@pytest.fixture
def tokens():
    torch.manual_seed(3)
    return torch.randn(8, 5, 3, dtype=torch.float64), torch.randint(0, 3, (8,))


# --------------------------------------------------------------------------------------------
# Transformers


def test_transformer_top_eigenvalue_equals_the_exact_hessian(tokens):
    net = transformer(layers=1)
    before = attention_flags()
    exact = torch.linalg.eigvalsh(landscape.hessian_matrix(net, F.cross_entropy, tokens))
    top = landscape.top_eigenvalues(net, F.cross_entropy, tokens, k=2)
    assert torch.allclose(top, exact.flip(0)[:2], rtol=1e-4, atol=0)
    assert attention_flags() == before  # the kernel choice is restored
    trace, stderr = landscape.hessian_trace(net, F.cross_entropy, tokens, samples=40, seed=0,
                                            batch_size=8, return_stderr=True)
    assert abs(float(trace - exact.sum())) < 4 * float(stderr)
    density = landscape.spectral_density(net, F.cross_entropy, tokens, iters=30, runs=1)
    assert float(density.nodes.max()) == pytest.approx(float(exact[-1]), rel=1e-4)


def test_the_fused_attention_kernel_has_no_double_backward_control(tokens):
    """The control: the double backward that curvature needs fails with the default kernel."""
    net = transformer()
    params = list(net.parameters())
    loss = F.cross_entropy(net(tokens[0]), tokens[1])
    grads = torch.autograd.grad(loss, params, create_graph=True)
    try:
        torch.autograd.grad(sum((g * g).sum() for g in grads), params)
    except RuntimeError as err:
        assert "not implemented" in str(err)
    else:
        pytest.skip("this PyTorch picks a twice-differentiable attention kernel by default")


def test_math_attention_restores_the_kernel_choice_after_an_error(tokens):
    before = attention_flags()

    def broken(out, y):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        landscape.hvp(transformer(), broken, tokens, torch.zeros(3))
    with math_attention():
        inside = attention_flags()
        assert not inside[0] and not inside[1] and inside[2] and not inside[4]
    assert attention_flags() == before


def test_transformer_slices_equal_the_pointwise_loop(tokens):
    net = transformer()
    d1, d2 = landscape.random_direction(net, 0), landscape.random_direction(net, 1)
    grid = torch.linspace(-0.5, 0.5, 3)
    fast = landscape.slice_2d(net, d1, d2, F.cross_entropy, tokens, grid, grid, progress=False)
    loop = landscape.slice_2d(net, d1, d2, F.cross_entropy, tokens, grid, grid, progress=False,
                              vectorize=False)
    assert torch.allclose(fast, loop, rtol=1e-10)


# --------------------------------------------------------------------------------------------
# Low precision


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_curvature_is_within_5_percent_of_float32(dtype):
    torch.manual_seed(0)
    net = models.mlp(8, (16,), 3, activation="tanh")
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    ref = landscape.top_eigenvalues(net, F.cross_entropy, (x, y), k=2)
    ref_trace = landscape.hessian_trace(net, F.cross_entropy, (x, y), samples=20, seed=0)
    half = copy.deepcopy(net).to(dtype)
    batch = (x.to(dtype), y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        top = landscape.top_eigenvalues(half, F.cross_entropy, batch, k=2)
    assert top.dtype == torch.float64
    assert torch.allclose(top, ref, rtol=0.05)
    trace = landscape.hessian_trace(half, F.cross_entropy, batch, samples=20, seed=0)
    assert float(trace) == pytest.approx(float(ref_trace), rel=0.05)
    power = landscape.top_eigenvalues(half, F.cross_entropy, batch, method="power", tol=1e-3)
    assert float(power[0]) == pytest.approx(float(ref[0]), rel=0.05)
    op = landscape.hessian_operator(half, F.cross_entropy, batch)
    alpha, beta, Q = landscape.lanczos(op, torch.ones(op.dim, dtype=dtype), 5)
    assert alpha.dtype == beta.dtype == Q.dtype == torch.float32  # internals, whatever the model
    assert landscape.ritz_pairs(alpha, beta)[0].dtype == torch.float64


def test_bfloat16_transformer_curvature(tokens):
    x, y = tokens
    net = transformer(dtype=torch.float32, layers=1)
    ref = landscape.top_eigenvalues(net, F.cross_entropy, (x.float(), y))
    half = copy.deepcopy(net).to(torch.bfloat16)
    top = landscape.top_eigenvalues(half, F.cross_entropy, (x.to(torch.bfloat16), y))
    assert float(top[0]) == pytest.approx(float(ref[0]), rel=0.05)


# --------------------------------------------------------------------------------------------
# Iterative methods warn when they stop short


@pytest.fixture(scope="module")
def digits_mlp():
    x, y = data.digits("train")
    torch.manual_seed(0)
    net = models.mlp(64, (32,), 10)
    train.fit(net, (x, y), epochs=5, lr=3e-3, progress=False)
    return net, (x[:400], y[:400])


def test_lanczos_warns_when_it_stops_at_max_iter(digits_mlp):
    net, batch = digits_mlp
    with pytest.warns(ConvergenceWarning, match="Lanczos stopped after max_iter = 12 steps"):
        landscape.top_eigenvalues(net, F.cross_entropy, batch, k=3, max_iter=12)
    with warnings.catch_warnings():  # the control: the default budget converges, silently
        warnings.simplefilter("error", ConvergenceWarning)
        landscape.top_eigenvalues(net, F.cross_entropy, batch, k=3)
    with pytest.warns(ConvergenceWarning, match="did not converge in 3 iterations"):
        landscape.top_eigenvalues(net, F.cross_entropy, batch, method="power", max_iter=3)


# --------------------------------------------------------------------------------------------
# GPU hot paths, checked on the CPU


class SyncCounter:
    """Count the calls that read a tensor back to the host (a sync on an accelerator): reads of
    values, and blocking copies to the CPU that do work (uploads to the model's device are
    ``non_blocking``; on this CPU-only machine a conversion to float64 on the CPU stands for
    the read-back it is on a GPU)."""

    def __init__(self, monkeypatch):
        self.count = 0
        for name in ("item", "tolist", "numpy", "cpu", "__float__", "__int__", "__bool__"):
            self._wrap(monkeypatch, name)
        original_to = torch.Tensor.to

        def to(tensor, *args, **kwargs):
            target = kwargs.get("device", args[0] if args else None)
            dtype = kwargs.get("dtype", args[1] if len(args) > 1 else None)
            noop = tensor.device.type == "cpu" and dtype in (None, tensor.dtype)
            if (isinstance(target, (str, torch.device)) and torch.device(target).type == "cpu"
                    and not kwargs.get("non_blocking", False) and not noop):
                self.count += 1
            return original_to(tensor, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, "to", to)

    def _wrap(self, monkeypatch, name):
        original = getattr(torch.Tensor, name)

        def counted(tensor, *args, **kwargs):
            self.count += 1
            return original(tensor, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)


def _spd(n=60, seed=0):
    torch.manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n))
    return q @ torch.diag(torch.linspace(1, 2, n)) @ q.T  # no early convergence


def test_lanczos_and_power_iteration_sync_only_at_checks(monkeypatch):
    A = _spd()
    v0 = torch.randn(60)
    counter = SyncCounter(monkeypatch)
    alpha, _, _ = landscape.lanczos(lambda v: A @ v, v0, 40, check_every=5)
    assert len(alpha) == 40 and counter.count <= 40 // 5 + 2
    counter.count = 0
    landscape.lanczos(lambda v: A @ v, v0, 40, check_every=1)
    assert counter.count >= 40  # the control: checking every step syncs every step
    counter.count = 0
    with pytest.warns(ConvergenceWarning):
        landscape.power_iteration(lambda v: A @ v, v0, max_iter=40, tol=1e-15, check_every=8)
    assert counter.count <= 40 // 8 + 3
    assert linalg.default_check_every("cpu") == 1 and linalg.default_check_every("cuda") == 8


def test_top_eigenvalues_syncs_only_at_checks(digits_mlp, monkeypatch):
    net, batch = digits_mlp
    products = []
    apply = landscape.HessianOperator._apply
    monkeypatch.setattr(landscape.HessianOperator, "_apply",
                        lambda op, v, batched: products.append(1) or apply(op, v, batched))
    counter = SyncCounter(monkeypatch)
    landscape.top_eigenvalues(net, F.cross_entropy, batch, k=3, check_every=8)
    steps = len(products)
    assert steps >= 16 and counter.count <= steps // 8 + 8  # + set-up and the result
    counter.count = 0
    landscape.top_eigenvalues(net, F.cross_entropy, batch, k=3, check_every=1)
    assert counter.count >= steps - 8  # the control: a check per step is a sync per step
    counter.count = 0
    landscape.hessian_trace(net, F.cross_entropy, batch, samples=16, seed=0)
    assert counter.count <= 3  # one read-back at the end, none per probe


def test_probes_and_directions_are_drawn_on_the_device_in_the_model_dtype(monkeypatch):
    draws = []
    for name in ("randn", "randint", "rand"):
        original = getattr(torch, name)

        def recorded(*args, _original=original, **kwargs):
            out = _original(*args, **kwargs)
            draws.append((kwargs.get("device"), out.dtype, out.numel()))
            return out

        monkeypatch.setattr(torch, name, recorded)
    torch.manual_seed(0)
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    for dtype, work in ((torch.float32, torch.float32), (torch.float16, torch.float32)):
        net = models.mlp(8, (16,), 3).to(dtype)
        P = landscape.as_vector(landscape.trainable_parameters(net)).numel()
        draws.clear()
        landscape.random_direction(net, 0)
        landscape.top_eigenvalues(net, F.cross_entropy, (x.to(dtype), y))
        landscape.hessian_trace(net, F.cross_entropy, (x.to(dtype), y), samples=4, seed=0)
        landscape.spectral_density(net, F.cross_entropy, (x.to(dtype), y), iters=5, runs=1)
        big = [(device, got) for device, got, n in draws if n >= 16]
        assert len(big) >= 6 and all(device == torch.device("cpu") for device, _ in big)
        assert all(got in (dtype, work) for _, got in big)  # never float64 for these models
        assert sum(n for _, _, n in draws) >= 3 * P


def test_data_is_streamed_one_batch_at_a_time(digits_mlp, monkeypatch):
    net, (x, y) = digits_mlp
    x, y = x.double(), y
    net = copy.deepcopy(net).double()
    batches = [(x[i:i + 100], y[i:i + 100]) for i in range(0, 400, 100)]
    op = landscape.hessian_operator(net, F.cross_entropy, batches)
    assert all(b[0] is x_ for b, (x_, _) in zip(op.batches, batches))  # kept where they were
    v = torch.randn(op.dim, dtype=torch.float64)
    whole = landscape.hvp(net, F.cross_entropy, (x, y), v)
    assert torch.allclose(op(v), whole, rtol=1e-9, atol=1e-12)
    d = landscape.random_direction(net, 0)
    grid = torch.linspace(-1, 1, 5)
    assert torch.allclose(landscape.slice_1d(net, d, F.cross_entropy, batches, grid),
                          landscape.slice_1d(net, d, F.cross_entropy, (x, y), grid), rtol=1e-10)
    monkeypatch.setattr(train, "RESIDENT_BYTES", 0)  # stream the pair minibatch by minibatch
    streamed = train.fit(copy.deepcopy(net), (x, y), epochs=2, progress=False)
    monkeypatch.setattr(train, "RESIDENT_BYTES", 1 << 28)
    resident = train.fit(copy.deepcopy(net), (x, y), epochs=2, progress=False)
    assert streamed.train_loss == pytest.approx(resident.train_loss, rel=1e-12)


# --------------------------------------------------------------------------------------------
# On a GPU (skipped without one)


@pytest.mark.cuda
@requires_cuda
def test_curvature_on_cuda_matches_cpu_with_few_syncs(tokens):
    net = transformer()
    cpu = landscape.top_eigenvalues(net, F.cross_entropy, tokens, k=2)
    gpu_net = copy.deepcopy(net).cuda()
    batch = (tokens[0].cuda(), tokens[1].cuda())
    d = landscape.random_direction(gpu_net, 0)
    assert all(t.device.type == "cuda" for t in d.values())
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gpu = landscape.top_eigenvalues(gpu_net, F.cross_entropy, batch, k=2, max_iter=48,
                                            tol=1e-12)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) <= 48 // 8 + 10
    assert torch.allclose(gpu, cpu, rtol=1e-4)


@pytest.mark.cuda
@requires_cuda
def test_grad_cam_and_half_precision_curvature_on_cuda():
    torch.manual_seed(0)
    net, x = resnet(), torch.randn(4, 1, 8, 8, dtype=torch.float64)
    cpu = saliency.grad_cam(net, x, 1, "layer1.bn2")
    gpu = saliency.grad_cam(net.cuda(), x.cuda(), 1, "layer1.bn2")
    assert torch.allclose(gpu.cpu(), cpu, rtol=1e-6)
    mlp = models.mlp(8, (16,), 3, activation="tanh").cuda()
    xs, ys = torch.randn(64, 8, device="cuda"), torch.randint(0, 3, (64,), device="cuda")
    ref = landscape.top_eigenvalues(mlp, F.cross_entropy, (xs, ys))
    for dtype in (torch.float16, torch.bfloat16):
        top = landscape.top_eigenvalues(copy.deepcopy(mlp).to(dtype), F.cross_entropy,
                                        (xs.to(dtype), ys))
        assert float(top[0]) == pytest.approx(float(ref[0]), rel=0.05)
