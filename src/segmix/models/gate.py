"""The label gate: a class absent from a tile's label never wins a pixel of it.

One rule for every place that turns class maps into classes: the pseudo masks
(:func:`segmix.pseudo.pseudo_masks`), stage 1's val mIoU and feedback probe
(:mod:`segmix.train.losses`).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def gated_max(scores: Tensor, gate: Tensor) -> tuple[Tensor, Tensor]:
    """The best score and class among the gated classes at every location.

    Args:
        scores: float (B, K, H, W).
        gate: bool (B, K), the classes each image may take (its labels).

    Returns:
        ``(best, index)``: float (B, H, W) (``-inf`` where the gate is empty) and long (B, H, W).

    Examples:
        >>> import torch
        >>> scores = torch.tensor([[[[0.2]], [[0.9]], [[0.5]]]])  # class 1 strongest, not in the label
        >>> best, index = gated_max(scores, torch.tensor([[True, False, True]]))
        >>> float(best), int(index)
        (0.5, 2)
    """
    gated = scores.masked_fill(~gate.to(scores.device)[:, :, None, None], float("-inf"))
    return gated.max(dim=1)


def gated_argmax(maps: Tensor, gate: Tensor, size: tuple[int, int]) -> Tensor:
    """The upsampled map's strongest gated class at every pixel: long (B, H, W).

    Args:
        maps: float (B, K, h, w) per-location class logits.
        gate: bool (B, K), the classes allowed per image (its labels: the pseudo masks' gate).
        size: (H, W) to upsample to (bilinear).
    """
    up = F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)
    return gated_max(up, gate)[1]
