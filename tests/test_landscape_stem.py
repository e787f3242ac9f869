"""The first-layer shortcut of `landscape` slices: a Sequential whose first layer is linear in its
parameters is evaluated with one pass through that layer per anchor, which must give the same
losses as evaluating every point in full (float rounding apart), and must not be taken where it
would be wrong."""

import pytest
import torch
import torch.nn.functional as F
from deepscope import landscape, models
from deepscope.landscape._core import _linear_stem, trainable_parameters
from torch import nn


def _slices(model, x, y):
    torch.manual_seed(0)
    d1, d2 = landscape.random_direction(model, 0), landscape.random_direction(model, 1)
    grid = torch.linspace(-1, 1, 7)
    fast = landscape.slice_2d(model, d1, d2, F.cross_entropy, (x, y), grid, grid, progress=False,
                              accuracy=True)
    full = landscape.slice_2d(model, d1, d2, F.cross_entropy, (x, y), grid, grid, progress=False,
                              accuracy=True, vectorize=False)
    return fast, full


@pytest.mark.parametrize("build, shape", [
    (lambda: models.mlp(64, (16,), 10), (30, 64)),
    (lambda: models.mlp(64, (16, 12), 10, batch_norm=True), (30, 1, 8, 8)),
    (lambda: models.small_cnn(channels=(3, 4)), (30, 1, 8, 8)),
    (lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), (30, 64)),
])
def test_shortcut_equals_full_evaluation(build, shape):
    torch.manual_seed(1)
    model = build()
    assert _linear_stem(model, list(trainable_parameters(model))) is not None
    x, y = torch.rand(shape), torch.randint(0, 10, (shape[0],))
    (fast, fast_acc), (full, full_acc) = _slices(model, x, y)
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-6)
    assert torch.equal(fast_acc, full_acc)


def test_shortcut_is_not_taken_where_it_would_be_wrong():
    class Wrapped(nn.Module):  # not a Sequential: its forward is unknown
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x) ** 2

    assert _linear_stem(Wrapped(), ["fc.weight", "fc.bias"]) is None
    frozen_first = models.mlp(4, 3, 2)
    frozen_first.fc1.bias.requires_grad_(False)  # a constant term is not linear in the anchors
    assert _linear_stem(frozen_first, list(trainable_parameters(frozen_first))) is None
    norm_first = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 2))
    assert _linear_stem(norm_first, list(trainable_parameters(norm_first))) is None
    stateful = nn.Sequential(nn.BatchNorm1d(4, affine=False), nn.Linear(4, 2))
    assert _linear_stem(stateful, ["1.weight", "1.bias"]) is None
    circular = nn.Sequential(nn.Conv1d(1, 2, 3, padding=1, padding_mode="circular"))
    assert _linear_stem(circular, ["0.weight", "0.bias"]) is None


def test_frozen_first_layer_still_slices_correctly():
    torch.manual_seed(2)
    model = models.mlp(64, (16,), 10)
    model.fc1.bias.requires_grad_(False)
    x, y = torch.rand(20, 64), torch.randint(0, 10, (20,))
    (fast, _), (full, _) = _slices(model, x, y)
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-6)
