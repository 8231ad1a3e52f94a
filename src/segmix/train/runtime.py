"""What both training stages share: the Lightning trainer, optimiser, per-step randomness, resume."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from pydantic import BaseModel

from segmix.config import RunOptions
from segmix.config.stages import TrainSection, upgrade_flat_config
from segmix.data.io import write_atomic
from segmix.errors import OutputError, TrainingDiverged
from segmix.train.data import STEP_STRIDE, seeded_generator

log = logging.getLogger(__name__)


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto``: bf16 autocast on CPU and on GPUs that have it, fp16 AMP on older GPUs."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda"):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed"


def loggers(out: Path) -> list:
    """CSV (and TensorBoard) loggers. Each attempt gets its own ``version_N`` folder: a resumed
    run would otherwise overwrite the logs of the epochs before the interruption."""
    found = [CSVLogger(str(out), name="logs")]
    try:
        from lightning.pytorch.loggers import TensorBoardLogger

        found.append(TensorBoardLogger(str(out), name="tensorboard"))
    except ModuleNotFoundError:
        log.info("tensorboard not installed: CSV logs only")
    return found


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temp file and renamed: a job killed mid-write leaves the previous
    ``last.ckpt`` intact instead of a truncated one that cannot be resumed from."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        write_atomic(path, lambda fh: torch.save(checkpoint, fh))


class EpochCheckpoint(L.Callback):
    """``last.ckpt`` after every training epoch, for resume.

    Lightning's ModelCheckpoint writes ``last`` only beside a top-k save; this writes it every
    epoch, after the callbacks listed before it (the curriculum's decision is in it).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)  # optimizer and loop state: our own folder only


def build_trainer(opts: RunOptions, epochs: int, out: Path, callbacks: list, progress: bool, **extra) -> L.Trainer:
    """A Trainer for ``opts`` (devices, nodes, strategy, precision) logging into ``out``."""
    return L.Trainer(
        max_epochs=epochs,
        accelerator=opts.accelerator,
        devices=opts.devices,
        num_nodes=opts.num_nodes,
        strategy=opts.strategy,
        precision=resolve_precision(opts.precision, opts.accelerator),
        logger=loggers(out),
        callbacks=callbacks,
        default_root_dir=str(out),
        enable_model_summary=False,
        enable_progress_bar=progress,
        log_every_n_steps=10,
        plugins=[AtomicCheckpointIO()],
        **extra,
    )


def fit_or_resume(trainer: L.Trainer, module: L.LightningModule, train_loader, val_loader, ckpt_dir: Path) -> None:
    """Fit, resuming from ``ckpt_dir/last.ckpt`` when an earlier run left one.

    Our own checkpoints hold optimizer and loop state that ``weights_only=True`` cannot load;
    they are only ever read from the run's own folder.
    """
    last = ckpt_dir / "last.ckpt"
    trainer.fit(module, train_loader, val_loader, ckpt_path=str(last) if last.is_file() else None, weights_only=False)


# Keys that say where a run executes, not what it learns: a run may resume with other values.
PLACEMENT_KEYS = frozenset({"num_workers", "devices", "num_nodes", "strategy", "accelerator"})


def claim_run_folder(out: Path, cfg: BaseModel, model_file: str, **inputs: str | Path) -> None:
    """Refuse to resume, in ``out``, a run of another config or on other inputs.

    A stage command re-run into its folder resumes from ``checkpoints/last.ckpt``; were the
    config different, the old weights would be exported under the new config. Keys of
    :data:`PLACEMENT_KEYS` may differ, ``epochs`` may grow (train longer); ``inputs`` (dataset,
    masks) are compared as resolved paths.

    Raises:
        OutputError: naming the folder and the keys that differ.
    """
    saved = out / "config.yaml"
    if not saved.is_file() or not ((out / "checkpoints" / "last.ckpt").is_file() or (out / model_file).is_file()):
        return
    try:
        old = yaml.safe_load(saved.read_text())
        old_meta = old.pop("_meta", {}) or {}
    except (OSError, ValueError, AttributeError, yaml.YAMLError) as err:
        raise OutputError(f"{saved}: unreadable config of the earlier run in this folder; use another --out") from err
    old, new = _flat(upgrade_flat_config(old, type(cfg))), _flat(cfg.model_dump(mode="json"))
    diffs = [
        f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
        for k in sorted(set(old) | set(new))
        if k not in PLACEMENT_KEYS and old.get(k) != new.get(k) and not _extends(k, old.get(k), new.get(k))
    ]
    for name, value in inputs.items():
        before = old_meta.get(name)
        if before is not None and Path(before).resolve() != Path(value).resolve():
            diffs.append(f"{name}: {before} -> {Path(value).resolve()}")
    if diffs:
        shown = "; ".join(diffs[:5]) + (f"; and {len(diffs) - 5} more" if len(diffs) > 5 else "")
        raise OutputError(
            f"{out}: holds a run of another config ({shown}); resume it with its own config, "
            "or write this run to another --out"
        )


def _flat(config: dict, prefix: str = "") -> dict:
    """``{"train": {"epochs": 5}}`` -> ``{"train.epochs": 5}``."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _extends(key: str, before, after) -> bool:
    # More epochs continue the run where it stopped (Lightning's usual "train longer").
    return key == "train.epochs" and isinstance(before, int) and isinstance(after, int) and after > before


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The random numbers of one training step (mixing, augmentation), one stream per
    (seed, step, rank): a resumed run draws the same as an uninterrupted one, and ranks differ."""
    return seeded_generator(seed, step * STEP_STRIDE + rank)


def adamw_cosine(params, train: TrainSection) -> dict:
    """AdamW with cosine decay over ``train.epochs`` epochs, as Lightning's
    ``configure_optimizers`` returns it (both stages); ``params`` may be parameter groups."""
    opt = torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=train.epochs)}


def check_finite(loss: torch.Tensor, step: int) -> None:
    """Stop training on a NaN / infinite loss (the last good checkpoint stays on disk)."""
    if not torch.isfinite(loss):
        raise TrainingDiverged(f"training loss became {loss.item()} at step {step}; the last good checkpoint is kept")
