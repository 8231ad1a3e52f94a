"""``segmix predict``: tissue maps of tiles and whole slides.

Whole slides are predicted tile by tile at a chosen level: tissue is found on a thumbnail so
glass is skipped, tiles are read ahead in a thread while the model runs, and their softmax is
summed into a class map at the resolution the model reads, streamed to disk band by band
(:mod:`segmix.infer.slide_maps`), so memory depends on the slide's width, not its size.
Outputs: the class map as a pyramidal TIFF (OpenSlide reads its levels) and optionally per-class
probabilities; per-class areas (mm^2 and %) and GeoJSON polygons in level-0 pixel coordinates
(QuPath), both from the full-resolution map; a quick-look class map and overlay on the
thumbnail (PNG); a JSON summary.

Inputs and output names: :mod:`segmix.infer.inputs`; areas and GeoJSON: :mod:`segmix.infer.exports`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from segmix.config import Stage2Config
from segmix.config.precision import autocast
from segmix.data.io import read_image, write_image, write_mask, write_text
from segmix.data.preview import overlay
from segmix.data.spec import DatasetSpec
from segmix.data.text import csv_text
from segmix.data.tissue import tissue_mask
from segmix.errors import ConfigError
from segmix.infer.exports import area_rows, count_rows
from segmix.infer.inputs import output_paths
from segmix.infer.slide import choose_level, open_slide, read_window
from segmix.infer.slide_maps import FullResolutionMaps, stream_bands
from segmix.models import predict_probs, segmenter_input, window_grid
from segmix.models.inference import in_model_stain
from segmix.models.trained import Segmenter

log = logging.getLogger(__name__)


def predict_image(segmenter: Segmenter, path: Path, out: Path) -> dict:
    """One tile or image file: mask PNG (:meth:`Segmenter.predict`), overlay PNG, per-class area CSV."""
    image = read_image(path)
    mask = segmenter.predict(image)
    spec = segmenter.spec
    paths = output_paths(path, out)
    write_mask(paths["mask"], mask, spec.palette)
    write_image(paths["overlay"], overlay(image, mask, spec.palette))
    rows = area_rows(mask, spec, None)
    write_text(paths["areas"], csv_text(rows))
    return {"input": str(path), "areas": rows}


@dataclass
class SlideResult:
    slide: str
    level: int
    level_size: tuple[int, int]
    mpp_level0: float | None
    map_downsample: float  # level-0 pixels per pixel of the quick-look class map (PNG)
    tiles_total: int
    tiles_run: int
    seconds: float
    tiles_per_second: float
    mpp_read: float | None = None  # microns per pixel the model saw (after resampling)
    mpp_model: float | None = None  # microns per pixel of the model's training tiles
    full_map_size: tuple[int, int] = (0, 0)  # (width, height) of the full-resolution class map (TIFF)
    full_map_downsample: float = 1.0  # level-0 pixels per full-resolution map pixel


@dataclass(frozen=True)
class SlidePlan:
    """Where a slide is predicted: the level, the window grid, the class map's downsampling,
    and the tissue found on the thumbnail (tiles on glass only are skipped)."""

    level: int
    width: int
    height: int
    window: int  # the model's input, pixels
    read: int  # level pixels read per window, resampled to ``window`` when they differ
    mpp_read: float | None  # microns per pixel of the model's input
    d: int  # level pixels per class-map pixel
    thumb: np.ndarray
    tissue: np.ndarray
    all_tiles: list[tuple[int, int]]
    run: list[tuple[int, int]]

    @property
    def map_shape(self) -> tuple[int, int]:
        """The thumbnail's (height, width): the quick-look class map's."""
        return self.thumb.shape[0], self.thumb.shape[1]

    @property
    def zoom(self) -> float:
        """Full-resolution map pixels per level pixel: the model's input over the pixels read."""
        return self.window / self.read

    @property
    def full_shape(self) -> tuple[int, int]:
        """The full-resolution class map's (height, width): the level as the model sees it."""
        return math.ceil(self.height * self.zoom), math.ceil(self.width * self.zoom)

    def map_box(self, x: int, y: int) -> tuple[slice, slice]:
        """The class-map pixels under the window at level pixel (x, y)."""
        mh, mw = self.map_shape
        y1, x1 = min(mh, (y + self.read - 1) // self.d + 1), min(mw, (x + self.read - 1) // self.d + 1)
        return slice(y // self.d, y1), slice(x // self.d, x1)


def plan_slide(reader, window: int, level: int | None, mpp: float | None, overlap: float, map_size: int) -> SlidePlan:
    """The :class:`SlidePlan` of an open slide for a model input of ``window`` pixels: at
    ``level``, or read at or finer than ``mpp`` and resampled to it (:func:`read_window`)."""
    lvl = choose_level(reader, mpp, level)
    read, mpp_read = read_window(reader, lvl, window, None if level is not None else mpp)
    width, height = reader.level_dimensions[lvl]
    stride = max(1, int(round(read * (1 - overlap))))
    d = max(1, math.ceil(max(width, height) / map_size))
    thumb = _thumbnail(reader, math.ceil(width / d), math.ceil(height / d))
    # Glass is skipped on every slide, whatever the tile-level background policy.
    tissue = tissue_mask(thumb, min_area=0.0005)
    all_tiles = [(x, y) for y, x in window_grid(height, width, read, stride)]
    plan = SlidePlan(lvl, width, height, window, read, mpp_read, d, thumb, tissue, all_tiles, run=[])
    return replace(plan, run=[(x, y) for x, y in all_tiles if tissue[plan.map_box(x, y)].any()])


@torch.no_grad()
def window_probabilities(
    model,
    reader,
    plan: SlidePlan,
    flip: bool,
    batch_size: int,
    device: torch.device,
    on_tiles: Callable[[int, int], None] | None = None,
    precision: str = "auto",
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """(x, y, softmax (K, window, window)) of each window the plan runs, in map pixels, computed
    at ``precision`` (:mod:`segmix.config.precision`), row by row.

    Tiles are read in a thread one batch ahead while the model runs.
    """
    batches = [plan.run[i : i + batch_size] for i in range(0, len(plan.run), batch_size)]

    def load(batch: list[tuple[int, int]]) -> np.ndarray:
        regions = _read_windows(reader, plan.level, batch, plan.read)
        return np.stack([in_model_stain(model, _resampled(r, plan.window)) for r in regions])

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load, batches[0]) if batches else None
        for i, batch in enumerate(batches):
            pixels = pending.result()
            pending = pool.submit(load, batches[i + 1]) if i + 1 < len(batches) else None
            x = segmenter_input(torch.from_numpy(pixels).to(device).permute(0, 3, 1, 2))
            with autocast(precision, device.type):
                probs = predict_probs(model, x, flip).float().cpu()
            for (tx, ty), prob in zip(batch, probs):
                yield round(tx * plan.zoom), round(ty * plan.zoom), prob
            if on_tiles:
                on_tiles(i * batch_size + len(batch), len(plan.run))


def _read_windows(reader, level: int, corners: list[tuple[int, int]], size: int) -> list[np.ndarray]:
    """The (size, size, 3) windows at ``corners`` (x, y), read one region per row of windows:
    neighbours overlap, and a slide tile decoded once serves them all."""
    rows: dict[int, list[int]] = {}
    for x, y in corners:
        rows.setdefault(y, []).append(x)
    regions = {}
    for y, xs in rows.items():
        x0 = min(xs)
        region = reader.read_region(level, x0, y, max(xs) + size - x0, size)
        regions |= {(x, y): region[:, x - x0 : x - x0 + size] for x in xs}
    return [regions[c] for c in corners]


def _resampled(region: np.ndarray, size: int) -> np.ndarray:
    """``region`` uint8 (n, n, 3) as (size, size, 3): area averaging down, bilinear up."""
    if region.shape[0] == size:
        return region
    import cv2

    shrink = region.shape[0] > size
    return cv2.resize(region, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def target_mpp(path: Path, spec: DatasetSpec, mpp: float | None, level: int | None) -> float | None:
    """The microns per pixel to read a slide at: ``mpp`` when given (a warning when it differs
    from the model's by over 10 %), else the model's training resolution; None with ``level``.

    Raises:
        ConfigError: neither is known and no level is given.
    """
    check_resolution(spec, mpp, level)
    if level is None and mpp is not None and spec.mpp is not None and abs(mpp / spec.mpp - 1) > 0.10:
        log.warning("%s: read at %.3g um/px, the model was trained at %.3g um/px", path, mpp, spec.mpp)
    return read_mpp(spec, level, mpp)


def read_mpp(spec: DatasetSpec, level: int | None, mpp: float | None) -> float | None:
    """The microns per pixel slides are read at: none with a level, else ``mpp`` or the model's."""
    return None if level is not None else (mpp if mpp is not None else spec.mpp)


def check_resolution(spec: DatasetSpec, mpp: float | None, level: int | None) -> None:
    """Refuse, before any slide is read, an ``mpp`` that is not positive, or slides without a
    resolution to read them at (no ``mpp``, no ``level``, none in the model).

    Raises:
        ConfigError: naming the option.
    """
    if mpp is not None and mpp <= 0:
        raise ConfigError(f"--mpp {mpp}: microns per pixel must be positive")
    if level is None and mpp is None and spec.mpp is None:
        raise ConfigError(
            "--mpp: the model records no training resolution; pass --mpp (its tiles' microns per pixel) or --level"
        )


def predict_slide(
    model,
    cfg: Stage2Config,
    spec: DatasetSpec,
    path: str | Path,
    out: str | Path,
    level: int | None = None,
    mpp: float | None = None,
    overlap: float = 0.25,
    batch_size: int = 16,
    map_size: int = 2048,
    device: str | torch.device = "cpu",
    on_tiles: Callable[[int, int], None] | None = None,
    probs: bool = False,
    simplify_um: float = 1.0,
) -> SlideResult:
    """Predict a whole slide; see the module docstring for the outputs written to ``out``.

    Args:
        model, cfg, spec: from :func:`segmix.models.load_segmenter`.
        level / mpp: pyramid level (read as it is), or the microns per pixel to read at
            (default: the model's training resolution, ``spec.mpp``): the level at or finer
            than it, each window resampled to it (:func:`target_mpp`).
        overlap: share of the window shared by neighbouring tiles (softmax averaged there).
        map_size: longest side of the quick-look class map and overlay (PNG); the TIFF class
            map, the areas and the polygons are at full resolution.
        on_tiles: called with (tiles done, tiles to run) after each batch.
        probs: also write per-class probabilities (``_probs.tif``).
        simplify_um: polygons simplified to this many microns (level-0 pixels when the slide
            records no resolution: one map pixel).
    """
    path, out = Path(path), Path(out)
    target = target_mpp(path, spec, mpp, level)
    reader = open_slide(path)
    try:
        plan = plan_slide(reader, cfg.train.image_size, level, target, overlap, map_size)
        full_scale = reader.level_downsamples[plan.level] / plan.zoom  # level-0 pixels per map pixel
        paths = output_paths(path, out)
        maps = FullResolutionMaps(
            spec, plan.full_shape, plan.d * plan.zoom, plan.tissue, paths, full_scale,
            mpp=reader.mpp * full_scale if reader.mpp else None, probs=probs,
            tolerance=simplify_um / reader.mpp if reader.mpp else full_scale,
        )  # fmt: skip
        start = time.perf_counter()
        try:
            windows = window_probabilities(
                model, reader, plan, cfg.inference.flip, batch_size, torch.device(device), on_tiles, cfg.precision
            )
            stream_bands(windows, plan.full_shape, plan.window, maps)
            polygons = maps.close()
        except BaseException:
            maps.abort()
            raise
        result = _slide_result(path, reader, plan, spec, time.perf_counter() - start)
        pixel_mm2 = (reader.mpp * full_scale / 1000.0) ** 2 if reader.mpp else None
        write_mask(paths["classmap"], maps.quick_look, spec.palette)
        write_image(paths["overlay"], overlay(plan.thumb, maps.quick_look, spec.palette))
        write_text(paths["areas"], csv_text(count_rows(maps.counts, spec, pixel_mm2)))
        write_text(paths["geojson"], json.dumps(polygons))
        write_text(paths["summary"], json.dumps(asdict(result), indent=2))  # last: the slide is done
        return result
    finally:
        reader.close()


def _slide_result(path: Path, reader, plan: SlidePlan, spec: DatasetSpec, seconds: float) -> SlideResult:
    level_scale = reader.level_downsamples[plan.level]
    return SlideResult(
        slide=str(path),
        level=plan.level,
        level_size=(plan.width, plan.height),
        mpp_level0=reader.mpp,
        map_downsample=plan.d * level_scale,
        tiles_total=len(plan.all_tiles),
        tiles_run=len(plan.run),
        seconds=round(seconds, 3),
        tiles_per_second=round(len(plan.run) / seconds, 3) if seconds > 0 else 0.0,
        mpp_read=plan.mpp_read,
        mpp_model=spec.mpp,
        full_map_size=(plan.full_shape[1], plan.full_shape[0]),
        full_map_downsample=level_scale / plan.zoom,
    )


def _thumbnail(reader, width: int, height: int) -> np.ndarray:
    """uint8 (height, width, 3) view of the whole slide from the smallest level that is large enough."""
    best = 0
    for i, (w, h) in enumerate(reader.level_dimensions):
        if w >= width and h >= height:
            best = i
    lw, lh = reader.level_dimensions[best]
    # Read in strips so a big level never sits whole in memory.
    thumb = np.zeros((height, width, 3), np.uint8)
    rows_per = max(1, int(4096 * 4096 / max(lw, 1)))
    for y in range(0, lh, rows_per):
        strip = reader.read_region(best, 0, y, lw, min(rows_per, lh - y))
        ty0, ty1 = int(y * height / lh), int(min(lh, y + rows_per) * height / lh)
        if ty1 > ty0:
            thumb[ty0:ty1] = np.asarray(Image.fromarray(strip).resize((width, ty1 - ty0), Image.BILINEAR))
    return thumb
