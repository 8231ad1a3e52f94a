"""Stain normalisation of H&E tiles (Macenko, Reinhard), from ``torchstain``.

Tiles of one cohort scanned at several sites differ in stain; mapping every tile onto one
reference stain removes much of that before a network sees it. A :class:`StainNormalizer` is
fitted once (to a reference tile, or to pooled training tiles), stored in the model files as
plain numbers (:meth:`StainNormalizer.to_dict`), and applied the same way wherever the model
reads tiles: training, pseudo masks, evaluation and prediction.

>>> normalizer = StainNormalizer.fit("macenko", [reference_tile])       # doctest: +SKIP
>>> tile = normalizer(tile)                                             # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
STAIN_METHODS = ("macenko", "reinhard")
# What each method keeps after fitting: the reference's stain matrix and concentration maxima
# (Macenko), the reference's LAB channel means and standard deviations (Reinhard).
_FITTED = {"macenko": ("HERef", "maxCRef"), "reinhard": ("target_means", "target_stds")}


def _torchstain(method: str):
    from torchstain.numpy.normalizers.macenko import NumpyMacenkoNormalizer
    from torchstain.numpy.normalizers.reinhard import NumpyReinhardNormalizer

    return {"macenko": NumpyMacenkoNormalizer, "reinhard": NumpyReinhardNormalizer}[method]()


def _enough_stain(image: np.ndarray, beta: float = 0.15, share: float = 0.01) -> bool:
    # Macenko estimates the stain vectors from pixels with optical density above beta in every
    # channel (torchstain's default); too few of them give a meaningless estimate.
    od = -np.log((image.reshape(-1, 3).astype(np.float64) + 1) / 240)
    stained = int((od >= beta).all(axis=1).sum())
    return stained >= max(64, share * od.shape[0])


@dataclass(frozen=True)
class StainNormalizer:
    """A fitted stain normaliser: ``normalizer(image)`` maps uint8 (H, W, 3) to uint8 (H, W, 3)."""

    method: str
    fitted: dict[str, list]
    _impl: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.method not in STAIN_METHODS:
            raise ValueError(f"unknown stain normalisation {self.method!r}; known: {', '.join(STAIN_METHODS)}")
        impl = _torchstain(self.method)
        for name, value in self.fitted.items():
            setattr(impl, name, np.asarray(value, dtype=np.float64))
        object.__setattr__(self, "_impl", impl)

    @classmethod
    def fit(cls, method: str, images: list[np.ndarray]) -> StainNormalizer:
        """Fit to the pixels of ``images`` (uint8 (H, W, 3) each, pooled)."""
        if method not in STAIN_METHODS:
            raise ValueError(f"unknown stain normalisation {method!r}; known: {', '.join(STAIN_METHODS)}")
        pooled = np.concatenate([np.asarray(im, np.uint8).reshape(-1, 1, 3) for im in images])
        impl = _torchstain(method)
        impl.fit(pooled)
        return cls(method, {name: np.asarray(getattr(impl, name)).tolist() for name in _FITTED[method]})

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """The tile in the reference stain; a tile whose stains cannot be estimated (mostly
        glass, a single colour) is returned as it is."""
        if self.method == "macenko" and not _enough_stain(image):
            return image
        try:
            with np.errstate(all="ignore"):
                if self.method == "macenko":
                    out = self._impl.normalize(I=image, stains=False)[0]
                else:
                    out = self._impl.normalize(image)
        except (np.linalg.LinAlgError, ValueError, IndexError, FloatingPointError):
            log.debug("stain normalisation skipped for a tile without enough stained tissue")
            return image
        return np.ascontiguousarray(out, dtype=np.uint8)

    def to_dict(self) -> dict:
        """Plain data for a model file (``weights_only`` loadable)."""
        return {"method": self.method, "fitted": self.fitted}

    @classmethod
    def from_dict(cls, data: dict | None) -> StainNormalizer | None:
        return None if not data else cls(data["method"], data["fitted"])


def fit_stain_normalizer(method: str, reference: str | None, tiles, count: int = 32) -> StainNormalizer | None:
    """The normaliser a training stage uses: None for ``method == "none"``; else fitted to the
    ``reference`` image file, or to ``count`` tiles of ``tiles`` (a TileDataset) spread evenly
    over it (deterministic: a resumed run fits the same one)."""
    if method == "none":
        return None
    if reference:
        from segmix.data.io import read_image

        return StainNormalizer.fit(method, [read_image(reference)])
    picks = np.unique(np.linspace(0, len(tiles) - 1, num=min(count, len(tiles))).round().astype(int))
    return StainNormalizer.fit(method, [tiles[int(i)]["image"] for i in picks])
