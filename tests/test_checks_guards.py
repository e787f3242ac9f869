import pytest
import torch
from deepscope import _checks as C
from deepscope._guards import eval_mode, removing_hooks, restored_parameters
from torch import nn


def test_check_tensor_messages():
    with pytest.raises(TypeError, match="f: `x` must be a torch.Tensor, got list"):
        C.check_tensor([1], "x", "f")
    with pytest.raises(TypeError, match="floating-point tensor, got dtype torch.uint8"):
        C.check_tensor(torch.zeros(2, dtype=torch.uint8), "x", "f")
    msg = r"must have 4 dimensions \(B, C, H, W\), got shape \(2, 3\)"
    with pytest.raises(ValueError, match=msg):
        C.check_tensor(torch.zeros(2, 3), "x", "f", ndim=4, like="(B, C, H, W)")
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        C.check_tensor(torch.zeros(2), "x", "f", min_ndim=2)
    x = torch.zeros(2, 3)
    assert C.check_tensor(x, "x", "f", ndim=(2, 3)) is x


def test_scalar_checks():
    assert C.check_int(3, "n", "f") == 3
    with pytest.raises(TypeError, match="`n` must be an int, got float"):
        C.check_int(3.0, "n", "f")
    with pytest.raises(ValueError, match="`n` must be >= 1, got 0"):
        C.check_int(0, "n", "f")
    assert C.check_float(2, "t", "f", positive=True) == 2.0
    with pytest.raises(ValueError, match="`t` must be > 0"):
        C.check_float(0.0, "t", "f", positive=True)
    with pytest.raises(ValueError, match="`t` must be >= 0"):
        C.check_float(-1.0, "t", "f", nonnegative=True)
    with pytest.raises(ValueError, match="finite"):
        C.check_float(float("nan"), "t", "f")
    with pytest.raises(TypeError, match="real number, got str"):
        C.check_float("1", "t", "f")
    with pytest.raises(ValueError, match="`m` must be one of 'a', 'b', got 'c'"):
        C.check_choice("c", "m", "f", ("a", "b"))
    with pytest.raises(ValueError, match="same shape, got \\(2,\\) and \\(3,\\)"):
        C.check_same_shape(torch.zeros(2), torch.zeros(3), ("a", "b"), "f")


def test_labels_and_targets():
    y = C.check_labels(torch.tensor([0, 2, 1]), 3, "f", num_classes=3)
    assert y.dtype == torch.long
    with pytest.raises(TypeError, match="integer tensor, got dtype torch.float32"):
        C.check_labels(torch.zeros(3), 3, "f")
    with pytest.raises(ValueError, match=r"must have shape \(4,\), got \(3,\)"):
        C.check_labels(torch.zeros(3, dtype=torch.long), 4, "f")
    with pytest.raises(ValueError, match="must be < 3 .*got max 3"):
        C.check_labels(torch.tensor([0, 3]), 2, "f", num_classes=3)
    with pytest.raises(ValueError, match=">= 0, got min -1"):
        C.check_labels(torch.tensor([0, -1]), 2, "f")
    with pytest.raises(TypeError, match="must be a torch.Tensor, got list"):
        C.check_labels([0, 1], 2, "f")
    assert torch.equal(C.as_target(2, 3, "f", num_classes=10), torch.tensor([2, 2, 2]))
    assert torch.equal(C.as_target(torch.tensor(1), 2, "f"), torch.tensor([1, 1]))
    assert torch.equal(C.as_target(torch.tensor([1, 0]), 2, "f"), torch.tensor([1, 0]))
    with pytest.raises(ValueError, match=r"`target` must be >= 0 and < 10, got 10"):
        C.as_target(10, 2, "f", num_classes=10)
    with pytest.raises(TypeError, match="got bool"):
        C.as_target(True, 2, "f")
    with pytest.raises(TypeError, match="got float"):
        C.as_target(1.0, 2, "f")


def test_model_helpers():
    assert C.model_device(nn.Identity()) == torch.device("cpu")
    assert C.model_device(nn.BatchNorm1d(2, affine=False)) == torch.device("cpu")
    assert C.model_device(nn.Linear(2, 2)) == torch.device("cpu")
    with pytest.raises(TypeError, match="`model` must be a torch.nn.Module, got function"):
        C.check_module(lambda x: x, "f")


def _net():
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.5), nn.Linear(4, 2))


def test_eval_mode_restores_each_submodule_also_on_error():
    net = _net()
    net[2].eval()  # a mixed-mode model must come back mixed
    before = [m.training for m in net.modules()]
    with eval_mode(net):
        assert not any(m.training for m in net.modules())
    assert [m.training for m in net.modules()] == before
    with pytest.raises(RuntimeError), eval_mode(net):
        raise RuntimeError("boom")
    assert [m.training for m in net.modules()] == before


def test_removing_hooks_removes_on_error():
    net = _net()
    with pytest.raises(KeyError), removing_hooks() as handles:
        handles.append(net[0].register_forward_hook(lambda *a: None))
        raise KeyError
    assert not net[0]._forward_hooks


def test_restored_parameters_is_bitwise_also_on_error():
    net = _net()
    net(torch.randn(5, 3)).sum().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    state = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(KeyboardInterrupt), restored_parameters(net):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(1.0)
        net.train()(torch.randn(5, 3)).sum().backward()  # moves BN stats, accumulates grads
        net[0].weight.requires_grad_(False)
        raise KeyboardInterrupt
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key]), key
    for p, g in zip(net.parameters(), grads):
        assert torch.equal(p.grad, g) and p.requires_grad
