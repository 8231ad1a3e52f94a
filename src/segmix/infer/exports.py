"""What a tissue map becomes for its readers: per-class areas, GeoJSON polygons (QuPath)."""

from __future__ import annotations

import numpy as np

from segmix.data.spec import DatasetSpec


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
