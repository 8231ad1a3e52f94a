"""``segmix cams``: stream a split through the classifier, write pseudo masks, score them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import DataLoader, Subset

from segmix.cam.background import tissue_mask
from segmix.cam.cams import class_activation_maps
from segmix.cam.masks import pseudo_masks
from segmix.config import save_config
from segmix.data.dataset import TileDataset, collate_list
from segmix.data.io import read_mask, write_mask, write_text
from segmix.data.spec import DatasetSpec, resolve_spec
from segmix.errors import ModelFileError
from segmix.eval.metrics import ConfusionMatrix, SegScores
from segmix.train.stage1 import load_classifier


class CamConfig(BaseModel):
    """How CAMs become pseudo masks."""

    model_config = ConfigDict(extra="forbid")
    split: str = "train"
    scales: list[float] = [1.0, 1.5]
    flip: bool = True
    batch_size: int = Field(32, ge=1)
    labels: str = Field("image", pattern="^(image|predicted)$", description="gate by file-name labels or predictions")
    threshold: float = Field(0.5, gt=0, lt=1, description="for predicted labels")
    white: float = Field(0.80, gt=0, le=1, description="glass: grey above this ...")
    saturation: float = Field(0.15, ge=0, le=1, description="... and saturation below this")
    uncertain: float | None = Field(None, ge=0, le=1, description="best CAM below this -> 255 (ignored)")
    save_cams: bool = Field(False, description="also write float16 CAM arrays (.npy)")


def generate_pseudo_masks(
    classifier: str | Path,
    data_root: str | Path,
    out_dir: str | Path,
    cfg: CamConfig | None = None,
    spec: DatasetSpec | None = None,
    device: str | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> SegScores | None:
    """Write ``out_dir/masks/<image name>.png`` for every image of the split.

    Images are streamed in batches (grouped by size); at most one batch of CAMs is in memory.
    When the split has pixel truth (the synthetic ``train_gt/``), the masks are scored and
    ``scores.json`` written; the scores are returned.
    """
    cfg = cfg or CamConfig()
    spec = spec or resolve_spec(data_root)
    out = Path(out_dir)
    model, s1cfg, classes = load_classifier(classifier)
    if classes != spec.classes:
        raise ModelFileError(f"{classifier}: trained on classes {classes}, dataset has {spec.classes}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(dev).to(memory_format=torch.channels_last)
    dc = model.data_config
    mean = torch.tensor(dc["mean"], device=dev).view(1, 3, 1, 1)
    std = torch.tensor(dc["std"], device=dev).view(1, 3, 1, 1)
    tiles = TileDataset(data_root, cfg.split, spec, with_masks=False)
    rank, world = _rank_and_world()
    # Each rank takes every world-th image: no image is missed or written twice.
    shard = Subset(tiles, list(range(rank, len(tiles), world))) if world > 1 else tiles
    loader = DataLoader(shard, batch_size=cfg.batch_size, shuffle=False, collate_fn=collate_list, num_workers=0)
    scorer = ConfusionMatrix(spec.num_indices, spec.index_names, spec.exclude_index)
    scored = False
    truth_paths = {s.name: s.mask for s in tiles.samples}
    if cfg.save_cams:
        (out / "cams").mkdir(parents=True, exist_ok=True)
    if rank == 0:
        save_config(cfg, out / "cam_config.yaml", classifier=str(classifier), dataset=str(data_root))
        for stale in (out / "masks").glob(".tmp-*"):  # left by a process killed mid-write
            stale.unlink(missing_ok=True)
    for items in loader:
        by_shape: dict[tuple, list[dict]] = {}
        for it in items:
            by_shape.setdefault(it["image"].shape, []).append(it)
        for group in by_shape.values():
            images = torch.from_numpy(np.stack([g["image"] for g in group])).to(dev).permute(0, 3, 1, 2)
            x = (images.float() / 255 - mean) / std
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                cams = class_activation_maps(model, x, cfg.scales, cfg.flip)
                if cfg.labels == "predicted" or group[0]["label"] is None:
                    logits, _ = model(x.contiguous(memory_format=torch.channels_last))
            if cfg.labels == "image" and group[0]["label"] is not None:
                labels = torch.from_numpy(np.stack([g["label"] for g in group])).to(dev)
            else:
                probs = logits.float().sigmoid()
                labels = (probs > cfg.threshold) | (probs == probs.max(dim=1, keepdim=True).values)
            tissue = None
            if spec.glass_is_background:
                tissue = torch.from_numpy(
                    np.stack([tissue_mask(g["image"], cfg.white, cfg.saturation) for g in group])
                )
            masks = pseudo_masks(cams, labels, tissue, spec.background_index, cfg.uncertain).cpu().numpy()
            for g, mask, cam in zip(group, masks, cams):
                stem = Path(g["name"]).stem
                write_mask(out / "masks" / f"{stem}.png", mask, spec.palette)
                if cfg.save_cams:
                    np.save(out / "cams" / f"{stem}.npy", cam.half().cpu().numpy())
                if truth_paths[g["name"]] is not None:
                    scorer.update(mask, read_mask(truth_paths[g["name"]], spec.num_indices, spec.palette, mask.shape))
                    scored = True
        if on_batch:
            on_batch(len(items))
    if world > 1:
        import torch.distributed as dist

        total = torch.as_tensor(scorer.matrix)
        dist.all_reduce(total)
        scorer.matrix = total.numpy()
        flag = torch.tensor([int(scored)])
        dist.all_reduce(flag)
        scored = bool(flag.item())
    if not scored:
        return None
    scores = scorer.compute()
    if rank == 0:
        write_text(out / "scores.json", json.dumps(scores.as_dict(), indent=2))
    return scores


def _rank_and_world() -> tuple[int, int]:
    """This process's rank and the world size when run under torchrun / SLURM with a process
    group (initialised here with gloo when the launcher set the environment but nobody did)."""
    import os

    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()
