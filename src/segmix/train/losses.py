"""Stage-1 losses beyond the image-level BCE."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def patch_cam_loss(maps: Tensor, source: Tensor, patch_size: int, labels: Tensor, size: tuple[int, int]) -> Tensor:
    """BCE of each grid cell's pooled class map against what is known of that cell.

    A patch from image j carries none of the classes absent from j's label (certain
    negatives), and, when j has a single label, exactly that class (a certain positive). Other
    entries (a class of a multi-label source) are unknown and left out.

    Args:
        maps: float (B, K, h, w) per-location class logits.
        source: long (B, gh, gw) source image of every grid patch (:class:`MixInfo.source`).
        patch_size: grid patch edge in image pixels.
        labels: (B, K) multi-hot labels of the *unmixed* images.
        size: (H, W) of the images.

    Returns:
        scalar loss (0 when nothing is known).
    """
    gh, gw = source.shape[1:]
    up = F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)
    cells = F.avg_pool2d(up[:, :, : gh * patch_size, : gw * patch_size], patch_size)  # (B, K, gh, gw)
    hard = (labels > 0.5).float()
    target = hard[source].permute(0, 3, 1, 2)  # (B, K, gh, gw)
    single = (hard.sum(dim=1) == 1)[source][:, None]  # (B, 1, gh, gw)
    known = ((target == 0) | single).float()
    bce = F.binary_cross_entropy_with_logits(cells, target, reduction="none")
    return (bce * known).sum() / known.sum().clamp(min=1.0)
