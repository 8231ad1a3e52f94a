"""Listing and reading the splits of a dataset described by a :class:`DatasetSpec`.

Listing (:func:`scan_split`) is cheap and strict: it parses every label and pairs every image
with its mask, so a wrong folder fails in seconds, not hours into training. Pixels are decoded
lazily, one sample at a time, by :class:`TileDataset`.

Files whose suffix is not an image (``.txt``, ``Thumbs.db``, hidden files) are skipped and
counted in :attr:`Split.skipped`; everything else wrong stops with a :class:`DatasetError`, or,
when the caller passes a ``problems`` list (``segmix info --check``), is listed there and the
sample left out, so one pass reports every problem.

Truth masks of the train split (``train_gt/``) may be named like their tile
(``x-[1 0 0 1].png``) or by the tile's name without the label (``x.png``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from segmix.data.io import IMAGE_SUFFIXES, read_image, read_mask
from segmix.data.labels import parse_label
from segmix.data.spec import DatasetSpec, resolve_spec
from segmix.errors import DatasetError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Sample:
    """One tile: its image path, its image-level label (train) and its mask path (if any)."""

    name: str
    image: Path
    label: np.ndarray | None  # uint8 (K,) multi-hot, from the file name
    mask: Path | None


@dataclass
class Split:
    name: str
    folder: Path
    samples: list[Sample]
    skipped: list[Path] = field(default_factory=list)  # stray non-image files


def _list_images(folder: Path, problems: list[str] | None = None) -> tuple[list[Path], list[Path]]:
    if not folder.is_dir():
        raise DatasetError(folder, "folder does not exist")
    images, skipped = [], []
    try:
        entries = sorted(folder.iterdir())
    except OSError as err:
        raise DatasetError(folder, f"cannot list the folder ({err.strerror or err})") from err
    for f in entries:
        if f.is_dir():
            continue
        if f.name.startswith(".") or f.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append(f)
        else:
            images.append(f)
    if skipped:
        log.warning("%s: skipped %d non-image file(s), e.g. %s", folder, len(skipped), skipped[0].name)
    if not images:
        raise DatasetError(folder, "no images in folder")
    seen: dict[str, Path] = {}
    for f in images:
        # Outputs (pseudo masks, predictions) are named by stem: two files may not share one.
        if f.stem in seen:
            _report(
                problems, DatasetError(f, f"duplicate name: {seen[f.stem].name} has the same name before the suffix")
            )
            continue
        seen[f.stem] = f
    return list(seen.values()), skipped


_LABEL_SUFFIX = re.compile(r"[\s_-]*\[[^\[\]]*\]$")


def _mask_for(image: Path, mask_dir: Path) -> Path:
    stems = [image.stem]
    bare = _LABEL_SUFFIX.sub("", image.stem)
    if bare and bare != image.stem:
        stems.append(bare)  # truth named by the tile without its label: x.png for x-[1 0].png
    for stem in stems:
        for suffix in dict.fromkeys((image.suffix, ".png")):
            candidate = mask_dir / (stem + suffix)
            if candidate.is_file():
                return candidate
    tried = " or ".join(f"{s}.png" for s in stems)
    raise DatasetError(image, f"no mask for this image in {mask_dir} (looked for {tried})")


def _report(problems: list[str] | None, err: DatasetError) -> None:
    """Raise ``err``, or append it to ``problems`` when the caller collects them."""
    if problems is None:
        raise err
    problems.append(str(err))


def _collect(problems: list[str] | None, make):
    """``make()``, or None with its error reported (see :func:`_report`)."""
    try:
        return make()
    except DatasetError as err:
        _report(problems, err)
        return None


def scan_split(root: str | Path, spec: DatasetSpec, split: str, problems: list[str] | None = None) -> Split:
    """List the samples of one split.

    Args:
        root: dataset root folder.
        spec: its description.
        split: ``"train"``, ``"val"`` or ``"test"``.
        problems: when given, label and mask problems are appended here (the sample is left
            out) instead of raised.

    Raises:
        DatasetError: missing or empty folder; malformed label or image without mask (unless
            ``problems`` collects them).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(root)
    dirs = spec.splits
    sub = getattr(dirs, split)
    if sub is None:
        raise DatasetError(root, f"dataset {spec.name!r} has no {split} split")
    if split == "train":
        folder = root / sub
        images, skipped = _list_images(folder, problems)
        gt_dir = root / dirs.train_gt if dirs.train_gt and (root / dirs.train_gt).is_dir() else None
        samples = []
        for f in images:
            label = _collect(problems, lambda: parse_label(f, spec.num_classes))
            mask = _collect(problems, lambda: _mask_for(f, gt_dir)) if gt_dir else None
            if label is not None and (gt_dir is None or mask is not None):
                samples.append(Sample(name=f.name, image=f, label=label, mask=mask))
        return Split(split, folder, samples, skipped)
    folder = root / sub
    images, skipped = _list_images(folder / dirs.image_dir, problems)
    mask_dir = folder / dirs.mask_dir
    has_masks = mask_dir.is_dir()
    if not has_masks and problems is not None:  # listed only: predicting needs no masks
        problems.append(str(DatasetError(mask_dir, f"folder does not exist; the {split} images cannot be scored")))
    samples = []
    for f in images:
        mask = _collect(problems, lambda: _mask_for(f, mask_dir)) if has_masks else None
        if mask is not None or not has_masks:
            samples.append(Sample(name=f.name, image=f, label=None, mask=mask))
    return Split(split, folder, samples, skipped)


