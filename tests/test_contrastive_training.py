"""deepscope.contrastive augmentations, trainers and probes: behaviour, reliability, bad input."""

import pytest
import torch
from deepscope import contrastive as C
from deepscope import data
from torch import nn

from tests.conftest import requires_cuda


@pytest.fixture(scope="module")
def digits():
    return data.digits("train"), data.digits("test")


# ----------------------------------------------------------------------------- augmentations


def test_affine_identity_and_exact_pixel_shift():
    x = torch.rand(5, 1, 8, 8)
    torch.testing.assert_close(C.affine_digits(x), x, atol=1e-6, rtol=0)
    shifted = C.affine_digits(x, shift=(1.0, 0.0))  # content moves one pixel to the left
    expected = torch.zeros_like(x)
    expected[..., :-1] = x[..., 1:]
    torch.testing.assert_close(shifted, expected, atol=1e-6, rtol=0)
    down = C.affine_digits(x, shift=torch.tensor([[0.0, -2.0]]).expand(5, 2))
    expected = torch.zeros_like(x)
    expected[..., 2:, :] = x[..., :-2, :]
    torch.testing.assert_close(down, expected, atol=1e-6, rtol=0)


def test_affine_rotation_by_90_degrees_is_rot90_and_zoom_enlarges():
    x = torch.rand(3, 2, 6, 6)
    rotated = C.affine_digits(x, angle=90.0)
    assert any(torch.allclose(rotated, torch.rot90(x, k, dims=(2, 3)), atol=1e-5) for k in (1, 3))
    # a centred blob grows when zooming in (scale < 1 shows a smaller crop at full size)
    blob = torch.zeros(1, 1, 8, 8)
    blob[..., 3:5, 3:5] = 1.0
    assert float(C.affine_digits(blob, scale=0.5).sum()) > 2 * float(blob.sum())


def test_affine_bad_input():
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"`x` must have 4 dimensions \(B, C, H, W\)"):
        C.affine_digits(x[0])
    with pytest.raises(ValueError, match="`scale` must be > 0"):
        C.affine_digits(x, scale=0.0)
    with pytest.raises(ValueError, match=r"`angle` must be a number or have 2 rows"):
        C.affine_digits(x, angle=torch.zeros(3))
    with pytest.raises(ValueError, match=r"`shift` must be a pair"):
        C.affine_digits(x, shift=(1.0, 2.0, 3.0))


