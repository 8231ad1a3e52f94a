"""Pictures of tiles for people: mask overlays and contact sheets."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def overlay(image: np.ndarray, mask: np.ndarray, palette: list[tuple[int, int, int]], alpha: float = 0.4) -> np.ndarray:
    """Blend a class mask over its tile and outline the class borders.

    Args:
        image: uint8 (H, W, 3).
        mask: uint8 (H, W) class indices; 255 (ignore) is left unpainted.
        palette: RGB colour per index.

    Returns:
        uint8 (H, W, 3).
    """
    lut = np.zeros((256, 3), dtype=np.float64)
    lut[: len(palette)] = palette
    painted = mask != 255
    colour = lut[mask]
    out = image.astype(np.float64)
    out[painted] = (1 - alpha) * out[painted] + alpha * colour[painted]
    edges = ndimage.morphological_gradient(mask.astype(np.int16), size=3) > 0
    out[edges] = colour[edges] * 0.6
    return np.clip(out, 0, 255).astype(np.uint8)


def contact_sheet(rows: list[list[np.ndarray]], gap: int = 4) -> np.ndarray:
    """Tile equally sized uint8 (H, W, 3) pictures into one uint8 sheet, white gaps between."""
    h, w = rows[0][0].shape[:2]
    ncol = max(len(r) for r in rows)
    sheet = np.full((len(rows) * (h + gap) + gap, ncol * (w + gap) + gap, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, pic in enumerate(row):
            y, x = gap + i * (h + gap), gap + j * (w + gap)
            sheet[y : y + h, x : x + w] = pic
    return sheet
