"""``segmix evaluate``: score a stage-2 segmenter on a split under the dataset's protocol.

Tiles of the training size go through in batches; larger or varying images (WSSS4LUAD's
validation and test sets) by sliding window. Truth pixels of the excluded index are left out.
Writes ``scores.json``, ``scores.md``, prediction PNGs and image | truth | prediction overlays.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from segmix.config.run import OVERLAYS
from segmix.data.dataset import TileDataset, collate_list
from segmix.data.io import write_image, write_mask, write_text
from segmix.data.preview import contact_sheet, overlay
from segmix.data.spec import resolve_spec
from segmix.errors import DatasetError, ModelFileError
from segmix.eval.metrics import ConfusionMatrix, SegScores
from segmix.models import load_segmenter, segment
from segmix.runtime import fit_threads, pick_device


def scores_markdown(scores: SegScores, title: str) -> str:
    lines = [f"### {title}", "", "| class | IoU | Dice |", "|---|---|---|"]
    for c, iou, dice in zip(scores.classes, scores.iou, scores.dice):
        lines.append(f"| {c} | {iou * 100:.2f} | {dice * 100:.2f} |")
    lines += [
        f"| **mean** | **{scores.miou * 100:.2f}** | **{scores.mdice * 100:.2f}** |",
        "",
        f"mIoU {scores.miou * 100:.2f} · FwIoU {scores.fwiou * 100:.2f} · Dice {scores.mdice * 100:.2f} · "
        f"pixel accuracy {scores.pixel_accuracy * 100:.2f} ({scores.pixels} scored pixels)",
    ]
    return "\n".join(lines) + "\n"


def evaluate(
    segmenter: str | Path,
    data_root: str | Path,
    split: str = "test",
    out_dir: str | Path | None = None,
    stride: float | None = None,
    flip: bool | None = None,
    overlays: int = OVERLAYS,
    device: str | None = None,
    on_batch: Callable[[int], None] | None = None,
    precision: str | None = None,
) -> SegScores:
    """Scores of ``segmenter.pt`` on ``split``; outputs go to ``out_dir`` when given.

    ``stride`` and ``flip`` override the model's ``inference`` settings when given, ``precision``
    its ``precision`` (:mod:`segmix.config.precision`).
    """
    trained = load_segmenter(segmenter)
    model, cfg, trained_spec = trained.network, trained.config, trained.spec
    spec = resolve_spec(data_root)
    if spec.classes != trained_spec.classes:
        raise ModelFileError(f"{segmenter}: trained on {trained_spec.classes}, dataset has {spec.classes}")
    given = {k: v for k, v in {"window_stride": stride, "flip": flip}.items() if v is not None}
    cfg = cfg.model_copy(update={"inference": cfg.inference.model_copy(update=given)})
    cfg = cfg.model_copy(update={"precision": precision or cfg.precision})
    dev = pick_device(device)
    fit_threads(0, None, gpu=dev.type == "cuda")
    model = model.to(dev).to(memory_format=torch.channels_last)
    tiles = TileDataset(data_root, split, spec, stain=model.stain)
    if any(s.mask is None for s in tiles.samples):
        raise DatasetError(tiles.split.folder, f"the {split} split has no masks to score against")
    cm = ConfusionMatrix(spec.num_indices, spec.index_names, spec.exclude_index)
    out = Path(out_dir) if out_dir else None
    shown = 0
    for batch in DataLoader(tiles, batch_size=16, collate_fn=collate_list):
        preds = segment(model, [it["image"] for it in batch], cfg, dev, spec.num_indices)
        for item, pred in zip(batch, preds):
            cm.update(pred, item["mask"])
            if out is not None:
                _write_prediction(out, item, pred, spec.palette, overlay_too=shown < overlays)
                shown += 1
        if on_batch:
            on_batch(len(batch))
    scores = cm.compute()
    if out is not None:
        write_text(out / "scores.json", json.dumps(scores.as_dict(), indent=2))
        write_text(out / "scores.md", scores_markdown(scores, f"{Path(segmenter).name} on {split}"))
    return scores


def _write_prediction(out: Path, item: dict, pred, palette, overlay_too: bool) -> None:
    """``pred/<stem>.png``, and the image | truth | prediction sheet in ``overlays/``."""
    stem = Path(item["name"]).stem
    write_mask(out / "pred" / f"{stem}.png", pred, palette)
    if overlay_too:
        row = [item["image"], overlay(item["image"], item["mask"], palette), overlay(item["image"], pred, palette)]
        write_image(out / "overlays" / f"{stem}.png", contact_sheet([row]))
