"""Writing and scoring pseudo masks, whatever makes them (CAMs, a segmenter's predictions): the
split's tiles streamed with their glass and truth, masks written by threads, scored where the
split has truth."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from segmix.data.dataset import TileDataset, collate_list
from segmix.data.io import read_mask, write_atomic, write_mask, write_text
from segmix.data.spec import DatasetSpec
from segmix.data.tissue import tissue_mask
from segmix.eval.metrics import ConfusionMatrix, SegScores
from segmix.runtime import rank_and_world


def write_scored_masks(
    items: MaskInputs,
    out: Path,
    batch_size: int,
    workers: int,
    masks_of: Callable[[list[dict]], tuple[np.ndarray, torch.Tensor | None, np.ndarray]],
    on_batch: Callable[[int], None] | None = None,
) -> SegScores | None:
    """Stream ``items`` (this process's share under torchrun) through ``masks_of``, which turns
    same-size items into masks uint8 (B, H, W), maps to save or None, and the every-pixel maps
    uint8 (B, H, W) that are scored; write ``out/masks`` and, where there is truth, ``scores.json``."""
    rank, world = rank_and_world()
    scorer = _MaskScorer(items.tiles.spec)
    with _Writer(out, items.tiles.spec, max(1, workers)) as writer:
        for batch in _shard(items, batch_size, workers, rank, world):
            for group in _same_size_groups(batch):
                masks, cams, maps = masks_of(group)
                writer.submit(group, masks, cams)
                scorer.update(group, maps, masks)
            if on_batch:
                on_batch(len(batch))
    return scorer.result(world, out / "scores.json" if rank == 0 else None)


class MaskInputs(Dataset):
    """The tiles of a split with what the masks need besides the model: ``tissue`` (bool (H, W),
    glass is False; None when the dataset has no glass policy) and ``truth`` (uint8 (H, W) pixel
    truth, or None). Computed in DataLoader workers; glass is grey above ``white`` with saturation
    below ``saturation`` (:func:`segmix.data.tissue.tissue_mask`)."""

    def __init__(self, tiles: TileDataset, white: float, saturation: float) -> None:
        self.tiles, self.white, self.saturation = tiles, white, saturation

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, index: int) -> dict:
        item = self.tiles[index]
        spec, sample = self.tiles.spec, self.tiles.samples[index]
        if item["mask"] is None and sample.mask is not None:
            item["mask"] = read_mask(sample.mask, spec.num_indices, spec.palette, item["image"].shape[:2])
        item["truth"] = item.pop("mask")
        item["tissue"] = tissue_mask(item["image"], self.white, self.saturation) if spec.glass_is_background else None
        return item


def remove_partial_writes(out: Path) -> None:
    """Delete the temporary files of ``out/masks`` that a process killed mid-write left."""
    for stale in (out / "masks").glob(".tmp-*"):
        stale.unlink(missing_ok=True)


def _shard(items: MaskInputs, batch_size: int, workers: int, rank: int, world: int) -> DataLoader:
    # Each rank takes every world-th image: no image is missed or written twice.
    shard = Subset(items, list(range(rank, len(items), world))) if world > 1 else items
    return DataLoader(shard, batch_size=batch_size, shuffle=False, collate_fn=collate_list, num_workers=workers)


def _same_size_groups(items: list[dict]) -> Iterator[list[dict]]:
    by_shape: dict[tuple, list[dict]] = {}
    for it in items:
        by_shape.setdefault(it["image"].shape, []).append(it)
    yield from by_shape.values()


class _Writer:
    """Writes masks (and CAMs) in threads; at most two batches in flight, errors raised in the
    caller (at the next batch or on leaving the ``with`` block)."""

    def __init__(self, out: Path, spec: DatasetSpec, threads: int) -> None:
        self.out, self.spec = out, spec
        self.pool = ThreadPoolExecutor(max_workers=threads)
        self.pending: list[Future] = []
        self.previous: list[Future] = []

    def submit(self, group: list[dict], masks: np.ndarray, cams: torch.Tensor | None) -> None:
        for f in self.previous:
            f.result()
        self.previous, self.pending = self.pending, []
        for i, g in enumerate(group):
            stem = Path(g["name"]).stem
            self.pending.append(
                self.pool.submit(write_mask, self.out / "masks" / f"{stem}.png", masks[i], self.spec.palette)
            )
            if cams is not None:
                cam = cams[i].half().cpu().numpy()
                path = self.out / "cams" / f"{stem}.npy"
                self.pending.append(self.pool.submit(write_atomic, path, lambda fh, cam=cam: np.save(fh, cam)))

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc) -> None:
        try:
            if exc[0] is None:
                for f in self.previous + self.pending:
                    f.result()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=exc[0] is not None)


@dataclass(frozen=True)
class PseudoMaskScores(SegScores):
    """Scores of the label-gated maps on every pixel (what the classifier localises, whatever
    ``margin`` leaves out), and of what the written masks keep: ``left_out``,
    the share of scored pixels they give 255; ``kept_accuracy``, the pixel accuracy of the rest."""

    left_out: float = 0.0
    kept_accuracy: float = float("nan")

    def as_dict(self) -> dict:
        return {**super().as_dict(), "left_out": self.left_out, "kept_accuracy": self.kept_accuracy}


class _MaskScorer:
    """Scores pseudo masks against the split's truth masks, where it has them."""

    def __init__(self, spec: DatasetSpec) -> None:
        self.matrix = ConfusionMatrix(spec.num_indices, spec.index_names, spec.exclude_index)
        self.written = ConfusionMatrix(spec.num_indices, spec.index_names, spec.exclude_index)
        self.scored = False

    def update(self, group: list[dict], maps: np.ndarray, masks: np.ndarray) -> None:
        for g, full, mask in zip(group, maps, masks):
            if g["truth"] is not None:
                self.matrix.update(full, g["truth"])
                self.written.update(mask, g["truth"])
                self.scored = True

    def result(self, world: int, json_path: Path | None) -> SegScores | None:
        """The scores over all processes (also written to ``json_path`` when given); None when
        no image had truth."""
        if world > 1:
            import torch.distributed as dist

            def summed(t: torch.Tensor) -> torch.Tensor:
                dist.all_reduce(t)
                return t

            self.matrix.sum_across(summed)
            self.written.sum_across(summed)
            self.scored = bool(summed(torch.tensor([int(self.scored)])).item())
        if not self.scored:
            return None
        scores = self._with_kept(self.matrix.compute())
        if json_path is not None:
            write_text(json_path, json.dumps(scores.as_dict(), indent=2))
        return scores

    def _with_kept(self, scores: SegScores) -> PseudoMaskScores:
        """``scores`` with the written masks' left-out share and kept accuracy (the confusion
        matrix's last column counts the pixels a mask left unassigned)."""
        rows = self.written.matrix[self.written.scored].astype(np.float64)
        total, left = rows.sum(), rows[:, -1].sum()
        correct = sum(self.written.matrix[i, i] for i in self.written.scored)
        return PseudoMaskScores(
            **{f.name: getattr(scores, f.name) for f in fields(scores)},
            left_out=float(left / total) if total else 0.0,
            kept_accuracy=float(correct / (total - left)) if total > left else float("nan"),
        )
