"""Class activation maps from a stage-1 classifier, averaged over scales and the flip
(:mod:`segmix.models.tta`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from segmix.models.tta import averaged_maps


@torch.no_grad()
def class_activation_maps(
    model,
    images: Tensor,
    scales: Sequence[float] = (1.0,),
    flip: bool = True,
) -> Tensor:
    """Normalised CAMs at image resolution.

    Args:
        model: a :class:`~segmix.models.CamClassifier` (its ``cams`` method).
        images: normalised float (B, 3, H, W).
        scales: input rescalings averaged over (test-time augmentation).
        flip: also average over the horizontal flip.

    Returns:
        float32 (B, K, H, W) in [0, 1]: ReLU of the CAM resized to the images' size, averaged,
        then divided by each (image, class) maximum.
    """
    total = averaged_maps(model.cams, images, scales, flip, activation=F.relu)
    peak = total.flatten(2).amax(dim=2)[:, :, None, None]
    return total / peak.clamp(min=1e-6)
