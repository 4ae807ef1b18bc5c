"""The official code's CIFAR-10 models (notebooks Conv2, Conv4, Conv13, ResNet50), in
PyTorch with Keras's defaults: BatchNormalization(momentum=0.99, epsilon=1e-3) is
``BatchNorm(eps=1e-3, momentum=0.01)``, ``padding='same'`` pads TensorFlow's way
(paper_models.same_pad), and Flatten runs over [C, H, W] rather than Keras's [H, W, C] (a
fixed permutation of the dense layer's inputs, the same at random init).

    conv_net(2|4|13)   # Conv -> ReLU -> BN (-> Dropout) blocks, max-pooling, 256/512 dense
    resnet(depth=50)   # the Keras CIFAR ResNet v1: 16/32/64 filters, 6n+2 layers
"""

from __future__ import annotations

from typing import List

from paper_models import same_pad
from torch import nn


def _bn(c: int, dims: int = 2) -> nn.Module:
    return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d)(c, eps=1e-3, momentum=0.01)


# per model: conv widths, "M" a 2x2 max-pool, a float the dropout after the block before it
CONV_PLANS = {
    2: [64, 0.3, 64, "M"],
    4: [64, 0.3, 64, "M", 128, 0.4, 128, "M"],
    13: [64, 0.3, 64, "M", 128, 0.4, 128, "M", 256, 0.4, 256, 0.4, 256, "M"]
    + [512, 0.4, 512, 0.4, 512, "M", 512, 0.4, 512, 0.4, 512, "M", 0.5],
}


def conv_net(depth: int) -> nn.Module:
    """Conv2 / Conv4 / Conv13 of the official notebooks (2, 4, 13 convolutions): 3x3
    'same' convolutions, each followed by ReLU and BatchNorm, then dense layers with
    dropout 0.5 and a 10-way output."""
    layers: List[nn.Module] = []
    c_in, size = 3, 32
    for item in CONV_PLANS[depth]:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
            size //= 2
        elif isinstance(item, float):
            layers.append(nn.Dropout(item))
        else:
            layers += [nn.Conv2d(c_in, item, 3, padding=1), nn.ReLU(), _bn(item)]
            c_in = item
    features = c_in * size * size
    if depth == 13:
        head = [nn.Linear(features, 512), nn.ReLU(), _bn(512, 1), nn.Dropout(0.5)]
        head.append(nn.Linear(512, 10))
    else:
        head = [nn.Linear(features, 256), nn.ReLU(), nn.Dropout(0.5), _bn(256, 1)]
        head += [nn.Linear(256, 256), nn.ReLU(), _bn(256, 1), nn.Dropout(0.5)]
        head.append(nn.Linear(256, 10))
    return nn.Sequential(*layers, nn.Flatten(), *head)


class _ConvBN(nn.Sequential):
    """Keras resnet_layer: conv ('same'), optional BN, optional ReLU."""

    def __init__(self, c_in, c_out, kernel=3, stride=1, size=32, bn=True, relu=True):
        pad = [same_pad(kernel, stride, size)] if stride > 1 else []
        conv = nn.Conv2d(c_in, c_out, kernel, stride, padding=0 if stride > 1 else kernel // 2)
        super().__init__(*pad, conv, *([_bn(c_out)] if bn else []), *([nn.ReLU()] if relu else []))


class _Block(nn.Module):
    def __init__(self, c_in, c_out, stride, size):
        super().__init__()
        self.body = nn.Sequential(
            _ConvBN(c_in, c_out, 3, stride, size),
            _ConvBN(c_out, c_out, 3, 1, size // stride, relu=False),
        )
        self.shortcut = (
            _ConvBN(c_in, c_out, 1, stride, size, bn=False, relu=False)
            if stride > 1
            else nn.Identity()
        )

    def forward(self, x):
        return (self.shortcut(x) + self.body(x)).relu()


def resnet(depth: int = 50) -> nn.Module:
    """The Keras-examples CIFAR ResNet v1 the official notebook trains (depth 6n+2; 50:
    n=8): 16, 32, 64 filters, average pooling, a dense 10-way output."""
    if (depth - 2) % 6:
        raise ValueError(f"resnet depth must be 6n+2; got {depth}")
    n = (depth - 2) // 6
    layers: List[nn.Module] = [_ConvBN(3, 16)]
    c_in, size = 16, 32
    for stack, c_out in enumerate((16, 32, 64)):
        for block in range(n):
            stride = 2 if stack > 0 and block == 0 else 1
            layers.append(_Block(c_in, c_out, stride, size))
            c_in, size = c_out, size // stride
    return nn.Sequential(*layers, nn.AvgPool2d(8), nn.Flatten(), nn.Linear(64, 10))


MODELS = {
    "conv2": lambda: conv_net(2),
    "conv4": lambda: conv_net(4),
    "conv13": lambda: conv_net(13),
    "resnet": lambda: resnet(50),
}
