"""H&E batch augmentations on the training device: dihedral flips and stain (HED) jitter.

Stain jitter works in haematoxylin-eosin-DAB space (Ruifrok & Johnston colour
deconvolution, also used by ``skimage.color.rgb2hed``): each image's H and E amounts are scaled
and shifted a little, which mimics stain variation between labs and scanners.
"""

from __future__ import annotations

import torch
from torch import Tensor

_RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_RGB_FROM_HED = _RGB_FROM_HED / _RGB_FROM_HED.norm(dim=1, keepdim=True)
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)


def _coin(n: int, generator: torch.Generator | None, device) -> Tensor:
    gen_device = generator.device if generator is not None else "cpu"
    return (torch.rand(n, generator=generator, device=gen_device) < 0.5).to(device)[:, None, None, None]


def dihedral(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Random flips / 90-degree rotations per image of (B, C, H, W); rotations need H == W."""
    b = x.shape[0]
    if x.shape[-1] == x.shape[-2]:
        x = torch.where(_coin(b, generator, x.device), x.transpose(-1, -2), x)
    x = torch.where(_coin(b, generator, x.device), x.flip(-1), x)
    return torch.where(_coin(b, generator, x.device), x.flip(-2), x)


def hed_jitter(x: Tensor, sigma: float = 0.05, generator: torch.Generator | None = None) -> Tensor:
    """Per-image stain jitter of RGB in [0, 1], (B, 3, H, W): H, E, D amounts scaled by
    ``1 + U(-sigma, sigma)`` and shifted by ``U(-sigma, sigma) * 0.1``."""
    if sigma <= 0:
        return x
    b = x.shape[0]
    gen_device = generator.device if generator is not None else "cpu"
    scale = 1 + (torch.rand(b, 3, generator=generator, device=gen_device) * 2 - 1) * sigma
    shift = (torch.rand(b, 3, generator=generator, device=gen_device) * 2 - 1) * sigma * 0.1
    scale, shift = scale.to(x.device), shift.to(x.device)
    od = -torch.log(x.float().clamp(min=1 / 255))
    hed = torch.einsum("bchw,cd->bdhw", od, _HED_FROM_RGB.to(x.device))
    hed = hed * scale[:, :, None, None] + shift[:, :, None, None]
    rgb = torch.exp(-torch.einsum("bdhw,dc->bchw", hed, _RGB_FROM_HED.to(x.device)))
    return rgb.clamp(0, 1).to(x.dtype)
