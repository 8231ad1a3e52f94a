"""The patch pool: cells of multi-label tiles labelled by the classifier's own confident CAMs.

On real H&E most tiles carry several labels, so the per-patch CAM loss knows little about their
cells (only the absent classes). After each epoch the pool scores every grid cell of the training
tiles at the curriculum's current patch size; a cell of a multi-label tile whose label-gated
softmax over its cell logits is at least ``confidence`` sure of one class becomes a known cell of
that class. Per class, at most ``share`` of the multi-label cells the model assigns to it are
admitted, the most confident first, so a frequent class cannot crowd out a rare one. The share
grows with the curriculum's level: the model earns more self-supervision as it localises better.

Where the training tiles have pixel truth (the synthetic ``train_gt/``) every epoch's pool is
scored against it (``PoolStats.precision``): a pool that admits wrong patches shows it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from segmix.data.io import csv_text, read_csv, write_text
from segmix.train.losses import cell_logits, cell_truth


@dataclass(frozen=True)
class PoolStats:
    """One epoch's pool: how many cells it admitted and, with pixel truth, how many rightly."""

    epoch: int
    patch_size: int
    share: float
    multi_cells: int
    confident: int
    admitted: int
    scored: int
    correct: int

    @property
    def precision(self) -> float | None:
        """Share of admitted cells (with tissue in the truth) whose majority class is the pool's."""
        return self.correct / self.scored if self.scored else None


def write_pool_csv(rows: list[PoolStats], path: str | Path) -> None:
    """The pool's trace (``pool.csv``), one row per epoch, with its precision, atomically."""
    names = [f.name for f in fields(PoolStats)] + ["precision"]
    write_text(path, csv_text([{**asdict(r), "precision": r.precision} for r in rows], names))


def read_pool_csv(path: str | Path) -> list[PoolStats]:
    """The rows written by :func:`write_pool_csv`."""
    return [
        PoolStats(**{f.name: (float if f.name == "share" else int)(r[f.name]) for f in fields(PoolStats)})
        for r in read_csv(path)
    ]


def select_cells(conf: Tensor, pred: Tensor, multi: Tensor, share: float, confidence: float) -> Tensor:
    """The pool's cells: long (N, gh, gw), the admitted class or -1.

    Args:
        conf: float (N, gh, gw) gated softmax confidence of every cell's strongest class.
        pred: long (N, gh, gw) that class.
        multi: bool (N,) tiles with two or more labels (only their cells are admitted).
        share: per class, the most of its multi-label cells admitted.
        confidence: least ``conf`` admitted.
    """
    chosen = torch.full_like(pred, -1)
    in_multi = multi[:, None, None].expand_as(pred)
    for c in pred[in_multi].unique().tolist():
        of_class = in_multi & (pred == c)
        quota = int(share * int(of_class.sum()))
        candidates = of_class & (conf >= confidence)
        if quota == 0 or not candidates.any():
            continue
        scores = torch.where(candidates, conf, torch.full_like(conf, -1.0)).flatten()
        top = scores.topk(min(quota, int(candidates.sum()))).indices
        chosen.view(-1)[top] = c
    return chosen


class PatchPool:
    """Per tile and grid cell, the class admitted from confident CAMs (-1: none).

    Args:
        n_tiles: training tiles (indices as :class:`segmix.train.data.TrainTiles` returns them).
        confidence: least gated softmax confidence admitted.
    """

    def __init__(self, n_tiles: int, confidence: float) -> None:
        self.n_tiles, self.confidence = n_tiles, confidence
        self.cells: Tensor | None = None  # int8 (N, gh, gw)
        self.patch_size: int | None = None

    def clear(self) -> None:
        """Empty the pool (no cell is known beyond what the labels say)."""
        self.cells = self.patch_size = None

    def lookup(self, index: Tensor, patch_size: int) -> Tensor | None:
        """The pool's classes of tiles ``index`` (B,): long (B, gh, gw), or None when the pool is
        empty or was built at another patch size."""
        if self.cells is None or self.patch_size != patch_size:
            return None
        return self.cells[index.cpu()].to(index.device).long()

    @torch.no_grad()
    def update(
        self,
        forward: Callable[[Tensor], Tensor],
        loader: DataLoader,
        image_size: int,
        patch_size: int,
        share: float,
        reduce_sum: Callable[[Tensor], Tensor] = lambda t: t,
    ) -> tuple[int, int, int, int, int]:
        """Rebuild the pool at ``patch_size`` admitting up to ``share`` (see :func:`select_cells`).

        ``forward`` maps uint8 images (B, 3, S, S) to class maps (B, K, h, w); ``loader`` yields
        :class:`segmix.train.data.MaskedTiles` batches (this process's share of the tiles); ``reduce_sum`` sums a
        tensor over processes. Returns ``(multi_cells, confident, admitted, scored, correct)``.
        """
        grid = (image_size // patch_size, image_size // patch_size)
        conf, pred, truth = (torch.zeros(self.n_tiles, *grid) for _ in range(3))
        multi = torch.zeros(self.n_tiles, dtype=torch.bool)
        for images, labels, index, masks in loader:
            maps = forward(images).float().cpu()
            cells = cell_logits(maps, grid, patch_size, images.shape[-2:]).permute(0, 2, 3, 1)  # (B, gh, gw, K)
            gated = cells.masked_fill(labels[:, None, None] < 0.5, float("-inf")).softmax(-1)
            batch_conf, batch_pred = gated.max(-1)
            conf[index], pred[index] = batch_conf, batch_pred.float() + 1  # +1: 0 marks "not this process"
            truth[index] = cell_truth(masks, patch_size, labels.shape[1]).float() + 1
            multi[index] = (labels > 0.5).sum(1) >= 2
        conf, pred, truth = (reduce_sum(t) for t in (conf, pred, truth))
        multi = reduce_sum(multi.float()) > 0
        pred, truth = pred.long() - 1, truth.long() - 1
        self.cells = select_cells(conf, pred, multi, share, self.confidence).to(torch.int8)
        self.patch_size = patch_size
        admitted = self.cells >= 0
        scored = admitted & (truth >= 0)
        in_multi = multi[:, None, None].expand_as(pred)
        return (
            int(in_multi.sum()),
            int((in_multi & (conf >= self.confidence)).sum()),
            int(admitted.sum()),
            int(scored.sum()),
            int((scored & (truth == self.cells.long())).sum()),
        )

    def state_dict(self) -> dict:
        return {"cells": self.cells, "patch_size": self.patch_size}

    def load_state_dict(self, state: dict) -> None:
        self.cells, self.patch_size = state["cells"], state["patch_size"]
