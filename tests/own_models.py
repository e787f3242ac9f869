"""Models as researchers have them, for the tests of `deepscope` on models the book never uses:
a torchvision-style ResNet (BatchNorm, ``out += identity``, ``ReLU(inplace=True)``; written
here, torchvision is not a dependency) and a TransformerEncoder classifier."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    """torchvision's ``BasicBlock``: conv-bn-relu-conv-bn, ``out += identity``, relu (in place)."""

    def __init__(self, channels: int, stride: int = 1, in_channels: int | None = None):
        super().__init__()
        in_channels = in_channels or channels
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride,
                                                      bias=False), nn.BatchNorm2d(channels))

    def forward(self, x):
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class TinyResNet(nn.Module):
    """A stem, two residual blocks (the second downsamples), global pooling and a linear head."""

    def __init__(self, classes: int = 3, width: int = 4):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = BasicBlock(width)
        self.layer2 = BasicBlock(2 * width, stride=2, in_channels=width)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet(seed: int = 0, dtype=torch.float64) -> TinyResNet:
    """A seeded `TinyResNet` with non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    net = TinyResNet().to(dtype)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
    return net.eval()


class TransformerClassifier(nn.Module):
    """Embed (B, L, F) features, a TransformerEncoder, mean-pool the tokens, a linear head."""

    def __init__(self, features: int = 3, d_model: int = 8, classes: int = 3, layers: int = 2,
                 batch_first: bool = True):
        super().__init__()
        self.batch_first = batch_first
        self.embed = nn.Linear(features, d_model)
        layer = nn.TransformerEncoderLayer(d_model, 2, 2 * d_model, dropout=0.0,
                                           batch_first=batch_first)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, classes)

    def forward(self, x):
        h = self.embed(x)
        if not self.batch_first:
            h = h.transpose(0, 1)
        h = self.encoder(h)
        return self.head(h.mean(1 if self.batch_first else 0))


def transformer(seed: int = 0, dtype=torch.float64, **kwargs) -> TransformerClassifier:
    torch.manual_seed(seed)
    return TransformerClassifier(**kwargs).to(dtype).eval()


class DictOutput(nn.Module):
    """Wrap a classifier so that it returns ``{"logits": ..., "features": ...}``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        logits = self.net(x)
        return {"features": F.relu(logits), "logits": logits}
