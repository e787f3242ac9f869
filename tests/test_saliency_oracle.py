"""Cross-checks against Captum (the `oracle` extra) in float64 to 1e-6: the same numbers from an
independent implementation, with Captum's conventions (quadrature, delta sign, noise, Grad-CAM
without ReLU unless asked, occlusion averaging)."""

import warnings

import pytest
import torch
from deepscope import models
from deepscope import saliency as S
from torch import nn

captum_attr = pytest.importorskip("captum.attr")
pytestmark = pytest.mark.oracle
TOL = 1e-6


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum warns about hooks and requires_grad
        yield


def cnn(seed=0):
    torch.manual_seed(seed)
    return models.small_cnn(channels=(4, 8, 8)).double()


def mlp(seed=0, activation="relu"):
    torch.manual_seed(seed)
    return models.mlp(64, (32, 16), 10, activation=activation).double()


@pytest.fixture
def x():
    torch.manual_seed(1)
    return torch.rand(5, 1, 8, 8, dtype=torch.float64)


TARGET = torch.tensor([0, 3, 7, 9, 2])


def close(ours, theirs):
    theirs = theirs.to(ours.dtype)
    scale = max(1.0, float(theirs.abs().max()))
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max() <= TOL * scale, float((ours - theirs).abs().max())


@pytest.mark.parametrize("build", [cnn, mlp])
def test_gradient_and_input_x_gradient(build, x):
    model = build()
    close(S.gradient(model, x, TARGET),
          captum_attr.Saliency(model).attribute(x, target=TARGET, abs=False))
    close(S.input_x_gradient(model, x, TARGET),
          captum_attr.InputXGradient(model).attribute(x, target=TARGET))


@pytest.mark.parametrize("method", S.QUADRATURE_RULES)
@pytest.mark.parametrize("steps", [2, 17])
def test_integrated_gradients_every_rule(method, steps, x):
    model = cnn()
    baseline = torch.rand(1, 8, 8, dtype=torch.float64)
    ours, delta = S.integrated_gradients(model, x, TARGET, baseline=baseline, steps=steps,
                                         method=method, batch_size=7, return_delta=True)
    theirs, their_delta = captum_attr.IntegratedGradients(model).attribute(
        x, baselines=baseline[None], target=TARGET, n_steps=steps, method=method,
        return_convergence_delta=True)
    close(ours, theirs)
    close(delta, their_delta)


def test_integrated_gradients_per_image_baselines_and_defaults(x):
    model = mlp(activation="tanh")
    baselines = torch.rand_like(x)
    close(S.integrated_gradients(model, x, TARGET, baseline=baselines, steps=10),
          captum_attr.IntegratedGradients(model).attribute(x, baselines=baselines,
                                                           target=TARGET, n_steps=10))
    close(S.integrated_gradients(model, x, 4, steps=50),
          captum_attr.IntegratedGradients(model).attribute(x, target=4))  # Captum: 50 steps, GL


