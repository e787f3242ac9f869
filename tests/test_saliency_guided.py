"""Guided backpropagation and the deconvnet: closed forms on a one-hidden-layer network, the
model left as it was, hostile models refused by name, and Captum as an oracle (float64, 1e-6)."""

import warnings

import pytest
import torch
from deepscope import models
from deepscope import saliency as S
from torch import nn


def two_layer(seed=0, inplace=False):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 9), nn.ReLU(inplace=inplace), nn.Linear(9, 3)).double()


def test_closed_forms_on_one_hidden_layer():
    model = two_layer()
    x = torch.randn(5, 6, dtype=torch.float64)
    W1, b1, W2 = model[0].weight.detach(), model[0].bias.detach(), model[2].weight.detach()
    active = ((x @ W1.T + b1) > 0).double()  # (5, 9)
    w = W2[2]  # the target's row (9,)
    expected = {
        "gradient": (active * w) @ W1,
        "guided": (active * w.clamp_min(0)) @ W1,
        "deconvnet": w.clamp_min(0).expand(5, 9) @ W1,
    }
    assert torch.allclose(S.gradient(model, x, 2), expected["gradient"], atol=1e-12)
    assert torch.allclose(S.guided_backprop(model, x, 2), expected["guided"], atol=1e-12)
    assert torch.allclose(S.deconvolution(model, x, 2), expected["deconvnet"], atol=1e-12)
    # the three differ on this model: the rules are not the gradient in disguise
    assert not torch.allclose(expected["guided"], expected["gradient"])
    assert not torch.allclose(expected["guided"], expected["deconvnet"])


def test_inplace_and_reused_relus_and_batches(cnn, images):
    target = torch.tensor([0, 3, 5, 9])
    plain = two_layer()
    inplace = two_layer(inplace=True)
    x = torch.randn(4, 6, dtype=torch.float64)
    for fn in (S.guided_backprop, S.deconvolution):
        assert torch.allclose(fn(plain, x, 1), fn(inplace, x, 1), atol=1e-15)
        full = fn(cnn, images, target)
        assert torch.allclose(fn(cnn, images, target, batch_size=3), full, atol=1e-15)
    relu = nn.ReLU()
    torch.manual_seed(0)
    shared = nn.Sequential(nn.Linear(6, 6), relu, nn.Linear(6, 6), relu, nn.Linear(6, 2)).double()
    separate = nn.Sequential(shared[0], nn.ReLU(), shared[2], nn.ReLU(), shared[4])
    assert torch.allclose(S.guided_backprop(shared, x, 1), S.guided_backprop(separate, x, 1),
                          atol=1e-15)


def test_model_left_as_it_was(cnn, images):
    cnn.train()
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    S.guided_backprop(cnn, images, 2)
    S.deconvolution(cnn, images, 2)
    assert cnn.training
    assert all(torch.equal(before[k], v) for k, v in cnn.state_dict().items())
    assert all(p.grad is None and p.requires_grad for p in cnn.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in cnn.modules())


def test_hooks_removed_after_a_failure(cnn, images):
    with pytest.raises(ValueError, match="`target` must be < 10"):
        S.guided_backprop(cnn, images, 10)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in cnn.modules())


def test_refuses_a_model_without_relu_modules():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    with pytest.raises(ValueError, match=r"guided_backprop: the model must use nn.ReLU modules"):
        S.guided_backprop(Functional(), torch.randn(2, 4), 0)
    tanh = models.mlp(4, (8,), 2, activation="tanh")
    with pytest.raises(ValueError, match=r"deconvolution: the model must use nn.ReLU modules"):
        S.deconvolution(tanh, torch.randn(2, 4), 0)


def test_registered_as_methods():
    assert S.METHODS["guided_backprop"] is S.guided_backprop
    assert S.METHODS["deconvolution"] is S.deconvolution


@pytest.mark.oracle
@pytest.mark.parametrize("kind", ["cnn", "mlp"])
def test_matches_captum(kind):
    captum_attr = pytest.importorskip("captum.attr")
    torch.manual_seed(0)
    if kind == "cnn":  # conv, max pooling, global average pooling
        model = models.small_cnn(channels=(4, 8, 8)).double()
        x = torch.rand(5, 1, 8, 8, dtype=torch.float64)
    else:
        model = models.mlp(64, (32, 16), 10).double()
        x = torch.rand(5, 64, dtype=torch.float64)
    target = torch.tensor([0, 3, 7, 9, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum warns about backward hooks
        theirs_guided = captum_attr.GuidedBackprop(model).attribute(x, target=target)
        theirs_deconv = captum_attr.Deconvolution(model).attribute(x, target=target)
    for ours, theirs in ((S.guided_backprop(model, x, target), theirs_guided),
                         (S.deconvolution(model, x, target), theirs_deconv)):
        scale = max(1.0, float(theirs.abs().max()))
        assert ours.shape == theirs.shape
        assert float((ours - theirs).abs().max()) <= 1e-6 * scale
        assert float(ours.abs().max()) > 0
