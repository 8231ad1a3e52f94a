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

from segmix.errors import DatasetError

log = logging.getLogger(__name__)
STAIN_METHODS = ("macenko", "reinhard")
# What each method keeps after fitting: the reference's stain matrix and concentration maxima
# (Macenko), the reference's LAB channel means and standard deviations (Reinhard); their shapes.
_FITTED = {
    "macenko": {"HERef": (3, 2), "maxCRef": (2,)},
    "reinhard": {"target_means": (3,), "target_stds": (3,)},
}


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


# A reference must be at least this share stained tissue: a fit to a few stained pixels among
# glass estimates the stains from noise.
FIT_STAINED_SHARE = 0.10
# One colour has no spread in LAB (Reinhard would divide by ~0), and gives haematoxylin and eosin
# vectors that coincide (Macenko); real H&E references: LAB spreads 9-25, vectors ~35 deg apart.
MIN_LAB_SPREAD = 1.0
MAX_STAIN_COSINE = 0.99


class StainFitError(ValueError):
    """The pixels given to fit a stain normaliser cannot define a stain (the caller names them)."""


def _check_fit(method: str, fitted: dict[str, np.ndarray]) -> None:
    if not all(np.isfinite(v).all() for v in fitted.values()):
        raise StainFitError("its stains cannot be estimated (not finite)")
    if method == "reinhard" and fitted["target_stds"].min() < MIN_LAB_SPREAD:
        raise StainFitError("it holds about one colour: no stain spread to match")
    if method == "macenko":
        h, e = fitted["HERef"][:, 0], fitted["HERef"][:, 1]
        if abs(h @ e) / max(np.linalg.norm(h) * np.linalg.norm(e), 1e-12) > MAX_STAIN_COSINE:
            raise StainFitError("it holds about one colour: haematoxylin and eosin cannot be told apart")


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
        for name, value in _checked_statistics(self.method, self.fitted).items():
            setattr(impl, name, value)
        object.__setattr__(self, "_impl", impl)

    @classmethod
    def fit(cls, method: str, images: list[np.ndarray]) -> StainNormalizer:
        """Fit to the pixels of ``images`` (uint8 (H, W, 3) each, pooled).

        Raises:
            StainFitError: the pixels hold too little stained tissue (:data:`FIT_STAINED_SHARE`),
                or too few colours to tell the stains apart (one colour: no spread to match,
                haematoxylin and eosin vectors that coincide).
        """
        if method not in STAIN_METHODS:
            raise ValueError(f"unknown stain normalisation {method!r}; known: {', '.join(STAIN_METHODS)}")
        pooled = np.concatenate([np.asarray(im, np.uint8).reshape(-1, 1, 3) for im in images])
        if not _enough_stain(pooled, share=FIT_STAINED_SHARE):
            raise StainFitError(f"under {FIT_STAINED_SHARE:.0%} of its pixels are stained tissue (mostly glass)")
        impl = _torchstain(method)
        try:
            with np.errstate(all="ignore"):
                impl.fit(pooled)
        except (np.linalg.LinAlgError, ValueError, IndexError) as err:
            raise StainFitError(f"its stains cannot be estimated ({err})") from err
        fitted = {name: np.asarray(getattr(impl, name), dtype=np.float64) for name in _FITTED[method]}
        _check_fit(method, fitted)
        return cls(method, {name: value.tolist() for name, value in fitted.items()})

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
        """The normaliser of :meth:`to_dict`'s data (None: none).

        Raises:
            ValueError: not a normaliser's data: the method or its statistics missing, unknown,
                of another shape or not finite (a model file edited by hand).
        """
        if not data:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("fitted"), dict):
            raise ValueError("stain: needs a method and its fitted statistics")
        return cls(data.get("method"), data["fitted"])


def _checked_statistics(method: str, fitted: dict) -> dict[str, np.ndarray]:
    """``fitted`` as float64 arrays, each of its method's shape and finite.

    Raises:
        ValueError: naming the statistic that is missing, extra, of another shape or not finite.
    """
    shapes = _FITTED[method]
    if set(fitted) != set(shapes):
        raise ValueError(f"stain: {method} needs the statistics {', '.join(shapes)}, got {', '.join(fitted) or 'none'}")
    arrays = {}
    for name, shape in shapes.items():
        try:
            value = np.asarray(fitted[name], dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"stain: {name} is not numbers") from None
        if value.shape != shape or not np.isfinite(value).all():
            raise ValueError(f"stain: {name} must be finite numbers of shape {shape}, got shape {value.shape}")
        arrays[name] = value
    return arrays


def fit_stain_normalizer(method: str, reference: str | None, tiles, count: int = 32) -> StainNormalizer | None:
    """The normaliser a training stage uses: None for ``method == "none"``; else fitted to the
    ``reference`` image file, or to ``count`` tiles of ``tiles`` (a TileDataset) spread evenly
    over it (deterministic: a resumed run fits the same one).

    Raises:
        DatasetError: the reference (or the tiles) cannot define a stain (:class:`StainFitError`).
    """
    if method == "none":
        return None
    if reference:
        from segmix.data.io import read_image

        images = [read_image(reference)]
    else:
        picks = np.unique(np.linspace(0, len(tiles) - 1, num=min(count, len(tiles))).round().astype(int))
        images = [tiles[int(i)]["image"] for i in picks]
    try:
        return StainNormalizer.fit(method, images)
    except StainFitError as err:
        where = reference or f"{tiles.split.folder} ({len(images)} tiles)"
        what = "stain reference" if reference else f"tiles stain.method={method} fits to"
        raise DatasetError(where, f"{what}: {err}; give stain.reference a tile of well-stained tissue") from err
