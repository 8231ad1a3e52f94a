"""``segmix cams``: stream a split through the classifier, write pseudo masks, score them."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import DataLoader, Dataset, Subset

from segmix.cam.cams import class_activation_maps
from segmix.cam.masks import pseudo_masks
from segmix.cam.refine import refine_cams
from segmix.config import save_config
from segmix.config.precision import PrecisionName, autocast
from segmix.config.threads import fit_threads, rank_and_world
from segmix.data.dataset import TileDataset, collate_list
from segmix.data.io import read_mask, write_atomic, write_mask, write_text
from segmix.data.spec import DatasetSpec, resolve_spec
from segmix.data.tissue import tissue_mask
from segmix.errors import ModelFileError
from segmix.eval.metrics import ConfusionMatrix, SegScores
from segmix.models import CamClassifier, load_classifier, pick_device


class CamConfig(BaseModel):
    """How CAMs become pseudo masks."""

    model_config = ConfigDict(extra="forbid")
    removed_keys: ClassVar[tuple[str, ...]] = ("uncertain",)  # refused with a note (segmix.errors)
    split: str = Field("train", description="the split whose tiles get pseudo masks (stage 2 trains on them)")
    scales: list[float] = Field([1.0, 1.5], description="tile resize factors; CAMs averaged over them")
    flip: bool = Field(True, description="also average the CAMs of the horizontally flipped tiles")
    batch_size: int = Field(32, ge=1, description="tiles per forward pass")
    labels: str = Field("image", pattern="^(image|predicted)$", description="gate by file-name labels or predictions")
    threshold: float = Field(0.5, gt=0, lt=1, description="for predicted labels")
    white: float = Field(0.80, gt=0, le=1, description="glass: grey above this ...")
    saturation: float = Field(0.15, ge=0, le=1, description="... and saturation below this")
    margin: float | None = Field(
        0.2,
        ge=0,
        le=1,
        description="best CAM leading the second label's by less than this -> 255 (ignored; null: off; "
        "why 0.2: docs/results/defaults.md)",
    )
    refine_steps: int = Field(
        10,
        ge=0,
        le=100,
        description="rounds of colour-adaptive refinement of the CAMs (segmix.cam.refine; 0: off; why on: "
        "docs/results/defaults.md)",
    )
    save_cams: bool = Field(False, description="also write float16 CAM arrays (.npy)")
    num_workers: int | None = Field(
        None,
        ge=0,
        description="processes reading tiles, glass and truth (as many threads write PNGs); null: what fits the cores",
    )
    threads: int | None = Field(None, ge=1, description="torch threads; null: the cores the workers leave")
    precision: PrecisionName | None = Field(
        None, description="auto, 32, 16 or bf16; null: the classifier's own precision"
    )


def generate_pseudo_masks(
    classifier: str | Path,
    data_root: str | Path,
    out_dir: str | Path,
    cfg: CamConfig | None = None,
    spec: DatasetSpec | None = None,
    device: str | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> SegScores | None:
    """Write ``out_dir/masks/<image stem>.png`` for every image of the split.

    Images are streamed in batches (grouped by size); at most one batch of CAMs is in memory.
    The per-image CPU work (decoding, glass detection, reading truth) runs in ``cfg.num_workers``
    DataLoader workers and PNGs are encoded by as many writer threads, so the model is the limit.
    When the split has pixel truth (the synthetic ``train_gt/``), the masks are scored and
    ``scores.json`` written; the scores are returned. Under torchrun each process takes every
    world-th image and the scores are summed over processes.
    """
    cfg = cfg or CamConfig()
    spec = spec or resolve_spec(data_root)
    out = Path(out_dir)
    dev = pick_device(device)
    model, precision = _classifier_for(classifier, spec, dev)
    precision = cfg.precision or precision
    workers = fit_threads(cfg.num_workers, cfg.threads, gpu=dev.type == "cuda")
    items = CamInputs(TileDataset(data_root, cfg.split, spec, with_masks=False, stain=model.stain), cfg)
    if rank_and_world()[0] == 0:
        _start_outputs(out, cfg, classifier, data_root)

    def masks_of(group: list[dict]) -> tuple[np.ndarray, torch.Tensor | None, np.ndarray]:
        masks, cams, maps = pseudo_masks_of(model, group, cfg, spec, dev, precision)
        return masks, cams if cfg.save_cams else None, maps

    return write_scored_masks(items, out, cfg.batch_size, workers, masks_of, on_batch)


def write_scored_masks(
    items: CamInputs,
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


class CamInputs(Dataset):
    """The tiles of a split with what the masks need besides the model: ``tissue`` (bool (H, W),
    glass is False; None when the dataset has no glass policy) and ``truth`` (uint8 (H, W) pixel
    truth, or None). Computed in DataLoader workers."""

    def __init__(self, tiles: TileDataset, cfg: CamConfig) -> None:
        self.tiles, self.cfg = tiles, cfg

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, index: int) -> dict:
        item = self.tiles[index]
        spec, sample = self.tiles.spec, self.tiles.samples[index]
        if item["mask"] is None and sample.mask is not None:
            item["mask"] = read_mask(sample.mask, spec.num_indices, spec.palette, item["image"].shape[:2])
        item["truth"] = item.pop("mask")
        item["tissue"] = (
            tissue_mask(item["image"], self.cfg.white, self.cfg.saturation) if spec.glass_is_background else None
        )
        return item


def pseudo_masks_of(
    model: CamClassifier,
    group: list[dict],
    cfg: CamConfig,
    spec: DatasetSpec,
    device: torch.device,
    precision: str = "auto",
) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
    """Pseudo masks uint8 (B, H, W) with 255 where ``cfg.margin`` leaves a
    pixel out, CAMs float (B, K, H, W), and the label-gated maps uint8 (B, H, W) with every pixel
    kept (what is scored), of same-size items of :class:`CamInputs`, computed at ``precision``
    (:mod:`segmix.config.precision`)."""
    images = torch.from_numpy(np.stack([g["image"] for g in group])).to(device).permute(0, 3, 1, 2)
    x = model.normalize(images)
    with autocast(precision, device.type):
        cams = class_activation_maps(model, x, cfg.scales, cfg.flip)
        logits = None if _has_labels(group, cfg) else model(x.contiguous(memory_format=torch.channels_last))[0]
    cams = refine_cams(cams, images, cfg.refine_steps)  # fp32: the weights are softmaxes of small differences
    labels = _gate(group, logits, cfg, device)
    masks, maps = gated_masks(cams, labels, group, spec, cfg.margin)
    return masks, cams, maps


def gated_masks(
    maps: torch.Tensor,
    labels: torch.Tensor,
    group: list[dict],
    spec: DatasetSpec,
    margin: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The masks to write uint8 (B, H, W) (255 where ``margin`` leaves a pixel out) and the
    every-pixel masks uint8 (B, H, W) that are scored, from maps float (B, K, H, W)
    of same-size items of :class:`CamInputs`: gated by ``labels`` (B, K), glass by ``spec``'s
    policy (:func:`segmix.cam.masks.pseudo_masks`)."""
    tissue = torch.from_numpy(np.stack([g["tissue"] for g in group])) if spec.glass_is_background else None
    every = pseudo_masks(maps, labels, tissue, spec.background_index)
    kept = every  # with nothing to leave out, the written masks are the scored ones
    if margin is not None:
        kept = pseudo_masks(maps, labels, tissue, spec.background_index, margin)
    return kept.cpu().numpy(), every.cpu().numpy()


