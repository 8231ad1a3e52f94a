"""``segmix predict``: tissue maps of tiles and whole slides.

Whole slides are predicted tile by tile at a chosen level: tissue is found on a thumbnail so
glass is skipped, tiles are read ahead in a thread while the model runs, and their softmax is
accumulated straight into a downsampled map, so memory depends on the map size, not on the
slide size. Outputs: class-map PNG, overlay on the thumbnail, per-class area (mm^2 and %),
GeoJSON polygons in level-0 pixel coordinates (importable in QuPath), a JSON summary.

Outputs are named ``<input stem><suffix>`` in one folder (:data:`IMAGE_OUTPUTS`,
:data:`SLIDE_OUTPUTS`). :func:`plan_outputs` refuses, before any work, a set of inputs where an
output would replace an input file (``--out`` being the input folder) or two inputs would write
the same output (same name in two folders): nothing the user has is ever overwritten.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from segmix.cam.background import tissue_mask
from segmix.data.io import IMAGE_SUFFIXES, read_image, write_image, write_mask, write_text
from segmix.data.preview import overlay
from segmix.data.spec import DatasetSpec
from segmix.errors import DatasetError, OutputError
from segmix.infer.slide import SLIDE_SUFFIXES, choose_level, open_slide
from segmix.models import predict_probs, segmenter_input, window_grid

IMAGE_OUTPUTS = ("_mask.png", "_overlay.png", "_areas.csv")
SLIDE_OUTPUTS = ("_classmap.png", "_overlay.png", "_areas.csv", ".geojson", "_summary.json")


def is_slide(path: Path) -> bool:
    return path.suffix.lower() in SLIDE_SUFFIXES


def prediction_inputs(inputs: list[Path]) -> list[Path]:
    """The files to predict: files as given, folders' images and slides (not recursive), each
    file once.

    Raises:
        DatasetError: an input that does not exist, or nothing to predict.
    """
    files: dict[Path, Path] = {}
    for item in inputs:
        if item.is_dir():
            found = sorted(
                p for p in item.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES | SLIDE_SUFFIXES
            )
        elif item.is_file():
            found = [item]
        else:
            raise DatasetError(item, "input does not exist")
        for f in found:
            files.setdefault(f.resolve(), f)
    if not files:
        raise DatasetError(inputs[0], "no images or slides to predict")
    return list(files.values())


def output_paths(path: Path, out: Path) -> list[Path]:
    """The files :func:`predict_image` / :func:`predict_slide` write for the input ``path``."""
    return [out / f"{path.stem}{suffix}" for suffix in (SLIDE_OUTPUTS if is_slide(path) else IMAGE_OUTPUTS)]


def plan_outputs(files: list[Path], out: Path) -> None:
    """Refuse inputs whose outputs would replace an input or each other (see the module doc).

    Raises:
        OutputError: naming the output and the inputs involved.
    """
    inputs = {f.resolve(): f for f in files}
    writer: dict[Path, Path] = {}
    for f in files:
        for target in output_paths(f, out):
            key = target.resolve()
            if key in inputs:
                raise OutputError(
                    f"{target}: the prediction of {f} would replace the input {inputs[key]}; write to another --out folder"
                )
            if key in writer:
                raise OutputError(
                    f"{target}: {writer[key]} and {f} would both write it (same name); predict them into separate --out folders"
                )
            writer[key] = f


def area_rows(mask: np.ndarray, spec: DatasetSpec, pixel_mm2: float | None) -> list[dict]:
    """Per class: pixels, area in mm^2 (when the pixel size is known) and % of tissue."""
    counts = np.bincount(mask.ravel(), minlength=256)[: spec.num_indices]
    tissue = counts[: spec.num_classes].sum()
    rows = []
    for i, name in enumerate(spec.index_names):
        rows.append(
            {
                "class": name,
                "pixels": int(counts[i]),
                "area_mm2": round(float(counts[i]) * pixel_mm2, 6) if pixel_mm2 else "",
                "percent_of_tissue": round(100.0 * counts[i] / tissue, 3) if i < spec.num_classes and tissue else "",
            }
        )
    return rows


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def mask_polygons(mask: np.ndarray, spec: DatasetSpec, scale: float) -> dict:
    """GeoJSON FeatureCollection of each tissue class's regions (with holes), coordinates scaled
    by ``scale`` (map pixel -> level-0 pixel), in QuPath's annotation form."""
    import cv2

    features = []
    for idx, name in enumerate(spec.classes):
        binary = (mask == idx).astype(np.uint8)
        if not binary.any():
            continue
        contours, hierarchy = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        if hierarchy is None:
            continue
        hierarchy = hierarchy[0]

        def ring(c: np.ndarray) -> list[list[float]]:
            pts = [[round((float(x) + 0.5) * scale, 2), round((float(y) + 0.5) * scale, 2)] for x, y in c[:, 0]]
            return pts + [pts[0]]

        polygons = []
        for i, c in enumerate(contours):
            if hierarchy[i][3] != -1 or len(c) < 3:
                continue  # holes are added to their parent below
            rings = [ring(c)]
            child = hierarchy[i][2]
            while child != -1:
                if len(contours[child]) >= 3:
                    rings.append(ring(contours[child]))
                child = hierarchy[child][0]
            polygons.append(rings)
        if polygons:
            features.append(
                {
                    "type": "Feature",
                    "geometry": {"type": "MultiPolygon", "coordinates": polygons},
                    "properties": {
                        "objectType": "annotation",
                        "classification": {"name": name, "color": list(spec.palette[idx])},
                    },
                }
            )
    return {"type": "FeatureCollection", "features": features}


