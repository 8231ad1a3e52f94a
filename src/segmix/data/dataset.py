"""Listing and reading the splits of a dataset described by a :class:`DatasetSpec`.

Listing (:func:`scan_split`) is cheap and strict: it parses every label and pairs every image
with its mask, so a wrong folder fails in seconds, not hours into training. Pixels are decoded
lazily, one sample at a time, by :class:`TileDataset`.

Files whose suffix is not an image (``.txt``, ``Thumbs.db``, hidden files) are skipped and
counted in :attr:`Split.skipped`; everything else wrong stops with a :class:`DatasetError`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from segmix.data.errors import DatasetError
from segmix.data.io import IMAGE_SUFFIXES, read_image, read_mask
from segmix.data.labels import parse_label
from segmix.data.spec import DatasetSpec, resolve_spec

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


def _list_images(folder: Path) -> tuple[list[Path], list[Path]]:
    if not folder.is_dir():
        raise DatasetError(folder, "folder does not exist")
    images, skipped = [], []
    for f in sorted(folder.iterdir()):
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
            raise DatasetError(f, f"duplicate name: {seen[f.stem].name} has the same name before the suffix")
        seen[f.stem] = f
    return images, skipped


def _mask_for(image: Path, mask_dir: Path) -> Path:
    for suffix in (image.suffix, ".png"):
        candidate = mask_dir / (image.stem + suffix)
        if candidate.is_file():
            return candidate
    raise DatasetError(image, f"no mask for this image in {mask_dir}")


def scan_split(root: str | Path, spec: DatasetSpec, split: str) -> Split:
    """List the samples of one split.

    Args:
        root: dataset root folder.
        spec: its description.
        split: ``"train"``, ``"val"`` or ``"test"``.

    Raises:
        DatasetError: missing or empty folder, malformed label, image without mask.
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
        images, skipped = _list_images(folder)
        gt_dir = root / dirs.train_gt if dirs.train_gt and (root / dirs.train_gt).is_dir() else None
        samples = [
            Sample(
                name=f.name,
                image=f,
                label=parse_label(f, spec.num_classes),
                mask=_mask_for(f, gt_dir) if gt_dir else None,
            )
            for f in images
        ]
        return Split(split, folder, samples, skipped)
    folder = root / sub
    images, skipped = _list_images(folder / dirs.image_dir)
    mask_dir = folder / dirs.mask_dir
    has_masks = mask_dir.is_dir()
    samples = [
        Sample(name=f.name, image=f, label=None, mask=_mask_for(f, mask_dir) if has_masks else None)
        for f in images
    ]
    return Split(split, folder, samples, skipped)


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
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        spec: DatasetSpec | None = None,
        preset: str | None = None,
        with_masks: bool = True,
    ) -> None:
        self.root = Path(root)
        self.spec = spec or resolve_spec(self.root, preset)
        self.split = scan_split(self.root, self.spec, split)
        self.with_masks = with_masks

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
