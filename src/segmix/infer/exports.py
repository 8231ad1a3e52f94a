"""What a tissue map becomes for its readers: per-class areas, GeoJSON polygons (QuPath)."""

from __future__ import annotations

import numpy as np

from segmix.data.spec import DatasetSpec


def area_rows(mask: np.ndarray, spec: DatasetSpec, pixel_mm2: float | None) -> list[dict]:
    """Per class: pixels, area in mm^2 (when the pixel size is known) and % of tissue."""
    return count_rows(value_counts(mask), spec, pixel_mm2)


def value_counts(values: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    """int64 (256,) pixels per value of a uint8 array, counted ``chunk`` pixels at a time
    (``np.bincount`` widens its input to int64: 8 bytes per pixel of a whole band at once).

    >>> value_counts(np.array([[0, 3], [3, 255]], np.uint8))[[0, 3, 255]].tolist()
    [1, 2, 1]
    """
    flat, counts = values.ravel(), np.zeros(256, np.int64)
    for i in range(0, len(flat), chunk):
        counts += np.bincount(flat[i : i + chunk], minlength=256)
    return counts


def count_rows(counts: np.ndarray, spec: DatasetSpec, pixel_mm2: float | None) -> list[dict]:
    """:func:`area_rows` of a map's pixel counts per value (int (>= num_indices,)), counted elsewhere."""
    counts = counts[: spec.num_indices]
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


class PolygonTracer:
    """GeoJSON polygons of a class map that arrives band by band, never whole in memory.

    Each band of ``band`` rows is traced on its own (OpenCV contours through pixel centres, holes
    kept), sharing its last row with the next band so that a region crossing the seam is one
    polygon once the pieces are united (shapely). Coordinates are scaled by ``scale`` (map pixel
    -> level-0 pixel) and simplified to ``tolerance`` level-0 pixels: QuPath's annotation form.

    Examples:
        >>> from segmix.data.spec import PRESETS
        >>> spec = PRESETS["luad-histoseg"]
        >>> mask = np.full((30, 20), spec.background_index, np.uint8)
        >>> mask[5:25, 5:15] = 1
        >>> tracer = PolygonTracer(spec, scale=2.0, band=8)
        >>> for y in range(0, 30, 7):
        ...     tracer.add(mask[y : y + 7])
        >>> [len(f["geometry"]["coordinates"]) for f in tracer.finish()["features"]]  # one polygon, not four
        [1]
    """

    def __init__(self, spec: DatasetSpec, scale: float, tolerance: float = 0.0, band: int = 1024) -> None:
        self.spec, self.scale, self.tolerance, self.band = spec, scale, tolerance, max(2, band)
        self._pieces: dict[int, list] = {i: [] for i in range(spec.num_classes)}
        self._rows: list[tuple[np.ndarray, set[int]]] = []  # rows not traced yet, each with its classes
        self._top = 0  # map row of the first of them

    def add(self, rows: np.ndarray, counts: np.ndarray | None = None) -> None:
        """Append ``rows`` (h, width) of class indices below those added before; ``counts``:
        their pixels per value (:func:`value_counts`) when the caller has them, so that a class
        they lack (every class, on glass) is not looked for."""
        k = self.spec.num_classes
        self._rows.append((rows, set(range(k) if counts is None else np.flatnonzero(counts[:k]).tolist())))
        while sum(len(r) for r, _ in self._rows) >= self.band:
            classes = set().union(*(c for _, c in self._rows))
            band = np.concatenate([r for r, _ in self._rows]) if classes else None  # glass: nothing to trace
            if band is not None:
                self._trace(band[: self.band], classes)
            rest = self.band - 1  # rows of the band before its last: the seam row goes in both bands
            while rest >= len(self._rows[0][0]):
                rest -= len(self._rows.pop(0)[0])
            first, first_classes = self._rows[0]
            self._rows[0] = (first[rest:], first_classes)
            self._top += self.band - 1

    def finish(self) -> dict:
        """The FeatureCollection of everything added."""
        import shapely

        if self._rows and sum(len(r) for r, _ in self._rows) > 1:
            classes = set().union(*(c for _, c in self._rows))
            if classes:
                self._trace(np.concatenate([r for r, _ in self._rows]), classes)
        self._rows = []
        features = []
        for idx, pieces in self._pieces.items():
            if not pieces:
                continue
            merged = shapely.union_all(pieces)
            merged = shapely.transform(merged, lambda xy: (xy + 0.5) * self.scale)
            if self.tolerance > 0:
                merged = shapely.simplify(merged, self.tolerance)
            polygons = [_rings(p) for p in shapely.get_parts(merged) if p.geom_type == "Polygon" and not p.is_empty]
            if polygons:
                features.append(self._feature(idx, polygons))
        return {"type": "FeatureCollection", "features": features}

    def _trace(self, band: np.ndarray, classes: set[int]) -> None:
        import cv2
        import shapely

        for idx in sorted(classes):
            binary = (band == idx).view(np.uint8)
            if not binary.any():
                continue
            contours, hierarchy = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
            if hierarchy is None:
                continue
            hierarchy = hierarchy[0]
            offset = np.array([0.0, self._top])
            polygons = []
            for i, c in enumerate(contours):
                if hierarchy[i][3] != -1 or len(c) < 3:
                    continue  # holes are added to their parent below
                holes, child = [], hierarchy[i][2]
                while child != -1:
                    if len(contours[child]) >= 3:
                        holes.append(contours[child][:, 0] + offset)
                    child = hierarchy[child][0]
                polygons.append(shapely.Polygon(c[:, 0] + offset, holes))
            # Regions touching at a corner give rings through one point twice: made valid (the
            # slow part, so only where needed) before the pieces are united.
            polygons = np.array(polygons, dtype=object)
            invalid = ~shapely.is_valid(polygons)
            polygons[invalid] = shapely.make_valid(polygons[invalid])
            parts = shapely.get_parts(polygons)
            self._pieces[idx].extend(parts[shapely.get_type_id(parts) == 3])  # 3: Polygon

    def _feature(self, idx: int, polygons: list) -> dict:
        return {
            "type": "Feature",
            "geometry": {"type": "MultiPolygon", "coordinates": polygons},
            "properties": {
                "objectType": "annotation",
                "classification": {"name": self.spec.classes[idx], "color": list(self.spec.palette[idx])},
            },
        }


def _rings(polygon) -> list[list[list[float]]]:
    """A shapely polygon's exterior and holes as GeoJSON rings (closed, 2 decimals)."""
    rings = [polygon.exterior, *polygon.interiors]
    return [[[round(float(x), 2), round(float(y), 2)] for x, y in ring.coords] for ring in rings]
