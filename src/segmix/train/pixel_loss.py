"""Stage 2's per-pixel loss on masks: cross-entropy, or generalized cross-entropy for pseudo masks.

Pseudo masks are wrong on a share of their pixels, in blobs where a CAM spilled over. Cross-entropy
weighs a pixel the more the less the network believes its label, so those blobs pull hardest once
the network has learned the rest. Generalized cross-entropy (Zhang & Sabuncu, NeurIPS 2018),
``(1 - p_y ** q) / q``, scales each pixel's cross-entropy gradient by ``p_y ** q``: pixels the
network disagrees with pull less. ``q -> 0`` is cross-entropy, ``q = 1`` the mean absolute error.
"""

from __future__ import annotations

from typing import get_args

import torch.nn.functional as F
from torch import Tensor

from segmix.config.stage2 import PixelLoss
from segmix.data.io import IGNORE_INDEX

PIXEL_LOSSES = get_args(PixelLoss)


def pixel_loss(logits: Tensor, target: Tensor, kind: str = "ce", q: float = 0.7) -> Tensor:
    """Loss of every pixel, 0 where ``target`` is ``IGNORE_INDEX``.

    Args:
        logits: float (B, C, H, W).
        target: long (B, H, W) class indices or ``IGNORE_INDEX``.
        kind: ``ce`` (cross-entropy) or ``gce`` (generalized cross-entropy, module docstring).
        q: the exponent of ``gce``, in (0, 1].

    Returns:
        float (B, H, W).

    Examples:
        >>> import torch
        >>> logits = torch.tensor([[[[2.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]]]])  # (1, 2, 1, 3)
        >>> target = torch.tensor([[[0, 1, 255]]])
        >>> [round(v, 3) for v in pixel_loss(logits, target)[0, 0].tolist()]  # -log p_y
        [0.127, 0.693, 0.0]
        >>> [round(v, 3) for v in pixel_loss(logits, target, "gce", q=1.0)[0, 0].tolist()]  # 1 - p_y
        [0.119, 0.5, 0.0]
    """
    if kind not in PIXEL_LOSSES:
        raise ValueError(f"unknown pixel loss {kind!r}; known: {', '.join(PIXEL_LOSSES)}")
    ce = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none")
    if kind == "ce":
        return ce
    return (1 - (-q * ce).exp()) / q  # p_y = exp(-ce); ce is 0 on ignored pixels, and so is this