def predict_image(model, cfg, spec: DatasetSpec, path: Path, out: Path, device) -> dict:
    """One tile or image file: mask PNG, overlay PNG, per-class area CSV."""
    from segmix.train.stage2 import segment

    image = read_image(path)
    mask = segment(model, [image], cfg, device, spec.num_indices)[0]
    if spec.glass_is_background:
        mask[~tissue_mask(image)] = spec.background_index
    mask_path, overlay_path, areas_path = output_paths(path, out)
    write_mask(mask_path, mask, spec.palette)
    write_image(overlay_path, overlay(image, mask, spec.palette))
    rows = area_rows(mask, spec, None)
    write_text(areas_path, _csv(rows))
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


@torch.no_grad()
def predict_slide(
    model,
    cfg,
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
        model, cfg, spec: from :func:`segmix.train.load_segmenter`.
        level / mpp: pyramid level, or the target microns per pixel to pick one.
        overlap: share of the window shared by neighbouring tiles (softmax averaged there).
        map_size: longest side of the class map; sets its downsampling.
        on_tiles: called with (tiles done, tiles to run) after each batch.
    """
    path, out = Path(path), Path(out)
    device = torch.device(device)
    reader = open_slide(path)
    try:
        lvl = choose_level(reader, mpp, level)
        width, height = reader.level_dimensions[lvl]
        ds_level = reader.level_downsamples[lvl]
        window = cfg.image_size
        stride = max(1, int(round(window * (1 - overlap))))
        d = max(1, math.ceil(max(width, height) / map_size))  # level pixels per map pixel
        mh, mw = math.ceil(height / d), math.ceil(width / d)
        thumb = _thumbnail(reader, mw, mh)
        # Glass is skipped on every slide, whatever the tile-level background policy.
        tissue = tissue_mask(thumb, min_area=0.0005)
        all_tiles = [(x, y) for y, x in window_grid(height, width, window, stride)]
        run = [t for t in all_tiles if tissue[t[1] // d : (t[1] + window - 1) // d + 1, t[0] // d : (t[0] + window - 1) // d + 1].any()]
        k = spec.num_indices
        acc = torch.zeros(k, mh, mw)
        cnt = torch.zeros(1, mh, mw)
        batches = [run[i : i + batch_size] for i in range(0, len(run), batch_size)]
        start = time.perf_counter()
        done = 0

        def load(batch: list[tuple[int, int]]) -> np.ndarray:
            return np.stack([reader.read_region(lvl, x, y, window, window) for x, y in batch])

        with ThreadPoolExecutor(max_workers=1) as pool:  # read the next batch while the model runs
            pending = pool.submit(load, batches[0]) if batches else None
            for i, batch in enumerate(batches):
                pixels = pending.result()
                pending = pool.submit(load, batches[i + 1]) if i + 1 < len(batches) else None
                x = segmenter_input(torch.from_numpy(pixels).to(device).permute(0, 3, 1, 2))
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    probs = predict_probs(model, x, cfg.flip_tta).float().cpu()
                for (tx, ty), p in zip(batch, probs):
                    y0, x0 = ty // d, tx // d
                    y1, x1 = min(mh, (ty + window - 1) // d + 1), min(mw, (tx + window - 1) // d + 1)
                    acc[:, y0:y1, x0:x1] += F.interpolate(p[None], size=(y1 - y0, x1 - x0), mode="area")[0]
                    cnt[:, y0:y1, x0:x1] += 1
                done += len(batch)
                if on_tiles:
                    on_tiles(done, len(run))
        seconds = time.perf_counter() - start
        classmap = acc.argmax(0).to(torch.uint8).numpy()
        outside = (cnt[0] == 0).numpy() | ~tissue
        classmap[outside] = spec.background_index
        scale = d * ds_level  # level-0 pixels per map pixel
        pixel_mm2 = (reader.mpp * scale / 1000.0) ** 2 if reader.mpp else None
        classmap_path, overlay_path, areas_path, geojson_path, summary_path = output_paths(path, out)
        write_mask(classmap_path, classmap, spec.palette)
        write_image(overlay_path, overlay(thumb, classmap, spec.palette))
        write_text(areas_path, _csv(area_rows(classmap, spec, pixel_mm2)))
        write_text(geojson_path, json.dumps(mask_polygons(classmap, spec, scale)))
        result = SlideResult(
            slide=str(path),
            level=lvl,
            level_size=(width, height),
            mpp_level0=reader.mpp,
            map_downsample=scale,
            tiles_total=len(all_tiles),
            tiles_run=len(run),
            seconds=round(seconds, 3),
            tiles_per_second=round(len(run) / seconds, 3) if seconds > 0 else 0.0,
        )
        write_text(summary_path, json.dumps(asdict(result), indent=2))
        return result
    finally:
        reader.close()


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
