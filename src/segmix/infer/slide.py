"""Whole-slide reading: OpenSlide's vendor formats and plain or pyramidal TIFF (tifffile).

Readers are picked from :data:`READERS`: OpenSlide for the formats it names (Aperio SVS,
Hamamatsu, MIRAX, Leica, Ventana, ...), tifffile for generic TIFF, tiled or stripped, with
pyramid levels as SubIFDs or pages. Regions are read lazily (only the tiles they touch are
decoded), so memory does not grow with slide size. A slide whose header declares more pixels or
tiles than segmix reads is refused before any pixel is (:func:`check_slide_size`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Protocol

import numpy as np

from segmix.data.io import MAX_PIXELS_ENV, max_image_pixels, sample_range, to_rgb8
from segmix.errors import ConfigError, DatasetError

# The largest slide (level-0 width x height) and the most tiles a slide's level may declare:
# beyond them a header is refused before any pixel is read (a made-up size would have the
# tissue thumbnail read for ever). 2^36 px: 262,144 px square, over any scanner's slide at 0.25
# um/px; 2^24 tiles: a 65,536 px square level in 16-px tiles. A pixel limit above 2^36
# (SEGMIX_MAX_PIXELS) raises the slide limit with it.
MAX_SLIDE_PIXELS = 1 << 36
MAX_SLIDE_TILES = 1 << 24


def check_slide_size(path: Path, width: int, height: int, tiles: int | None = None) -> None:
    """Refuse a slide whose header declares more pixels or tiles than segmix reads.

    >>> check_slide_size(Path("s.tif"), 100_000, 80_000, tiles=122_500)
    >>> check_slide_size(Path("s.tif"), 10**6, 10**6)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    segmix.errors.DatasetError: s.tif: slide of 1000000x1000000 = 1,000,000,000,000 pixels is over the limit ...
    """
    limit = max(MAX_SLIDE_PIXELS, max_image_pixels())
    if width * height > limit:
        raise DatasetError(
            path,
            f"slide of {width}x{height} = {width * height:,} pixels is over the limit of {limit:,} "
            f"(raise it with {MAX_PIXELS_ENV})",
        )
    if tiles is not None and tiles > MAX_SLIDE_TILES:
        raise DatasetError(path, f"slide level declares {tiles:,} tiles, more than segmix reads ({MAX_SLIDE_TILES:,})")


class SlideReader(Protocol):
    path: Path
    level_dimensions: list[tuple[int, int]]  # (width, height) per level, level 0 first
    level_downsamples: list[float]
    mpp: float | None  # microns per pixel at level 0

    def read_region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """uint8 (height, width, 3) at ``level`` from its (x, y); outside the slide is white."""

    def close(self) -> None: ...


class OpenSlideReader:
    def __init__(self, path: Path) -> None:
        import openslide

        self.path = path
        self._slide = openslide.OpenSlide(str(path))
        self.level_dimensions = list(self._slide.level_dimensions)
        try:  # the header's size, before any region is read
            check_slide_size(path, *self.level_dimensions[0])
        except DatasetError:
            self._slide.close()
            raise
        self.level_downsamples = [float(d) for d in self._slide.level_downsamples]
        mpp = self._slide.properties.get("openslide.mpp-x")
        self.mpp = float(mpp) if mpp else None

    def read_region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        ds = self.level_downsamples[level]
        rgba = self._slide.read_region((int(round(x * ds)), int(round(y * ds))), level, (width, height))
        arr = np.asarray(rgba, dtype=np.float32)
        alpha = arr[..., 3:4] / 255.0  # transparent = outside the scanned area: show as glass
        return np.round(arr[..., :3] * alpha + 255.0 * (1 - alpha)).astype(np.uint8)

    def close(self) -> None:
        self._slide.close()


class TiffReader:
    """Tiled or stripped TIFF: RGB, RGBA (composited over white), gray, chunky or planar, of any
    sample type, converted as tiles are (:func:`~segmix.data.io.to_rgb8`, one value range per
    slide, from its smallest level)."""

    AXES = ("YXS", "SYX", "YX")  # samples last (chunky), samples first (planar), gray

    def __init__(self, path: Path) -> None:
        import tifffile

        self.path = path
        self._tif = tifffile.TiffFile(str(path))
        try:
            self._open_levels()
        except Exception:  # a refused or unreadable file is not left open
            self._tif.close()
            raise
        self._warned = False  # a slide of other samples than 8 bits warns once, when first read

    def _open_levels(self) -> None:
        """The levels as zarr arrays, their sizes, the resolution and the sample range."""
        import zarr

        path = self.path
        series = self._tif.series[0]
        self._axes = series.levels[0].axes
        self._levels = []
        for lvl in series.levels:  # the header's sizes, before any pixel (or chunk index) is read
            _check_declared(path, lvl)
        for i, lvl in enumerate(series.levels):
            samples = lvl.shape[lvl.axes.index("S")] if "S" in lvl.axes else 1
            if lvl.axes not in self.AXES or samples not in (1, 2, 3, 4) or lvl.axes != self._axes:
                raise DatasetError(path, f"TIFF level of shape {lvl.shape} (axes {lvl.axes}) is not an RGB image")
            self._levels.append(zarr.open(series.aszarr(level=i), mode="r"))
        self.level_dimensions = [
            (int(z.shape[-1 if self._axes == "SYX" else 1]), int(self._height(z))) for z in self._levels
        ]
        w0 = self.level_dimensions[0][0]
        self.level_downsamples = [w0 / w for w, _ in self.level_dimensions]
        self.mpp = _tiff_mpp(self._tif.pages[0])
        self._range = sample_range(
            self._sample_grid() if series.dtype not in (np.uint8, np.uint16) else np.zeros(0, series.dtype)
        )

    def _sample_grid(self, samples: int = 1 << 20) -> np.ndarray:
        """About ``samples`` pixels of the smallest level, evenly strided: its value range."""
        w, h = self.level_dimensions[-1]
        step = max(1, math.ceil(math.sqrt(w * h / samples)))
        z = self._levels[-1]
        return np.asarray(z[:, ::step, ::step] if self._axes == "SYX" else z[::step, ::step])

    def _height(self, z) -> int:
        return z.shape[1] if self._axes == "SYX" else z.shape[0]

    def _pixels(self, level: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Samples of a box inside the level, as (h, w) or (h, w, samples)."""
        z = self._levels[level]
        if self._axes == "SYX":
            return np.moveaxis(np.asarray(z[:, y0:y1, x0:x1]), 0, -1)
        return np.asarray(z[y0:y1, x0:x1])

    def read_region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        out = np.full((height, width, 3), 255, np.uint8)
        w, h = self.level_dimensions[level]
        y0, x0 = max(0, y), max(0, x)
        y1, x1 = min(h, y + height), min(w, x + width)
        if y1 > y0 and x1 > x0:
            region = self._pixels(level, x0, y0, x1, y1)
            out[y0 - y : y1 - y, x0 - x : x1 - x] = to_rgb8(region, self.path, self._range, warn=not self._warned)
            self._warned = True
        return out

    def close(self) -> None:
        self._tif.close()


