"""Stage 2: a segmentation network trained on pseudo masks (or on truth, the upper bound).

Cross-entropy that skips the ignore index (255, uncertain pseudo-mask pixels), optional Dice,
joint flips of image and mask, stain jitter of the image. Validation mIoU against real masks
every epoch; the best epoch by val mIoU is kept beside the last one for resume.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from segmix.config import save_config
from segmix.data.dataset import TileDataset, collate_list, require_masks
from segmix.data.io import IGNORE_INDEX, read_mask
from segmix.data.spec import DatasetSpec, resolve_spec
from segmix.errors import DatasetError, ModelFileError
from segmix.eval.metrics import ConfusionMatrix
from segmix.models import create_segmenter, predict_probs, segmenter_input, sliding_window_probs
from segmix.train.augment import dihedral_pair, hed_jitter
from segmix.train.config import Stage2Config
from segmix.train.data import EpochShuffle, fit_square
from segmix.train.runtime import (
    EpochCheckpoint,
    build_trainer,
    check_finite,
    claim_run_folder,
    fit_or_resume,
    load_payload,
    save_payload,
)

SEGMENTER_FILE = "segmenter.pt"


class MaskedTiles(Dataset):
    """Train tiles with the masks of a folder (named ``<image stem>.png``), resized to ``size``."""

    def __init__(self, tiles: TileDataset, mask_dir: str | Path, size: int) -> None:
        self.tiles, self.size = tiles, size
        self.mask_dir = Path(mask_dir)
        if not self.mask_dir.is_dir():
            raise DatasetError(self.mask_dir, "mask folder does not exist")
        self.masks = []
        for s in tiles.samples:
            path = self.mask_dir / f"{Path(s.name).stem}.png"
            if not path.is_file():
                raise DatasetError(path, f"no mask for training image {s.name}")
            self.masks.append(path)

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        item = self.tiles[index]
        image = item["image"]
        spec = self.tiles.spec
        mask = read_mask(self.masks[index], spec.num_indices, spec.palette, image.shape[:2])
        image, mask = fit_square(image, self.size), fit_square(mask, self.size, Image.NEAREST)
        return torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous(), torch.from_numpy(np.array(mask)).long()


def dice_loss(logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Multi-class soft Dice over classes present in the batch; ignored pixels left out."""
    import segmentation_models_pytorch as smp

    return smp.losses.DiceLoss("multiclass", ignore_index=ignore_index)(logits, target)


class Stage2Module(L.LightningModule):
    def __init__(self, config: dict, spec: dict) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.cfg = Stage2Config.model_validate(config)
        self.spec = DatasetSpec.model_validate(spec)
        self.num_out = self.spec.num_indices
        self.model = create_segmenter(
            self.cfg.arch, self.cfg.encoder, self.num_out, self.cfg.encoder_weights, self.cfg.weights
        )
        self._cm: ConfusionMatrix | None = None

    def training_step(self, batch, batch_idx: int) -> Tensor:
        images, masks = batch
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.global_step * 7919 + self.global_rank)
        x = images.float() / 255
        if self.cfg.dihedral:
            x, masks = dihedral_pair(x, masks, g)
        x = hed_jitter(x, self.cfg.hed_jitter, g)
        logits = self.model(segmenter_input(x).contiguous(memory_format=torch.channels_last)).float()
        loss = F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX)
        if self.cfg.dice > 0:
            loss = loss + self.cfg.dice * dice_loss(logits, masks)
        check_finite(loss, self.global_step)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._cm = ConfusionMatrix(self.num_out, self.spec.index_names, self.spec.exclude_index)

    def validation_step(self, batch: list[dict], batch_idx: int) -> None:
        for pred, item in zip(segment(self.model, [it["image"] for it in batch], self.cfg, self.device, self.num_out), batch):
            self._cm.update(pred, item["mask"])

    def on_validation_epoch_end(self) -> None:
        matrix = torch.as_tensor(self._cm.matrix, device=self.device)
        self._cm.matrix = self.trainer.strategy.reduce(matrix, reduce_op="sum").cpu().numpy()
        scores = self._cm.compute()
        self.log("val_miou", float(np.nan_to_num(scores.miou)), prog_bar=True)
        self.log("val_fwiou", float(np.nan_to_num(scores.fwiou)))

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.cfg.epochs)}


