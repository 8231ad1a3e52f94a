"""Class activation maps from a stage-1 classifier, with multi-scale and flip averaging."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


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
        float32 (B, K, H, W) in [0, 1]: ReLU of the CAM, averaged, then divided by each
        (image, class) maximum.
    """
    h, w = images.shape[-2:]
    total = None
    for s in scales:
        x = images if s == 1.0 else F.interpolate(images, scale_factor=s, mode="bilinear", align_corners=False)
        for flipped in (False, True) if flip else (False,):
            xi = x.flip(-1) if flipped else x
            cam = model.cams(xi.contiguous(memory_format=torch.channels_last)).float()
            if flipped:
                cam = cam.flip(-1)
            cam = F.interpolate(F.relu(cam), size=(h, w), mode="bilinear", align_corners=False)
            total = cam if total is None else total + cam
    peak = total.flatten(2).amax(dim=2)[:, :, None, None]
    return total / peak.clamp(min=1e-6)
