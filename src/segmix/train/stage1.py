"""Stage 1: the multi-label CAM classifier trained on mixed batches, on PyTorch Lightning.

Lightning brings mixed precision (bf16 on CPU, AMP on GPU), DDP, checkpoint/resume and
loggers. What is ours: the mixer applied to each batch on the device, the per-patch CAM loss,
the localisation scores on the held-out set (``val_cell_accuracy``, the feedback probe on a
fixed shuffle of it, with its cell count and standard error; ``val_miou`` of its label-gated
CAMs against its masks), and the
curriculum stepped at each epoch end by :class:`CurriculumCallback` with the feedback signal;
its state is saved in every checkpoint.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from torchmetrics.classification import MultilabelAveragePrecision, MultilabelF1Score

from segmix.config import Stage1Config, save_config
from segmix.data.dataset import TileDataset, require_masks
from segmix.data.spec import DatasetSpec, resolve_spec
from segmix.data.stain import fit_stain_normalizer
from segmix.errors import ConfigError, DatasetError
from segmix.eval.metrics import confusion_miou
from segmix.models import CLASSIFIER_FILE, CamClassifier, save_classifier
from segmix.shuffle import Level
from segmix.train.augment import dihedral, hed_jitter
from segmix.train.callbacks import CurriculumCallback
from segmix.train.data import (
    EpochShuffle,
    MaskedTiles,
    SingleLabelShare,
    TrainTiles,
    decode_undrawn,
    split_holdout,
)
from segmix.train.losses import gated_confusion, patch_cam_loss
from segmix.train.method import build_mixer, feedback_signal_name, method_of
from segmix.train.probe import probe_batch, probe_score, report_probe
from segmix.train.runtime import (
    EpochCheckpoint,
    adamw_cosine,
    build_trainer,
    check_finite,
    claim_run_folder,
    fit_or_resume,
    run_placement,
    step_generator,
)

log = logging.getLogger(__name__)


class Stage1Module(L.LightningModule):
    """The CAM classifier, its mixer and curriculum, and the losses."""

    def __init__(self, config: dict, class_names: list[str]) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.cfg = Stage1Config.model_validate(config)
        self.class_names = list(class_names)
        k = len(class_names)
        m = self.cfg.model
        self.model = CamClassifier(m.backbone, k, m.pretrained, m.weights, m.output_stride, m.pool)
        self.model.freeze(m.trainable_blocks)
        self.mixer, self.curriculum = build_mixer(self.cfg)
        self._cells = torch.zeros(2)
        self._cells_ahead = torch.zeros(2)  # the same cells at the next level, for a rule that reads ahead
        self.ahead: float | None = None  # their reading at the last validation (None: not measured)
        self.probe_history: list[dict] = []  # per epoch: the probe's accuracy, cell count, standard error
        self._confusion = torch.zeros(k, k)
        self.val_f1 = MultilabelF1Score(num_labels=k, average=None)
        self.val_ap = MultilabelAveragePrecision(num_labels=k, average=None)
        self._loss_sum = torch.zeros(())
        self._loss_count = 0

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 or [0, 1] float (B, 3, H, W) -> the classifier's input, channels_last."""
        return self.model.normalize(images).contiguous(memory_format=torch.channels_last)

    def on_train_epoch_start(self) -> None:
        self._loss_sum = torch.zeros((), device=self.device)
        self._loss_count = 0

    def training_step(self, batch, batch_idx: int) -> Tensor:
        images, labels, _ = batch
        g = step_generator(self.cfg.seed, self.global_step, self.global_rank)
        x = images.float() / 255
        if self.curriculum is not None:
            self.curriculum.before_batch(g)
        if self.cfg.augment.dihedral:
            x = dihedral(x, g)
        x = hed_jitter(x, self.cfg.augment.hed_jitter, g)
        x, targets, info = self.mixer(x, labels, g)
        logits, maps = self.model(self.normalize(x))
        loss_img = F.binary_cross_entropy_with_logits(logits.float(), targets)
        loss = loss_img
        weight = self.cfg.loss.patch_cam_weight
        if weight > 0 and info.source is not None:
            loss_cell = patch_cam_loss(maps.float(), info.source, info.patch_size, labels, x.shape[-2:])
            loss = loss + weight * loss_cell
            self.log("train/cell_loss", loss_cell, on_step=False, on_epoch=True, batch_size=len(x))
        check_finite(loss, self.global_step)
        self._loss_sum = self._loss_sum + loss_img.detach()
        self._loss_count += 1
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        self.log("train/mixed_bce", loss_img, on_step=False, on_epoch=True, batch_size=len(x))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._cells = torch.zeros(2, device=self.device)
        self._cells_ahead = torch.zeros(2, device=self.device)
        self._confusion = torch.zeros_like(self._confusion, device=self.device)

    def _score_cells(self, images: Tensor, labels: Tensor, masks: Tensor, batch_idx: int) -> None:
        """Add this batch's probe cells (``probe_hits``, or ``cell_hits`` with ``curriculum.probe:
        swapped``) on a shuffle at the curriculum's current level, drawn the same way every epoch
        (the held-out set is fixed, only the model changes)."""
        if self.curriculum is None or len(images) < 2:
            return
        self._cells += self._probe(self.curriculum.current, images, labels, masks, batch_idx)
        if (ahead := self._next_level()) is not None:
            self._cells_ahead += self._probe(ahead, images, labels, masks, batch_idx)

    def _probe(self, level: Level, images: Tensor, labels: Tensor, masks: Tensor, batch_idx: int) -> Tensor:
        x, info, truth = probe_batch(self.cfg, level, images, labels, masks, self._probe_stream(batch_idx))
        _, maps = self.model(self.normalize(x))
        return probe_score(maps.float(), info, labels, truth, x.shape[-2:])

    def _next_level(self) -> Level | None:
        """The level a rule that reads ahead compares with (None for other rules and at the top)."""
        c = self.curriculum
        if c is None or not c.reads_ahead or c.level + 1 >= len(c.levels):
            return None
        return c.levels[c.level + 1]

    def _probe_stream(self, batch_idx: int) -> int:
        return batch_idx * self.trainer.world_size + self.global_rank

    def validation_step(self, batch, batch_idx: int) -> None:
        images, labels, _, masks = batch
        self._score_cells(images, labels, masks, batch_idx)
        logits, maps = self.model(self.normalize(images))
        self._confusion += gated_confusion(maps.float(), labels, masks)
        logits = logits.float()
        self.log(
            "val_loss",
            F.binary_cross_entropy_with_logits(logits, labels),
            on_epoch=True,
            sync_dist=True,
            batch_size=len(images),
        )
        probs = logits.sigmoid()
        self.val_f1.update(probs, labels.int())
        self.val_ap.update(probs, labels.int())

    def on_validation_epoch_end(self) -> None:
        f1, ap = self.val_f1.compute(), self.val_ap.compute()
        self.log("val_f1", f1.nanmean(), prog_bar=True)
        if self.curriculum is not None:
            hits, cells = self.trainer.strategy.reduce(self._cells, reduce_op="sum").tolist()
            # No counted cell (nothing swapped, or every tile alike): nothing to localise yet.
            accuracy = hits / cells if cells else 0.0
            self.log("val_cell_accuracy", accuracy)
            self.log("val_cell_count", cells)
            self.log("val_cell_se", math.sqrt(accuracy * (1 - accuracy) / cells) if cells else 1.0)
            self.ahead = None
            if self._next_level() is not None:
                hits, cells = self.trainer.strategy.reduce(self._cells_ahead, reduce_op="sum").tolist()
                self.ahead = hits / cells if cells else 0.0
                self.log("val_cell_ahead", self.ahead)
        confusion = self.trainer.strategy.reduce(self._confusion, reduce_op="sum")
        if confusion.sum() > 0:  # the validation tiles have pixel truth
            self.log("val_miou", confusion_miou(confusion))
        self.log("val_ap", ap.nanmean())
        for name, v in zip(self.class_names, f1):
            self.log(f"val_f1/{name}", v)
        self.val_f1.reset()
        self.val_ap.reset()

    def feedback_signal(self) -> float:
        """The curriculum's signal, the same on every rank."""
        signal = feedback_signal_name(self.cfg)
        if signal == "cell_accuracy":
            signal = "val_cell_accuracy"
        if signal == "train_loss":
            mean = self._loss_sum / max(self._loss_count, 1)
            return float(self.trainer.strategy.reduce(mean, reduce_op="mean"))
        if signal not in self.trainer.callback_metrics:
            raise ConfigError(f"curriculum.signal {signal}: not measured (val_miou needs a val split with masks)")
        return float(self.trainer.callback_metrics[signal])

    def configure_optimizers(self) -> dict:
        train, frozen = self.cfg.train, self.cfg.model.trainable_blocks is not None
        if train.backbone_lr is None and not frozen:
            return adamw_cosine(self.model.parameters(), train)
        return adamw_cosine(self.model.param_groups(train.lr, train.backbone_lr), train)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.curriculum is not None:
            checkpoint["curriculum"] = self.curriculum.state_dict()
            checkpoint["probe"] = self.probe_history

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.curriculum is not None and "curriculum" in checkpoint:
            self.curriculum.load_state_dict(checkpoint["curriculum"])
            self.probe_history = list(checkpoint.get("probe", []))


