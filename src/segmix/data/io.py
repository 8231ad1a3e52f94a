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
float (32-bit) image                          scaled to 8 bits ([0, 1] or [0, 255] kept), warned
more pixels than the limit (header only)      :class:`DatasetError` with the limit; raise it with
                                              ``segmix --max-pixels N`` / ``SEGMIX_MAX_PIXELS``
broken symbolic link, link loop, unreadable   :class:`DatasetError` naming the file
============================================  =============================================

A stop is the right call for data that decides benchmark numbers: training silently on a
shrunken or mislabelled set makes results incomparable with the published protocol.
"""

from __future__ import annotations

import logging
import os
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from segmix.errors import ConfigError, DatasetError, OutputError, first_line

log = logging.getLogger(__name__)

IGNORE_INDEX = 255  # mask value left out of losses and scores (uncertain / unlabelled pixels)
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})
MAX_PIXELS_ENV = "SEGMIX_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's own refusal threshold (2x its MAX_IMAGE_PIXELS)


def max_image_pixels() -> int:
    """The largest image (width x height) read as a tile; ``SEGMIX_MAX_PIXELS`` raises it.

    Read from the environment at each call so DataLoader workers see what the parent set.
    """
    value = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_PIXELS
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{MAX_PIXELS_ENV}={value!r}: not a positive whole number of pixels")
    return int(value)


def _open(path: Path, decode: bool = True) -> Image.Image:
    try:
        size = path.stat().st_size
    except OSError as err:  # dangling link, link loop, no permission
        raise DatasetError(path, f"cannot read the file ({err.strerror or err})") from err
    if size == 0:
        raise DatasetError(path, "empty file (0 bytes)")
    limit = max_image_pixels()
    # Pillow's own bomb check would raise its own error type at its own limit: ours replaces it,
    # on the header's size, before any pixel is decoded.
    Image.MAX_IMAGE_PIXELS = None
    try:
        img = Image.open(path)
        width, height = img.size
        if width * height > limit:
            img.close()
            raise DatasetError(
                path,
                f"image of {width}x{height} = {width * height:,} pixels is over the limit of {limit:,} "
                f"(raise it with `segmix --max-pixels N` or {MAX_PIXELS_ENV})",
            )
        if decode:
            img.load()
    except UnidentifiedImageError as err:
        raise DatasetError(path, "not an image (cannot identify the format)") from err
    # Pillow's parsers raise more than OSError on malformed headers and tags (a TIFF rational
    # where an integer belongs: TypeError; a short table: IndexError, struct.error).
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError, TypeError, IndexError, struct.error) as err:
        if isinstance(err, DatasetError):
            raise
        raise DatasetError(path, f"corrupt or truncated image ({first_line(err)})") from err
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
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        return to_rgb8(np.asarray(img), path)
    if img.mode in ("L", "1"):
        log.warning("%s: grayscale image converted to RGB", path)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def sample_range(arr: np.ndarray) -> tuple[float, float]:
    """What a sample value of ``arr`` spans, for :func:`to_rgb8`: an unsigned type's full range
    (8 and 16 bits), else the finite minimum and maximum of ``arr`` (floats; wider integers)."""
    if arr.dtype in (np.uint8, np.uint16):
        return 0.0, float(np.iinfo(arr.dtype).max)
    finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
    return (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)


def to_rgb8(
    arr: np.ndarray, path: Path, value_range: tuple[float, float] | None = None, warn: bool = True
) -> np.ndarray:
    """Pixels of any common sample format as uint8 (H, W, 3): the one conversion of tiles and
    slides (:mod:`segmix.infer.slide`), so both see the same colours.

    Args:
        arr: (H, W) gray, (H, W, 2) gray + alpha, (H, W, 3) RGB or (H, W, 4) RGBA; uint8,
            uint16, wider integers or floats.
        value_range: the span of a sample value (default :func:`sample_range` of ``arr``; a
            slide passes one range for all its regions). 8- and 16-bit data is scaled by its
            type's maximum; other data within [0, 1] by 255, within [0, 255] kept (a wider
            integer holding 16-bit values, max over 255, as 16-bit), else stretched.
        warn: log what was converted (a slide warns once, when opened).

    Returns:
        uint8 (H, W, 3); alpha is composited over white (transparent = glass).

    Examples:
        >>> to_rgb8(np.full((1, 1, 3), 65535, np.uint16), Path("x.tif"), warn=False)[0, 0].tolist()
        [255, 255, 255]
        >>> to_rgb8(np.array([[[0.5, 0.5, 0.5, 0.0]]]), Path("x.tif"), warn=False)[0, 0].tolist()
        [255, 255, 255]
    """
    if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[-1] == 3:
        return arr  # already what it becomes: no float64 copy (8 bytes a sample) of a slide's region
    lo, hi = value_range or sample_range(arr)
    top, base, how = _scale(arr.dtype, lo, hi)
    if warn and arr.dtype != np.uint8:
        kind = "float" if arr.dtype.kind == "f" else f"{arr.dtype.itemsize * 8}-bit"
        log.warning("%s: %s image converted to 8 bits (%s)", path, kind, how)
    data = arr.astype(np.float64) if arr.ndim == 3 else arr.astype(np.float64)[..., None]
    unit = np.nan_to_num((data - base) / top) if top else np.zeros_like(data)
    colour, alpha = (unit[..., :3], unit[..., 3:]) if unit.shape[-1] >= 3 else (unit[..., :1], unit[..., 1:])
    if alpha.shape[-1]:
        colour = colour * np.clip(alpha, 0, 1) + (1 - np.clip(alpha, 0, 1))  # over white
    rgb = np.clip(np.round(colour * 255.0), 0, 255).astype(np.uint8)
    return np.repeat(rgb, 3, axis=2) if rgb.shape[-1] == 1 else rgb


def _scale(dtype: np.dtype, lo: float, hi: float) -> tuple[float, float, str]:
    """(span, offset, description): a sample ``v`` is ``(v - offset) / span`` in [0, 1]."""
    if dtype in (np.uint8, np.uint16):
        return float(np.iinfo(dtype).max), 0.0, f"scaled by {np.iinfo(dtype).max}"
    if lo >= 0 and hi <= 1 and dtype.kind == "f":
        return 1.0, 0.0, "[0, 1] scaled by 255"
    if lo >= 0 and hi <= 255:
        return 255.0, 0.0, "[0, 255] kept"
    if lo >= 0 and hi <= 65535 and dtype.kind in "iu":
        return 65535.0, 0.0, "16-bit values scaled by 65535"
    return max(hi - lo, 1e-12), lo, f"[{lo:g}, {hi:g}] stretched to [0, 255]"


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


FILE_MODE = 0o666 & ~_umask()  # what open() would give: mkstemp makes its files 0600


def write_atomic(path: str | Path, save: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` through ``save(file)``: a temp file in the same folder, then renamed.

    A reader never sees half a file, even after a kill; every output segmix writes goes
    through here (or :func:`write_text`, which does).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            save(fh)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def prepare_output_dir(path: str | Path, what: str = "output folder") -> Path:
    """Create ``path`` (with parents) and prove it writable, before any long work.

    Raises:
        OutputError: naming the folder, when it is a file, lies under a file, or cannot be
            created or written (read-only file system, permissions).
    """
    path = Path(path)
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.is_dir():
            where = "it is a file" if parent == path else f"it lies under {parent}, which is a file"
            raise OutputError(f"{path}: {what} is not writable: {where}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputError(f"{path}: {what} is not writable ({err.strerror or err})") from err
    return path


def prepare_output_file(path: str | Path, what: str = "output file") -> Path:
    """Check that the file ``path`` can be written (its folder made first); see
    :func:`prepare_output_dir`."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: {what} is not writable: it is a folder")
    prepare_output_dir(path.parent, f"folder of the {what}")
    return path


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Write a uint8 (H, W, 3) array as PNG, atomically."""
    write_atomic(Path(path), lambda fh: Image.fromarray(image, "RGB").save(fh, format="PNG"))


def write_mask(path: str | Path, mask: np.ndarray, palette: list[tuple[int, int, int]]) -> None:
    """Write a uint8 (H, W) index mask as a palette PNG, atomically."""
    img = Image.fromarray(mask.astype(np.uint8), "P")
    flat = [c for rgb in palette for c in rgb]
    img.putpalette(flat + [0] * (768 - len(flat)))
    write_atomic(Path(path), lambda fh: img.save(fh, format="PNG"))


def write_text(path: str | Path, text: str) -> None:
    """Write text atomically."""
    write_atomic(Path(path), lambda fh: fh.write(text.encode()))