def require_masks(tiles: TileDataset, why: str) -> None:
    """Raise when a val / test split has images without masks (labels come from masks there)."""
    if any(s.mask is None for s in tiles.samples):
        folder = tiles.split.folder / tiles.spec.splits.mask_dir
        raise DatasetError(folder, f"no masks for the {tiles.split.name} split: {why}")


class TileDataset(Dataset):
    """Samples of one split as dicts of numpy arrays.

    Each item is ``{"name": str, "image": uint8 (H, W, 3), "label": uint8 (K,),
    "mask": uint8 (H, W) or None}``. Without a label in the file name (val/test) the label is
    the set of tissue classes present in the mask.

    Args:
        root: dataset root.
        split: ``"train"``, ``"val"`` or ``"test"``.
        spec: dataset description; resolved from ``root`` (and ``preset``) when omitted.
        preset: preset name, see :data:`segmix.data.spec.PRESETS`.
        with_masks: read masks where they exist (False skips the decode when only labels matter).
        stain: applied to every image read (a :class:`~segmix.data.stain.StainNormalizer`).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        spec: DatasetSpec | None = None,
        preset: str | None = None,
        with_masks: bool = True,
        stain: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.root = Path(root)
        self.spec = spec or resolve_spec(self.root, preset)
        self.split = scan_split(self.root, self.spec, split)
        self.with_masks = with_masks
        self.stain = stain

    def __len__(self) -> int:
        return len(self.split.samples)

    @property
    def samples(self) -> list[Sample]:
        return self.split.samples

    def __getitem__(self, index: int) -> dict:
        s = self.split.samples[index]
        image = read_image(s.image)
        mask = None
        if s.mask is not None and (self.with_masks or s.label is None):
            mask = read_mask(s.mask, self.spec.num_indices, self.spec.palette, image.shape[:2])
        label = s.label if s.label is not None else labels_from_mask(mask, self.spec.num_classes)
        if self.stain is not None:
            image = self.stain(image)
        return {"name": s.name, "image": image, "label": label, "mask": mask}


def labels_from_mask(mask: np.ndarray | None, num_classes: int) -> np.ndarray | None:
    """Multi-hot uint8 (K,) of the tissue classes present in a (H, W) mask."""
    if mask is None:
        return None
    counts = np.bincount(mask.ravel(), minlength=256)[:num_classes]
    return (counts > 0).astype(np.uint8)


def collate_list(items: list[dict]) -> list[dict]:
    """DataLoader ``collate_fn`` keeping a batch as a list of items (tiles of varying size)."""
    return items
