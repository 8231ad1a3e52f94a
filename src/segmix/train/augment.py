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


def _coin(n: int, generator: torch.Generator | None) -> Tensor:
    gen_device = generator.device if generator is not None else "cpu"
    return torch.rand(n, generator=generator, device=gen_device) < 0.5


def _dihedral(tensors: list[Tensor], generator: torch.Generator | None) -> list[Tensor]:
    # One coin per image and operation, shared by all tensors: masks move with their images.
    h, w = tensors[0].shape[-2:]
    ops = [lambda t: t.transpose(-1, -2)] if h == w else []
    ops += [lambda t: t.flip(-1), lambda t: t.flip(-2)]
    for op in ops:
        coin = _coin(tensors[0].shape[0], generator)
        tensors = [torch.where(coin.to(t.device).view(-1, *([1] * (t.ndim - 1))), op(t), t) for t in tensors]
    return tensors


def dihedral(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Random flips / 90-degree rotations per image of (B, C, H, W); rotations need H == W."""
    return _dihedral([x], generator)[0]


def dihedral_pair(x: Tensor, masks: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """The same random flips / rotations on images (B, C, H, W) and their masks (B, H, W)."""
    x, masks = _dihedral([x, masks], generator)
    return x, masks


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
