import pytest
import torch
from deepscope import models


def test_mlp_shapes_and_names():
    net = models.mlp(64, (32, 16), 10)
    assert net(torch.randn(5, 1, 8, 8)).shape == (5, 10)
    assert [n for n, _ in net.named_children()] == [
        "flatten", "fc1", "act1", "fc2", "act2", "fc3"]
    bn = models.mlp(64, 32, 3, batch_norm=True, bias=False, activation="tanh")
    assert isinstance(bn.bn1, torch.nn.BatchNorm1d) and bn.fc1.bias is None
    assert isinstance(bn.act1, torch.nn.Tanh)


@pytest.mark.parametrize("kwargs, err, msg", [
    ({"in_features": 0}, ValueError, "`in_features` must be >= 1"),
    ({"hidden": "wide"}, TypeError, "`hidden` must be an int"),
    ({"activation": "swish"}, ValueError, "`activation` must be one of"),
])
def test_mlp_bad_input(kwargs, err, msg):
    args = {"in_features": 64, **kwargs}
    with pytest.raises(err, match=msg):
        models.mlp(**args)


def test_small_cnn_shapes_and_layers():
    net = models.small_cnn(channels=(4, 8, 8))
    assert net(torch.randn(2, 1, 24, 24)).shape == (2, 10)
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    names = [n for n, _ in net.named_children()]
    assert names[:4] == ["conv1", "relu1", "pool1", "conv2"] and "pool3" not in names
    bn = models.small_cnn(3, 5, channels=(4,), batch_norm=True)
    assert bn(torch.randn(2, 3, 8, 8)).shape == (2, 5) and hasattr(bn, "bn1")
    with pytest.raises(ValueError, match="`num_classes` must be >= 1"):
        models.small_cnn(num_classes=0)


def test_small_cnn_flatten_head_reads_positions():
    net = models.small_cnn(channels=(4, 8, 8), head="flatten", input_size=28)
    names = [n for n, _ in net.named_children()]
    assert names[-2:] == ["flatten", "fc"] and "gap" not in names
    assert net.fc.in_features == 8 * 7 * 7  # two pools: 28 -> 14 -> 7
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    wide = models.small_cnn(channels=(4, 8), head="flatten", input_size=(32, 16), pool_every=1)
    assert wide.fc.in_features == 8 * 16 * 8 and wide(torch.randn(1, 1, 32, 16)).shape == (1, 10)
    with pytest.raises(ValueError, match="`input_size` .* is required with head='flatten'"):
        models.small_cnn(head="flatten")
    with pytest.raises(ValueError, match="`head` must be one of 'gap', 'flatten'"):
        models.small_cnn(head="max")
    with pytest.raises(ValueError, match="`input_size` must be >= 4"):
        models.small_cnn(head="flatten", input_size=2)
    with pytest.raises(ValueError, match="`input_size` must be an int or a pair"):
        models.small_cnn(head="flatten", input_size=(8, 8, 8))


def test_tiny_transformer_is_causal():
    torch.manual_seed(0)
    net = models.tiny_transformer(11, context=12, d_model=16, n_layers=2, n_heads=4).eval()
    tokens = torch.randint(0, 11, (3, 12))
    out = net(tokens)
    assert out.shape == (3, 12, 11)
    changed = tokens.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % 11
    torch.testing.assert_close(net(changed)[:, :8], out[:, :8])  # the past ignores the future
    assert not torch.allclose(net(changed)[:, 8:], out[:, 8:])
    with pytest.raises(ValueError, match=r"T <= 12, got \(1, 13\)"):
        net(torch.zeros(1, 13, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible by `n_heads`"):
        models.tiny_transformer(5, d_model=10, n_heads=3)


def test_count_parameters():
    net = models.mlp(4, 3, 2)
    assert models.count_parameters(net) == 4 * 3 + 3 + 3 * 2 + 2
    net.fc1.weight.requires_grad_(False)
    assert models.count_parameters(net) == 3 + 3 * 2 + 2
    assert models.count_parameters(net, trainable_only=False) == 23


def test_cnn1d_is_the_mnist1d_convbase():
    model = models.cnn1d()
    # Greydanus & Kobak's ConvBase: 25 channels, kernels 5/3/3, stride 2, padding 1 -> 5,210.
    assert models.count_parameters(model) == 5210
    assert [name for name, _ in model.named_children()] == [
        "conv1", "relu1", "conv2", "relu2", "conv3", "relu3", "flatten", "fc"]
    assert model(torch.randn(4, 1, 40)).shape == (4, 10)
    wide = models.cnn1d(60, 3, in_channels=2, channels=8, kernel_sizes=(3, 3))
    assert wide(torch.randn(2, 2, 60)).shape == (2, 3) and wide.fc.in_features == 8 * 15
    with pytest.raises(ValueError, match="cnn1d: a signal of length 2 is too short"):
        models.cnn1d(2, kernel_sizes=(5, 3, 3))
    with pytest.raises(TypeError, match="cnn1d: `channels` must be an int"):
        models.cnn1d(channels=2.5)