def _has_labels(group: list[dict], cfg: CamConfig) -> bool:
    return cfg.labels == "image" and group[0]["label"] is not None


def _gate(group: list[dict], logits: torch.Tensor | None, cfg: CamConfig, device: torch.device) -> torch.Tensor:
    """The classes each mask may use: the image labels, or the predicted ones (those above
    ``cfg.threshold``, and always the most likely one)."""
    if logits is None:
        return torch.from_numpy(np.stack([g["label"] for g in group])).to(device)
    probs = logits.float().sigmoid()
    return (probs > cfg.threshold) | (probs == probs.max(dim=1, keepdim=True).values)


def _classifier_for(path: str | Path, spec: DatasetSpec, device: torch.device) -> tuple[CamClassifier, str]:
    """The classifier on ``device`` and the precision of its config."""
    model, cfg, classes = load_classifier(path)
    if classes != spec.classes:
        raise ModelFileError(f"{path}: trained on classes {classes}, dataset has {spec.classes}")
    return model.to(device).to(memory_format=torch.channels_last), cfg.precision


def _start_outputs(out: Path, cfg: CamConfig, classifier: str | Path, data_root: str | Path) -> None:
    save_config(cfg, out / "cam_config.yaml", classifier=str(classifier), dataset=str(data_root))
    remove_partial_writes(out)


def remove_partial_writes(out: Path) -> None:
    """Delete the temporary files of ``out/masks`` that a process killed mid-write left."""
    for stale in (out / "masks").glob(".tmp-*"):
        stale.unlink(missing_ok=True)


def _shard(items: CamInputs, batch_size: int, workers: int, rank: int, world: int) -> DataLoader:
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
