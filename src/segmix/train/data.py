"""Tiles as training tensors: fixed-size uint8 (3, S, S) images with float labels."""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler, Subset

from segmix.data.dataset import TileDataset
from segmix.data.io import IGNORE_INDEX, image_size


def fit_square(image: np.ndarray, size: int, resample: int = Image.BILINEAR) -> np.ndarray:
    """uint8 (H, W) or (H, W, 3) resized to (size, size); returned as is when it already is.

    Examples:
        >>> import numpy as np
        >>> fit_square(np.zeros((50, 70, 3), np.uint8), 32).shape
        (32, 32, 3)
    """
    if image.shape[:2] == (size, size):
        return image
    return np.array(Image.fromarray(image).resize((size, size), resample))  # writable: torch.from_numpy warns otherwise


class TrainTiles(Dataset):
    """``(image uint8 (3, S, S), label float (K,), tile index)``; tiles of another size are resized.

    Resizing (not cropping) keeps every labelled tissue in view, so image-level labels stay
    true for tiles of varying size such as WSSS4LUAD's.
    """

    def __init__(self, tiles: TileDataset, size: int) -> None:
        self.tiles = tiles
        self.size = size

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image, label = self.tensors(self.tiles[index])
        return image, label, index

    def tensors(self, item: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """A :class:`TileDataset` item's image as uint8 (3, S, S) and label as float (K,)."""
        image = fit_square(item["image"], self.size)
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous()
        return image, torch.from_numpy(item["label"].astype(np.float32))


class MaskedTiles(TrainTiles):
    """Tiles ``indices`` (default: all) with their pixel truth: ``(image uint8 (3, S, S), label
    float (K,), index, mask uint8 (S, S))``; the mask is all ``IGNORE_INDEX`` where the tile has
    none. For passes that score CAMs against truth: the validation split.

    ``crop_large``: an image with a mask and both sides at least twice ``S`` (WSSS4LUAD's
    full-size validation images) is cut into ``S``-pixel windows at its own resolution, each
    labelled by the classes of its mask, rather than shrunk to one tile: the held-out set then
    has the scale of the training tiles, and many cells.
    """

    def __init__(self, tiles: TileDataset, size: int, indices: list[int] | None = None, crop_large: bool = False):
        super().__init__(tiles, size)
        self.indices = list(range(len(tiles))) if indices is None else list(indices)
        self.items: list[tuple[int, tuple[int, int] | None]] = []
        for index in self.indices:
            sample = tiles.samples[index]
            windows = _windows(image_size(sample.image), size) if crop_large and sample.mask is not None else []
            self.items += [(index, w) for w in windows] or [(index, None)]
        self._cached: tuple[int, dict] | None = None  # crops of one image come in a row: decode it once

    def __len__(self) -> int:
        return len(self.items)

    def _item(self, index: int) -> dict:
        if self._cached is None or self._cached[0] != index:
            self._cached = (index, self.tiles[index])
        return self._cached[1]

    def __getitem__(self, i: int):
        index, window = self.items[i]
        item = self._item(index)
        if window is not None:
            (y, x), s = window, self.size
            mask = item["mask"][y : y + s, x : x + s]
            k = len(item["label"])
            present = np.bincount(mask.ravel(), minlength=256)[:k] > 0
            item = {
                **item,
                "image": item["image"][y : y + s, x : x + s],
                "mask": mask,
                "label": present.astype(np.uint8),
            }
        image, label = self.tensors(item)
        mask = item["mask"]
        mask = np.full((self.size, self.size), IGNORE_INDEX, np.uint8) if mask is None else mask
        mask = fit_square(mask, self.size, Image.NEAREST)
        return image, label, index, torch.from_numpy(np.ascontiguousarray(mask))


def _windows(width_height: tuple[int, int], size: int) -> list[tuple[int, int]]:
    """Top-left (y, x) of ``size`` windows tiling an image of at least twice ``size`` each way
    (the last row and column flush with its edges); none for a smaller image."""
    width, height = width_height
    if min(width, height) < 2 * size:
        return []

    def starts(n: int) -> list[int]:
        return sorted({*range(0, n - size + 1, size), n - size})

    return [(y, x) for y in starts(height) for x in starts(width)]


def stream_seed(seed: int, stream: str, *index: int) -> int:
    """The seed of the random stream named ``stream`` at ``index`` in a run seeded with ``seed``.

    A hash of all three, so two consumers (the epoch order and a training step, say) never share
    numbers whatever their indices; arithmetic offsets did (epoch e and step 0 / rank e).

    Examples:
        >>> stream_seed(0, "epoch-order", 1) != stream_seed(0, "step", 0, 1)
        True
    """
    digest = hashlib.blake2b(repr((int(seed), stream, *map(int, index))).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # a non-negative int64, as manual_seed takes


def seeded_generator(seed: int, stream: str, *index: int) -> torch.Generator:
    """A CPU generator on the stream :func:`stream_seed` names."""
    return torch.Generator().manual_seed(stream_seed(seed, stream, *index))


def split_holdout(dataset: Dataset, fraction: float, seed: int) -> tuple[Subset, Subset]:
    """Random (train, held-out) split for datasets without a validation split."""
    n = len(dataset)
    order = torch.randperm(n, generator=seeded_generator(seed, "holdout")).tolist()
    k = max(1, int(round(fraction * n)))
    return Subset(dataset, order[k:]), Subset(dataset, order[:k])


class EpochShuffle(Sampler[int]):
    """A random order that depends only on (seed, epoch).

    Lightning calls ``set_epoch`` at every epoch start (and forwards it through its DDP wrapper),
    so a run resumed from a checkpoint draws exactly the batches the uninterrupted run drew,
    unlike a sampler fed by one generator whose state is lost with the process.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = seeded_generator(self.seed, "epoch-order", self.epoch)
        return iter(torch.randperm(self.size, generator=g).tolist())

    def __len__(self) -> int:
        return self.size


class SingleLabelShare(EpochShuffle):
    """:class:`EpochShuffle` whose every batch draws ``share`` of its places from single-label
    tiles, class-balanced (a class first, uniformly among those with single-label tiles, then one
    of its tiles).

    On real H&E most tiles carry several labels, so few shuffled patches have a known class; the
    per-patch CAM loss gets its positives from these draws. Yields ``len(labels) // batch_size``
    whole batches (the loader must use the same ``batch_size``); without single-label tiles it is
    a plain :class:`EpochShuffle` cut to whole batches.

    Args:
        labels: (N, K) multi-hot labels, in the dataset's index order.
        batch_size: the loader's batch size.
        share: share of each batch drawn from single-label tiles, in [0, 1).
        seed: with the epoch, fixes the order.
    """

    def __init__(self, labels: np.ndarray, batch_size: int, share: float, seed: int) -> None:
        super().__init__(len(labels), seed)
        single = np.flatnonzero((labels > 0.5).sum(1) == 1)
        by_class = [single[labels[single].argmax(1) == k] for k in range(labels.shape[1])]
        self.by_class = [torch.from_numpy(ix) for ix in by_class if len(ix)]
        self.batch_size = batch_size
        self.per_batch = int(round(share * batch_size)) if self.by_class else 0

    def __iter__(self):
        g = seeded_generator(self.seed, "epoch-order", self.epoch)
        order = torch.randperm(self.size, generator=g)
        own = self.batch_size - self.per_batch
        out = []
        for b in range(len(self) // self.batch_size):
            out += order[b * own : (b + 1) * own].tolist()
            if not self.per_batch:
                continue
            classes = torch.randint(len(self.by_class), (self.per_batch,), generator=g).tolist()
            out += [int(self.by_class[c][torch.randint(len(self.by_class[c]), (1,), generator=g)]) for c in classes]
        return iter(out)

    def __len__(self) -> int:
        return self.size // self.batch_size * self.batch_size


def decode_undrawn(dataset: Dataset, sampler: EpochShuffle, drawn: int) -> int:
    """Read the items of ``dataset`` that the first epoch leaves out, before it starts; returns
    how many.

    A sampler that cuts to whole batches, or fills batches with single-label tiles, leaves some
    tiles out of an epoch: a corrupt one would go unnoticed while the run ends well. Reading
    them here stops the run at its start with one line naming the file, whatever is drawn.

    Args:
        dataset: the loader's dataset (its items are read as the loader would).
        sampler: the loader's sampler, read at epoch 0.
        drawn: how many of its draws the loader uses (whole batches with ``drop_last``).
    """
    epoch = sampler.epoch
    sampler.set_epoch(0)
    seen = set(list(sampler)[:drawn])
    sampler.set_epoch(epoch)
    left = [i for i in range(len(dataset)) if i not in seen]
    for i in left:
        dataset[i]
    return len(left)
