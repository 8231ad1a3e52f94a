"""What both training stages share: the Lightning trainer, optimiser, per-step randomness, resume."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from pydantic import BaseModel

from segmix.config import RunOptions
from segmix.config.precision import resolve_precision
from segmix.config.stages import PLACEMENT_KEYS, TrainSection, upgrade_flat_config
from segmix.data.io import write_atomic
from segmix.errors import ModelFileError, OutputError, TrainingDiverged
from segmix.models.weights import load_trusted_tensors
from segmix.runtime import fit_threads
from segmix.train.data import seeded_generator, stream_seed

log = logging.getLogger(__name__)


def device_type(opts: RunOptions) -> str:
    """``"cuda"`` when the trainer will run on GPUs, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() and opts.accelerator in ("auto", "gpu", "cuda") else "cpu"


def run_placement(opts: RunOptions) -> tuple[str, int]:
    """The precision the trainer runs at (``auto`` resolved by :mod:`segmix.config.precision`)
    and the DataLoader workers, with torch's threads set to fit the cores
    (:mod:`segmix.runtime`); both logged once."""
    kind = device_type(opts)
    precision = resolve_precision(opts.precision, kind, training=True)
    log.info("precision: %s (%s on %s)", precision, opts.precision, kind)
    return precision, fit_threads(opts.num_workers, opts.threads, gpu=kind == "cuda")


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
        # With optimizer and loop state: plain data still, read back with weights_only=True.
        trainer.save_checkpoint(self.path, weights_only=False)