class Recorder(nn.Module):
    """Passes inputs through and keeps a copy: how the test reads Captum's noise."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, z):
        self.seen.append(z.detach().clone())
        return self.model(z)


@pytest.mark.parametrize("kind", S.SMOOTHGRAD_KINDS)
def test_smoothgrad_with_matched_noise(kind, x):
    model = cnn()
    recorder = Recorder(model)
    n, sigma = 12, 0.2
    theirs = captum_attr.NoiseTunnel(captum_attr.Saliency(recorder)).attribute(
        x, nt_type=kind, nt_samples=n, stdevs=sigma, target=TARGET, abs=False)
    noisy = torch.cat(recorder.seen)  # (B * n, ...) in Captum's image-major order
    noise = ((noisy - x.repeat_interleave(n, 0)) / sigma).view(len(x), n, *x.shape[1:])
    ours = S.smoothgrad(model, x, TARGET, sigma, n, kind=kind, noise=noise.transpose(0, 1),
                        batch_size=16)
    close(ours, theirs)


def test_smoothgrad_of_input_x_gradient_with_matched_noise(x):
    model = mlp()
    recorder = Recorder(model)
    theirs = captum_attr.NoiseTunnel(captum_attr.InputXGradient(recorder)).attribute(
        x, nt_samples=6, stdevs=0.1, target=TARGET)
    noise = ((torch.cat(recorder.seen) - x.repeat_interleave(6, 0)) / 0.1).view(5, 6, 1, 8, 8)
    ours = S.smoothgrad(model, x, TARGET, 0.1, 6, noise=noise.transpose(0, 1),
                        attribution=S.input_x_gradient)
    close(ours, theirs)


@pytest.mark.parametrize("layer", ["conv1", "relu2", "conv3"])
def test_grad_cam_matches_layer_grad_cam(layer, x):
    model = cnn()
    module = dict(model.named_modules())[layer]
    gradcam = captum_attr.LayerGradCam(model, module)
    with_relu = gradcam.attribute(x, target=TARGET, relu_attributions=True)
    close(S.grad_cam(model, x, TARGET, layer, upsample=False), with_relu[:, 0])
    close(S.grad_cam(model, x, TARGET, module, relu=False, upsample=False),
          gradcam.attribute(x, target=TARGET)[:, 0])
    for mode in ("nearest", "bilinear"):
        up = captum_attr.LayerAttribution.interpolate(with_relu, (8, 8), mode)
        close(S.grad_cam(model, x, TARGET, layer, interpolation=mode), up[:, 0])


@pytest.mark.parametrize("window,stride,baseline", [((1, 3, 3), (1, 1, 1), 0.0),
                                                    ((1, 3, 3), (1, 2, 2), 0.25),
                                                    ((1, 2, 4), (1, 2, 3), 0.0),
                                                    ((1, 8, 8), (1, 1, 1), 0.5)])
def test_occlusion_matches(window, stride, baseline, x):
    model = cnn()
    with torch.no_grad():
        model.fc.weight.mul_(50)  # larger score changes, so the comparison is not all zeros
    theirs = captum_attr.Occlusion(model).attribute(
        x, sliding_window_shapes=window, strides=stride, baselines=baseline, target=TARGET)
    ours = S.occlusion(model, x, TARGET, window[1:], stride[1:], baseline, batch_size=9)
    assert theirs.abs().max() > 1e-3
    close(ours, theirs)  # Captum returns float32 here, so this is float32-accurate
    close(S.occlusion(model, x, TARGET, window, stride, baseline), theirs)


@pytest.mark.parametrize("activation", ["relu", "tanh", "softplus"])
def test_deeplift_rescale_matches_on_mlps(activation, x):
    model = mlp(activation=activation)
    baseline = torch.rand(1, 8, 8, dtype=torch.float64)
    ours, delta = S.deeplift(model, x, TARGET, baseline, return_delta=True)
    theirs, their_delta = captum_attr.DeepLift(model).attribute(
        x, baselines=baseline[None], target=TARGET, return_convergence_delta=True)
    close(ours, theirs)
    assert delta.abs().max() < 1e-10 and their_delta.abs().max() < 1e-10


def test_deeplift_rescale_matches_on_a_cnn_without_max_pooling(x):
    model = models.small_cnn(channels=(4, 8, 8), pool_every=9).double()
    baseline = torch.full((1, 8, 8), 0.3, dtype=torch.float64)
    close(S.deeplift(model, x, TARGET, baseline),
          captum_attr.DeepLift(model).attribute(x, baselines=baseline[None], target=TARGET))


def test_deeplift_max_pooling_keeps_summation_to_delta_where_captum_does_not(x):
    # Same rescale formula for max pooling as Captum's `maxpool` rule, but ours routes the
    # multipliers of [x; x'] consistently: its summation-to-delta gap is at rounding level.
    # Captum's DeepLift leaves a gap of about 1e-3 on this model (captum 0.9), so the two
    # disagree on models with max pooling; we test the property instead of the numbers.
    model = cnn()
    baseline = torch.rand(1, 8, 8, dtype=torch.float64)
    _, delta = S.deeplift(model, x, TARGET, baseline, return_delta=True)
    _, their_delta = captum_attr.DeepLift(model).attribute(
        x, baselines=baseline[None], target=TARGET, return_convergence_delta=True)
    assert delta.abs().max() < 1e-12
    if their_delta.abs().max() < 1e-10:  # should Captum close its gap, the numbers must agree
        close(S.deeplift(model, x, TARGET, baseline),
              captum_attr.DeepLift(model).attribute(x, baselines=baseline[None], target=TARGET))