def _check_declared(path: Path, level) -> None:
    """Refuse a TIFF level whose header declares more pixels or tiles than segmix reads."""
    axes, shape = level.axes, level.shape
    if "X" not in axes or "Y" not in axes:
        return  # not an image: refused with its axes by the caller
    width, height = int(shape[axes.index("X")]), int(shape[axes.index("Y")])
    page = level.keyframe
    tile_w, tile_h = int(getattr(page, "tilewidth", 0) or 0), int(getattr(page, "tilelength", 0) or 0)
    tiles = math.ceil(width / tile_w) * math.ceil(height / tile_h) if tile_w and tile_h else None
    check_slide_size(path, width, height, tiles)


def _tiff_mpp(page) -> float | None:
    tags = page.tags
    if "XResolution" not in tags or "ResolutionUnit" not in tags:
        return None
    num, den = tags["XResolution"].value
    per_unit = num / den if den else 0
    unit = int(tags["ResolutionUnit"].value)
    microns = {2: 25400.0, 3: 10000.0}.get(unit)  # inch, centimetre
    if not per_unit or microns is None:
        return None
    return microns / per_unit


def _openslide_format(path: Path) -> str | None:
    try:
        import openslide

        return openslide.OpenSlide.detect_format(str(path))
    except Exception:  # openslide missing or the file unreadable: leave it to tifffile
        return None


READERS = [
    (lambda p: _openslide_format(p) not in (None, "generic-tiff"), OpenSlideReader),
    (lambda p: p.suffix.lower() in (".tif", ".tiff"), TiffReader),
]
SLIDE_SUFFIXES = frozenset({".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide", ".tif", ".tiff"})


def open_slide(path: str | Path) -> SlideReader:
    """A reader for ``path``; a clear error naming the file when nothing can read it."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "slide file does not exist")
    for accepts, reader in READERS:
        if accepts(path):
            try:
                return reader(path)
            except DatasetError:
                raise
            except Exception as err:
                raise DatasetError(path, f"unreadable slide ({type(err).__name__}: {err})") from err
    raise DatasetError(path, "not a slide format that OpenSlide or tifffile can read")


def choose_level(reader: SlideReader, mpp: float | None = None, level: int | None = None) -> int:
    """The pyramid level to predict at: ``level`` if given, else the coarsest level at or finer
    than ``mpp`` (microns per pixel, within :data:`SAME_RESOLUTION`; level 0 when every level is
    coarser), else level 0. Reading at or finer than the target and resampling down keeps the
    detail a model trained at ``mpp`` saw."""
    if level is not None:
        if not 0 <= level < len(reader.level_dimensions):
            raise ConfigError(f"{reader.path}: level {level} not in 0..{len(reader.level_dimensions) - 1}")
        return level
    if mpp is None:
        return 0
    if reader.mpp is None:
        raise ConfigError(f"{reader.path}: the slide records no microns per pixel; pass a level instead")
    finer = [i for i, d in enumerate(reader.level_downsamples) if reader.mpp * d <= mpp * (1 + SAME_RESOLUTION)]
    return max(finer, default=0)


# Resolutions within this share of each other count as the same: no resampling between them.
SAME_RESOLUTION = 0.02


def read_window(reader: SlideReader, level: int, window: int, mpp: float | None) -> tuple[int, float | None]:
    """``(pixels, mpp_read)``: the square of ``level`` pixels that covers what a ``window``-pixel
    model input covers at ``mpp`` (``window`` itself without a target or within
    :data:`SAME_RESOLUTION`), and the microns per pixel the model then sees."""
    level_mpp = reader.mpp * reader.level_downsamples[level] if reader.mpp else None
    if mpp is None or level_mpp is None or abs(mpp / level_mpp - 1) <= SAME_RESOLUTION:
        return window, level_mpp
    return max(1, int(round(window * mpp / level_mpp))), mpp