class BestCheckpoint(L.Callback):
    """The weights of the epoch with the highest ``monitor`` over the whole run, in one file.

    Lightning's ``ModelCheckpoint`` does not survive a resume here: finding ``best.ckpt`` it
    writes ``best-v1.ckpt`` beside it, and the run exported the stale one. This callback keeps
    the best score and epoch in its state (saved in ``last.ckpt``, restored on resume) and writes
    ``path`` (``{"epoch", "score", "state_dict"}``, the module's weights) atomically, after
    ``last.ckpt`` of the same epoch. A kill between the two writes leaves ``last.ckpt`` naming
    an epoch whose weights are its own: :meth:`sync` writes them before training goes on, and
    before :meth:`weights` is read.
    """

    def __init__(self, path: Path, monitor: str = "val_miou") -> None:
        self.path, self.monitor = Path(path), monitor
        self.score: float | None = None
        self.epoch: int | None = None

    def state_dict(self) -> dict:
        return {"monitor": self.monitor, "score": self.score, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.score, self.epoch = state.get("score"), state.get("epoch")

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.is_global_zero:  # left by Lightning's ModelCheckpoint before this callback
            for stale in self.path.parent.glob(f"{self.path.stem}-v*{self.path.suffix}"):
                stale.unlink()

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.sync(trainer, module)

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None:
            return
        if self.score is None or float(value) > self.score:
            self.score, self.epoch = float(value), trainer.current_epoch

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.epoch == trainer.current_epoch and trainer.is_global_zero:
            self._write(module)

    def sync(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        """Write the best epoch's weights when they are the module's (the last finished epoch)
        and ``path`` holds another epoch's, or none."""
        if self.epoch is None or not trainer.is_global_zero or self._saved_epoch() == self.epoch:
            return
        if self.epoch != trainer.current_epoch - 1:
            raise OutputError(f"{self.path}: holds no weights of the best epoch {self.epoch}; train into a new --out")
        self._write(module)

    def weights(self) -> dict:
        """The best epoch's state dict (keys of ``module.model``)."""
        return torch.load(self.path, map_location="cpu", weights_only=True)["state_dict"]

    def _saved_epoch(self) -> int | None:
        """The epoch ``path`` holds; None without one, or for a file of Lightning's ModelCheckpoint
        (written before this callback, and replaced by :meth:`sync`)."""
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, pickle.UnpicklingError):
            return None
        return saved.get("epoch") if isinstance(saved, dict) and "score" in saved else None

    def _write(self, module: L.LightningModule) -> None:
        state = {k: v.detach().cpu() for k, v in module.model.state_dict().items()}
        payload = {"epoch": self.epoch, "score": self.score, "state_dict": state}
        write_atomic(self.path, lambda fh: torch.save(payload, fh))


def build_trainer(
    opts: RunOptions, precision: str, epochs: int, out: Path, callbacks: list, progress: bool, **extra
) -> L.Trainer:
    """A Trainer for ``opts`` (devices, nodes, strategy) at ``precision`` (resolved,
    :func:`run_placement`) logging into ``out``."""
    return L.Trainer(
        max_epochs=epochs,
        accelerator=opts.accelerator,
        devices=opts.devices,
        num_nodes=opts.num_nodes,
        strategy=opts.strategy,
        precision=precision,
        logger=loggers(out),
        callbacks=callbacks,
        default_root_dir=str(out),
        enable_model_summary=False,
        enable_checkpointing=False,  # our own: EpochCheckpoint, BestCheckpoint (Lightning's would add one per epoch)
        enable_progress_bar=progress,
        log_every_n_steps=10,
        plugins=[AtomicCheckpointIO()],
        **extra,
    )


def fit_or_resume(trainer: L.Trainer, module: L.LightningModule, train_loader, val_loader, ckpt_dir: Path) -> None:
    """Fit, resuming from ``ckpt_dir/last.ckpt`` when an earlier run left one.

    A run folder is an input like any other: the checkpoint is read with ``weights_only=True``
    (tensors and plain data: what segmix writes, optimizer and loop state included), and one
    that is not a Lightning checkpoint of plain data is refused (:func:`check_checkpoint`).
    """
    last = ckpt_dir / "last.ckpt"
    if trainer.is_global_zero:
        for stale in ckpt_dir.glob(".tmp-*"):  # a checkpoint whose writer was killed mid-write
            stale.unlink(missing_ok=True)
    if last.is_file():
        check_checkpoint(last)
    trainer.fit(module, train_loader, val_loader, ckpt_path=str(last) if last.is_file() else None, weights_only=True)


# What every checkpoint segmix writes holds (Lightning's own keys).
CHECKPOINT_KEYS = frozenset({"epoch", "global_step", "state_dict", "loops", "optimizer_states"})


def check_checkpoint(path: Path) -> None:
    """Refuse a resume checkpoint that segmix did not write: one that would run code when
    unpickled (:func:`segmix.models.weights.load_trusted_tensors`), or holds no training state.

    Raises:
        OutputError: naming the file.
    """
    try:
        ckpt = load_trusted_tensors(path, "training checkpoint")
    except ModelFileError as err:
        raise OutputError(f"{err}; refused to resume from it: remove it or train into another --out") from None
    if not isinstance(ckpt, dict) or not CHECKPOINT_KEYS <= set(ckpt):
        raise OutputError(
            f"{path}: refused to resume from it: not a training checkpoint; remove it or use another --out"
        )


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
    (seed, step, rank): a resumed run draws the same as an uninterrupted one, and ranks differ.

    Also seeds torch's global RNG for the step, from another stream of the same triple: what
    the model draws itself (dropout in smp's decoders) is then the same after a resume too;
    checkpoints do not hold the global RNG's state.
    """
    torch.manual_seed(stream_seed(seed, "step-global", step, rank))
    return seeded_generator(seed, "step", step, rank)


def adamw_cosine(params, train: TrainSection) -> dict:
    """AdamW with cosine decay over ``train.epochs`` epochs, as Lightning's
    ``configure_optimizers`` returns it (both stages); ``params`` may be parameter groups."""
    opt = torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=train.epochs)}


def check_finite(loss: torch.Tensor, step: int) -> None:
    """Stop training on a NaN / infinite loss (the last good checkpoint stays on disk)."""
    if not torch.isfinite(loss):
        raise TrainingDiverged(f"training loss became {loss.item()} at step {step}; the last good checkpoint is kept")
