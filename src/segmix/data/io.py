"""Reading tiles and masks, writing PNGs atomically.

Bad-input policy (each case is tested):

============================================  =============================================
input                                         what happens
============================================  =============================================
zero-byte, truncated or undecodable image     :class:`DatasetError` naming the file (stop)
RGBA image                                    composited over white (transparent = glass)
grayscale / 16-bit / palette image            converted to 8-bit RGB, logged once per file
mask not the size of its image                :class:`DatasetError` (stop)
mask value outside the dataset's indices      :class:`DatasetError` (stop); 255 = ignore
RGB colour mask                               mapped through the palette; unknown colour stops
============================================  =============================================

A stop is the right call for data that decides benchmark numbers: training silently on a
shrunken or mislabelled set makes results incomparable with the published protocol.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from segmix.data.errors import DatasetError

log = logging.getLogger(__name__)

IGNORE_INDEX = 255
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})


def _open(path: Path, decode: bool = True) -> Image.Image:
    if path.stat().st_size == 0:
        raise DatasetError(path, "empty file (0 bytes)")
    try:
        img = Image.open(path)
        if decode:
            img.load()
    except UnidentifiedImageError as err:
        raise DatasetError(path, "not an image (cannot identify the format)") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise DatasetError(path, f"corrupt or truncated image ({err})") from err
    return img


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding pixels."""
    with _open(Path(path), decode=False) as img:
        return img.size


def read_image(path: str | Path) -> np.ndarray:
    """An RGB tile.

    Returns:
        uint8 array of shape (H, W, 3).
    """
    path = Path(path)
    img = _open(path)
    if img.mode == "RGB":
        return np.array(img, dtype=np.uint8)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.uint8)
    if img.mode.startswith("I;16") or img.mode == "I":
        log.warning("%s: %s image scaled to 8 bits", path, img.mode)
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        gray = np.clip(np.round(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode in ("L", "1"):
        log.warning("%s: grayscale image converted to RGB", path)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def read_mask(
    path: str | Path,
    num_indices: int,
    palette: list[tuple[int, int, int]] | None = None,
    shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """A class-index mask.

    Args:
        path: palette or grayscale PNG of indices, or an RGB PNG in the dataset's palette.
        num_indices: valid indices are ``0..num_indices-1`` and 255 (ignore).
        palette: colours of the indices, needed only for RGB masks.
        shape: (H, W) the mask must have (its image's size).

    Returns:
        uint8 array of shape (H, W).
    """
    path = Path(path)
    img = _open(path)
    if img.mode in ("P", "L", "I;16", "I"):
        mask = np.asarray(img)
    elif img.mode in ("RGB", "RGBA"):
        if palette is None:
            raise DatasetError(path, "RGB mask but the dataset has no palette to decode it")
        mask = _decode_colours(path, np.asarray(img.convert("RGB")), palette)
    else:
        raise DatasetError(path, f"unsupported mask mode {img.mode}")
    if mask.ndim != 2:
        raise DatasetError(path, f"mask must be 2-D, got shape {mask.shape}")
    if shape is not None and mask.shape != tuple(shape):
        raise DatasetError(
            path, f"mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image is {shape[1]}x{shape[0]}"
        )
    bad = (mask >= num_indices) & (mask != IGNORE_INDEX)
    if bad.any():
        values = np.unique(mask[bad])[:5].tolist()
        raise DatasetError(path, f"mask values {values} out of range 0..{num_indices - 1} (255 = ignore)")
    return mask.astype(np.uint8)


def _decode_colours(path: Path, rgb: np.ndarray, palette: list[tuple[int, int, int]]) -> np.ndarray:
    codes = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    lut = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in enumerate(palette)}
    uniq, inverse = np.unique(codes, return_inverse=True)
    unknown = [u for u in uniq.tolist() if u not in lut]
    if unknown:
        u = unknown[0]
        raise DatasetError(path, f"mask colour {(u >> 16, (u >> 8) & 255, u & 255)} is not in the palette")
    return np.array([lut[u] for u in uniq.tolist()], dtype=np.uint8)[inverse].reshape(codes.shape)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give: mkstemp makes its files 0600


def _write_atomic(path: Path, save) -> None:
    # Temp file in the same folder + rename: a reader never sees half a PNG, even after a kill.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            save(fh)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Write a uint8 (H, W, 3) array as PNG, atomically."""
    _write_atomic(Path(path), lambda fh: Image.fromarray(image, "RGB").save(fh, format="PNG"))


def write_mask(path: str | Path, mask: np.ndarray, palette: list[tuple[int, int, int]]) -> None:
    """Write a uint8 (H, W) index mask as a palette PNG, atomically."""
    img = Image.fromarray(mask.astype(np.uint8), "P")
    flat = [c for rgb in palette for c in rgb]
    img.putpalette(flat + [0] * (768 - len(flat)))
    _write_atomic(Path(path), lambda fh: img.save(fh, format="PNG"))


def write_text(path: str | Path, text: str) -> None:
    """Write text atomically."""
    _write_atomic(Path(path), lambda fh: fh.write(text.encode()))
