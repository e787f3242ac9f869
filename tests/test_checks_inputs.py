"""The value, device and dtype checks of `deepscope._checks` (DESIGN.md section 10), and the
device policy seen through public functions. `tests/test_fuzz_inputs.py` runs every public
function against bad inputs; these tests pin the messages and the policy's edges."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from deepscope import _checks as C
from deepscope import collapse, contrastive, landscape, saliency, train
from torch import nn

from tests.conftest import requires_cuda


def _net(dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 5), nn.ReLU(), nn.Linear(5, 3)).to(dtype)


def _x(n=4, dtype=torch.float32):
    return torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=dtype)


def test_check_finite_names_the_argument_the_value_and_where_it_is():
    x = torch.zeros(2, 3)
    x[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"f: `x` must be finite, got nan at index \(1, 2\)"):
        C.check_finite(x, "x", "f")
    x[1, 2] = -float("inf")
    with pytest.raises(ValueError, match="got -inf"):
        C.check_finite(x, "x", "f")
    assert C.check_finite(torch.arange(3), "y", "f") is not None  # integers are finite
    with pytest.raises(ValueError, match="`x` is on the meta device, which holds no values"):
        C.check_finite(torch.zeros(2, device="meta"), "x", "f")


def test_device_mismatch_names_both_devices():
    with pytest.raises(ValueError, match=r"f: `x` is on cpu but the model is on cuda:0; move "
                                         r"it there with .to\('cuda:0'\)"):
        C.check_on_device(torch.zeros(2), torch.device("cuda", 0), "x", "f")
    C.check_on_device(torch.zeros(2), torch.device("cpu"), "x", "f")


def test_dtype_mismatch_names_both_dtypes():
    with pytest.raises(TypeError, match="f: `x` has dtype torch.float16 but the model has "
                                        "torch.float32"):
        C.check_for_model(_net(), _x().half(), "x", "f")
    C.check_for_model(_net(), torch.zeros(2, 16, dtype=torch.long), "x", "f")  # token ids
    assert C.model_dtype(nn.ReLU()) is None


def test_a_public_function_reports_a_model_on_another_device(monkeypatch):
    """The device check of a real call, with the model's device faked (no GPU needed): the
    message names the argument, the function and both devices."""
    monkeypatch.setattr(C, "model_device", lambda model: torch.device("cuda", 0))
    with pytest.raises(ValueError, match="gradient: `x` is on cpu but the model is on cuda:0"):
        saliency.gradient(_net(), _x(), 0)


def test_tensors_of_one_computation_share_device_and_dtype():
    z1 = torch.randn(4, 3)
    with pytest.raises(TypeError, match="info_nce: `z2` has dtype torch.float64 but `z1` has "
                                        "torch.float32"):
        contrastive.info_nce(z1, z1.double())
    with pytest.raises(ValueError, match="alignment: `z2` is on the meta device"):
        contrastive.alignment(z1, z1.to("meta"))
    with pytest.raises(ValueError, match="integrated_gradients: `baseline` must be finite"):
        saliency.integrated_gradients(_net(), _x(), 0, baseline=torch.full((1, 4, 4), 1e400))


def test_class_labels_are_checked_against_the_model_outputs():
    x, y = _x(), torch.tensor([0, 1, 2, 3])
    for call in (lambda: train.fit(_net(), (x, y), epochs=1, progress=False),
                 lambda: landscape.loss_gradient(_net(), F.cross_entropy, (x, y)),
                 lambda: saliency.pgd_attack(_net(), x, y, 0.1, steps=1)):
        with pytest.raises(ValueError, match="must hold class labels < 3 .*got 3"):
            call()
    with pytest.raises(ValueError, match="`train\\[1\\]` must hold class labels >= 0, got -1"):
        train.fit(_net(), (x, torch.tensor([0, 1, 2, -1])), epochs=1, progress=False)


def test_integer_targets_of_other_losses_are_not_class_labels():
    """With a custom loss, integer targets may be anything (counts, ranks): no class check."""
    x, y = _x(), torch.tensor([0, 5, 9, 2])

    def mse(out, target):
        return F.mse_loss(out[:, 0], target.float())

    train.fit(_net(), (x, y), epochs=1, loss_fn=mse, progress=False)
    landscape.loss_gradient(_net(), mse, (x, y))


def test_the_class_probe_leaves_the_model_as_it_was():
    net = _net()
    net[2].eval()
    modes = [m.training for m in net.modules()]
    C.check_targets_for_model(net, _x(), torch.tensor([0, 1, 2, 0]), "y", "f")
    assert [m.training for m in net.modules()] == modes
    C.check_targets_for_model(nn.Flatten(), _x(), torch.tensor([7]), "y", "f")  # not (B, C)


def test_datasets_are_checked_once_and_nonfinite_data_is_refused():
    x = _x()
    x[2, 0, 1, 1] = float("nan")
    y = torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match=r"extract_features: `x` must be finite, got nan at "
                                         r"index \(2, 0, 1, 1\)"):
        collapse.extract_features(_net(), x)
    with pytest.raises(ValueError, match="slice_1d: `data x` must be finite"):
        landscape.slice_1d(_net(), landscape.random_direction(_net(), seed=0), F.cross_entropy,
                           (x, y), torch.linspace(-1, 1, 3))


@requires_cuda
def test_on_a_gpu_inputs_must_be_on_the_model_device_and_datasets_are_streamed():
    net = _net().cuda()
    x, y = _x(), torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match="gradient: `x` is on cpu but the model is on cuda"):
        saliency.gradient(net, x, 0)
    assert saliency.gradient(net, x.cuda(), 0).device.type == "cuda"
    features, logits = collapse.extract_features(net, x)  # a dataset: moved batch by batch
    assert features.device.type == "cuda"
    history = train.fit(net, (x, y), epochs=1, progress=False)
    assert len(history.train_loss) == 1
    with pytest.raises(ValueError, match="info_nce: `z2` is on cpu but `z1` is on cuda"):
        contrastive.info_nce(torch.randn(4, 3, device="cuda"), torch.randn(4, 3))