@torch.no_grad()
def segment(model, images: list[np.ndarray], cfg: Stage2Config, device, num_classes: int) -> list[np.ndarray]:
    """Class-index maps uint8 (H, W) for uint8 (H, W, 3) images of any size.

    Window-sized images go through in one batch; others by sliding window (window =
    ``cfg.image_size``, stride ``cfg.stride`` of it, overlapping softmax averaged).
    """
    s = cfg.image_size
    out: list[np.ndarray | None] = [None] * len(images)
    tiles = [i for i, im in enumerate(images) if im.shape[:2] == (s, s)]
    dtype = torch.bfloat16
    with torch.autocast(torch.device(device).type, dtype=dtype):
        if tiles:
            batch = torch.stack([torch.from_numpy(np.asarray(images[i])).to(device).permute(2, 0, 1) for i in tiles])
            x = segmenter_input(batch)
            preds = predict_probs(model, x, cfg.flip_tta).argmax(1).to(torch.uint8).cpu().numpy()
            for i, p in zip(tiles, preds):
                out[i] = p
        for i, im in enumerate(images):
            if out[i] is None:
                x = segmenter_input(torch.from_numpy(np.asarray(im)).to(device).permute(2, 0, 1))
                probs = sliding_window_probs(model, x, num_classes, s, max(1, int(s * cfg.stride)), flip=cfg.flip_tta)
                out[i] = probs.argmax(0).to(torch.uint8).cpu().numpy()
    return out


def train_segmenter(
    cfg: Stage2Config,
    data_root: str | Path,
    mask_dir: str | Path,
    out_dir: str | Path,
    spec: DatasetSpec | None = None,
    progress: bool = True,
    extra_callbacks: list | None = None,
    claim: bool = True,
) -> Path:
    """Train (or resume) stage 2 on the masks in ``mask_dir``; returns ``segmenter.pt`` (best epoch).

    ``mask_dir`` holds ``<train image stem>.png`` masks: pseudo masks from ``segmix cams``, or
    the dataset's ``train_gt`` for the fully supervised upper bound.
    """
    out = Path(out_dir)
    if claim:  # as in train_classifier: segmix run decides resumption by its own hashes
        claim_run_folder(out, cfg, SEGMENTER_FILE, dataset=data_root, masks=mask_dir)
    spec = spec or resolve_spec(data_root)
    train_set = MaskedTiles(TileDataset(data_root, "train", spec, with_masks=False), mask_dir, cfg.image_size)
    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    loader_args = {"num_workers": cfg.num_workers, "persistent_workers": cfg.num_workers > 0}
    train_loader = DataLoader(
        train_set,
        batch_size=cfg.batch_size,
        sampler=EpochShuffle(len(train_set), cfg.seed),
        drop_last=len(train_set) >= 2 * cfg.batch_size,
        **loader_args,
    )
    val_loader = None
    if spec.splits.val and (Path(data_root) / spec.splits.val).is_dir():
        val_tiles = TileDataset(data_root, "val", spec)
        require_masks(val_tiles, "stage 2 scores every epoch on them to keep the best one")
        val_loader = DataLoader(val_tiles, batch_size=cfg.batch_size, collate_fn=collate_list, **loader_args)
    module = Stage2Module(cfg.model_dump(mode="json"), spec.model_dump(mode="json"))
    ckpt_dir = out / "checkpoints"
    callbacks = [EpochCheckpoint(ckpt_dir / "last.ckpt")]
    if val_loader is not None:
        callbacks.append(ModelCheckpoint(dirpath=str(ckpt_dir), filename="best", monitor="val_miou", mode="max", save_top_k=1))
    trainer = build_trainer(cfg, cfg.epochs, out, callbacks + list(extra_callbacks or []), progress, num_sanity_val_steps=0)
    if trainer.is_global_zero:
        save_config(
            cfg, out / "config.yaml", dataset=str(Path(data_root).resolve()), masks=str(Path(mask_dir).resolve())
        )
    fit_or_resume(trainer, module, train_loader, val_loader, ckpt_dir)
    target = out / SEGMENTER_FILE
    if trainer.is_global_zero:
        best = ckpt_dir / "best.ckpt"
        state = module.model.state_dict()
        if best.is_file():
            ck = torch.load(best, map_location="cpu", weights_only=False)
            state = {k[len("model.") :]: v for k, v in ck["state_dict"].items() if k.startswith("model.")}
        save_segmenter(state, cfg, spec, target)
    return target


def save_segmenter(state: dict, cfg: Stage2Config, spec: DatasetSpec, path: Path) -> None:
    save_payload(
        {
            "state_dict": {k: v.detach().cpu() for k, v in state.items()},
            "config": cfg.model_dump(mode="json"),
            "spec": spec.model_dump(mode="json"),
        },
        path,
    )


def load_segmenter(path: str | Path):
    """``(model, Stage2Config, DatasetSpec)`` from ``segmenter.pt`` (``weights_only=True``)."""
    payload = load_payload(path, {"state_dict", "config", "spec"}, "segmenter")
    try:
        cfg = Stage2Config.model_validate(payload["config"])
        spec = DatasetSpec.model_validate(payload["spec"])
        model = create_segmenter(cfg.arch, cfg.encoder, spec.num_indices)
        model.load_state_dict(payload["state_dict"])
    except (ValueError, RuntimeError, TypeError) as err:  # invalid config, weights of another model
        raise ModelFileError(f"{path}: the segmenter cannot be rebuilt ({str(err).splitlines()[0]})") from err
    return model.eval(), cfg, spec
