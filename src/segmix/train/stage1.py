"""Stage 1: the multi-label CAM classifier trained on mixed batches, on PyTorch Lightning.

Lightning brings mixed precision (bf16 on CPU, AMP on GPU), DDP, checkpoint/resume and
loggers. What is ours: the mixer applied to each batch on the device, the per-patch CAM loss,
and the curriculum stepped at each epoch end by :class:`CurriculumCallback` with the feedback
signal, its state saved in every checkpoint.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader
from torchmetrics.classification import MultilabelAveragePrecision, MultilabelF1Score

from segmix.config import save_config
from segmix.data.dataset import TileDataset, require_masks
from segmix.data.io import write_text
from segmix.data.spec import DatasetSpec, resolve_spec
from segmix.errors import DatasetError, ModelFileError
from segmix.models import CamClassifier
from segmix.shuffle import METHODS, build_levels, create_method, patch_ladder
from segmix.train.augment import dihedral, hed_jitter
from segmix.train.config import Stage1Config
from segmix.train.data import EpochShuffle, TrainTiles, split_holdout
from segmix.train.losses import patch_cam_loss
from segmix.train.runtime import (
    EpochCheckpoint,
    build_trainer,
    check_finite,
    claim_run_folder,
    fit_or_resume,
    load_payload,
    save_payload,
)

log = logging.getLogger(__name__)
CLASSIFIER_FILE = "classifier.pt"


def build_mixer(cfg: Stage1Config):
    """``(mixer, curriculum or None)`` for the config's method."""
    ladder = patch_ladder(cfg.image_size, min(cfg.patch_min, cfg.image_size // 2), cfg.patch_levels)
    levels = build_levels(ladder, cfg.ratio_floor, cfg.ratio_ceiling, cfg.ratio_steps)
    mixer_args = {
        "patch_size": levels[0].patch_size,
        "ratio": levels[0].ratio,
        "p": cfg.p,
        "label_mix": cfg.label_mix,
        "alpha": cfg.mix_alpha,
    }
    curriculum_args = {
        "feedback": cfg.curriculum.model_dump(),
        "scheduled": {"total_steps": cfg.epochs},
        "fixed": {"level": min(cfg.fixed_level, len(levels) - 1)},
    }
    kind = METHODS[cfg.method].curriculum
    return create_method(cfg.method, levels, mixer_args, curriculum_args.get(kind))


class Stage1Module(L.LightningModule):
    """The CAM classifier, its mixer and curriculum, and the losses."""

    def __init__(self, config: dict, class_names: list[str]) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.cfg = Stage1Config.model_validate(config)
        self.class_names = list(class_names)
        k = len(class_names)
        self.model = CamClassifier(
            self.cfg.backbone, k, self.cfg.pretrained, self.cfg.weights, self.cfg.output_stride, self.cfg.pool
        )
        self.mixer, self.curriculum = build_mixer(self.cfg)
        dc = self.model.data_config
        self.register_buffer("mean", torch.tensor(dc["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(dc["std"]).view(1, 3, 1, 1), persistent=False)
        self.val_f1 = MultilabelF1Score(num_labels=k, average=None)
        self.val_ap = MultilabelAveragePrecision(num_labels=k, average=None)
        self._loss_sum = torch.zeros(())
        self._loss_count = 0

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 or [0, 1] float (B, 3, H, W) -> normalised float, channels_last."""
        x = images.float() / 255 if images.dtype == torch.uint8 else images
        return ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    def _generator(self) -> torch.Generator:
        # One seed per (run, step, rank): a resumed run draws the same mixes as an uninterrupted one.
        return torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.global_step * 7919 + self.global_rank)

    def on_train_epoch_start(self) -> None:
        self._loss_sum = torch.zeros((), device=self.device)
        self._loss_count = 0

    def training_step(self, batch, batch_idx: int) -> Tensor:
        images, labels = batch
        g = self._generator()
        x = images.float() / 255
        if self.cfg.dihedral:
            x = dihedral(x, g)
        x = hed_jitter(x, self.cfg.hed_jitter, g)
        x, targets, info = self.mixer(x, labels, g)
        logits, maps = self.model(self.normalize(x))
        loss_img = F.binary_cross_entropy_with_logits(logits.float(), targets)
        loss = loss_img
        if self.cfg.cell_loss > 0 and info.source is not None:
            loss_cell = patch_cam_loss(maps.float(), info.source, info.patch_size, labels, x.shape[-2:])
            loss = loss + self.cfg.cell_loss * loss_cell
            self.log("train/cell_loss", loss_cell, on_step=False, on_epoch=True, batch_size=len(x))
        check_finite(loss, self.global_step)
        self._loss_sum = self._loss_sum + loss_img.detach()
        self._loss_count += 1
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        self.log("train/mixed_bce", loss_img, on_step=False, on_epoch=True, batch_size=len(x))
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        images, labels = batch
        logits, _ = self.model(self.normalize(images))
        logits = logits.float()
        self.log("val_loss", F.binary_cross_entropy_with_logits(logits, labels), on_epoch=True, sync_dist=True, batch_size=len(images))
        probs = logits.sigmoid()
        self.val_f1.update(probs, labels.int())
        self.val_ap.update(probs, labels.int())

    def on_validation_epoch_end(self) -> None:
        f1, ap = self.val_f1.compute(), self.val_ap.compute()
        self.log("val_f1", f1.nanmean(), prog_bar=True)
        self.log("val_ap", ap.nanmean())
        for name, v in zip(self.class_names, f1):
            self.log(f"val_f1/{name}", v)
        self.val_f1.reset()
        self.val_ap.reset()

    def feedback_signal(self) -> float:
        """The curriculum's signal, the same on every rank."""
        if self.cfg.signal == "train_loss":
            mean = self._loss_sum / max(self._loss_count, 1)
            return float(self.trainer.strategy.reduce(mean, reduce_op="mean"))
        return float(self.trainer.callback_metrics[self.cfg.signal])

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.cfg.epochs)
        return {"optimizer": opt, "lr_scheduler": sched}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.curriculum is not None:
            checkpoint["curriculum"] = self.curriculum.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.curriculum is not None and "curriculum" in checkpoint:
            self.curriculum.load_state_dict(checkpoint["curriculum"])


class CurriculumCallback(L.Callback):
    """Steps the curriculum at each epoch end with the feedback signal; writes its trace."""

    def __init__(self, csv_path: str | Path) -> None:
        self.csv_path = Path(csv_path)

    def on_train_epoch_end(self, trainer: L.Trainer, module: Stage1Module) -> None:
        if module.curriculum is None:
            return
        row = module.curriculum.step(module.feedback_signal())
        module.log_dict(
            {
                "curriculum/level": float(row["level"]),
                "curriculum/patch_size": float(row["patch_size"]),
                "curriculum/ratio": float(row["ratio"]),
            }
        )
        if trainer.is_global_zero:
            write_history_csv(module.curriculum.history, self.csv_path)
        if trainer.world_size > 1:  # every rank's own trace, to audit that all decide alike
            rank_csv = self.csv_path.parent / "ranks" / f"curriculum.rank{trainer.global_rank}.csv"
            write_history_csv(module.curriculum.history, rank_csv)


def write_history_csv(history: list[dict], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    write_text(path, buf.getvalue())


def train_classifier(
    cfg: Stage1Config,
    data_root: str | Path,
    out_dir: str | Path,
    spec: DatasetSpec | None = None,
    progress: bool = True,
    callbacks: list | None = None,
    claim: bool = True,
) -> Path:
    """Train (or resume) stage 1; returns the exported ``classifier.pt``.

    Outputs in ``out_dir``: ``config.yaml`` (with versions and seed), ``checkpoints/last.ckpt``
    (resumed from when present), ``curriculum.csv``, ``logs/version_N/metrics.csv`` (one folder
    per attempt), ``tensorboard/``,
    and ``classifier.pt`` (weights + config + class names, loadable with ``weights_only=True``).

    A folder holding a run of another config is refused (:func:`claim_run_folder`); ``claim=False``
    skips that check for callers that decide resumption themselves (``segmix run``'s hashes).
    """
    out = Path(out_dir)
    if claim:
        claim_run_folder(out, cfg, CLASSIFIER_FILE, dataset=data_root)
    spec = spec or resolve_spec(data_root)
    train_tiles = TileDataset(data_root, "train", spec, with_masks=False)
    has_val = spec.splits.val is not None and (Path(data_root) / spec.splits.val).is_dir()
    if has_val:
        val_tiles = TileDataset(data_root, "val", spec)
        require_masks(
            val_tiles,
            "stage 1 reads the validation labels from them (add them, or set `splits: {val: null}` in "
            "dataset.yaml to hold out 10 % of the train tiles instead)",
        )
        train_set = TrainTiles(train_tiles, cfg.image_size)
        val_set = TrainTiles(val_tiles, cfg.image_size)
    else:
        train_set, val_set = split_holdout(TrainTiles(train_tiles, cfg.image_size), 0.1, cfg.seed)
    if len(train_set) < cfg.batch_size:
        raise DatasetError(data_root, f"{len(train_set)} training tiles, fewer than one batch of {cfg.batch_size}")
    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    loader_args = {"batch_size": cfg.batch_size, "num_workers": cfg.num_workers, "persistent_workers": cfg.num_workers > 0}
    train_loader = DataLoader(train_set, sampler=EpochShuffle(len(train_set), cfg.seed), drop_last=True, **loader_args)
    val_loader = DataLoader(val_set, shuffle=False, **loader_args)
    module = Stage1Module(cfg.model_dump(mode="json"), spec.classes)
    checkpoints = out / "checkpoints"
    callbacks = [
        CurriculumCallback(out / "curriculum.csv"),
        EpochCheckpoint(checkpoints / "last.ckpt"),
        *(callbacks or []),
    ]
    trainer = build_trainer(cfg, cfg.epochs, out, callbacks, progress)
    if trainer.is_global_zero:
        save_config(cfg, out / "config.yaml", dataset=str(Path(data_root).resolve()), classes=spec.classes)
    fit_or_resume(trainer, module, train_loader, val_loader, checkpoints)
    target = out / CLASSIFIER_FILE
    if trainer.is_global_zero:
        save_classifier(module.model, cfg, spec.classes, target)
    return target


def save_classifier(model: CamClassifier, cfg: Stage1Config, classes: list[str], path: Path) -> None:
    """Weights + config + class names, written atomically; plain data only."""
    save_payload(
        {
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "config": cfg.model_dump(mode="json"),
            "classes": list(classes),
        },
        path,
    )


def load_classifier(path: str | Path) -> tuple[CamClassifier, Stage1Config, list[str]]:
    """Rebuild the classifier from ``classifier.pt`` (``weights_only=True``; no download)."""
    payload = load_payload(path, {"state_dict", "config", "classes"}, "classifier")
    try:
        cfg = Stage1Config.model_validate(payload["config"])
        model = CamClassifier(cfg.backbone, len(payload["classes"]), False, None, cfg.output_stride, cfg.pool)
        model.load_state_dict(payload["state_dict"])
    except (ValueError, RuntimeError, TypeError) as err:  # invalid config, weights of another model
        raise ModelFileError(f"{path}: the classifier cannot be rebuilt ({str(err).splitlines()[0]})") from err
    return model.eval(), cfg, list(payload["classes"])
