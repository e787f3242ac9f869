"""`deepscope` on researchers' models: safe activation capture, Grad-CAM against Captum on a
torchvision-style ResNet and a TransformerEncoder classifier (1e-5, float64), frozen backbones,
sequence layouts, callable forwards and output adapters, and explicit classifiers."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from deepscope import collapse, landscape, models, train
from deepscope import saliency as S
from torch import nn

from tests.own_models import DictOutput, resnet, transformer

TOL = 1e-5
INNER = ["bn1", "layer1.bn1", "layer1.bn2", "layer1.conv2", "layer1", "layer2.bn2",
         "layer2.downsample.1"]


def close(got, want, tol=TOL):
    """Return True when max |got - want| <= tol * max |want| (shapes equal)."""
    assert got.shape == want.shape, (got.shape, want.shape)
    got, want = got.detach(), want.detach()
    return float((got - want).abs().max()) <= tol * float(want.abs().max())


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture
def x():
    torch.manual_seed(1)
    return torch.randn(5, 1, 8, 8, dtype=torch.float64)


def reference_capture_cam(model, x, target, layer):
    """The unsafe capture this round removed: keep a *reference* to the layer's output and
    differentiate with respect to it (the control: in-place successors corrupt it)."""
    seen = []
    handle = layer.register_forward_hook(lambda m, a, out: seen.append(out))
    try:
        out = model(x)
        (g,) = torch.autograd.grad(out[:, target].sum(), seen[0])
    finally:
        handle.remove()
    return (g.mean((2, 3), keepdim=True) * seen[0]).sum(1).detach()


# --------------------------------------------------------------------------------------------
# Grad-CAM on a ResNet against Captum


@pytest.mark.oracle
@pytest.mark.parametrize("name", INNER)
def test_grad_cam_inside_a_resnet_block_equals_captum(x, name):
    captum_attr = pytest.importorskip("captum.attr")
    net = resnet()
    layer = dict(net.named_modules())[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = captum_attr.LayerGradCam(net, layer).attribute(x, target=1)[:, 0]
    got = S.grad_cam(net, x, 1, name, relu=False, upsample=False)
    assert close(got, want)
    assert all(not m._forward_hooks for m in net.modules())


def test_the_reference_capture_control_is_wrong_where_successors_are_in_place(x):
    net = resnet()
    safe = S.grad_cam(net, x, 1, "layer1.bn2", relu=False, upsample=False)
    unsafe = reference_capture_cam(net, x, 1, net.layer1.bn2)
    assert float((unsafe - safe).norm() / safe.norm()) > 0.1  # the bug the test would catch
    conv = S.grad_cam(net, x, 1, "layer1.conv2", relu=False, upsample=False)
    assert close(reference_capture_cam(net, x, 1, net.layer1.conv2), conv)  # no in-place after


@pytest.mark.oracle
def test_layer_gradients_equal_captum_activation_and_gradient(x):
    captum_attr = pytest.importorskip("captum.attr")
    net = resnet()
    A, G = S.layer_gradients(net, x, 2, "layer1.bn2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want_a = captum_attr.LayerActivation(net, net.layer1.bn2).attribute(x)
        want_g = captum_attr.LayerGradientXActivation(
            net, net.layer1.bn2, multiply_by_inputs=False).attribute(x, target=2)
    assert close(A, want_a) and close(G, want_g)


def test_grad_cam_leaves_the_model_as_it_was_and_works_on_frozen_backbones(x):
    net = resnet().train()
    before = state(net)
    cam = S.grad_cam(net, x, 0, "layer1.bn2")
    assert net.training and all(m.training for m in net.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    net.requires_grad_(False)  # a frozen backbone: no parameter needs a gradient
    frozen = S.grad_cam(net, x, 0, "layer1.bn2")
    assert torch.equal(frozen, cam)
    assert not any(p.requires_grad for p in net.parameters())
    plus = S.grad_cam_plus_plus(net, x, 0, "layer2")
    assert plus.shape == (5, 8, 8) and torch.isfinite(plus).all()


# --------------------------------------------------------------------------------------------
# Grad-CAM on a TransformerEncoder classifier: one value per token


class _Transpose(nn.Module):
    def forward(self, h):
        return h.transpose(1, 2)


class _ChannelsFirstView(nn.Module):
    """The same function as a batch-first `TransformerClassifier`, with a parameter-free layer
    whose output is encoder layer 0's tokens as (B, D, L): Captum's channels-first Grad-CAM
    at that layer is the per-token Grad-CAM (the oracle for ``layout="channels_last"``)."""

    def __init__(self, net):
        super().__init__()
        self.net, self.view = net, _Transpose()

    def forward(self, x):
        h = self.net.encoder.layers[0](self.net.embed(x))
        h = self.view(h).transpose(1, 2)
        for layer in self.net.encoder.layers[1:]:
            h = layer(h)
        return self.net.head(h.mean(1))


@pytest.fixture
def tokens():
    torch.manual_seed(2)
    return torch.randn(4, 6, 3, dtype=torch.float64)  # (B, L, features)


@pytest.mark.oracle
def test_grad_cam_on_transformer_tokens_equals_captum(tokens):
    captum_attr = pytest.importorskip("captum.attr")
    net = transformer()
    oracle = _ChannelsFirstView(net)
    assert torch.allclose(oracle(tokens), net(tokens), atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = captum_attr.LayerGradCam(oracle, oracle.view).attribute(tokens, target=2)[:, 0]
    got = S.grad_cam(net, tokens, 2, "encoder.layers.0", layout="channels_last", relu=False)
    assert got.shape == (4, 6)  # one value per token
    assert close(got, want)
    # the control: channels-first treats the 6 tokens as channels, a map over the 8 features
    control = S.grad_cam(net, tokens, 2, "encoder.layers.0", relu=False, upsample=False)
    assert control.shape == (4, 8)


def test_grad_cam_sequence_first_layout_matches_batch_first(tokens):
    first = transformer()
    second = transformer(batch_first=False)
    second.load_state_dict(first.state_dict())
    assert torch.allclose(second(tokens), first(tokens), atol=1e-12)
    want = S.grad_cam(first, tokens, 1, "encoder.layers.1", layout="channels_last")
    got = S.grad_cam(second, tokens, 1, "encoder.layers.1", layout="sequence_first")
    assert close(got, want, 1e-10)
    with pytest.raises(ValueError, match="layout='sequence_first'"):
        S.grad_cam(second, tokens, 1, "encoder.layers.1")  # (L, B, D) read as channels first
    with pytest.raises(ValueError, match="`layout` must be one of"):
        S.grad_cam(first, tokens, 1, "encoder.layers.1", layout="NLC")


def test_grad_cam_accepts_token_ids():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Embedding(11, 8), transformer(features=8).encoder,
                        nn.Flatten(), nn.Linear(8 * 5, 3)).double()
    ids = torch.randint(0, 11, (3, 5))
    cam = S.grad_cam(net, ids, 0, "1.layers.0", layout="channels_last")
    assert cam.shape == (3, 5) and torch.isfinite(cam).all()


# --------------------------------------------------------------------------------------------
# Captured features are copies


def test_layer_features_capture_the_layer_output_not_what_in_place_ops_made_of_it(x):
    net = resnet()
    with torch.no_grad():
        h = net.relu(net.bn1(net.conv1(x)))
        b = net.layer1
        want = b.bn2(b.conv2(b.relu(b.bn1(b.conv1(h))))).flatten(1)
        block_out = net.layer1(h).flatten(1)
    assert float((block_out - want).norm() / want.norm()) > 0.1  # what a reference would hold
    feats = collapse.layer_features(net, x, ["layer1.bn2", None])
    assert close(feats["layer1.bn2"], want, 1e-12)
    y = torch.tensor([0, 1, 0, 1, 0])
    nc1 = collapse.nc1_by_layer(net, x, y, ["layer1.bn2"])["layer1.bn2"]
    assert nc1 == pytest.approx(collapse.nc1(want, y), rel=1e-10)
    features, logits = collapse.extract_features(net, x)
    assert torch.allclose(logits, net(x)) and torch.allclose(feats["classifier_input"], features)


# --------------------------------------------------------------------------------------------
# Callable forwards and output adapters


def test_callable_forwards_and_output_adapters_give_the_same_maps(x):
    net = resnet()
    want = S.grad_cam(net, x, 1, "layer1.bn2")
    assert torch.equal(S.grad_cam(net.forward, x, 1, "layer1.bn2"), want)  # bound method
    assert torch.equal(S.grad_cam(lambda t: net(t), x, 1, net.layer1.bn2), want)
    wrapped = DictOutput(net)
    assert torch.equal(S.grad_cam(wrapped, x, 1, "net.layer1.bn2", output="logits"), want)
    assert torch.equal(S.grad_cam(lambda t: (net(t), None), x, 1, net.layer1.bn2, output=0),
                       want)
    picked = S.grad_cam(wrapped, x, 1, "net.layer1.bn2", output=lambda o: o["logits"])
    assert torch.equal(picked, want)
    ig = S.integrated_gradients(net, x, 1, steps=8)
    assert torch.allclose(S.integrated_gradients(wrapped, x, 1, steps=8, output="logits"), ig)
    assert torch.allclose(S.gradient(lambda t: net(t), x, 1), S.gradient(net, x, 1))
    assert torch.allclose(S.smoothgrad(wrapped, x, 1, samples=3, seed=0, output="logits"),
                          S.smoothgrad(net, x, 1, samples=3, seed=0))
    assert torch.allclose(S.occlusion(wrapped, x, 1, 4, 4, output="logits"),
                          S.occlusion(net, x, 1, 4, 4))
    cnn = models.small_cnn(channels=(4, 8)).double()  # DeepLIFT needs one module per ReLU
    assert torch.allclose(S.deeplift(DictOutput(cnn), x, 1, output="logits"),
                          S.deeplift(cnn, x, 1))


def test_output_adapter_errors_name_what_is_there(x):
    net = resnet()
    wrapped = DictOutput(net)
    with pytest.raises(TypeError, match=r"got dict \(pass `output=` a key, an index"):
        S.gradient(wrapped, x, 0)
    with pytest.raises(ValueError, match=r"`output` 'logit' must be a key.*'features', 'logits'"):
        S.gradient(wrapped, x, 0, output="logit")
    with pytest.raises(TypeError, match="`output` 1 is an index, so the model must return a "
                                        "tuple"):
        S.gradient(wrapped, x, 0, output=1)
    with pytest.raises(ValueError, match="must be an index into the model's outputs, got 5"):
        S.gradient(lambda t: (net(t),), x, 0, output=5)
    with pytest.raises(TypeError, match="`output` must be None, a key"):
        S.gradient(net, x, 0, output=1.5)
    with pytest.raises(TypeError, match="`model` must be an nn.Module or a callable"):
        S.gradient("net", x, 0)
    with pytest.raises(TypeError, match="`layer` must be an nn.Module when `model` is a plain"):
        S.grad_cam(lambda t: net(t), x, 0, "layer1.bn2")
    with pytest.raises(TypeError, match="deeplift: `model` must be an nn.Module or a bound"):
        S.deeplift(lambda t: net(t), x, 0)


def test_fit_and_landscape_take_dict_outputs():
    torch.manual_seed(0)
    xs, ys = torch.randn(64, 6), torch.randint(0, 3, (64,))
    plain = models.mlp(6, (8,), 3)
    wrapped = DictOutput(models.mlp(6, (8,), 3))
    wrapped.net.load_state_dict(plain.state_dict())
    h_plain = train.fit(plain, (xs, ys), epochs=2, progress=False)
    h_dict = train.fit(wrapped, (xs, ys), epochs=2, progress=False, output="logits")
    assert h_dict.train_loss == pytest.approx(h_plain.train_loss, rel=1e-6)
    assert h_dict.train_acc == pytest.approx(h_plain.train_acc)
    raw = train.fit(DictOutput(models.mlp(6, (8,), 3)), (xs, ys), epochs=1, progress=False,
                    loss_fn=lambda out, y: F.cross_entropy(out["logits"], y))
    assert raw.train_acc[0] != raw.train_acc[0]  # NaN: no adapter, no accuracy
    assert train.evaluate(wrapped, (xs, ys), output="logits") == pytest.approx(
        train.evaluate(plain, (xs, ys)))
    d = landscape.random_direction(plain, 0)
    d_wrapped = {"net." + k: v for k, v in d.items()}
    grid = torch.linspace(-1, 1, 5)
    want = landscape.slice_1d(plain, d, F.cross_entropy, (xs, ys), grid)
    got = landscape.slice_1d(wrapped, d_wrapped, F.cross_entropy, (xs, ys), grid,
                             output="logits")
    assert torch.allclose(got, want, rtol=1e-5)
    top = landscape.top_eigenvalues(plain, F.cross_entropy, (xs, ys))
    assert torch.allclose(landscape.top_eigenvalues(wrapped, F.cross_entropy, (xs, ys),
                                                    output="logits"), top, rtol=1e-4)


# --------------------------------------------------------------------------------------------
# The classifier, named where guessing could be wrong


class HeadFirst(nn.Module):
    """The head registered before the body, a projector after it: registration order lies."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8, 3)
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
        self.projector = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.body(x))


def test_find_classifier_guesses_only_when_unambiguous():
    torch.manual_seed(0)
    net, x = HeadFirst(), torch.randn(10, 4)
    with pytest.raises(ValueError, match=r"cannot tell which layer is the classifier among "
                                         r"'head' \(Linear 8->3\), 'body.0' \(Linear 4->8\), "
                                         r"'projector'.*pass `classifier=`"):
        collapse.find_classifier(net)
    assert collapse.find_classifier(net, example=x) is net.head
    assert collapse.find_classifier(net, "projector") is net.projector
    features, logits = collapse.extract_features(net, x)  # traced with the first inputs
    assert torch.allclose(features, net.body(x)) and torch.allclose(logits, net(x))
    mlp = models.mlp(4, (8, 8), 3)
    assert collapse.find_classifier(mlp) is mlp.fc3  # the last layer of a Sequential
    wrapped = DictOutput(models.mlp(4, (8,), 3))  # not a Sequential: traced, or named
    with pytest.raises(ValueError, match="'net.fc1'.*'net.fc2'"):
        collapse.find_classifier(wrapped)
    assert collapse.find_classifier(wrapped, example=x) is wrapped.net.fc2
