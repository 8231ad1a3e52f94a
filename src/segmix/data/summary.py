"""Dataset summary behind ``segmix info``: counts, label co-occurrence, pixel frequencies, sizes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segmix.data.dataset import SPLITS, scan_split
from segmix.data.io import IGNORE_INDEX, image_size, read_image, read_mask
from segmix.data.spec import DatasetSpec
from segmix.errors import DatasetError


@dataclass
class SplitSummary:
    name: str
    images: int
    skipped: int
    sizes: Counter  # (width, height) -> count
    cooccurrence: np.ndarray | None  # int64 (K, K): tiles carrying both labels (diagonal: each)
    pixels: np.ndarray | None  # int64 (num_indices,): mask pixels per index
    problems: list[str] = field(default_factory=list)


def summarize(
    root: str | Path,
    spec: DatasetSpec,
    check: bool = False,
    on_file: Callable[[], None] | None = None,
) -> list[SplitSummary]:
    """Summarise every split present.

    Sizes come from image headers; masks are decoded for pixel counts. With ``check`` every
    image is decoded too and problems are collected instead of stopping at the first.
    """
    root = Path(root)
    out = []
    for split in SPLITS:
        sub = getattr(spec.splits, split)
        if sub is not None and (root / sub).is_dir():
            out.append(_summarize_split(root, spec, split, check, on_file))
    return out


def _summarize_split(root: Path, spec: DatasetSpec, split: str, check: bool, on_file) -> SplitSummary:
    problems: list[str] = []
    listing = scan_split(root, spec, split, problems if check else None)
    k = spec.num_classes
    co = np.zeros((k, k), np.int64)
    pixels = np.zeros(spec.num_indices, np.int64)
    sizes: Counter = Counter()
    has_masks = False
    for s in listing.samples:
        try:
            size, label, counts = _sample_stats(s, spec, check)
            sizes[size] += 1
            if counts is not None:
                has_masks, pixels = True, pixels + counts
            if label is not None:
                co += np.outer(label, label).astype(np.int64)
        except DatasetError as err:
            if not check:
                raise
            problems.append(str(err))
        if on_file:
            on_file()
    return SplitSummary(
        split, len(listing.samples), len(listing.skipped), sizes, co, pixels if has_masks else None, problems
    )


def _sample_stats(s, spec: DatasetSpec, check: bool) -> tuple[tuple[int, int], np.ndarray | None, np.ndarray | None]:
    """A sample's (width, height), its label (from the mask when the name has none) and its
    mask's pixels per index (None without a mask); decodes the image too with ``check``."""
    size = image_size(s.image)
    if check:
        read_image(s.image)
    if s.mask is None:
        return size, s.label, None
    mask = read_mask(s.mask, spec.num_indices, spec.palette, (size[1], size[0]))
    counts = np.bincount(mask[mask != IGNORE_INDEX].ravel(), minlength=spec.num_indices)[: spec.num_indices]
    label = s.label
    if label is None:
        label = (np.bincount(mask.ravel(), minlength=256)[: spec.num_classes] > 0).astype(np.uint8)
    return size, label, counts