def _train_sampler(cfg: Stage1Config, train_set: Dataset, labels: np.ndarray):
    """The epoch order: plain, or, for the grid mixers whose per-patch loss needs known patches,
    with a class-balanced share of single-label tiles per batch."""
    if cfg.mixing.single_share > 0 and method_of(cfg).grid:
        return SingleLabelShare(labels, cfg.train.batch_size, cfg.mixing.single_share, cfg.seed)
    return EpochShuffle(len(train_set), cfg.seed)


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
    (resumed from when present), ``curriculum.csv``,
    ``logs/version_N/metrics.csv`` (one folder
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
    stain = fit_stain_normalizer(cfg.stain.method, cfg.stain.reference, train_tiles, cfg.stain.fit_tiles)
    train_tiles.stain = stain
    has_val = spec.splits.val is not None and (Path(data_root) / spec.splits.val).is_dir()
    if method_of(cfg).curriculum is not None and feedback_signal_name(cfg) == "val_miou" and not has_val:
        raise ConfigError(
            f"stage1.curriculum.signal val_miou ({cfg.mixing.method}): {data_root} has no val split with masks; "
            "name another signal (cell_accuracy) or add the split"
        )
    if has_val:
        val_tiles = TileDataset(data_root, "val", spec, stain=stain)
        require_masks(
            val_tiles,
            "stage 1 reads the validation labels from them (add them, or set `splits: {val: null}` in "
            "dataset.yaml to hold out 10 % of the train tiles instead)",
        )
        train_set = TrainTiles(train_tiles, cfg.train.image_size)
        val_set = MaskedTiles(val_tiles, cfg.train.image_size, crop_large=True)
    else:  # held-out train tiles: val_miou only where train_gt gives them truth (never a feedback signal)
        train_set, held = split_holdout(TrainTiles(train_tiles, cfg.train.image_size), 0.1, cfg.seed)
        val_set = MaskedTiles(train_tiles, cfg.train.image_size, held.indices)
    indices = train_set.indices if isinstance(train_set, Subset) else list(range(len(train_set)))
    labels = np.stack([train_tiles.samples[i].label for i in indices])
    batch = cfg.train.batch_size
    if len(train_set) < batch:
        raise DatasetError(data_root, f"{len(train_set)} training tiles, fewer than one batch of {batch}")
    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    precision, workers = run_placement(cfg)
    loader_args = {"batch_size": batch, "num_workers": workers, "persistent_workers": workers > 0}
    sampler = _train_sampler(cfg, train_set, labels)
    decode_undrawn(train_set, sampler, len(sampler) // batch * batch)
    train_loader = DataLoader(train_set, sampler=sampler, drop_last=True, **loader_args)
    val_loader = DataLoader(val_set, shuffle=False, **loader_args)
    module = Stage1Module(cfg.model_dump(mode="json"), spec.classes)
    report_probe(cfg, val_loader)  # after the model: a bad weights file is the one line, not this
    checkpoints = out / "checkpoints"
    callbacks = [  # in this order: the checkpoint holds the curriculum's decision of the epoch
        CurriculumCallback(out / "curriculum.csv"),
        EpochCheckpoint(checkpoints / "last.ckpt"),
        *(callbacks or []),
    ]
    trainer = build_trainer(cfg, precision, cfg.train.epochs, out, callbacks, progress)
    if trainer.is_global_zero:
        save_config(
            cfg, out / "config.yaml", dataset=str(Path(data_root).resolve()), classes=spec.classes, precision=precision
        )
    fit_or_resume(trainer, module, train_loader, val_loader, checkpoints)
    target = out / CLASSIFIER_FILE
    if trainer.is_global_zero:
        save_classifier(module.model, cfg, spec.classes, target, stain, spec.mpp)
    return target
