"""``segmix predict``: tissue maps of tiles and whole slides.

Whole slides are predicted tile by tile at a chosen level: tissue is found on a thumbnail so
glass is skipped, tiles are read ahead in a thread while the model runs, and their softmax is
accumulated straight into a downsampled map, so memory depends on the map size, not on the
slide size. Outputs: class-map PNG, overlay on the thumbnail, per-class area (mm^2 and %),
GeoJSON polygons in level-0 pixel coordinates (importable in QuPath), a JSON summary.

Inputs and output names: :mod:`segmix.infer.inputs`; areas and GeoJSON: :mod:`segmix.infer.exports`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from segmix.config import Stage2Config
from segmix.config.precision import autocast
from segmix.data.io import csv_text, read_image, write_image, write_mask, write_text
from segmix.data.preview import overlay
from segmix.data.spec import DatasetSpec
from segmix.data.tissue import tissue_mask
from segmix.errors import ConfigError
from segmix.infer.exports import area_rows, mask_polygons
from segmix.infer.inputs import output_paths
from segmix.infer.slide import choose_level, open_slide, read_window
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
    map_downsample: float  # level-0 pixels per class-map pixel
    tiles_total: int
    tiles_run: int
    seconds: float
    tiles_per_second: float
    mpp_read: float | None = None  # microns per pixel the model saw (after resampling)
    mpp_model: float | None = None  # microns per pixel of the model's training tiles


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
        return self.thumb.shape[0], self.thumb.shape[1]

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
def slide_probabilities(
    model,
    reader,
    plan: SlidePlan,
    num_classes: int,
    flip: bool,
    batch_size: int,
    device: torch.device,
    on_tiles: Callable[[int, int], None] | None = None,
    precision: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax summed into the class map (K, mh, mw) and the windows per map pixel (1, mh, mw),
    computed at ``precision`` (:mod:`segmix.config.precision`).

    Tiles are read in a thread one batch ahead while the model runs.
    """
    mh, mw = plan.map_shape
    acc, cnt = torch.zeros(num_classes, mh, mw), torch.zeros(1, mh, mw)
    batches = [plan.run[i : i + batch_size] for i in range(0, len(plan.run), batch_size)]

    def load(batch: list[tuple[int, int]]) -> np.ndarray:
        regions = (reader.read_region(plan.level, x, y, plan.read, plan.read) for x, y in batch)
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
                ys, xs = plan.map_box(tx, ty)
                acc[:, ys, xs] += F.interpolate(prob[None], size=(ys.stop - ys.start, xs.stop - xs.start), mode="area")[
                    0
                ]
                cnt[:, ys, xs] += 1
            if on_tiles:
                on_tiles(i * batch_size + len(batch), len(plan.run))
    return acc, cnt


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
) -> SlideResult:
    """Predict a whole slide; see the module docstring for the outputs written to ``out``.

    Args:
        model, cfg, spec: from :func:`segmix.models.load_segmenter`.
        level / mpp: pyramid level (read as it is), or the microns per pixel to read at
            (default: the model's training resolution, ``spec.mpp``): the level at or finer
            than it, each window resampled to it (:func:`target_mpp`).
        overlap: share of the window shared by neighbouring tiles (softmax averaged there).
        map_size: longest side of the class map; sets its downsampling.
        on_tiles: called with (tiles done, tiles to run) after each batch.
    """
    path, out = Path(path), Path(out)
    target = target_mpp(path, spec, mpp, level)
    reader = open_slide(path)
    try:
        plan = plan_slide(reader, cfg.train.image_size, level, target, overlap, map_size)
        start = time.perf_counter()
        flip = cfg.inference.flip
        acc, cnt = slide_probabilities(
            model, reader, plan, spec.num_indices, flip, batch_size, torch.device(device), on_tiles, cfg.precision
        )
        seconds = time.perf_counter() - start
        classmap = acc.argmax(0).to(torch.uint8).numpy()
        classmap[(cnt[0] == 0).numpy() | ~plan.tissue] = spec.background_index
        scale = plan.d * reader.level_downsamples[plan.level]  # level-0 pixels per map pixel
        result = SlideResult(
            slide=str(path),
            level=plan.level,
            level_size=(plan.width, plan.height),
            mpp_level0=reader.mpp,
            map_downsample=scale,
            tiles_total=len(plan.all_tiles),
            tiles_run=len(plan.run),
            seconds=round(seconds, 3),
            tiles_per_second=round(len(plan.run) / seconds, 3) if seconds > 0 else 0.0,
            mpp_read=plan.mpp_read,
            mpp_model=spec.mpp,
        )
        _write_slide_outputs(output_paths(path, out), classmap, plan.thumb, spec, scale, result)
        return result
    finally:
        reader.close()


def _write_slide_outputs(
    paths: dict[str, Path],
    classmap: np.ndarray,
    thumb: np.ndarray,
    spec: DatasetSpec,
    scale: float,
    result: SlideResult,
) -> None:
    pixel_mm2 = (result.mpp_level0 * scale / 1000.0) ** 2 if result.mpp_level0 else None
    write_mask(paths["classmap"], classmap, spec.palette)
    write_image(paths["overlay"], overlay(thumb, classmap, spec.palette))
    write_text(paths["areas"], csv_text(area_rows(classmap, spec, pixel_mm2)))
    write_text(paths["geojson"], json.dumps(mask_polygons(classmap, spec, scale)))
    write_text(paths["summary"], json.dumps(asdict(result), indent=2))


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
