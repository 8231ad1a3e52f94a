"""``segmix cams``: stream a split through the classifier, write pseudo masks from its CAMs, score them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from segmix.config import save_config
from segmix.config.precision import autocast
from segmix.config.pseudo import CamConfig
from segmix.data.dataset import TileDataset
from segmix.data.spec import DatasetSpec, resolve_spec
from segmix.errors import ModelFileError
from segmix.eval.metrics import SegScores
from segmix.models import CamClassifier, load_classifier
from segmix.pseudo.cams import class_activation_maps
from segmix.pseudo.masks import gated_masks
from segmix.pseudo.refine import refine_cams
from segmix.pseudo.write import MaskInputs, remove_partial_writes, write_scored_masks
from segmix.runtime import fit_threads, pick_device, rank_and_world


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
    items = MaskInputs(
        TileDataset(data_root, cfg.split, spec, with_masks=False, stain=model.stain), cfg.white, cfg.saturation
    )
    if rank_and_world()[0] == 0:
        _start_outputs(out, cfg, classifier, data_root)

    def masks_of(group: list[dict]) -> tuple[np.ndarray, torch.Tensor | None, np.ndarray]:
        masks, cams, maps = pseudo_masks_of(model, group, cfg, spec, dev, precision)
        return masks, cams if cfg.save_cams else None, maps

    return write_scored_masks(items, out, cfg.batch_size, workers, masks_of, on_batch)


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
    kept (what is scored), of same-size items of :class:`MaskInputs`, computed at ``precision``
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
