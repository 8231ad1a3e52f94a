"""Near-white glass detection: the background policy of pseudo masks and predictions."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def tissue_mask(
    image: np.ndarray, white: float = 0.80, saturation: float = 0.15, min_area: float = 0.005
) -> np.ndarray:
    """Tissue (True) vs glass (False) for one tile.

    Glass is bright *and* colourless: grey level above ``white`` (fraction of 255) and
    saturation (max - min channel, fraction of 255) below ``saturation``; pale pink necrosis
    and stroma are bright but coloured. Connected pieces of either kind smaller than
    ``min_area`` of the tile are absorbed by the other (small-object removal).

    Args:
        image: uint8 (H, W, 3).

    Returns:
        bool (H, W).
    """
    rgb = image.astype(np.float32) / 255.0
    grey = rgb.mean(axis=2)
    sat = rgb.max(axis=2) - rgb.min(axis=2)
    glass = (grey > white) & (sat < saturation)
    min_px = max(1, int(min_area * glass.size))
    glass = _drop_small(glass, min_px)
    tissue = _drop_small(~glass, min_px)
    return tissue


def _drop_small(mask: np.ndarray, min_px: int) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_px
    keep[0] = False
    return keep[labels]
