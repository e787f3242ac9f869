"""Grad-CAM, Grad-CAM++ and occlusion; and the promise every method keeps: the model's mode,
weights, gradients and hooks are as the user left them, also when the call raises."""

import pytest
import torch
from deepscope import models
from deepscope import saliency as S
from torch import nn


@pytest.fixture
def images():
    torch.manual_seed(1)
    return torch.rand(3, 1, 8, 8, dtype=torch.float64)


def test_grad_cam_by_hand_on_the_last_conv_layer(cnn, images):
    A, G = S.layer_gradients(cnn, images, 4, "relu3")
    assert A.shape == G.shape == (3, 8, 2, 2)
    by_hand = torch.relu((G.mean((2, 3), keepdim=True) * A).sum(1))
    assert torch.allclose(S.grad_cam(cnn, images, 4, "relu3", upsample=False), by_hand)
    up = S.grad_cam(cnn, images, 4, cnn.relu3)
    assert up.shape == (3, 8, 8) and (up >= 0).all()
    # after global average pooling, the gradient is the same at every position
    assert torch.allclose(G, G[..., :1, :1].expand_as(G))


def test_grad_cam_options(cnn, images):
    raw = S.grad_cam(cnn, images, 1, "conv2", relu=False, upsample=False)
    assert raw.shape == (3, 4, 4)
    assert torch.allclose(S.grad_cam(cnn, images, 1, "conv2", upsample=False), torch.relu(raw))
    nearest = S.grad_cam(cnn, images, 1, "conv2", relu=False, interpolation="nearest")
    assert torch.allclose(nearest, raw.repeat_interleave(2, 1).repeat_interleave(2, 2))
    assert torch.allclose(S.grad_cam(cnn, images, 1, "conv2", batch_size=1),
                          S.grad_cam(cnn, images, 1, "conv2"))
    same_size = S.grad_cam(cnn, images, 1, "conv1")
    assert same_size.shape == (3, 8, 8)


def test_grad_cam_plus_plus_by_hand(cnn, images):
    A, G = S.layer_gradients(cnn, images, 2, "conv3")
    alpha = G**2 / (2 * G**2 + A.sum((2, 3), keepdim=True) * G**3)
    alpha = torch.nan_to_num(alpha, nan=0.0)
    w = (alpha * torch.relu(G)).sum((2, 3), keepdim=True)
    by_hand = torch.relu((w * A).sum(1))
    got = S.grad_cam_plus_plus(cnn, images, 2, "conv3", upsample=False)
    assert torch.allclose(got, by_hand, atol=1e-12)
    assert S.grad_cam_plus_plus(cnn, images, 2, "conv3").shape == (3, 8, 8)


def test_grad_cam_on_1d_feature_maps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2),
                          nn.Flatten(), nn.Linear(12, 2)).double()
    x = torch.rand(2, 1, 8, dtype=torch.float64)
    assert S.grad_cam(model, x, 1, "1").shape == (2, 8)
    assert S.grad_cam(model, x, 1, "2", upsample=False).shape == (2, 4)
    coarse = S.grad_cam(model, x, 1, "2", relu=False, upsample=False)
    up = S.grad_cam(model, x, 1, "2", relu=False)
    assert up.shape == (2, 8)
    assert torch.allclose(up[:, 1::2][:, :-1], 0.75 * coarse[:, :-1] + 0.25 * coarse[:, 1:])


def test_grad_cam_errors(cnn, images):
    with pytest.raises(ValueError, match="`layer` must name a submodule of the model.*got 'conv9'"):
        S.grad_cam(cnn, images, 0, "conv9")
    with pytest.raises(ValueError, match="`layer` must be a submodule of the model, got a Conv2d"):
        S.grad_cam(cnn, images, 0, nn.Conv2d(1, 1, 3))
    with pytest.raises(TypeError, match="`layer` must be an nn.Module or its name, got int"):
        S.grad_cam(cnn, images, 0, 3)
    with pytest.raises(ValueError, match=r"`layer` must output feature maps \(B, K, h, w\).*"
                       r"got shape \(3, 10\)"):
        S.grad_cam(cnn, images, 0, "fc")
    with pytest.raises(ValueError, match="`interpolation` must be one of 'bilinear'"):
        S.grad_cam(cnn, images, 0, "conv3", interpolation="cubic")
    with pytest.raises(ValueError, match=r"`target` must be < 10"):
        S.grad_cam_plus_plus(cnn, images, 10, "conv3")
    shared = nn.Conv2d(2, 2, 3, padding=1)
    twice = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), shared, shared, nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(2, 2)).double()
    with pytest.raises(ValueError, match="layer '1' must run exactly once per forward pass, got 2"):
        S.grad_cam(twice, images, 0, shared)


    class Detached(nn.Module):
        def forward(self, x):
            return x.detach()

    cut = nn.Sequential(nn.Conv2d(1, 2, 3), Detached(), nn.Flatten(), nn.Linear(72, 2)).double()
    with pytest.raises(ValueError, match="does not depend on layer '0' through autograd"):
        S.grad_cam(cut, images, 0, "0")
    assert all(not m._forward_hooks for m in twice.modules())


def test_occlusion_of_a_linear_model_single_pixels():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).double()
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    w = model[1].weight[1].detach().view(1, 4, 4)
    assert torch.allclose(S.occlusion(model, x, 1, 1), x * w, atol=1e-14)
    baseline = 0.5
    assert torch.allclose(S.occlusion(model, x, 1, (1, 1), 1, baseline), (x - baseline) * w,
                          atol=1e-14)