def test_augment_digits_reproducible_in_range_and_varied(digits):
    (x, _), _ = digits
    batch = x[:64]
    a = C.augment_digits(batch, generator=torch.Generator().manual_seed(0))
    b = C.augment_digits(batch, generator=torch.Generator().manual_seed(0))
    c = C.augment_digits(batch, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == batch.shape and float(a.min()) >= 0 and float(a.max()) <= 1
    # views differ from the original but stay closer to it than to other digits
    d_same = (a - batch).flatten(1).norm(dim=1).mean()
    d_other = (a - batch.roll(1, 0)).flatten(1).norm(dim=1).mean()
    assert 0 < float(d_same) < float(d_other)
    plain = C.augment_digits(batch, max_shift=0, max_rotation=0, min_scale=1, noise=0)
    torch.testing.assert_close(plain, batch, atol=1e-6, rtol=0)
    v1, v2 = C.two_views(batch)
    assert v1.shape == v2.shape == batch.shape and not torch.equal(v1, v2)


def test_augment_digits_bad_input(digits):
    (x, _), _ = digits
    with pytest.raises(ValueError, match=r"`min_scale` must be in \(0, 1\], got 1.5"):
        C.augment_digits(x[:4], min_scale=1.5)
    with pytest.raises(ValueError, match="`noise` must be >= 0"):
        C.augment_digits(x[:4], noise=-0.1)
    with pytest.raises(TypeError, match="floating-point"):
        C.augment_digits((x[:4] * 16).long())


# ---------------------------------------------------------------------------------- builders


def test_projection_and_predictor_nets_shapes():
    net = C.projection_net(64, backbone=(32, 16), rep_dim=12, head=(10,), out_dim=3,
                           batch_norm=True)
    x = torch.rand(5, 1, 8, 8)
    assert net.backbone(x).shape == (5, 12) and net(x).shape == (5, 3)
    assert (net.backbone(x) >= 0).all()  # the representation is taken after the activation
    assert any(isinstance(m, nn.BatchNorm1d) for m in net.modules())
    linear_head = C.projection_net(head=(), out_dim=4)
    assert [type(m) for m in linear_head.head] == [nn.Linear]
    p = C.predictor_net(3, 2)
    assert p(torch.randn(4, 3)).shape == (4, 3)
    with pytest.raises(ValueError, match="`activation` must be one of"):
        C.projection_net(activation="swish")
    with pytest.raises(ValueError, match="`out_dim` must be >= 1"):
        C.projection_net(out_dim=0)


# ---------------------------------------------------------------------------------- trainers


def test_simclr_learns_alignment_and_uniformity_and_restores_mode(digits):
    (x, _), (xt, _) = digits
    torch.manual_seed(0)
    net = C.projection_net(backbone=(64,), rep_dim=32, head=(32,), out_dim=16)
    net.eval()
    history = C.train_simclr(net, x[:512], epochs=8, batch_size=128, temperature=0.2,
                             track=xt[:200], progress=False, seed=0)
    assert not net.training  # mode restored
    assert len(history.loss) == len(history.alignment) == len(history.uniformity) == 8
    assert history.loss[-1] < history.loss[0] < C.collapsed_info_nce(128)
    assert history.uniformity[-1] < history.uniformity[0] - 0.5
    assert history.to_dict()["epoch"] == list(range(1, 9))


def test_simclr_is_reproducible_and_callback_stops(digits):
    (x, _), _ = digits

    def run(**kwargs):
        torch.manual_seed(1)
        net = C.projection_net(backbone=(32,), rep_dim=16, head=(), out_dim=8)
        return net, C.train_simclr(net, x[:256], epochs=3, batch_size=64, progress=False,
                                   **kwargs)

    (n1, h1), (n2, h2) = run(seed=5), run(seed=5)
    assert h1.loss == h2.loss
    assert all(torch.equal(a, b) for a, b in zip(n1.state_dict().values(),
                                                 n2.state_dict().values()))
    _, h3 = run(seed=5, callback=lambda epoch, net, h: epoch == 2)
    assert h3.epoch == [1, 2] and h3.alignment == []
    _, h4 = run(seed=5, augment=lambda v: v + 0.0)  # identity views: trivially aligned
    assert h4.loss[-1] < h1.loss[-1]


def test_simsiam_stop_gradient_prevents_collapse(digits):
    (x, _), (xt, _) = digits
    results = {}
    for sg in (True, False):
        torch.manual_seed(0)
        net = C.projection_net(backbone=(64,), rep_dim=32, head=(32,), out_dim=16,
                               batch_norm=True)
        pred = C.predictor_net(16, 8)
        h = C.train_simsiam(net, pred, x[:512], stop_gradient=sg, epochs=10, batch_size=128,
                            lr=1e-2, track=xt[:200], progress=False)
        assert net.training and pred.training  # fresh modules are in train mode: restored
        results[sg] = h
    assert results[False].loss[-1] < -0.98  # without stop-gradient the loss is solved trivially
    # seeds 0-4 gave 0.062-0.105 without and 0.645-0.786 with stop-gradient
    assert results[False].collapse[-1] < 0.2 and results[True].collapse[-1] > 0.5


def test_simsiam_loss_gradient_flow():
    p1, z2, p2, z1 = (torch.randn(4, 3, requires_grad=True) for _ in range(4))
    loss = C.simsiam_loss(p1, z2, p2, z1, stop_gradient=True)
    loss.backward()
    assert z1.grad is None and z2.grad is None and p1.grad is not None
    C.simsiam_loss(p1, z2, p2, z1, stop_gradient=False).backward()
    assert z1.grad is not None
    same = torch.randn(4, 3)
    assert float(C.simsiam_loss(same, same, same, same)) == pytest.approx(-1.0)


def test_trainers_bad_input(digits):
    (x, _), _ = digits
    net = C.projection_net()
    with pytest.raises(ValueError, match="`temperature` must be > 0"):
        C.train_simclr(net, x[:8], temperature=0, progress=False)
    with pytest.raises(ValueError, match=r"`x` must have 4 dimensions \(N, C, H, W\)"):
        C.train_simclr(net, x[:8].flatten(1), progress=False)
    with pytest.raises(ValueError, match="`batch_size` must be >= 2"):
        C.train_simclr(net, x[:8], batch_size=1, progress=False)
    with pytest.raises(ValueError, match="at least 2 images"):
        C.train_simclr(net, x[:1], progress=False)
    with pytest.raises(TypeError, match="`augment` must be a dict"):
        C.train_simclr(net, x[:8], augment=3, epochs=1, progress=False)
    with pytest.raises(TypeError, match="`net` must be a torch.nn.Module"):
        C.train_simclr("net", x[:8], progress=False)
    with pytest.raises(TypeError, match="`predictor` must be a torch.nn.Module"):
        C.train_simsiam(net, None, x[:8], progress=False)
    with pytest.raises(TypeError, match="`stop_gradient` must be a bool"):
        C.train_simsiam(net, C.predictor_net(), x[:8], stop_gradient="yes", progress=False)
    with pytest.raises(ValueError, match=r"`track` must have 4 dimensions"):
        C.train_simclr(net, x[:8], track=x[:4, 0], progress=False)


# ------------------------------------------------------------------------------------ probes


def test_embed_restores_mode_and_batches():
    torch.manual_seed(0)
    net = C.projection_net(batch_norm=True)
    net.train()
    x = torch.rand(10, 1, 8, 8)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    z = C.embed(net, x, batch_size=3)
    assert net.training and not z.requires_grad and z.shape == (10, 32)
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(z, net(x))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # BN stats kept
    with pytest.raises(ValueError, match="`batch_size` must be >= 1"):
        C.embed(net, x, batch_size=0)


def test_linear_probe_and_knn_on_pixels(digits):
    train, test = digits
    result = C.linear_probe(nn.Flatten(), train, test)
    assert result.test_accuracy > 0.93 and result.train_accuracy >= result.test_accuracy
    assert isinstance(result.classifier, nn.Linear) and result.classifier.out_features == 10
    again = C.linear_probe(nn.Flatten(), train, test)
    assert again.test_accuracy == result.test_accuracy  # deterministic
    assert C.knn_accuracy(nn.Flatten(), train, test, k=1) > 0.95
    # a useless encoder (constant features) cannot beat the majority class
    zero = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    nn.init.zeros_(zero[1].weight)
    assert C.linear_probe(zero, train, test).test_accuracy < 0.2


def test_probe_bad_input(digits):
    train, test = digits
    with pytest.raises(TypeError, match=r"`train` must be a pair \(x, y\)"):
        C.linear_probe(nn.Flatten(), train[0], test)
    with pytest.raises(ValueError, match=r"`test\[1\]` must have shape \(397,\), got \(396,\)"):
        C.linear_probe(nn.Flatten(), train, (test[0], test[1][:-1]))
    with pytest.raises(ValueError, match="`k` must be <= the 5 training points"):
        C.knn_accuracy(nn.Flatten(), (train[0][:5], train[1][:5]), test, k=6)
    with pytest.raises(TypeError, match="`encoder` must be a torch.nn.Module"):
        C.knn_accuracy(lambda v: v, train, test)
    with pytest.raises(ValueError, match="`weight_decay` must be >= 0"):
        C.linear_probe(nn.Flatten(), train, test, weight_decay=-1)


@requires_cuda
def test_training_and_probe_on_cuda(digits):
    (x, y), (xt, yt) = digits
    torch.manual_seed(0)
    net = C.projection_net().to("cuda")
    h = C.train_simclr(net, x[:512], epochs=2, batch_size=128, track=xt[:100], progress=False)
    assert len(h.loss) == 2 and next(net.parameters()).device.type == "cuda"
    assert C.augment_digits(x[:8].cuda()).device.type == "cuda"
    result = C.linear_probe(net.backbone, (x, y), (xt, yt))
    assert 0 <= result.test_accuracy <= 1
    pred = C.predictor_net().to("cuda")
    C.train_simsiam(net, pred, x[:256], epochs=1, batch_size=128, progress=False)
