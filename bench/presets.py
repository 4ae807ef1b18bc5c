"""Weight shapes of real models, for benchmarks and tests.

Only the tensors LaPerm permutes by default (ndim >= 2: Linear and Conv weights) are
listed; shapes follow PyTorch's layout, so rows are ``reshape(shape[0], -1)``.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

Shape = Tuple[int, ...]


def lenet_300_100() -> List[Shape]:
    """LeNet-300-100 on MNIST (the paper's first experiment)."""
    return [(300, 784), (100, 300), (10, 100)]


def conv4_cifar() -> List[Shape]:
    """Conv4 for CIFAR-10 (Frankle & Carbin; the paper's Conv2/4/13 family)."""
    return [
        (64, 3, 3, 3),
        (64, 64, 3, 3),
        (128, 64, 3, 3),
        (128, 128, 3, 3),
        (256, 8192),
        (256, 256),
        (10, 256),
    ]


def resnet50() -> List[Shape]:
    """torchvision's ResNet-50: 53 convolutions and the classifier, 25.5M weights."""
    shapes: List[Shape] = [(64, 3, 7, 7)]
    in_ch = 64
    for width, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for block in range(blocks):
            shapes += [(width, in_ch, 1, 1), (width, width, 3, 3), (4 * width, width, 1, 1)]
            if block == 0:
                shapes.append((4 * width, in_ch, 1, 1))  # downsample branch
            in_ch = 4 * width
    shapes.append((1000, 2048))
    return shapes


def gpt2_small_block() -> List[Shape]:
    """One GPT-2 small transformer block (d=768), weights as nn.Linear [out, in]."""
    d = 768
    return [(3 * d, d), (d, d), (4 * d, d), (d, 4 * d)]


def transformer_mlp() -> List[Shape]:
    """The down projection of a LLaMA-7B-sized MLP, nn.Linear(11008, 4096): rows of 11,008."""
    return [(4096, 11008)]


PRESETS: Dict[str, List[Shape]] = {
    "lenet-300-100": lenet_300_100(),
    "conv4": conv4_cifar(),
    "resnet50": resnet50(),
    "gpt2-block": gpt2_small_block(),
    "mlp-4096x11008": transformer_mlp(),
}
