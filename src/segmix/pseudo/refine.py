"""Pixel-adaptive refinement of CAMs: activation spreads to neighbours of like colour.

A stage-1 CAM is coarse (one value per 16 px at output stride 16) and blurred by upsampling, so
its edges fall between tissue boundaries. Refinement repeats a local weighted average in which a
neighbour's weight grows with its colour similarity (scaled by the spread of colours around the
pixel, so it adapts to flat and busy regions alike) plus a small share for nearness. Activation
then flows within a gland or a stroma band and stops at their edge. The neighbours are the 8
around each pixel at several dilations, so a few steps reach far.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

DILATIONS = (1, 2, 4, 8)
_OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def _shifted(x: Tensor, dilations: Sequence[int]) -> Iterator[Tensor]:
    """The N = 8 * len(dilations) neighbours of every pixel of (B, C, H, W), one (B, C, H, W)
    view each (edges replicated), in the order of :func:`pixel_affinity`'s weights."""
    pad = max(dilations)
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    h, w = x.shape[-2:]
    for d in dilations:
        for dy, dx in _OFFSETS:
            yield padded[:, :, pad + dy * d : pad + dy * d + h, pad + dx * d : pad + dx * d + w]


def pixel_affinity(
    images: Tensor, dilations: Sequence[int] = DILATIONS, colour_scale: float = 0.3, position_share: float = 0.01
) -> Tensor:
    """Weights of each pixel's neighbours, summing to 1.

    Args:
        images: float (B, 3, H, W), any colour scale (the weights are scale-free).
        dilations: neighbour rings, in pixels.
        colour_scale: a neighbour whose colour differs by this many local standard deviations
            weighs e^-1 of an identical one (before the softmax).
        position_share: weight of the nearness term beside the colour term.

    Returns:
        float (B, N, H, W), N = 8 * len(dilations).
    """
    images = images.float()
    n = 8 * len(dilations)
    # One neighbour at a time (no (B, 3, N, H, W) stack): the spread in two passes, then the
    # colour term of each neighbour.
    mean = sum(_shifted(images, dilations)) / n
    var = sum((near - mean).square() for near in _shifted(images, dilations)) / (n - 1)
    inv = 1 / (colour_scale * var.sqrt() + 1e-6)
    colour = torch.stack([((near - images) * inv).square().mean(dim=1) for near in _shifted(images, dilations)], 1)
    dist = torch.tensor([d * (dy * dy + dx * dx) ** 0.5 for d in dilations for dy, dx in _OFFSETS])
    dist = dist.to(images.device)
    position = -(dist / dist.std()).pow(2)
    weights = (-colour).softmax(dim=1) + position_share * position.softmax(dim=0)[None, :, None, None]
    return weights / (1 + position_share)


def refine_cams(cams: Tensor, images: Tensor, steps: int = 10, dilations: Sequence[int] = DILATIONS) -> Tensor:
    """CAMs averaged ``steps`` times over colour-alike neighbours, then rescaled to peak 1.

    Args:
        cams: float (B, K, H, W) in [0, 1] (:func:`segmix.pseudo.cams.class_activation_maps`).
        images: float (B, 3, H, W) of the same size, the tiles the CAMs are of.
        steps: averaging rounds; 0 returns ``cams`` unchanged.
        dilations: neighbour rings, in pixels.

    Returns:
        float32 (B, K, H, W) in [0, 1], each (image, class) with maximum 1 (or all 0).

    Examples:
        >>> import torch
        >>> img = torch.zeros(1, 3, 16, 16); img[..., 8:] = 1.0  # dark left half, bright right half
        >>> img += 0.05 * torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        >>> cam = torch.zeros(1, 1, 16, 16); cam[..., :10] = 1.0  # leaks 2 columns past the edge
        >>> out = refine_cams(cam, img, steps=10)
        >>> [round(float(out[0, 0, :, c].mean()), 1) for c in (0, 7, 8, 9)]  # the leak falls back
        [1.0, 1.0, 0.1, 0.1]
    """
    if steps <= 0:
        return cams
    weights = pixel_affinity(images, dilations)
    out = cams.float()
    for _ in range(steps):
        out = _weighted_neighbours(out, weights, dilations)
    peak = out.flatten(2).amax(dim=2)[:, :, None, None]
    return out / peak.clamp(min=1e-6)


def _weighted_neighbours(x: Tensor, weights: Tensor, dilations: Sequence[int]) -> Tensor:
    """sum_n weights[:, n] * neighbour_n(x) for x (B, K, H, W), weights (B, N, H, W), one
    neighbour at a time (no (B, K, N, H, W) stack: a fifth of the memory traffic)."""
    out = torch.zeros_like(x)
    for n, neighbour in enumerate(_shifted(x, dilations)):
        out.addcmul_(neighbour, weights[:, n : n + 1])
    return out
