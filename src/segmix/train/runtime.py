"""What both training stages share: the Lightning trainer, resume, and the exported model file."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from segmix.train.config import RunOptions

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
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{path.name}")
        torch.save(checkpoint, tmp)
        os.replace(tmp, path)


class EpochCheckpoint(L.Callback):
    """``last.ckpt`` after every training epoch, for resume.

    Lightning's ModelCheckpoint writes ``last`` only beside a top-k save; this writes it every
    epoch, after the callbacks listed before it (the curriculum's decision is in it).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.path)


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


def save_payload(payload: dict, path: Path) -> None:
    """torch.save of plain data and tensors, atomically (temp file + rename)."""
    tmp = path.with_name(f".tmp-{path.name}")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_payload(path: str | Path, keys: set[str], what: str) -> dict:
    """A model file written by :func:`save_payload`, loaded with ``weights_only=True``.

    A file that would run code when unpickled, or lacks ``keys``, is refused with a clear message.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} file does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in several types
        raise ValueError(f"{path}: not a segmix {what} file, or unsafe to load ({err})") from err
    if not isinstance(payload, dict) or not keys <= set(payload):
        raise ValueError(f"{path}: not a segmix {what} file (needs {', '.join(sorted(keys))})")
    return payload
