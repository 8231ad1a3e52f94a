"""Pictures of tiles for people: mask overlays and contact sheets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from segmix.data.dataset import TileDataset
from segmix.data.io import IGNORE_INDEX, write_image
from segmix.data.spec import DatasetSpec


def overlay(image: np.ndarray, mask: np.ndarray, palette: list[tuple[int, int, int]], alpha: float = 0.4) -> np.ndarray:
    """Blend a class mask over its tile and outline the class borders.

    Args:
        image: uint8 (H, W, 3).
        mask: uint8 (H, W) class indices; ``IGNORE_INDEX`` (255) is left unpainted.
        palette: RGB colour per index.

    Returns:
        uint8 (H, W, 3).
    """
    lut = np.zeros((256, 3), dtype=np.float64)
    lut[: len(palette)] = palette
    painted = mask != IGNORE_INDEX
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


def write_contact_sheet(root: str | Path, spec: DatasetSpec, rows: int = 4, cols: int = 6) -> Path:
    """``root/contact_sheet.png``: the first train tiles, each beside its mask overlay."""
    ds = TileDataset(root, "train", spec=spec)
    pics: list[np.ndarray] = []
    for i in range(min(rows * cols, len(ds))):
        item = ds[i]
        pics += [item["image"], overlay(item["image"], item["mask"], spec.palette)]
    grid = [pics[r : r + 2 * cols] for r in range(0, len(pics), 2 * cols)]
    path = Path(root) / "contact_sheet.png"
    write_image(path, contact_sheet(grid))
    return path
