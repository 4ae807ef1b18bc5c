"""Keras ``ImageDataGenerator``'s random affine augmentation, on a batch of images.

    aug = RandomAffine(rotation=10, zoom=0.1, shift=0.1)           # the Conv7 notebook
    aug = RandomAffine(rotation=15, shift=0.1, hflip=True)         # the CIFAR conv notebooks
    x = aug(x, generator)    # x: float [N, C, H, W]; one draw per image

Per image, as Keras draws them: an angle in U(-rotation, rotation) degrees, zoom factors
zx, zy independently in U(1 - zoom, 1 + zoom) (> 1 shows more of the image, smaller), shifts
in U(-shift, shift) of the height and width, a horizontal flip with probability 1/2; the
transform is about the image centre, bilinear, the border pixels repeated outside
(``fill_mode='nearest'``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class RandomAffine:
    def __init__(
        self, rotation: float = 0.0, zoom: float = 0.0, shift: float = 0.0, hflip: bool = False
    ):
        self.rotation, self.zoom, self.shift, self.hflip = rotation, zoom, shift, hflip

    def __repr__(self) -> str:
        return (
            f"RandomAffine(rotation={self.rotation}, zoom={self.zoom}, shift={self.shift}, "
            f"hflip={self.hflip})"
        )

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = x.shape[0]

        def uniform(half_width: float) -> torch.Tensor:
            return (torch.rand(n, generator=generator) * 2 - 1) * half_width

        angle = uniform(math.radians(self.rotation))
        zx, zy = 1 + uniform(self.zoom), 1 + uniform(self.zoom)
        # shifts as fractions of the image; grid coordinates span 2 per image
        tx, ty = 2 * uniform(self.shift), 2 * uniform(self.shift)
        cos, sin = torch.cos(angle), torch.sin(angle)
        # output -> input coordinates: rotation, then zoom, then shift
        theta = torch.stack(
            [
                torch.stack([cos * zx, -sin * zy, tx], 1),
                torch.stack([sin * zx, cos * zy, ty], 1),
            ],
            1,
        )
        if self.hflip:
            flip = torch.rand(n, generator=generator) < 0.5
            theta[flip, :, 0] = -theta[flip, :, 0]
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
