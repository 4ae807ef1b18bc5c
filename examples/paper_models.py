"""The official code's MNIST models and what its Keras layers do by default, in PyTorch.

    f2()       # Section 5.5's F2: 784-128-64-10, ReLU, no bias
    conv7()    # Section 5.1's Conv7: 7 convolutions, dropout 0.4
    keras_he_uniform_(model, generator)   # Keras 'he_uniform' on weights and biases
    bernoulli_keep_(tensors, ["1/15", "1/7", "1/3"], generator)

Keras details reproduced: ``padding='same'`` with stride 2 pads TensorFlow's way (the odd
pixel at the bottom and right: :func:`same_pad`), and Keras's fan of a 1-D tensor (a bias)
is its length, so ``bias_initializer='he_uniform'`` draws biases from U(+-sqrt(6 / n)).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Iterable, List, Sequence

import torch
from torch import nn


def same_pad(kernel: int, stride: int, size: int) -> nn.ZeroPad2d:
    """TensorFlow's 'same' padding of a square ``size`` input: out = ceil(size / stride),
    the total padding split with the extra pixel after (bottom, right)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    before = total // 2
    return nn.ZeroPad2d((before, total - before, before, total - before))


def relu_mlp(sizes: Sequence[int], bias: bool) -> nn.Module:
    """Flattened inputs through Linear layers of ``sizes`` (inputs, widths..., outputs),
    ReLU between them."""
    layers: List[nn.Module] = [nn.Flatten()]
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(n_in, n_out, bias=bias))
    return nn.Sequential(*layers)


def f2(bias: bool = False) -> nn.Module:
    """The paper's F2 (Section 5.5): 784-128-64-10 with ReLU, no bias."""
    return relu_mlp((784, 128, 64, 10), bias)


def conv7(bias: bool = True, dropout: float = 0.4) -> nn.Module:
    """The official notebook's Conv7 for 28x28 MNIST: 26, 24, 12, 10, 8, 4, 1 pixels."""

    def conv(c_in, c_out, k, stride=1, size=None):
        layers = [same_pad(k, stride, size)] if size is not None else []
        return layers + [nn.Conv2d(c_in, c_out, k, stride, bias=bias), nn.ReLU()]

    return nn.Sequential(
        *conv(1, 32, 3),
        *conv(32, 32, 3),
        *conv(32, 32, 5, 2, size=24),
        nn.Dropout(dropout),
        *conv(32, 64, 3),
        *conv(64, 64, 3),
        *conv(64, 64, 5, 2, size=8),
        nn.Dropout(dropout),
        *conv(64, 128, 4),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(128, 10, bias=bias),
    )


@torch.no_grad()
def keras_he_uniform_(model: nn.Module, generator: torch.Generator, biases: bool = True) -> None:
    """Keras 'he_uniform' on every Linear/Conv weight (U(+-sqrt(6 / fan_in)), fan_in =
    inputs x kernel area, as ``kaiming_uniform_(nonlinearity='relu')``) and, with
    ``biases``, on their biases (Keras's fan of a 1-D tensor is its length n:
    U(+-sqrt(6 / n))); else zero biases."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_uniform_(m.weight, nonlinearity="relu", generator=generator)
            if m.bias is not None:
                bound = math.sqrt(6.0 / m.bias.numel()) if biases else 0.0
                m.bias.uniform_(-bound, bound, generator=generator)


def parse_keep(text: str) -> List[Fraction]:
    """'4/7' or '1/15,1/7,1/3' or '0.7': the kept fraction of each weight tensor."""
    try:
        fractions = [Fraction(part.strip()) for part in text.split(",")]
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"--keep takes fractions like 4/7 or 1/15,1/7,1/3; got {text!r}") from None
    if not all(0 < f <= 1 for f in fractions):
        raise ValueError(f"--keep fractions must be in (0, 1]; got {text!r}")
    return fractions


def per_tensor(values: Sequence, tensors: Sequence[torch.Tensor], name: str) -> list:
    """One value for every tensor, or one per tensor."""
    if len(values) == 1:
        return list(values) * len(tensors)
    if len(values) != len(tensors):
        raise ValueError(f"{name} gives {len(values)} values for {len(tensors)} weight tensors")
    return list(values)


@torch.no_grad()
def bernoulli_keep_(
    tensors: Iterable[torch.Tensor], keep: Sequence[Fraction], generator: torch.Generator
) -> None:
    """The official masks: each element kept independently with probability n/d (a draw
    in 1..d kept when <= n), so a tensor keeps about, not exactly, n/d of its weights."""
    tensors = list(tensors)
    for t, f in zip(tensors, per_tensor(keep, tensors, "--keep")):
        f = Fraction(f).limit_denominator(10**6)
        draw = torch.randint(1, f.denominator + 1, t.shape, generator=generator)
        t.mul_((draw <= f.numerator).to(t.dtype))
