"""Controls for collapse claims (deepscope.collapse.controls)."""

import math

import pytest
import torch
from deepscope import collapse


def test_worst_equiangularity_is_zero_only_for_a_simplex_etf():
    etf = collapse.simplex_etf(6, 10, seed=0, dtype=torch.float64)
    assert collapse.worst_equiangularity(etf) < 1e-12
    square = torch.tensor([[1.0, 0], [0, 1], [-1, 0], [0, -1]], dtype=torch.float64)
    # neighbours at cos 0 (|0 + 1/3|), opposite at cos -1 (|-1 + 1/3| = 2/3)
    assert collapse.worst_equiangularity(square) == pytest.approx(2 / 3)
    # a regular hexagon has mean cosine -1/5 exactly, yet is far from an ETF
    angles = torch.arange(6, dtype=torch.float64) * math.pi / 3
    hexagon = torch.stack([angles.cos(), angles.sin()], 1)
    cos = hexagon @ hexagon.T
    assert float((cos.sum() - 6) / 30) == pytest.approx(-1 / 5)
    assert collapse.worst_equiangularity(hexagon) > 0.5
    g = torch.Generator().manual_seed(0)
    v = torch.randn(7, 5, generator=g, dtype=torch.float64)
    assert collapse.worst_equiangularity(v) >= collapse.equiangularity(v)
    with pytest.raises(ValueError, match="worst_equiangularity"):
        collapse.worst_equiangularity(torch.zeros(3, 2))


def test_plane_regularity_of_an_etf_and_of_random_means():
    for c in (3, 5, 10):
        etf = collapse.simplex_etf(c, c + 3, seed=c, dtype=torch.float64)
        r = collapse.plane_regularity(etf + torch.ones(c + 3, dtype=torch.float64))  # any offset
        assert r.angle_error < 1e-8 and r.radius_spread < 1e-10
    g = torch.Generator().manual_seed(0)
    high = collapse.plane_regularity(torch.randn(10, 4096, generator=g, dtype=torch.float64))
    low = collapse.plane_regularity(torch.randn(10, 3, generator=g, dtype=torch.float64))
    assert high.angle_error < low.angle_error  # high-dimensional random means look regular
    assert high.angle_error < 10 and high.radius_spread < 0.1
    with pytest.raises(ValueError, match="plane_regularity"):
        collapse.plane_regularity(torch.randn(2, 4))


def test_nearest_centre_accuracy_on_separated_and_on_identical_features():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(20)
    centres = 10 * torch.eye(4, 6)
    feats = centres[labels] + 0.1 * torch.randn(80, 6, generator=g)
    assert collapse.nearest_centre_accuracy(feats, labels, feats, labels, shots=3) == 1.0
    # labels need not start at 0 or be contiguous
    shifted = labels * 2 + 5
    assert collapse.nearest_centre_accuracy(feats, shifted, feats, shifted, shots=1) == 1.0
    same = torch.zeros(80, 6)
    assert collapse.nearest_centre_accuracy(same, labels, same, labels) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="shots"):
        collapse.nearest_centre_accuracy(feats, labels, feats, labels, shots=50)
    with pytest.raises(ValueError, match="columns"):
        collapse.nearest_centre_accuracy(feats, labels, feats[:, :3], labels)


def test_plane_regularity_counts_classes_out_of_order_as_large_errors():
    angles = torch.tensor([0.0, 144, 72, 216, 288], dtype=torch.float64) * math.pi / 180
    pentagon = torch.stack([angles.cos(), angles.sin()], 1)  # regular, visited out of order
    r = collapse.plane_regularity(pentagon)
    assert r.radius_spread < 1e-12
    assert r.angle_error == pytest.approx(144)  # the step of -72 degrees, not +288