def brute_force_occlusion(model, x, target, window, stride):
    """Captum's rule written out naively for (B, 1, H, W) inputs and a zero baseline."""
    H, W = x.shape[-2:]
    total, count = torch.zeros_like(x), torch.zeros_like(x)
    with torch.no_grad():
        fx = model(x)[:, target]
        rows = range(0, -(-(H - window) // stride) * stride + 1, stride)
        cols = range(0, -(-(W - window) // stride) * stride + 1, stride)
        for r in rows:
            for c in cols:
                occluded = x.clone()
                occluded[..., r:r + window, c:c + window] = 0
                drop = fx - model(occluded)[:, target]
                total[..., r:r + window, c:c + window] += drop.view(-1, 1, 1, 1)
                count[..., r:r + window, c:c + window] += 1
    return total / count


@pytest.mark.parametrize("window,stride", [(3, 1), (3, 2), (4, 3), (8, 1)])
def test_occlusion_matches_a_brute_force_loop(cnn, images, window, stride):
    ours = S.occlusion(cnn, images, 5, window, stride, batch_size=7)
    assert torch.allclose(ours, brute_force_occlusion(cnn, images, 5, window, stride), atol=1e-13)


def test_occlusion_windows_and_errors(cnn, images):
    window, starts = S.occlusion_windows((1, 8, 8), 3, 2)
    assert window == (1, 3, 3)
    assert [s.tolist() for s in starts] == [[0], [0, 2, 4, 6], [0, 2, 4, 6]]
    rgb = torch.rand(2, 3, 6, 6, dtype=torch.float64)
    torch.manual_seed(0)
    model = models.small_cnn(3, channels=(4,)).double()
    per_channel = S.occlusion(model, rgb, 0, (1, 2, 2), (1, 2, 2))
    assert per_channel.shape == rgb.shape
    with pytest.raises(ValueError, match=r"`stride` \(1, 3, 3\) must not exceed `window` "
                       r"\(1, 2, 2\)"):
        S.occlusion(cnn, images, 0, 2, 3)
    with pytest.raises(ValueError, match=r"`window` \(1, 9, 9\) must fit in the input"):
        S.occlusion(cnn, images, 0, 9)
    with pytest.raises(ValueError, match="`window` must have 2 .spatial. or 3 .with channels. "
                       "entries"):
        S.occlusion(cnn, images, 0, (2, 2, 2, 2))
    with pytest.raises(TypeError, match="`window` must be an int or a tuple of ints, got str"):
        S.occlusion(cnn, images, 0, "3x3")
    with pytest.raises(ValueError, match="`window` must be >= 1, got 0"):
        S.occlusion(cnn, images, 0, 0)
    with pytest.raises(ValueError, match=r"`baseline` must have shape \(1, 8, 8\) or "
                       r"\(3, 1, 8, 8\), got \(2, 2\)"):
        S.occlusion(cnn, images, 0, 2, baseline=torch.zeros(2, 2, dtype=torch.float64))


# ------------------------------------------------------------------------------------------
# Restoration: mode, hooks, weights and gradients

def modal_cnn():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Dropout(0.5), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(4, 3)).double()
    model.train()
    model[6].eval()  # a mixed mode the library must restore module by module
    return model


CALLS = {
    "gradient": lambda m, x: S.gradient(m, x, 1),
    "input_x_gradient": lambda m, x: S.input_x_gradient(m, x, 1),
    "smoothgrad": lambda m, x: S.smoothgrad(m, x, 1, 0.1, 4, seed=0),
    "integrated_gradients": lambda m, x: S.integrated_gradients(m, x, 1, steps=4,
                                                                return_delta=True),
    "expected_gradients": lambda m, x: S.expected_gradients(m, x, 1, x, samples=4, seed=0),
    "deeplift": lambda m, x: S.deeplift(m, x, 1, return_delta=True),
    "grad_cam": lambda m, x: S.grad_cam(m, x, 1, "4"),
    "grad_cam_plus_plus": lambda m, x: S.grad_cam_plus_plus(m, x, 1, "4"),
    "occlusion": lambda m, x: S.occlusion(m, x, 1, 4, 4),
    "local_linear_fit": lambda m, x: S.local_linear_fit(m, x[:, :, :2, :2], 1, samples=8,
                                                        seed=0),
    "randomization": lambda m, x: S.cascading_randomization(m, x, 1, S.gradient,
                                                            progress=False),
    "pgd_attack": lambda m, x: S.pgd_attack(m, x, torch.tensor([0, 1]), 0.1, steps=2, seed=0),
    "road": lambda m, x: S.road(m, x, torch.tensor([0, 1]), torch.rand_like(x), (0.5,)),
}


def snapshot(model):
    return ([m.training for m in model.modules()],
            [p.detach().clone() for p in model.state_dict().values()],
            [p.requires_grad for p in model.parameters()])


def assert_untouched(model, before):
    modes, state, flags = before
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(a, b) for a, b in zip(state, model.state_dict().values()))
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks


@pytest.mark.parametrize("name", list(CALLS))
def test_every_method_leaves_the_model_as_it_was(name):
    model = modal_cnn()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    before = snapshot(model)
    CALLS[name](model, x)
    assert_untouched(model, before)


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("name", list(CALLS))
def test_every_method_restores_the_model_when_it_raises(name):
    model = modal_cnn()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    before = snapshot(model)
    calls = {"n": 0}
    fail_at = {"randomization": 3, "pgd_attack": 2}.get(name, 1)  # after weights/inputs moved

    def explode(module, args, output):
        calls["n"] += 1
        if calls["n"] >= fail_at:
            raise Boom("forward failed")

    handle = model[9].register_forward_hook(explode)
    with pytest.raises(Boom):
        CALLS[name](model, x)
    handle.remove()
    assert_untouched(model, before)
