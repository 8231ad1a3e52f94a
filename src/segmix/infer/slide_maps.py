"""A slide's maps at the resolution it was read at, built while tiles stream.

The softmax of each window is summed into a buffer of two windows' height across the whole map
width; rows that no later window reaches are final (windows come row by row) and leave the
buffer as a band (:func:`stream_bands`). :class:`FullResolutionMaps` turns each band into class
indices (glass and unpredicted pixels background), writes them into a pyramidal TIFF
(:mod:`segmix.infer.pyramid`), counts each class's pixels, traces polygons
(:class:`~segmix.infer.exports.PolygonTracer`), samples the thumbnail-sized quick look and, when
asked, writes per-class probabilities (uint8, 255 = 1) into a second pyramid.

Memory: the buffer (classes x 2 windows x map width, float32), a band of 256 rows for each TIFF
and the polygon tracer's 1024 rows: for a 60,000-px-wide map, 5 classes and 112-px windows, about
0.5 GB, whatever the slide's height.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from segmix.data.spec import DatasetSpec
from segmix.infer.exports import PolygonTracer, value_counts
from segmix.infer.pyramid import TILE, PyramidWriter

Band = Callable[[int, "torch.Tensor | None", torch.Tensor], None]


def stream_bands(
    windows: Iterable[tuple[int, int, torch.Tensor]], shape: tuple[int, int], window: int, emit: Band
) -> None:
    """Sum window softmaxes into a (height, width) map and ``emit(y0, sums, counts)`` its rows
    top to bottom as they become final: ``sums`` float (K, n, width), ``counts`` (n, width).

    ``windows`` yields (x, y, probs (K, window, window)) in map pixels, sorted by y (rows of
    windows, as :func:`~segmix.models.window_grid` gives them); rows that no window reached are
    emitted with ``sums`` None and zero counts (glass, most of a sparse slide: nothing to look at).
    At most TILE rows are emitted at once.

    Examples:
        >>> out = []
        >>> ones = torch.ones(2, 4, 4)
        >>> stream_bands([(0, 0, ones), (3, 0, ones), (0, 3, ones)], (8, 7), 4, lambda y, s, c: out.append((y, c)))
        >>> [(y, len(c)) for y, c in out]  # rows 0-2 are final once the window at y=3 comes
        [(0, 3), (3, 5)]
        >>> out[0][1][0].tolist(), out[1][1][:, 4].tolist()  # windows per pixel
        ([1.0, 1.0, 1.0, 2.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0, 0.0])
        >>> sum(len(c) for _, c in out)  # every row once, the last one uncovered
        8
    """
    height, width = shape
    span = 2 * window
    sums, counts = None, torch.zeros(span, width)
    hit = torch.zeros(span, dtype=torch.bool)  # buffer rows some window reached
    dirty = [width, 0]  # the buffer is zero outside these columns: only they are moved and cleared
    nothing = torch.zeros(1, 1).expand(TILE, width)
    origin = done = 0  # map row of the buffer's first row; first row not emitted

    def emit_until(row: int) -> None:
        nonlocal done
        while done < row:
            lo = done - origin
            n = min(row - done, TILE, span - lo) if lo < span else min(row - done, TILE)
            if lo < span and sums is not None and hit[lo : lo + n].any():
                emit(done, sums[:, lo : lo + n], counts[lo : lo + n])
            else:  # no window reached these rows (zero counts as a view: no memory)
                emit(done, None, nothing[:n])
            done += n

    for x, y, probs in windows:
        if sums is None:
            sums = torch.zeros(len(probs), span, width)
        emit_until(y)
        if y + window > origin + span:  # keep the rows not emitted, at the buffer's top
            keep, (c0, c1) = max(0, origin + span - done), dirty
            if c1 > c0:  # keep < window: the rows kept and their source lie apart
                sums[:, :keep, c0:c1] = sums[:, span - keep :, c0:c1]
                counts[:keep, c0:c1] = counts[span - keep :, c0:c1]
                sums[:, keep:, c0:c1], counts[keep:, c0:c1] = 0, 0
            hit[:keep], hit[keep:] = hit[span - keep :].clone(), False
            dirty = dirty if hit[:keep].any() else [width, 0]
            origin = done
        h, w = min(window, height - y), min(window, width - x)
        sums[:, y - origin : y - origin + h, x : x + w] += probs[:, :h, :w]
        counts[y - origin : y - origin + h, x : x + w] += 1
        hit[y - origin : y - origin + h] = True
        dirty = [min(dirty[0], x), max(dirty[1], x + w)]
    emit_until(height)


class FullResolutionMaps:
    """What :func:`stream_bands` emits becomes: the class map and probability pyramids, class
    pixel counts, polygons and the quick-look class map (see the module docstring).

    Args:
        shape: the full map's (height, width), map pixels.
        zoom: map pixels per thumbnail pixel (``tissue`` and ``quick_look``'s grid).
        tissue: bool (th, tw), tissue found on the thumbnail; outside it everything is background.
        paths: ``classmap_tiff`` and ``probs`` files.
        scale: level-0 pixels per map pixel; ``mpp``: microns per map pixel (None: unknown).
        tolerance: polygon simplification, level-0 pixels.
    """

    def __init__(
        self,
        spec: DatasetSpec,
        shape: tuple[int, int],
        zoom: float,
        tissue: np.ndarray,
        paths: dict[str, Path],
        scale: float,
        mpp: float | None,
        probs: bool,
        tolerance: float,
    ) -> None:
        height, width = shape
        th, tw = tissue.shape
        self.spec, self.tissue, self.zoom = spec, tissue, zoom
        self._tissue_cols = np.minimum((np.arange(width) / zoom).astype(np.int64), tw - 1)
        self._look_rows = np.minimum(((np.arange(th) + 0.5) * zoom).astype(np.int64), height - 1)
        self._look_cols = np.minimum(((np.arange(tw) + 0.5) * zoom).astype(np.int64), width - 1)
        self.quick_look = np.full((th, tw), spec.background_index, np.uint8)
        self.counts = np.zeros(256, np.int64)
        about = {"mpp": mpp, "level0_pixels_per_pixel": scale, "palette": [list(c) for c in spec.palette]}
        self.classes = PyramidWriter(
            paths["classmap_tiff"], height, width, mpp=mpp, palette=np.array(spec.palette, np.uint8),
            description={"segmix": "class map", "values": list(spec.index_names), **about},
        )  # fmt: skip
        self.probs = None
        if probs:
            try:
                self.probs = PyramidWriter(
                    paths["probs"], height, width, samples=spec.num_indices, mpp=mpp,
                    description={"segmix": "probabilities, 255 = 1", "samples": list(spec.index_names), **about},
                )  # fmt: skip
            except BaseException:  # the class map's writer has started: stop it, remove its temp file
                self.classes.abort()
                raise
        self.polygons = PolygonTracer(spec, scale, tolerance)

    def __call__(self, y0: int, sums: torch.Tensor | None, counts: torch.Tensor) -> None:
        """One band of final rows from :func:`stream_bands`."""
        n, background = len(counts), self.spec.background_index
        if sums is not None:
            classmap = _argmax(sums).numpy()
            tissue_rows = np.minimum((np.arange(y0, y0 + n) / self.zoom).astype(np.int64), self.tissue.shape[0] - 1)
            classmap[(counts == 0).numpy() | ~self.tissue[tissue_rows][:, self._tissue_cols]] = background
            band_counts = value_counts(classmap)
        else:  # glass: no window ran here (most of a sparse slide: counted without a pass over it)
            classmap = np.full(counts.shape, background, np.uint8)
            band_counts = np.zeros(256, np.int64)
            band_counts[background] = classmap.size
        self.classes.write(classmap)
        self.counts += band_counts
        self.polygons.add(classmap, band_counts)
        looks = (self._look_rows >= y0) & (self._look_rows < y0 + n)
        self.quick_look[looks] = classmap[self._look_rows[looks] - y0][:, self._look_cols]
        if self.probs is not None and sums is None:  # no window here
            self.probs.write(np.zeros((*counts.shape, self.spec.num_indices), np.uint8))
        elif self.probs is not None:
            mean = sums / counts.clamp(min=1)
            self.probs.write((mean * 255).round().to(torch.uint8).permute(1, 2, 0).numpy())

    def close(self) -> dict:
        """Finish the pyramids; the GeoJSON FeatureCollection."""
        self.classes.close()
        if self.probs is not None:
            self.probs.close()
        return self.polygons.finish()

    def abort(self) -> None:
        self.classes.abort()
        if self.probs is not None:
            self.probs.abort()


def _argmax(sums: torch.Tensor) -> torch.Tensor:
    """uint8 index of the largest of ``sums`` (K, n, w) along K, the first one on ties, as
    ``argmax(0)``: one pass per class, 20x faster than torch's reduction over the strided axis."""
    best, index = sums[0].clone(), torch.zeros(sums.shape[1:], dtype=torch.uint8)
    for k in range(1, len(sums)):
        larger = sums[k] > best
        index[larger] = k
        torch.maximum(best, sums[k], out=best)
    return index
